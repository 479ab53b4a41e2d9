//! The HTML pages. `maud` escapes every interpolated value, so caller names, PBX fields and CRM answers are
//! always shown as text.

use maud::{html, Markup, DOCTYPE};
use serde_json::Value;
use store::{CallSummary, JournalEntry, Step, Timestamp};

use crate::i18n::Lang;
use crate::status::{AppStatus, Status};
use crate::telemetry::Role;

/// The stylesheet, compiled in (no CDN: the UI works offline).
pub const STYLE: &str = include_str!("style.css");

/// What every page's frame needs.
pub struct Frame<'a> {
    pub lang: Lang,
    /// The session's CSRF token; `None` on the login and first-run pages.
    pub csrf: Option<&'a str>,
    /// The page's own path, for the language switch to come back to.
    pub path: &'a str,
    /// Seconds between automatic reloads.
    pub refresh: Option<u32>,
    /// The PBX's zone, seconds east of UTC.
    pub offset_secs: i32,
}

pub fn layout(frame: &Frame<'_>, title: &str, body: Markup) -> Markup {
    let l = frame.lang;
    html! {
        (DOCTYPE)
        html lang=(l.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(secs) = frame.refresh {
                    meta http-equiv="refresh" content=(secs);
                }
                title { (title) " — ringlink" }
                link rel="stylesheet" href="/assets/style.css";
            }
            body {
                header {
                    span.brand { "ringlink" }
                    @if frame.csrf.is_some() {
                        nav {
                            a href="/" { (l.t("status")) }
                            a href="/calls" { (l.t("calls")) }
                            a href="/users" { (l.t("users_title")) }
                            a href="/logs" { (l.t("logs")) }
                            a href="/settings" { (l.t("settings")) }
                            a href="/wizard" { (l.t("wizard")) }
                        }
                    }
                    span.lang {
                        @for other in [Lang::En, Lang::Ru] {
                            @if other == l {
                                b { (other.code().to_uppercase()) }
                            } @else {
                                a id=(format!("lang-{}", other.code())) href=(format!("/lang/{}?back={}", other.code(), encode(frame.path))) {
                                    (other.code().to_uppercase())
                                }
                            }
                            " "
                        }
                    }
                    @if let Some(csrf) = frame.csrf {
                        form.logout method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { (l.t("logout")) }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// Percent-encodes a path or query value.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn login(frame: &Frame<'_>, form_token: &str, error: Option<&str>) -> Markup {
    let l = frame.lang;
    layout(
        frame,
        l.t("login"),
        html! {
            form.card method="post" action="/login" {
                input type="hidden" name="csrf" value=(form_token);
                @if let Some(e) = error { p.error { (e) } }
                label { (l.t("password")) input type="password" name="password" autofocus required; }
                button type="submit" id="login" { (l.t("login")) }
            }
        },
    )
}

pub fn setup(frame: &Frame<'_>, form_token: &str, error: Option<&str>) -> Markup {
    let l = frame.lang;
    layout(
        frame,
        l.t("setup"),
        html! {
            form.card method="post" action="/setup" {
                p { (l.t("setup_intro")) }
                input type="hidden" name="csrf" value=(form_token);
                @if let Some(e) = error { p.error { (e) } }
                label { (l.t("setup_code")) input type="text" name="code" required autocomplete="off"; }
                label { (l.t("password")) input type="password" name="password" required minlength="10"; }
                label { (l.t("password_again")) input type="password" name="again" required minlength="10"; }
                button type="submit" id="save" { (l.t("save")) }
            }
        },
    )
}

pub fn message(frame: &Frame<'_>, title: &str, text: &str) -> Markup {
    layout(frame, title, html! { p { (text) } })
}

fn status_class(status: AppStatus) -> &'static str {
    match status {
        AppStatus::Ok => "ok",
        AppStatus::Warning => "warning",
        AppStatus::Error => "error",
    }
}

pub fn status(frame: &Frame<'_>, s: &Status) -> Markup {
    let l = frame.lang;
    let when = |at: &Option<String>| at.clone().unwrap_or_else(|| l.t("never").to_owned());
    layout(
        frame,
        l.t("status"),
        html! {
            section.card {
                h2 { (l.t("app_status")) ": " span id="app-status" class=(status_class(s.app_status)) { (format!("{:?}", s.app_status)) } }
                @if !s.reasons.is_empty() {
                    ul.reasons { @for r in &s.reasons { li { (r) } } }
                }
                p { (l.t("version")) " " (s.version) " · " (l.t("uptime")) " " (duration(s.uptime_secs)) }
            }
            @if let Some(gap) = &s.gaps.may_be_missing {
                section.card id="may-be-missing" {
                    h2 { (l.t("gap_title")) }
                    p { (gap.message) }
                    @if let Some(at) = &gap.acknowledged_at {
                        p.muted id="gap-acknowledged" { (l.t("gap_acknowledged")) " " (at) }
                    } @else {
                        form method="post" action="/gaps/acknowledge" {
                            input type="hidden" name="csrf" value=(frame.csrf.unwrap_or(""));
                            input type="hidden" name="to" value=(gap.to_micros);
                            button type="submit" id="acknowledge-gap" { (l.t("gap_acknowledge")) }
                        }
                    }
                }
            }
            section.card id="store" {
                h2 { (l.t("store_card")) }
                p {
                    (s.store.description)
                    @if let Some(tenant) = &s.store.tenant { " · " (l.t("tenant")) " " strong { (tenant) } }
                }
                p {
                    @match s.store.role {
                        Role::Leader => span.ok id="role" data-role="leader" { (l.t("role_leader")) },
                        Role::Standby => span.warning id="role" data-role="standby" {
                            (l.t("role_standby")) " " (s.store.leader.as_deref().unwrap_or("?"))
                        },
                    }
                }
                @if let Some(instance) = &s.store.instance {
                    p.muted {
                        (l.t("instance")) " " (instance)
                        @if let Some(generation) = s.store.generation { " · " (l.t("generation")) " " (generation) }
                    }
                }
            }
            section.card {
                h2 { (l.t("ami")) }
                p {
                    (s.ami.address) " — "
                    @if s.ami.connected { span.ok { (l.t("connected")) } } @else { span.error { (l.t("disconnected")) } }
                    @if let Some(since) = &s.ami.since { " " (l.t("since")) " " (since) }
                }
                p { (l.t("reconnects")) ": " (s.ami.reconnects) " · " (l.t("events_dropped")) ": " (s.ami.events_dropped) }
                @if let Some(e) = &s.ami.last_error { p.muted { (l.t("last_error")) ": " (e) } }
            }
            section.card {
                h2 { (s.crm.name.as_deref().unwrap_or(l.t("crm"))) }
                p {
                    @match (s.crm.configured, s.crm.reachable) {
                        (false, _) => span.warning { (l.t("not_configured")) },
                        (true, None) => span.muted { (l.t("no_requests")) },
                        (true, Some(true)) => span.ok { (l.t("reachable")) },
                        (true, Some(false)) => span.error { (l.t("unreachable")) },
                    }
                }
                @if let Some(b) = &s.crm.budget {
                    p { (l.t("budget")) ": " (b.available_now) " / " (format!("{:.0}", b.capacity)) }
                }
                @if let Some(e) = &s.crm.last_error { p.muted { (l.t("last_error")) ": " (e) " (" (when(&s.crm.last_error_at)) ")" } }
            }
            section.card {
                h2 { (l.t("outbox")) }
                p {
                    (s.outbox.pending) " " (l.t("pending")) " · " (s.outbox.in_flight) " " (l.t("in_flight")) " · "
                    span class=(if s.outbox.failed > 0 { "error" } else { "" }) { (s.outbox.failed) " " (l.t("failed")) }
                    " · " (s.outbox.done) " " (l.t("done")) " · " (s.outbox.dropped) " " (l.t("dropped"))
                }
                @if let Some(age) = s.outbox.oldest_open_age_secs { p { (l.t("oldest")) ": " (duration(age)) } }
            }
            section.card {
                h2 { (l.t("users_cache")) }
                p { (s.users_cache.users) " " (l.t("users")) ", " (s.users_cache.extensions) " " (l.t("extensions")) " · " (l.t("updated")) " " (when(&s.users_cache.last_updated)) }
            }
            section.card {
                h2 { (l.t("hooks")) }
                @if s.hooks.hooks.is_empty() { p.muted { (l.t("off")) } }
                ul { @for h in &s.hooks.hooks { li {
                    (h.name) ": " (h.calls) " " (l.t("runs")) ", " (h.applied) " " (l.t("applied")) ", "
                    (h.cancelled) " " (l.t("cancelled")) ", " (h.failures) " " (l.t("failed"))
                } } }
            }
        },
    )
}

fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h {m}m")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else {
        format!("{m}m {s}s")
    }
}

/// Local time in the PBX's zone: `2026-11-30 19:45:12`.
pub fn local_time(at: Timestamp, offset_secs: i32, millis: bool) -> String {
    let Some(zone) = chrono::FixedOffset::east_opt(offset_secs) else {
        return at.to_string();
    };
    match chrono::DateTime::from_timestamp_micros(at.as_micros()) {
        Some(t) if millis => t.with_timezone(&zone).format("%H:%M:%S%.3f").to_string(),
        Some(t) => t.with_timezone(&zone).format("%Y-%m-%d %H:%M:%S").to_string(),
        None => at.to_string(),
    }
}

/// The journal's filter form, as the request gave it.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct CallsQuery {
    #[serde(default)]
    pub number: String,
    #[serde(default)]
    pub employee: String,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub result: String,
    #[serde(default)]
    pub errors: Option<String>,
    /// Paging: `<last_at micros>:<call key>` of the last call shown.
    #[serde(default)]
    pub before: String,
}

