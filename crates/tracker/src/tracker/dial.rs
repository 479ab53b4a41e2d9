//! Dialling and answers: dial and queue events ring legs, answer them or stop them; Local pairs.

use super::*;

impl Tracker {
    pub(super) fn on_dial_begin(&mut self, message: &Message, now: Timestamp, out: &mut Vec<CallEvent>) {
        let caller = self.observe(message, &MAIN, true, now, out);
        let Some(dest) = self.observe(message, &DEST, true, now, out) else {
            return;
        };
        if let Some(ch) = self.channels.get_mut(dest) {
            ch.is_dial_dest = true;
            ch.dialed_by = caller.map(str::to_owned);
        }
        let dialed = message.get("DialString").and_then(dialed_number).or_else(|| {
            message
                .get(MAIN.exten)
                .map(str::trim)
                .filter(|e| !e.is_empty() && *e != "s")
                .map(str::to_owned)
        });
        self.dialing(caller, dest, dialed, None, now, out);
    }

    /// A channel is being rung (DialBegin / AgentCalled).
    pub(super) fn dialing(
        &mut self,
        caller: Option<&str>,
        dest: &str,
        dialed: Option<String>,
        queue_hint: Option<LegOrigin>,
        now: Timestamp,
        out: &mut Vec<CallEvent>,
    ) {
        let Some(dest_ch) = self.channels.get(dest) else {
            return;
        };
        let key = dest_ch.call.clone();
        let dest_kind = dest_ch.kind;
        let via_queue = queue_hint.is_some() || dest_ch.queue_member || caller.is_some_and(|c| self.is_queue_local(c));
        // Who really dials: the phone or trunk behind a chain of Local channels, or the employee who placed an
        // originate-based call.
        let party = caller.map_or(Party::Unknown, |c| self.party_of(c, &key));
        if dest_kind == EndpointKind::Internal && party == Party::OriginateLeg && !via_queue {
            // The originate rings the employee's own phone first: the employee places this call.
            if let Some(ch) = self.channels.get_mut(dest) {
                ch.originate_leg = true;
            }
            return;
        }
        let dialer = caller;
        let caller = match &party {
            Party::Endpoint(uid) => Some(uid.as_str()),
            _ => caller,
        };
        let caller_kind = caller.and_then(|c| self.kind_of(c));
        let caller_endpoint = caller
            .and_then(|c| self.channels.get(c))
            .map(|c| c.endpoint.clone())
            .unwrap_or_default();
        if dest_kind == EndpointKind::Internal && dialer.is_some_and(|c| self.is_consultation(c, &key)) {
            if let Some(ch) = self.channels.get_mut(dest) {
                ch.consultation = true;
            }
            return;
        }
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        match dest_kind {
            EndpointKind::Internal => {
                let internal_caller =
                    call.primary_kind == Some(EndpointKind::Internal) || caller_kind == Some(EndpointKind::Internal);
                if call.direction == Direction::Outgoing
                    && party == Party::Originate
                    && !call.convs.iter().any(|c| c.side == Side::Caller)
                {
                    // An originate that rang the client first now rings the employee it is placed for.
                    if let Some(ch) = self.channels.get(dest) {
                        call.from_raw = ch.endpoint.clone();
                    }
                }
                if call.direction == Direction::Unknown && internal_caller {
                    call.direction = Direction::Local;
                    if caller_kind == Some(EndpointKind::Internal) {
                        call.from_raw = caller_endpoint.clone();
                    }
                    if let Some(ch) = self.channels.get(dest) {
                        call.to_raw = ch.endpoint.clone();
                    }
                }
                let origin = call
                    .next_origin
                    .or(self.channels.get(dest).and_then(|c| c.origin_hint))
                    .unwrap_or(if via_queue { LegOrigin::Queue } else { LegOrigin::Dial });
                if !call.has_conv(dest) {
                    if let Some(ch) = self.channels.get(dest) {
                        let conv = new_conv(dest, Side::Callee, ch, origin, now);
                        out.push(CallEvent::LegRinging(leg_of(call, &conv, now)));
                        call.convs.push(conv);
                    }
                }
            }
            EndpointKind::Trunk(i) => {
                if call.direction == Direction::Incoming && !call.has_conv(dest) {
                    // Forwarded out through a trunk (follow-me, a ring group's outside number): the outside phone
                    // rung, typically an employee's mobile, is a conversation of its own.
                    if let Some(ch) = self.channels.get(dest) {
                        let mut conv = new_conv(dest, Side::Callee, ch, LegOrigin::Forward, now);
                        if let Some(number) = &dialed {
                            conv.endpoint = number.clone();
                            conv.number = number.clone();
                        }
                        out.push(CallEvent::LegRinging(leg_of(call, &conv, now)));
                        call.convs.push(conv);
                    }
                }
                if call.direction != Direction::Incoming {
                    if call.direction != Direction::Outgoing {
                        call.direction = Direction::Outgoing;
                        call.trunk = Some(i);
                        if let Some(number) = &dialed {
                            call.to_raw = number.clone();
                        }
                        if caller_kind == Some(EndpointKind::Internal) {
                            call.from_raw = caller_endpoint;
                        } else if let Some(c) = call.convs.iter().find(|c| c.side == Side::Callee) {
                            call.from_raw = c.number.clone();
                        }
                    }
                    if let (Some(caller), Some(EndpointKind::Internal)) = (caller, caller_kind) {
                        if !call.has_conv(caller) {
                            if let Some(ch) = self.channels.get(caller) {
                                let origin = call.next_origin.unwrap_or(LegOrigin::Dial);
                                let conv = new_conv(caller, Side::Caller, ch, origin, now);
                                out.push(CallEvent::LegDialing(leg_of(call, &conv, now)));
                                call.convs.push(conv);
                            }
                        }
                    }
                }
                call.far_leg = Some(dest.to_owned());
                call.far_outcome = DialOutcome::default();
            }
            _ => {}
        }
    }

