//! Hold, pickup and parking.

use super::*;

impl Tracker {
    pub(super) fn on_hold(&mut self, message: &Message, hold: bool, now: Timestamp, out: &mut Vec<CallEvent>) {
        let Some(uid) = self.observe(message, &MAIN, false, now, out) else {
            return;
        };
        let Some(key) = self.channels.get(uid).map(|c| c.call.clone()) else {
            return;
        };
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let leg = match call.convs.iter().rev().find(|c| c.leg == uid && c.is_live()) {
            Some(c) => c.leg.clone(),
            None => match call.active_conv() {
                Some(c) => c.leg.clone(),
                None => return,
            },
        };
        if let Some(conv) = call.live_conv_mut(&leg) {
            if conv.held != hold {
                conv.held = hold;
                let (call, conversation) = (key, leg);
                out.push(if hold {
                    CallEvent::Hold {
                        call,
                        conversation,
                        time: now,
                    }
                } else {
                    CallEvent::Unhold {
                        call,
                        conversation,
                        time: now,
                    }
                });
            }
        }
    }

    pub(super) fn on_pickup(&mut self, message: &Message, now: Timestamp, out: &mut Vec<CallEvent>) {
        let picker = self.observe(message, &MAIN, true, now, out);
        let target = self.observe(message, &TARGET, false, now, out);
        let picker_endpoint = picker
            .and_then(|p| self.channels.get(p))
            .map(|c| c.endpoint.clone())
            .unwrap_or_default();
        let mut target_call = message.get(TARGET.linkedid).map(|s| s.trim().to_owned());
        if let Some(target) = target {
            if let Some(ch) = self.channels.get_mut(target) {
                ch.picked_up_by = Some(picker_endpoint);
                target_call = Some(ch.call.clone());
            }
            if let Some(key) = &target_call {
                self.end_leg_conv(key, target, &LegEnd::Hangup, now, out);
            }
        }
        let Some(picker) = picker else {
            return;
        };
        let Some(ch) = self.channels.get_mut(picker) else {
            return;
        };
        ch.origin_hint = Some(LegOrigin::Pickup);
        ch.state = STATE_UP;
        ch.up_at.get_or_insert(now);
        let current = ch.call.clone();
        let Some(target_call) = target_call.filter(|t| !t.is_empty()) else {
            return;
        };
        if current != target_call && self.is_older(&target_call, &current) {
            self.move_channel(picker, &target_call, now, out);
        } else if current == target_call {
            if let Some(conv) = self.calls.get_mut(&current).and_then(|c| c.live_conv_mut(picker)) {
                // The merge was seen first (generic origin); the Pickup event names it.
                conv.origin = LegOrigin::Pickup;
            } else {
                self.after_join(picker, now, out);
            }
        }
    }

    pub(super) fn on_parked(&mut self, message: &Message, now: Timestamp, out: &mut Vec<CallEvent>) {
        let Some(parkee) = self.observe(message, &PARKEE, true, now, out) else {
            return;
        };
        let Some(key) = self.channels.get(parkee).map(|c| c.call.clone()) else {
            return;
        };
        let parker_endpoint = endpoint_of_dial_string(message.get("ParkerDialString").unwrap_or(""));
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if !call.first_report(now, "parked") {
            return;
        }
        call.next_origin = None;
        let leg = call
            .convs
            .iter()
            .rev()
            .find(|c| c.is_live() && !parker_endpoint.is_empty() && c.endpoint == parker_endpoint)
            .or_else(|| call.active_conv())
            .map(|c| c.leg.clone());
        let mut talking = false;
        if let Some(leg) = &leg {
            if let Some(conv) = call.live_conv_mut(leg) {
                conv.parked = true;
                conv.end_hint = Some(ConversationEndReason::Parked);
                talking = conv.answered.is_some();
            }
        }
        out.push(CallEvent::Parked {
            call: key.clone(),
            conversation: leg.clone().unwrap_or_default(),
            time: now,
            lot: message.get("Parkinglot").unwrap_or("").trim().to_owned(),
            space: message.get("ParkingSpace").unwrap_or("").trim().to_owned(),
        });
        // The client no longer talks to the parker, whether or not the parker's phone stays off-hook.
        if let (Some(leg), true) = (leg, talking) {
            self.end_leg_conv(&key, &leg, &LegEnd::CallOver, now, out);
        }
    }

    /// Clears the parked flags of a call; returns the conversation that had parked it.
    pub(super) fn clear_parked(call: &mut Call) -> String {
        let mut parker = String::new();
        for conv in call.convs.iter_mut().filter(|c| c.parked) {
            conv.parked = false;
            parker = conv.leg.clone();
        }
        parker
    }

    pub(super) fn on_unparked(&mut self, message: &Message, now: Timestamp, out: &mut Vec<CallEvent>) {
        let Some(parkee) = self.observe(message, &PARKEE, false, now, out) else {
            return;
        };
        let Some(key) = self.channels.get(parkee).map(|c| c.call.clone()) else {
            return;
        };
        if !self
            .calls
            .get_mut(&key)
            .is_some_and(|c| c.first_report(now, "unparked"))
        {
            return;
        }
        let retriever = self.observe(message, &RETRIEVER, true, now, out);
        let parker = self.calls.get_mut(&key).map(Self::clear_parked).unwrap_or_default();
        out.push(CallEvent::Unparked {
            call: key.clone(),
            conversation: parker,
            time: now,
            reason: UnparkReason::Retrieved {
                conversation: retriever.unwrap_or("").to_owned(),
            },
        });
        let Some(retriever) = retriever else {
            return;
        };
        let Some(ch) = self.channels.get_mut(retriever) else {
            return;
        };
        ch.origin_hint = Some(LegOrigin::ParkRetrieval);
        ch.state = STATE_UP;
        ch.up_at.get_or_insert(now);
        let current = ch.call.clone();
        if current != key && self.is_older(&key, &current) {
            self.move_channel(retriever, &key, now, out);
        } else if current == key {
            self.after_join(retriever, now, out);
        }
    }

    pub(super) fn on_park_ended(
        &mut self,
        message: &Message,
        reason: UnparkReason,
        now: Timestamp,
        out: &mut Vec<CallEvent>,
    ) {
        let Some(parkee) = self.observe(message, &PARKEE, false, now, out) else {
            return;
        };
        let Some(key) = self.channels.get(parkee).map(|c| c.call.clone()) else {
            return;
        };
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if !call.first_report(now, "unparked") {
            return;
        }
        let parker = Self::clear_parked(call);
        out.push(CallEvent::Unparked {
            call: key,
            conversation: parker,
            time: now,
            reason,
        });
    }
}
