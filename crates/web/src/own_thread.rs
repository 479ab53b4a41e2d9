//! The UI served from a thread of its own at the lowest CPU priority, apart from the service's runtime.
//!
//! HTTP parsing, routing and rendering a page are CPU work: on the service's tokio threads they would sit
//! between the call pipeline's tasks (a card pop waits for the page a worker thread is rendering). Here they
//! run on one thread at nice 19 with a runtime of its own, so that when the machine is busy the pipeline, the
//! outbox worker and the PBX get the CPU first.
//!
//! What would make the pipeline wait if it ran at low priority goes back to the service's runtime
//! ([`Web::blocking`], [`Web::on_service`]): every store access other than the journal's reads (a low-priority
//! thread holding the store's writer lock stalls every call behind it) and the service's ports (re-processing a
//! call). New threads take their creator's priority on Linux, so the UI thread never starts threads of the
//! service's pools itself: it hands the work to a service task, which does.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinError;
use tracing::warn;

use crate::Web;

/// The service's runtime, once the UI is served apart from it.
pub(crate) type Service = OnceLock<Handle>;

/// Serves `web` like [`crate::serve`] but from a thread of its own at the lowest priority (see the module);
/// call it on the service's runtime, which then does the UI's writes. Ends when `shutdown` resolves.
pub async fn serve_apart(
    listener: std::net::TcpListener,
    web: Web,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if web.0.service.set(Handle::current()).is_err() {
        warn!("web: the UI was already served apart; its writes stay on the first runtime");
    }
    listener.set_nonblocking(true)?;
    on_lowered_thread(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        crate::serve(listener, web, shutdown).await
    })?
    .await
    .unwrap_or_else(|_| Err(std::io::Error::other("the admin UI's thread stopped (see the log)")))
}

/// Runs `work` to its end on a new thread at the lowest priority, with a runtime of its own.
fn on_lowered_thread<T: Send + 'static>(
    work: impl Future<Output = std::io::Result<T>> + Send + 'static,
) -> std::io::Result<oneshot::Receiver<std::io::Result<T>>> {
    let (ended, ends) = oneshot::channel();
    std::thread::Builder::new().name("ringlink-ui".into()).spawn(move || {
        crate::reports::lower_priority();
        let done = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .and_then(|runtime| runtime.block_on(work));
        let _ = ended.send(done);
    })?;
    Ok(ends)
}

impl Web {
    /// Runs `work` on the service's blocking threads (at its priority), or on this runtime's when the UI is
    /// served on the service's runtime.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, JoinError> {
        match self.0.service.get() {
            // Spawned by a task of the service (a thread takes its creator's priority), not from here.
            Some(service) => service
                .spawn(async move { tokio::task::spawn_blocking(work).await })
                .await
                .and_then(|done| done),
            None => tokio::task::spawn_blocking(work).await,
        }
    }

    /// Runs `work` as a task of the service's runtime (see [`Web::blocking`]).
    pub(crate) async fn on_service<F>(&self, work: F) -> Result<F::Output, JoinError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.0.service.get() {
            Some(service) => service.spawn(work).await,
            None => Ok(work.await),
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::reports::nice;

    fn web() -> (Web, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = store::SqliteStore::open(dir.path().join("ringlink.db")).unwrap();
        let web = Web::new(
            crate::WebSettings::default(),
            Arc::new(store),
            Arc::new(crate::Telemetry::new("9.9.9")),
            crate::Wake::default(),
        )
        .unwrap();
        (web, dir)
    }

    /// The nice value of each thread of this process, by name.
    fn threads() -> Vec<(String, i32)> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| {
                let path = task.ok()?.path();
                let comm = std::fs::read_to_string(path.join("comm")).ok()?;
                let stat = std::fs::read_to_string(path.join("stat")).ok()?;
                // The 19th field of stat; the command (2nd) is in parentheses and may hold spaces.
                let nice = stat.rsplit_once(')')?.1.split_whitespace().nth(16)?.parse().ok()?;
                Some((comm.trim().to_owned(), nice))
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_ui_thread_runs_at_the_lowest_priority_and_hands_store_work_to_the_service() {
        let (web, _dir) = web();
        let service = tokio::task::spawn_blocking(nice).await.unwrap();
        web.0.service.set(Handle::current()).unwrap();
        let ui = web.clone();
        let answer = on_lowered_thread(async move {
            let blocking = ui.blocking(nice).await.map_err(std::io::Error::other)?;
            let task = ui.on_service(async { nice() }).await.map_err(std::io::Error::other)?;
            let local = tokio::task::spawn_blocking(nice).await.map_err(std::io::Error::other)?;
            Ok((nice(), local, blocking, task))
        })
        .unwrap()
        .await
        .unwrap()
        .unwrap();
        // Rendering and the UI's own blocking work (password hashing, reading the settings file) run low; the
        // store's work and the service's ports at the service's priority.
        assert_eq!(answer, (19, 19, service, service));
        assert_eq!(nice(), service, "the caller keeps its priority");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn served_apart_the_ui_answers_from_its_lowered_thread_until_shutdown() {
        let (web, _dir) = web();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(serve_apart(listener, web, async {
            let _ = stopped.await;
        }));
        let login = reqwest::get(format!("http://{address}/login")).await.unwrap();
        assert_eq!(login.status(), reqwest::StatusCode::OK);
        assert!(threads().contains(&("ringlink-ui".to_owned(), 19)), "{:?}", threads());
        let _ = stop.send(());
        served.await.unwrap().unwrap();
        assert!(
            reqwest::get(format!("http://{address}/login")).await.is_err(),
            "no longer listening"
        );
    }
}
