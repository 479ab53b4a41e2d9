//! End-to-end harness: the real Asterisk test bed, the Bitrix24 emulator, and the real `ringlink` binary
//! between them, configured like a customer's office (trunk `carrier` with DID 73432723033, users 1/2/3 on
//! extensions 101/102/103, user 9 the default responsible).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use b24emu::{Emulator, EmulatorConfig, Fault, RecordedRequest};
use serde_json::Value;
use testbed::TestBed;

#[path = "process.rs"]
mod process;
pub use process::free_port;
use process::{ami_section, spawn, testbed_tracker_config, Ringlink};

pub const WAIT: Duration = Duration::from_secs(60);
pub const CLIENT_BASE: &str = "9001234567";
/// What ringlink logs once it follows the PBX (after each start).
const RESYNCHRONISED: &str = "live calls resynchronised";

pub struct E2e {
    pub bed: TestBed,
    pub emu: Emulator,
    pub dir: tempfile::TempDir,
    ringlink: Ringlink,
    extra_config: String,
    /// Where ringlink reaches AMI instead of the PBX itself (a relay a test can cut).
    ami_via: Option<std::net::SocketAddr>,
    /// Authenticate as a Bitrix24 local application (OAuth tokens) instead of an incoming webhook.
    app_auth: bool,
    /// `[engine.missed] default_user`.
    default_user: Option<u64>,
    /// The admin UI's port on 127.0.0.1 (a free one, so that parallel tests do not collide on 8077).
    pub web_port: u16,
    /// The body of the `[store]` section instead of the SQLite file.
    store: Option<String>,
}

/// How [`E2e::start_custom`] sets the office up.
pub struct Setup {
    pub emulator: EmulatorConfig,
    /// Appended to ringlink's config.
    pub extra_config: String,
    /// A fault the emulator has from before ringlink's first request.
    pub fault: Option<Fault>,
    /// The default responsible (`None`: nobody).
    pub default_user: Option<u64>,
    /// The body of ringlink's `[store]` section (`None`: a SQLite file in the test's directory).
    pub store: Option<String>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            emulator: EmulatorConfig::default(),
            extra_config: String::new(),
            fault: None,
            default_user: Some(9),
            store: None,
        }
    }
}

impl E2e {
    /// Starts the PBX and the emulator; `extra_config` is appended to ringlink's config (e.g. `[engine]` keys).
    pub async fn start(extra_config: &str) -> E2e {
        Self::start_with(EmulatorConfig::default(), extra_config).await
    }

    pub async fn start_with(emu_config: EmulatorConfig, extra_config: &str) -> E2e {
        Self::launch(emu_config, extra_config, false).await
    }

    /// As [`E2e::start_with`], with ringlink authenticating as a local application (OAuth).
    #[allow(dead_code)] // shared by several test binaries; the OAuth one uses this
    pub async fn start_as_app(emu_config: EmulatorConfig, extra_config: &str) -> E2e {
        Self::launch(emu_config, extra_config, true).await
    }

    async fn launch(emu_config: EmulatorConfig, extra_config: &str, app_auth: bool) -> E2e {
        let setup = Setup {
            emulator: emu_config,
            extra_config: extra_config.to_owned(),
            ..Setup::default()
        };
        Self::launch_with(setup, app_auth).await
    }

    /// Starts the PBX, the emulator (with `setup.fault` already on) and ringlink.
    #[allow(dead_code)] // shared by several test binaries; the fault tests use this
    pub async fn start_custom(setup: Setup) -> E2e {
        Self::launch_with(setup, false).await
    }

    async fn launch_with(setup: Setup, app_auth: bool) -> E2e {
        let bed = TestBed::start().await.expect("test bed");
        let emu = Emulator::start(setup.emulator).await.expect("emulator");
        if let Some(fault) = setup.fault {
            emu.set_fault(fault);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut e2e = E2e {
            bed,
            emu,
            dir,
            ringlink: Ringlink(None),
            extra_config: setup.extra_config,
            ami_via: None,
            app_auth,
            default_user: setup.default_user,
            web_port: free_port(),
            store: setup.store,
        };
        e2e.start_ringlink().await;
        e2e
    }

    /// The admin UI's base URL.
    #[allow(dead_code)] // shared by several test binaries; the web UI one uses this
    pub fn web_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.web_port)
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("ringlink.toml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("ringlink.log")
    }

