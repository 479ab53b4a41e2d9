//! SIPp processes playing desk phones and the carrier.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use crate::error::{io, Error, Result};
use crate::process::{isolate, Reaper};

/// What the SIPp scenario logged (`OUTCOME ...` lines), in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An incoming call started ringing on this side.
    Ringing,
    /// The call was answered (by this side, or by the far end for a caller).
    Answered,
    /// The caller cancelled before an answer.
    Cancelled,
    /// The call ended with this final SIP status (sent or received).
    Rejected(u16),
    /// The other side hung up the answered call.
    HangupRemote,
    /// This side hung up the answered call.
    HangupLocal,
}

impl Outcome {
    fn parse(text: &str) -> Option<Outcome> {
        let rest = text.split("OUTCOME ").nth(1)?.trim();
        Some(match rest {
            "ringing" => Outcome::Ringing,
            "answered" => Outcome::Answered,
            "cancelled" => Outcome::Cancelled,
            "hangup remote" => Outcome::HangupRemote,
            "hangup local" => Outcome::HangupLocal,
            other => Outcome::Rejected(other.strip_prefix("rejected ")?.trim().parse().ok()?),
        })
    }
}

pub(crate) struct SippSpec<'a> {
    pub name: String,
    pub xml: String,
    pub local: (Ipv4Addr, u16),
    pub media_port: u16,
    pub remote: SocketAddr,
    /// `-m`: how many calls before SIPp exits (None = until killed).
    pub max_calls: Option<u32>,
    pub work_dir: &'a Path,
}

/// A running SIPp process.
#[derive(Debug)]
pub struct SippProcess {
    name: String,
    child: tokio::process::Child,
    pid: Option<u32>,
    log_file: PathBuf,
    error_file: PathBuf,
    reaper: Reaper,
}

impl SippProcess {
    pub(crate) fn spawn(spec: SippSpec<'_>, reaper: &Reaper) -> Result<SippProcess> {
        let base = spec.work_dir.join(&spec.name);
        let scenario = base.with_extension("xml");
        std::fs::write(&scenario, &spec.xml).map_err(io(format!("writing {}", scenario.display())))?;
        let log_file = base.with_extension("log");
        let error_file = base.with_extension("err");
        let message_file = base.with_extension("msg");
        let mut cmd = tokio::process::Command::new("sipp");
        cmd.arg("-sf")
            .arg(&scenario)
            .args(["-i", &spec.local.0.to_string()])
            .args(["-p", &spec.local.1.to_string()])
            .args(["-mp", &spec.media_port.to_string()])
            .arg("-nostdin")
            .arg("-trace_logs")
            .arg("-log_file")
            .arg(&log_file)
            .arg("-trace_err")
            .arg("-error_file")
            .arg(&error_file)
            .arg("-trace_msg")
            .arg("-message_file")
            .arg(&message_file);
        if let Some(m) = spec.max_calls {
            cmd.args(["-m", &m.to_string()]);
        }
        cmd.arg(spec.remote.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        isolate(&mut cmd);
        let child = cmd.spawn().map_err(|e| Error::Sipp {
            name: spec.name.clone(),
            message: format!("cannot start sipp (install sip-tester: testbed/install-host-deps.sh): {e}"),
        })?;
        let pid = child.id();
        reaper.track(pid);
        Ok(SippProcess {
            name: spec.name,
            child,
            pid,
            log_file,
            error_file,
            reaper: reaper.clone(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Outcomes logged so far.
    pub fn outcomes(&self) -> Vec<Outcome> {
        std::fs::read_to_string(&self.log_file)
            .unwrap_or_default()
            .lines()
            .filter_map(Outcome::parse)
            .collect()
    }

    /// Waits for SIPp to exit; a non-zero exit (a failed call) is an error
    /// that quotes SIPp's error log.
    pub async fn wait(&mut self, timeout: Duration) -> Result<Vec<Outcome>> {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .map_err(|_| Error::Timeout {
                what: format!("SIPp {} to finish", self.name),
                after: timeout,
            })?
            .map_err(io(format!("waiting for sipp {}", self.name)))?;
        self.reaper.forget(self.pid);
        self.check(status)?;
        Ok(self.outcomes())
    }

    fn check(&self, status: ExitStatus) -> Result<()> {
        if status.success() {
            return Ok(());
        }
        let errors = std::fs::read_to_string(&self.error_file).unwrap_or_default();
        let interesting: Vec<&str> = errors
            .lines()
            .filter(|l| !l.contains("receive timeout") && !l.trim().is_empty())
            .rev()
            .take(8)
            .collect();
        Err(Error::Sipp {
            name: self.name.clone(),
            message: format!(
                "{status}; errors: {}",
                interesting.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ),
        })
    }

    /// Kills the process (phones run until the bed stops them).
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        self.reaper.forget(self.pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_lines_parse() {
        assert_eq!(Outcome::parse("OUTCOME answered"), Some(Outcome::Answered));
        assert_eq!(
            Outcome::parse("2026-01-01 OUTCOME rejected 486"),
            Some(Outcome::Rejected(486))
        );
        assert_eq!(Outcome::parse("OUTCOME hangup remote"), Some(Outcome::HangupRemote));
        assert_eq!(Outcome::parse("OUTCOME rejected x"), None);
        assert_eq!(Outcome::parse("no outcome"), None);
    }
}
