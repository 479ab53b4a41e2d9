//! Finding a hook's executable and running it: a process per call, or one persistent process per hook.
//!
//! A hook must never hold a call up beyond its timeout. The process runs in its own process group with an
//! empty environment and the hooks directory as working directory, without a shell. When the hook exits (or
//! its time is up, or its answer grows past the limit) the whole group is killed: a child it forked and left
//! behind cannot keep stdout open and ringlink waiting for an end of file that never comes.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tracing::{debug, warn};

use crate::config::{HooksConfig, Mode};
use crate::name::HookName;
use crate::validate::{validate, Answer, Verdict};
use crate::Error;

/// How much of a hook's stderr is kept for the failure message.
const STDERR_TAIL: usize = 2048;
/// The `PATH` hooks get.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a hook is asked, besides its params: the call as the tracker knows it and the moment of the call.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Seed 001's `call_full`.
    pub call_full: Option<Value>,
    /// `conversation_requested`, `conversation_accepted`, `conversation_ended` or `call_ended`.
    pub call_stage: Option<&'static str>,
}

/// The result of one call of a hook.
#[derive(Debug, Clone)]
pub struct Called {
    pub hook: HookName,
    /// What was written to the hook's stdin.
    pub input: Value,
    /// The hook's answer as parsed (when it printed JSON).
    pub answer: Option<Value>,
    pub outcome: Outcome,
    pub elapsed: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Use the customized params.
    Applied(Answer),
    /// Empty `data`: this request is not sent.
    Cancelled,
    /// The hook failed: the un-customized params are used.
    Failed(Failure),
}

/// Why a hook's answer could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub kind: FailureKind,
    /// Plain words, e.g. "timed out after 3 s".
    pub message: String,
    /// The end of what the hook wrote to stderr.
    pub stderr_tail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    NotExecutable,
    SpawnFailed,
    Exit,
    Timeout,
    TooLarge,
    InvalidJson,
    InvalidAnswer,
    Died,
}

impl Called {
    /// One line for the log and the call journal, e.g. "hook process_client_phone timed out after 3 s; the
    /// un-customized params were used".
    pub fn describe(&self) -> String {
        match &self.outcome {
            Outcome::Applied(answer) if self.hook == HookName::NeedRegistration => {
                format!("hook need_registration answered {}", answer.params)
            }
            Outcome::Applied(_) => format!("hook {} customized the request", self.hook),
            Outcome::Cancelled => format!("cancelled by customization: hook {} answered empty data", self.hook),
            Outcome::Failed(f) => {
                let tail = f.stderr_tail.trim();
                let tail = if tail.is_empty() {
                    String::new()
                } else {
                    format!(" (stderr: {tail})")
                };
                format!(
                    "hook {} {}; the un-customized params were used{tail}",
                    self.hook, f.message
                )
            }
        }
    }

    /// What the journal keeps of the call.
    pub fn journal_data(&self) -> Value {
        let (outcome, detail) = match &self.outcome {
            Outcome::Applied(a) => (
                "applied",
                json!({"params": a.params, "action": a.action, "filter": a.filter}),
            ),
            Outcome::Cancelled => ("cancelled", Value::Null),
            Outcome::Failed(f) => ("failed", serde_json::to_value(f).unwrap_or(Value::Null)),
        };
        json!({
            "hook": self.hook.as_str(),
            "outcome": outcome,
            "detail": detail,
            "answer": self.answer,
            "elapsed_ms": self.elapsed.as_secs_f64() * 1000.0,
        })
    }
}

/// How a found hook is started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Found {
    /// The file.
    pub path: PathBuf,
    /// The program run (`php` for `.php`, `python3` for `.py`, `sh` for `.sh`, else the file itself).
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Why it cannot run, when it cannot (not executable, a directory).
    pub unusable: Option<String>,
}

/// A hook's counters since start.
#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    applied: AtomicU64,
    cancelled: AtomicU64,
    failed: AtomicU64,
    last_failure: Mutex<Option<String>>,
}

