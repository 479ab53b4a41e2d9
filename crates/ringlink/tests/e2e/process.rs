//! The ringlink process of an end-to-end test, whatever CRM it talks to: the test bed's `[tracker]` settings, a
//! free port, `ringlink run` with its output in a log file, killed when the test ends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The `[tracker]` part of `testbed/ringlink.toml` (to the end of the file): how the test bed's dialplan is read.
pub fn testbed_tracker_config() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testbed/ringlink.toml");
    let config = std::fs::read_to_string(&path).expect("testbed/ringlink.toml");
    let start = config.find("[tracker]").expect("[tracker] section");
    config[start..].to_owned()
}

/// ringlink's `[ami]` section: the PBX at `address`, pinged every 5 s.
pub fn ami_section(address: impl std::fmt::Display, username: &str, secret: &str) -> String {
    format!(
        "[ami]\naddress = \"{address}\"\nusername = \"{username}\"\nsecret = \"{secret}\"\n\
         ping_interval_secs = 5\nping_timeout_secs = 5\n"
    )
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `ringlink run --config <config>`, its output appended to `log`.
pub fn spawn(config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    Command::new(env!("CARGO_BIN_EXE_ringlink"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("RINGLINK_LOG", "info,ringlink=debug")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn ringlink")
}

/// The ringlink process; killed when dropped, so a failing test leaves nothing running.
pub struct Ringlink(pub Option<Child>);

impl Ringlink {
    /// The exit status once the process ended by itself within `timeout` (`log`: its log, for the panic).
    #[allow(dead_code)] // shared by several test binaries; the PostgreSQL one uses this
    pub async fn wait_exit(&mut self, log: &Path, timeout: Duration) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        let child = self.0.as_mut().expect("a running ringlink");
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if tokio::time::Instant::now() >= deadline {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                panic!("{} did not exit; log:\n{text}", log.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The exit status if the process ended by itself (it is then forgotten).
    #[allow(dead_code)] // shared by several test binaries; the soak uses this
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.0.as_mut()?.try_wait().ok()??;
        self.0 = None;
        Some(status)
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Ringlink {
    fn drop(&mut self) {
        self.kill();
    }
}
