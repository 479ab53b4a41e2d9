//! The emulator's settable clock. Token lifetimes, the 30-minute re-registration rule, the leaky bucket and
//! every timestamp read it, so tests can jump hours ahead without waiting.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use chrono::{DateTime, Duration, FixedOffset, TimeZone, Utc};

#[derive(Debug)]
struct ClockInner {
    /// Virtual time at `anchor_real`.
    anchor_virtual: DateTime<Utc>,
    anchor_real: Instant,
    frozen: bool,
}

/// Cheap to clone; all clones share the same time.
#[derive(Debug, Clone)]
pub struct Clock {
    inner: Arc<Mutex<ClockInner>>,
    offset: FixedOffset,
}

impl Clock {
    pub fn new(start: DateTime<Utc>, frozen: bool, offset: FixedOffset) -> Self {
        Self {
            inner: Arc::new(Mutex::new(ClockInner {
                anchor_virtual: start,
                anchor_real: Instant::now(),
                frozen,
            })),
            offset,
        }
    }

    fn lock(&self) -> MutexGuard<'_, ClockInner> {
        // A poisoned lock only means another thread panicked mid-update of plain data; the data is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn now(&self) -> DateTime<Utc> {
        let inner = self.lock();
        if inner.frozen {
            inner.anchor_virtual
        } else {
            let real = Duration::from_std(inner.anchor_real.elapsed()).unwrap_or_else(|_| Duration::zero());
            inner.anchor_virtual + real
        }
    }

    /// Now in the portal's time zone, as Bitrix24 prints dates.
    pub fn now_local(&self) -> DateTime<FixedOffset> {
        self.now().with_timezone(&self.offset)
    }

    pub fn portal_offset(&self) -> FixedOffset {
        self.offset
    }

    pub fn to_local(&self, t: DateTime<Utc>) -> DateTime<FixedOffset> {
        self.offset.from_utc_datetime(&t.naive_utc())
    }

    pub fn advance(&self, by: std::time::Duration) {
        let by = Duration::from_std(by).unwrap_or_else(|_| Duration::zero());
        let mut inner = self.lock();
        inner.anchor_virtual += by;
    }

    pub fn set(&self, to: DateTime<Utc>) {
        let mut inner = self.lock();
        inner.anchor_virtual = to;
        inner.anchor_real = Instant::now();
    }

    /// Stop following real time (`true`) or resume from the current virtual time (`false`).
    pub fn set_frozen(&self, frozen: bool) {
        let now = self.now();
        let mut inner = self.lock();
        inner.anchor_virtual = now;
        inner.anchor_real = Instant::now();
        inner.frozen = frozen;
    }

    pub fn is_frozen(&self) -> bool {
        self.lock().frozen
    }
}

/// Bitrix24 date format: ISO-8601 with the portal offset and no fractional seconds.
pub fn format_date(t: DateTime<FixedOffset>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

/// Unix time as a float with microseconds, as in the `time` block.
pub fn unix_float(t: DateTime<Utc>) -> f64 {
    t.timestamp() as f64 + f64::from(t.timestamp_subsec_micros()) / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frozen_clock_moves_only_when_told() {
        let start = Utc.with_ymd_and_hms(2026, 3, 10, 8, 0, 0).single().unwrap();
        let offset = FixedOffset::east_opt(3 * 3600).unwrap();
        let clock = Clock::new(start, true, offset);
        assert_eq!(clock.now(), start);
        clock.advance(std::time::Duration::from_secs(1800));
        assert_eq!(clock.now(), start + Duration::minutes(30));
        assert_eq!(format_date(clock.now_local()), "2026-03-10T11:30:00+03:00");
    }
}