/// A snapshot of a hook's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub calls: u64,
    pub applied: u64,
    pub cancelled: u64,
    pub failed: u64,
    pub last_failure: Option<String>,
}

/// One hook as configured and found.
#[derive(Debug, Clone, Serialize)]
pub struct HookInfo {
    pub hook: HookName,
    pub found: Option<Found>,
    pub enabled: bool,
    pub mode: Mode,
    pub timeout: Duration,
}

struct Entry {
    info: HookInfo,
    persistent: tokio::sync::Mutex<Option<Persistent>>,
    counters: Counters,
}

/// The hooks of one directory. Cheap to share (`Arc`); calls of different hooks and of one spawn-mode hook run
/// concurrently, a persistent hook answers one request at a time.
pub struct Hooks {
    dir: PathBuf,
    max_answer: usize,
    env: Vec<(String, String)>,
    entries: BTreeMap<HookName, Entry>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("dir", &self.dir)
            .field("enabled", &self.enabled().collect::<Vec<_>>())
            .finish()
    }
}

impl Hooks {
    /// Looks for every hook in `config.dir`. No directory configured: no hook runs. An unknown name under
    /// `per_hook`, a missing directory or a bad timeout is an error the admin must fix.
    pub fn discover(config: &HooksConfig) -> Result<Self, Error> {
        for name in config.per_hook.keys() {
            name.parse::<HookName>().map_err(Error::UnknownHook)?;
        }
        let check_timeout = |secs: f64, what: &str| {
            if secs.is_finite() && secs > 0.0 && secs <= 600.0 {
                Ok(Duration::from_secs_f64(secs))
            } else {
                Err(Error::Timeout(format!("{what} = {secs}")))
            }
        };
        let default_timeout = check_timeout(config.timeout_secs, "hooks.timeout_secs")?;
        let files = match &config.dir {
            None => BTreeMap::new(),
            Some(dir) => list_dir(dir)?,
        };
        let mut entries = BTreeMap::new();
        for hook in HookName::ALL {
            let settings = config
                .per_hook
                .iter()
                .find(|(name, _)| name.parse::<HookName>() == Ok(hook))
                .map(|(_, s)| s.clone())
                .unwrap_or_default();
            let timeout = match settings.timeout_secs {
                Some(secs) => check_timeout(secs, &format!("hooks.per_hook.{hook}.timeout_secs"))?,
                None => default_timeout,
            };
            let found = hook
                .file_names()
                .iter()
                .find_map(|name| files.get(*name))
                .map(|path| how_to_run(path));
            entries.insert(
                hook,
                Entry {
                    info: HookInfo {
                        hook,
                        enabled: settings.enabled && found.is_some(),
                        found,
                        mode: settings.mode,
                        timeout,
                    },
                    persistent: tokio::sync::Mutex::new(None),
                    counters: Counters::default(),
                },
            );
        }
        let mut env = vec![
            ("PATH".to_owned(), PATH.to_owned()),
            ("LANG".to_owned(), "C.UTF-8".to_owned()),
        ];
        let dir = config
            .dir
            .as_ref()
            .map(|d| d.canonicalize().unwrap_or_else(|_| d.clone()))
            .unwrap_or_default();
        env.push(("HOME".to_owned(), dir.display().to_string()));
        env.extend(config.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(Self {
            dir,
            max_answer: config.max_answer_bytes.max(2),
            env,
            entries,
        })
    }

    /// No hooks at all (nothing configured).
    pub fn none() -> Self {
        Self::discover(&HooksConfig::default()).unwrap_or_else(|_| unreachable!("the default config is valid"))
    }

    /// Whether `hook` will run when called.
    pub fn is_enabled(&self, hook: HookName) -> bool {
        self.entries.get(&hook).is_some_and(|e| e.info.enabled)
    }

    /// The hooks that run.
    pub fn enabled(&self) -> impl Iterator<Item = HookName> + '_ {
        self.entries.values().filter(|e| e.info.enabled).map(|e| e.info.hook)
    }

