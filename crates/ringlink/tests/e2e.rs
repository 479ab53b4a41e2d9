//! Calls on a real Asterisk land in (an emulated) Bitrix24 exactly as the scenarios of the product
//! specification say: `ringlink run` between the test bed and the emulator, scenario by scenario.
//!
//! Every test also checks the rules all scenarios share (`Seen::check`): nothing registered or finished
//! twice, unique EXTERNAL_CALL_IDs, every request tied to a registered CALL_ID, and no card left open.

mod e2e {
    pub mod checks;
    pub mod harness;
}

use std::time::Duration;

use e2e::checks::{card_story, card_viewers, Seen};
use e2e::harness::{call_id, methods, text, E2e, CLIENT_BASE, WAIT};
use testbed::{scenarios, Route, CLIENT};

/// How long the outbox must stay silent before the record is read.
const QUIET: Duration = Duration::from_secs(4);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Plays a scenario of the test bed and waits until ringlink followed `calls` calls to their end and sent
/// everything it had for them.
async fn play(e2e: &E2e, id: &str, calls: usize) -> Seen {
    scenarios::play(&e2e.bed, id)
        .await
        .unwrap_or_else(|e| panic!("play {id}: {e}"));
    e2e.wait_calls_ended(calls, QUIET).await;
    Seen::check(e2e)
}

fn assert_client(seen: &Seen, reg: &e2e::checks::Registration) {
    assert!(
        text(&reg.register, "PHONE_NUMBER").ends_with(CLIENT_BASE),
        "PHONE_NUMBER is the client:\n{}",
        seen.described
    );
}

fn assert_incoming(seen: &Seen, reg: &e2e::checks::Registration) {
    assert_eq!(text(&reg.register, "TYPE"), "2", "{}", seen.described);
    assert_eq!(text(&reg.register, "LINE_NUMBER"), "73432723033", "{}", seen.described);
    assert_eq!(text(&reg.register, "CRM_CREATE"), "1", "{}", seen.described);
    assert_client(seen, reg);
}

/// S1: incoming on the DID → 101 rings → answers, talks 5 s, client hangs up.
/// Bitrix24: register(U1, TYPE 2, LINE_NUMBER, CRM_CREATE 1, SHOW 1) → finish(U1, ≈5 s, 200) → recording.
#[tokio::test]
async fn s1_incoming_answered() {
    let e2e = E2e::start("").await;
    scenarios::play(&e2e.bed, "s1").await.expect("play S1");
    e2e.wait_requests("telephony.externalcall.attachrecord", 1, WAIT).await;
    let seq = e2e.telephony();
    assert_eq!(
        methods(&seq),
        ["register", "finish", "attachrecord"],
        "{}",
        e2e.describe()
    );
    let (register, finish, record) = (&seq[0], &seq[1], &seq[2]);
    assert_eq!(text(register, "USER_ID"), "1");
    assert_eq!(text(register, "TYPE"), "2");
    assert_eq!(text(register, "LINE_NUMBER"), "73432723033");
    assert_eq!(text(register, "CRM_CREATE"), "1");
    assert_eq!(text(register, "SHOW"), "1");
    assert!(
        text(register, "PHONE_NUMBER").ends_with(CLIENT_BASE),
        "{}",
        e2e.describe()
    );
    let id = call_id(register);
    assert_eq!(text(finish, "CALL_ID"), id);
    assert_eq!(text(finish, "USER_ID"), "1");
    assert_eq!(text(finish, "STATUS_CODE"), "200");
    let duration: u64 = text(finish, "DURATION").parse().expect("DURATION");
    assert!((4..=7).contains(&duration), "talk ≈5 s, got {duration}");
    assert_eq!(text(record, "CALL_ID"), id);
    // The card was shown to U1 while 101 rang, and finish took it away.
    let timeline = e2e.emu.card_timeline();
    assert!(!timeline.for_user(1).is_empty(), "U1 saw the card");
    assert!(!timeline.is_visible(1, &id), "card gone after finish");
    e2e.wait_calls_ended(1, QUIET).await;
    Seen::check(&e2e);
    e2e.stop().await;
}

