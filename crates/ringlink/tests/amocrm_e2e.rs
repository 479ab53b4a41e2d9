//! Calls on a real Asterisk land in an (emulated) amoCRM account: `ringlink run` with `[crm] kind = "amocrm"`
//! between the test bed and `amoemu`. Every test checks that each call is recorded exactly once (amoCRM's
//! `/api/v4/calls` does not deduplicate) for the right employee, with the right status and duration.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use amoemu::{Emulator, EmulatorConfig, RecordedRequest, SeedContact};
use serde_json::{json, Value};
use testbed::{scenarios, TestBed, CLIENT};

const WAIT: Duration = Duration::from_secs(60);
/// How long the emulator must see no request before the record is read.
const QUIET: Duration = Duration::from_secs(4);
/// amoCRM users of extensions 101, 102, 103 (the emulator's seed users), and the default responsible.
const U101: u64 = 8_000_002;
const U102: u64 = 8_000_003;
const DEFAULT_USER: u64 = 8_000_001;
/// The contact of the test bed's client, owned by the user of 102.
const CONTACT: u64 = 9_000_002;
/// The pipeline the trunk's unknown numbers go to.
const TRUNK_PIPELINE: u64 = 7_000_002;

/// The account knows the client: a contact with their number, owned by [`U102`].
fn known_client() -> EmulatorConfig {
    let mut config = EmulatorConfig::default();
    config.contacts.push(SeedContact {
        id: CONTACT,
        name: "Клиент Тестовый".into(),
        phones: vec![CLIENT.into()],
        responsible_user_id: U102,
    });
    config
}

struct Office {
    bed: TestBed,
    emu: Emulator,
    dir: tempfile::TempDir,
    ringlink: Ringlink,
    web_port: u16,
}

/// The ringlink process; killed when dropped, so a failing test leaves nothing running.
struct Ringlink(Option<Child>);

impl Drop for Ringlink {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Office {
    async fn start(emulator: EmulatorConfig, extra_config: &str) -> Office {
        let bed = TestBed::start().await.expect("test bed");
        let emu = Emulator::start(emulator).await.expect("amoCRM emulator");
        let dir = tempfile::tempdir().expect("tempdir");
        let web_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut office = Office {
            bed,
            emu,
            dir,
            ringlink: Ringlink(None),
            web_port,
        };
        office.write_config(extra_config);
        office.start_ringlink().await;
        office
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("ringlink.log")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("ringlink.toml")
    }

    fn write_config(&self, extra: &str) {
        let testbed_config =
            std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testbed/ringlink.toml"))
                .expect("testbed/ringlink.toml");
        let tracker_part = &testbed_config[testbed_config.find("[tracker]").expect("[tracker] section")..];
        let (access, refresh) = self.emu.initial_tokens();
        let emu = self.emu.config();
        let config = format!(
            r#"[ami]
address = "{ami}"
username = "{user}"
secret = "{secret}"
ping_interval_secs = 5
ping_timeout_secs = 5

[crm]
kind = "amocrm"

[amocrm]
base_url = "{base}"
client_id = "{client_id}"
client_secret = "{client_secret}"
redirect_uri = "{redirect_uri}"
access_token = "{access}"
refresh_token = "{refresh}"

[amocrm.extensions]
"101" = {U101}
"102" = {U102}
"103" = {DEFAULT_USER}

[amocrm.pipelines]
"73432723033" = {TRUNK_PIPELINE}

[store]
path = "{store}"

[recordings]
rewrite = [["/", "{root}/"]]
settle_secs = 0.5
link_base_url = "http://127.0.0.1:{web}"

[web]
listen = "127.0.0.1:{web}"

[engine.missed]
default_user = {DEFAULT_USER}

{extra}

{tracker_part}
"#,
            ami = self.bed.ami_addr(),
            user = self.bed.ami_user(),
            secret = self.bed.ami_secret(),
            base = self.emu.base_url(),
            client_id = emu.client_id,
            client_secret = emu.client_secret,
            redirect_uri = emu.redirect_uri,
            store = self.dir.path().join("ringlink.db").display(),
            root = self.bed.host_path("/").display().to_string().trim_end_matches('/'),
            web = self.web_port,
        );
        std::fs::write(self.config_path(), config).expect("write config");
    }

