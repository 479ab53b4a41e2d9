//! What Bitrix24 saw, in the terms of the scenario table: registrations with their shows, hides, finish and
//! recording, and the checks every scenario shares (nothing registered or finished twice, every card gone).

use std::collections::{BTreeSet, HashMap};
use std::ops::RangeInclusive;

use std::time::Duration;

use b24emu::{CardAction, RecordedRequest};
use serde_json::Value;

use super::harness::{call_id, text, E2e, WAIT};

/// One registration and the requests that named its CALL_ID, in the order Bitrix24 got them.
#[derive(Debug, Clone)]
pub struct Registration {
    pub register: RecordedRequest,
    pub call_id: String,
    pub shows: Vec<RecordedRequest>,
    pub hides: Vec<RecordedRequest>,
    pub finish: Option<RecordedRequest>,
    pub records: Vec<RecordedRequest>,
}

impl Registration {
    pub fn user(&self) -> u64 {
        user(&self.register)
    }

    pub fn finish(&self) -> &RecordedRequest {
        self.finish
            .as_ref()
            .unwrap_or_else(|| panic!("{} was never finished", self.call_id))
    }

    pub fn finish_user(&self) -> u64 {
        user(self.finish())
    }

    pub fn status(&self) -> String {
        text(self.finish(), "STATUS_CODE")
    }

    pub fn duration(&self) -> u64 {
        let raw = text(self.finish(), "DURATION");
        raw.parse()
            .unwrap_or_else(|_| panic!("DURATION of {} is not a number: {raw:?}", self.call_id))
    }

    pub fn external_call_id(&self) -> String {
        text(&self.register, "EXTERNAL_CALL_ID")
    }

    /// Users the card was shown to by `show` requests, in order.
    pub fn shown_to(&self) -> Vec<u64> {
        self.shows.iter().map(user).collect()
    }

    /// Users the card was hidden from by `hide` requests, in order.
    pub fn hidden_from(&self) -> Vec<u64> {
        self.hides.iter().map(user).collect()
    }

    /// The CRM entity Bitrix24 bound the registration to (`LEAD 5`).
    pub fn entity(&self) -> String {
        let result = self.register.response.get("result");
        let field = |name: &str| {
            result
                .and_then(|r| r.get(name))
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .unwrap_or_default()
        };
        format!("{} {}", field("CRM_ENTITY_TYPE"), field("CRM_ENTITY_ID"))
    }

    /// Method short names of this registration's requests in the order they arrived, with the user they named:
    /// `register 1`, `show 2`, `hide 1`, `finish 2 200`, `attachrecord`.
    pub fn flow(&self) -> Vec<String> {
        let mut all: Vec<&RecordedRequest> = std::iter::once(&self.register)
            .chain(&self.shows)
            .chain(&self.hides)
            .chain(&self.finish)
            .chain(&self.records)
            .collect();
        all.sort_by_key(|r| r.seq);
        all.iter().map(|r| step_name(r)).collect()
    }
}

/// `register 1`, `show 2`, `finish 2 200`, `attachrecord`.
pub fn step_name(r: &RecordedRequest) -> String {
    match short(r) {
        "register" | "show" | "hide" => format!("{} {}", short(r), user(r)),
        "finish" => format!("finish {} {}", user(r), text(r, "STATUS_CODE")),
        other => other.to_owned(),
    }
}

/// The last part of the method name, lower case (`register`, `attachrecord`).
pub fn short(r: &RecordedRequest) -> &str {
    r.method.rsplit('.').next().unwrap_or_default()
}

/// The users a request names in `USER_ID`: one id, or a list of them (`show` / `hide` take either).
pub fn users(r: &RecordedRequest) -> Vec<u64> {
    let one = |v: &Value| match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    let parsed = match r.param("USER_ID") {
        Some(Value::Array(list)) => list.iter().map(one).collect::<Option<Vec<u64>>>(),
        Some(v) => one(v).map(|u| vec![u]),
        None => None,
    };
    parsed.unwrap_or_else(|| panic!("USER_ID of {} ({}) is not a user id or a list of them", r.method, r.seq))
}