    fn write_config(&self) {
        // Keep the test bed's [tracker] settings; replace the [ami] section with this instance's.
        let tracker_part = testbed_tracker_config();
        let chroot_root = self.bed.host_path("/");
        let config = format!(
            r#"{ami}
[bitrix24]
{bitrix24}

[store]
{store}

[recordings]
rewrite = [["/", "{root}/"]]
settle_secs = 0.5

{missed}

{web}

{extra}

{tracker_part}
"#,
            web = if self.extra_config.contains("[web]") {
                String::new()
            } else {
                format!("[web]\nlisten = \"127.0.0.1:{}\"", self.web_port)
            },
            ami = ami_section(
                self.ami_via.unwrap_or_else(|| self.bed.ami_addr()),
                self.bed.ami_user(),
                self.bed.ami_secret()
            ),
            bitrix24 = self.bitrix24_section(),
            store = self
                .store
                .clone()
                .unwrap_or_else(|| format!("path = \"{}\"", self.dir.path().join("ringlink.db").display())),
            root = chroot_root.display().to_string().trim_end_matches('/'),
            extra = self.extra_config,
            missed = self
                .default_user
                .map(|u| format!("[engine.missed]\ndefault_user = {u}"))
                .unwrap_or_default(),
        );
        std::fs::write(self.config_path(), config).expect("write config");
    }

    fn bitrix24_section(&self) -> String {
        if !self.app_auth {
            return format!("webhook_url = \"{}\"", self.emu.webhook_url());
        }
        let app = self.emu.app_credentials();
        format!(
            "portal_url = \"{}\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\naccess_token = \"{}\"\n\
             refresh_token = \"{}\"\noauth_url = \"{}\"",
            self.emu.base_url(),
            app.client_id,
            app.client_secret,
            app.access_token,
            app.refresh_token,
            self.emu.oauth_url()
        )
    }

    /// Starts (or restarts) the ringlink process and waits until it follows calls (the new process's line: the
    /// log keeps the earlier runs').
    pub async fn start_ringlink(&mut self) {
        let before = self.log().matches(RESYNCHRONISED).count();
        self.spawn_ringlink();
        self.wait_log_after(RESYNCHRONISED, before, WAIT).await;
    }

    /// Starts (or restarts) the ringlink process without waiting for it.
    pub fn spawn_ringlink(&mut self) {
        self.write_config();
        self.ringlink = Ringlink(Some(spawn(&self.config_path(), &self.log_path())));
    }

    /// SIGKILLs ringlink (no chance to flush or say goodbye).
    /// Replaces what is appended to ringlink's config (used from the next [`E2e::start_ringlink`]).
    #[allow(dead_code)] // shared by several test binaries; the CEL recovery one uses this
    pub fn set_extra_config(&mut self, extra: &str) {
        self.extra_config = extra.to_owned();
    }

    pub fn kill_ringlink(&mut self) {
        self.ringlink.kill();
    }

