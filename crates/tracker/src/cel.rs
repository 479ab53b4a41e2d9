//! Asterisk's CEL (Channel Event Logging) rows as the tracker's input: a call that began and ended while
//! ringlink did not follow the PBX is rebuilt from the rows Asterisk wrote to its CEL table (`cel_odbc`,
//! `cel_pgsql`, `cel_sqlite3_custom`), by the same tracker that follows AMI.
//!
//! [`CelFeed`] turns each row, in the table's order, into the AMI events the live stream would have carried
//! (`CHAN_START` → `Newchannel` and, for a channel some other channel of the call rang, `DialBegin`; `ANSWER` →
//! `Newstate` Up and `DialEnd ANSWER`; `HANGUP` → `DialEnd` of a leg that never answered and `Hangup` with the
//! row's cause; bridges, pickups and transfers likewise). It is pure: the shell reads the rows and looks up the
//! recordings, and feeds the result to a [`crate::Tracker`].
//!
//! What CEL does not say, and how the feed copes:
//! - **Who dialled a channel.** CEL has no dial events. A channel born into an existing call was rung by a Local
//!   `;2` of that call whose extension is its endpoint (a FreePBX queue member), else by the call's first
//!   channel, else by the call's latest live channel.
//! - **Why a leg stopped ringing** is read from its hang-up cause (26 answered elsewhere → `CANCEL`, 17 busy,
//!   others no answer), as app_dial would have reported it.
//! - **Recordings.** MixMonitor leaves no row; the shell finds the file by the FreePBX naming convention
//!   (`…-<uniqueid>.<ext>`) and hands it in ([`CelFeed::set_recording`]).
//! - **Times** have the table's precision (whole seconds for `cel_sqlite3_custom` and FreePBX's MySQL table,
//!   microseconds for `cel_pgsql`): rows are told to be of one instant when they are less than a second apart.

use std::collections::HashMap;

use ami::Message;
use chrono::{FixedOffset, NaiveDateTime, TimeZone};
use serde_json::Value;

use crate::time::Timestamp;

/// One CEL row, with the columns Asterisk's database backends write (`eventtype … extra`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CelRow {
    /// The row's id in its table (its order), 0 if the table has none.
    pub id: i64,
    /// `CHAN_START`, `ANSWER`, …; a numeric event type (`cel_pgsql` with an integer column) is read too.
    pub event: String,
    pub time: Timestamp,
    pub cid_name: String,
    pub cid_num: String,
    pub cid_dnid: String,
    pub exten: String,
    pub context: String,
    pub channel: String,
    pub app: String,
    pub appdata: String,
    pub uniqueid: String,
    pub linkedid: String,
    pub peer: String,
    pub extra: String,
}

/// CEL event names by their numbers (`include/asterisk/cel.h`).
const EVENT_NAMES: &[&str] = &[
    "",
    "CHAN_START",
    "CHAN_END",
    "HANGUP",
    "ANSWER",
    "APP_START",
    "APP_END",
    "BRIDGE_ENTER",
    "BRIDGE_EXIT",
    "PARK_START",
    "PARK_END",
    "BLINDTRANSFER",
    "ATTENDEDTRANSFER",
    "USER_DEFINED",
    "LINKEDID_END",
    "PICKUP",
    "FORWARD",
    "LOCAL_OPTIMIZE",
    "LOCAL_OPTIMIZE_BEGIN",
    "STREAM_BEGIN",
    "STREAM_END",
    "DTMF",
];

impl CelRow {
    /// The event's name, whether the table keeps names or numbers.
    pub fn event_name(&self) -> &str {
        let event = self.event.trim();
        match event.parse::<usize>() {
            Ok(n) => EVENT_NAMES.get(n).copied().unwrap_or(""),
            Err(_) => event,
        }
    }
}

