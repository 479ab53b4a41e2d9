//! `ringlink replay`: runs a recorded AMI stream through the tracker, offline, for diagnosis and for golden tests.
//!
//! Input is a trace as `ringlink trace record` writes it (raw AMI bytes, CRLF or bare LF). The `.idx` file next to
//! it (`<byte offset> <unix time in microseconds>` per received chunk) is needed only when the events carry no
//! `Timestamp` header (manager.conf `timestampevents=no`): each message then takes the arrival time of the chunk
//! that completed it, as the live service takes its clock. Output is one line per ended call: JSON (`{"call_full": …, "events": […]}`) or a human summary.
//! Input the decoder has to drop is reported with its byte offset on stderr; the replay goes on.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use ami::trace::{decode_timed, index_path, read_index, IndexEntry};
use ami::{Frame, Message};
use serde::Serialize;
use tracker::{CallEvent, CallFull, Timestamp, Tracker, TrackerConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Text,
}

/// What a replay saw, for the exit status and the closing summary.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplaySummary {
    pub messages: usize,
    pub calls_ended: usize,
    pub calls_unfinished: usize,
    pub input_errors: usize,
}

#[derive(Serialize)]
struct EndedCall<'a> {
    call_full: &'a CallFull,
    events: &'a [CallEvent],
    /// With `--hooks`: what the call-level hooks answered for this call.
    #[serde(skip_serializing_if = "Option::is_none")]
    hooks: Option<serde_json::Value>,
}

/// Runs the hooks of `--hooks` on an ended call (nothing runs without it, so a replay stays deterministic).
pub type CallHooks<'a> = &'a mut dyn FnMut(&CallFull) -> serde_json::Value;

/// What a replay prints per ended call.
pub struct Show<'a> {
    pub format: Format,
    pub hooks: Option<CallHooks<'a>>,
}

/// Reads the `[tracker]` table of a ringlink config file (other sections are ignored, so the service's own
/// config works as is).
pub fn tracker_config(path: Option<&Path>) -> anyhow::Result<TrackerConfig> {
    let Some(path) = path else {
        return Ok(TrackerConfig::default());
    };
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| anyhow::anyhow!("{} is not valid TOML: {}", path.display(), e.message()))?;
    match table.get("tracker") {
        None => Ok(TrackerConfig::default()),
        Some(section) => section
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("{}: [tracker]: {}", path.display(), e.message())),
    }
}

/// When each chunk of a trace arrived, from the `.idx` next to it (`<trace>.idx`), if there is one.
pub fn read_arrivals(trace: &Path) -> anyhow::Result<Option<Vec<IndexEntry>>> {
    let path = index_path(trace);
    match read_index(&path) {
        Ok(index) => Ok(Some(index)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
    }
}

/// A channel event without the PBX's `Timestamp` (the login's own `FullyBooted` never has one).
fn is_untimed_event(m: &Message) -> bool {
    m.event_name().is_some() && m.get("Uniqueid").is_some() && m.get("Timestamp").is_none()
}

/// Reads the `[hooks]` table of a ringlink config file (timeouts, modes, per-hook switches for `--hooks`).
pub fn hooks_config(path: Option<&Path>) -> anyhow::Result<hooks::HooksConfig> {
    let Some(path) = path else {
        return Ok(hooks::HooksConfig::default());
    };
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| anyhow::anyhow!("{} is not valid TOML: {}", path.display(), e.message()))?;
    match table.get("hooks") {
        None => Ok(hooks::HooksConfig::default()),
        Some(section) => section
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("{}: [hooks]: {}", path.display(), e.message())),
    }
}