    /// The exit status if ringlink ended by itself since it was started.
    #[allow(dead_code)] // shared by several test binaries; the soak uses this
    pub fn ringlink_exited(&mut self) -> Option<std::process::ExitStatus> {
        self.ringlink.exited()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Waits until the log has `needle` (counting occurrences after the ones already there is up to callers).
    pub async fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("ringlink never logged {needle:?}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The telephony requests of calls the emulator answered, in order (batch sub-commands included, batches
    /// not; the external lines' sync at start left out).
    pub fn telephony(&self) -> Vec<RecordedRequest> {
        self.emu
            .requests()
            .into_iter()
            .filter(|r| r.method.starts_with("telephony.") || r.method.starts_with("tasks."))
            .filter(|r| !r.method.starts_with("telephony.externalline."))
            .collect()
    }

    /// Waits until `n` requests of `method` were answered successfully.
    pub async fn wait_requests(&self, method: &str, n: usize, timeout: Duration) -> Vec<RecordedRequest> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let found: Vec<_> = self
                .emu
                .requests_for(method)
                .into_iter()
                .filter(RecordedRequest::is_ok)
                .collect();
            if found.len() >= n {
                return found;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "expected {n} successful {method}, got {}; requests:\n{}\nlog:\n{}",
                    found.len(),
                    self.describe(),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The calls registered so far: each EXTERNAL_CALL_ID of a successful register with the CALL_IDs Bitrix24
    /// answered for it. A register sent again after a restart or a takeover (its first sending never recorded as
    /// done) carries the same EXTERNAL_CALL_ID and gets the same CALL_ID back: still one call with one CALL_ID.
    #[allow(dead_code)] // shared by several test binaries; the PostgreSQL and soak ones use this
    pub fn registered_calls(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut calls: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for register in self
            .emu
            .requests_for("telephony.externalcall.register")
            .iter()
            .filter(|r| r.is_ok())
        {
            calls
                .entry(text(register, "EXTERNAL_CALL_ID"))
                .or_default()
                .insert(call_id(register));
        }
        calls
    }

    /// Waits until `n` calls are registered (distinct EXTERNAL_CALL_IDs, however often each was sent).
    #[allow(dead_code)] // shared by several test binaries; the PostgreSQL ones use this
    pub async fn wait_registered_calls(&self, n: usize, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.registered_calls().len() < n {
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "expected {n} registered calls, got {}; requests:\n{}\nlog:\n{}",
                    self.registered_calls().len(),
                    self.describe(),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The telephony sequence as readable lines, for assertion messages.
    pub fn describe(&self) -> String {
        self.telephony()
            .iter()
            .map(|r| format!("{} {} {} -> {}", r.seq, r.method, r.params, r.response))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub async fn stop(mut self) {
        self.kill_ringlink();
        self.emu.shutdown().await;
        self.bed.stop().await.expect("stop bed");
    }
}

/// One more ringlink process of the same office (e.g. a standby), with its own admin UI port and log.
#[allow(dead_code)] // shared by several test binaries; the PostgreSQL one uses this
pub struct Instance {
    ringlink: Ringlink,
    pub log: PathBuf,
    pub web_port: u16,
}

#[allow(dead_code)]
impl Instance {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has `needle` more than `before` times.
    pub async fn wait_log_after(&self, needle: &str, before: usize, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.log().matches(needle).count() <= before {
            if tokio::time::Instant::now() >= deadline {
                panic!("{} never logged {needle:?}; log:\n{}", self.log.display(), self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.ringlink.0.as_ref().map(Child::id)
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.ringlink.kill();
    }

    /// The exit status once the process ended by itself within `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        self.ringlink.wait_exit(&self.log, timeout).await
    }
}

/// A parameter as text, whether Bitrix24 got it as a string or a number.
pub fn text(r: &RecordedRequest, name: &str) -> String {
    match r.param(name) {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => String::new(),
    }
}

/// The CALL_ID a register answered.
pub fn call_id(register: &RecordedRequest) -> String {
    register
        .response
        .get("result")
        .and_then(|r| r.get("CALL_ID"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Only the methods of the telephony sequence, shortened (`register`, `show`, …).
pub fn methods(requests: &[RecordedRequest]) -> Vec<String> {
    requests
        .iter()
        .map(|r| r.method.rsplit('.').next().unwrap_or_default().to_owned())
        .collect()
}

// Shared by several test binaries; each uses a part of it.
#[allow(dead_code)]
impl E2e {
    /// From the next (re)start on, ringlink reaches AMI through `addr` (e.g. a relay the test controls).
    pub fn set_ami_via(&mut self, addr: std::net::SocketAddr) {
        self.ami_via = Some(addr);
    }

    /// Another ringlink process with this office's config (as last written), named `name`: its own admin UI port
    /// and log file in the test's directory.
    pub fn spawn_instance(&self, name: &str) -> Instance {
        self.spawn_instance_replacing(name, "", "")
    }

    /// As [`E2e::spawn_instance`], with `from` replaced by `to` in the config (e.g. the store's URL, when this
    /// office's ringlink reaches the database through a relay and the other instance does not).
    pub fn spawn_instance_replacing(&self, name: &str, from: &str, to: &str) -> Instance {
        let web_port = free_port();
        let mut config = std::fs::read_to_string(self.config_path())
            .expect("the config")
            .replace(
                &format!("listen = \"127.0.0.1:{}\"", self.web_port),
                &format!("listen = \"127.0.0.1:{web_port}\""),
            );
        if !from.is_empty() {
            assert!(config.contains(from), "the config has no {from:?}:\n{config}");
            config = config.replace(from, to);
        }
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, config).expect("write the instance's config");
        let log = self.dir.path().join(format!("{name}.log"));
        Instance {
            ringlink: Ringlink(Some(spawn(&path, &log))),
            log,
            web_port,
        }
    }

    /// The exit status of the office's ringlink once it ended by itself within `timeout`.
    pub async fn wait_ringlink_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let log = self.log_path();
        self.ringlink.wait_exit(&log, timeout).await
    }

    /// The running ringlink's process id (for /proc readings).
    pub fn ringlink_pid(&self) -> Option<u32> {
        self.ringlink.0.as_ref().map(Child::id)
    }

    /// Waits until the log has `needle` more than `before` times.
    pub async fn wait_log_after(&self, needle: &str, before: usize, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.log().matches(needle).count() > before {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("ringlink never logged {needle:?} again; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// ringlink's `[listener]` and `[click_to_call]` for a portal whose application token is `token`: the listener
/// on `port` of 127.0.0.1 (its own public URL), `mode` the extra lines of `[click_to_call]`, the employee's phone
/// rung for at most 6 s.
#[allow(dead_code)] // shared by several test binaries; the click-to-call ones use this
pub fn click_to_call_config(port: u16, token: &str, mode: &str) -> String {
    format!(
        r#"[listener]
bind = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"

[click_to_call]
application_token = "{token}"
{mode}
[click_to_call.dial]
timeout_secs = 6
"#
    )
}

/// ringlink's `[listener]` and `[autodistribution]`: HTTP on `http`, FastAGI on `agi` (both on 127.0.0.1), the
/// requests' `token`; `listener_more` extra lines of `[listener]`, `more` appended.
#[allow(dead_code)] // shared by several test binaries; the auto-distribution ones use this
pub fn autodistribution_config(http: u16, agi: u16, token: &str, listener_more: &str, more: &str) -> String {
    format!(
        r#"[listener]
bind = "127.0.0.1:{http}"
{listener_more}
[autodistribution]
token = "{token}"
agi_bind = "127.0.0.1:{agi}"

{more}
"#
    )
}
