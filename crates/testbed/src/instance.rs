//! One Asterisk process: its rendered configuration, directories, start-up,
//! CLI access and shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::error::{io, Error, Result};
use crate::layout::Layout;
use crate::process::{isolate, Reaper};
use crate::slot::{Slot, AMI_PORT, SIP_PORT};
use crate::template;

pub(crate) const DID: &str = "73432723033";
pub(crate) const AMI_USER: &str = "ringlink";
pub(crate) const AMI_SECRET: &str = "ringlink-test-secret";
pub(crate) const MD5_USER: &str = "md5login";
pub(crate) const MD5_SECRET: &str = "md5-test-secret";
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) struct Instance {
    pub layout: Layout,
    pub slot: Slot,
    /// Instance directory as Asterisk sees it.
    pub dir_inside: String,
    /// The same directory on the host.
    pub dir_host: PathBuf,
    child: Option<tokio::process::Child>,
    pid: Option<u32>,
}

impl Instance {
    pub fn ami_addr(&self) -> SocketAddr {
        SocketAddr::from((self.slot.pbx_ip(), AMI_PORT))
    }

    pub fn sip_addr(&self) -> SocketAddr {
        SocketAddr::from((self.slot.pbx_ip(), SIP_PORT))
    }

    fn conf_inside(&self) -> String {
        format!("{}/etc/asterisk.conf", self.dir_inside)
    }

    pub fn console_log(&self) -> PathBuf {
        self.dir_host.join("log/console.log")
    }

    /// Renders the configuration into a fresh instance directory and starts Asterisk.
    pub async fn start(layout: Layout, slot: Slot, reaper: &Reaper) -> Result<Instance> {
        let dir_inside = format!("/var/tmp/ringlink-testbed/slot-{}", slot.number);
        let dir_host = layout.host_path(&dir_inside);
        if dir_host.exists() {
            std::fs::remove_dir_all(&dir_host).map_err(io(format!("clearing {}", dir_host.display())))?;
        }
        for sub in ["etc", "db", "spool/monitor", "run", "log", "keys", "sipp"] {
            let path = dir_host.join(sub);
            std::fs::create_dir_all(&path).map_err(io(format!("creating {}", path.display())))?;
        }
        let tone = dir_host.join("sipp/tone.wav");
        std::fs::write(&tone, crate::audio::tone_wav(2)).map_err(io(format!("writing {}", tone.display())))?;
        let vars = instance_vars(&layout, &slot, &dir_inside);
        for (name, body) in template::ASTERISK_CONFIGS {
            let text = template::render(name, body, &vars)?;
            let path = dir_host.join("etc").join(name);
            std::fs::write(&path, text).map_err(io(format!("writing {}", path.display())))?;
        }
        if let Some((uid, gid)) = layout.run_as {
            chown_tree(&dir_host, uid, gid)?;
        }

        let mut instance = Instance {
            layout,
            slot,
            dir_inside,
            dir_host,
            child: None,
            pid: None,
        };
        let log = std::fs::File::create(instance.console_log()).map_err(io("creating console.log"))?;
        let log_err = log.try_clone().map_err(io("duplicating console.log handle"))?;
        let mut cmd = instance.asterisk_command();
        cmd.stdin(Stdio::null()).stdout(log).stderr(log_err).kill_on_drop(true);
        isolate(&mut cmd);
        let child = cmd.spawn().map_err(io("starting Asterisk"))?;
        instance.pid = child.id();
        reaper.track(instance.pid);
        instance.child = Some(child);
        instance.wait_ready().await?;
        Ok(instance)
    }

    fn asterisk_command(&self) -> tokio::process::Command {
        let mut cmd = self.asterisk_exec();
        // unixODBC reads this instance's driver and DSN files (written by `TestBed::enable_cel_odbc`), not the
        // chroot's shared ones.
        cmd.env("ODBCSYSINI", format!("{}/etc", self.dir_inside))
            .env("ODBCINI", format!("{}/etc/odbc.ini", self.dir_inside));
        cmd
    }

