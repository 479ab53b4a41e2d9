//! What the running service tells the UI: live connection state and the counters and histograms of `/metrics`.
//!
//! The service holds one [`Telemetry`] (behind an `Arc`) and reports to it as things happen; reporting is a short
//! lock and an addition, never I/O, so it cannot slow a call down. `/status` and `/metrics` read it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use store::Timestamp;

/// Bitrix24's request budget as the client's limiter sees it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CrmBudget {
    /// Requests that may go out right now.
    pub available_now: u32,
    /// The estimated level of the portal's leaky bucket.
    pub level: f64,
    pub capacity: f64,
    pub drain_per_sec: f64,
    /// Seconds left of a back-off after `QUERY_LIMIT_EXCEEDED`.
    pub backoff_secs: Option<f64>,
}

/// A customization hook's counters, as `/status` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookStatus {
    pub name: String,
    pub enabled: bool,
    pub calls: u64,
    /// Runs whose answer ringlink used.
    pub applied: u64,
    /// Runs whose empty answer cancelled that one request.
    pub cancelled: u64,
    pub failures: u64,
}

type BudgetSource = Arc<dyn Fn() -> CrmBudget + Send + Sync>;
type HooksSource = Arc<dyn Fn() -> Vec<HookStatus> + Send + Sync>;

/// The live state of the connections.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub ami_address: String,
    pub ami_connected: bool,
    /// Since when the AMI is connected (or disconnected).
    pub ami_since: Option<Timestamp>,
    pub ami_last_error: Option<String>,
    pub crm_configured: bool,
    /// The CRM's name in `/status` reasons ("Bitrix24", "amoCRM"); empty until one is configured.
    pub crm_name: String,
    pub crm_last_ok_at: Option<Timestamp>,
    pub crm_last_error: Option<String>,
    pub crm_last_error_at: Option<Timestamp>,
}

/// Whether this instance acts on the PBX's calls or waits to take over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// It follows the PBX and sends steps (the only instance of an embedded store always is).
    #[default]
    Leader,
    /// Another instance of its tenant leads; it takes over when that one's lease expires.
    Standby,
}

/// The store and this instance's place among the instances of its tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoreRole {
    /// `sqlite` or `postgresql`.
    pub backend: String,
    /// The backend in plain words, without secrets (file, or host/database and tenant).
    pub description: String,
    /// The PBX ⇄ portal pair's name in a shared database.
    pub tenant: Option<String>,
    pub role: Role,
    /// This instance's name in the leader election (shared databases only).
    pub instance: Option<String>,
    /// Who leads the tenant, as last seen (this instance when it leads).
    pub leader: Option<String>,
    /// The lease generation last seen (raised on every takeover).
    pub generation: Option<i64>,
}

/// Shared between the service (which reports) and the web server (which shows).
pub struct Telemetry {
    version: String,
    started: Instant,
    started_at: Timestamp,
    live: Mutex<Live>,
    metrics: Mutex<Metrics>,
    budget: Mutex<Option<BudgetSource>>,
    hooks: Mutex<Option<HooksSource>>,
    store: Mutex<StoreRole>,
    /// Entries the service holds in memory, by what they are (see [`Telemetry::held`]).
    held: Mutex<Vec<(&'static str, u64)>>,
}

impl Telemetry {
    pub fn new(version: impl Into<String>) -> Self {
        Telemetry {
            version: version.into(),
            started: Instant::now(),
            started_at: Timestamp::now(),
            live: Mutex::new(Live::default()),
            metrics: Mutex::new(Metrics::default()),
            budget: Mutex::new(None),
            hooks: Mutex::new(None),
            store: Mutex::new(StoreRole::default()),
            held: Mutex::new(Vec::new()),
        }
    }

