//! Where the UI's store reads run, so that the admin UI never slows calls.
//!
//! - On threads of their own at the lowest CPU priority (nice 19 on Linux): when the machine is busy, the call
//!   pipeline (card pops, the outbox worker) and the PBX get the CPU first and a journal search takes what is left.
//!   The reads go to the store's report connections ([`store::Store::for_reports`]), so they never hold the lock
//!   the pipeline writes under either.
//! - One journal search at a time: another waits for its turn (`web.search_wait_secs`), then is told the UI is
//!   busy.
//! - Each search has a time limit (`web.search_limit_secs`): the store stops it and the page says so.
//!
//! Only reads run here, never a write: a write holds the store's one writer lock, which the pipeline waits for,
//! and a low priority would make the pipeline wait longer (the UI's writes go to the service's blocking pool,
//! see `own_thread`).

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tracing::warn;

/// Threads reading for the UI: as many as the store has report connections (SQLite has two).
const THREADS: usize = 2;

type Job = Box<dyn FnOnce() + Send>;

/// The UI's reading threads and its turn for journal searches.
pub(crate) struct Reports {
    jobs: Mutex<mpsc::Sender<Job>>,
    searches: Arc<Semaphore>,
    /// How long one search may run.
    pub(crate) search_limit: Duration,
    /// How long a search waits for the one running.
    pub(crate) search_wait: Duration,
}

/// The reading thread ended before it answered (the read panicked).
#[derive(Debug)]
pub(crate) struct Lost;

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the read stopped before it answered (see the log)")
    }
}

impl Reports {
    /// Starts the reading threads; they end when this is dropped.
    pub(crate) fn start(search_limit: Duration, search_wait: Duration) -> Reports {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..THREADS {
            let queue = queue.clone();
            let started = std::thread::Builder::new()
                .name(format!("ringlink-ui-read-{n}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        // One thread waits for the next job at a time; the lock is released before the job runs.
                        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        let Ok(job) = job else { break };
                        // A panic loses that read only (its page says so), not the thread.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                    }
                });
            if let Err(e) = started {
                warn!(error = %e, "web: cannot start a reading thread; the UI reads on the others");
            }
        }
        Reports {
            jobs: Mutex::new(jobs),
            searches: Arc::new(Semaphore::new(1)),
            search_limit,
            search_wait,
        }
    }

    /// Runs `read` on a reading thread and gives its answer.
    pub(crate) async fn read<T: Send + 'static>(&self, read: impl FnOnce() -> T + Send + 'static) -> Result<T, Lost> {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = answer.send(read());
        });
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(job)
            .map_err(|_| Lost)?;
        answered.await.map_err(|_| Lost)
    }

    /// The turn for a journal search, once the one running (if any) is over; none if that takes longer than
    /// `search_wait`. The turn ends when the permit is dropped: the search's read holds it, so that a search
    /// whose browser went away keeps its turn until the read ends (or reaches its limit).
    pub(crate) async fn search_turn(&self) -> Option<OwnedSemaphorePermit> {
        tokio::time::timeout(self.search_wait, self.searches.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }
}

/// The calling thread gets the lowest CPU priority (Linux: each thread has its own nice value).
pub(crate) fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no arguments and cannot fail; setpriority on this thread's own id only changes
        // its nice value (raising it needs no privilege).
        let lowered = unsafe {
            let thread = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, thread, 19)
        };
        if lowered != 0 {
            warn!(
                error = %std::io::Error::last_os_error(),
                "web: cannot lower the priority of a reading thread; the UI's reads compete with calls for the CPU"
            );
        }
    }
}

