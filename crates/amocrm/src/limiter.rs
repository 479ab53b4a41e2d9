//! The integration's request budget: at most 7 requests in any second (amoCRM's documented limit per
//! integration), a pause that doubles while amoCRM keeps answering 429, and a stop after the 403 IP block.
//!
//! amoCRM counts per integration, not per client: clients of the same integration share one `Limiter`.
//! The account's 50 req/s for all integrations is not visible from here; a 429 caused by others is handled
//! by the same back-off.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Rate and back-off.
#[derive(Debug, Clone, PartialEq)]
pub struct LimiterConfig {
    /// Requests allowed in any window.
    pub per_window: usize,
    pub window: Duration,
    /// First pause after a 429 (no Retry-After is documented); doubles per consecutive 429.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Default for LimiterConfig {
    /// 7 requests per 1.1 s (amoCRM counts a request when it arrives: the margin absorbs network jitter
    /// between two requests' journeys); back-off 1 s doubling up to 30 s.
    fn default() -> Self {
        LimiterConfig {
            per_window: 7,
            window: Duration::from_millis(1_100),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
        }
    }
}

#[derive(Debug)]
struct State {
    sent: VecDeque<Instant>,
    paused_until: Option<Instant>,
    refusals: u32,
    blocked: bool,
}

/// See the module documentation. Requests leave in the order they asked (a fair queue).
#[derive(Debug)]
pub struct Limiter {
    config: LimiterConfig,
    state: Mutex<State>,
    queue: tokio::sync::Mutex<()>,
}

impl Limiter {
    pub fn new(config: LimiterConfig) -> Self {
        Limiter {
            config,
            state: Mutex::new(State {
                sent: VecDeque::new(),
                paused_until: None,
                refusals: 0,
                blocked: false,
            }),
            queue: tokio::sync::Mutex::new(()),
        }
    }

    pub fn config(&self) -> &LimiterConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a slot. `false` when the IP block stops sending.
    pub async fn acquire(&self) -> bool {
        let _turn = self.queue.lock().await;
        loop {
            let wait = {
                let mut state = self.lock();
                if state.blocked {
                    return false;
                }
                let now = Instant::now();
                while state
                    .sent
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.config.window)
                {
                    state.sent.pop_front();
                }
                let paused = state.paused_until.filter(|until| *until > now).map(|until| until - now);
                let full = (state.sent.len() >= self.config.per_window.max(1))
                    .then(|| {
                        state
                            .sent
                            .front()
                            .map(|oldest| self.config.window - now.duration_since(*oldest))
                    })
                    .flatten();
                match paused.max(full) {
                    None => {
                        state.sent.push_back(now);
                        return true;
                    }
                    Some(wait) => wait,
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// amoCRM answered 429: pause everyone. Returns the pause.
    pub fn on_rate_limited(&self) -> Duration {
        let mut state = self.lock();
        state.refusals = state.refusals.saturating_add(1);
        let factor = 2u32.saturating_pow(state.refusals.saturating_sub(1).min(16));
        let pause = self
            .config
            .backoff_initial
            .saturating_mul(factor)
            .min(self.config.backoff_max);
        state.paused_until = Some(Instant::now() + pause);
        pause
    }

    /// A request went through: the 429 streak is over.
    pub fn on_success(&self) {
        self.lock().refusals = 0;
    }

    /// amoCRM blocked the IP: nothing more is sent until [`Limiter::resume`].
    pub fn block(&self) {
        self.lock().blocked = true;
    }

    pub fn is_blocked(&self) -> bool {
        self.lock().blocked
    }

    /// Sending may start again (after amoCRM's support lifted the block).
    pub fn resume(&self) {
        let mut state = self.lock();
        state.blocked = false;
        state.refusals = 0;
        state.paused_until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn at_most_seven_requests_in_any_second() {
        let limiter = Limiter::new(LimiterConfig::default());
        let start = Instant::now();
        let mut at = Vec::new();
        for _ in 0..15 {
            assert!(limiter.acquire().await);
            at.push(Instant::now() - start);
        }
        for (i, t) in at.iter().enumerate().skip(7) {
            assert!(
                *t - at[i - 7] >= Duration::from_secs(1),
                "request {i} at {t:?}, 7 before at {:?}",
                at[i - 7]
            );
        }
        assert!(at[6] < Duration::from_millis(1), "the first seven go at once");
    }

    #[tokio::test(start_paused = true)]
    async fn back_off_doubles_and_resets() {
        let limiter = Limiter::new(LimiterConfig::default());
        assert_eq!(limiter.on_rate_limited(), Duration::from_secs(1));
        assert_eq!(limiter.on_rate_limited(), Duration::from_secs(2));
        let before = Instant::now();
        assert!(limiter.acquire().await);
        assert!(Instant::now() - before >= Duration::from_secs(2));
        limiter.on_success();
        assert_eq!(limiter.on_rate_limited(), Duration::from_secs(1));
        for _ in 0..20 {
            limiter.on_rate_limited();
        }
        assert_eq!(limiter.on_rate_limited(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn block_stops_until_resumed() {
        let limiter = Limiter::new(LimiterConfig::default());
        limiter.block();
        assert!(!limiter.acquire().await);
        limiter.resume();
        assert!(limiter.acquire().await);
    }
}
