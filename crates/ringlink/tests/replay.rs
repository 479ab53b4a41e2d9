//! `ringlink replay` on the golden traces recorded from the real Asterisk test bed, and on damaged copies.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn trace(name: &str) -> PathBuf {
    root().join("crates/tracker/tests/traces").join(format!("{name}.ami"))
}

fn config() -> PathBuf {
    root().join("testbed/ringlink.toml")
}

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn replay(trace: &Path, format: &str) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_ringlink"))
        .arg("replay")
        .arg(trace)
        .arg("--config")
        .arg(config())
        .args(["--format", format])
        .output()
        .expect("run ringlink");
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn calls(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

#[test]
fn s1_replays_to_one_incoming_answered_call() {
    let out = replay(&trace("s1"), "json");
    assert!(out.ok, "{}", out.stderr);
    let calls = calls(&out.stdout);
    assert_eq!(calls.len(), 1, "{}", out.stdout);
    let call = &calls[0]["call_full"];
    assert_eq!(call["channel"]["type"], "incoming");
    assert_eq!(call["channel"]["trunk"]["original"], "73432723033");
    assert_eq!(call["channel"]["from"]["original"], "+79001234567");
    assert_eq!(call["result"], 200);
    assert_eq!(call["is_ivr"], false);
    assert!(call["record"].as_str().is_some_and(|r| r.ends_with(".wav")), "{call}");
    let events: Vec<&str> = calls[0]["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e.as_object().and_then(|o| o.keys().next().map(String::as_str)))
        .collect();
    assert!(
        events.contains(&"leg_ringing") || out.stdout.contains("leg_ringing"),
        "{events:?}"
    );
    assert!(out.stdout.contains("call_ended"), "{}", out.stdout);
}

#[test]
fn text_format_is_one_line_per_call() {
    let out = replay(&trace("s3"), "text");
    assert!(out.ok, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.stdout);
    assert!(
        lines[0].contains("incoming") && lines[0].contains("result 200"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("102"), "102 answered: {}", lines[0]);
}

#[test]
fn damaged_input_is_reported_with_its_offset_and_the_rest_still_replays() {
    let good = std::fs::read(trace("s3")).expect("trace");
    // Splice an oversized garbage message in at a message boundary in the middle of the stream.
    let boundary = good
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == b"\r\n\r\n")
        .map(|(i, _)| i + 4)
        .nth(20)
        .expect("boundaries");
    let garbage = vec![b'Z'; 2 * 1024 * 1024];
    let mut damaged = good[..boundary].to_vec();
    damaged.extend_from_slice(&garbage);
    damaged.extend_from_slice(b"\r\n\r\n");
    damaged.extend_from_slice(&good[boundary..]);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("damaged.ami");
    std::fs::write(&path, &damaged).expect("write");

    let out = replay(&path, "json");
    assert!(!out.ok, "damage makes the exit status fail");
    assert!(
        out.stderr.contains(&format!("bytes {boundary}..")),
        "offset named: {}",
        out.stderr
    );
    let reference = calls(&replay(&trace("s3"), "json").stdout);
    let replayed = calls(&out.stdout);
    assert_eq!(replayed.len(), reference.len(), "the replay went on after the damage");
    assert_eq!(replayed[0]["call_full"]["result"], reference[0]["call_full"]["result"]);
}

#[test]
fn truncated_trace_reports_the_cut_and_the_live_call() {
    let good = std::fs::read(trace("s1")).expect("trace");
    let cut = good.len() / 2 + 7;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cut.ami");
    std::fs::write(&path, &good[..cut]).expect("write");
    let out = replay(&path, "json");
    assert!(!out.ok);
    assert!(
        out.stderr.contains("stream ended in the middle of a message"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("1 still live"), "{}", out.stderr);
}

#[test]
fn every_golden_trace_replays_cleanly() {
    let dir = root().join("crates/tracker/tests/traces");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("traces dir").flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "ami") {
            let out = replay(&path, "json");
            assert!(out.ok, "{}: {}", path.display(), out.stderr);
            assert!(!calls(&out.stdout).is_empty(), "{} produced no call", path.display());
            assert!(
                out.stderr.contains("0 still live"),
                "{}: {}",
                path.display(),
                out.stderr
            );
            n += 1;
        }
    }
    assert!(n >= 18, "expected the 18 golden traces, found {n}");
}

/// The text line names the employee who talked (not the client), whatever the direction.
#[test]
fn text_format_names_the_employee_who_talked() {
    for (trace_name, employee) in [
        ("s1", "101"),
        ("s3", "102"),
        ("s4", "103"),
        ("s7", "101"),
        ("s9", "102"),
    ] {
        let out = replay(&trace(trace_name), "text");
        assert!(out.ok, "{}", out.stderr);
        let line = out.stdout.lines().next().unwrap_or_default();
        let talked = line
            .split_once("talked [")
            .and_then(|(_, rest)| rest.split_once(']'))
            .map(|(t, _)| t)
            .unwrap_or_else(|| panic!("{trace_name}: no talked part in {line}"));
        assert!(
            talked.starts_with(&format!("{employee} ")),
            "{trace_name}: {employee} talked: {line}"
        );
    }
}

/// A copy of a golden trace as an Asterisk with `timestampevents=no` would have sent it: no `Timestamp`
/// header on any event (the byte offsets change, so the `.idx` is rewritten for the new offsets).
fn without_timestamps(name: &str, dir: &Path, with_idx: bool) -> PathBuf {
    let bytes = std::fs::read(trace(name)).expect("trace");
    let idx = std::fs::read_to_string(root().join(format!("crates/tracker/tests/traces/{name}.ami.idx"))).expect("idx");
    let chunks: Vec<(usize, &str)> = idx
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(o, t)| (o.parse().expect("offset"), t))
        .collect();
    let mut out = Vec::new();
    let mut new_idx = String::new();
    for (i, (start, time)) in chunks.iter().enumerate() {
        let end = chunks.get(i + 1).map_or(bytes.len(), |(o, _)| *o);
        new_idx.push_str(&format!("{} {time}\n", out.len()));
        let chunk = String::from_utf8_lossy(&bytes[*start..end]).into_owned();
        let kept: String = chunk
            .split_inclusive('\n')
            .filter(|line| !line.starts_with("Timestamp: "))
            .collect();
        out.extend_from_slice(kept.as_bytes());
    }
    let path = dir.join(format!("{name}-untimed.ami"));
    std::fs::write(&path, out).expect("write trace");
    if with_idx {
        std::fs::write(dir.join(format!("{name}-untimed.ami.idx")), new_idx).expect("write idx");
    }
    path
}