    /// Every hook of the contract: found or not, on or off, mode, timeout.
    pub fn list(&self) -> Vec<HookInfo> {
        self.entries.values().map(|e| e.info.clone()).collect()
    }

    pub fn stats(&self, hook: HookName) -> Stats {
        let c = &self.entries[&hook].counters;
        Stats {
            calls: c.calls.load(Ordering::Relaxed),
            applied: c.applied.load(Ordering::Relaxed),
            cancelled: c.cancelled.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            last_failure: c.last_failure.lock().map(|l| l.clone()).unwrap_or(None),
        }
    }

    /// The hook's input: the seed's `{"params": …}`, plus `call_full` and `call_stage`.
    pub fn input(params: &Value, context: &Context) -> Value {
        json!({
            "params": params,
            "call_full": context.call_full.clone().unwrap_or(Value::Null),
            "call_stage": context.call_stage,
        })
    }

    /// Runs `hook` on `params` if it is enabled (`None` if not), and says what to send. Never takes longer than
    /// the hook's timeout (plus the time to kill it); never fails: a failure is an [`Outcome::Failed`].
    pub async fn call(&self, hook: HookName, params: &Value, context: &Context) -> Option<Called> {
        let entry = self.entries.get(&hook)?;
        if !entry.info.enabled {
            return None;
        }
        let found = entry.info.found.as_ref()?;
        let input = Self::input(params, context);
        let started = Instant::now();
        entry.counters.calls.fetch_add(1, Ordering::Relaxed);
        let raw = match &found.unusable {
            Some(why) => Err(Failure {
                kind: FailureKind::NotExecutable,
                message: why.clone(),
                stderr_tail: String::new(),
            }),
            None => match entry.info.mode {
                Mode::Spawn => self.spawn_once(found, &input, entry.info.timeout).await,
                Mode::Persistent => self.persistent_call(entry, found, &input).await,
            },
        };
        let (answer, outcome) = match raw {
            Err(f) => (None, Outcome::Failed(f)),
            Ok(out) => interpret(hook, params, &out.stdout, out.stderr_tail),
        };
        let counter = match &outcome {
            Outcome::Applied(_) => &entry.counters.applied,
            Outcome::Cancelled => &entry.counters.cancelled,
            Outcome::Failed(_) => &entry.counters.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let called = Called {
            hook,
            input,
            answer,
            outcome,
            elapsed: started.elapsed(),
        };
        if let Outcome::Failed(_) = &called.outcome {
            let line = called.describe();
            warn!(hook = %hook, "{line}");
            if let Ok(mut last) = entry.counters.last_failure.lock() {
                *last = Some(line);
            }
        } else {
            debug!(hook = %hook, elapsed_ms = called.elapsed.as_millis() as u64, "hook answered");
        }
        Some(called)
    }

    fn command(&self, found: &Found) -> Command {
        let mut cmd = Command::new(&found.program);
        cmd.args(&found.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        cmd
    }

    async fn spawn_once(&self, found: &Found, input: &Value, timeout: Duration) -> Result<Output, Failure> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut child = self.command(found).spawn().map_err(|e| spawn_failure(found, &e))?;
        let group = child.id();
        let tail = Tail::new();
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            kill_group(group);
            return Err(failure(FailureKind::SpawnFailed, "could not be given its pipes", &tail));
        };
        let mut stderr_read = tail.follow(stderr);
        let mut line = serde_json::to_vec(input).unwrap_or_default();
        line.push(b'\n');
        // A hook that never reads its stdin must not block us: the write goes on its own.
        tokio::spawn(async move {
            let _ = stdin.write_all(&line).await;
            let _ = stdin.shutdown().await;
        });
        let max = self.max_answer;
        let mut reader = tokio::spawn(read_limited(stdout, max));
        let timed_out = |tail: &Tail| {
            failure(
                FailureKind::Timeout,
                &format!("timed out after {}", secs(timeout)),
                tail,
            )
        };
        let (status, read) = tokio::select! {
            status = child.wait() => {
                // Whatever it left behind goes with it, so that stdout reaches its end.
                kill_group(group);
                match tokio::time::timeout_at(deadline, &mut reader).await {
                    Ok(read) => (status, read),
                    Err(_) => {
                        reader.abort();
                        return Err(failure(
                            FailureKind::Timeout,
                            &format!("left its stdout open after exiting, past {}", secs(timeout)),
                            &tail,
                        ));
                    }
                }
            }
            read = &mut reader => {
                let early_failure = !matches!(read, Ok(Ok(_)));
                if early_failure {
                    // The answer outgrew the limit, or stdout broke: no use waiting for the rest.
                    kill_group(group);
                }
                let status = match tokio::time::timeout_at(deadline, child.wait()).await {
                    Ok(status) => status,
                    Err(_) => {
                        kill_group(group);
                        let _ = child.wait().await;
                        return Err(timed_out(&tail));
                    }
                };
                kill_group(group);
                (status, read)
            }
            _ = tokio::time::sleep_until(deadline) => {
                kill_group(group);
                let _ = child.wait().await;
                reader.abort();
                return Err(timed_out(&tail));
            }
        };
        // The group is gone, so stderr ends at once: its tail goes into the failure message.
        let _ = tokio::time::timeout(Duration::from_millis(200), &mut stderr_read).await;
        match read {
            Ok(Err(ReadError::TooLarge)) => return Err(too_large(max, &tail)),
            Ok(Ok(_)) => {}
            _ => return Err(failure(FailureKind::Died, "stdout could not be read", &tail)),
        }
        let status = status.map_err(|e| failure(FailureKind::Died, &format!("could not be waited for: {e}"), &tail))?;
        if !status.success() {
            let what = match status.code() {
                Some(code) => format!("exited with status {code}"),
                None => "was killed by a signal".to_owned(),
            };
            return Err(failure(FailureKind::Exit, &what, &tail));
        }
        match read {
            Ok(Ok(stdout)) => Ok(Output {
                stdout,
                stderr_tail: tail.text(),
            }),
            _ => unreachable!("handled above"),
        }
    }