    /// The party behind a dialling channel. A phone or trunk is itself. A Local channel stands for whoever is
    /// behind it: the channel that dialled it, or, for a `;2` half, whoever is behind its `;1` (outbound routes
    /// through `Local/<number>@<context>`, with or without `/n`). A `;1` that nobody dialled and that is its call's
    /// first channel was placed by an AMI `Originate`: dialling from behind its `;2` rings the originate's own leg
    /// (the employee's call-back); dialling from the `;1` itself reaches the target on behalf of that leg once it
    /// answered ([`Party::Originate`] while no employee's leg did: an originate that rang the client first).
    pub(super) fn party_of(&self, uid: &str, key: &str) -> Party {
        let mut current = uid.to_owned();
        let mut from_partner = false;
        // A chain of Local channels is short; the bound only guards against a loop in odd input.
        for _ in 0..16 {
            let Some(ch) = self.channels.get(&current) else {
                return Party::Unknown;
            };
            if ch.kind != EndpointKind::Local {
                return Party::Endpoint(current);
            }
            if let Some(by) = &ch.dialed_by {
                current = by.clone();
                from_partner = false;
                continue;
            }
            match &ch.local_pair {
                Some((_, 2)) => {
                    let Some(partner) = self.local_partner(&current) else {
                        return Party::Unknown;
                    };
                    current = partner;
                    from_partner = true;
                }
                Some(_) if current == key => {
                    if from_partner {
                        return Party::OriginateLeg;
                    }
                    return match self.calls.get(key).and_then(|c| c.originator.clone()) {
                        Some(originator) => Party::Endpoint(originator),
                        None => Party::Originate,
                    };
                }
                _ => return Party::Unknown,
            }
        }
        Party::Unknown
    }

    /// Is `uid` the `;2` half of a Local pair whose `;1` is a queue member (FreePBX `Local/<ext>@from-queue/n`)?
    pub(super) fn is_queue_local(&self, uid: &str) -> bool {
        self.local_partner(uid)
            .and_then(|p| self.channels.get(&p))
            .is_some_and(|p| p.queue_member)
    }

    pub(super) fn local_partner(&self, uid: &str) -> Option<String> {
        let (base, half) = self.channels.get(uid)?.local_pair.as_ref()?;
        let slots = self.local_pairs.get(base)?;
        let other = if *half == 1 { &slots[1] } else { &slots[0] };
        other.clone()
    }

    pub(super) fn on_dial_end(&mut self, message: &Message, now: Timestamp, out: &mut Vec<CallEvent>) {
        let caller = self.observe(message, &MAIN, false, now, out);
        let Some(dest) = self.observe(message, &DEST, false, now, out) else {
            return;
        };
        let status = message.get("DialStatus").unwrap_or("").trim();
        if status.eq_ignore_ascii_case("ANSWER") {
            // After a pickup the dial's "answered" leg is the picker: bring it into the dialling call.
            if let (Some(caller), Some(ch)) = (caller, self.channels.get(dest)) {
                let caller_call = self.channels.get(caller).map(|c| c.call.clone());
                if let Some(cc) = caller_call {
                    if cc != ch.call && self.is_older(&cc, &ch.call.clone()) {
                        self.move_channel(dest, &cc, now, out);
                    }
                }
            }
            if let Some(ch) = self.channels.get_mut(dest) {
                ch.up_at.get_or_insert(now);
                ch.dial_status = Some(status.to_owned());
            }
            self.leg_answered(dest, now, out);
            return;
        }
        if status.eq_ignore_ascii_case("CONTINUE") || status.eq_ignore_ascii_case("GOTO") {
            return;
        }
        let Some(ch) = self.channels.get_mut(dest) else {
            return;
        };
        ch.dial_status = Some(status.to_owned());
        let (cause, tech) = (ch.cause, ch.tech_cause);
        let key = ch.call.clone();
        if let Some(call) = self.calls.get_mut(&key) {
            if call.far_leg.as_deref() == Some(dest) || call.direction == Direction::Local {
                call.far_leg = Some(dest.to_owned());
                call.far_outcome = DialOutcome {
                    dial_status: Some(status.to_owned()),
                    cause,
                    tech_cause: tech,
                };
            }
        }
        self.end_leg_conv(&key, dest, &LegEnd::Hangup, now, out);
    }