/// Replays `bytes` (named `source` in error messages), writing results to `out` and input errors to `err`.
/// `arrivals` (from the trace's `.idx`) time the events that carry no `Timestamp` header.
pub fn replay(
    bytes: &[u8],
    arrivals: Option<&[IndexEntry]>,
    source: &str,
    config: TrackerConfig,
    show: Show<'_>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ReplaySummary> {
    let Show { format, mut hooks } = show;
    let mut tracker = Tracker::new(config)?;
    let mut summary = ReplaySummary::default();
    let mut pending: HashMap<String, Vec<CallEvent>> = HashMap::new();
    let mut events = Vec::new();
    let mut said_untimed = false;
    for (frame, arrived) in decode_timed(bytes, arrivals.unwrap_or_default()) {
        let arrived = arrived.map(|micros| Timestamp::from_micros(i64::try_from(micros).unwrap_or(i64::MAX)));
        match frame {
            Frame::Banner(_) => {}
            Frame::Skipped { offset, bytes, reason } => {
                summary.input_errors += 1;
                writeln!(
                    err,
                    "{source}: bytes {offset}..{} skipped: {reason}",
                    offset.saturating_add(bytes)
                )?;
            }
            Frame::Message(m) => {
                summary.messages += 1;
                if !said_untimed && is_untimed_event(&m) {
                    said_untimed = true;
                    if arrivals.is_some() {
                        writeln!(
                            err,
                            "{source}: events carry no Timestamp header (manager.conf timestampevents=no); \
                             times are the arrival times of the .idx"
                        )?;
                    } else {
                        writeln!(
                            err,
                            "{source}: events carry no Timestamp header and there is no {source}.idx with arrival \
                             times: call times and talk times are unknown (set timestampevents=yes in manager.conf)"
                        )?;
                    }
                }
                events.clear();
                tracker.handle_into(&m, arrived, &mut events);
                for event in events.drain(..) {
                    let key = event.call().to_owned();
                    if let CallEvent::CallEnded { call_full, .. } = &event {
                        let call_full = call_full.clone();
                        let mut history = pending.remove(&key).unwrap_or_default();
                        history.push(event);
                        summary.calls_ended += 1;
                        let answered = hooks.as_mut().map(|run| run(&call_full));
                        write_call(out, format, &call_full, &history, answered)?;
                    } else {
                        pending.entry(key).or_default().push(event);
                    }
                }
            }
        }
    }
    summary.calls_unfinished = tracker.live_calls();
    Ok(summary)
}

fn write_call(
    out: &mut dyn Write,
    format: Format,
    call: &CallFull,
    events: &[CallEvent],
    hooks: Option<serde_json::Value>,
) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer(
                &mut *out,
                &EndedCall {
                    call_full: call,
                    events,
                    hooks,
                },
            )?;
            writeln!(out)?;
        }
        Format::Text => {
            writeln!(out, "{}", describe(call, events))?;
            for (hook, answer) in hooks.as_ref().and_then(|h| h.as_object()).into_iter().flatten() {
                let said = answer.get("said").and_then(|s| s.as_str()).unwrap_or_default();
                writeln!(out, "  {hook}: {said}")?;
            }
        }
    }
    Ok(())
}

/// One human line: who called whom, who rang and who talked, how it ended.
fn describe(call: &CallFull, events: &[CallEvent]) -> String {
    let ch = &call.channel;
    let number = |n: &numbers::Number| {
        if n.custom.is_empty() {
            n.original.clone()
        } else {
            n.custom.clone()
        }
    };
    let mut rang = Vec::new();
    let mut talked = Vec::new();
    // A conversation is an employee's leg: its leg events name the employee (`Leg::number`), whichever side of
    // the call the employee is on (the conversation's `from` is the client on an incoming call).
    let mut employee: HashMap<&str, &str> = HashMap::new();
    for e in events {
        match e {
            CallEvent::LegRinging(l) | CallEvent::LegDialing(l) | CallEvent::LegAnswered(l) => {
                employee.insert(&l.conversation, &l.number);
                if !matches!(e, CallEvent::LegAnswered(_)) && !rang.contains(&l.number) {
                    rang.push(l.number.clone());
                }
            }
            CallEvent::ConversationEnded {
                conversation,
                talk_seconds,
                ..
            } => {
                let who = employee
                    .get(conversation.as_str())
                    .map(|n| (*n).to_owned())
                    .or_else(|| {
                        let c = call.conversations.get(conversation)?;
                        Some(match ch.direction {
                            tracker::Direction::Outgoing => number(&c.channel.from),
                            _ => number(&c.channel.to),
                        })
                    })
                    .unwrap_or_else(|| conversation.clone());
                talked.push(format!("{who} {talk_seconds}s"));
            }
            _ => {}
        }
    }
    let direction = serde_json::to_value(ch.direction)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut line = format!(
        "call {} {direction} {} -> {} start {} result {}",
        ch.id,
        number(&ch.from),
        number(&ch.to),
        ch.start_time,
        call.result
    );
    if !ch.trunk.original.is_empty() {
        line.push_str(&format!(" trunk {}", ch.trunk.original));
    }
    if !rang.is_empty() {
        line.push_str(&format!(" rang [{}]", rang.join(", ")));
    }
    if !talked.is_empty() {
        line.push_str(&format!(" talked [{}]", talked.join(", ")));
    }
    if call.is_ivr {
        line.push_str(" ivr");
    }
    if !call.record.is_empty() {
        line.push_str(&format!(" record {}", call.record));
    }
    line
}
