//! The resync after an AMI reconnect: the `CoreShowChannels` list rebuilds live calls and their legs.

use super::*;

/// A header the shell may add to a `CoreShowChannel` item given to [`Tracker::resync`]: the channel's answer
/// instant as AMI writes times (`1700000000.123456`), e.g. from `Getvar CDR(answer,u)`. `CoreShowChannels` itself
/// does not say since when a channel is up, and a conversation's talk time is counted from its answer.
pub const RESYNC_ANSWER_TIME: &str = "RinglinkAnswerTime";

/// A header the shell may add to the `CoreShowChannel` item of a call's first channel given to
/// [`Tracker::resync`]: the number that was dialled, e.g. from `Getvar CALLERID(dnid)`. The item's `Exten` is
/// where the dialplan has taken the channel since (a queue's name, an IVR choice), not the number the client
/// called; without this header an incoming call found by a resync takes its trunk's configured number.
pub const RESYNC_DIALED_NUMBER: &str = "RinglinkDialedNumber";

impl Tracker {
    /// Rebuilds live state after an AMI reconnect from the `CoreShowChannel` items of a `CoreShowChannels`
    /// list (other messages in `items` are ignored). Channels we knew that are no longer listed hung up while we
    /// were away: their legs stop, and calls left without channels end (reason `Vanished`). Channels we did not
    /// know join their calls; employee legs found ringing or talking are reported (origin `Resync`). A call that
    /// already ended is never reported as ended again.
    pub fn resync(&mut self, items: &[Message], now: Timestamp) -> Vec<CallEvent> {
        self.clock = self.clock.max(now);
        let mut out = Vec::new();
        let listed: Vec<&Message> = items
            .iter()
            .filter(|m| m.event_name() == Some("CoreShowChannel"))
            .collect();
        let live: HashSet<&str> = listed.iter().filter_map(|m| m.get("Uniqueid").map(str::trim)).collect();
        let mut gone: Vec<(Timestamp, String)> = self
            .channels
            .iter()
            .filter(|(uid, _)| !live.contains(uid.as_str()))
            .map(|(uid, ch)| {
                let start = self.calls.get(&ch.call).map_or(now, |c| c.start);
                (start, uid.clone())
            })
            .collect();
        gone.sort();
        for (_, uid) in gone {
            self.remove_channel(&uid, LegEnd::Vanished, now, &mut out);
        }
        let mut touched: Vec<String> = Vec::new();
        for item in &listed {
            if let Some(uid) = self.observe_listed_channel(item, now, &mut out) {
                if let Some(ch) = self.channels.get(uid) {
                    if !touched.contains(&ch.call) {
                        touched.push(ch.call.clone());
                    }
                }
            }
        }
        for key in touched {
            self.derive_after_resync(&key, now, &mut out);
        }
        out
    }

    /// The answer instant a resync item may carry (see [`RESYNC_ANSWER_TIME`]); only for a channel that is up.
    pub(super) fn listed_answer_time(item: &Message) -> Option<Timestamp> {
        let at = Timestamp::parse_ami(item.get(RESYNC_ANSWER_TIME)?.trim())?;
        (at > Timestamp::default()).then_some(at)
    }