/// S1 on a PBX whose manager.conf lacks `timestampevents = yes`: the call is timed by when its events arrive
/// (start date today, talk ≈5 s, not 1970 and 0 s), and the log says once what to set.
#[tokio::test]
async fn s1_on_a_pbx_without_event_timestamps() {
    let e2e = E2e::start("").await;
    e2e.bed.set_timestamp_events(false).await.expect("timestampevents = no");
    scenarios::play(&e2e.bed, "s1").await.expect("play S1");
    e2e.wait_requests("telephony.externalcall.attachrecord", 1, WAIT).await;
    let seq = e2e.telephony();
    assert_eq!(
        methods(&seq),
        ["register", "finish", "attachrecord"],
        "{}",
        e2e.describe()
    );
    let (register, finish) = (&seq[0], &seq[1]);
    let today = chrono::Utc::now().format("%Y-").to_string();
    assert!(
        text(register, "CALL_START_DATE").starts_with(&today),
        "start date from the arrival time: {}",
        e2e.describe()
    );
    let duration: u64 = text(finish, "DURATION").parse().expect("DURATION");
    assert!((4..=7).contains(&duration), "talk ≈5 s, got {duration}");
    let log = e2e.log();
    assert_eq!(
        log.matches("AMI events carry no Timestamp: set timestampevents = yes")
            .count(),
        1,
        "said once:\n{log}"
    );
    e2e.wait_calls_ended(1, QUIET).await;
    Seen::check(&e2e);
    e2e.stop().await;
}

/// ringlink restarted while the client talks to 101 through the ringall queue `sales`: the resynchronised
/// call keeps the number the client dialled (the DID, which Asterisk keeps as `CALLERID(dnid)`), not the
/// queue's name its channel is at, in `call_full` and in the log.
#[tokio::test]
async fn restarted_during_a_queue_call_keeps_the_number_dialled() {
    let mut e2e = E2e::start("").await;
    e2e.bed.route_incoming(Route::QueueRingAll).await.expect("route");
    e2e.bed.phone(101).answer_after(secs(2)).await.expect("phone 101");
    for ext in [102, 103] {
        e2e.bed.phone(ext).no_answer().await.expect("phone");
    }
    let mut call = e2e.bed.incoming(CLIENT).talk(secs(8)).await.expect("call");
    e2e.bed.wait_phone_talking(101, WAIT).await.expect("101 talks");
    e2e.kill_ringlink();
    let client = e2e.bed.wait_client_talking(WAIT).await.expect("client talks");
    let dnid = e2e
        .bed
        .ami_action("Getvar", &[("Channel", &client.name), ("Variable", "CALLERID(dnid)")])
        .await
        .expect("Getvar");
    assert_eq!(
        dnid.get("Value"),
        Some(testbed::DID),
        "Asterisk keeps the number dialled"
    );
    let resyncs = e2e.log().matches("live calls resynchronised").count();
    e2e.start_ringlink().await;
    e2e.wait_log_after("live calls resynchronised", resyncs, WAIT).await;
    call.finished(WAIT).await.expect("client side over");
    e2e.wait_log("call ended", WAIT).await;
    let log = e2e.log();
    let ended: Vec<&str> = log.lines().filter(|l| l.contains("call ended")).collect();
    assert_eq!(ended.len(), 1, "{log}");
    assert!(ended[0].contains(&format!("to={}", testbed::DID)), "{}", ended[0]);
    assert!(!ended[0].contains("to=sales"), "{}", ended[0]);
    e2e.stop().await;
}