/// Reads a CEL `eventtime` as the tables keep it: `YYYY-MM-DD HH:MM:SS[.ffffff]` in the PBX's zone (`offset`),
/// an RFC 3339 instant, or `<epoch>[.<fraction>]` (`cel_sqlite3_custom` without `dateformat`).
pub fn parse_event_time(text: &str, offset: FixedOffset) -> Option<Timestamp> {
    let text = text.trim();
    if let Some(t) = Timestamp::parse_ami(text) {
        return Some(t);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(Timestamp::from_micros(t.timestamp_micros()));
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(local) = NaiveDateTime::parse_from_str(text, format) {
            let at = offset.from_local_datetime(&local).single()?;
            return Some(Timestamp::from_micros(at.timestamp_micros()));
        }
    }
    // PostgreSQL's `timestamp with time zone` as text: `2026-11-22 03:38:37.123+03`.
    for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(t) = chrono::DateTime::parse_from_str(text, format) {
            return Some(Timestamp::from_micros(t.timestamp_micros()));
        }
    }
    None
}

/// What the feed remembers of a channel.
#[derive(Debug, Clone)]
struct Chan {
    name: String,
    uniqueid: String,
    linkedid: String,
    cid_num: String,
    exten: String,
    context: String,
    dialed_by: Option<String>,
    answered: bool,
    hung_up: bool,
    /// The extension a Local channel stands for (`Local/<exten>@…`).
    local_exten: Option<String>,
    /// A Local `;2` half.
    local_two: bool,
}

/// Turns CEL rows into the AMI events the tracker follows. Feed rows in the table's order (by id, or by time
/// then id) with [`CelFeed::messages`].
#[derive(Debug, Default)]
pub struct CelFeed {
    channels: HashMap<String, Chan>,
    /// Live channels of each linkedid, in birth order.
    calls: HashMap<String, Vec<String>>,
    recordings: HashMap<String, String>,
    /// Seen ahead by [`CelFeed::prepare`]: the number a channel was dialled with (its first extension other
    /// than `s`), by uniqueid.
    dialed: HashMap<String, String>,
    /// Seen ahead: channels that hung up themselves (their HANGUP names them as its source), with when.
    hung_up_themselves: HashMap<String, Timestamp>,
}

impl CelFeed {
    pub fn new() -> Self {
        Self::default()
    }

    /// The recording MixMonitor made on the channel `uniqueid` (its path on the PBX): the tracker learns it as
    /// it would from `MIXMONITOR_FILENAME` when the channel starts.
    pub fn set_recording(&mut self, uniqueid: &str, path: &str) {
        self.recordings.insert(uniqueid.to_owned(), path.to_owned());
    }

    /// Looks ahead over a batch of rows (whole calls, as the shell reads them) for what a row alone cannot say:
    /// the number a channel was dialled with (CHAN_START shows `s`; later rows show it) and which channels
    /// hung up themselves (a caller giving up, which stops its ringing legs as "caller gone").
    pub fn prepare(&mut self, rows: &[CelRow]) {
        for row in rows {
            let uid = row.uniqueid.trim();
            let exten = row.exten.trim();
            match row.event_name() {
                "CHAN_START" => {}
                "HANGUP" => {
                    let extra = parse_extra(&row.extra);
                    if text(&extra, "hangupsource") == row.channel.trim() {
                        self.hung_up_themselves.insert(uid.to_owned(), row.time);
                    }
                }
                _ if !exten.is_empty() && exten != "s" => {
                    self.dialed.entry(uid.to_owned()).or_insert_with(|| exten.to_owned());
                }
                _ => {}
            }
        }
    }

    /// Channels started and not yet ended.
    pub fn live_channels(&self) -> usize {
        self.channels.len()
    }

