//! Builders for call events as the tracker emits them, and a compact rendering of plans.
#![allow(dead_code)]

use std::collections::BTreeMap;

use engine::{DirectoryUser, Engine, EngineSettings, Plan, Rule, Step, StepKind, TrunkSettings};
use numbers::Number;
use serde_json::{Map, Value};
use tracker::{
    status, CallEndReason, CallEvent, CallFull, CallState, ChannelData, ConversationEndReason, Direction, Leg,
    LegOrigin, StopReason, Timestamp, NEVER,
};

pub const CLIENT: &str = "+79001234567";
pub const DID: &str = "73432723033";
/// 2023-11-14 22:13:20 UTC = 2023-11-15 01:13:20 at +03:00.
pub const T0: i64 = 1_700_000_000;
pub const T0_LOCAL: &str = "2023-11-15 01:13:20";
pub const T0_BITRIX: &str = "2023-11-15T01:13:20+03:00";
pub const DEFAULT_USER: u64 = 9;

pub fn at(secs: i64) -> Timestamp {
    Timestamp::from_secs(T0 + secs)
}

pub fn number(original: &str) -> Number {
    let is_local = !original.is_empty() && original.len() <= 4;
    Number {
        base: original.trim_start_matches('+').to_owned(),
        custom: String::new(),
        is_local,
        original: original.to_owned(),
        variants: Vec::new(),
    }
}

/// The settings of the scenarios: line 73432723033 with source CALL, default responsible U9.
pub fn settings() -> EngineSettings {
    let mut s = EngineSettings {
        utc_offset: "+03:00".into(),
        trunks: vec![TrunkSettings {
            number: DID.into(),
            line_number: None,
            crm_source: Some("CALL".into()),
            responsible: None,
        }],
        ..EngineSettings::default()
    };
    s.missed.default_user = Some(DEFAULT_USER);
    s
}

/// Extensions 101, 102, 103 belong to users 1, 2, 3.
pub fn engine(settings: EngineSettings) -> Engine {
    let mut engine = Engine::new(settings).expect("valid settings");
    engine.users_mut().replace(
        (1..=3).map(|i| DirectoryUser {
            id: i,
            extension: Some(format!("10{i}")),
            phones: vec![],
        }),
        at(0),
    );
    engine
}

/// One call as the tracker would describe it.
#[derive(Clone)]
pub struct CallSpec {
    pub key: String,
    pub direction: Direction,
    pub from: String,
    pub to: String,
    pub trunk: String,
}

impl CallSpec {
    pub fn incoming(key: &str) -> Self {
        Self {
            key: key.into(),
            direction: Direction::Incoming,
            from: CLIENT.into(),
            to: DID.into(),
            trunk: DID.into(),
        }
    }

    pub fn outgoing(key: &str, from: &str) -> Self {
        Self {
            key: key.into(),
            direction: Direction::Outgoing,
            from: from.into(),
            to: CLIENT.into(),
            trunk: DID.into(),
        }
    }

    pub fn local(key: &str, from: &str, to: &str) -> Self {
        Self {
            key: key.into(),
            direction: Direction::Local,
            from: from.into(),
            to: to.into(),
            trunk: String::new(),
        }
    }

    fn channel(&self, id: &str, end: Option<&str>) -> ChannelData {
        ChannelData {
            answer_time: NEVER.into(),
            end_time: end.unwrap_or(NEVER).into(),
            extra: Map::new(),
            from: number(&self.from),
            id: id.into(),
            is_primary: id == self.key,
            name: String::new(),
            start_time: T0_LOCAL.into(),
            state: if end.is_some() {
                CallState::Ended
            } else {
                CallState::Ringing
            },
            to: number(&self.to),
            trunk: number(&self.trunk),
            direction: self.direction,
            was_answered: false,
        }
    }

    /// `call_full` of the live call.
    pub fn live(&self) -> CallFull {
        self.full(0, false, "", false)
    }

    pub fn full(&self, result: u16, is_ivr: bool, record: &str, ended: bool) -> CallFull {
        CallFull {
            active_conversation_id: String::new(),
            channel: self.channel(&self.key, ended.then_some("2023-11-15 01:14:20")),
            conversations: BTreeMap::new(),
            deal: None,
            entity: None,
            is_ivr,
            record: record.into(),
            registration: None,
            result,
        }
    }

    pub fn leg(&self, conversation: &str, secs: i64, ext: &str, origin: LegOrigin) -> Leg {
        let peer = match self.direction {
            Direction::Outgoing => self.to.clone(),
            _ => self.from.clone(),
        };
        Leg {
            call: self.key.clone(),
            conversation: conversation.into(),
            time: at(secs),
            channel: format!("PJSIP/{ext}-0000000{}", conversation.len()),
            endpoint: ext.into(),
            number: ext.into(),
            peer_number: peer,
            origin,
        }
    }

    pub fn ringing(&self, conversation: &str, secs: i64, ext: &str) -> CallEvent {
        CallEvent::LegRinging(self.leg(conversation, secs, ext, LegOrigin::Dial))
    }

    pub fn queue_ringing(&self, conversation: &str, secs: i64, ext: &str) -> CallEvent {
        CallEvent::LegRinging(self.leg(conversation, secs, ext, LegOrigin::Queue))
    }

    pub fn dialing(&self, conversation: &str, secs: i64, ext: &str) -> CallEvent {
        CallEvent::LegDialing(self.leg(conversation, secs, ext, LegOrigin::Dial))
    }