/// Follow-me rings 101 and, through the carrier, a mobile that is Boris's (`+7 900 111-22-33` in his Bitrix24
/// profile, while 101 is Anna's); the mobile answers. Bitrix24: registered when 101 rang, then Boris's answered
/// call (finish 200 for U2, ≈5 s), not a missed one.
#[tokio::test]
async fn follow_me_answered_on_the_employees_mobile() {
    let mut emu = b24emu::EmulatorConfig::default();
    emu.users[1].personal_mobile = "+7 900 111-22-33".into();
    let e2e = E2e::start_with(emu, "").await;
    let seen = play(&e2e, "x2-followme", 1).await;
    assert_eq!(seen.registrations.len(), 1, "{}", seen.described);
    let reg = &seen.registrations[0];
    assert_client(&seen, reg);
    assert_eq!(reg.user(), 1, "{}", seen.described);
    assert_eq!(reg.status(), "200", "{}", seen.described);
    assert_eq!(reg.finish_user(), 2, "Boris talked on his mobile: {}", seen.described);
    assert!((4..=7).contains(&reg.duration()), "talk ≈5 s: {}", seen.described);
    assert!(seen.tasks.is_empty(), "no missed-call task");
    e2e.stop().await;
}

/// As above, but the mobile is in nobody's profile: still an answered call (200), finished for the missed-call
/// responsible (the client's lead is new, so the employee rung last: U1).
#[tokio::test]
async fn follow_me_answered_on_an_unknown_outside_phone() {
    let e2e = E2e::start("").await;
    let seen = play(&e2e, "x2-followme", 1).await;
    assert_eq!(seen.registrations.len(), 1, "{}", seen.described);
    let reg = &seen.registrations[0];
    assert_eq!(reg.status(), "200", "answered, not missed: {}", seen.described);
    assert_eq!(reg.finish_user(), 1, "{}", seen.described);
    assert!(seen.tasks.is_empty(), "no missed-call task");
    e2e.stop().await;
}

/// Click-to-call as FreePBX places it (AMI `Originate` of `Local/101@from-internal`, then the client via the
/// carrier): Anna's outgoing call (register U1 TYPE 1 to the client, finish 200 ≈4 s); her phone ringing first
/// to place the call is no incoming ring of its own.
#[tokio::test]
async fn originate_to_the_client_is_the_employees_outgoing_call() {
    let e2e = E2e::start("").await;
    let seen = play(&e2e, "x3-originate-out", 1).await;
    assert_eq!(seen.registrations.len(), 1, "{}", seen.described);
    let reg = &seen.registrations[0];
    assert_client(&seen, reg);
    assert_eq!(text(&reg.register, "TYPE"), "1", "{}", seen.described);
    assert_eq!(reg.user(), 1, "{}", seen.described);
    assert_eq!(reg.status(), "200", "{}", seen.described);
    assert_eq!(reg.finish_user(), 1, "{}", seen.described);
    assert!((3..=6).contains(&reg.duration()), "talk ≈4 s: {}", seen.described);
    e2e.stop().await;
}

/// The missed incoming call of S2, with or without the missed-call task: register(U1, SHOW 1) → hide/finish
/// (responsible by rule, 0 s, 304). The lead was created by this very call, so it has no owner of its own:
/// the responsible is the last employee rung, U1.
async fn s2_missed(e2e: &E2e) -> Seen {
    let seen = play(e2e, "s2", 1).await;
    let reg = seen.single();
    assert_incoming(&seen, reg);
    assert_eq!(reg.user(), 1);
    assert_eq!(text(&reg.register, "SHOW"), "1");
    let flow = reg.flow();
    assert!(
        flow == ["register 1", "hide 1", "finish 1 304"] || flow == ["register 1", "finish 1 304"],
        "flow {flow:?}:\n{}",
        seen.described
    );
    assert_eq!(reg.duration(), 0);
    assert!(reg.records.is_empty(), "nobody talked, nothing to attach");
    assert_eq!(card_story(e2e, 1, &reg.call_id), ["shown", "hidden"]);
    assert_eq!(card_viewers(e2e, &reg.call_id), [1]);
    seen
}

/// S2: incoming → 101 rings until the dial timeout, nobody answers.
#[tokio::test]
async fn s2_incoming_no_answer() {
    let e2e = E2e::start("").await;
    let seen = s2_missed(&e2e).await;
    assert!(seen.tasks.is_empty(), "the missed-call task is off by default");
    e2e.stop().await;
}