    /// The AMI events that `row` stands for, in the order the live stream would carry them.
    pub fn messages(&mut self, row: &CelRow) -> Vec<Message> {
        let mut out = Vec::new();
        let uid = row.uniqueid.trim();
        if uid.is_empty() {
            return out;
        }
        let event = row.event_name().to_owned();
        if event == "CHAN_START" {
            self.on_start(row, &mut out);
        } else if let Some(ch) = self.channels.get_mut(uid) {
            // The row is the channel's current snapshot: its linkedid may have moved (bridges take the oldest).
            let linkedid = row.linkedid.trim();
            if !linkedid.is_empty() && linkedid != ch.linkedid {
                let old = std::mem::replace(&mut ch.linkedid, linkedid.to_owned());
                if let Some(list) = self.calls.get_mut(&old) {
                    list.retain(|u| u != uid);
                }
                self.calls.entry(linkedid.to_owned()).or_default().push(uid.to_owned());
            }
            if let Some(ch) = self.channels.get_mut(uid) {
                if !row.cid_num.trim().is_empty() {
                    ch.cid_num = row.cid_num.trim().to_owned();
                }
                if !row.exten.trim().is_empty() {
                    ch.exten = row.exten.trim().to_owned();
                }
                if !row.context.trim().is_empty() {
                    ch.context = row.context.trim().to_owned();
                }
            }
        } else {
            // A row about a channel the feed never saw start (the period read began after it): nothing to
            // rebuild from.
            return out;
        }
        let extra = parse_extra(&row.extra);
        match event.as_str() {
            "ANSWER" => self.on_answer(row, &mut out),
            "BRIDGE_ENTER" | "BRIDGE_EXIT" => {
                let name = if event == "BRIDGE_ENTER" {
                    "BridgeEnter"
                } else {
                    "BridgeLeave"
                };
                let mut m = self.event(name, row, uid);
                m.push("BridgeUniqueid", text(&extra, "bridge_id"));
                out.push(m);
            }
            "HANGUP" => self.on_hangup(row, &extra, &mut out),
            "CHAN_END" => {
                if self.channels.get(uid).is_some_and(|c| !c.hung_up) {
                    let mut m = self.event("Hangup", row, uid);
                    m.push("Cause", "16");
                    out.push(m);
                }
                self.forget(uid);
            }
            "PICKUP" => {
                // Reported on the channel picked up; the picker is in `extra`.
                let picker = text(&extra, "pickup_channel_uniqueid");
                if self.channels.contains_key(picker.as_str()) {
                    let mut m = self.event("Pickup", row, &picker);
                    self.push_block(&mut m, "Target", uid);
                    out.push(m);
                }
            }
            "BLINDTRANSFER" => {
                let mut m = self.event("BlindTransfer", row, uid);
                rename_block(&mut m, "Transferer");
                m.push("Result", "Success");
                m.push("IsExternal", "No");
                let transferee = text(&extra, "transferee_channel_uniqueid");
                self.push_block(&mut m, "Transferee", &transferee);
                m.push("BridgeUniqueid", text(&extra, "bridge_id"));
                m.push("Extension", text(&extra, "extension"));
                m.push("Context", text(&extra, "context"));
                out.push(m);
            }
            "ATTENDEDTRANSFER" => {
                let mut m = self.event("AttendedTransfer", row, uid);
                rename_block(&mut m, "OrigTransferer");
                m.push("Result", "Success");
                m.push("IsExternal", "No");
                m.push("OrigBridgeUniqueid", text(&extra, "bridge1_id"));
                self.push_block(&mut m, "SecondTransferer", &text(&extra, "channel2_uniqueid"));
                m.push("SecondBridgeUniqueid", text(&extra, "bridge2_id"));
                self.push_block(&mut m, "Transferee", &text(&extra, "transferee_channel_uniqueid"));
                self.push_block(
                    &mut m,
                    "TransferTarget",
                    &text(&extra, "transfer_target_channel_uniqueid"),
                );
                m.push("DestType", "Bridge");
                m.push("DestBridgeUniqueid", text(&extra, "bridge2_id"));
                out.push(m);
            }
            "PARK_START" => {
                let mut m = self.event("ParkedCall", row, uid);
                rename_block(&mut m, "Parkee");
                m.push("ParkerDialString", text(&extra, "parker_dial_string"));
                m.push("Parkinglot", text(&extra, "parking_lot"));
                m.push("ParkingSpace", row.exten.trim());
                out.push(m);
            }
            "PARK_END" => {
                let reason = text(&extra, "reason");
                let name = match reason.as_str() {
                    "ParkedCallTimeOut" => "ParkedCallTimeOut",
                    "ParkedCallGiveUp" => "ParkedCallGiveUp",
                    _ => "UnParkedCall",
                };
                let mut m = self.event(name, row, uid);
                rename_block(&mut m, "Parkee");
                if name == "UnParkedCall" {
                    let retriever = text(&extra, "retriever");
                    let retriever_uid = self
                        .channels
                        .values()
                        .find(|c| c.name == retriever)
                        .map(|c| c.uniqueid.clone());
                    if let Some(r) = retriever_uid {
                        self.push_block(&mut m, "Retriever", &r);
                    }
                }
                out.push(m);
            }
            _ => {}
        }
        // The row itself, as the AMI CEL backend would have sent it (the tracker keeps its `extra`).
        out.push(cel_message(row, &event));
        out
    }

