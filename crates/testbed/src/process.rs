//! Child processes of the test bed: each in its own process group, killed with
//! the whole group when the bed stops or is dropped.

use std::sync::{Arc, Mutex};

/// Process-group ids of running children; shared with every handle so that a
/// dropped test bed can kill whatever is still running.
#[derive(Debug, Clone, Default)]
pub(crate) struct Reaper {
    groups: Arc<Mutex<Vec<i32>>>,
}

impl Reaper {
    pub fn track(&self, pid: Option<u32>) {
        if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
            self.lock().push(pid);
        }
    }

    pub fn forget(&self, pid: Option<u32>) {
        if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
            self.lock().retain(|p| *p != pid);
        }
    }

    /// Synchronous, so it can run from `Drop`.
    pub fn kill_all(&self) {
        let groups = std::mem::take(&mut *self.lock());
        for pgid in groups {
            kill_group(pgid);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<i32>> {
        // A panic while holding this lock leaves a plain Vec: still usable.
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) fn kill_group(pgid: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals that process group only.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// Own process group, and SIGKILL if the test process dies first.
pub(crate) fn isolate(cmd: &mut tokio::process::Command) {
    cmd.process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no Rust state.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}