    async fn persistent_call(&self, entry: &Entry, found: &Found, input: &Value) -> Result<Output, Failure> {
        let timeout = entry.info.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut slot = match tokio::time::timeout_at(deadline, entry.persistent.lock()).await {
            Ok(slot) => slot,
            Err(_) => {
                return Err(Failure {
                    kind: FailureKind::Timeout,
                    message: format!("was busy with other requests for {}", secs(timeout)),
                    stderr_tail: String::new(),
                })
            }
        };
        if slot.is_none() {
            *slot = Some(self.start_persistent(found)?);
        }
        let Some(process) = slot.as_mut() else {
            unreachable!("just started")
        };
        let tail = process.tail.clone();
        let max = self.max_answer;
        match tokio::time::timeout_at(deadline, process.request(input, max)).await {
            Ok(Ok(stdout)) => Ok(Output {
                stdout,
                stderr_tail: tail.text(),
            }),
            failed => {
                // Whatever went wrong, this process is not trusted with the next request: a new one starts then.
                if let Some(mut dead) = slot.take() {
                    kill_group(dead.child.id());
                    let _ = dead.child.wait().await;
                }
                Err(match failed {
                    Err(_) => failure(
                        FailureKind::Timeout,
                        &format!("timed out after {}", secs(timeout)),
                        &tail,
                    ),
                    Ok(Err(ReadError::TooLarge)) => too_large(max, &tail),
                    Ok(Err(ReadError::Closed)) => failure(FailureKind::Died, "died before answering", &tail),
                    Ok(Err(ReadError::Io(e))) => {
                        failure(FailureKind::Died, &format!("could not be talked to: {e}"), &tail)
                    }
                    Ok(Ok(_)) => unreachable!("handled above"),
                })
            }
        }
    }

