//! A client-side mirror of Bitrix24's per-portal leaky bucket, plus per-method operation-time blocks.
//!
//! Bitrix24 adds 1 to a counter per request, drains it by Y per second and answers
//! `503 QUERY_LIMIT_EXCEEDED` once the counter exceeds X (Y = 2, X = 50; Enterprise Y = 5, X = 250).
//! The bucket is shared by every application calling the portal from the same IP, so the local mirror
//! can be optimistic: when the portal still says "too many", the mirror is set full and sending pauses
//! for a back-off that doubles with each consecutive refusal.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::envelope::TimeInfo;

/// Bucket size, drain rate and back-off.
#[derive(Debug, Clone, PartialEq)]
pub struct LimiterConfig {
    /// Requests drained per second (Y).
    pub drain_per_sec: f64,
    /// Requests the bucket holds before the portal refuses (X).
    pub capacity: f64,
    /// Requests of the bucket left unused: the portal counts a request when it arrives, so a slow
    /// first connection makes its level run ahead of this mirror; other applications on the same IP
    /// share the bucket too.
    pub headroom: f64,
    /// First pause after a `QUERY_LIMIT_EXCEEDED`; doubles per consecutive refusal.
    pub backoff_initial: Duration,
    /// Longest pause after refusals.
    pub backoff_max: Duration,
    /// Pause of a method refused with `OPERATION_TIME_LIMIT` when no `operating_reset_at` was seen.
    pub operation_block_default: Duration,
}

impl LimiterConfig {
    /// Plans other than Enterprise: 2 requests/s, burst 50.
    pub fn standard() -> Self {
        LimiterConfig {
            drain_per_sec: 2.0,
            capacity: 50.0,
            headroom: 1.0,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            operation_block_default: Duration::from_secs(60),
        }
    }

    /// Enterprise plans: 5 requests/s, burst 250.
    pub fn enterprise() -> Self {
        LimiterConfig {
            drain_per_sec: 5.0,
            capacity: 250.0,
            ..Self::standard()
        }
    }
}

impl Default for LimiterConfig {
    fn default() -> Self {
        Self::standard()
    }
}

/// What can be sent right now, for a worker deciding between urgent and deferrable requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// Requests that may go out immediately without waiting.
    pub available_now: u32,
    /// Current estimated counter of the portal's bucket.
    pub level: f64,
    pub capacity: f64,
    pub drain_per_sec: f64,
    /// How long until one more request may go out (zero when `available_now > 0`).
    pub wait_for_next: Duration,
    /// Remaining back-off after a `QUERY_LIMIT_EXCEEDED`, if any.
    pub backoff_remaining: Option<Duration>,
    /// Methods paused by `OPERATION_TIME_LIMIT`, with the time left.
    pub blocked_methods: Vec<(String, Duration)>,
}

#[derive(Debug)]
struct State {
    level: f64,
    updated: Instant,
    paused_until: Option<Instant>,
    consecutive_refusals: u32,
    methods: HashMap<String, MethodState>,
}

#[derive(Debug, Default)]
struct MethodState {
    reset_at_unix: Option<i64>,
    blocked_until: Option<Instant>,
}

/// The per-portal limiter. Share one (in an `Arc`) between all clients of the same portal.
#[derive(Debug)]
pub struct Limiter {
    config: LimiterConfig,
    state: Mutex<State>,
    next_ticket: AtomicU64,
    // Tickets of callers waiting for their turn; the smallest goes next.
    waiting: Mutex<BTreeSet<u64>>,
    turn_changed: tokio::sync::Notify,
}

/// A place in the limiter's queue. Requests leave in ticket order; a request that is sent again
/// (after `QUERY_LIMIT_EXCEEDED` or a token refresh) keeps its ticket, so it goes before every request
/// that asked after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

// Removes the ticket from the queue if the waiting future is dropped (caller cancelled or timed out).
struct WaitGuard<'a> {
    limiter: &'a Limiter,
    ticket: u64,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.limiter.lock_waiting().remove(&self.ticket);
        self.limiter.turn_changed.notify_waiters();
    }
}

impl Limiter {
    pub fn new(config: LimiterConfig) -> Self {
        Limiter {
            config,
            state: Mutex::new(State {
                level: 0.0,
                updated: Instant::now(),
                paused_until: None,
                consecutive_refusals: 0,
                methods: HashMap::new(),
            }),
            next_ticket: AtomicU64::new(0),
            waiting: Mutex::new(BTreeSet::new()),
            turn_changed: tokio::sync::Notify::new(),
        }
    }