    pub fn answered(&self, conversation: &str, secs: i64, ext: &str) -> CallEvent {
        CallEvent::LegAnswered(self.leg(conversation, secs, ext, LegOrigin::Dial))
    }

    pub fn answered_by(&self, conversation: &str, secs: i64, ext: &str, origin: LegOrigin) -> CallEvent {
        CallEvent::LegAnswered(self.leg(conversation, secs, ext, origin))
    }

    pub fn stopped(&self, conversation: &str, secs: i64, reason: StopReason) -> CallEvent {
        CallEvent::LegStoppedRinging {
            call: self.key.clone(),
            conversation: conversation.into(),
            time: at(secs),
            reason,
        }
    }

    pub fn talk_ended(&self, conversation: &str, secs: i64, talk: u64, reason: ConversationEndReason) -> CallEvent {
        CallEvent::ConversationEnded {
            call: self.key.clone(),
            conversation: conversation.into(),
            time: at(secs),
            talk_seconds: talk,
            reason,
        }
    }

    pub fn hung_up(&self, conversation: &str, secs: i64, talk: u64) -> CallEvent {
        self.talk_ended(
            conversation,
            secs,
            talk,
            ConversationEndReason::HungUp { cause: Some(16) },
        )
    }

    pub fn recording(&self, conversation: &str, secs: i64, path: &str) -> CallEvent {
        CallEvent::RecordingStarted {
            call: self.key.clone(),
            conversation: conversation.into(),
            channel: "PJSIP/carrier-00000001".into(),
            time: at(secs),
            path: path.into(),
        }
    }

    pub fn ended(&self, secs: i64, result: u16, is_ivr: bool, record: &str) -> CallEvent {
        CallEvent::CallEnded {
            call: self.key.clone(),
            time: at(secs),
            reason: CallEndReason::Hangup,
            call_full: Box::new(self.full(result, is_ivr, record, true)),
        }
    }
}

impl CallSpec {
    /// A click-to-call's call from 101, answered: the employee's phone rings and dials, the client answers at
    /// 6 s and hangs up after 10 s of talk, recorded to `record`.
    pub fn answered_click(&self, record: &str) -> Vec<CallEvent> {
        vec![
            self.ringing("c1", 0, "101"),
            self.dialing("c1", 3, "101"),
            self.recording("c1", 3, record),
            self.answered("c1", 6, "101"),
            self.hung_up("c1", 16, 10),
            self.ended(16, status::TALKED, false, record),
        ]
    }
}

/// Feeds events (with the live `call_full`) and collects everything planned.
pub fn run(engine: &mut Engine, spec: &CallSpec, events: &[CallEvent]) -> Plan {
    let live = spec.live();
    let mut all = Plan::default();
    for event in events {
        let plan = engine.handle(event, Some(&live), event.time());
        assert!(
            plan.refresh_users.is_none(),
            "unexpected users refresh on {}",
            event.name()
        );
        all.steps.extend(plan.steps);
        all.journal.extend(plan.journal);
    }
    all
}

fn user_text(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::Array(items) => items.iter().map(user_text).collect::<Vec<_>>().join(","),
        Value::Object(map) if map.contains_key("$first") => {
            let parts: Vec<String> = map["$first"]
                .as_array()
                .map(|c| {
                    c.iter()
                        .map(|x| {
                            if x.get("$ref").is_some() {
                                "owner".into()
                            } else {
                                user_text(x)
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            parts.join("|")
        }
        other => other.to_string(),
    }
}

/// `register 0 user=1 type=2 show=1`, `show 0 user=2`, `finish 0 user=2 duration=30 status=200`, …
pub fn describe(step: &Step) -> String {
    let n = step.key.split('/').nth(1).unwrap_or("?");
    let p = &step.params;
    match step.kind {
        StepKind::Register => format!(
            "register {n} user={} type={} show={}",
            user_text(&p["USER_ID"]),
            p["TYPE"],
            p["SHOW"]
        ),
        StepKind::Show => format!("show {n} user={}", user_text(&p["USER_ID"])),
        StepKind::Hide => format!("hide {n} user={}", user_text(&p["USER_ID"])),
        StepKind::LookupOwner => format!("owner {n}"),
        StepKind::Finish => format!(
            "finish {n} user={} duration={} status={}",
            user_text(&p["USER_ID"]),
            p["DURATION"],
            p["STATUS_CODE"].as_str().unwrap_or("?")
        ),
        StepKind::AttachRecord => format!("record {n} {}", step.record_path.as_deref().unwrap_or("")),
        StepKind::AddTask => format!("task {n} user={}", user_text(&p["fields"]["RESPONSIBLE_ID"])),
    }
}

pub fn describe_all(plan: &Plan) -> Vec<String> {
    plan.steps.iter().map(describe).collect()
}

pub fn keys(plan: &Plan) -> Vec<String> {
    plan.steps.iter().map(|s| s.key.clone()).collect()
}

pub fn rules(plan: &Plan) -> Vec<Rule> {
    plan.journal.iter().map(|d| d.rule).collect()
}

pub fn step<'a>(plan: &'a Plan, key: &str) -> &'a Step {
    plan.steps
        .iter()
        .find(|s| s.key == key)
        .unwrap_or_else(|| panic!("no step {key} in {:?}", keys(plan)))
}