/// S2 with the missed-call task on: one task for the responsible (U1), bound to the call's lead.
#[tokio::test]
async fn s2_missed_call_task() {
    let e2e = E2e::start("[engine.missed.task]\nenabled = true\n").await;
    let seen = s2_missed(&e2e).await;
    assert_eq!(seen.tasks.len(), 1, "one task:\n{}", seen.described);
    let task = &seen.tasks[0];
    assert_eq!(task.method, "tasks.task.add");
    let reg = seen.single();
    assert!(task.seq > reg.finish().seq, "the task follows the finish");
    let fields = task.param("fields").expect("task fields");
    let field = |name: &str| {
        fields
            .get(name)
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .unwrap_or_default()
    };
    assert_eq!(field("RESPONSIBLE_ID"), "1", "{}", seen.described);
    // Three requests against the portal's limit: register, then the hide at the phone's DialEnd with the owner
    // lookup planned at the hang-up right after it, then the finish with the task.
    let lookups = e2e.emu.requests_for("telephony.externalcall.searchcrmentities");
    assert_eq!(lookups.len(), 1, "one owner lookup:\n{}", seen.described);
    assert_eq!(reg.hides.len(), 1, "U1's card hidden:\n{}", seen.described);
    let batch = |r: &b24emu::RecordedRequest| r.batch_parent;
    assert!(
        batch(&reg.hides[0]).is_some() && batch(&reg.hides[0]) == batch(&lookups[0]),
        "the hide and the owner lookup go in one batch:\n{}",
        seen.described
    );
    assert!(
        batch(task).is_some() && batch(task) == batch(reg.finish()),
        "the finish and the task go in one batch:\n{}",
        seen.described
    );
    let lead = reg.entity();
    let lead_id = lead.strip_prefix("LEAD ").expect("the call created a lead");
    assert_eq!(
        fields.get("UF_CRM_TASK"),
        Some(&serde_json::json!([format!("L_{lead_id}")])),
        "{}",
        seen.described
    );
    assert!(field("TITLE").contains(CLIENT_BASE), "{}", seen.described);
    let state = e2e.emu.state();
    assert_eq!(state.tasks.len(), 1);
    e2e.stop().await;
}

/// The ringall queue of S3 / S19: one register for the first phone that rang, `show` to the other two, hides for
/// U1 and U3 when 102 answers, finish(U2, ≈5 s, 200), recording.
fn assert_ringall_answered_by_102(e2e: &E2e, seen: &Seen) {
    let reg = seen.single();
    assert_incoming(seen, reg);
    assert_eq!(text(&reg.register, "SHOW"), "1");
    let mut rung: Vec<u64> = std::iter::once(reg.user()).chain(reg.shown_to()).collect();
    rung.sort_unstable();
    assert_eq!(
        rung,
        [1, 2, 3],
        "register + shows cover the three members:\n{}",
        seen.described
    );
    let mut hidden = reg.hidden_from();
    hidden.sort_unstable();
    assert_eq!(
        hidden,
        [1, 3],
        "U1 and U3 hidden when 102 answered:\n{}",
        seen.described
    );
    let last_show = reg.shows.iter().map(|r| r.seq).max().unwrap_or(reg.register.seq);
    let first_hide = reg.hides.iter().map(|r| r.seq).min().unwrap_or(u64::MAX);
    assert!(
        last_show < first_hide,
        "all shows before the hides:\n{}",
        seen.described
    );
    assert!(
        reg.hides.iter().all(|h| h.seq < reg.finish().seq),
        "hides come when 102 answers, before the finish"
    );
    assert_eq!(reg.finish_user(), 2);
    assert_eq!(reg.status(), "200");
    seen.assert_duration(reg, 4..=7);
    assert_eq!(reg.records.len(), 1, "recording attached:\n{}", seen.described);
    assert_eq!(card_viewers(e2e, &reg.call_id), [1, 2, 3]);
    for user in [1, 2, 3] {
        assert_eq!(card_story(e2e, user, &reg.call_id), ["shown", "hidden"], "U{user}");
    }
}

