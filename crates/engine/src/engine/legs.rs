//! Legs ringing, answered and stopped: registrations, cards shown and hidden.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::json;
use tracker::{CallEvent, CallFull, Direction, Leg, StopReason, Timestamp};

use super::format::*;
use super::state::*;
use super::Engine;
use crate::intent::{CallFacts, Intent, RegisterCall};
use crate::plan::{Rule, Timing};
use crate::users::UserId;

impl Engine {
    pub(super) fn on_leg_ringing(
        &self,
        state: &mut CallState,
        leg: &Leg,
        call_full: Option<&CallFull>,
        event: &CallEvent,
        out: &mut Out<'_>,
    ) {
        if state.legs.contains_key(&leg.conversation) {
            return; // a repeated event
        }
        self.admit(state, call_full, event, out);
        let Admission::Register(ctx) = &state.admission else {
            return;
        };
        let ctx = Arc::clone(ctx);
        let Some(user) = self.add_leg(state, leg, call_full, true, out) else {
            return;
        };
        let card_user = if ctx.direction == Direction::Local {
            ctx.caller_user
        } else {
            user
        };
        let current = state
            .registrations
            .iter()
            .rposition(|r| matches!(r.phase, Phase::Ringing));
        match current {
            Some(index) => {
                if let Some(l) = state.legs.get_mut(&leg.conversation) {
                    l.registration = Some(index);
                }
                if state.registrations[index].known_call_id.is_some() {
                    return; // Bitrix24 shows the card of a click-to-call itself
                }
                let Some(card_user) = card_user else {
                    return;
                };
                let reg = &mut state.registrations[index];
                if ctx.direction != Direction::Local {
                    reg.last_rung = Some(card_user);
                }
                if let Some(card) = reg.cards.get_mut(&card_user) {
                    card.legs.insert(leg.conversation.clone());
                    return;
                }
                if !self.settings.raw.show_card {
                    return;
                }
                let occurrence = reg.occurrence(card_user);
                let key = format!("{}/show/{card_user}/{occurrence}", reg.prefix);
                reg.cards.insert(
                    card_user,
                    Card {
                        shown_by: key.clone(),
                        occurrence,
                        legs: BTreeSet::from([leg.conversation.clone()]),
                    },
                );
                out.decide(
                    Rule::ShowRingingLeg,
                    format!(
                        "extension {} rings while the call is registered: card shown to user {card_user}",
                        leg.number
                    ),
                    json!({"user": card_user, "extension": leg.number, "step": key}),
                );
                out.intent(
                    key,
                    &Intent::ShowCard {
                        call: reg.record(),
                        user: card_user,
                        client_phone: reg.facts.client_phone.clone(),
                    },
                    &[],
                    Timing::WhileRinging {
                        conversation: leg.conversation.clone(),
                    },
                );
            }
            None => {
                if let Some(index) = self.click_registration(state, out) {
                    if let Some(l) = state.legs.get_mut(&leg.conversation) {
                        l.registration = Some(index);
                    }
                    return;
                }
                let Some(reg_user) = card_user else {
                    if ctx.direction == Direction::Local {
                        out.decide(
                            Rule::NoResponsible,
                            format!(
                                "the caller {} of this local call has no Bitrix24 user: not registered",
                                ctx.caller_extension
                            ),
                            json!({"extension": ctx.caller_extension}),
                        );
                    }
                    return;
                };
                let show = self.settings.raw.show_card;
                let index = self.register(state, &ctx, reg_user, show, Some(leg), leg.time, out);
                if let Some(l) = state.legs.get_mut(&leg.conversation) {
                    l.registration = Some(index);
                }
                let reg = &mut state.registrations[index];
                if ctx.direction != Direction::Local {
                    reg.last_rung = Some(reg_user);
                }
                if show {
                    let occurrence = reg.occurrence(reg_user);
                    reg.cards.insert(
                        reg_user,
                        Card {
                            shown_by: reg.register_key(),
                            occurrence,
                            legs: BTreeSet::from([leg.conversation.clone()]),
                        },
                    );
                }
            }
        }
    }

