//! The integration's request budget: at most 7 requests in any second (amoCRM's documented limit per
//! integration), a pause that doubles while amoCRM keeps answering 429, and a stop after the 403 IP block.
//!
//! The stop is not for ever: amoCRM's support lifts a block, and nothing tells the client. While blocked, one
//! request — a probe — is let through after [`LimiterConfig::block_probe_initial`] (5 minutes), then after twice
//! as long each time amoCRM still answers the 403 page, up to [`LimiterConfig::block_probe_max`] (1 hour): at most
//! one request an hour reaches a blocked account. Any other answer to the probe lifts the stop
//! ([`Limiter::on_answer`]); every other request meanwhile is refused at once, without being sent.
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
    /// After the 403 IP block, the first probe goes this long after it; the interval doubles while the block
    /// lasts, up to `block_probe_max`.
    pub block_probe_initial: Duration,
    pub block_probe_max: Duration,
}

impl Default for LimiterConfig {
    /// 7 requests per 1.1 s (amoCRM counts a request when it arrives: the margin absorbs network jitter
    /// between two requests' journeys); back-off 1 s doubling up to 30 s; block probes after 5 minutes,
    /// doubling up to an hour.
    fn default() -> Self {
        LimiterConfig {
            per_window: 7,
            window: Duration::from_millis(1_100),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            block_probe_initial: Duration::from_secs(300),
            block_probe_max: Duration::from_secs(3_600),
        }
    }
}

/// The 403 IP block: when it began, and when the next probe may go.
#[derive(Debug, Clone, Copy)]
struct Block {
    since: Instant,
    next_probe: Instant,
    /// The wait before the next probe after this one.
    interval: Duration,
}

#[derive(Debug)]
struct State {
    sent: VecDeque<Instant>,
    paused_until: Option<Instant>,
    refusals: u32,
    blocked: Option<Block>,
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
                blocked: None,
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

    /// Waits for a slot. `false` when the IP block stops sending (not this request's turn to probe).
    pub async fn acquire(&self) -> bool {
        let _turn = self.queue.lock().await;
        loop {
            let wait = {
                let mut state = self.lock();
                let now = Instant::now();
                if let Some(block) = &mut state.blocked {
                    if now < block.next_probe {
                        return false;
                    }
                    // This request is the probe; the next one waits a whole interval whatever this one meets.
                    block.next_probe = now + block.interval;
                    block.interval = (block.interval.saturating_mul(2)).min(self.config.block_probe_max);
                    tracing::info!(
                        blocked_for = ?now.duration_since(block.since),
                        "amoCRM IP block: probing with one request"
                    );
                }
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

    /// amoCRM blocked the IP (or a probe met the block again): nothing more is sent but the probes. Returns how
    /// long until the next probe.
    pub fn block(&self) -> Duration {
        let mut state = self.lock();
        let now = Instant::now();
        let block = state.blocked.get_or_insert(Block {
            since: now,
            next_probe: now + self.config.block_probe_initial,
            interval: (self.config.block_probe_initial.saturating_mul(2)).min(self.config.block_probe_max),
        });
        block.next_probe.saturating_duration_since(now)
    }

    pub fn is_blocked(&self) -> bool {
        self.lock().blocked.is_some()
    }

    /// When the block began, while it lasts.
    pub fn blocked_since(&self) -> Option<Instant> {
        self.lock().blocked.map(|b| b.since)
    }

    /// amoCRM answered a request with something other than the 403 page: a block is over. Returns how long it
    /// lasted, if there was one.
    pub fn on_answer(&self) -> Option<Duration> {
        let mut state = self.lock();
        let block = state.blocked.take()?;
        state.refusals = 0;
        state.paused_until = None;
        Some(Instant::now().duration_since(block.since))
    }

    /// Sending may start again at once (amoCRM's support says the block is lifted).
    pub fn resume(&self) {
        let mut state = self.lock();
        state.blocked = None;
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

    #[tokio::test(start_paused = true)]
    async fn a_block_lets_one_probe_through_at_doubling_intervals_until_an_answer_lifts_it() {
        let limiter = Limiter::new(LimiterConfig::default());
        assert_eq!(limiter.block(), Duration::from_secs(300));
        let mut probes = Vec::new();
        let start = Instant::now();
        // Three hours of requests every 10 s, each probe meeting the block again.
        while Instant::now() - start < Duration::from_secs(3 * 3_600) {
            if limiter.acquire().await {
                probes.push((Instant::now() - start).as_secs());
                limiter.block();
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        let gaps: Vec<u64> = probes.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(probes[0], 300, "{probes:?}");
        assert_eq!(
            &gaps[..4],
            [600, 1_200, 2_400, 3_600],
            "doubling, then hourly: {probes:?}"
        );
        assert!(gaps[4..].iter().all(|g| *g == 3_600), "{gaps:?}");
        assert!(limiter.is_blocked());
        // A probe amoCRM answers lifts the block: everything goes again at once.
        tokio::time::sleep(Duration::from_secs(3_600)).await;
        assert!(limiter.acquire().await);
        let lasted = limiter.on_answer().expect("it was blocked");
        assert!(lasted > Duration::from_secs(3 * 3_600));
        assert!(!limiter.is_blocked());
        assert!(limiter.acquire().await && limiter.acquire().await);
        assert_eq!(limiter.on_answer(), None, "no block to lift");
    }
}