/// S3: incoming → queue ringall 101, 102, 103 → 102 answers.
#[tokio::test]
async fn s3_queue_ringall() {
    let e2e = E2e::start("").await;
    let seen = play(&e2e, "s3", 1).await;
    assert_ringall_answered_by_102(&e2e, &seen);
    e2e.stop().await;
}

/// The one-by-one queue of S4 / S19: register(U1) → hide U1 → show U2 → hide U2 → show U3 → finish(U3, 200).
fn assert_linear_answered_by_103(e2e: &E2e, seen: &Seen) {
    let reg = seen.single();
    assert_incoming(seen, reg);
    assert_eq!(text(&reg.register, "SHOW"), "1");
    seen.assert_flow(
        reg,
        &[
            "register 1",
            "hide 1",
            "show 2",
            "hide 2",
            "show 3",
            "finish 3 200",
            "attachrecord",
        ],
    );
    seen.assert_duration(reg, 4..=7);
    for user in [1, 2, 3] {
        assert_eq!(card_story(e2e, user, &reg.call_id), ["shown", "hidden"], "U{user}");
    }
}

/// S4: incoming → queue one by one 101 → 102 → 103 (each rings and times out), 103 answers.
#[tokio::test]
async fn s4_queue_linear() {
    let e2e = E2e::start("").await;
    let seen = play(&e2e, "s4", 1).await;
    assert_linear_answered_by_103(&e2e, &seen);
    e2e.stop().await;
}

/// S5: incoming → ringall queue, nobody answers (two rounds), the client abandons after 9 s.
/// register → shows/hides as members ring → finish(responsible by rule, 304).
#[tokio::test]
async fn s5_queue_abandoned() {
    let e2e = E2e::start("").await;
    let seen = play(&e2e, "s5", 1).await;
    let reg = seen.single();
    assert_incoming(&seen, reg);
    assert_eq!(text(&reg.register, "SHOW"), "1");
    // The lead is the call's own: the responsible is the last employee rung, one of the three members.
    assert!([1, 2, 3].contains(&reg.finish_user()), "{}", seen.described);
    assert_eq!(reg.status(), "304");
    assert_eq!(reg.duration(), 0);
    assert!(reg.records.is_empty(), "nobody talked");
    assert_eq!(card_viewers(&e2e, &reg.call_id), [1, 2, 3]);
    for user in [1, 2, 3] {
        // Each ringing round shows the card and its end takes it away again.
        let story = card_story(&e2e, user, &reg.call_id);
        assert!(
            !story.is_empty() && story.chunks(2).all(|pair| pair == ["shown", "hidden"]),
            "U{user} saw {story:?}:\n{}",
            seen.described
        );
    }
    // Between the rounds (member timeout) every card was hidden, so some were shown again.
    let shown_twice = [1, 2, 3]
        .iter()
        .filter(|u| card_story(&e2e, **u, &reg.call_id).len() >= 4)
        .count();
    assert!(
        shown_twice > 0,
        "the second round shows the card again:\n{}",
        seen.described
    );
    e2e.stop().await;
}

/// S6: incoming → IVR, the client hangs up before any phone rings.
/// register(SHOW 0, user = responsible by rule: U9) → finish(304); the call is marked `is_ivr`.
#[tokio::test]
async fn s6_ivr_abandoned() {
    let e2e = E2e::start("").await;
    let seen = play(&e2e, "s6", 1).await;
    let reg = seen.single();
    assert_incoming(&seen, reg);
    assert_eq!(text(&reg.register, "SHOW"), "0");
    seen.assert_flow(reg, &["register 9", "finish 9 304"]);
    assert_eq!(reg.duration(), 0);
    assert!(card_viewers(&e2e, &reg.call_id).is_empty(), "nobody saw a card");
    assert!(
        e2e.log().contains("ivr=true"),
        "the call is marked is_ivr:\n{}",
        e2e.log()
    );
    e2e.stop().await;
}