impl CallsQuery {
    /// The query string for the next page.
    pub fn next_page(&self, last: &CallSummary) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("number", &self.number),
            ("employee", &self.employee),
            ("from", &self.from),
            ("to", &self.to),
            ("result", &self.result),
        ] {
            if !v.is_empty() {
                parts.push(format!("{k}={}", encode(v)));
            }
        }
        if self.errors.is_some() {
            parts.push("errors=1".into());
        }
        parts.push(format!(
            "before={}",
            encode(&format!("{}:{}", last.last_at.as_micros(), last.call_key))
        ));
        parts.join("&")
    }
}

pub const PAGE_SIZE: usize = 50;

/// The journal page: the filter form, then the calls found, or why none are shown (the search was stopped, the
/// UI is busy).
pub fn calls(frame: &Frame<'_>, query: &CallsQuery, found: Result<&[CallSummary], &str>) -> Markup {
    let l = frame.lang;
    let off = frame.offset_secs;
    let calls = found.unwrap_or_default();
    layout(
        frame,
        l.t("calls_title"),
        html! {
            form.filters method="get" action="/calls" {
                label { (l.t("number")) input type="search" name="number" value=(query.number); }
                label { (l.t("employee")) input type="search" name="employee" value=(query.employee); }
                label { (l.t("from")) input type="date" name="from" value=(query.from); }
                label { (l.t("to")) input type="date" name="to" value=(query.to); }
                label { (l.t("result"))
                    select name="result" {
                        @for (value, key) in [("", "any"), ("answered", "answered"), ("missed", "missed"), ("live", "live")] {
                            option value=(value) selected[query.result == value] { (l.t(key)) }
                        }
                    }
                }
                label.check { input type="checkbox" name="errors" value="1" checked[query.errors.is_some()]; (l.t("has_errors")) }
                button type="submit" id="filter" { (l.t("filter")) }
            }
            @if let Err(why) = found {
                p.error #search-notice { (why) }
            } @else if calls.is_empty() {
                p.muted { (l.t("no_calls")) }
            } @else {
                table.calls {
                    thead { tr {
                        th { (l.t("call")) } th { (l.t("started")) } th { (l.t("last_activity")) }
                        th { (l.t("entries")) } th { (l.t("errors")) } th { (l.t("steps_open")) } th { (l.t("steps_failed")) }
                    } }
                    tbody {
                        @for c in calls {
                            tr class=(if c.errors > 0 || c.failed_steps > 0 { "has-errors" } else { "" }) {
                                td { a.call href=(format!("/calls/{}", encode(&c.call_key))) { (c.call_key) } }
                                td { (local_time(c.first_at, off, false)) }
                                td { (local_time(c.last_at, off, false)) " " span.muted { (c.last_message) } }
                                td { (c.entries) } td { (c.errors) } td { (c.open_steps) } td { (c.failed_steps) }
                            }
                        }
                    }
                }
                @if calls.len() == PAGE_SIZE {
                    @if let Some(last) = calls.last() {
                        p { a href=(format!("/calls?{}", query.next_page(last))) { (l.t("older")) " →" } }
                    }
                }
            }
        },
    )
}