    fn asterisk_exec(&self) -> tokio::process::Command {
        let user_args = if self.layout.run_as.is_some() {
            "-U asterisk -G asterisk"
        } else {
            ""
        };
        if self.layout.chroot {
            // The mounts live in a private namespace and vanish with Asterisk.
            let mut cmd = tokio::process::Command::new("unshare");
            cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
                .arg(concat!(
                    "mount -t proc proc \"$1/proc\" && mount --rbind /dev \"$1/dev\" && ",
                    "exec chroot \"$1\" asterisk -f -C \"$2\" $3"
                ))
                .arg("sh")
                .arg(&self.layout.root)
                .arg(self.conf_inside())
                .arg(user_args);
            cmd
        } else {
            let mut cmd = tokio::process::Command::new("asterisk");
            cmd.arg("-f").arg("-C").arg(self.conf_inside());
            cmd.args(user_args.split_whitespace());
            cmd
        }
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(Error::AsteriskExited {
                        status: status.to_string(),
                        log: tail(&self.console_log(), 30),
                    });
                }
            }
            if ami_banner(self.ami_addr()).await {
                break;
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(Error::StartTimeout {
                    after: START_TIMEOUT,
                    log: tail(&self.console_log(), 30),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.cli("core waitfullybooted").await?;
        Ok(())
    }

    /// Runs one CLI command on this instance (`asterisk -rx`).
    pub async fn cli(&self, command: &str) -> Result<String> {
        let mut cmd = if self.layout.chroot {
            let mut cmd = tokio::process::Command::new("chroot");
            cmd.arg(&self.layout.root).arg("asterisk");
            cmd
        } else {
            tokio::process::Command::new("asterisk")
        };
        cmd.arg("-C").arg(self.conf_inside()).arg("-rx").arg(command);
        cmd.stdin(Stdio::null());
        let output = cmd.output().await.map_err(|e| Error::Cli {
            command: command.to_owned(),
            message: e.to_string(),
        })?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() || stdout.starts_with("Unable to connect to remote asterisk") {
            return Err(Error::Cli {
                command: command.to_owned(),
                message: format!(
                    "{}: {}{}",
                    output.status,
                    stdout.trim(),
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            });
        }
        Ok(stdout)
    }

    /// Asks Asterisk to stop, then waits; kills it if it does not.
    pub async fn stop(&mut self, reaper: &Reaper) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = self.cli("core stop now").await;
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            if let Some(pid) = self.pid.and_then(|p| i32::try_from(p).ok()) {
                crate::process::kill_group(pid);
            }
            let _ = child.wait().await;
        }
        reaper.forget(self.pid);
    }
}

pub(crate) fn instance_vars(layout: &Layout, slot: &Slot, dir_inside: &str) -> Vec<(&'static str, String)> {
    vec![
        ("INST", dir_inside.to_owned()),
        ("MODULE_DIR", layout.module_dir.clone()),
        ("VARLIB_DIR", layout.varlib_dir.clone()),
        ("DATA_DIR", layout.data_dir.clone()),
        ("AMI_PORT", AMI_PORT.to_string()),
        ("PBX_IP", slot.pbx_ip().to_string()),
        ("SIP_PORT", SIP_PORT.to_string()),
        ("CARRIER_IP", slot.carrier_ip().to_string()),
        ("CARRIER_PORT", SIP_PORT.to_string()),
        ("DID", DID.to_owned()),
        ("AMI_USER", AMI_USER.to_owned()),
        ("AMI_SECRET", AMI_SECRET.to_owned()),
        ("MD5_USER", MD5_USER.to_owned()),
        ("MD5_SECRET", MD5_SECRET.to_owned()),
    ]
}

async fn ami_banner(addr: SocketAddr) -> bool {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await.ok()?;
        line.starts_with("Asterisk Call Manager").then_some(())
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(()))
    )
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io(format!("chown {}", path.display())))?;
    if path.is_dir() {
        for entry in std::fs::read_dir(path).map_err(io(format!("listing {}", path.display())))? {
            let entry = entry.map_err(io(format!("listing {}", path.display())))?;
            chown_tree(&entry.path(), uid, gid)?;
        }
    }
    Ok(())
}

pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_vars() -> Vec<(&'static str, String)> {
        let layout = Layout {
            root: PathBuf::from("/"),
            chroot: false,
            module_dir: "/usr/lib/asterisk/modules".into(),
            data_dir: "/usr/share/asterisk".into(),
            varlib_dir: "/var/lib/asterisk".into(),
            run_as: None,
        };
        let slot = crate::slot::tests::fake_slot(9);
        instance_vars(&layout, &slot, "/var/tmp/x")
    }
}
