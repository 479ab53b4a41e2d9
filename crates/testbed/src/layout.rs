//! Where Asterisk lives: a Debian sid chroot built on demand, or the host's own
//! installation on a machine that already runs Asterisk.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::error::{io, Error, Result};
use crate::template;

/// Default location of the chroot; `RINGLINK_TESTBED_ROOT` overrides it.
pub const DEFAULT_ROOT: &str = "/var/cache/ringlink/testbed/sid";
const STAMP_FILE: &str = ".ringlink-testbed-stamp";

#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// Host path of the file system root Asterisk sees (`/` on a PBX host).
    pub root: PathBuf,
    /// Run Asterisk inside `root` with chroot (false on a PBX host).
    pub chroot: bool,
    pub module_dir: String,
    pub data_dir: String,
    pub varlib_dir: String,
    /// The `asterisk` account Asterisk drops to, if there is one.
    pub run_as: Option<(u32, u32)>,
}

impl Layout {
    /// Host path of a path as Asterisk sees it.
    pub fn host_path(&self, inside: &str) -> PathBuf {
        self.root.join(inside.trim_start_matches('/'))
    }
}

pub(crate) fn use_host_asterisk() -> bool {
    std::env::var("RINGLINK_TESTBED_HOST_ASTERISK").is_ok_and(|v| v == "1")
}

pub(crate) fn chroot_root() -> PathBuf {
    std::env::var_os("RINGLINK_TESTBED_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT))
}

/// Finds (building it first if needed) the Asterisk installation to use.
pub(crate) async fn prepare() -> Result<Layout> {
    let (root, chroot) = if use_host_asterisk() {
        (PathBuf::from("/"), false)
    } else {
        let root = chroot_root();
        if !root.join(STAMP_FILE).exists() {
            build_chroot(&root).await?;
        }
        (root, true)
    };
    detect(root, chroot)
}

/// Runs the build script (compiled into the crate) for the chroot at `root`.
pub async fn build_chroot(root: &Path) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("ringlink-testbed-scripts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    for (name, body) in [
        ("build-chroot.sh", template::BUILD_CHROOT_SH),
        ("install-host-deps.sh", template::INSTALL_HOST_DEPS_SH),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, body).map_err(io(format!("writing {}", path.display())))?;
        // build-chroot.sh runs install-host-deps.sh directly.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(io(format!("making {} executable", path.display())))?;
    }
    let output = tokio::process::Command::new("bash")
        .arg(dir.join("build-chroot.sh"))
        .env("RINGLINK_TESTBED_ROOT", root)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(io("running build-chroot.sh"))?;
    let _ = std::fs::remove_dir_all(&dir);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        return Err(Error::Build(format!(
            "{} (last lines of its output):\n{}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )));
    }
    Ok(())
}

fn detect(root: PathBuf, chroot: bool) -> Result<Layout> {
    let exists = |inside: &str| root.join(inside.trim_start_matches('/')).exists();
    let mut module_dir = None;
    for candidate in [
        "/usr/lib/x86_64-linux-gnu/asterisk/modules",
        "/usr/lib/aarch64-linux-gnu/asterisk/modules",
        "/usr/lib/asterisk/modules",
        "/usr/lib64/asterisk/modules",
    ] {
        if exists(&format!("{candidate}/chan_pjsip.so")) {
            module_dir = Some(candidate.to_owned());
            break;
        }
    }
    let module_dir = module_dir.ok_or_else(|| Error::Layout(root.display().to_string(), "chan_pjsip.so".into()))?;
    let data_dir = if exists("/usr/share/asterisk/sounds") {
        "/usr/share/asterisk"
    } else {
        "/var/lib/asterisk"
    };
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    let run_as = passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.first() == Some(&"asterisk") && fields.len() > 3 {
            Some((fields[2].parse().ok()?, fields[3].parse().ok()?))
        } else {
            None
        }
    });
    Ok(Layout {
        root,
        chroot,
        module_dir,
        data_dir: data_dir.to_owned(),
        varlib_dir: "/var/lib/asterisk".to_owned(),
        run_as,
    })
}
