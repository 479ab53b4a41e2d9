//! Bridges, hang-ups and moves: legs end, channels leave or change calls, calls end.

use super::*;

impl Tracker {
    pub(super) fn on_bridge_enter(&mut self, message: &Message, now: Timestamp, out: &mut Vec<CallEvent>) {
        let Some(uid) = self.observe(message, &MAIN, true, now, out) else {
            return;
        };
        let Some(ch) = self.channels.get_mut(uid) else {
            return;
        };
        ch.bridge = Some(message.get("BridgeUniqueid").unwrap_or("").trim().to_owned());
        let up = ch.state == STATE_UP || ch.up_at.is_some();
        let kind = ch.kind;
        let hinted = ch.is_dial_dest || ch.origin_hint.is_some();
        let is_primary = ch.call == uid;
        if ch.consultation {
            // A consultation leg that meets the client's channel has been transferred to it.
            let bridge = ch.bridge.clone();
            let key = ch.call.clone();
            if self.channels.get(&key).is_some_and(|p| p.bridge == bridge) {
                self.promote_consultation(uid, now, out);
            }
            return;
        }
        if is_primary {
            // The client's channel joining a consultation leg's bridge completes the transfer too; it is the only
            // sign of it when the AttendedTransfer event came without its target (the consultation bridge was
            // already gone when Asterisk reported it).
            self.promote_consultations_in_bridge(uid, now, out);
        }
        if !up {
            return;
        }
        // A leg whose answer we did not see (lost DialEnd) is talking once it is bridged.
        match kind {
            EndpointKind::Internal if hinted && !is_primary => self.leg_answered(uid, now, out),
            EndpointKind::Trunk(_) => self.leg_answered(uid, now, out),
            _ => {}
        }
    }

    pub(super) fn on_hangup(&mut self, message: &Message, now: Timestamp, out: &mut Vec<CallEvent>) {
        let Some(uid) = message.get("Uniqueid").map(str::trim) else {
            return;
        };
        if let Some(ch) = self.channels.get_mut(uid) {
            if let Some(cause) = parse_u16(message.get("Cause")) {
                if cause != 0 || ch.cause.is_none() {
                    ch.cause = Some(cause);
                }
            }
            if let Some(tech) = parse_u16(message.get("TechCause")).filter(|c| *c != 0) {
                ch.tech_cause = Some(tech);
            }
            self.remove_channel(uid, LegEnd::Hangup, now, out);
        }
    }

    /// Removes a channel from its call (hang-up, vanished); ends the call when it was the last one.
    pub(super) fn remove_channel(&mut self, uid: &str, how: LegEnd, now: Timestamp, out: &mut Vec<CallEvent>) {
        let Some(ch) = self.channels.get(uid) else {
            return;
        };
        let key = ch.call.clone();
        let (cause, tech, extra) = (ch.cause, ch.tech_cause, ch.extra.clone());
        if let Some(call) = self.calls.get_mut(&key) {
            if call.far_leg.as_deref() == Some(uid) {
                if cause.is_some() {
                    call.far_outcome.cause = cause;
                }
                if tech.is_some() {
                    call.far_outcome.tech_cause = tech;
                }
            }
            if call.key == uid {
                call.primary_gone = true;
                call.primary_extra = extra;
            }
        }
        self.end_leg_conv(&key, uid, &how, now, out);
        self.forget_channel(uid, &key, now);
        let empty = self.calls.get(&key).is_some_and(|c| c.channels.is_empty());
        if empty {
            let reason = match how {
                LegEnd::Vanished => CallEndReason::Vanished,
                LegEnd::Expired => CallEndReason::Expired { idle_secs: 0 },
                _ => CallEndReason::Hangup,
            };
            self.end_call(&key, reason, now, out);
        }
    }

    pub(super) fn forget_channel(&mut self, uid: &str, key: &str, now: Timestamp) {
        if let Some(ch) = self.channels.remove(uid) {
            if let Some((base, _)) = &ch.local_pair {
                if let Some(slots) = self.local_pairs.get_mut(base) {
                    for slot in slots.iter_mut() {
                        if slot.as_deref() == Some(uid) {
                            *slot = None;
                        }
                    }
                    if slots.iter().all(Option::is_none) {
                        self.local_pairs.remove(base);
                    }
                }
            }
        }
        // Aged by the tracker's clock, not the event's own time: a PBX clock behind ringlink's would otherwise
        // have the next tick forget the key at once.
        self.dead_channels.insert(uid, key, self.clock.max(now));
        if let Some(call) = self.calls.get_mut(key) {
            call.channels.retain(|c| c != uid);
        }
    }

