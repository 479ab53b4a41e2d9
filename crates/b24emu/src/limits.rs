//! Request limits: the per-portal leaky bucket and the per-method operating-time limit.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};

use crate::api::Operating;
use crate::config::{LimitsConfig, OperatingConfig};

/// Each request adds 1; the counter drains at `drain_per_sec`; above `capacity` requests are refused.
#[derive(Debug)]
pub(crate) struct LeakyBucket {
    level: f64,
    updated: Option<DateTime<Utc>>,
}

impl LeakyBucket {
    pub fn new() -> Self {
        Self {
            level: 0.0,
            updated: None,
        }
    }

    fn drain(&mut self, now: DateTime<Utc>, drain_per_sec: f64) {
        if let Some(prev) = self.updated {
            let elapsed = (now - prev).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
            if elapsed > 0.0 {
                self.level = (self.level - elapsed * drain_per_sec).max(0.0);
            }
        }
        self.updated = Some(match self.updated {
            Some(prev) if prev > now => prev,
            _ => now,
        });
    }

    /// Admit one request, or refuse it. Refused requests do not fill the bucket.
    pub fn admit(&mut self, now: DateTime<Utc>, cfg: &LimitsConfig) -> bool {
        if !cfg.bucket_enabled {
            return true;
        }
        self.drain(now, cfg.bucket_drain_per_sec);
        if self.level + 1.0 > f64::from(cfg.bucket_capacity) {
            return false;
        }
        self.level += 1.0;
        true
    }

    pub fn level(&mut self, now: DateTime<Utc>, cfg: &LimitsConfig) -> f64 {
        self.drain(now, cfg.bucket_drain_per_sec);
        self.level
    }

    pub fn reset(&mut self) {
        self.level = 0.0;
    }
}

#[derive(Debug, Clone, Copy)]
struct Basket {
    opened: DateTime<Utc>,
    secs: f64,
}

/// Per method × per app/webhook: one-minute baskets, each forgotten 10 minutes after its first call.
#[derive(Debug, Default)]
pub(crate) struct OperatingLimits {
    baskets: HashMap<(String, String), Vec<Basket>>,
}

const BASKET_SPAN: i64 = 60;
const BASKET_LIFETIME: i64 = 600;

impl OperatingLimits {
    fn live(&mut self, key: &(String, String), now: DateTime<Utc>) -> &mut Vec<Basket> {
        let list = self.baskets.entry(key.clone()).or_default();
        list.retain(|b| b.opened + Duration::seconds(BASKET_LIFETIME) > now);
        list
    }

    fn figures(list: &[Basket], now: DateTime<Utc>) -> Operating {
        let used_secs = list.iter().map(|b| b.secs).sum();
        let reset_at = list
            .iter()
            .map(|b| b.opened)
            .min()
            .map_or(now, |first| first + Duration::seconds(BASKET_LIFETIME))
            .timestamp();
        Operating { used_secs, reset_at }
    }

    /// Checked before a call: once the sum is over the limit the method is blocked until baskets expire.
    pub fn check(
        &mut self,
        method: &str,
        principal: &str,
        now: DateTime<Utc>,
        cfg: &OperatingConfig,
    ) -> Result<(), Operating> {
        if !cfg.enabled {
            return Ok(());
        }
        let key = (method.to_owned(), principal.to_owned());
        let list = self.live(&key, now);
        let figures = Self::figures(list, now);
        if figures.used_secs > cfg.limit_secs {
            Err(figures)
        } else {
            Ok(())
        }
    }

    /// Charge a finished call its configured cost.
    pub fn charge(&mut self, method: &str, principal: &str, now: DateTime<Utc>, cfg: &OperatingConfig) -> Operating {
        let cost = cfg.method_costs.get(method).copied().unwrap_or(cfg.default_cost_secs);
        let key = (method.to_owned(), principal.to_owned());
        let list = self.live(&key, now);
        match list.last_mut() {
            Some(b) if b.opened + Duration::seconds(BASKET_SPAN) > now => b.secs += cost,
            _ => list.push(Basket {
                opened: now,
                secs: cost,
            }),
        }
        Self::figures(list, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn bucket_refuses_above_capacity_and_drains() {
        let cfg = LimitsConfig::default();
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap();
        let mut b = LeakyBucket::new();
        for _ in 0..50 {
            assert!(b.admit(t0, &cfg));
        }
        assert!(!b.admit(t0, &cfg));
        // Half a second drains one request at 2/s.
        assert!(b.admit(t0 + Duration::milliseconds(500), &cfg));
        assert!(!b.admit(t0 + Duration::milliseconds(500), &cfg));
        assert!(b.level(t0 + Duration::seconds(100), &cfg) == 0.0);
    }

    #[test]
    fn operating_limit_blocks_after_sum_exceeds() {
        let cfg = OperatingConfig {
            enabled: true,
            limit_secs: 10.0,
            default_cost_secs: 4.0,
            method_costs: Default::default(),
        };
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap();
        let mut ops = OperatingLimits::default();
        for _ in 0..3 {
            assert!(ops.check("m", "app", t0, &cfg).is_ok());
            ops.charge("m", "app", t0, &cfg);
        }
        let blocked = ops.check("m", "app", t0, &cfg).unwrap_err();
        assert_eq!(blocked.reset_at, (t0 + Duration::seconds(600)).timestamp());
        assert!(ops.check("other", "app", t0, &cfg).is_ok());
        assert!(ops.check("m", "app", t0 + Duration::seconds(600), &cfg).is_ok());
    }
}