    /// Plans a register; returns the new registration's index.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn register(
        &self,
        state: &mut CallState,
        ctx: &CallContext,
        user: UserId,
        show: bool,
        ringing_leg: Option<&Leg>,
        time: Timestamp,
        out: &mut Out<'_>,
    ) -> usize {
        let s = &self.settings.raw;
        let n = state.registrations.len();
        let prefix = format!("{}/{n}", out.call);
        let external_call_id = if n == 0 {
            out.call.to_owned()
        } else {
            format!("{}-{n}", out.call)
        };
        let start = match (n, &ctx.start_date) {
            (0, Some(start)) => start.clone(),
            _ => bitrix_time(time, self.settings.offset),
        };
        let crm_create = match ctx.direction {
            Direction::Incoming => s.crm_create.incoming,
            _ => s.crm_create.outgoing,
        };
        let register = RegisterCall {
            user,
            client_phone: ctx.client.clone(),
            direction: ctx.direction,
            start,
            create_entity: crm_create,
            card: show && ringing_leg.is_some(),
            external_id: external_call_id.clone(),
            line: ctx.line_number.clone(),
            source: ctx.crm_source.clone(),
        };
        let reg = Registration {
            prefix,
            user,
            fixed_user: (ctx.direction == Direction::Local).then_some(user),
            phase: Phase::Ringing,
            cards: BTreeMap::new(),
            next_occurrence: BTreeMap::new(),
            last_rung: None,
            talker: None,
            known_call_id: None,
            record_planned: false,
            facts: CallFacts::of(&register),
        };
        let key = reg.register_key();
        let timing = match ringing_leg {
            Some(leg) if show => Timing::DurableCardWhileRinging {
                conversation: leg.conversation.clone(),
            },
            _ => Timing::Durable,
        };
        // With no leg ringing there is nobody to show a card to, whatever the setting says.
        if !show && ringing_leg.is_some() {
            out.decide(
                Rule::ShowCardSetting,
                "show_card is off: registered without a card".into(),
                json!({"step": key}),
            );
        }
        let (rule, why) = match ringing_leg {
            Some(leg) if n == 0 => (
                Rule::FirstLegRegisters,
                format!("first employee leg of the call rang (extension {})", leg.number),
            ),
            Some(leg) => (
                Rule::FirstLegRegisters,
                format!(
                    "extension {} rang after the previous registration left ringing",
                    leg.number
                ),
            ),
            None => (Rule::TakeoverRegisters, "registered without a card".into()),
        };
        out.decide(
            rule,
            format!(
                "{why}: register {} call for user {user} (registration {n})",
                direction_name(ctx.direction)
            ),
            json!({"user": user, "registration": n, "external_call_id": external_call_id, "step": key}),
        );
        out.intent(key, &Intent::Register(register), &[], timing);
        state.registrations.push(reg);
        n
    }

    pub(super) fn hide(reg: &Registration, user: UserId, card: &Card, out: &mut Out<'_>, why: String) {
        let key = format!("{}/hide/{user}/{}", reg.prefix, card.occurrence);
        out.decide(Rule::HideStoppedLeg, why, json!({"user": user, "step": key}));
        out.intent(
            key,
            &Intent::HideCard {
                call: reg.record(),
                user,
            },
            std::slice::from_ref(&card.shown_by),
            Timing::UndoCard {
                shown_by: card.shown_by.clone(),
                finish: reg.finish_key(),
            },
        );
    }

    pub(super) fn on_leg_answered(
        &self,
        state: &mut CallState,
        leg: &Leg,
        call_full: Option<&CallFull>,
        event: &CallEvent,
        out: &mut Out<'_>,
    ) {
        self.admit(state, call_full, event, out);
        let Admission::Register(ctx) = &state.admission else {
            return;
        };
        let ctx = Arc::clone(ctx);
        let user = match state.legs.get(&leg.conversation) {
            Some(l) if l.excluded || l.answered_at.is_some() || l.ended => return,
            Some(l) => l.user,
            None => match self.add_leg(state, leg, call_full, false, out) {
                Some(user) => user,
                None => return,
            },
        };
        let talker_user = if ctx.direction == Direction::Local {
            ctx.caller_user
        } else {
            user
        };
        if let Some(l) = state.legs.get_mut(&leg.conversation) {
            l.ringing = false;
            l.answered_at = Some(leg.time);
        }
        let current = state
            .registrations
            .iter()
            .rposition(|r| matches!(r.phase, Phase::Ringing));
        let index = match current {
            Some(index) => {
                let reg = &mut state.registrations[index];
                let cards = std::mem::take(&mut reg.cards);
                for (card_user, card) in &cards {
                    if Some(*card_user) == talker_user {
                        continue; // the card stays up during the talk; finish takes it away
                    }
                    Self::hide(
                        reg,
                        *card_user,
                        card,
                        out,
                        format!("extension {} answered: card hidden for user {card_user}", leg.number),
                    );
                }
                index
            }
            None if state.click.is_some() && state.registrations.is_empty() => {
                self.click_registration(state, out).unwrap_or_default()
            }
            None => {
                let reg_user = talker_user.or_else(|| self.default_user(&ctx));
                let Some(reg_user) = reg_user else {
                    out.decide(
                        Rule::NoResponsible,
                        format!(
                            "extension {} talks but has no Bitrix24 user and no default responsible is set",
                            leg.number
                        ),
                        json!({"extension": leg.number}),
                    );
                    return;
                };
                if !state.registrations.is_empty() {
                    out.decide(
                        Rule::TakeoverRegisters,
                        format!(
                            "extension {} took the client over ({:?}): a new registration for its talk",
                            leg.number, leg.origin
                        ),
                        json!({"extension": leg.number, "origin": leg.origin}),
                    );
                }
                self.register(state, &ctx, reg_user, false, None, leg.time, out)
            }
        };
        let forwarded_unknown = talker_user.is_none()
            && state
                .legs
                .get(&leg.conversation)
                .is_some_and(|l| l.forwarded && l.user.is_none());
        // Also what a recovery reads from the journal: who talked on which registration, since when.
        out.decide(
            Rule::AnswerTakesRegistration,
            format!(
                "extension {} answered: registration {index} is {}",
                leg.number,
                talker_user.map_or("the default responsible's".to_owned(), |u| format!("user {u}'s"))
            ),
            json!({
                "user": talker_user,
                "registration": index,
                "origin": leg.origin,
                "conversation": leg.conversation,
                "forwarded_unknown": forwarded_unknown,
                "step": state.registrations[index].register_key(),
            }),
        );
        if let Some(l) = state.legs.get_mut(&leg.conversation) {
            l.registration = Some(index);
        }
        state.registrations[index].phase = Phase::Talking {
            conversation: leg.conversation.clone(),
            user: talker_user,
            forwarded_unknown,
            since: leg.time,
        };
    }

    pub(super) fn on_leg_stopped(
        &self,
        state: &mut CallState,
        conversation: &str,
        reason: &StopReason,
        out: &mut Out<'_>,
    ) {
        let Some(leg) = state.legs.get_mut(conversation) else {
            return;
        };
        if !leg.ringing {
            return;
        }
        leg.ringing = false;
        if leg.answered_at.is_none() {
            leg.ended = true;
        }
        let Some(index) = leg.registration else {
            return;
        };
        let leg_user = leg.user;
        let Admission::Register(ctx) = &state.admission else {
            return;
        };
        let card_user = if ctx.direction == Direction::Local {
            ctx.caller_user
        } else {
            leg_user
        };
        let Some(card_user) = card_user else {
            return;
        };
        let reg = &mut state.registrations[index];
        if !matches!(reg.phase, Phase::Ringing) {
            return;
        }
        let Some(card) = reg.cards.get_mut(&card_user) else {
            return;
        };
        card.legs.remove(conversation);
        if !card.legs.is_empty() {
            return;
        }
        if let Some(card) = reg.cards.remove(&card_user) {
            let why = format!(
                "the phone stopped ringing ({}): card hidden for user {card_user}",
                stop_reason_text(reason)
            );
            Self::hide(reg, card_user, &card, out, why);
        }
    }
}
