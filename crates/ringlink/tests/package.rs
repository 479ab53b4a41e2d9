//! Installing ringlink as a service: the systemd unit passes `systemd-analyze verify`; the Debian package described by
//! `[package.metadata.deb]` (what `cargo deb -p ringlink` builds) installs, upgrades and is removed with real dpkg
//! in a throwaway root, its config kept; `scripts/install.sh` does the same without a package.
//!
//! The package is assembled here from the same metadata with `dpkg-deb` (the test binary as `usr/bin/ringlink`):
//! installing cargo-deb and building a release binary would cost CI minutes. Maintainer scripts run outside the
//! root (`--force-script-chrootless`, `DPKG_ROOT` set), so nothing on this machine is touched.

use std::path::{Path, PathBuf};
use std::process::Command;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn deb_metadata() -> toml::Table {
    let manifest = std::fs::read_to_string(Path::new(MANIFEST_DIR).join("Cargo.toml")).expect("Cargo.toml");
    let manifest: toml::Table = manifest.parse().expect("Cargo.toml parses");
    manifest["package"]["metadata"]["deb"]
        .as_table()
        .expect("[package.metadata.deb]")
        .clone()
}

/// Builds the package of `[package.metadata.deb]` at `version` into `out` and returns its path.
fn build_deb(version: &str, out: &Path) -> PathBuf {
    let meta = deb_metadata();
    let stage = out.join(format!("stage-{version}"));
    let control_dir = stage.join("DEBIAN");
    std::fs::create_dir_all(&control_dir).expect("stage");
    for asset in meta["assets"].as_array().expect("assets") {
        let fields: Vec<&str> = asset
            .as_array()
            .expect("asset")
            .iter()
            .map(|f| f.as_str().expect("asset field"))
            .collect();
        let [source, dest, mode] = fields[..] else {
            panic!("asset {asset:?}: [source, destination, mode]")
        };
        let source = if source == "target/release/ringlink" {
            PathBuf::from(env!("CARGO_BIN_EXE_ringlink"))
        } else {
            Path::new(MANIFEST_DIR).join(source)
        };
        let mut dest = stage.join(dest);
        if dest.to_str().expect("utf-8").ends_with('/') {
            dest = dest.join(source.file_name().expect("file name"));
        }
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("asset dir");
        run(Command::new("install").arg("-m").arg(mode).arg(&source).arg(&dest));
    }
    let conffiles: Vec<&str> = meta["conf-files"]
        .as_array()
        .expect("conf-files")
        .iter()
        .map(|f| f.as_str().expect("conffile"))
        .collect();
    for conffile in &conffiles {
        assert!(stage.join(&conffile[1..]).is_file(), "conffile {conffile} is an asset");
    }
    std::fs::write(control_dir.join("conffiles"), conffiles.join("\n") + "\n").expect("conffiles");
    let scripts = Path::new(MANIFEST_DIR).join(meta["maintainer-scripts"].as_str().expect("maintainer-scripts"));
    for script in ["postinst", "prerm", "postrm"] {
        run(Command::new("install")
            .arg("-m")
            .arg("755")
            .arg(scripts.join(script))
            .arg(control_dir.join(script)));
    }
    let arch = run(Command::new("dpkg").arg("--print-architecture"));
    let depends = meta["depends"].as_str().expect("depends").replace("$auto, ", "libc6, ");
    let control = format!(
        "Package: ringlink\nVersion: {version}\nArchitecture: {}\nMaintainer: {}\nDepends: {depends}\n\
         Section: net\nPriority: optional\nDescription: Asterisk to Bitrix24 connector\n test build\n",
        arch.trim(),
        meta["maintainer"].as_str().expect("maintainer"),
    );
    std::fs::write(control_dir.join("control"), control).expect("control");
    let deb = out.join(format!("ringlink_{version}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Znone", "--build"])
        .arg(&stage)
        .arg(&deb));
    std::fs::remove_dir_all(&stage).expect("remove stage");
    deb
}

/// An empty system for dpkg: its database, and the account files useradd edits (with an asterisk group).
fn throwaway_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("var/lib/dpkg/info")).expect("dpkg dir");
    std::fs::create_dir_all(root.join("var/lib/dpkg/updates")).expect("dpkg dir");
    std::fs::create_dir_all(root.join("etc")).expect("etc");
    for (file, text) in [
        ("var/lib/dpkg/status", ""),
        ("var/lib/dpkg/available", ""),
        ("etc/passwd", "root:x:0:0:root:/root:/bin/bash\n"),
        ("etc/shadow", "root:*:19000:0:99999:7:::\n"),
        ("etc/group", "root:x:0:\nasterisk:x:500:\n"),
        ("etc/gshadow", "root:*::\nasterisk:!::\n"),
    ] {
        std::fs::write(root.join(file), text).expect("root file");
    }
    root
}

fn dpkg(root: &Path, args: &[&str]) -> String {
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["--force-script-chrootless", "--force-depends", "--force-not-root"])
        .args(args))
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The unit as installed under `root`, checked by systemd itself with its `ExecStart` pointed at the binary there.
fn verify_unit(unit: &Path, binary_on_host: &Path, installed_as: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = read(unit.to_path_buf());
    let exec = format!("ExecStart={installed_as} ");
    assert!(text.contains(&exec), "{}: {exec}", unit.display());
    let copy = dir.path().join("ringlink.service");
    std::fs::write(
        &copy,
        text.replace(&exec, &format!("ExecStart={} ", binary_on_host.display())),
    )
    .expect("unit copy");
    let said = run(Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&copy));
    assert!(said.trim().is_empty(), "systemd-analyze verify complained:\n{said}");
    for line in [
        "User=ringlink",
        "Restart=always",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "StateDirectory=ringlink",
        "ReadOnlyPaths=-/var/spool/asterisk/monitor",
        "--config /etc/ringlink/ringlink.toml",
    ] {
        assert!(text.contains(line), "the unit lacks {line}");
    }
}