    fn start_persistent(&self, found: &Found) -> Result<Persistent, Failure> {
        let mut child = self.command(found).spawn().map_err(|e| spawn_failure(found, &e))?;
        let tail = Tail::new();
        let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            kill_group(child.id());
            return Err(failure(FailureKind::SpawnFailed, "could not be given its pipes", &tail));
        };
        tail.follow(stderr);
        debug!(path = %found.path.display(), "persistent hook started");
        Ok(Persistent {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            tail,
        })
    }
}

/// Parses and validates what a hook printed.
fn interpret(hook: HookName, params: &Value, stdout: &[u8], stderr_tail: String) -> (Option<Value>, Outcome) {
    let text = String::from_utf8_lossy(stdout);
    let answer: Value = match serde_json::from_str(text.trim()) {
        Ok(v) => v,
        Err(e) => {
            let shown: String = text.trim().chars().take(120).collect();
            return (
                None,
                Outcome::Failed(Failure {
                    kind: FailureKind::InvalidJson,
                    message: format!("printed something that is not JSON ({e}): {shown:?}"),
                    stderr_tail,
                }),
            );
        }
    };
    let outcome = match validate(hook, params, &answer) {
        Ok(Verdict::Apply(a)) => Outcome::Applied(a),
        Ok(Verdict::Cancel) => Outcome::Cancelled,
        Err(e) => Outcome::Failed(Failure {
            kind: FailureKind::InvalidAnswer,
            message: format!("answered something ringlink cannot use: {e}"),
            stderr_tail,
        }),
    };
    (Some(answer), outcome)
}

struct Output {
    stdout: Vec<u8>,
    stderr_tail: String,
}

struct Persistent {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    tail: Tail,
}

impl Persistent {
    async fn request(&mut self, input: &Value, max: usize) -> Result<Vec<u8>, ReadError> {
        let mut line = serde_json::to_vec(input).unwrap_or_default();
        line.push(b'\n');
        self.stdin.write_all(&line).await.map_err(ReadError::Io)?;
        self.stdin.flush().await.map_err(ReadError::Io)?;
        let mut answer = Vec::new();
        loop {
            let available = self.stdout.fill_buf().await.map_err(ReadError::Io)?;
            if available.is_empty() {
                return Err(ReadError::Closed);
            }
            match available.iter().position(|b| *b == b'\n') {
                Some(end) => {
                    answer.extend_from_slice(&available[..end]);
                    self.stdout.consume(end + 1);
                    if answer.len() > max {
                        return Err(ReadError::TooLarge);
                    }
                    // A blank line is not an answer (a hook printing a stray newline).
                    if answer.iter().all(u8::is_ascii_whitespace) {
                        answer.clear();
                        continue;
                    }
                    return Ok(answer);
                }
                None => {
                    let n = available.len();
                    answer.extend_from_slice(available);
                    self.stdout.consume(n);
                    if answer.len() > max {
                        return Err(ReadError::TooLarge);
                    }
                }
            }
        }
    }
}

#[derive(Debug)]
enum ReadError {
    TooLarge,
    Closed,
    Io(std::io::Error),
}

/// Reads to the end, or stops as soon as more than `max` bytes came.
async fn read_limited(mut from: impl AsyncRead + Unpin, max: usize) -> Result<Vec<u8>, ReadError> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = from.read(&mut buf).await.map_err(ReadError::Io)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() > max {
            return Err(ReadError::TooLarge);
        }
    }
}

/// The end of a hook's stderr; every line also goes to the log.
#[derive(Clone)]
struct Tail(Arc<Mutex<VecDeque<u8>>>);

impl Tail {
    fn new() -> Self {
        Self(Arc::new(Mutex::new(VecDeque::new())))
    }

