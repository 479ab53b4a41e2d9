//! `ringlink demo` as a user runs it (the built binary): every call it narrates is what the Bitrix24 emulator
//! recorded (read back over the emulator's control API while the demo is up), and it leaves no process behind
//! after SIGINT (once its calls are done) nor after SIGTERM (in the middle of a call).

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Demo {
    fn start(args: &[&str]) -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringlink"))
            .arg("demo")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ringlink demo");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Demo {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads the narration until a line containing `needle`; returns it.
    fn wait_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("the demo never said {needle:?}; it said:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// The demo and every process under it (Asterisk, the SIPp phones), read from /proc.
    fn process_tree(&self) -> HashSet<i32> {
        let mut parents = Vec::new();
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid …: comm may hold spaces, so read after the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if let Some(ppid) = ppid {
                parents.push((pid, ppid));
            }
        }
        let mut tree: HashSet<i32> = HashSet::from([self.child.id() as i32]);
        loop {
            let before = tree.len();
            for (pid, ppid) in &parents {
                if tree.contains(ppid) {
                    tree.insert(*pid);
                }
            }
            if tree.len() == before {
                return tree;
            }
        }
    }

    /// Sends `signal`, waits for a clean exit, and checks that none of `tree` is left.
    fn stop_with(mut self, signal: i32, tree: HashSet<i32>) {
        // SAFETY: kill(2) on the demo's own pid.
        let sent = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(sent, 0, "signal the demo");
        let deadline = std::time::Instant::now() + Duration::from_secs(40);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the demo did not stop within 40 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(1)) {
            self.seen.push(line);
        }
        assert!(
            status.success(),
            "the demo exited with {status}:\n{}",
            self.seen.join("\n")
        );
        assert!(
            self.seen.iter().any(|l| l.starts_with("stopping:")),
            "{}",
            self.seen.join("\n")
        );
        let left: Vec<i32> = tree
            .iter()
            .copied()
            .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
            .collect();
        assert!(left.is_empty(), "processes left behind: {left:?}");
        assert!(tree.len() >= 3, "the tree had the demo, Asterisk and phones: {tree:?}");
    }
}

async fn get(url: &str) -> Value {
    reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// `… (user N)` at the end of `text`.
fn user_id(text: &str) -> u64 {
    let start = text.rfind("(user ").expect("(user N)") + "(user ".len();
    text[start..].trim_end_matches(')').parse().expect("user id")
}

/// Checks one `  Bitrix24: call …` line against the emulator's record of that call.
fn check_call_line(line: &str, state: &Value) -> String {
    let parts: Vec<&str> = line.split("; ").collect();
    let head = parts[0]
        .trim_start()
        .strip_prefix("Bitrix24: call ")
        .expect("call line");
    let (call_id, rest) = head.split_once(", ").expect("call id");
    let call = state["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .find(|c| c["call_id"] == call_id)
        .unwrap_or_else(|| panic!("narrated call {call_id} is not in the emulator"));
    assert_eq!(call["user_id"], user_id(rest), "{line}");
    assert!(rest.contains(call["phone_number"].as_str().expect("phone")), "{line}");
    let finish = &call["finish"];
    let finished = parts[1].strip_prefix("finished by ").expect("finished");
    let (who, numbers) = finished.split_once("), ").expect("finished by … (user N), …");
    assert_eq!(finish["user_id"], user_id(&format!("{who})")), "{line}");
    assert!(
        numbers.starts_with(&format!(
            "{} s, status {} (",
            finish["duration"],
            finish["status_code"].as_str().expect("code")
        )),
        "{line}"
    );
    match call["record_file_id"].as_u64() {
        Some(id) => {
            let file = state["files"]
                .as_array()
                .expect("files")
                .iter()
                .find(|f| f["id"] == id)
                .expect("the record's file");
            assert_eq!(
                parts[2],
                format!(
                    "recording {} ({} bytes)",
                    file["name"].as_str().expect("name"),
                    file["size"]
                ),
                "{line}"
            );
        }
        None => assert_eq!(parts[2], "no recording", "{line}"),
    }
    let created = call["crm_created"].as_array().expect("crm_created");
    match (created.first(), parts.get(3)) {
        (Some(entity), Some(told)) => {
            assert_eq!(
                *told,
                format!(
                    "{} #{} created",
                    entity[0].as_str().expect("type").to_lowercase(),
                    entity[1]
                ),
                "{line}"
            )
        }
        (None, Some(told)) => assert_eq!(
            *told,
            format!(
                "bound to {} #{}",
                call["crm_entity"][0].as_str().expect("type").to_lowercase(),
                call["crm_entity"][1]
            ),
            "{line}"
        ),
        (None, None) => assert!(call["crm_entity"].is_null(), "{line}"),
        (Some(_), None) => panic!("a created entity is not told: {line}"),
    }
    call_id.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_narrated_call_is_what_the_emulator_recorded_and_sigint_leaves_nothing() {
    let mut demo = Demo::start(&["--calls", "3"]);
    let state_line = demo.wait_line("emulator state", Duration::from_secs(120));
    let state_url = state_line.split_whitespace().last().expect("url").to_owned();
    let timeline_url = state_url.replace("/_emu/state", "/_emu/timeline");
    demo.wait_line("call(s) placed and narrated", Duration::from_secs(120));
    let tree = demo.process_tree();
    let state = get(&state_url).await;
    let timeline = get(&timeline_url).await;

    let mut narrated = HashSet::new();
    for line in demo
        .seen
        .iter()
        .filter(|l| l.trim_start().starts_with("Bitrix24: call "))
    {
        narrated.insert(check_call_line(line, &state));
    }
    let registered: HashSet<String> = state["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| c["call_id"].as_str().expect("call_id").to_owned())
        .collect();
    assert_eq!(
        narrated,
        registered,
        "every registered call narrated once:\n{}",
        demo.seen.join("\n")
    );
    assert_eq!(narrated.len(), 3, "{}", demo.seen.join("\n"));
    // Each card told is one the emulator showed.
    let shown = demo.seen.iter().filter(|l| l.contains("card popped up for")).count();
    assert!(shown >= 3, "{}", demo.seen.join("\n"));
    for line in demo.seen.iter().filter(|l| l.contains("card popped up for")) {
        let (before, call) = line.rsplit_once("[call ").expect("[call …]");
        let call = call.trim_end_matches(']');
        let user = user_id(
            before
                .split(") ")
                .next()
                .map(|s| format!("{s})"))
                .as_deref()
                .expect("user"),
        );
        assert!(
            timeline["events"]
                .as_array()
                .expect("events")
                .iter()
                .any(|e| e["call_id"] == call && e["user_id"] == user && e["action"] == "shown"),
            "not in the card timeline: {line}"
        );
    }
    assert!(
        demo.seen.iter().any(|l| l.contains("status 304 (missed)")),
        "the missed call"
    );
    assert!(
        demo.seen.iter().any(|l| l.contains("lead #") && l.contains("created")),
        "a lead created"
    );
    demo.stop_with(libc::SIGINT, tree);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_in_the_middle_of_a_call_leaves_nothing() {
    let mut demo = Demo::start(&["--forever"]);
    demo.wait_line("card popped up for", Duration::from_secs(120));
    let tree = demo.process_tree();
    demo.stop_with(libc::SIGTERM, tree);
}
