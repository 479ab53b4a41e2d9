//! `GET /status` (JSON for monitoring systems and the status page) and `GET /metrics` (Prometheus text).

use std::time::Duration;

use serde::Serialize;
use store::{Store, Timestamp};

use crate::gaps::GapsStatus;
use crate::telemetry::{CrmBudget, Gauge, HookStatus, Role, StoreRole, Telemetry};

/// The application's overall state, as monitoring systems read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AppStatus {
    Ok,
    Warning,
    Error,
}

/// The `/status` document (its shape is documented in the README).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub app_status: AppStatus,
    /// Why the status is not `Ok`, most serious first.
    pub reasons: Vec<String>,
    pub version: String,
    pub started_at: String,
    pub uptime_secs: u64,
    /// The backend, the tenant and whether this instance leads it.
    pub store: StoreRole,
    pub ami: AmiStatus,
    pub crm: CrmStatus,
    pub outbox: OutboxStatus,
    pub users_cache: UsersCacheStatus,
    pub hooks: HooksStatus,
    /// Periods ringlink did not follow the PBX: one whose calls may be missing (a Warning), the last one CEL
    /// recovered.
    pub gaps: GapsStatus,
}

#[derive(Debug, Clone, Serialize)]
pub struct AmiStatus {
    pub address: String,
    pub connected: bool,
    pub since: Option<String>,
    pub last_error: Option<String>,
    pub reconnects: u64,
    pub events_dropped: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CrmStatus {
    pub configured: bool,
    /// "Bitrix24" or "amoCRM"; `null` when none is configured.
    pub name: Option<String>,
    /// `true` when the last request got an answer, `false` when it failed on the way, `null` before any request.
    pub reachable: Option<bool>,
    pub last_ok_at: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub budget: Option<CrmBudget>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutboxStatus {
    pub pending: u64,
    pub in_flight: u64,
    pub done: u64,
    pub dropped: u64,
    pub failed: u64,
    /// Creation time of the oldest step not sent yet.
    pub oldest_open_at: Option<String>,
    pub oldest_open_age_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UsersCacheStatus {
    pub users: usize,
    /// Users with an internal extension (`UF_PHONE_INNER`).
    pub extensions: usize,
    pub last_updated: Option<String>,
    pub age_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HooksStatus {
    pub enabled: bool,
    pub hooks: Vec<HookStatus>,
}

/// When `/status` turns to `Warning`.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// The oldest unsent step is older than this.
    pub outbox_lag: Duration,
    /// The users cache was not refreshed for this long.
    pub users_cache_age: Duration,
    /// A period whose calls may be missing stops being a Warning this long after it ended, acknowledged or not.
    pub gap_warning: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            outbox_lag: Duration::from_secs(300),
            users_cache_age: Duration::from_secs(3 * 3600),
            gap_warning: Duration::from_secs(24 * 3600),
        }
    }
}

/// An RFC 3339 instant in UTC, to the second.
pub fn rfc3339(at: Timestamp) -> String {
    chrono::DateTime::from_timestamp_micros(at.as_micros())
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

fn age_secs(at: Timestamp, now: Timestamp) -> u64 {
    u64::try_from((now.as_micros() - at.as_micros()).max(0) / 1_000_000).unwrap_or(0)
}

/// Reads the store (blocking: call it off the async threads) and the telemetry.
pub fn status(store: &dyn Store, telemetry: &Telemetry, thresholds: Thresholds) -> store::Result<Status> {
    let now = Timestamp::now();
    let counts = store.step_counts()?;
    let users = store.users()?;
    let refreshed = store.users_refreshed_at()?;
    let gaps = crate::gaps::gaps(store, now, thresholds.gap_warning)?;
    let live = telemetry.live();
    let hooks = telemetry.hooks();
    let budget = telemetry.crm_budget();
    let reachable = match (live.crm_last_ok_at, live.crm_last_error_at) {
        (None, None) => None,
        (Some(_), None) => Some(true),
        (None, Some(_)) => Some(false),
        (Some(ok), Some(err)) => Some(ok >= err),
    };
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let store_role = telemetry.store_role();
    // A standby leaves the PBX alone: no AMI connection is how it should be.
    if !live.ami_connected && store_role.role == Role::Leader {
        errors.push(format!(
            "AMI {} is not connected{}",
            live.ami_address,
            live.ami_last_error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ));
    }
    if !live.crm_configured {
        warnings.push("no CRM is configured: calls are journaled but not registered".to_owned());
    } else if reachable == Some(false) {
        errors.push(format!(
            "{} is not reachable: {}",
            live.crm_name,
            live.crm_last_error.as_deref().unwrap_or("unknown error")
        ));
    }
    if counts.failed > 0 {
        warnings.push(format!("{} CRM step(s) failed", counts.failed));
    }
    let oldest_age = counts.oldest_open_created_at.map(|at| age_secs(at, now));
    if let Some(age) = oldest_age.filter(|age| *age > thresholds.outbox_lag.as_secs()) {
        warnings.push(format!("the oldest unsent CRM step waits for {age} s"));
    }
    if live.crm_configured {
        match refreshed {
            None => warnings.push("the users cache was never loaded".to_owned()),
            Some(at) if age_secs(at, now) > thresholds.users_cache_age.as_secs() => {
                warnings.push(format!("the users cache is {} s old", age_secs(at, now)))
            }
            Some(_) => {}
        }
    }
    if let Some(backoff) = budget.and_then(|b| b.backoff_secs) {
        warnings.push(format!(
            "{} rate limit hit: backing off for {backoff:.0} s",
            live.crm_name
        ));
    }
    for hook in hooks.iter().filter(|h| h.failures > 0) {
        warnings.push(format!("hook {} failed {} time(s)", hook.name, hook.failures));
    }
    if let Some(missing) = gaps.may_be_missing.as_ref().filter(|m| m.warning) {
        warnings.push(missing.message.clone());
    }
    let app_status = if !errors.is_empty() {
        AppStatus::Error
    } else if !warnings.is_empty() {
        AppStatus::Warning
    } else {
        AppStatus::Ok
    };
    errors.extend(warnings);
    Ok(Status {
        app_status,
        reasons: errors,
        version: telemetry.version().to_owned(),
        started_at: rfc3339(telemetry.started_at()),
        uptime_secs: telemetry.uptime().as_secs(),
        store: store_role,
        ami: AmiStatus {
            address: live.ami_address,
            connected: live.ami_connected,
            since: live.ami_since.map(rfc3339),
            last_error: live.ami_last_error,
            reconnects: telemetry.counter("ringlink_ami_reconnects_total", &[]),
            events_dropped: telemetry.counter("ringlink_ami_events_dropped_total", &[]),
        },
        crm: CrmStatus {
            configured: live.crm_configured,
            name: live.crm_configured.then(|| live.crm_name.clone()),
            reachable,
            last_ok_at: live.crm_last_ok_at.map(rfc3339),
            last_error: live.crm_last_error,
            last_error_at: live.crm_last_error_at.map(rfc3339),
            budget,
        },
        outbox: OutboxStatus {
            pending: counts.pending,
            in_flight: counts.in_flight,
            done: counts.done,
            dropped: counts.dropped,
            failed: counts.failed,
            oldest_open_at: counts.oldest_open_created_at.map(rfc3339),
            oldest_open_age_secs: oldest_age,
        },
        users_cache: UsersCacheStatus {
            users: users.len(),
            extensions: users.iter().filter(|u| u.extension().is_some()).count(),
            last_updated: refreshed.map(rfc3339),
            age_secs: refreshed.map(|at| age_secs(at, now)),
        },
        hooks: HooksStatus {
            enabled: hooks.iter().any(|h| h.enabled),
            hooks,
        },
        gaps,
    })
}

/// The `/metrics` text: gauges read now from the store and telemetry, then the counters and histograms.
pub fn metrics(store: &dyn Store, telemetry: &Telemetry) -> store::Result<String> {
    let now = Timestamp::now();
    let counts = store.step_counts()?;
    let mut gauges = vec![
        Gauge::new(
            "ringlink_up_seconds",
            "Seconds since ringlink started.",
            telemetry.uptime().as_secs_f64(),
        ),
        Gauge::new("ringlink_build_info", "The running version.", 1.0).label("version", telemetry.version()),
        Gauge::new(
            "ringlink_ami_connected",
            "1 while the AMI session is logged in.",
            f64::from(u8::from(telemetry.live().ami_connected)),
        ),
    ];
    for (state, value) in [
        ("pending", counts.pending),
        ("in_flight", counts.in_flight),
        ("done", counts.done),
        ("dropped", counts.dropped),
        ("failed", counts.failed),
    ] {
        gauges.push(
            Gauge::new(
                "ringlink_outbox_steps",
                "CRM steps in the outbox by state.",
                value as f64,
            )
            .label("state", state),
        );
    }
    gauges.push(Gauge::new(
        "ringlink_outbox_oldest_open_seconds",
        "Age of the oldest step not sent yet (0 when none).",
        counts
            .oldest_open_created_at
            .map(|at| age_secs(at, now) as f64)
            .unwrap_or(0.0),
    ));
    if let Some(budget) = telemetry.crm_budget() {
        gauges.push(Gauge::new(
            "ringlink_bitrix24_budget_available",
            "Bitrix24 requests that may go out right now (the limiter's estimate).",
            f64::from(budget.available_now),
        ));
        gauges.push(Gauge::new(
            "ringlink_bitrix24_budget_level",
            "The estimated level of the portal's request bucket.",
            budget.level,
        ));
    }
    for (what, count) in telemetry.held_sizes() {
        gauges.push(
            Gauge::new(
                "ringlink_held_entries",
                "Entries held in memory: live calls and channels, keys remembered after calls ended, events waiting.",
                count as f64,
            )
            .label("what", what),
        );
    }
    for (what, bytes) in memory_in_use() {
        gauges.push(
            Gauge::new(
                "ringlink_memory_bytes",
                "Memory by holder: SQLite's caches, the allocator's heap in use and free (kept for reuse), mapped blocks.",
                bytes as f64,
            )
            .label("what", what),
        );
    }
    Ok(telemetry.render_metrics(&gauges))
}

/// Where the process's memory is: SQLite's share, and the allocator's heap (glibc: summed over its arenas) in
/// use, free but kept, and in blocks mapped apart. Beside the resident size, this tells a cache filling to its
/// bound from memory that is never given back.
fn memory_in_use() -> Vec<(&'static str, u64)> {
    let mut memory = vec![("sqlite", store::SqliteStore::memory_in_use())];
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics (it takes each arena's lock in turn).
        let heap = unsafe { libc::mallinfo2() };
        memory.extend([
            ("heap_in_use", heap.uordblks as u64),
            ("heap_free", heap.fordblks as u64),
            ("heap_mapped", heap.hblkhd as u64),
        ]);
    }
    memory
}