    pub fn config(&self) -> &LimiterConfig {
        &self.config
    }

    /// A place in the queue, for a request that may have to be sent more than once.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.next_ticket.fetch_add(1, Ordering::Relaxed))
    }

    /// Waits, in arrival order, until one request fits in the bucket, and takes its place.
    pub async fn acquire(&self) {
        self.acquire_with(self.ticket()).await
    }

    /// Waits for `ticket`'s turn and for room in the bucket, and takes its place.
    pub async fn acquire_with(&self, ticket: Ticket) {
        self.lock_waiting().insert(ticket.0);
        let _guard = WaitGuard {
            limiter: self,
            ticket: ticket.0,
        };
        loop {
            let turn_changed = self.turn_changed.notified();
            tokio::pin!(turn_changed);
            // Register before checking, so a turn change between the check and the wait is not missed.
            turn_changed.as_mut().enable();
            let first = self.lock_waiting().first().copied();
            if first != Some(ticket.0) {
                turn_changed.await;
                continue;
            }
            let wait = {
                let mut state = self.lock_state();
                let now = Instant::now();
                self.drain(&mut state, now);
                let wait = self.wait_for_one(&state, now);
                if wait.is_zero() {
                    state.level += 1.0;
                    return;
                }
                wait
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = turn_changed => {}
            }
        }
    }

    /// Waits until a request asked now would go out at once (any back-off over, and room in the bucket for it
    /// after every caller already queued), without taking a place: a caller that gathers what it sends waits
    /// here before gathering when the budget is short, so that what it gathers is what is due when the request
    /// can go. Returns at once while requests are free and nobody waits.
    pub async fn ready(&self) {
        loop {
            let turn_changed = self.turn_changed.notified();
            tokio::pin!(turn_changed);
            // Register before reading the queue, so a caller leaving it meanwhile is not missed.
            turn_changed.as_mut().enable();
            let ahead = self.lock_waiting().len();
            let wait = {
                let mut state = self.lock_state();
                let now = Instant::now();
                self.drain(&mut state, now);
                self.wait_for(&state, now, ahead as f64 + 1.0)
            };
            if wait.is_zero() {
                return;
            }
            // Re-read when the time is up, or sooner when a queued caller took its place or gave up.
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = turn_changed => {}
            }
        }
    }

    /// The portal answered `QUERY_LIMIT_EXCEEDED`: the bucket is full whatever we thought.
    /// Returns the pause imposed before the next request.
    pub fn on_rate_limited(&self) -> Duration {
        let mut state = self.lock_state();
        let now = Instant::now();
        self.drain(&mut state, now);
        state.level = state.level.max(self.config.capacity);
        state.consecutive_refusals = state.consecutive_refusals.saturating_add(1);
        let factor = 2u32.saturating_pow(state.consecutive_refusals.saturating_sub(1).min(16));
        let pause = self
            .config
            .backoff_initial
            .saturating_mul(factor)
            .min(self.config.backoff_max);
        state.paused_until = Some(now + pause);
        pause
    }

    /// A request went through: refusals are over.
    pub fn on_success(&self) {
        self.lock_state().consecutive_refusals = 0;
    }

    /// Remembers when the method's operation-time window resets (from a response's `time`).
    pub fn observe_time(&self, method: &str, time: &TimeInfo) {
        if let Some(reset) = time.operating_reset_at {
            let mut state = self.lock_state();
            state
                .methods
                .entry(method.to_ascii_lowercase())
                .or_default()
                .reset_at_unix = Some(reset);
        }
    }

    /// The portal answered `OPERATION_TIME_LIMIT` for `method`: pause that method (only) until its
    /// window resets. Returns the pause.
    pub fn on_operation_limit(&self, method: &str) -> Duration {
        let mut state = self.lock_state();
        let entry = state.methods.entry(method.to_ascii_lowercase()).or_default();
        let pause = entry
            .reset_at_unix
            .and_then(seconds_until)
            // The window is 10 minutes; a reset time outside it means the clocks disagree.
            .map(|d| d.clamp(Duration::from_secs(1), Duration::from_secs(600)))
            .unwrap_or(self.config.operation_block_default);
        entry.blocked_until = Some(Instant::now() + pause);
        pause
    }

    /// Time left before `method` may be called again, if it is paused by the operation-time limit.
    pub fn method_blocked_for(&self, method: &str) -> Option<Duration> {
        let state = self.lock_state();
        let until = state.methods.get(&method.to_ascii_lowercase())?.blocked_until?;
        let now = Instant::now();
        (until > now).then(|| until - now)
    }

    /// A snapshot of the budget.
    pub fn budget(&self) -> Budget {
        let mut state = self.lock_state();
        let now = Instant::now();
        self.drain(&mut state, now);
        let backoff_remaining = state.paused_until.filter(|until| *until > now).map(|until| until - now);
        let free = (self.usable_capacity() - state.level).max(0.0);
        let available_now = if backoff_remaining.is_some() {
            0
        } else {
            free.floor().min(u32::MAX as f64) as u32
        };
        let mut blocked_methods: Vec<(String, Duration)> = state
            .methods
            .iter()
            .filter_map(|(name, m)| {
                let until = m.blocked_until?;
                (until > now).then(|| (name.clone(), until - now))
            })
            .collect();
        blocked_methods.sort();
        Budget {
            available_now,
            level: state.level,
            capacity: self.config.capacity,
            drain_per_sec: self.config.drain_per_sec,
            wait_for_next: self.wait_for_one(&state, now),
            backoff_remaining,
            blocked_methods,
        }
    }

    // At least one request must fit, whatever the headroom.
    fn usable_capacity(&self) -> f64 {
        (self.config.capacity - self.config.headroom.max(0.0)).max(1.0)
    }

    fn drain(&self, state: &mut State, now: Instant) {
        let elapsed = now.saturating_duration_since(state.updated).as_secs_f64();
        state.level = (state.level - elapsed * self.config.drain_per_sec).max(0.0);
        state.updated = now;
    }

    fn wait_for_one(&self, state: &State, now: Instant) -> Duration {
        self.wait_for(state, now, 1.0)
    }

    /// How long until `requests` more fit in the bucket and any back-off is over.
    fn wait_for(&self, state: &State, now: Instant, requests: f64) -> Duration {
        let paused = state
            .paused_until
            .filter(|until| *until > now)
            .map(|until| until - now)
            .unwrap_or_default();
        let excess = state.level + requests - self.usable_capacity();
        let drain_wait = if excess > 0.0 && self.config.drain_per_sec > 0.0 {
            Duration::from_secs_f64(excess / self.config.drain_per_sec)
        } else {
            Duration::ZERO
        };
        paused.max(drain_wait)
    }

    fn lock_waiting(&self) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every update is a plain assignment.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn seconds_until(unix: i64) -> Option<Duration> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs() as i64;
    Some(Duration::from_secs(unix.saturating_sub(now).max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn small() -> LimiterConfig {
        LimiterConfig {
            drain_per_sec: 2.0,
            capacity: 5.0,
            headroom: 0.0,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(4),
            operation_block_default: Duration::from_secs(60),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_drain_rate() {
        let limiter = Limiter::new(small());
        let start = Instant::now();
        for _ in 0..5 {
            limiter.acquire().await;
        }
        assert_eq!(Instant::now(), start, "the burst goes out at once");
        assert_eq!(limiter.budget().available_now, 0);
        for _ in 0..4 {
            limiter.acquire().await;
        }
        // Four more at 2/s take two seconds.
        let elapsed = Instant::now() - start;
        assert!(
            elapsed >= Duration::from_millis(1990) && elapsed <= Duration::from_millis(2010),
            "{elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn headroom_keeps_requests_free() {
        let limiter = Limiter::new(LimiterConfig::standard());
        assert_eq!(limiter.budget().available_now, 49);
        let start = Instant::now();
        for _ in 0..49 {
            limiter.acquire().await;
        }
        assert_eq!(Instant::now(), start);
        limiter.acquire().await;
        assert_eq!(Instant::now() - start, Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn budget_recovers_with_time() {
        let limiter = Limiter::new(small());
        for _ in 0..5 {
            limiter.acquire().await;
        }
        assert_eq!(limiter.budget().wait_for_next, Duration::from_millis(500));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(limiter.budget().available_now, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn ready_waits_for_the_next_slot_without_taking_it() {
        let limiter = Limiter::new(small());
        let start = Instant::now();
        limiter.ready().await;
        assert_eq!(Instant::now(), start, "free requests: ready at once");
        for _ in 0..5 {
            limiter.acquire().await;
        }
        limiter.ready().await;
        assert_eq!(Instant::now() - start, Duration::from_millis(500), "the next slot");
        assert_eq!(limiter.budget().available_now, 1, "ready took no request");
        limiter.acquire().await;
        assert_eq!(
            Instant::now() - start,
            Duration::from_millis(500),
            "the slot ready waited for"
        );
        limiter.on_rate_limited();
        limiter.ready().await;
        assert_eq!(Instant::now() - start, Duration::from_millis(1500), "and the back-off");
    }

    #[tokio::test(start_paused = true)]
    async fn ready_counts_the_callers_queued_before_it() {
        let limiter = Arc::new(Limiter::new(small()));
        let start = Instant::now();
        for _ in 0..5 {
            limiter.acquire().await;
        }
        // Two callers queue for the next slots (0.5 s and 1 s from now).
        let queued: Vec<_> = (0..2)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move { limiter.acquire().await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert_eq!(limiter.lock_waiting().len(), 2, "both queued");
        limiter.ready().await;
        assert_eq!(
            Instant::now() - start,
            Duration::from_millis(1500),
            "the slot after both queued callers, not the next one they take"
        );
        for caller in queued {
            caller.await.expect("queued caller");
        }
        limiter.acquire().await;
        assert_eq!(
            Instant::now() - start,
            Duration::from_millis(1500),
            "ready's slot is free"
        );

        // A queued caller that gives up frees its slot for the one who waits in ready.
        limiter.acquire().await;
        let gives_up = {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.acquire().await })
        };
        tokio::task::yield_now().await;
        let again = Instant::now();
        let ready = {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.ready().await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        gives_up.abort();
        ready.await.expect("ready");
        assert_eq!(
            Instant::now() - again,
            Duration::from_millis(500),
            "the slot the caller gave up"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_back_off_exponentially_and_reset() {
        let limiter = Limiter::new(small());
        assert_eq!(limiter.on_rate_limited(), Duration::from_secs(1));
        assert_eq!(limiter.on_rate_limited(), Duration::from_secs(2));
        assert_eq!(limiter.on_rate_limited(), Duration::from_secs(4));
        assert_eq!(limiter.on_rate_limited(), Duration::from_secs(4), "capped");
        let b = limiter.budget();
        assert_eq!(b.available_now, 0);
        assert_eq!(b.backoff_remaining, Some(Duration::from_secs(4)));
        let start = Instant::now();
        limiter.acquire().await;
        assert!(Instant::now() - start >= Duration::from_secs(4));
        limiter.on_success();
        assert_eq!(limiter.on_rate_limited(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn operation_limit_pauses_one_method() {
        let limiter = Limiter::new(small());
        let pause = limiter.on_operation_limit("crm.lead.list");
        assert_eq!(pause, Duration::from_secs(60));
        assert!(limiter.method_blocked_for("CRM.LEAD.LIST").is_some());
        assert!(limiter.method_blocked_for("crm.lead.get").is_none());
        assert_eq!(limiter.budget().blocked_methods.len(), 1);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(limiter.method_blocked_for("crm.lead.list").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn operation_limit_uses_reset_time() {
        let limiter = Limiter::new(small());
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        limiter.observe_time(
            "user.get",
            &TimeInfo {
                operating_reset_at: Some(now + 120),
                ..TimeInfo::default()
            },
        );
        let pause = limiter.on_operation_limit("user.get");
        assert!(
            pause > Duration::from_secs(100) && pause <= Duration::from_secs(120),
            "{pause:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn older_ticket_goes_first_and_cancelled_waiters_leave_the_queue() {
        let limiter = std::sync::Arc::new(Limiter::new(LimiterConfig {
            capacity: 1.0,
            ..small()
        }));
        let old = limiter.ticket();
        limiter.acquire().await; // fills the bucket
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        // A newer caller waits first...
        let newer = {
            let (limiter, order) = (limiter.clone(), order.clone());
            tokio::spawn(async move {
                limiter.acquire().await;
                order.lock().unwrap().push("newer");
            })
        };
        tokio::task::yield_now().await;
        // ...and a cancelled one must not block anyone.
        let cancelled = limiter.clone();
        let _ = tokio::time::timeout(Duration::from_millis(1), async move { cancelled.acquire().await }).await;
        // The older ticket (a request being sent again) overtakes the newer caller.
        limiter.acquire_with(old).await;
        order.lock().unwrap().push("older");
        newer.await.unwrap();
        assert_eq!(*order.lock().unwrap(), vec!["older", "newer"]);
    }

    #[tokio::test(start_paused = true)]
    async fn fifo_order_under_contention() {
        let limiter = std::sync::Arc::new(Limiter::new(LimiterConfig {
            capacity: 1.0,
            ..small()
        }));
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        for i in 0..6 {
            let limiter = limiter.clone();
            let order = order.clone();
            handles.push(tokio::spawn(async move {
                limiter.acquire().await;
                order.lock().unwrap().push(i);
            }));
            // Let each task queue before the next one is spawned.
            tokio::task::yield_now().await;
        }
        for h in handles {
            h.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4, 5]);
    }
}