#[test]
fn events_without_timestamps_take_the_arrival_times_of_the_idx() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reference = calls(&replay(&trace("s1"), "json").stdout);
    let path = without_timestamps("s1", dir.path(), true);
    let out = replay(&path, "json");
    assert!(out.ok, "{}", out.stderr);
    let calls = calls(&out.stdout);
    assert_eq!(calls.len(), 1, "{}", out.stdout);
    let (call, expected) = (&calls[0]["call_full"], &reference[0]["call_full"]);
    assert_eq!(call["channel"]["start_time"], expected["channel"]["start_time"]);
    let talk = |c: &serde_json::Value| {
        c["events"]
            .as_array()
            .expect("events")
            .iter()
            .find_map(|e| e.get("conversation_ended").map(|v| v["talk_seconds"].clone()))
    };
    assert_eq!(talk(&calls[0]), talk(&reference[0]), "talk time from arrival times");
    assert!(out.stderr.contains("timestampevents"), "said once: {}", out.stderr);
    assert_eq!(out.stderr.matches("timestampevents").count(), 1, "{}", out.stderr);
}

#[test]
fn events_without_timestamps_and_no_idx_are_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = without_timestamps("s1", dir.path(), false);
    let out = replay(&path, "json");
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stderr.contains("timestampevents=yes") && out.stderr.contains(".idx"),
        "{}",
        out.stderr
    );
}

/// `--hooks DIR` runs the call-level hooks on every ended call and shows their answers; without it no hook runs
/// (the example hooks write nothing, so the same trace replays to the same lines every time).
#[test]
fn hooks_run_only_when_asked_and_answer_alike_every_time() {
    let examples = root().join("examples/hooks/python");
    let with_hooks = || {
        let out = Command::new(env!("CARGO_BIN_EXE_ringlink"))
            .arg("replay")
            .arg(trace("s1"))
            .arg("--config")
            .arg(config())
            .arg("--hooks")
            .arg(&examples)
            .output()
            .expect("run ringlink");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = with_hooks();
    let call = &calls(&first)[0];
    assert_eq!(call["hooks"]["need_registration"]["outcome"], "applied", "{first}");
    assert_eq!(
        call["hooks"]["need_registration"]["said"], "hook need_registration answered false",
        "the example black-lists the test bed's trunk"
    );
    assert_eq!(
        call["hooks"]["process_client_phone"]["detail"]["params"]["phone"],
        "89001234567"
    );
    let strip_times = |text: &str| -> Vec<serde_json::Value> {
        calls(text)
            .into_iter()
            .map(|mut c| {
                for hook in ["need_registration", "process_client_phone"] {
                    c["hooks"][hook]["elapsed_ms"] = serde_json::Value::Null;
                }
                c
            })
            .collect()
    };
    assert_eq!(strip_times(&first), strip_times(&with_hooks()), "deterministic");
    let plain = replay(&trace("s1"), "json");
    assert!(
        calls(&plain.stdout)[0].get("hooks").is_none(),
        "no hook without --hooks"
    );
}
