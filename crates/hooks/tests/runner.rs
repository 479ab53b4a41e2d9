//! The runner against real processes: the fault table (each failure falls back to the un-customized params and
//! says why), a child left behind, the persistent mode, the environment and the file names.

use std::path::Path;
use std::time::Duration;

use hooks::{Context, FailureKind, HookName, HookSettings, Hooks, HooksConfig, Mode, Outcome};
use serde_json::{json, Value};

/// A directory of hooks written by the test.
struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Self(tempfile::tempdir().expect("tempdir"))
    }

    fn write(&self, name: &str, body: &str) -> &Self {
        std::fs::write(self.0.path().join(name), body).expect("write hook");
        self
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn hooks(&self, adjust: impl FnOnce(&mut HooksConfig)) -> Hooks {
        let mut config = HooksConfig {
            dir: Some(self.path().into()),
            timeout_secs: 1.0,
            ..HooksConfig::default()
        };
        adjust(&mut config);
        Hooks::discover(&config).expect("hooks")
    }
}

fn final_params() -> Value {
    json!({"CALL_ID": "externalCall.1", "USER_ID": 1, "DURATION": 12, "STATUS_CODE": 200})
}

async fn call(hooks: &Hooks, hook: HookName, params: &Value) -> hooks::Called {
    hooks
        .call(
            hook,
            params,
            &Context {
                call_full: Some(json!({"result": 200})),
                call_stage: Some("call_ended"),
            },
        )
        .await
        .expect("the hook is enabled")
}

fn failure_kind(called: &hooks::Called) -> FailureKind {
    match &called.outcome {
        Outcome::Failed(f) => f.kind,
        other => panic!("a failure expected, got {other:?}"),
    }
}

/// Each row of the fault table: the hook, what kind of failure ringlink must see, and a word the journal line
/// must contain.
#[tokio::test]
async fn every_faulty_hook_falls_back_to_the_uncustomized_params_and_says_why() {
    let rows: [(&str, &str, FailureKind, &str); 6] = [
        (
            "exit 1",
            "echo 'database is down' >&2; exit 1",
            FailureKind::Exit,
            "exited with status 1",
        ),
        ("sleep 30", "sleep 30", FailureKind::Timeout, "timed out after 1 s"),
        (
            "10 MB",
            "head -c 10485760 /dev/zero | tr '\\0' 'x'",
            FailureKind::TooLarge,
            "more than",
        ),
        (
            "invalid JSON",
            "echo '<html>Fatal error</html>'",
            FailureKind::InvalidJson,
            "not JSON",
        ),
        (
            "state error",
            r#"echo '{"data": {"DURATION": 1}, "state": "error"}'"#,
            FailureKind::InvalidAnswer,
            "\"state\" is \"error\"",
        ),
        (
            "wrong types",
            r#"echo '{"data": {"DURATION": [1, 2]}, "state": "success"}'"#,
            FailureKind::InvalidAnswer,
            "field DURATION",
        ),
    ];
    for (row, body, kind, says) in rows {
        let dir = Dir::new();
        dir.write("process_final_params.sh", body);
        let hooks = dir.hooks(|c| c.max_answer_bytes = 64 * 1024);
        let called = call(&hooks, HookName::ProcessFinalParams, &final_params()).await;
        assert_eq!(failure_kind(&called), kind, "{row}: {called:?}");
        let line = called.describe();
        assert!(line.contains(says), "{row}: {line}");
        assert!(line.contains("un-customized params were used"), "{row}: {line}");
        assert!(
            called.elapsed < Duration::from_secs(30),
            "{row} held the call for {:?}",
            called.elapsed
        );
        let stats = hooks.stats(HookName::ProcessFinalParams);
        assert_eq!((stats.calls, stats.failed), (1, 1), "{row}");
        assert!(stats.last_failure.is_some_and(|l| l.contains(says)), "{row}");
    }
}

#[tokio::test]
async fn the_stderr_tail_is_in_the_failure() {
    let dir = Dir::new();
    dir.write(
        "process_final_params.sh",
        "echo 'PHP Fatal error: undefined function' >&2; exit 1",
    );
    let called = call(&dir.hooks(|_| {}), HookName::ProcessFinalParams, &final_params()).await;
    assert!(
        called.describe().contains("PHP Fatal error: undefined function"),
        "{}",
        called.describe()
    );
}