/// `USER_ID` of a request that names exactly one user.
pub fn user(r: &RecordedRequest) -> u64 {
    match users(r)[..] {
        [u] => u,
        ref more => panic!("{} ({}) names {more:?}, expected one user", r.method, r.seq),
    }
}

/// Everything Bitrix24 saw of the calls, checked for the rules every scenario shares.
pub struct Seen {
    pub registrations: Vec<Registration>,
    pub tasks: Vec<RecordedRequest>,
    pub described: String,
    /// Requests sent again after a restart (see [`Seen::check_despite_faults`]).
    #[allow(dead_code)] // shared by several test binaries; the fault tests use this
    pub resent: usize,
}

impl Seen {
    /// Reads the emulator's record and checks the shared rules:
    /// - every telephony / task request succeeded;
    /// - CALL_IDs and EXTERNAL_CALL_IDs of the registrations are all different (nothing registered twice);
    /// - every show, hide, finish and attachRecord names a registered CALL_ID; shows and hides come before its
    ///   finish, recordings after it;
    /// - every registration is finished exactly once and has at most one recording;
    /// - at the end nobody sees a card of any of these calls.
    pub fn check(e2e: &E2e) -> Seen {
        Self::check_requests(e2e, e2e.telephony(), &HashMap::new())
    }

    /// [`Seen::check`] on a portal with injected faults and a ringlink that may be killed: requests the emulator
    /// refused as a fault (503 `QUERY_LIMIT_EXCEEDED`, 5xx `INTERNAL_SERVER_ERROR`) were never carried out and
    /// are left out; everything else must hold as without faults.
    ///
    /// A request in flight when ringlink is killed is sent again after the restart (sending is at least once): a
    /// register again with its EXTERNAL_CALL_ID, which Bitrix24 answers with the same CALL_ID (the same call),
    /// an upload of the same file for the same CALL_ID (Bitrix24 cannot be asked whether the first one
    /// arrived), and a finish with the same parameters for a CALL_ID already finished (Bitrix24 refuses it as
    /// not found, which ringlink takes as done). Those repeats are left out too, and counted in
    /// [`Seen::resent`]; a second finish that differs from the first still fails the check.
    #[allow(dead_code)] // shared by several test binaries; the fault tests use this
    pub fn check_despite_faults(e2e: &E2e) -> Seen {
        let once = Resent::left_out(e2e.telephony().into_iter().filter(|r| !refused_as_fault(r)));
        let mut seen = Self::check_requests(e2e, once.kept, &once.registers);
        seen.resent = once.count;
        seen
    }