fn kind_key(kind: &str) -> &'static str {
    match kind {
        "ami" => "kind_ami",
        "decision" => "kind_decision",
        "hook" => "kind_hook",
        "crm_request" => "kind_crm_request",
        "crm_response" => "kind_crm_response",
        "error" => "kind_error",
        _ => "details",
    }
}

pub fn timeline(
    frame: &Frame<'_>,
    call: &str,
    entries: &[JournalEntry],
    steps: &[Step],
    players: &[String],
    notice: Option<&str>,
    reprocess: Reprocessing,
) -> Markup {
    let l = frame.lang;
    let off = frame.offset_secs;
    let retryable = steps
        .iter()
        .any(|s| matches!(s.state, store::StepState::Failed | store::StepState::Dropped));
    layout(
        frame,
        &format!("{} {}", l.t("call"), call),
        html! {
            @if let Some(n) = notice { p.notice { (n) } }
            @if let Some(result) = reprocess.result { (result) }
            @if let Some(first) = entries.first() {
                p.muted { (local_time(first.at, off, false)) }
            }
            @for src in players {
                p { audio.player controls preload="none" src=(src) {} }
            }
            h2 { (l.t("timeline")) }
            table.timeline {
                thead { tr { th { (l.t("time")) } th { (l.t("kind")) } th { (l.t("what")) } } }
                tbody {
                    @for e in entries {
                        tr class=(format!("kind-{}", e.kind.as_str())) {
                            td.time { (local_time(e.at, off, true)) }
                            td { span.badge { (l.t(kind_key(e.kind.as_str()))) } }
                            td {
                                span.message { (e.message) }
                                @if let Some(data) = &e.data {
                                    details { summary { (l.t("details")) } pre { (pretty(&mask_secrets(data))) } }
                                }
                            }
                        }
                    }
                }
            }
            h2 { (l.t("steps")) }
            table.steps {
                thead { tr { th { "#" } th { (l.t("kind")) } th { (l.t("state")) } th { (l.t("attempts")) } th { (l.t("last_error")) } } }
                tbody {
                    @for s in steps {
                        tr class=(format!("state-{}", s.state.as_str())) {
                            td { (s.seq) } td { (s.kind) } td { (s.state.as_str()) } td { (s.attempts) }
                            td { (s.last_error.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
            @if let Some(csrf) = frame.csrf {
                @if retryable {
                    form method="post" action=(format!("/calls/{}/retry", encode(call))) {
                        input type="hidden" name="csrf" value=(csrf);
                        button type="submit" id="retry" { (l.t("retry")) }
                    }
                }
                @if reprocess.available {
                    form method="post" action=(format!("/calls/{}/reprocess", encode(call))) {
                        input type="hidden" name="csrf" value=(csrf);
                        button type="submit" id="reprocess" title=(l.t("reprocess_hint")) { (l.t("reprocess")) }
                        p.muted { (l.t("reprocess_hint")) }
                    }
                }
            }
        },
    )
}

/// The timeline's "Re-process this call": whether the button is there, and the last press's result.
#[derive(Default)]
pub struct Reprocessing {
    pub available: bool,
    pub result: Option<Markup>,
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// Object keys whose values are secrets.
pub(crate) const SECRET_KEYS: &[&str] = &[
    "auth",
    "access_token",
    "refresh_token",
    "client_secret",
    "application_token",
    "password",
    "secret",
    "token",
];

/// A copy of `value` with secrets replaced by `***`: values of secret-named keys, and the secret part of
/// webhook URLs (`…/rest/<user>/<secret>/`).
pub fn mask_secrets(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let secret = SECRET_KEYS.iter().any(|s| k.eq_ignore_ascii_case(s));
                    (
                        k.clone(),
                        if secret {
                            Value::String("***".into())
                        } else {
                            mask_secrets(v)
                        },
                    )
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(mask_secrets).collect()),
        Value::String(text) => Value::String(mask_webhook(text)),
        other => other.clone(),
    }
}

pub(crate) fn mask_webhook(text: &str) -> String {
    let Some(at) = text.find("/rest/") else {
        return text.to_owned();
    };
    let rest = &text[at + 6..];
    let mut parts = rest.splitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(user), Some(_secret), Some(tail)) if !user.is_empty() && user.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{}/rest/{user}/***/{tail}", &text[..at])
        }
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_masked() {
        let masked = mask_secrets(&json!({
            "auth": "abc", "params": {"access_token": "x", "PHONE": "+7 900"},
            "url": "https://p.bitrix24.ru/rest/1/s3cr3t/telephony.externalcall.register"
        }));
        let text = masked.to_string();
        assert!(
            !text.contains("abc") && !text.contains("s3cr3t") && !text.contains("\"x\""),
            "{text}"
        );
        assert!(
            text.contains("+7 900") && text.contains("/rest/1/***/telephony"),
            "{text}"
        );
    }

    #[test]
    fn paths_are_encoded() {
        assert_eq!(encode("/calls/1700.5"), "/calls/1700.5");
        assert_eq!(encode("a b&c"), "a%20b%26c");
    }
}