#[tokio::test]
async fn a_hook_that_is_not_executable_is_a_failure_not_a_crash() {
    let dir = Dir::new();
    dir.write("process_final_params", "#!/bin/sh\necho '{}'\n");
    let hooks = dir.hooks(|_| {});
    let called = call(&hooks, HookName::ProcessFinalParams, &final_params()).await;
    assert_eq!(failure_kind(&called), FailureKind::NotExecutable);
    assert!(called.describe().contains("chmod +x"), "{}", called.describe());
}

#[tokio::test]
async fn a_child_left_behind_neither_holds_the_call_nor_survives() {
    let dir = Dir::new();
    // The child keeps stdout open for 30 s; the hook itself answers and exits at once.
    dir.write(
        "process_final_params.sh",
        r#"sleep 30 & echo $! > child.pid
echo '{"data": {"DURATION": 99}, "state": "success"}'"#,
    );
    let hooks = dir.hooks(|c| c.timeout_secs = 5.0);
    let called = call(&hooks, HookName::ProcessFinalParams, &final_params()).await;
    match &called.outcome {
        Outcome::Applied(a) => assert_eq!(a.params["DURATION"], 99),
        other => panic!("{other:?}"),
    }
    assert!(
        called.elapsed < Duration::from_secs(30),
        "waited {:?} for the child",
        called.elapsed
    );
    let pid: i32 = std::fs::read_to_string(dir.path().join("child.pid"))
        .expect("the hook ran in its directory")
        .trim()
        .parse()
        .expect("pid");
    // The group was killed; give the kernel a moment to reap the orphan.
    let mut alive = true;
    for _ in 0..50 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        alive = !status.is_empty() && !status.contains(") Z ");
        if !alive {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive, "the hook's child {pid} is still running");
}

const PERSISTENT: &str = r#"
import json, os, sys
for line in sys.stdin:
    request = json.loads(line)
    phone = request["params"]["phone"]
    if phone == "die":
        os.kill(os.getpid(), 9)
    if phone == "hang":
        import time; time.sleep(30)
    print(json.dumps({"data": {"phone": phone + "/" + str(os.getpid())}, "state": "success"}), flush=True)
"#;

fn persistent(c: &mut HooksConfig) {
    c.per_hook.insert(
        "process_client_phone".into(),
        HookSettings {
            mode: Mode::Persistent,
            ..HookSettings::default()
        },
    );
    // Python's start-up must fit in the first request.
    c.timeout_secs = 5.0;
}

async fn phone(hooks: &Hooks, phone: &str) -> Result<String, FailureKind> {
    let called = call(hooks, HookName::ProcessClientPhone, &json!({"phone": phone})).await;
    match called.outcome {
        Outcome::Applied(a) => Ok(a.params["phone"].as_str().expect("a string").to_owned()),
        Outcome::Failed(f) => Err(f.kind),
        Outcome::Cancelled => panic!("not cancelled"),
    }
}

fn pid_of(answer: &str) -> &str {
    answer.rsplit('/').next().expect("pid")
}

#[tokio::test]
async fn a_persistent_hook_answers_many_requests_from_one_process() {
    let dir = Dir::new();
    dir.write("process_client_phone.py", PERSISTENT);
    let hooks = dir.hooks(persistent);
    let first = phone(&hooks, "+7900").await.expect("answered");
    let second = phone(&hooks, "+7901").await.expect("answered");
    assert!(
        first.starts_with("+7900/") && second.starts_with("+7901/"),
        "{first} {second}"
    );
    assert_eq!(pid_of(&first), pid_of(&second), "one process");
}

#[tokio::test]
async fn a_persistent_hook_killed_mid_request_fails_that_request_and_is_restarted() {
    let dir = Dir::new();
    dir.write("process_client_phone.py", PERSISTENT);
    let hooks = dir.hooks(persistent);
    let before = phone(&hooks, "+7900").await.expect("answered");
    assert_eq!(phone(&hooks, "die").await, Err(FailureKind::Died));
    let after = phone(&hooks, "+7901").await.expect("a new process answers");
    assert_ne!(pid_of(&before), pid_of(&after));
}

#[tokio::test]
async fn a_persistent_hook_that_hangs_times_out_and_is_replaced() {
    let dir = Dir::new();
    dir.write("process_client_phone.py", PERSISTENT);
    let hooks = dir.hooks(|c| {
        persistent(c);
        c.timeout_secs = 2.0;
    });
    let before = phone(&hooks, "+7900").await.expect("answered");
    assert_eq!(phone(&hooks, "hang").await, Err(FailureKind::Timeout));
    let after = phone(&hooks, "+7901").await.expect("a new process answers");
    assert_ne!(pid_of(&before), pid_of(&after));
}