/// The calling thread's nice value (for tests of where work runs).
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn nice() -> i32 {
    // SAFETY: getpriority only reads; errno is cleared first since -1 is a valid answer.
    unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, libc::syscall(libc::SYS_gettid) as libc::id_t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default wait (`web.search_wait_secs`).
    const WAIT: Duration = Duration::from_secs(3);

    fn reports() -> Reports {
        Reports::start(Duration::from_secs(10), WAIT)
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn reads_run_at_the_lowest_priority_and_the_caller_keeps_its_own() {
        let reports = reports();
        let before = nice();
        for _ in 0..2 * THREADS {
            assert_eq!(reports.read(nice).await.unwrap(), 19);
        }
        assert_eq!(nice(), before);
    }

    #[tokio::test]
    async fn a_read_that_panics_loses_its_answer_but_not_the_thread() {
        let reports = reports();
        for _ in 0..THREADS {
            assert!(reports.read(|| panic!("a bad row")).await.is_err());
        }
        assert_eq!(reports.read(|| 42).await.unwrap(), 42);
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_search_waits_for_the_first_then_is_told_busy() {
        let reports = reports();
        let first = reports.search_turn().await.expect("the first search's turn");
        let waited = tokio::time::Instant::now();
        assert!(reports.search_turn().await.is_none());
        assert!(waited.elapsed() >= WAIT);
        // A search that comes while one runs gets its turn when that one ends.
        let second = async { reports.search_turn().await.is_some() };
        let first_ends = async {
            tokio::time::sleep(WAIT / 2).await;
            drop(first);
        };
        let (second, ()) = tokio::join!(second, first_ends);
        assert!(second);
    }

    /// The UI served on loopback over a store in a file, and a session's cookie.
    struct Served {
        base: String,
        cookie: String,
        web: crate::Web,
        store: store::SqliteStore,
        http: reqwest::Client,
        _dir: tempfile::TempDir,
    }

    impl Served {
        /// Served with `[web]` settings as `settings` leaves them, the UI as `configure` makes it.
        async fn start(
            settings: impl FnOnce(&mut crate::WebSettings),
            configure: impl FnOnce(crate::Web) -> crate::Web,
        ) -> Served {
            let dir = tempfile::tempdir().unwrap();
            let store = store::SqliteStore::open(dir.path().join("ringlink.db")).unwrap();
            let telemetry = Arc::new(crate::Telemetry::new("9.9.9"));
            let mut web_settings = crate::WebSettings {
                listen: "127.0.0.1:0".into(),
                ..crate::WebSettings::default()
            };
            settings(&mut web_settings);
            let web =
                crate::Web::new(web_settings, Arc::new(store.clone()), telemetry, crate::Wake::default()).unwrap();
            let web = configure(web);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(crate::serve(listener, web.clone(), std::future::pending()));
            let session = web.0.sessions.create(Duration::from_secs(600));
            Served {
                base,
                cookie: format!("{}={session}", crate::auth::SESSION_COOKIE),
                web,
                store,
                http: reqwest::Client::new(),
                _dir: dir,
            }
        }

        async fn get(&self, path: &str) -> (reqwest::StatusCode, reqwest::header::HeaderMap, String) {
            let response = self
                .http
                .get(format!("{}{path}", self.base))
                .header("cookie", &self.cookie)
                .send()
                .await
                .unwrap();
            let (status, headers) = (response.status(), response.headers().clone());
            (status, headers, response.text().await.unwrap())
        }

        /// 5,000 calls of 3 entries each.
        fn journal(&self) {
            use store::{EntryKind, NewJournalEntry, Store, Timestamp};
            let entries: Vec<NewJournalEntry> = (0..15_000)
                .map(|n| {
                    let at = Timestamp::from_secs(1_700_000_000 + n);
                    NewJournalEntry::new(format!("call-{:05}", n / 3), at, EntryKind::Ami, "leg_ringing")
                })
                .collect();
            self.store.append_journal(&entries).unwrap();
        }
    }

    #[tokio::test]
    async fn a_search_while_another_runs_is_told_busy_and_the_plain_list_is_not() {
        // web.search_wait_secs: how long a search waits, and what Retry-After says.
        let ui = Served::start(|web| web.search_wait_secs = 1, |web| web).await;
        ui.journal();
        let running = ui.web.0.reports.search_turn().await.expect("a turn");
        let (status, headers, page) = ui.get("/calls?employee=zq").await;
        assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{page}");
        assert_eq!(headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
        assert!(page.contains("Another journal search is running"), "{page}");
        assert!(page.contains(r#"value="zq""#), "the form keeps the search: {page}");
        // The plain list (and its pages) does not wait for searches.
        let (status, _, page) = ui.get("/calls").await;
        assert_eq!(status, reqwest::StatusCode::OK);
        assert!(page.contains("call-04999"), "{page}");
        drop(running);
        let (status, _, page) = ui.get("/calls?employee=zq").await;
        assert_eq!(status, reqwest::StatusCode::OK);
        assert!(page.contains("No calls match"), "{page}");
    }

    #[tokio::test]
    async fn a_search_whose_browser_went_away_keeps_its_turn_until_its_read_ends() {
        let ui = Served::start(|web| web.search_wait_secs = 1, |web| web).await;
        ui.journal();
        // Both reading threads busy until released: the search's read waits in the queue behind them.
        let (started, mut reading) = tokio::sync::mpsc::unbounded_channel::<()>();
        let (release, released) = mpsc::channel::<()>();
        let released = Arc::new(Mutex::new(released));
        let mut blockers = Vec::new();
        for _ in 0..THREADS {
            let (web, started, released) = (ui.web.clone(), started.clone(), released.clone());
            blockers.push(tokio::spawn(async move {
                web.0
                    .reports
                    .read(move || {
                        let _ = started.send(());
                        let _ = released.lock().unwrap_or_else(PoisonError::into_inner).recv();
                    })
                    .await
            }));
        }
        for _ in 0..THREADS {
            reading.recv().await.expect("a blocker started");
        }
        // The browser gives up before the search is read.
        let impatient = reqwest::Client::builder()
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let gone = impatient
            .get(format!("{}/calls?employee=zq", ui.base))
            .header("cookie", &ui.cookie)
            .send()
            .await;
        assert!(gone.is_err(), "the search cannot have been read yet: {gone:?}");
        // Its read still holds the turn: the next search is told busy (given the turn instead, it would wait
        // behind the blocked reads too).
        let next = ui
            .http
            .get(format!("{}/calls?employee=zq", ui.base))
            .header("cookie", &ui.cookie)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("the next search is answered at once, not given a turn behind the blocked reads");
        assert_eq!(next.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
        // Once the reads ran, the turn is free again.
        for _ in 0..THREADS {
            let _ = release.send(());
        }
        for blocker in blockers {
            blocker.await.unwrap().unwrap();
        }
        let (status, _, page) = ui.get("/calls?employee=zq").await;
        assert_eq!(status, reqwest::StatusCode::OK, "{page}");
    }

    #[test]
    fn a_search_limit_of_zero_is_refused_naming_the_key() {
        let settings = crate::WebSettings {
            search_limit_secs: 0,
            ..crate::WebSettings::default()
        };
        let error = settings.validate().unwrap_err();
        assert!(error.contains("web.search_limit_secs"), "{error}");
    }

    #[tokio::test]
    async fn a_search_stopped_by_its_time_limit_says_so_on_the_page() {
        // Finer than web.search_limit_secs allows: a limit that every search reaches.
        let ui = Served::start(|_| {}, |web| web.search_limit(Duration::from_nanos(1))).await;
        ui.journal();
        // No entry holds it: the search would read all 15,000.
        let (status, _, page) = ui.get("/calls?employee=zq").await;
        assert_eq!(status, reqwest::StatusCode::OK, "{page}");
        assert!(page.contains("was stopped"), "{page}");
        assert!(!page.contains("No calls match"), "{page}");
        assert!(page.contains(r#"value="zq""#), "the form keeps the search: {page}");
        // The next search has its turn: the stopped one gave it back.
        assert_eq!(ui.get("/calls?employee=zq").await.0, reqwest::StatusCode::OK);
    }
}
