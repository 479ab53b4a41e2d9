//! Conversations as events see them (`Leg`) and the `call_full` object.

use super::*;

pub(super) fn new_conv(uid: &str, side: Side, ch: &Chan, origin: LegOrigin, now: Timestamp) -> Conv {
    Conv {
        leg: uid.to_owned(),
        side,
        endpoint: ch.endpoint.clone(),
        number: ch.endpoint.clone(),
        channel_name: ch.name.clone(),
        origin,
        start: now,
        answered: None,
        ended: None,
        held: false,
        parked: false,
        end_hint: None,
        extra: Map::new(),
    }
}

pub(super) fn leg_of(call: &Call, conv: &Conv, now: Timestamp) -> Leg {
    leg_with_peer(&call.key, conv, call.peer_number(), now)
}

pub(super) fn leg_with_peer(key: &str, conv: &Conv, peer: &str, now: Timestamp) -> Leg {
    Leg {
        call: key.to_owned(),
        conversation: conv.leg.clone(),
        time: now,
        channel: conv.channel_name.clone(),
        endpoint: conv.endpoint.clone(),
        number: conv.number.clone(),
        peer_number: peer.to_owned(),
        origin: conv.origin,
    }
}

/// Builds `call_full`. `ended` is the end instant for a call being closed.
pub(super) fn build_call_full(
    cfg: &Compiled,
    channels: &HashMap<String, Chan>,
    call: &Call,
    ended: Option<Timestamp>,
) -> CallFull {
    let numbers = &cfg.numbers;
    let clock = &cfg.clock;
    let trunk_number = call
        .trunk
        .and_then(|i| cfg.trunks.get(i))
        .map(|t| t.number.trim())
        .filter(|n| !n.is_empty())
        .unwrap_or(if call.direction == Direction::Incoming {
            call.trunk_exten.as_str()
        } else {
            ""
        });
    let trunk = numbers.normalize(trunk_number);
    let any_answered = call.convs.iter().any(|c| c.answered.is_some());
    let main_answer = if call.direction == Direction::Outgoing {
        call.far_answered
            .or_else(|| call.convs.iter().filter_map(|c| c.answered).min())
            .filter(|_| call.far_answered.is_some())
    } else {
        call.convs.iter().filter_map(|c| c.answered).min()
    };
    let main_state = if ended.is_some() {
        CallState::Ended
    } else if main_answer.is_some() {
        CallState::Talking
    } else {
        CallState::Ringing
    };
    let primary_extra = channels
        .get(&call.key)
        .map(|c| c.extra.clone())
        .unwrap_or_else(|| call.primary_extra.clone());
    let channel = ChannelData {
        answer_time: clock.format(main_answer),
        end_time: clock.format(ended),
        extra: primary_extra,
        from: numbers.normalize(&call.from_raw),
        id: call.key.clone(),
        is_primary: true,
        name: call.primary_name.clone(),
        start_time: clock.format(Some(call.start)),
        state: main_state,
        to: numbers.normalize(&call.to_raw),
        trunk: trunk.clone(),
        direction: call.direction,
        was_answered: main_answer.is_some(),
    };
    let mut conversations = BTreeMap::new();
    for conv in &call.convs {
        let (from, to) = match call.direction {
            Direction::Outgoing => (conv.number.as_str(), call.to_raw.as_str()),
            _ => (call.from_raw.as_str(), conv.number.as_str()),
        };
        let state = if conv.ended.is_some() {
            CallState::Ended
        } else if conv.answered.is_some() {
            CallState::Talking
        } else {
            CallState::Ringing
        };
        let extra = channels
            .get(&conv.leg)
            .filter(|c| c.call == call.key && conv.is_live())
            .map(|c| c.extra.clone())
            .unwrap_or_else(|| conv.extra.clone());
        conversations.insert(
            conv.leg.clone(),
            Conversation {
                channel: ChannelData {
                    answer_time: clock.format(conv.answered),
                    end_time: clock.format(conv.ended),
                    extra,
                    from: numbers.normalize(from),
                    id: conv.leg.clone(),
                    is_primary: conv.leg == call.key,
                    name: conv.channel_name.clone(),
                    start_time: clock.format(Some(conv.start)),
                    state,
                    to: numbers.normalize(to),
                    trunk: trunk.clone(),
                    direction: call.direction,
                    was_answered: conv.answered.is_some(),
                },
                is_parked: conv.parked || conv.held,
                user: None,
            },
        );
    }
    let result = match ended {
        None => status::LIVE,
        Some(_) => match call.direction {
            Direction::Outgoing if call.far_answered.is_some() => status::TALKED,
            Direction::Outgoing => status::failed_dial_status(&call.far_outcome),
            _ if any_answered => status::TALKED,
            Direction::Local => status::failed_dial_status(&call.far_outcome),
            _ => status::MISSED,
        },
    };
    CallFull {
        active_conversation_id: call.active_conv().map(|c| c.leg.clone()).unwrap_or_default(),
        channel,
        conversations,
        deal: None,
        entity: None,
        is_ivr: ended.is_some() && call.direction == Direction::Incoming && call.convs.is_empty(),
        record: call.record.clone(),
        registration: None,
        result,
    }
}