/// S7: outgoing 101 → client via the trunk, answered, talk 5 s.
/// register(U1, TYPE 1, PHONE_NUMBER client, LINE_NUMBER of the trunk, CRM_CREATE 0) → finish(U1, ≈5 s, 200).
#[tokio::test]
async fn s7_outgoing_answered() {
    let e2e = E2e::start("").await;
    let seen = play(&e2e, "s7", 1).await;
    let reg = seen.single();
    assert_eq!(text(&reg.register, "TYPE"), "1");
    assert_eq!(text(&reg.register, "LINE_NUMBER"), "73432723033");
    assert_eq!(
        text(&reg.register, "CRM_CREATE"),
        "0",
        "outgoing lead creation is off by default"
    );
    assert_client(&seen, reg);
    seen.assert_flow(reg, &["register 1", "finish 1 200", "attachrecord"]);
    seen.assert_duration(reg, 4..=7);
    e2e.stop().await;
}

/// S8: outgoing 101 → client fails: busy 486, declined 603, no answer 304, caller cancels 603-S.
/// One registration for U1 (TYPE 1), finished with that status and 0 s; the card goes away.
#[tokio::test]
async fn s8_outgoing_failures() {
    let e2e = E2e::start("").await;
    let mut calls = 0;
    for (id, status) in [
        ("s8-busy", "486"),
        ("s8-decline", "603"),
        ("s8-noanswer", "304"),
        ("s8-cancel", "603-S"),
    ] {
        calls += 1;
        let seen = play(&e2e, id, calls).await;
        let reg = seen.registrations.last().expect("a registration");
        assert_eq!(
            seen.registrations.len(),
            calls,
            "{id}: one registration per call:\n{}",
            seen.described
        );
        assert_eq!(text(&reg.register, "TYPE"), "1", "{id}");
        assert_eq!(text(&reg.register, "LINE_NUMBER"), "73432723033", "{id}");
        assert_client(&seen, reg);
        let flow = reg.flow();
        let finish = format!("finish 1 {status}");
        assert!(
            flow == ["register 1", "hide 1", finish.as_str()] || flow == ["register 1", finish.as_str()],
            "{id}: flow {flow:?}:\n{}",
            seen.described
        );
        assert_eq!(reg.duration(), 0, "{id}");
        assert_eq!(text(&reg.register, "SHOW"), "1", "{id}");
        assert_eq!(card_story(&e2e, 1, &reg.call_id), ["shown", "hidden"], "{id}");
    }
    e2e.stop().await;
}

/// S9: local 101 → 102 is not registered (local calls off by default).
#[tokio::test]
async fn s9_local_call_not_registered() {
    let e2e = E2e::start("").await;
    let seen = play(&e2e, "s9", 1).await;
    assert!(seen.registrations.is_empty(), "{}", seen.described);
    assert!(e2e.telephony().is_empty(), "{}", seen.described);
    e2e.stop().await;
}

/// S9 with `register_local_calls`: the caller's outgoing call (TYPE 1, U1) with the callee's number.
#[tokio::test]
async fn s9_local_call_registered_when_enabled() {
    let e2e = E2e::start("[engine]\nregister_local_calls = true\n").await;
    let seen = play(&e2e, "s9", 1).await;
    let reg = seen.single();
    assert_eq!(text(&reg.register, "TYPE"), "1");
    assert_eq!(text(&reg.register, "PHONE_NUMBER"), "102");
    // Local calls are not recorded on this PBX.
    seen.assert_flow(reg, &["register 1", "finish 1 200"]);
    seen.assert_duration(reg, 3..=6);
    e2e.stop().await;
}