    fn on_start(&mut self, row: &CelRow, out: &mut Vec<Message>) {
        let uid = row.uniqueid.trim().to_owned();
        let linkedid = match row.linkedid.trim() {
            "" => uid.clone(),
            l => l.to_owned(),
        };
        let name = row.channel.trim().to_owned();
        let (local_exten, local_two) = local_parts(&name);
        let first = uid == linkedid;
        let dialer = if first || local_two {
            None
        } else {
            self.dialer_of(&linkedid, &name)
        };
        let chan = Chan {
            name: name.clone(),
            uniqueid: uid.clone(),
            linkedid: linkedid.clone(),
            cid_num: row.cid_num.trim().to_owned(),
            exten: row.exten.trim().to_owned(),
            context: row.context.trim().to_owned(),
            dialed_by: dialer.clone(),
            answered: false,
            hung_up: false,
            local_exten,
            local_two,
        };
        self.channels.insert(uid.clone(), chan);
        self.calls.entry(linkedid).or_default().push(uid.clone());
        let mut m = self.event("Newchannel", row, &uid);
        // Born ringing when it came in (a trunk or phone calling), down when it is about to be dialled.
        m.set("ChannelState", if dialer.is_some() || local_two { "0" } else { "4" });
        if !row.cid_dnid.trim().is_empty() && first {
            m.push("DNID", row.cid_dnid.trim());
        }
        out.push(m);
        if let Some(path) = self.recordings.get(&uid).cloned() {
            let mut m = self.event("VarSet", row, &uid);
            m.push("Variable", "MIXMONITOR_FILENAME");
            m.push("Value", path);
            out.push(m);
        }
        if let Some(dialer) = dialer {
            let mut m = self.event("DialBegin", row, &dialer);
            self.push_block(&mut m, "Dest", &uid);
            m.push("DialString", self.dial_string(&uid, &name));
            out.push(m);
        }
    }

    /// `PJSIP/<number>@<endpoint>` when the number the channel was dialled with is known, else `PJSIP/<endpoint>`.
    fn dial_string(&self, uid: &str, name: &str) -> String {
        let tech = name.split_once('/').map_or("", |(t, _)| t);
        let endpoint = endpoint_of(name);
        match self.dialed.get(uid) {
            Some(n) if n != endpoint && n.bytes().all(|b| b.is_ascii_digit() || b == b'+') => {
                format!("{tech}/{n}@{endpoint}")
            }
            _ => format!("{tech}/{endpoint}"),
        }
    }

    /// The channel that rang a channel named `name` just born into `linkedid`.
    fn dialer_of(&self, linkedid: &str, name: &str) -> Option<String> {
        let live = self.calls.get(linkedid)?;
        let endpoint = endpoint_of(name);
        let live_chan = |u: &&String| self.channels.get(u.as_str()).filter(|c| !c.hung_up);
        live.iter()
            .rev()
            .filter_map(|u| live_chan(&u))
            .find(|c| c.local_two && c.local_exten.as_deref() == Some(endpoint))
            .or_else(|| {
                live.iter()
                    .filter_map(|u| live_chan(&u))
                    .find(|c| c.uniqueid == linkedid)
            })
            .or_else(|| {
                live.iter()
                    .rev()
                    .filter_map(|u| live_chan(&u))
                    .find(|c| c.dialed_by.is_none() || c.answered)
            })
            .map(|c| c.uniqueid.clone())
    }