    fn follow(&self, stderr: impl AsyncRead + Unpin + Send + 'static) -> tokio::task::JoinHandle<()> {
        let tail = self.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).split(b'\n');
            while let Ok(Some(line)) = lines.next_segment().await {
                let text = String::from_utf8_lossy(&line);
                warn!(target: "hooks::stderr", "{}", text.trim_end());
                if let Ok(mut t) = tail.0.lock() {
                    t.extend(line.iter().copied().chain([b'\n']));
                    let excess = t.len().saturating_sub(STDERR_TAIL);
                    t.drain(..excess);
                }
            }
        })
    }

    fn text(&self) -> String {
        self.0
            .lock()
            .map(|t| {
                String::from_utf8_lossy(&t.iter().copied().collect::<Vec<_>>())
                    .trim()
                    .to_owned()
            })
            .unwrap_or_default()
    }
}

fn failure(kind: FailureKind, message: &str, tail: &Tail) -> Failure {
    Failure {
        kind,
        message: message.to_owned(),
        stderr_tail: tail.text(),
    }
}

fn too_large(max: usize, tail: &Tail) -> Failure {
    failure(
        FailureKind::TooLarge,
        &format!("answered more than {max} bytes (hooks.max_answer_bytes)"),
        tail,
    )
}

fn spawn_failure(found: &Found, e: &std::io::Error) -> Failure {
    let kind = if e.kind() == std::io::ErrorKind::PermissionDenied {
        FailureKind::NotExecutable
    } else {
        FailureKind::SpawnFailed
    };
    Failure {
        kind,
        message: format!(
            "could not be started ({} {}): {e}",
            found.program.display(),
            found.path.display()
        ),
        stderr_tail: String::new(),
    }
}

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// Kills a hook and everything it started in its process group.
fn kill_group(group: Option<u32>) {
    let Some(group) = group.and_then(|g| i32::try_from(g).ok()).filter(|g| *g > 1) else {
        return;
    };
    // SAFETY: killpg only sends a signal; the group is the hook's own (process_group(0) made its pid the
    // group id, and Linux does not reuse a pid while it still names a process group).
    unsafe {
        libc::killpg(group, libc::SIGKILL);
    }
}

/// Files of the hooks directory by name without extension (`need_registration.php` → `need_registration`);
/// a file named exactly after the hook wins over one with an extension.
fn list_dir(dir: &Path) -> Result<BTreeMap<String, PathBuf>, Error> {
    // Absolute paths: the hooks run with the directory as their working directory.
    let dir = dir.canonicalize().map_err(|e| Error::Dir(dir.to_owned(), e))?;
    let read = std::fs::read_dir(&dir).map_err(|e| Error::Dir(dir.clone(), e))?;
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut names: Vec<PathBuf> = read.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    names.sort();
    for path in names {
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        if file.starts_with('.') || file.ends_with('~') {
            continue;
        }
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or(file).to_owned();
        let exact = stem == file;
        match found.get(&stem) {
            Some(existing) if !exact || existing.extension().is_none() => {}
            _ => {
                found.insert(stem, path);
            }
        }
    }
    Ok(found)
}

/// `.php` runs through `php`, `.py` through `python3`, `.sh` through `sh`; any other file must be executable.
fn how_to_run(path: &Path) -> Found {
    use std::os::unix::fs::PermissionsExt;
    let interpreter = match path.extension().and_then(|e| e.to_str()) {
        Some("php") => Some("php"),
        Some("py") => Some("python3"),
        Some("sh") => Some("sh"),
        _ => None,
    };
    let meta = std::fs::metadata(path);
    let unusable = match &meta {
        Err(e) => Some(format!("cannot be read: {e}")),
        Ok(m) if m.is_dir() => Some("is a directory".to_owned()),
        Ok(m) if interpreter.is_none() && m.permissions().mode() & 0o111 == 0 => Some(format!(
            "is not executable (chmod +x {}, or name it .php/.py/.sh to run it through its interpreter)",
            path.display()
        )),
        Ok(_) => None,
    };
    match interpreter {
        Some(program) => Found {
            path: path.to_owned(),
            program: PathBuf::from(program),
            args: vec![path.as_os_str().to_owned()],
            unusable,
        },
        None => Found {
            path: path.to_owned(),
            program: path.to_owned(),
            args: Vec::new(),
            unusable,
        },
    }
}
