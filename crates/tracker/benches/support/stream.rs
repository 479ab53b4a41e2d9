//! Synthetic but realistic AMI streams for benchmarks: the scenario scripts (Asterisk 22-shaped events,
//! including CEL and dialplan noise), renumbered so that many calls run at the same time, interleaved by
//! their timestamps as the PBX would emit them.

use ami::Message;

use super::{common, scripts};

/// Whether to keep whole calls or stop each one before its first hang-up (calls left live).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    Whole,
    BeforeHangup,
}

/// `calls` calls, cycling through every scenario, all starting within the same second.
pub fn concurrent_calls(calls: usize, cut: Cut) -> Vec<Message> {
    let mut tagged: Vec<(i64, usize, usize, Message)> = Vec::new();
    for i in 0..calls {
        common::set_id_base((i as u64) * 100);
        let script = scripts::by_index(i);
        let messages = &script.pbx.messages;
        let end = match cut {
            Cut::Whole => messages.len(),
            Cut::BeforeHangup => messages
                .iter()
                .position(|m| matches!(m.event_name(), Some("Hangup" | "HangupRequest")))
                .unwrap_or(messages.len()),
        };
        for (n, m) in messages[..end].iter().enumerate() {
            let at = m
                .get("Timestamp")
                .and_then(tracker::Timestamp::parse_ami)
                .map_or(0, |t| t.as_micros());
            tagged.push((at, i, n, m.clone()));
        }
    }
    common::set_id_base(0);
    tagged.sort_by_key(|(at, call, n, _)| (*at, *call, *n));
    tagged.into_iter().map(|(_, _, _, m)| m).collect()
}