    /// Records how many entries the service holds in memory now, by what they are (`tracker_calls`,
    /// `tracker_remembered`, …): `/metrics` shows them as `ringlink_held_entries{what}`, so that growth over a
    /// long run can be told apart from the allocator's.
    pub fn held(&self, sizes: &[(&'static str, u64)]) {
        *lock(&self.held) = sizes.to_vec();
    }

    /// The sizes last recorded by [`Telemetry::held`].
    pub fn held_sizes(&self) -> Vec<(&'static str, u64)> {
        lock(&self.held).clone()
    }

    /// The store and this instance's role, as `/status` shows them.
    pub fn store_role(&self) -> StoreRole {
        lock(&self.store).clone()
    }

    /// Records the store and the role (the service reports every change of role).
    pub fn set_store_role(&self, role: StoreRole) {
        *lock(&self.store) = role;
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn started_at(&self) -> Timestamp {
        self.started_at
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn live(&self) -> Live {
        lock(&self.live).clone()
    }

    /// Where the AMI is (shown on the status page).
    pub fn ami_address(&self, address: &str) {
        lock(&self.live).ami_address = address.to_owned();
    }

    pub fn ami_connected(&self) {
        let mut live = lock(&self.live);
        if !live.ami_connected {
            live.ami_connected = true;
            live.ami_since = Some(Timestamp::now());
        }
    }

    pub fn ami_disconnected(&self, reason: &str) {
        let mut live = lock(&self.live);
        live.ami_last_error = Some(reason.to_owned());
        if live.ami_connected || live.ami_since.is_none() {
            live.ami_connected = false;
            live.ami_since = Some(Timestamp::now());
        }
    }

    pub fn ami_reconnected(&self) {
        self.ami_connected();
        self.count("ringlink_ami_reconnects_total", &[], 1);
    }

    pub fn ami_events_dropped(&self, count: u64) {
        self.count("ringlink_ami_events_dropped_total", &[], count);
    }

    /// A CRM is configured: `/status` then reports on its reachability under its name.
    pub fn crm_configured(&self, name: &str) {
        let mut live = lock(&self.live);
        live.crm_configured = true;
        name.clone_into(&mut live.crm_name);
    }

    /// Where `/status` reads the CRM's request budget from (Bitrix24's leaky bucket).
    pub fn crm_budget_source(&self, budget: impl Fn() -> CrmBudget + Send + Sync + 'static) {
        *lock(&self.budget) = Some(Arc::new(budget));
    }

    /// Where `/status` reads the hooks' counters from.
    pub fn hooks_source(&self, hooks: impl Fn() -> Vec<HookStatus> + Send + Sync + 'static) {
        *lock(&self.hooks) = Some(Arc::new(hooks));
    }

    pub fn crm_budget(&self) -> Option<CrmBudget> {
        let source = lock(&self.budget).clone();
        source.map(|budget| budget())
    }

    pub fn hooks(&self) -> Vec<HookStatus> {
        let source = lock(&self.hooks).clone();
        source.map(|hooks| hooks()).unwrap_or_default()
    }

    /// A Bitrix24 request (a single method or a `batch`) was answered (`error: None`) or failed on the way.
    pub fn crm_request(&self, method: &str, took: Duration, error: Option<&str>) {
        {
            let mut live = lock(&self.live);
            let now = Timestamp::now();
            match error {
                None => live.crm_last_ok_at = Some(now),
                Some(e) => {
                    live.crm_last_error = Some(e.to_owned());
                    live.crm_last_error_at = Some(now);
                }
            }
        }
        self.observe("ringlink_bitrix24_request_seconds", &[("method", method)], took);
    }

    /// A CRM step's attempt ended: `outcome` is `sent`, `retried`, `failed` or `dropped`.
    pub fn step(&self, method: &str, outcome: &str) {
        self.count("ringlink_steps_total", &[("method", method), ("outcome", outcome)], 1);
    }

    /// A card was acknowledged by Bitrix24 this long after the call event that asked for it was stored.
    pub fn card_popped(&self, took: Duration) {
        self.observe("ringlink_card_pop_seconds", &[], took);
    }

    /// A call ended; `direction` and `result` as the tracker tells them.
    pub fn call_ended(&self, direction: &str, result: &str) {
        self.count(
            "ringlink_calls_total",
            &[("direction", direction), ("result", result)],
            1,
        );
    }

    /// A customization hook was called.
    pub fn hook_called(&self, hook: &str, took: Duration, failed: bool) {
        self.observe("ringlink_hook_seconds", &[("hook", hook)], took);
        if failed {
            self.count("ringlink_hook_failures_total", &[("hook", hook)], 1);
        }
    }

    fn count(&self, name: &'static str, labels: &[(&str, &str)], by: u64) {
        let mut metrics = lock(&self.metrics);
        *metrics.counters.entry(Series::new(name, labels)).or_default() += by;
    }

    fn observe(&self, name: &'static str, labels: &[(&str, &str)], took: Duration) {
        let mut metrics = lock(&self.metrics);
        metrics
            .histograms
            .entry(Series::new(name, labels))
            .or_insert_with(Histogram::new)
            .observe(took.as_secs_f64());
    }

    /// A counter's current value (0 if never counted).
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let series = Series::new(name, labels);
        lock(&self.metrics).counters.get(&series).copied().unwrap_or(0)
    }

    /// Writes every counter and histogram in the Prometheus text format, after `gauges` (name, help, value).
    pub fn render_metrics(&self, gauges: &[Gauge]) -> String {
        let mut out = String::with_capacity(4096);
        let mut previous = None;
        for gauge in gauges {
            // Gauges of one family come together, under one header.
            if previous != Some(gauge.name) {
                family_header(&mut out, gauge.name, gauge.help, "gauge");
                previous = Some(gauge.name);
            }
            let _ = writeln!(
                out,
                "{}{} {}",
                gauge.name,
                labels_text(&gauge.labels, None),
                gauge.value
            );
        }
        let metrics = lock(&self.metrics).clone();
        for family in FAMILIES {
            let counters: Vec<_> = metrics.counters.iter().filter(|(s, _)| s.name == family.name).collect();
            let histograms: Vec<_> = metrics
                .histograms
                .iter()
                .filter(|(s, _)| s.name == family.name)
                .collect();
            family_header(&mut out, family.name, family.help, family.kind);
            for (series, value) in counters {
                let _ = writeln!(out, "{}{} {value}", series.name, labels_text(&series.labels, None));
            }
            for (series, histogram) in histograms {
                let mut cumulative = 0;
                for (bound, count) in BUCKETS.iter().zip(&histogram.buckets) {
                    cumulative += count;
                    let le = format!("{bound}");
                    let _ = writeln!(
                        out,
                        "{}_bucket{} {cumulative}",
                        series.name,
                        labels_text(&series.labels, Some(&le))
                    );
                }
                let labels = labels_text(&series.labels, Some("+Inf"));
                let _ = writeln!(out, "{}_bucket{labels} {}", series.name, histogram.count);
                let plain = labels_text(&series.labels, None);
                let _ = writeln!(out, "{}_sum{plain} {}", series.name, histogram.sum);
                let _ = writeln!(out, "{}_count{plain} {}", series.name, histogram.count);
            }
        }
        out
    }
}

/// A value read at scrape time.
pub struct Gauge {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Gauge {
    pub fn new(name: &'static str, help: &'static str, value: f64) -> Self {
        Gauge {
            name,
            help,
            labels: Vec::new(),
            value,
        }
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.to_owned(), value.to_owned()));
        self
    }
}

struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
}

const FAMILIES: &[Family] = &[
    Family {
        name: "ringlink_calls_total",
        help: "Calls that ended, by direction and result.",
        kind: "counter",
    },
    Family {
        name: "ringlink_steps_total",
        help: "Attempts of CRM steps by Bitrix24 method and outcome (sent, retried, failed, dropped).",
        kind: "counter",
    },
    Family {
        name: "ringlink_bitrix24_request_seconds",
        help: "Time of Bitrix24 requests (a batch counts once), by method.",
        kind: "histogram",
    },
    Family {
        name: "ringlink_card_pop_seconds",
        help: "From a call event stored to its card acknowledged by Bitrix24.",
        kind: "histogram",
    },
    Family {
        name: "ringlink_ami_reconnects_total",
        help: "AMI reconnections.",
        kind: "counter",
    },
    Family {
        name: "ringlink_ami_events_dropped_total",
        help: "AMI events dropped because the tracker fell behind (each drop triggers a resynchronisation).",
        kind: "counter",
    },
    Family {
        name: "ringlink_hook_seconds",
        help: "Time of customization hook calls, by hook.",
        kind: "histogram",
    },
    Family {
        name: "ringlink_hook_failures_total",
        help: "Customization hook calls that failed (the call went on without the hook), by hook.",
        kind: "counter",
    },
];

/// Upper bounds of the histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Series {
    name: &'static str,
    labels: Vec<(String, String)>,
}

impl Series {
    fn new(name: &str, labels: &[(&str, &str)]) -> Self {
        let name = FAMILIES
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.name)
            .unwrap_or("ringlink_unknown");
        Series {
            name,
            labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        }
    }
}