    /// Ends the live conversation of leg `uid` in call `key`, if any.
    pub(super) fn end_leg_conv(
        &mut self,
        key: &str,
        uid: &str,
        how: &LegEnd,
        now: Timestamp,
        out: &mut Vec<CallEvent>,
    ) {
        let Some(call) = self.calls.get(key) else {
            return;
        };
        let Some(index) = call.convs.iter().rposition(|c| c.leg == uid && c.is_live()) else {
            // A conversation ended before its channel did (a completed attended transfer): it still gets the
            // channel's last CEL extra, as it would have at the channel's end.
            let extra = self.channels.get(uid).map(|c| c.extra.clone());
            if let (Some(extra), Some(call)) = (extra, self.calls.get_mut(key)) {
                let transferred = Some(ConversationEndReason::Transferred);
                if let Some(conv) = call
                    .convs
                    .iter_mut()
                    .rev()
                    .find(|c| c.leg == uid && c.end_hint == transferred)
                {
                    conv.extra = extra;
                }
            }
            return;
        };
        let conv = &call.convs[index];
        let ch = self.channels.get(uid);
        let event = if conv.answered.is_none() {
            let reason = match how {
                LegEnd::Moved(to) => StopReason::MovedToCall { call: to.clone() },
                LegEnd::Vanished => StopReason::Vanished,
                LegEnd::Expired => StopReason::Expired,
                LegEnd::Hangup | LegEnd::CallOver => stop_reason(&self.channels, call, conv, ch),
            };
            CallEvent::LegStoppedRinging {
                call: key.to_owned(),
                conversation: uid.to_owned(),
                time: now,
                reason,
            }
        } else {
            let reason = match how {
                LegEnd::Moved(to) => ConversationEndReason::MovedToCall { call: to.clone() },
                LegEnd::Vanished => ConversationEndReason::Vanished,
                LegEnd::Expired => ConversationEndReason::Expired,
                LegEnd::Hangup | LegEnd::CallOver => conv.end_hint.clone().unwrap_or(ConversationEndReason::HungUp {
                    cause: ch.and_then(|c| c.cause),
                }),
            };
            CallEvent::ConversationEnded {
                call: key.to_owned(),
                conversation: uid.to_owned(),
                time: now,
                talk_seconds: conv.answered.map_or(0, |a| now.secs_since(a)),
                reason,
            }
        };
        let extra = ch.map(|c| c.extra.clone());
        if let Some(call) = self.calls.get_mut(key) {
            let conv = &mut call.convs[index];
            conv.ended = Some(now);
            // An ended conversation is not on hold any more (a parked client stays parked until it leaves the lot).
            conv.held = false;
            if let Some(extra) = extra {
                conv.extra = extra;
            }
        }
        out.push(event);
    }

    /// Moves a channel into the (older) call `to` after a linkedid merge.
    pub(super) fn move_channel(&mut self, uid: &str, to: &str, now: Timestamp, out: &mut Vec<CallEvent>) {
        if self.ended_calls.contains(to) {
            return;
        }
        let Some(from) = self.channels.get(uid).map(|c| c.call.clone()) else {
            return;
        };
        if from == to {
            return;
        }
        self.end_leg_conv(&from, uid, &LegEnd::Moved(to.to_owned()), now, out);
        if let Some(call) = self.calls.get_mut(&from) {
            call.channels.retain(|c| c != uid);
        }
        let call = self.calls.entry(to.to_owned()).or_insert_with(|| Call::new(to, now));
        call.channels.push(uid.to_owned());
        call.last_event = call.last_event.max(now);
        if let Some(ch) = self.channels.get_mut(uid) {
            ch.call = to.to_owned();
        }
        self.after_join(uid, now, out);
        let empty = self.calls.get(&from).is_some_and(|c| c.channels.is_empty());
        if empty {
            self.end_call(&from, CallEndReason::Merged { into: to.to_owned() }, now, out);
        }
    }

    /// An employee's channel that joins a call from another one (transfer target, picker, retriever) is a new
    /// conversation there.
    pub(super) fn after_join(&mut self, uid: &str, now: Timestamp, out: &mut Vec<CallEvent>) {
        let Some(ch) = self.channels.get(uid) else {
            return;
        };
        if ch.kind != EndpointKind::Internal {
            return;
        }
        let key = ch.call.clone();
        let up = ch.state == STATE_UP || ch.up_at.is_some();
        let ringing = ch.is_dial_dest && matches!(ch.state, STATE_RING | STATE_RINGING);
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        // One conversation per leg and call: a leg that already had one here does not start another.
        if call.has_conv(uid) || call.key == uid {
            return;
        }
        let origin = ch.origin_hint.unwrap_or(LegOrigin::Transfer);
        if up {
            let mut conv = new_conv(uid, Side::Callee, ch, origin, now);
            conv.answered = Some(now);
            out.push(CallEvent::LegAnswered(leg_of(call, &conv, now)));
            call.convs.push(conv);
            call.next_origin = None;
        } else if ringing {
            let conv = new_conv(uid, Side::Callee, ch, origin, now);
            out.push(CallEvent::LegRinging(leg_of(call, &conv, now)));
            call.convs.push(conv);
        }
    }