/// Two conversations of one client call (S10, S11, S13): the first employee's talk, then the second's, each
/// registered and finished under its own name, with its recording; one client entity.
fn assert_two_conversations(seen: &Seen, first: u64, second: u64) {
    assert_eq!(seen.registrations.len(), 2, "two registrations:\n{}", seen.described);
    let (a, b) = (&seen.registrations[0], &seen.registrations[1]);
    for reg in [a, b] {
        assert_incoming(seen, reg);
    }
    assert_eq!(a.user(), first);
    assert_eq!(a.finish_user(), first);
    assert_eq!(a.status(), "200");
    assert_eq!(b.user(), second);
    assert_eq!(b.finish_user(), second);
    assert_eq!(b.status(), "200");
    assert!(
        a.finish().seq < b.register.seq,
        "the first talk is finished before the second is registered:\n{}",
        seen.described
    );
    assert!(
        b.external_call_id().starts_with(&format!("{}-", a.external_call_id())),
        "the second registration's EXTERNAL_CALL_ID derives from the call's:\n{}",
        seen.described
    );
    assert_eq!(a.entity(), b.entity(), "one client entity:\n{}", seen.described);
    assert_eq!(a.records.len(), 1, "first talk recorded:\n{}", seen.described);
    assert_eq!(b.records.len(), 1, "second talk recorded:\n{}", seen.described);
}

/// S10: incoming → 101 answers → blind transfer to 102 → 102 answers.
#[tokio::test]
async fn s10_blind_transfer() {
    let e2e = E2e::start("").await;
    let seen = play(&e2e, "s10", 1).await;
    assert_two_conversations(&seen, 1, 2);
    let (a, b) = (&seen.registrations[0], &seen.registrations[1]);
    // 101 talks about 3 s before transferring; 102 rings 2 s and talks the rest of the client's 12 s.
    seen.assert_duration(a, 2..=6);
    seen.assert_duration(b, 3..=9);
    assert_eq!(card_story(&e2e, 1, &a.call_id), ["shown", "hidden"]);
    assert_eq!(e2e.emu.state().leads.len(), 1, "one lead for the client");
    // 102 rang after the blind transfer: U2's registration pops the card while it rings.
    assert_eq!(text(&b.register, "SHOW"), "1");
    assert_eq!(card_story(&e2e, 2, &b.call_id), ["shown", "hidden"]);
    assert_eq!(card_viewers(&e2e, &a.call_id), [1]);
    e2e.stop().await;
}

/// S11: incoming → 101 answers → attended transfer: 101 consults 102, then completes.
/// As S10; the consultation 101 ↔ 102 is a local call and not registered.
#[tokio::test]
async fn s11_attended_transfer() {
    let e2e = E2e::start("").await;
    scenarios::play(&e2e.bed, "s11").await.expect("play S11");
    e2e.wait_requests("telephony.externalcall.attachrecord", 2, WAIT).await;
    e2e.settle(QUIET).await;
    let seen = Seen::check(&e2e);
    assert_two_conversations(&seen, 1, 2);
    let (a, b) = (&seen.registrations[0], &seen.registrations[1]);
    // 101: 2 s talk + consultation (2 s ring, 2 s) until it hangs up; 102: the rest of the client's 16 s.
    seen.assert_duration(a, 4..=10);
    seen.assert_duration(b, 4..=12);
    assert_eq!(text(&b.register, "SHOW"), "0", "102 never rang for the client");
    assert_eq!(card_viewers(&e2e, &a.call_id), [1]);
    assert!(card_viewers(&e2e, &b.call_id).is_empty());
    assert!(
        seen.registrations
            .iter()
            .all(|r| !text(&r.register, "PHONE_NUMBER").ends_with("101")
                && !text(&r.register, "PHONE_NUMBER").ends_with("102")),
        "the consultation is not registered"
    );
    assert_eq!(e2e.emu.state().leads.len(), 1, "one lead for the client");
    e2e.stop().await;
}

/// S12: incoming → 101 rings → 102 picks up with *8.
/// Card shown to U1 while ringing, hidden on pickup; finish(U2, 200).
#[tokio::test]
async fn s12_pickup() {
    let e2e = E2e::start("").await;
    let seen = play(&e2e, "s12", 1).await;
    let reg = seen.single();
    assert_incoming(&seen, reg);
    assert_eq!(text(&reg.register, "SHOW"), "1");
    seen.assert_flow(reg, &["register 1", "hide 1", "finish 2 200", "attachrecord"]);
    seen.assert_duration(reg, 4..=7);
    assert_eq!(card_story(&e2e, 1, &reg.call_id), ["shown", "hidden"]);
    assert_eq!(card_viewers(&e2e, &reg.call_id), [1]);
    e2e.stop().await;
}