#[tokio::test]
async fn hooks_run_in_their_directory_with_a_clean_environment() {
    let dir = Dir::new();
    dir.write(
        "process_client_phone.py",
        r#"
import json, os, sys
json.load(sys.stdin)
secrets = sorted(k for k in os.environ if k.startswith("RINGLINK") or k.startswith("SECRET"))
print(json.dumps({"data": {"phone": os.getcwd(), "env": secrets, "extra": os.environ.get("CRM_REGION", "")}}))
"#,
    );
    // SAFETY of set_var: nextest runs each test in its own process, and this one sets it before any thread reads it.
    std::env::set_var("RINGLINK__BITRIX24__WEBHOOK_URL", "https://portal/rest/1/secret/");
    std::env::set_var("SECRET_TOKEN", "x");
    let hooks = dir.hooks(|c| {
        c.env.insert("CRM_REGION".into(), "ural".into());
    });
    let called = call(&hooks, HookName::ProcessClientPhone, &json!({"phone": "1"})).await;
    let Outcome::Applied(a) = called.outcome else {
        panic!("{:?}", called.outcome)
    };
    let cwd = dir.path().canonicalize().expect("canonical");
    assert_eq!(a.params["phone"], cwd.display().to_string());
    assert_eq!(a.params["env"], json!([]));
    assert_eq!(a.params["extra"], "ural");
}

#[tokio::test]
async fn the_input_is_the_seeds_params_with_call_full_and_call_stage() {
    let dir = Dir::new();
    dir.write(
        "process_final_params.sh",
        r#"cat > input.json; echo '{"data": {"DURATION": 1}}'"#,
    );
    call(&dir.hooks(|_| {}), HookName::ProcessFinalParams, &final_params()).await;
    let input: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("input.json")).expect("input")).expect("json");
    assert_eq!(
        input,
        json!({"params": final_params(), "call_full": {"result": 200}, "call_stage": "call_ended"})
    );
}

#[tokio::test]
async fn old_file_names_still_work_and_a_hook_can_be_turned_off() {
    let dir = Dir::new();
    dir.write(
        "process_phone_number.sh",
        r#"echo '{"data": {"phone": "8900"}, "state": "success"}'"#,
    );
    dir.write("get_updated_lead_fields.sh", r#"echo '{"data": {"TITLE": "x"}}'"#);
    let hooks = dir.hooks(|_| {});
    assert!(hooks.is_enabled(HookName::ProcessClientPhone));
    assert!(hooks.is_enabled(HookName::ProcessUserPhone));
    assert!(hooks.is_enabled(HookName::CustomizeEntity));
    assert_eq!(phone(&hooks, "+7900").await, Ok("8900".into()));
    let off = dir.hooks(|c| {
        c.per_hook.insert(
            "process_phone_number".into(),
            HookSettings {
                enabled: false,
                ..HookSettings::default()
            },
        );
    });
    assert!(!off.is_enabled(HookName::ProcessClientPhone));
    assert!(off
        .call(
            HookName::ProcessClientPhone,
            &json!({"phone": "1"}),
            &Context::default()
        )
        .await
        .is_none());
}

#[tokio::test]
async fn empty_data_is_a_cancellation_not_a_failure() {
    let dir = Dir::new();
    dir.write("process_final_params.sh", r#"echo '{"data": [], "state": "success"}'"#);
    let hooks = dir.hooks(|_| {});
    let called = call(&hooks, HookName::ProcessFinalParams, &final_params()).await;
    assert_eq!(called.outcome, Outcome::Cancelled);
    assert!(
        called.describe().starts_with("cancelled by customization"),
        "{}",
        called.describe()
    );
    let stats = hooks.stats(HookName::ProcessFinalParams);
    assert_eq!((stats.cancelled, stats.failed), (1, 0));
}

#[test]
fn config_errors_say_what_to_fix() {
    let missing = HooksConfig {
        dir: Some("/nonexistent/hooks".into()),
        ..HooksConfig::default()
    };
    let err = Hooks::discover(&missing).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/hooks") && err.contains("create it"), "{err}");
    let mut unknown = HooksConfig::default();
    unknown.per_hook.insert("process_phone".into(), HookSettings::default());
    let err = Hooks::discover(&unknown).unwrap_err().to_string();
    assert!(
        err.contains("process_phone") && err.contains("process_client_phone"),
        "{err}"
    );
}
