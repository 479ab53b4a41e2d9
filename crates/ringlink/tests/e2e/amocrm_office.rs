//! The amoCRM office of the end-to-end tests and benches: the real Asterisk test bed, the amoCRM emulator
//! (`amoemu`) and `ringlink run` with `[crm] kind = "amocrm"` between them — extensions 101, 102, 103 are the
//! account's users [`U101`], [`U102`], [`U103`], the trunk's DID goes to [`TRUNK_PIPELINE`].

#[path = "process.rs"]
pub mod process;

use std::path::PathBuf;
use std::time::Duration;

use amoemu::{Emulator, EmulatorConfig, RecordedRequest, SeedContact};
use process::{ami_section, free_port, spawn, testbed_tracker_config, Ringlink};
use serde_json::Value;
use testbed::{TestBed, CLIENT};

pub const WAIT: Duration = Duration::from_secs(60);
/// How long the emulator must see no request before the record is read.
pub const QUIET: Duration = Duration::from_secs(4);
/// amoCRM users of extensions 101, 102, 103 (the emulator's seed users), and the default responsible.
pub const U101: u64 = 8_000_002;
pub const U102: u64 = 8_000_003;
pub const DEFAULT_USER: u64 = 8_000_001;
/// The contact of the test bed's client, owned by the user of 102.
pub const CONTACT: u64 = 9_000_002;
/// The pipeline the trunk's unknown numbers go to.
pub const TRUNK_PIPELINE: u64 = 7_000_002;

/// The amoCRM user of extension 103.
pub const U103: u64 = DEFAULT_USER;

/// The account knows the client: a contact with their number, owned by [`U102`].
pub fn known_client() -> EmulatorConfig {
    let mut config = EmulatorConfig::default();
    config.contacts.push(SeedContact {
        id: CONTACT,
        name: "Клиент Тестовый".into(),
        phones: vec![CLIENT.into()],
        responsible_user_id: U102,
    });
    config
}

pub struct Office {
    pub bed: TestBed,
    pub emu: Emulator,
    pub dir: tempfile::TempDir,
    ringlink: Ringlink,
    pub web_port: u16,
}

impl Office {
    /// Starts the PBX, the account and ringlink; `extra_config` is appended to ringlink's config.
    pub async fn start(emulator: EmulatorConfig, extra_config: &str) -> Office {
        Self::start_with(emulator, "", extra_config).await
    }

    /// As [`Office::start`], with more lines (`amocrm`) in ringlink's `[amocrm]` section.
    pub async fn start_with(emulator: EmulatorConfig, amocrm: &str, extra_config: &str) -> Office {
        let bed = TestBed::start().await.expect("test bed");
        let emu = Emulator::start(emulator).await.expect("amoCRM emulator");
        let dir = tempfile::tempdir().expect("tempdir");
        let web_port = free_port();
        let mut office = Office {
            bed,
            emu,
            dir,
            ringlink: Ringlink(None),
            web_port,
        };
        office.write_config(amocrm, extra_config);
        office.start_ringlink().await;
        office
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("ringlink.log")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("ringlink.toml")
    }

    pub fn write_config(&self, amocrm: &str, extra: &str) {
        let tracker_part = testbed_tracker_config();
        let (access, refresh) = self.emu.initial_tokens();
        let emu = self.emu.config();
        let config = format!(
            r#"{ami}
[crm]
kind = "amocrm"

[amocrm]
base_url = "{base}"
client_id = "{client_id}"
client_secret = "{client_secret}"
redirect_uri = "{redirect_uri}"
access_token = "{access}"
refresh_token = "{refresh}"
{amocrm}

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
            ami = ami_section(self.bed.ami_addr(), self.bed.ami_user(), self.bed.ami_secret()),
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

    /// Starts (or restarts) ringlink and waits until it follows calls with the account's users loaded.
    pub async fn start_ringlink(&mut self) {
        let (resynced, refreshed) = (
            self.log_count("live calls resynchronised"),
            self.log_count("users directory refreshed"),
        );
        self.ringlink.kill();
        self.ringlink = Ringlink(Some(spawn(&self.config_path(), &self.log_path())));
        self.wait_log_count("live calls resynchronised", resynced + 1).await;
        self.wait_log_count("users directory refreshed", refreshed + 1).await;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn log_count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// Waits until the log has `needle` at least `n` times.
    pub async fn wait_log_count(&self, needle: &str, n: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.log_count(needle) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "ringlink never logged {needle:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until a request to `path` succeeded `n` times, then until the emulator saw nothing for [`QUIET`].
    pub async fn wait_done(&self, path: &str, n: usize) {
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
    pub fn ok(&self, path: &str) -> Vec<RecordedRequest> {
        self.emu
            .requests_to(path)
            .into_iter()
            .filter(RecordedRequest::is_ok)
            .collect()
    }

    /// Every request the account saw, one line each.
    pub fn describe(&self) -> String {
        self.emu
            .requests()
            .iter()
            .map(|r| format!("{} {} {} {} → {}", r.seq, r.method, r.path, r.body, r.status))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The one call item ringlink sent (exactly one successful `/api/v4/calls` request, with one item).
    pub fn the_call(&self) -> Value {
        let calls = self.ok("/api/v4/calls");
        assert_eq!(calls.len(), 1, "one call recorded:\n{}", self.describe());
        let items = calls[0].body.as_array().cloned().unwrap_or_default();
        assert_eq!(items.len(), 1, "one item:\n{}", self.describe());
        items[0].clone()
    }

    /// Every call item amoCRM accepted, in order.
    pub fn calls(&self) -> Vec<Value> {
        self.ok("/api/v4/calls")
            .iter()
            .flat_map(|r| r.body.as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// The users each accepted popup went to, in order; every popup names its users (none goes to everyone).
    pub fn popup_users(&self) -> Vec<u64> {
        self.emu
            .popups()
            .into_iter()
            .flat_map(|p| {
                let users = p.users.clone();
                assert!(users.is_some(), "a popup to every user: {p:?}");
                users.unwrap_or_default()
            })
            .collect()
    }

    /// Every call item amoCRM may have recorded (all but the ones it refused with a 4xx, such as an unknown
    /// number's 400 or a 429) has a distinct `uniq`: none was recorded twice.
    pub fn assert_nothing_twice(&self) {
        let mut uniqs: Vec<String> = self
            .emu
            .requests_to("/api/v4/calls")
            .iter()
            .filter(|r| !(400..500).contains(&r.status))
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

    pub async fn stop(self) {
        drop(self.ringlink);
        self.emu.shutdown().await;
        self.bed.stop().await.expect("stop bed");
    }
}

pub fn duration_of(call: &Value) -> u64 {
    call["duration"].as_u64().unwrap_or(u64::MAX)
}