#[derive(Debug, Clone)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            buckets: [0; BUCKETS.len()],
            count: 0,
            sum: 0.0,
        }
    }

    fn observe(&mut self, value: f64) {
        if let Some(i) = BUCKETS.iter().position(|bound| value <= *bound) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += value;
    }
}

#[derive(Debug, Clone, Default)]
struct Metrics {
    counters: BTreeMap<Series, u64>,
    histograms: BTreeMap<Series, Histogram>,
}

fn family_header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn labels_text(labels: &[(String, String)], le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// Label values escape `\`, `"` and newlines (the text format's rules).
fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labels_escaped() {
        let t = Telemetry::new("1.0");
        t.crm_request("batch", Duration::from_millis(30), None);
        t.crm_request("batch", Duration::from_millis(3), None);
        t.crm_request("batch", Duration::from_secs(60), Some("timeout"));
        t.call_ended("incoming", "an\"swe\\red");
        let text = t.render_metrics(&[]);
        assert!(
            text.contains("ringlink_bitrix24_request_seconds_bucket{method=\"batch\",le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ringlink_bitrix24_request_seconds_bucket{method=\"batch\",le=\"0.05\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("ringlink_bitrix24_request_seconds_bucket{method=\"batch\",le=\"+Inf\"} 3"),
            "{text}"
        );
        assert!(text.contains(r#"result="an\"swe\\red""#), "{text}");
        let live = t.live();
        assert_eq!(live.crm_last_error.as_deref(), Some("timeout"));
        assert!(live.crm_last_ok_at.is_some());
    }
}