/// S13: incoming → 101 answers → parks the client → 103 retrieves.
/// U1's conversation finished; U3's registered (no card: 103 never rang) and finished.
#[tokio::test]
async fn s13_park_and_retrieve() {
    let e2e = E2e::start("").await;
    scenarios::play(&e2e.bed, "s13").await.expect("play S13");
    e2e.wait_requests("telephony.externalcall.attachrecord", 2, WAIT).await;
    e2e.settle(QUIET).await;
    let seen = Seen::check(&e2e);
    assert_two_conversations(&seen, 1, 3);
    let (a, b) = (&seen.registrations[0], &seen.registrations[1]);
    // 101 talks ≈3 s before parking; 103 talks 4 s after retrieving.
    seen.assert_duration(a, 2..=6);
    seen.assert_duration(b, 3..=7);
    assert_eq!(text(&b.register, "SHOW"), "0");
    assert_eq!(card_viewers(&e2e, &a.call_id), [1]);
    assert!(card_viewers(&e2e, &b.call_id).is_empty());
    e2e.stop().await;
}

/// S19: FreePBX-style ringall queue (members `Local/<ext>@from-queue/n`): as S3.
#[tokio::test]
async fn s19_freepbx_queue_ringall() {
    let e2e = E2e::start("").await;
    let seen = play(&e2e, "s19-ringall", 1).await;
    assert_ringall_answered_by_102(&e2e, &seen);
    e2e.stop().await;
}

/// S19: FreePBX-style one-by-one queue: as S4.
#[tokio::test]
async fn s19_freepbx_queue_linear() {
    let e2e = E2e::start("").await;
    let seen = play(&e2e, "s19-linear", 1).await;
    assert_linear_answered_by_103(&e2e, &seen);
    e2e.stop().await;
}

/// S21: the black-listed trunk: neither an incoming call through it (S1) nor an outgoing one (S7) is registered.
#[tokio::test]
async fn s21_black_listed_trunk() {
    let e2e = E2e::start("[engine.black_list]\ntrunks = [\"73432723033\"]\n").await;
    let seen = play(&e2e, "s1", 1).await;
    assert!(seen.registrations.is_empty(), "{}", seen.described);
    let seen = play(&e2e, "s7", 2).await;
    assert!(seen.registrations.is_empty(), "{}", seen.described);
    assert!(e2e.telephony().is_empty(), "{}", seen.described);
    e2e.stop().await;
}

/// S21: black-listed extension 103: a call answered by 103 is not registered at all (not even as an IVR call),
/// and in the ringall queue U3 never gets a card.
#[tokio::test]
async fn s21_black_listed_extension() {
    let e2e = E2e::start("[engine.black_list]\nextensions = [\"103\"]\n").await;
    let bed = &e2e.bed;
    bed.reset().await.expect("reset");
    bed.route_incoming(Route::Extension(103)).await.expect("route");
    bed.phone(103).answer_after(secs(2)).await.expect("phone 103");
    let mut call = bed.incoming(CLIENT).talk(secs(3)).await.expect("call");
    call.finished(secs(60)).await.expect("call ends");
    bed.wait_all_channels_gone(secs(20)).await.expect("channels gone");
    e2e.wait_calls_ended(1, QUIET).await;
    let seen = Seen::check(&e2e);
    assert!(seen.registrations.is_empty(), "{}", seen.described);

    let seen = play(&e2e, "s3", 2).await;
    let reg = seen.single();
    let mut rung: Vec<u64> = std::iter::once(reg.user()).chain(reg.shown_to()).collect();
    rung.sort_unstable();
    assert_eq!(rung, [1, 2], "U3 gets no card:\n{}", seen.described);
    assert_eq!(reg.hidden_from(), [1], "{}", seen.described);
    assert_eq!(reg.finish_user(), 2);
    assert_eq!(reg.status(), "200");
    assert_eq!(card_viewers(&e2e, &reg.call_id), [1, 2]);
    e2e.stop().await;
}