    /// `resent_registers`: CALL_ID → registers sent again for it after a restart (see above).
    fn check_requests(e2e: &E2e, all: Vec<RecordedRequest>, resent_registers: &HashMap<String, u32>) -> Seen {
        let described = describe(&all);
        // Shown with `--no-capture`: what Bitrix24 saw, for the record.
        println!("Bitrix24 saw:\n{described}");
        for r in &all {
            assert!(r.is_ok(), "request {} failed:\n{described}", r.seq);
        }
        let mut registrations: Vec<Registration> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut tasks = Vec::new();
        let mut lookups = Vec::new();
        for r in all {
            match short(&r) {
                "register" => {
                    let id = call_id(&r);
                    assert!(!id.is_empty(), "register {} answered no CALL_ID:\n{described}", r.seq);
                    assert!(
                        index.insert(id.clone(), registrations.len()).is_none(),
                        "CALL_ID {id} registered twice:\n{described}"
                    );
                    registrations.push(Registration {
                        register: r,
                        call_id: id,
                        shows: Vec::new(),
                        hides: Vec::new(),
                        finish: None,
                        records: Vec::new(),
                    });
                }
                "searchcrmentities" => lookups.push(r),
                "show" | "hide" | "finish" | "attachrecord" => {
                    let id = text(&r, "CALL_ID");
                    let Some(&i) = index.get(&id) else {
                        panic!("request {} names CALL_ID {id:?} never registered:\n{described}", r.seq);
                    };
                    let reg = &mut registrations[i];
                    match short(&r) {
                        "show" | "hide" => {
                            assert!(
                                reg.finish.is_none(),
                                "{} {} after the finish of {id}:\n{described}",
                                short(&r),
                                r.seq
                            );
                            if short(&r) == "show" {
                                reg.shows.push(r);
                            } else {
                                reg.hides.push(r);
                            }
                        }
                        "finish" => {
                            assert!(reg.finish.is_none(), "{id} finished twice:\n{described}");
                            reg.finish = Some(r);
                        }
                        _ => {
                            assert!(
                                reg.finish.is_some(),
                                "recording of {id} before its finish:\n{described}"
                            );
                            assert!(reg.records.is_empty(), "{id} got two recordings:\n{described}");
                            reg.records.push(r);
                        }
                    }
                }
                _ if r.method.starts_with("tasks.") => tasks.push(r),
                other => panic!("unexpected request {other} ({}):\n{described}", r.seq),
            }
        }
        let externals: BTreeSet<String> = registrations.iter().map(Registration::external_call_id).collect();
        assert_eq!(
            externals.len(),
            registrations.len(),
            "EXTERNAL_CALL_IDs must differ:\n{described}"
        );
        assert!(
            !externals.contains(""),
            "a register without EXTERNAL_CALL_ID:\n{described}"
        );
        for reg in &registrations {
            assert!(reg.finish.is_some(), "{} never finished:\n{described}", reg.call_id);
        }
        assert!(
            lookups.len() <= registrations.len(),
            "a missed call's owner looked up more than once:\n{described}"
        );
        let timeline = e2e.emu.card_timeline();
        for reg in &registrations {
            assert_eq!(
                timeline.visible_to(&reg.call_id),
                Vec::<u64>::new(),
                "cards of {} left open:\n{described}",
                reg.call_id
            );
        }
        let state = e2e.emu.state();
        for reg in &registrations {
            let call = state
                .call(&reg.call_id)
                .expect("the emulator keeps every registered call");
            let resent = resent_registers.get(&reg.call_id).copied().unwrap_or(0);
            assert_eq!(
                call.registrations,
                1 + resent,
                "{} registered more than once",
                reg.call_id
            );
        }
        Seen {
            registrations,
            tasks,
            described,
            resent: 0,
        }
    }

    /// The only registration (asserts there is exactly one).
    pub fn single(&self) -> &Registration {
        assert_eq!(
            self.registrations.len(),
            1,
            "one registration expected:\n{}",
            self.described
        );
        &self.registrations[0]
    }

    pub fn assert_flow(&self, reg: &Registration, expected: &[&str]) {
        assert_eq!(reg.flow(), expected, "flow of {}:\n{}", reg.call_id, self.described);
    }

    pub fn assert_duration(&self, reg: &Registration, range: RangeInclusive<u64>) {
        let d = reg.duration();
        assert!(
            range.contains(&d),
            "DURATION of {} is {d}, expected {range:?}:\n{}",
            reg.call_id,
            self.described
        );
    }
}

/// Requests carried out by the portal with the ones ringlink sent again after a restart left out (see
/// [`Seen::check_despite_faults`]).
#[allow(dead_code)] // shared by several test binaries; the fault tests use this
pub struct Resent {
    /// What remains, in order: each must be carried out once.
    pub kept: Vec<RecordedRequest>,
    /// CALL_ID → registers sent again for it.
    pub registers: HashMap<String, u32>,
    /// Requests left out.
    pub count: usize,
}