    pub(super) fn observe_listed_channel<'m>(
        &mut self,
        item: &'m Message,
        now: Timestamp,
        out: &mut Vec<CallEvent>,
    ) -> Option<&'m str> {
        let known = item
            .get("Uniqueid")
            .is_some_and(|u| self.channels.contains_key(u.trim()));
        let uid = self.observe(item, &MAIN, true, now, out)?;
        self.update_state(uid, item.get(MAIN.state), now);
        if let Some(at) = Self::listed_answer_time(item).filter(|at| *at <= now) {
            if let Some(ch) = self.channels.get_mut(uid) {
                if ch.state == STATE_UP {
                    // Asterisk's own answer instant beats "up when we looked".
                    ch.up_at = Some(ch.up_at.map_or(at, |seen| seen.min(at)));
                }
            }
        }
        let bridge = item
            .get("BridgeId")
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .map(str::to_owned);
        let age = item.get("Duration").and_then(parse_duration);
        if let Some(ch) = self.channels.get_mut(uid) {
            ch.bridge = bridge;
            if !known {
                if let (Some(age), Some(call)) = (age, self.calls.get_mut(&ch.call)) {
                    call.start = call.start.min(now.saturating_sub_secs(age));
                }
            }
        }
        if !known {
            self.take_dialed_number(uid, item);
        }
        Some(uid)
    }

    /// A call first seen in a resync got its `to` from the listed channel's current `Exten`; for an incoming
    /// call that is wherever the dialplan went (`sales`), so take the dialled number instead: the item's
    /// [`RESYNC_DIALED_NUMBER`], else the trunk's configured number, else the exten as listed.
    fn take_dialed_number(&mut self, uid: &str, item: &Message) {
        let Some(call) = self.calls.get_mut(uid) else {
            return;
        };
        let Some(trunk) = call.trunk.filter(|_| call.direction == Direction::Incoming) else {
            return;
        };
        let dialed = item
            .get(RESYNC_DIALED_NUMBER)
            .map(clean_number)
            .filter(|n| !n.is_empty())
            .or_else(|| {
                self.cfg
                    .trunks
                    .get(trunk)
                    .map(|t| t.number.trim())
                    .filter(|n| !n.is_empty())
            });
        if let Some(number) = dialed {
            call.to_raw = number.to_owned();
            call.trunk_exten = number.to_owned();
        }
    }

    pub(super) fn derive_after_resync(&mut self, key: &str, now: Timestamp, out: &mut Vec<CallEvent>) {
        let Some(call) = self.calls.get(key) else {
            return;
        };
        let mut uids = call.channels.clone();
        uids.sort();
        let has_trunk_up = uids.iter().any(|u| {
            self.channels
                .get(u)
                .is_some_and(|c| matches!(c.kind, EndpointKind::Trunk(_)) && c.state == STATE_UP)
        });
        let trunk = uids.iter().find_map(|u| match self.channels.get(u).map(|c| c.kind) {
            Some(EndpointKind::Trunk(i)) => Some((u.clone(), i)),
            _ => None,
        });
        let primary_kind = call.primary_kind;
        let direction = call.direction;
        // Who placed the call: its first channel if that is a phone; for an originate (a Local `;1` first, as
        // click-to-call places it) the phone its Local channel names (`Local/101@from-internal` → 101).
        let placer = match primary_kind {
            Some(EndpointKind::Internal) => Some(key.to_owned()),
            Some(EndpointKind::Local) if direction == Direction::Unknown => call.originator.clone().or_else(|| {
                let ext = parse_channel_name(&call.primary_name)
                    .endpoint
                    .split('@')
                    .next()?
                    .to_owned();
                uids.iter()
                    .find(|u| {
                        self.channels
                            .get(*u)
                            .is_some_and(|c| c.kind == EndpointKind::Internal && c.endpoint == ext)
                    })
                    .cloned()
            }),
            _ => None,
        };
        let internal_others: Vec<String> = uids
            .iter()
            .filter(|u| {
                *u != key
                    && placer.as_deref() != Some(u.as_str())
                    && self.channels.get(*u).is_some_and(|c| c.kind == EndpointKind::Internal)
            })
            .cloned()
            .collect();
        if let (Some(placer), Direction::Unknown) = (&placer, direction) {
            let placer_endpoint = self
                .channels
                .get(placer)
                .map(|c| c.endpoint.clone())
                .unwrap_or_default();
            if placer != key {
                if let Some(call) = self.calls.get_mut(key) {
                    call.originator = Some(placer.clone());
                    call.from_raw = placer_endpoint.clone();
                }
            }
            if let Some((far, i)) = trunk {
                let far_number = self
                    .channels
                    .get(&far)
                    .map(|c| c.caller_num.clone())
                    .unwrap_or_default();
                if let Some(call) = self.calls.get_mut(key) {
                    call.direction = Direction::Outgoing;
                    call.trunk = Some(i);
                    call.far_leg = Some(far);
                    if call.to_raw.is_empty() {
                        call.to_raw = far_number;
                    }
                    if has_trunk_up {
                        call.far_answered.get_or_insert(now);
                    }
                }
                if let Some(ch) = self.channels.get(placer) {
                    let mut conv = new_conv(placer, Side::Caller, ch, LegOrigin::Resync, now);
                    if let Some(call) = self.calls.get_mut(key) {
                        if !call.has_conv(placer) {
                            if has_trunk_up {
                                conv.answered = Some(now);
                                out.push(CallEvent::LegAnswered(leg_of(call, &conv, now)));
                            } else {
                                out.push(CallEvent::LegDialing(leg_of(call, &conv, now)));
                            }
                            call.convs.push(conv);
                        }
                    }
                }
            } else if let Some(first_other) = internal_others.first() {
                let callee = self.channels.get(first_other).map(|c| c.endpoint.clone());
                if let Some(call) = self.calls.get_mut(key) {
                    call.direction = Direction::Local;
                    if let (true, Some(callee)) = (placer != key, callee) {
                        call.to_raw = callee;
                    }
                }
            }
        }
        for uid in internal_others {
            let Some(ch) = self.channels.get(&uid) else {
                continue;
            };
            let up = ch.state == STATE_UP;
            let ringing = matches!(ch.state, STATE_RING | STATE_RINGING);
            // When it was answered, as far as anyone can tell: Asterisk's answer instant if the shell asked.
            let answered_at = ch.up_at.unwrap_or(now).min(now);
            let Some(call) = self.calls.get_mut(key) else {
                return;
            };
            let peer = call.peer_number().to_owned();
            let known = call.has_conv(&uid);
            match call.live_conv_mut(&uid) {
                Some(conv) if up && conv.answered.is_none() => {
                    conv.answered = Some(answered_at.max(conv.start));
                    out.push(CallEvent::LegAnswered(leg_with_peer(key, conv, &peer, now)));
                }
                Some(_) => {}
                None if !known && (up || ringing) => {
                    let mut conv = new_conv(&uid, Side::Callee, ch, LegOrigin::Resync, now);
                    if up {
                        conv.start = conv.start.min(answered_at);
                        conv.answered = Some(answered_at);
                        out.push(CallEvent::LegAnswered(leg_of(call, &conv, now)));
                    } else {
                        out.push(CallEvent::LegRinging(leg_of(call, &conv, now)));
                    }
                    call.convs.push(conv);
                }
                None => {}
            }
        }
    }
}
