//! How many S3-like calls (queue ringall to three phones, one answers, talk, hang-up, recording) the engine
//! plans per second, with the live `call_full` passed on every event as the shell does.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use engine::{DirectoryUser, Engine, EngineSettings, TrunkSettings};
use numbers::Number;
use serde_json::Map;
use tracker::{
    status, CallEndReason, CallEvent, CallFull, CallState, ChannelData, ConversationEndReason, Direction, Leg,
    LegOrigin, StopReason, Timestamp, NEVER,
};

const CALLS_PER_BATCH: usize = 200;

fn number(text: &str) -> Number {
    Number {
        base: text.trim_start_matches('+').to_owned(),
        custom: String::new(),
        is_local: text.len() <= 4,
        original: text.to_owned(),
        variants: Vec::new(),
    }
}

fn call_full(key: &str, result: u16) -> CallFull {
    CallFull {
        active_conversation_id: String::new(),
        channel: ChannelData {
            answer_time: NEVER.into(),
            end_time: NEVER.into(),
            extra: Map::new(),
            from: number("+79001234567"),
            id: key.into(),
            is_primary: true,
            name: "PJSIP/carrier-00000001".into(),
            start_time: "2023-11-15 01:13:20".into(),
            state: CallState::Ringing,
            to: number("73432723033"),
            trunk: number("73432723033"),
            direction: Direction::Incoming,
            was_answered: false,
        },
        conversations: Default::default(),
        deal: None,
        entity: None,
        is_ivr: false,
        record: "/var/spool/asterisk/monitor/a.wav".into(),
        registration: None,
        result,
    }
}

fn s3(key: &str) -> (CallFull, Vec<CallEvent>) {
    let t = |s: i64| Timestamp::from_secs(1_700_000_000 + s);
    let leg = |conv: &str, s: i64, ext: &str| Leg {
        call: key.into(),
        conversation: format!("{key}.{conv}"),
        time: t(s),
        channel: format!("PJSIP/{ext}-00000001"),
        endpoint: ext.into(),
        number: ext.into(),
        peer_number: "+79001234567".into(),
        origin: LegOrigin::Queue,
    };
    let stop = |conv: &str| CallEvent::LegStoppedRinging {
        call: key.into(),
        conversation: format!("{key}.{conv}"),
        time: t(6),
        reason: StopReason::AnsweredElsewhere,
    };
    let events = vec![
        CallEvent::RecordingStarted {
            call: key.into(),
            conversation: String::new(),
            channel: "PJSIP/carrier-00000001".into(),
            time: t(0),
            path: "/var/spool/asterisk/monitor/a.wav".into(),
        },
        CallEvent::LegRinging(leg("1", 2, "101")),
        CallEvent::LegRinging(leg("2", 2, "102")),
        CallEvent::LegRinging(leg("3", 2, "103")),
        CallEvent::LegAnswered(leg("2", 6, "102")),
        stop("1"),
        stop("3"),
        CallEvent::ConversationEnded {
            call: key.into(),
            conversation: format!("{key}.2"),
            time: t(36),
            talk_seconds: 30,
            reason: ConversationEndReason::HungUp { cause: Some(16) },
        },
        CallEvent::CallEnded {
            call: key.into(),
            time: t(36),
            reason: CallEndReason::Hangup,
            call_full: Box::new(call_full(key, status::TALKED)),
        },
    ];
    (call_full(key, status::LIVE), events)
}

fn engine() -> Engine {
    let mut settings = EngineSettings {
        utc_offset: "+03:00".into(),
        trunks: vec![TrunkSettings {
            number: "73432723033".into(),
            line_number: None,
            crm_source: Some("CALL".into()),
            responsible: None,
        }],
        ..EngineSettings::default()
    };
    settings.missed.default_user = Some(9);
    let mut engine = Engine::new(settings).expect("valid settings");
    engine.users_mut().replace(
        (1..=3).map(|i| DirectoryUser {
            id: i,
            extension: Some(format!("10{i}")),
            phones: vec![],
        }),
        Timestamp::from_secs(1_700_000_000),
    );
    engine
}

fn bench_s3(c: &mut Criterion) {
    let calls: Vec<(CallFull, Vec<CallEvent>)> = (0..CALLS_PER_BATCH).map(|i| s3(&format!("1700000000.{i}"))).collect();
    let mut group = c.benchmark_group("plan");
    group.throughput(Throughput::Elements(CALLS_PER_BATCH as u64));
    group.bench_function("s3_queue_call", |b| {
        b.iter_batched(
            engine,
            |mut engine| {
                let mut steps = 0;
                for (live, events) in &calls {
                    for event in events {
                        let plan = engine.handle(event, Some(live), Timestamp::from_secs(1_700_000_040));
                        steps += plan.steps.len();
                    }
                }
                black_box(steps)
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(benches, bench_s3);
criterion_main!(benches);