#[allow(dead_code)] // shared by several test binaries; the fault tests use this
impl Resent {
    pub fn left_out(requests: impl IntoIterator<Item = RecordedRequest>) -> Resent {
        let mut uploaded = BTreeSet::new();
        let mut registered: HashMap<String, String> = HashMap::new();
        let mut finished: HashMap<String, Value> = HashMap::new();
        let mut once = Resent {
            kept: Vec::new(),
            registers: HashMap::new(),
            count: 0,
        };
        for r in requests {
            let again = match short(&r) {
                // The same parameters for a CALL_ID already finished: the portal refuses it (ringlink takes
                // that as done) or, were it to accept it, records the same finish.
                "finish" => {
                    let id = text(&r, "CALL_ID");
                    let again = finished.get(&id) == Some(&r.params);
                    if r.is_ok() && !again {
                        finished.entry(id).or_insert_with(|| r.params.clone());
                    }
                    again
                }
                "attachrecord" => r.is_ok() && !uploaded.insert((text(&r, "CALL_ID"), text(&r, "FILENAME"))),
                "register" if r.is_ok() => {
                    let external = text(&r, "EXTERNAL_CALL_ID");
                    let again = registered.get(&external) == Some(&call_id(&r));
                    if again {
                        *once.registers.entry(call_id(&r)).or_default() += 1;
                    } else {
                        registered.insert(external, call_id(&r));
                    }
                    again
                }
                _ => false,
            };
            if again {
                once.count += 1;
            } else {
                once.kept.push(r);
            }
        }
        once
    }
}

/// Whether the portal refused `r` the way an injected fault does (rate limit or a server error).
#[allow(dead_code)] // shared by several test binaries; the fault tests use this
pub fn refused_as_fault(r: &RecordedRequest) -> bool {
    let code = r.response.get("error").and_then(Value::as_str).unwrap_or_default();
    let description = r.response.get("error_description").and_then(Value::as_str);
    (r.status == 503 && code == "QUERY_LIMIT_EXCEEDED")
        || (r.status >= 500 && code == "INTERNAL_SERVER_ERROR")
        || description == Some(b24emu::METHOD_REFUSED)
}

/// The requests as readable lines, long values (recordings in base64) cut short.
pub fn describe(requests: &[RecordedRequest]) -> String {
    fn cut(v: &Value) -> Value {
        match v {
            Value::String(s) if s.chars().count() > 120 => Value::String(format!(
                "{}… ({} chars)",
                s.chars().take(40).collect::<String>(),
                s.chars().count()
            )),
            Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), cut(v))).collect()),
            Value::Array(a) => Value::Array(a.iter().map(cut).collect()),
            other => other.clone(),
        }
    }
    requests
        .iter()
        .map(|r| {
            let result = r.response.get("result").map(cut).unwrap_or_else(|| cut(&r.response));
            format!("{} {} {} -> {}", r.seq, r.method, cut(&r.params), result)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What one user saw of one call's card: `shown`/`hidden` in order.
pub fn card_story(e2e: &E2e, user_id: u64, call_id: &str) -> Vec<&'static str> {
    e2e.emu
        .card_timeline()
        .for_user(user_id)
        .into_iter()
        .filter(|e| e.call_id == call_id)
        .map(|e| match e.action {
            CardAction::Shown => "shown",
            CardAction::Hidden => "hidden",
        })
        .collect()
}

/// Users who ever saw a card of `call_id`, ascending.
pub fn card_viewers(e2e: &E2e, call_id: &str) -> Vec<u64> {
    let mut users: Vec<u64> = e2e
        .emu
        .card_timeline()
        .for_call(call_id)
        .iter()
        .filter(|e| e.action == CardAction::Shown)
        .map(|e| e.user_id)
        .collect();
    users.sort_unstable();
    users.dedup();
    users
}

impl E2e {
    /// How many calls ringlink has followed to their end (its "call ended" log line).
    pub fn calls_ended(&self) -> usize {
        self.log().matches("call ended").count()
    }

    /// Waits until ringlink has followed `n` calls to their end, then lets the outbox drain: returns once no
    /// telephony request arrived for `quiet`.
    pub async fn wait_calls_ended(&self, n: usize, quiet: Duration) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.calls_ended() < n {
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "ringlink saw {} calls end, expected {n}; log:\n{}",
                    self.calls_ended(),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.settle(quiet).await;
    }

    /// Returns once no telephony request arrived for `quiet` (so whatever was still due has been sent).
    pub async fn settle(&self, quiet: Duration) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut seen = self.telephony().len();
        let mut since = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now_seen = self.telephony().len();
            if now_seen != seen {
                seen = now_seen;
                since = tokio::time::Instant::now();
            } else if since.elapsed() >= quiet {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("Bitrix24 requests never stopped coming:\n{}", self.describe());
            }
        }
    }
}