    /// A leg was answered: an employee's ringing phone, or the far party of an employee's outgoing call.
    pub(super) fn leg_answered(&mut self, uid: &str, now: Timestamp, out: &mut Vec<CallEvent>) {
        let Some(ch) = self.channels.get(uid) else {
            return;
        };
        let key = ch.call.clone();
        let kind = ch.kind;
        if ch.consultation {
            return;
        }
        let originate_leg = ch.originate_leg;
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if originate_leg {
            // The employee took the call-back: the call is placed on their behalf from now on.
            call.originator.get_or_insert_with(|| uid.to_owned());
            return;
        }
        match kind {
            EndpointKind::Internal => {
                let peer = call.peer_number().to_owned();
                if let Some(conv) = call.live_conv_mut(uid) {
                    if conv.answered.is_none() {
                        conv.answered = Some(now);
                        out.push(CallEvent::LegAnswered(leg_with_peer(&key, conv, &peer, now)));
                    }
                } else if !call.has_conv(uid) {
                    let origin = ch.origin_hint.or(call.next_origin).unwrap_or(LegOrigin::Dial);
                    let mut conv = new_conv(uid, Side::Callee, ch, origin, now);
                    conv.answered = Some(now);
                    out.push(CallEvent::LegAnswered(leg_with_peer(&key, &conv, &peer, now)));
                    call.convs.push(conv);
                }
                call.next_origin = None;
            }
            EndpointKind::Local => {}
            _ => {
                if let Some(conv) = call.live_conv_mut(uid) {
                    // A forwarded leg: the outside phone answered for the employee.
                    if conv.answered.is_none() {
                        conv.answered = Some(now);
                        let peer = call.peer_number().to_owned();
                        if let Some(conv) = call.live_conv_mut(uid) {
                            out.push(CallEvent::LegAnswered(leg_with_peer(&key, conv, &peer, now)));
                        }
                    }
                    call.next_origin = None;
                } else if call.far_leg.as_deref() == Some(uid) {
                    call.far_answered.get_or_insert(now);
                    let peer = call.peer_number().to_owned();
                    if let Some(conv) = call
                        .convs
                        .iter_mut()
                        .rev()
                        .find(|c| c.side == Side::Caller && c.is_ringing())
                    {
                        conv.answered = Some(now);
                        out.push(CallEvent::LegAnswered(leg_with_peer(&key, conv, &peer, now)));
                    }
                    call.next_origin = None;
                }
            }
        }
    }

    pub(super) fn on_agent_called(&mut self, message: &Message, now: Timestamp, out: &mut Vec<CallEvent>) {
        let caller = self.observe(message, &MAIN, true, now, out);
        let Some(dest) = self.observe(message, &DEST, true, now, out) else {
            return;
        };
        if let Some(ch) = self.channels.get_mut(dest) {
            ch.queue_member = true;
            ch.is_dial_dest = true;
            if ch.dialed_by.is_none() {
                ch.dialed_by = caller.map(str::to_owned);
            }
        }
        self.dialing(caller, dest, None, Some(LegOrigin::Queue), now, out);
    }

    pub(super) fn on_agent_ring_no_answer(&mut self, message: &Message, now: Timestamp, out: &mut Vec<CallEvent>) {
        self.observe(message, &MAIN, false, now, out);
        let Some(member) = self.observe(message, &DEST, false, now, out) else {
            return;
        };
        // A Local member's phone is dialled by the pair's ;2 half: mark the whole chain.
        let mut marked = vec![member.to_owned()];
        if let Some(partner) = self.local_partner(member) {
            marked.push(partner);
        }
        if let Some(key) = self.channels.get(member).map(|c| c.call.clone()) {
            if let Some(call) = self.calls.get(&key) {
                for uid in &call.channels {
                    let dialed_by_marked = self
                        .channels
                        .get(uid)
                        .and_then(|c| c.dialed_by.as_ref())
                        .is_some_and(|d| marked.contains(d));
                    if dialed_by_marked && !marked.contains(uid) {
                        marked.push(uid.clone());
                    }
                }
            }
        }
        for uid in marked {
            if let Some(ch) = self.channels.get_mut(&uid) {
                ch.ring_no_answer = true;
            }
        }
    }
}