    fn on_answer(&mut self, row: &CelRow, out: &mut Vec<Message>) {
        let uid = row.uniqueid.trim();
        let mut m = self.event("Newstate", row, uid);
        m.set("ChannelState", "6");
        out.push(m);
        let Some(ch) = self.channels.get_mut(uid) else {
            return;
        };
        if ch.answered {
            return;
        }
        ch.answered = true;
        if let Some(dialer) = ch.dialed_by.clone() {
            let mut m = self.event("DialEnd", row, &dialer);
            self.push_block(&mut m, "Dest", uid);
            m.push("DialStatus", "ANSWER");
            out.push(m);
        }
    }

    fn on_hangup(&mut self, row: &CelRow, extra: &Value, out: &mut Vec<Message>) {
        let uid = row.uniqueid.trim();
        let cause = extra.get("hangupcause").and_then(Value::as_u64).unwrap_or(16);
        let Some(ch) = self.channels.get(uid) else {
            return;
        };
        if let (Some(dialer), false) = (ch.dialed_by.clone(), ch.answered) {
            // The caller's HANGUP and its legs' are written within the same instant; tables with sub-second
            // times (`cel_pgsql`) show it microseconds apart.
            let caller_gone = self
                .hung_up_themselves
                .get(&dialer)
                .is_some_and(|t| (t.as_micros() - row.time.as_micros()).abs() < 1_000_000);
            let status = match cause {
                _ if caller_gone => "CANCEL",
                26 | 127 => "CANCEL",
                17 => "BUSY",
                34 | 42 => "CONGESTION",
                3 | 20 => "CHANUNAVAIL",
                _ => "NOANSWER",
            };
            if caller_gone {
                // The caller's own HANGUP row comes after its legs'; AMI says it hung up first.
                let mut m = self.event("HangupRequest", row, &dialer);
                m.push("Cause", "16");
                out.push(m);
            }
            let mut m = self.event("DialEnd", row, &dialer);
            self.push_block(&mut m, "Dest", uid);
            m.push("DialStatus", status);
            out.push(m);
        }
        if let Some(ch) = self.channels.get_mut(uid) {
            ch.hung_up = true;
        }
        let mut m = self.event("Hangup", row, uid);
        m.push("Cause", cause.to_string());
        out.push(m);
    }

    fn forget(&mut self, uid: &str) {
        if let Some(ch) = self.channels.remove(uid) {
            if let Some(list) = self.calls.get_mut(&ch.linkedid) {
                list.retain(|u| u != uid);
                if list.is_empty() {
                    self.calls.remove(&ch.linkedid);
                }
            }
        }
    }

    /// An event named `name` at the row's time, with the channel block of `uid` (as the feed knows it).
    fn event(&self, name: &str, row: &CelRow, uid: &str) -> Message {
        let mut m = Message::new()
            .with("Event", name)
            .with("Timestamp", row.time.to_string());
        self.push_block(&mut m, "", uid);
        m
    }

    fn push_block(&self, m: &mut Message, prefix: &str, uid: &str) {
        let Some(ch) = self.channels.get(uid) else {
            return;
        };
        let state = if ch.answered { "6" } else { "0" };
        for (key, value) in [
            ("Channel", ch.name.as_str()),
            ("ChannelState", state),
            ("CallerIDNum", ch.cid_num.as_str()),
            ("Exten", ch.exten.as_str()),
            ("Context", ch.context.as_str()),
            ("Uniqueid", ch.uniqueid.as_str()),
            ("Linkedid", ch.linkedid.as_str()),
        ] {
            m.push(&format!("{prefix}{key}"), value);
        }
    }
}

