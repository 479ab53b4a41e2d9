//! Recordings (`MIXMONITOR_FILENAME`) and CEL extras.

use super::*;

impl Tracker {
    pub(super) fn on_var_set(&mut self, message: &Message, now: Timestamp, out: &mut Vec<CallEvent>) {
        // VarSet is the chattiest event; only the recording path matters here.
        if !message
            .get("Variable")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("MIXMONITOR_FILENAME"))
        {
            return;
        }
        let Some(uid) = self.observe(message, &MAIN, true, now, out) else {
            return;
        };
        let path = message.get_unescaped("Value").unwrap_or_default();
        let path = path.trim();
        if path.is_empty() {
            return;
        }
        let Some(ch) = self.channels.get(uid) else {
            return;
        };
        let key = ch.call.clone();
        let name = ch.name.clone();
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if call.record == path {
            return;
        }
        call.record = path.to_owned();
        let conversation = call
            .convs
            .iter()
            .rev()
            .find(|c| c.leg == uid && c.is_live())
            .or_else(|| call.active_conv())
            .map(|c| c.leg.clone())
            .unwrap_or_default();
        out.push(CallEvent::RecordingStarted {
            call: key,
            conversation,
            channel: name,
            time: now,
            path: path.to_owned(),
        });
    }

    pub(super) fn on_cel(&mut self, message: &Message, now: Timestamp, out: &mut Vec<CallEvent>) {
        let Some(uid) = message.get("UniqueID").map(str::trim) else {
            return;
        };
        let extra = message.get("Extra").and_then(parse_extra);
        if self.channels.contains_key(uid) {
            // The linkedid a CEL event shows is as good as any other event's (the order between CEL and
            // channel events is not fixed).
            self.observe(message, &MAIN, false, now, out);
            if let (Some(extra), Some(ch)) = (extra, self.channels.get_mut(uid)) {
                ch.extra = extra;
            }
            return;
        }
        // CEL about a channel that already hung up (CEL HANGUP may follow the AMI Hangup): keep its extra if
        // its call is still live.
        let Some(extra) = extra else {
            return;
        };
        let Some(key) = self.dead_channels.call_of(uid) else {
            return;
        };
        if let Some(call) = self.calls.get_mut(&key) {
            if call.key == uid {
                call.primary_extra = extra.clone();
            }
            if let Some(conv) = call.convs.iter_mut().rev().find(|c| c.leg == uid) {
                conv.extra = extra;
            }
        }
    }
}
