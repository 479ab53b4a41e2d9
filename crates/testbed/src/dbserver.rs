//! What the throwaway database servers of the tests share: finding the server's programs, a temporary
//! directory, a free port, the process group, and stopping.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::error::{io, Error, Result};

/// SIGTERM, then SIGKILL to the process group if it has not exited within 10 s.
pub(crate) fn stop(child: &mut Child) {
    let Ok(pid) = i32::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) on the child's own pid.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    crate::process::kill_group(pid);
    let _ = child.wait();
}

/// Own process group, and SIGKILL if the test process dies first.
pub(crate) fn own_group(cmd: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    cmd.process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no Rust state.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// The first of `names` found on PATH or in /usr/sbin, /usr/bin.
pub(crate) fn find(names: &[&str]) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin".into(), "/usr/bin".into()]);
    let dirs: Vec<PathBuf> = dirs.collect();
    for name in names {
        for dir in &dirs {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(server(format!(
        "{} not found: install the database server (testbed/install-host-deps.sh does)",
        names.join(" / ")
    )))
}

/// A fresh directory under the system's temporary directory.
pub(crate) fn temp_dir() -> Result<PathBuf> {
    let base = std::env::temp_dir();
    for n in 0..1000u32 {
        let dir = base.join(format!("ringlink-db-{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(format!("creating {}", dir.display()))(e)),
        }
    }
    Err(server(format!(
        "no free temporary directory name under {}",
        base.display()
    )))
}

/// A TCP port nothing listens on now, on 127.0.0.1.
pub(crate) fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port"))?;
    let port = listener.local_addr().map_err(io("finding a free port"))?.port();
    Ok(port)
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub(crate) fn server(message: String) -> Error {
    Error::Server(message)
}

pub(crate) fn server_failed(what: &str, out: &std::process::Output) -> Error {
    server(format!(
        "{what} failed ({}):\n{}{}",
        out.status,
        tail(&String::from_utf8_lossy(&out.stdout)),
        tail(&String::from_utf8_lossy(&out.stderr))
    ))
}

pub(crate) fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