/// The row as AMI's `Event: CEL`.
fn cel_message(row: &CelRow, event: &str) -> Message {
    Message::new()
        .with("Event", "CEL")
        .with("Timestamp", row.time.to_string())
        .with("EventName", event)
        .with("Channel", row.channel.trim())
        .with("CallerIDnum", row.cid_num.trim())
        .with("Exten", row.exten.trim())
        .with("Context", row.context.trim())
        .with("Application", row.app.trim())
        .with("AppData", row.appdata.trim())
        .with("UniqueID", row.uniqueid.trim())
        .with("LinkedID", row.linkedid.trim())
        .with("Peer", row.peer.trim())
        .with("Extra", row.extra.trim())
}

/// Renames the main channel block's headers to `prefix…` (a transfer's or park's party).
fn rename_block(m: &mut Message, prefix: &str) {
    let mut renamed = Message::new();
    for (key, value) in m.iter() {
        match key {
            "Channel" | "ChannelState" | "CallerIDNum" | "Exten" | "Context" | "Uniqueid" | "Linkedid" => {
                renamed.push(&format!("{prefix}{key}"), value)
            }
            _ => renamed.push(key, value),
        }
    }
    *m = renamed;
}

fn parse_extra(extra: &str) -> Value {
    serde_json::from_str(extra.trim()).unwrap_or(Value::Null)
}

fn text(extra: &Value, key: &str) -> String {
    extra.get(key).and_then(Value::as_str).unwrap_or_default().to_owned()
}

/// `PJSIP/101-00000001` → `101`; `Local/101@from-queue-0000001a;2` → `101@from-queue`.
fn endpoint_of(name: &str) -> &str {
    let rest = name.split_once('/').map_or(name, |(_, r)| r);
    let rest = rest.split(';').next().unwrap_or(rest);
    rest.rsplit_once('-').map_or(rest, |(e, _)| e)
}

/// For a Local channel: the extension it stands for and whether it is the `;2` half.
fn local_parts(name: &str) -> (Option<String>, bool) {
    let Some(rest) = name.strip_prefix("Local/") else {
        return (None, false);
    };
    let exten = rest.split('@').next().unwrap_or_default().to_owned();
    (Some(exten), name.ends_with(";2"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_are_read_as_names_or_numbers() {
        let row = |event: &str| CelRow {
            event: event.into(),
            ..CelRow::default()
        };
        assert_eq!(row("CHAN_START").event_name(), "CHAN_START");
        assert_eq!(row("4").event_name(), "ANSWER");
        assert_eq!(row("15").event_name(), "PICKUP");
        assert_eq!(row("99").event_name(), "");
    }

    #[test]
    fn event_times_are_read_in_every_form_the_backends_write() {
        let utc = FixedOffset::east_opt(0).expect("zero offset");
        let msk = FixedOffset::east_opt(3 * 3600).expect("+03:00");
        let at = Timestamp::from_secs(1_795_318_717);
        assert_eq!(parse_event_time("2026-11-22 03:38:37", utc), Some(at));
        assert_eq!(parse_event_time("2026-11-22 06:38:37", msk), Some(at));
        assert_eq!(
            parse_event_time("2026-11-22 03:38:37.250000", utc),
            Some(Timestamp::from_micros(at.as_micros() + 250_000))
        );
        assert_eq!(parse_event_time("1795318717.000000", msk), Some(at));
        assert_eq!(parse_event_time("2026-11-22 06:38:37+03", utc), Some(at));
        assert_eq!(parse_event_time("2026-11-22T03:38:37Z", msk), Some(at));
        assert_eq!(parse_event_time("yesterday", utc), None);
    }

    #[test]
    fn endpoints_and_local_halves_are_read_from_channel_names() {
        assert_eq!(endpoint_of("PJSIP/101-00000001"), "101");
        assert_eq!(endpoint_of("PJSIP/carrier-0000000a"), "carrier");
        assert_eq!(
            local_parts("Local/101@from-queue-00000003;2"),
            (Some("101".into()), true)
        );
        assert_eq!(local_parts("PJSIP/101-00000001"), (None, false));
    }
}