    /// Closes a call: ends what is still live in it, forgets its channels and emits `CallEnded` (once per key).
    pub(super) fn end_call(&mut self, key: &str, reason: CallEndReason, now: Timestamp, out: &mut Vec<CallEvent>) {
        if !self.calls.contains_key(key) {
            return;
        }
        let how = match reason {
            CallEndReason::Expired { .. } => LegEnd::Expired,
            CallEndReason::Vanished => LegEnd::Vanished,
            _ => LegEnd::CallOver,
        };
        let legs: Vec<String> = self.calls[key]
            .convs
            .iter()
            .filter(|c| c.is_live())
            .map(|c| c.leg.clone())
            .collect();
        for leg in legs {
            self.end_leg_conv(key, &leg, &how, now, out);
        }
        let leftovers: Vec<String> = self.calls[key].channels.clone();
        for uid in leftovers {
            if let Some(ch) = self.channels.get(&uid) {
                if uid == key {
                    let extra = ch.extra.clone();
                    if let Some(call) = self.calls.get_mut(key) {
                        call.primary_extra = extra;
                    }
                }
            }
            self.forget_channel(&uid, key, now);
        }
        let Some(call) = self.calls.remove(key) else {
            return;
        };
        self.ended_calls.insert(key, key, self.clock.max(now));
        let call_full = build_call_full(&self.cfg, &self.channels, &call, Some(now));
        out.push(CallEvent::CallEnded {
            call: key.to_owned(),
            time: now,
            reason,
            call_full: Box::new(call_full),
        });
    }
}

/// Why a ringing leg stopped, from what the call and the leg have shown so far.
pub(super) fn stop_reason(channels: &HashMap<String, Chan>, call: &Call, conv: &Conv, ch: Option<&Chan>) -> StopReason {
    if conv.side == Side::Caller {
        return match status::failed_dial_status(&call.far_outcome) {
            status::BUSY => StopReason::Busy,
            status::DECLINED => StopReason::Declined,
            status::CANCELLED => StopReason::CallerGone,
            status::MISSED => {
                if call.far_outcome.dial_status.is_none() {
                    StopReason::CallerGone
                } else {
                    StopReason::Timeout
                }
            }
            status::UNAVAILABLE | status::ROUTE_UNAVAILABLE | status::NOT_FOUND | status::ADDRESS_INCOMPLETE => {
                StopReason::Unavailable
            }
            _ => StopReason::Cancelled,
        };
    }
    if let Some(by) = ch.and_then(|c| c.picked_up_by.clone()) {
        return StopReason::PickedUp { by };
    }
    let answered_elsewhere = call
        .convs
        .iter()
        .any(|c| c.leg != conv.leg && c.answered.is_some_and(|a| a >= conv.start));
    if answered_elsewhere || ch.and_then(|c| c.cause) == Some(26) {
        return StopReason::AnsweredElsewhere;
    }
    let Some(ch) = ch else {
        return StopReason::Cancelled;
    };
    if ch.ring_no_answer {
        return StopReason::Timeout;
    }
    let dialer_gone = ch.dialed_by.as_ref().is_some_and(|d| match channels.get(d) {
        Some(dialer) => dialer.kind != EndpointKind::Local && dialer.hangup_requested,
        None => false,
    });
    if call.abandoned || (call.primary_gone && call.key != conv.leg) || dialer_gone {
        return StopReason::CallerGone;
    }
    let status = ch.dial_status.as_deref().unwrap_or("");
    let by_cause = |cause: Option<u16>| match cause {
        Some(17) => StopReason::Busy,
        Some(21) => StopReason::Declined,
        Some(1 | 3 | 20 | 22 | 27 | 28 | 34 | 38 | 41 | 42 | 44) => StopReason::Unavailable,
        _ => StopReason::Timeout,
    };
    if status.eq_ignore_ascii_case("BUSY") {
        StopReason::Busy
    } else if status.eq_ignore_ascii_case("CHANUNAVAIL") || status.eq_ignore_ascii_case("CONGESTION") {
        StopReason::Unavailable
    } else if status.eq_ignore_ascii_case("CANCEL") {
        StopReason::Cancelled
    } else {
        by_cause(ch.cause)
    }
}