    async fn start_ringlink(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_ringlink"))
            .arg("run")
            .arg("--config")
            .arg(self.config_path())
            .env("RINGLINK_LOG", "info,ringlink=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn ringlink");
        self.ringlink = Ringlink(Some(child));
        self.wait_log("live calls resynchronised").await;
        self.wait_log("users directory refreshed").await;
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    async fn wait_log(&self, needle: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.log().contains(needle) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "ringlink never logged {needle:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until a request to `path` succeeded `n` times, then until the emulator saw nothing for [`QUIET`].
    async fn wait_done(&self, path: &str, n: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.ok(path).len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{n} × {path} never succeeded:\n{}\nlog:\n{}",
                self.describe(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut seen = self.emu.requests().len();
        let mut since = tokio::time::Instant::now();
        while since.elapsed() < QUIET {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = self.emu.requests().len();
            if now != seen {
                (seen, since) = (now, tokio::time::Instant::now());
            }
        }
    }

    /// The successful requests to `path`.
    fn ok(&self, path: &str) -> Vec<RecordedRequest> {
        self.emu
            .requests_to(path)
            .into_iter()
            .filter(RecordedRequest::is_ok)
            .collect()
    }

    /// Every request the account saw, one line each.
    fn describe(&self) -> String {
        self.emu
            .requests()
            .iter()
            .map(|r| format!("{} {} {} {} → {}", r.seq, r.method, r.path, r.body, r.status))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The one call item ringlink sent (exactly one successful `/api/v4/calls` request, with one item).
    fn the_call(&self) -> Value {
        let calls = self.ok("/api/v4/calls");
        assert_eq!(calls.len(), 1, "one call recorded:\n{}", self.describe());
        let items = calls[0].body.as_array().cloned().unwrap_or_default();
        assert_eq!(items.len(), 1, "one item:\n{}", self.describe());
        items[0].clone()
    }

    /// Every call item ringlink sent (successfully or not) has a distinct `uniq`: none was sent twice.
    fn assert_nothing_twice(&self) {
        let mut uniqs: Vec<String> = self
            .emu
            .requests_to("/api/v4/calls")
            .iter()
            .filter(|r| r.status != 429)
            .flat_map(|r| r.body.as_array().cloned().unwrap_or_default())
            .map(|item| item["uniq"].as_str().unwrap_or_default().to_owned())
            .collect();
        let all = uniqs.len();
        uniqs.sort();
        uniqs.dedup();
        assert_eq!(uniqs.len(), all, "a call was sent twice:\n{}", self.describe());
        assert_eq!(
            self.emu.state().calls.len(),
            self.ok("/api/v4/calls").len(),
            "the account holds each call once"
        );
    }

    async fn stop(self) {
        drop(self.ringlink);
        self.emu.shutdown().await;
        self.bed.stop().await.expect("stop bed");
    }
}

fn duration_of(call: &Value) -> u64 {
    call["duration"].as_u64().unwrap_or(u64::MAX)
}

/// S1: a known client calls the DID, 101 rings and answers, they talk ≈5 s. amoCRM: the popup to 101's user
/// while it rings, then one inbound call (status 4) for that user with the talk time and the recording's
/// signed link, on the client's contact.
#[tokio::test]
async fn s1_answered_incoming_is_one_call_for_who_answered() {
    let office = Office::start(known_client(), "").await;
    scenarios::play(&office.bed, "s1").await.expect("play S1");
    office.wait_done("/api/v4/calls", 1).await;
    let popups = office.emu.popups();
    assert_eq!(popups.len(), 1, "{popups:?}");
    assert_eq!(popups[0].users, Some(vec![U101]));
    assert_eq!(popups[0].contact_id, Some(CONTACT));
    let call = office.the_call();
    assert_eq!(call["direction"], json!("inbound"));
    assert_eq!(call["call_status"], json!(4));
    assert_eq!(call["responsible_user_id"], json!(U101));
    assert_eq!(call["created_by"], json!(U101));
    assert!((4..=7).contains(&duration_of(&call)), "talk ≈5 s: {call}");
    assert!(call["phone"].as_str().unwrap_or_default().ends_with("9001234567"));
    let link = call["link"].as_str().unwrap_or_default();
    assert!(
        link.starts_with(&format!("http://127.0.0.1:{}/records/", office.web_port)),
        "the recording's signed link: {call}"
    );
    let stored = office.emu.state().calls;
    assert_eq!(stored.len(), 1);
    assert!(office.ok("/api/v4/leads/unsorted/sip").is_empty(), "a known number");
    office.assert_nothing_twice();
    office.stop().await;
}

/// S2 with the missed-call task: 101 rings 20 s, nobody answers. amoCRM: the popup, then one inbound call with
/// status 6 for the contact's owner (the chain's first mode), and one "call" task for them on the contact.
#[tokio::test]
async fn s2_missed_incoming_is_status_6_for_the_owner_with_a_call_task() {
    let office = Office::start(known_client(), "[engine.missed.task]\nenabled = true\n").await;
    scenarios::play(&office.bed, "s2").await.expect("play S2");
    office.wait_done("/api/v4/tasks", 1).await;
    assert_eq!(office.emu.popups().len(), 1);
    let call = office.the_call();
    assert_eq!(call["direction"], json!("inbound"));
    assert_eq!(call["call_status"], json!(6));
    assert_eq!(call["duration"], json!(0));
    assert_eq!(call["responsible_user_id"], json!(U102), "the contact's owner: {call}");
    let tasks = office.emu.state().tasks;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    let task = &tasks[0].fields;
    assert_eq!(task["task_type_id"], json!(1));
    assert_eq!(task["responsible_user_id"], json!(U102));
    assert_eq!(task["entity_id"], json!(CONTACT), "{task}");
    office.assert_nothing_twice();
    office.stop().await;
}

/// S7: 101 calls the known client through the trunk; they talk ≈5 s. amoCRM: one outbound call, status 4, for
/// 101's user.
#[tokio::test]
async fn s7_outgoing_is_one_outbound_call_of_the_caller() {
    let office = Office::start(known_client(), "").await;
    scenarios::play(&office.bed, "s7").await.expect("play S7");
    office.wait_done("/api/v4/calls", 1).await;
    let call = office.the_call();
    assert_eq!(call["direction"], json!("outbound"));
    assert_eq!(call["call_status"], json!(4));
    assert_eq!(call["responsible_user_id"], json!(U101));
    assert!((4..=7).contains(&duration_of(&call)), "talk ≈5 s: {call}");
    office.assert_nothing_twice();
    office.stop().await;
}

/// An unknown number calls (S1 with an account that has no contact for it): amoCRM refuses the call ("Entity
/// not found"), so it goes once into Unsorted, in the pipeline mapped from the trunk, with its call event.
#[tokio::test]
async fn an_unknown_number_goes_once_into_unsorted_in_the_trunks_pipeline() {
    let office = Office::start(EmulatorConfig::default(), "").await;
    scenarios::play(&office.bed, "s1").await.expect("play S1");
    office.wait_done("/api/v4/leads/unsorted/sip", 1).await;
    let refused = office.emu.requests_to("/api/v4/calls");
    assert_eq!(refused.len(), 1, "{}", office.describe());
    assert_eq!(refused[0].status, 400);
    let entries = office.ok("/api/v4/leads/unsorted/sip");
    assert_eq!(entries.len(), 1, "{}", office.describe());
    let entry = &entries[0].body[0];
    assert_eq!(entry["pipeline_id"], json!(TRUNK_PIPELINE));
    assert_eq!(entry["metadata"]["is_call_event_needed"], json!(true));
    assert_eq!(entry["metadata"]["call_responsible"], json!(U101));
    assert!((4..=7).contains(&entry["metadata"]["duration"].as_u64().unwrap_or(0)));
    let unsorted = office.emu.state().unsorted;
    assert_eq!(unsorted.len(), 1, "{unsorted:?}");
    office.stop().await;
}
