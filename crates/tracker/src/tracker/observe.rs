//! Observing channel blocks: channels appear, join calls, move to older linkedids, change state and name.

use super::*;

impl Tracker {
    pub(super) fn kind_of(&self, uid: &str) -> Option<EndpointKind> {
        self.channels.get(uid).map(|c| c.kind)
    }

    pub(super) fn call_of_mut(&mut self, uid: &str) -> Option<&mut Call> {
        let key = &self.channels.get(uid)?.call;
        self.calls.get_mut(key)
    }

    /// Is call `a` older than call `b`? Asterisk merges into the oldest linkedid.
    pub(super) fn is_older(&self, a: &str, b: &str) -> bool {
        match (linkedid_age(a), linkedid_age(b)) {
            (Some(x), Some(y)) => x < y,
            _ => match (self.calls.get(a), self.calls.get(b)) {
                (Some(x), Some(y)) => x.start < y.start,
                _ => false,
            },
        }
    }

    /// Notes a channel block of `message`; creates the channel if `create` and it is new. Moves the channel to
    /// an older call when the block shows an older linkedid. Returns the channel's uniqueid if it is live.
    pub(super) fn observe<'m>(
        &mut self,
        message: &'m Message,
        block: &Block,
        create: bool,
        now: Timestamp,
        out: &mut Vec<CallEvent>,
    ) -> Option<&'m str> {
        let uid = message.get(block.uniqueid)?.trim();
        if uid.is_empty() || uid.eq_ignore_ascii_case("none") || self.dead_channels.contains(uid) {
            return None;
        }
        let linkedid = message
            .get(block.linkedid)
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .unwrap_or(uid);
        if let Some(ch) = self.channels.get_mut(uid) {
            if block.fresh {
                if let Some(num) = message.get(block.caller_num) {
                    let num = clean_number(num);
                    if ch.caller_num != num {
                        ch.caller_num = num.to_owned();
                        if ch.call == uid {
                            if let Some(call) = self.calls.get_mut(uid) {
                                if call.direction == Direction::Incoming {
                                    call.from_raw = num.to_owned();
                                }
                            }
                        }
                    }
                }
            }
            if let Some(call) = self.calls.get_mut(&ch.call) {
                call.last_event = call.last_event.max(now);
            }
            if linkedid != ch.call {
                let current = ch.call.clone();
                if self.is_older(linkedid, &current) {
                    self.move_channel(uid, linkedid, now, out);
                }
            }
            return Some(uid);
        }
        if !create || self.ended_calls.contains(linkedid) {
            return None;
        }
        let name = message.get(block.channel).unwrap_or("").trim();
        if name.is_empty() || name.eq_ignore_ascii_case("none") {
            return None;
        }
        let parsed = parse_channel_name(name);
        let kind = self.cfg.classify(&parsed);
        let local_pair = parsed.local_pair.map(|(base, half)| (base.to_owned(), half));
        let ch = Chan {
            name: name.to_owned(),
            kind,
            endpoint: parsed.endpoint.to_owned(),
            call: linkedid.to_owned(),
            state: message
                .get(block.state)
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0),
            caller_num: message.get(block.caller_num).map(clean_number).unwrap_or("").to_owned(),
            exten: message.get(block.exten).unwrap_or("").trim().to_owned(),
            up_at: None,
            bridge: None,
            consultation: false,
            dialed_by: None,
            is_dial_dest: false,
            dial_status: None,
            ring_no_answer: false,
            queue_member: false,
            hangup_requested: false,
            cause: None,
            tech_cause: None,
            picked_up_by: None,
            origin_hint: None,
            extra: Map::new(),
            local_pair,
            originate_leg: false,
        };
        if let Some((base, half)) = &ch.local_pair {
            let slots = self.local_pairs.entry(base.clone()).or_default();
            slots[usize::from(*half == 2)] = Some(uid.to_owned());
        }
        let call = self
            .calls
            .entry(linkedid.to_owned())
            .or_insert_with(|| Call::new(linkedid, now));
        call.last_event = call.last_event.max(now);
        call.channels.push(uid.to_owned());
        if uid == linkedid {
            call.primary_kind = Some(kind);
            call.primary_name = ch.name.clone();
            match kind {
                EndpointKind::Trunk(i) => {
                    call.direction = Direction::Incoming;
                    call.from_raw = ch.caller_num.clone();
                    call.to_raw = ch.exten.clone();
                    call.trunk = Some(i);
                    call.trunk_exten = ch.exten.clone();
                }
                EndpointKind::Internal => {
                    call.from_raw = ch.endpoint.clone();
                    call.to_raw = ch.exten.clone();
                }
                _ => {
                    call.from_raw = ch.caller_num.clone();
                    call.to_raw = ch.exten.clone();
                }
            }
        }
        self.channels.insert(uid.to_owned(), ch);
        Some(uid)
    }

    pub(super) fn update_state(&mut self, uid: &str, state: Option<&str>, now: Timestamp) {
        let Some(state) = state.and_then(|s| s.trim().parse::<u8>().ok()) else {
            return;
        };
        if let Some(ch) = self.channels.get_mut(uid) {
            ch.state = state;
            if state == STATE_UP && ch.up_at.is_none() {
                ch.up_at = Some(now);
            }
        }
    }

    pub(super) fn on_hangup_request(&mut self, message: &Message) {
        let Some(uid) = message.get("Uniqueid").map(str::trim) else {
            return;
        };
        let Some(ch) = self.channels.get_mut(uid) else {
            return;
        };
        ch.hangup_requested = true;
        if let Some(cause) = parse_u16(message.get("Cause")).filter(|c| *c != 0) {
            ch.cause = Some(cause);
        }
        if let Some(tech) = parse_u16(message.get("TechCause")).filter(|c| *c != 0) {
            ch.tech_cause = Some(tech);
        }
        let key = ch.call.clone();
        if let Some(call) = self.calls.get_mut(&key) {
            if call.key == uid {
                call.primary_gone = true;
            }
        }
    }

    pub(super) fn on_rename(&mut self, message: &Message) {
        let (Some(uid), Some(new_name)) = (message.get("Uniqueid"), message.get("Newname")) else {
            return;
        };
        if let Some(ch) = self.channels.get_mut(uid.trim()) {
            ch.name = new_name.trim().to_owned();
            let key = ch.call.clone();
            let name = ch.name.clone();
            if let Some(conv) = self.calls.get_mut(&key).and_then(|c| c.live_conv_mut(uid.trim())) {
                conv.channel_name = name;
            }
        }
    }
}