fn user_line(root: &Path, file: &str) -> Option<String> {
    read(root.join(file))
        .lines()
        .find(|l| l.starts_with("ringlink:"))
        .map(str::to_owned)
}

#[test]
fn the_deb_installs_upgrades_and_is_removed_keeping_the_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = build_deb("0.1.0-1", dir.path());
    let root = throwaway_root(dir.path());

    let said = dpkg(&root, &["-i", first.to_str().expect("utf-8")]);
    assert!(said.contains("Setting up ringlink (0.1.0-1)"), "{said}");
    assert!(
        said.contains("systemctl enable --now ringlink"),
        "next steps are told: {said}"
    );
    let passwd = user_line(&root, "etc/passwd").expect("the ringlink user is created");
    assert!(passwd.ends_with(":/var/lib/ringlink:/usr/sbin/nologin"), "{passwd}");
    let asterisk = read(root.join("etc/group"));
    assert!(
        asterisk.contains("asterisk:x:500:ringlink"),
        "ringlink is in the asterisk group:\n{asterisk}"
    );
    let config = root.join("etc/ringlink/ringlink.toml");
    let out = run(Command::new(env!("CARGO_BIN_EXE_ringlink")).args(["config", "default", "--service"]));
    assert_eq!(
        read(config.clone()),
        out,
        "the config is `ringlink config default --service`"
    );
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(&config).expect("config");
    assert_eq!(meta.permissions().mode() & 0o777, 0o640, "the config holds secrets");
    let gid: u32 = user_line(&root, "etc/group")
        .and_then(|l| l.split(':').nth(2).and_then(|g| g.parse().ok()))
        .expect("ringlink group");
    assert_eq!(meta.gid(), gid, "the service reads its config through its group");
    let state = std::fs::metadata(root.join("var/lib/ringlink")).expect("state dir");
    assert_eq!(state.gid(), gid);
    verify_unit(
        &root.join("lib/systemd/system/ringlink.service"),
        &root.join("usr/bin/ringlink"),
        "/usr/bin/ringlink",
    );

    // The admin edits the config and the service writes its store; an upgrade keeps both, and the user.
    let edited = read(config.clone()).replace("secret = \"change-me\"", "secret = \"edited\"");
    std::fs::write(&config, &edited).expect("edit config");
    std::fs::write(root.join("var/lib/ringlink/ringlink.db"), "store").expect("store");
    let second = build_deb("0.1.1-1", dir.path());
    let said = dpkg(&root, &["-i", second.to_str().expect("utf-8")]);
    assert!(said.contains("Setting up ringlink (0.1.1-1)"), "{said}");
    assert!(
        !said.contains("systemctl enable --now"),
        "an upgrade does not repeat the first-install notice"
    );
    assert_eq!(read(config.clone()), edited, "the edited config survives the upgrade");
    assert_eq!(read(root.join("var/lib/ringlink/ringlink.db")), "store");
    assert_eq!(user_line(&root, "etc/passwd"), Some(passwd.clone()), "the same user");
    let status = dpkg(&root, &["-s", "ringlink"]);
    assert!(status.contains("Version: 0.1.1-1"), "{status}");

    // dpkg -r removes the program, keeps the config (a conffile) and the store; purge removes them.
    dpkg(&root, &["-r", "ringlink"]);
    assert!(!root.join("usr/bin/ringlink").exists());
    assert!(!root.join("lib/systemd/system/ringlink.service").exists());
    assert_eq!(read(config.clone()), edited, "the config is kept on removal");
    assert!(
        root.join("var/lib/ringlink/ringlink.db").exists(),
        "the store is kept on removal"
    );
    dpkg(&root, &["--purge", "ringlink"]);
    assert!(!config.exists(), "purge removes the config");
    assert!(!root.join("var/lib/ringlink").exists(), "purge removes the store");
    assert_eq!(user_line(&root, "etc/passwd"), None, "purge removes the user");
}

#[test]
fn install_script_installs_the_service_and_keeps_an_existing_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = throwaway_root(dir.path());
    let script = Path::new(MANIFEST_DIR).join("../../scripts/install.sh");
    let install = || {
        run(Command::new("bash")
            .arg(&script)
            .args(["--binary", env!("CARGO_BIN_EXE_ringlink"), "--root"])
            .arg(&root))
    };
    let said = install();
    assert!(said.contains("systemctl enable --now ringlink"), "{said}");
    assert!(user_line(&root, "etc/passwd").is_some(), "the ringlink user is created");
    let config = root.join("etc/ringlink/ringlink.toml");
    assert!(read(config.clone()).contains("path = \"/var/lib/ringlink/ringlink.db\""));
    verify_unit(
        &root.join("etc/systemd/system/ringlink.service"),
        &root.join("usr/local/bin/ringlink"),
        "/usr/local/bin/ringlink",
    );

    std::fs::write(&config, "# edited\n").expect("edit");
    let said = install();
    assert!(
        said.contains("keeping the existing /etc/ringlink/ringlink.toml"),
        "{said}"
    );
    assert_eq!(read(config), "# edited\n");
    assert_eq!(
        read(root.join("etc/passwd"))
            .lines()
            .filter(|l| l.starts_with("ringlink:"))
            .count(),
        1,
        "one user after two runs"
    );
}
