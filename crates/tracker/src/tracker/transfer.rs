//! Transfers: blind and attended, consultation legs kept out of the client's call until completion.

use super::*;

impl Tracker {
    /// Is a dial from `caller` an employee's consultation? It is when the dialling side (or, through a Local
    /// pair, its `;1` half) shares a bridge with an employee leg that is talking to the client: Asterisk's
    /// attended transfer (`Atxfer`, features `atxfer`) moves the transferer into a bridge with a new Local
    /// channel that dials the target.
    pub(super) fn is_consultation(&self, caller: &str, key: &str) -> bool {
        let Some(call) = self.calls.get(key) else {
            return false;
        };
        let Some(c) = self.channels.get(caller) else {
            return false;
        };
        if c.kind == EndpointKind::Internal && call.convs.iter().any(|v| v.leg == caller && v.is_talking()) {
            return true;
        }
        let origin = if c.kind == EndpointKind::Local {
            self.local_partner(caller).unwrap_or_else(|| caller.to_owned())
        } else {
            caller.to_owned()
        };
        let Some(bridge) = self.channels.get(&origin).and_then(|o| o.bridge.as_ref()) else {
            return false;
        };
        call.convs.iter().any(|v| {
            v.is_talking()
                && v.leg != origin
                && self
                    .channels
                    .get(&v.leg)
                    .is_some_and(|l| l.bridge.as_ref() == Some(bridge))
        })
    }

    /// The transfer completed: the consultation leg now talks to the client (a new conversation).
    pub(super) fn promote_consultation(&mut self, uid: &str, now: Timestamp, out: &mut Vec<CallEvent>) {
        let Some(ch) = self.channels.get_mut(uid) else {
            return;
        };
        if !ch.consultation {
            return;
        }
        ch.consultation = false;
        ch.origin_hint = Some(LegOrigin::Transfer);
        self.after_join(uid, now, out);
    }

    /// Promotes the consultation legs of `primary`'s call that share its bridge.
    pub(super) fn promote_consultations_in_bridge(&mut self, primary: &str, now: Timestamp, out: &mut Vec<CallEvent>) {
        let Some(bridge) = self.channels.get(primary).and_then(|c| c.bridge.clone()) else {
            return;
        };
        let Some(call) = self.calls.get(primary) else {
            return;
        };
        let legs: Vec<String> = call
            .channels
            .iter()
            .filter(|u| {
                self.channels
                    .get(*u)
                    .is_some_and(|c| c.consultation && c.bridge.as_ref() == Some(&bridge))
            })
            .cloned()
            .collect();
        for leg in legs {
            self.promote_consultation(&leg, now, out);
        }
    }

    /// The employee legs a transfer target stands for: itself, or the phones its Local pair dialled.
    pub(super) fn target_legs(&self, target: &str) -> Vec<String> {
        let Some(ch) = self.channels.get(target) else {
            return Vec::new();
        };
        if ch.kind != EndpointKind::Local {
            return vec![target.to_owned()];
        }
        let partner = self.local_partner(target);
        let Some(call) = self.calls.get(&ch.call) else {
            return Vec::new();
        };
        call.channels
            .iter()
            .filter(|u| {
                self.channels.get(*u).is_some_and(|c| {
                    c.kind == EndpointKind::Internal
                        && c.dialed_by.is_some()
                        && (c.dialed_by == partner || c.dialed_by.as_deref() == Some(target))
                })
            })
            .cloned()
            .collect()
    }

    pub(super) fn mark_transferred(call: &mut Call, leg: Option<&str>) -> String {
        let leg = leg
            .filter(|l| call.has_conv(l))
            .map(str::to_owned)
            .or_else(|| call.active_conv().map(|c| c.leg.clone()));
        if let Some(leg) = &leg {
            if let Some(conv) = call.live_conv_mut(leg) {
                if conv.end_hint != Some(ConversationEndReason::Parked) {
                    conv.end_hint = Some(ConversationEndReason::Transferred);
                }
            }
        }
        leg.unwrap_or_default()
    }

    pub(super) fn on_blind_transfer(&mut self, message: &Message, now: Timestamp, out: &mut Vec<CallEvent>) {
        if !message
            .get("Result")
            .is_some_and(|r| r.trim().eq_ignore_ascii_case("Success"))
        {
            return;
        }
        let transferer = self.observe(message, &TRANSFERER, false, now, out);
        let transferee = self.observe(message, &TRANSFEREE, false, now, out);
        let Some(key) = transferee
            .or(transferer)
            .and_then(|u| self.channels.get(u))
            .map(|c| c.call.clone())
        else {
            return;
        };
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if !call.first_report(now, "blind_transfer") {
            return;
        }
        let conversation = Self::mark_transferred(call, transferer);
        call.next_origin = Some(LegOrigin::Transfer);
        out.push(CallEvent::Transferred {
            call: key,
            conversation,
            time: now,
            kind: TransferKind::Blind,
            target: message.get("Extension").unwrap_or("").trim().to_owned(),
        });
    }

    pub(super) fn on_attended_transfer(&mut self, message: &Message, now: Timestamp, out: &mut Vec<CallEvent>) {
        if !message
            .get("Result")
            .is_some_and(|r| r.trim().eq_ignore_ascii_case("Success"))
        {
            return;
        }
        let orig = self.observe(message, &ORIG_TRANSFERER, false, now, out);
        let second = self.observe(message, &SECOND_TRANSFERER, false, now, out);
        let transferee = self.observe(message, &TRANSFEREE, false, now, out);
        let target = self.observe(message, &TRANSFER_TARGET, false, now, out);
        let Some(key) = transferee
            .or(orig)
            .or(second)
            .and_then(|u| self.channels.get(u))
            .map(|c| c.call.clone())
        else {
            return;
        };
        let legs = target.map(|t| self.target_legs(t)).unwrap_or_default();
        let target_number = match legs.first().and_then(|t| self.channels.get(t)) {
            Some(ch) if ch.kind == EndpointKind::Internal => ch.endpoint.clone(),
            _ => message
                .get("TransferTargetCallerIDNum")
                .map(clean_number)
                .unwrap_or("")
                .to_owned(),
        };
        for leg in &legs {
            if let Some(ch) = self.channels.get_mut(leg) {
                ch.origin_hint.get_or_insert(LegOrigin::Transfer);
            }
        }
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if !call.first_report(now, "attended_transfer") {
            return;
        }
        let leg = orig.filter(|o| call.has_conv(o)).or(second);
        let conversation = Self::mark_transferred(call, leg);
        out.push(CallEvent::Transferred {
            call: key.clone(),
            conversation: conversation.clone(),
            time: now,
            kind: TransferKind::Attended,
            target: target_number,
        });
        // The transferer's talk ends with the completed transfer, before the target's starts (its channel may
        // hang up only after the target has joined the client).
        if !conversation.is_empty() {
            self.end_leg_conv(&key, &conversation, &LegEnd::Hangup, now, out);
        }
        for leg in legs {
            self.promote_consultation(&leg, now, out);
        }
    }
}
