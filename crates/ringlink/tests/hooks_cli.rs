//! `ringlink hooks list|run`: what an admin sees while writing a hook.

use std::io::Write;
use std::process::{Command, Stdio};

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let hooks = dir.path().join("hooks");
    std::fs::create_dir(&hooks).expect("hooks dir");
    std::fs::write(
        hooks.join("process_phone_number.py"),
        r#"import json, sys
phone = json.load(sys.stdin)["params"]["phone"]
print(json.dumps({"data": {"phone": "8" + phone[2:]}, "state": "success"}))
"#,
    )
    .expect("hook");
    std::fs::write(hooks.join("process_final_params.sh"), "echo 'oops' >&2; exit 3").expect("hook");
    std::fs::write(
        dir.path().join("ringlink.toml"),
        format!(
            "[ami]\naddress = \"127.0.0.1:5038\"\nusername = \"u\"\nsecret = \"s\"\n\n[hooks]\ndir = \"{}\"\n\n\
             [hooks.per_hook.process_user_phone]\nenabled = false\n",
            hooks.display()
        ),
    )
    .expect("config");
    dir
}

fn ringlink(dir: &tempfile::TempDir, args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringlink"))
        .args(args)
        .arg("--config")
        .arg(dir.path().join("ringlink.toml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ringlink runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("ringlink ends");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn list_shows_every_hook_found_on_or_off_with_its_runner() {
    let dir = setup();
    let (ok, text) = ringlink(&dir, &["hooks", "list"], "");
    assert!(ok, "{text}");
    let line = |hook: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{hook} ")))
            .unwrap_or_else(|| panic!("no line for {hook}: {text}"))
            .to_owned()
    };
    assert!(line("process_client_phone").contains(" on ") && line("process_client_phone").contains("python3"));
    assert!(line("process_user_phone").contains(" off "), "{text}");
    assert!(line("need_registration").contains("not found"), "{text}");
    assert!(line("process_final_params").contains("(sh)"), "{text}");
}

#[test]
fn run_prints_the_answer_and_what_ringlink_would_send() {
    let dir = setup();
    let (ok, text) = ringlink(
        &dir,
        &["hooks", "run", "process_client_phone"],
        r#"{"params": {"phone": "+79001234567"}, "call_stage": "conversation_requested"}"#,
    );
    assert!(ok, "{text}");
    assert!(text.contains("ringlink would send"), "{text}");
    assert!(text.contains("\"89001234567\""), "{text}");
}

#[test]
fn run_of_a_failing_hook_says_why_and_exits_non_zero() {
    let dir = setup();
    let (ok, text) = ringlink(
        &dir,
        &["hooks", "run", "process_final_params"],
        r#"{"params": {"CALL_ID": "x", "DURATION": 3}}"#,
    );
    assert!(!ok, "{text}");
    assert!(text.contains("exited with status 3") && text.contains("oops"), "{text}");
    assert!(text.contains("un-customized params"), "{text}");
}
