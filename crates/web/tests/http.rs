//! The UI over real HTTP: sessions, CSRF, escaping, monitoring access, the Prometheus text.

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{redirect, Client, Response, StatusCode};
use serde_json::json;
use store::{EntryKind, NewJournalEntry, NewStep, SqliteStore, Store, Timestamp};
use web::{HookStatus, Role, StoreRole, Telemetry, Wake, Web, WebSettings};

const PASSWORD: &str = "a long admin password";

struct Ui {
    base: String,
    store: SqliteStore,
    web: Web,
    telemetry: Arc<Telemetry>,
    http: Client,
    _dir: tempfile::TempDir,
}

async fn start(settings: WebSettings) -> Ui {
    start_with(settings, |web, _| web).await
}

/// As [`start`], with `configure` given the web state and the test's directory before serving.
async fn start_with(settings: WebSettings, configure: impl FnOnce(Web, &std::path::Path) -> Web) -> Ui {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path().join("ringlink.db")).expect("store");
    let telemetry = Arc::new(Telemetry::new("9.9.9"));
    telemetry.ami_address("127.0.0.1:5038");
    let web = Web::new(settings, Arc::new(store.clone()), telemetry.clone(), Wake::default()).expect("web");
    let web = configure(web, dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    tokio::spawn(web::serve(listener, web.clone(), std::future::pending()));
    let http = Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .expect("client");
    Ui {
        base: format!("http://{addr}"),
        store,
        web,
        telemetry,
        http,
        _dir: dir,
    }
}

/// `name=value` pairs of the response's `Set-Cookie` headers.
fn cookies(response: &Response) -> Vec<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .map(str::to_owned)
        .collect()
}

fn cookie_value(response: &Response, name: &str) -> Option<String> {
    cookies(response)
        .into_iter()
        .find_map(|c| c.strip_prefix(&format!("{name}=")).map(str::to_owned))
}

fn location(response: &Response) -> &str {
    response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The settings page's version, which a save must still find.
fn page_version(html: &str) -> String {
    html.split("name=\"version\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page's version")
        .to_owned()
}

fn hidden_csrf(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + "name=\"csrf\" value=\"".len();
    html[at..].split('"').next().expect("value").to_owned()
}

impl Ui {
    async fn get(&self, path: &str, session: Option<&str>) -> Response {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(s) = session {
            request = request.header(COOKIE, format!("ringlink_session={s}"));
        }
        request.send().await.expect("GET")
    }

    async fn post(&self, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Response {
        let mut request = self.http.post(format!("{}{path}", self.base)).form(form);
        if let Some(c) = cookie {
            request = request.header(COOKIE, c);
        }
        request.send().await.expect("POST")
    }

    /// Sets the password on the first-run page and returns the session.
    async fn first_run(&self) -> String {
        let page = self.get("/setup", None).await;
        assert_eq!(page.status(), StatusCode::OK);
        let form_cookie = cookie_value(&page, "ringlink_form").expect("form cookie");
        let html = page.text().await.expect("html");
        let csrf = hidden_csrf(&html);
        let code = self.web.setup_code().expect("a setup code before the password is set");
        let done = self
            .post(
                "/setup",
                Some(&format!("ringlink_form={form_cookie}")),
                &[
                    ("csrf", &csrf),
                    ("code", &code),
                    ("password", PASSWORD),
                    ("again", PASSWORD),
                ],
            )
            .await;
        assert_eq!(done.status(), StatusCode::SEE_OTHER, "{:?}", done.text().await);
        cookie_value(&done, "ringlink_session").expect("session cookie")
    }

    /// Logs in with `password`; the response.
    async fn login(&self, password: &str) -> Response {
        let page = self.get("/login", None).await;
        assert_eq!(page.status(), StatusCode::OK);
        let form_cookie = cookie_value(&page, "ringlink_form").expect("form cookie");
        let csrf = hidden_csrf(&page.text().await.expect("html"));
        self.post(
            "/login",
            Some(&format!("ringlink_form={form_cookie}")),
            &[("csrf", &csrf), ("password", password)],
        )
        .await
    }

    async fn session_csrf(&self, session: &str) -> String {
        let html = self.get("/calls", Some(session)).await.text().await.expect("html");
        hidden_csrf(&html)
    }
}

fn local_only() -> WebSettings {
    WebSettings {
        listen: "127.0.0.1:0".into(),
        ..WebSettings::default()
    }
}

#[tokio::test]
async fn every_page_needs_a_session() {
    let ui = start(local_only()).await;
    ui.first_run().await;
    for path in [
        "/",
        "/calls",
        "/calls/1700000000.1",
        "/settings",
        "/nonexistent",
        "/calls/x/y/z",
        "/wizard",
        "/wizard/ami",
        "/wizard/bitrix24",
        "/wizard/trunks",
        "/wizard/call",
    ] {
        let r = ui.get(path, None).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(location(&r), "/login", "{path}");
        let forged = ui.get(path, Some("forged-session-id")).await;
        assert_eq!(location(&forged), "/login", "{path} with a forged session");
    }
    for path in [
        "/calls/1700000000.1/retry",
        "/calls/1700000000.1/reprocess",
        "/settings",
        "/users/refresh",
        "/gaps/acknowledge",
        "/logout",
        "/wizard/ami",
        "/wizard/bitrix24",
        "/wizard/trunks",
    ] {
        let r = ui.post(path, None, &[("csrf", "x")]).await;
        assert_eq!(location(&r), "/login", "POST {path}");
    }
    // Open without a session: login, the stylesheet, the monitoring endpoints (from an allowed address).
    assert_eq!(ui.get("/login", None).await.status(), StatusCode::OK);
    assert_eq!(ui.get("/assets/style.css", None).await.status(), StatusCode::OK);
    assert_eq!(ui.get("/status", None).await.status(), StatusCode::OK);
    assert_eq!(ui.get("/metrics", None).await.status(), StatusCode::OK);
    // The application's install callback is open (Bitrix24 posts it) but stores nothing it cannot check: not an
    // install, a portal in clear, or (here) no service to check the tokens with.
    let install = |body: &'static str| {
        ui.http
            .post(format!("{}/bitrix24/install", ui.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let none = install("event=ONAPPINSTALL").await.expect("install");
    assert_eq!(none.status(), StatusCode::BAD_REQUEST);
    let clear = install("AUTH_ID=a&REFRESH_ID=r&DOMAIN=portal.example&PROTOCOL=0")
        .await
        .expect("install");
    assert_eq!(clear.status(), StatusCode::BAD_REQUEST);
    let unchecked = install("AUTH_ID=a&REFRESH_ID=r&DOMAIN=portal.example")
        .await
        .expect("install");
    assert_eq!(unchecked.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(ui.store.load_tokens("https://portal.example").expect("read").is_none());
}

#[tokio::test]
async fn first_run_then_login_logout_and_the_rate_limit() {
    let ui = start(local_only()).await;
    assert_eq!(location(&ui.get("/login", None).await), "/setup", "no password yet");
    let session = ui.first_run().await;
    assert!(ui.web.setup_code().is_none());
    assert_eq!(location(&ui.get("/setup", None).await), "/login", "setup is over");
    let home = ui.get("/", Some(&session)).await;
    assert_eq!(home.status(), StatusCode::OK);
    let set = ui.store.setting(web::PASSWORD_SETTING).expect("read").expect("stored");
    assert!(
        set.as_str().expect("text").starts_with("$argon2id$"),
        "stored as argon2"
    );

    let csrf = ui.session_csrf(&session).await;
    let out = ui
        .post(
            "/logout",
            Some(&format!("ringlink_session={session}")),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(location(&out), "/login");
    assert_eq!(
        location(&ui.get("/", Some(&session)).await),
        "/login",
        "the session is gone"
    );

    let ok = ui.login(PASSWORD).await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    let raw: Vec<String> = ok
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let session_cookie = raw
        .iter()
        .find(|c| c.starts_with("ringlink_session="))
        .expect("session cookie");
    assert!(
        session_cookie.contains("HttpOnly") && session_cookie.contains("SameSite=Strict"),
        "{session_cookie}"
    );
    for _ in 0..5 {
        assert_eq!(ui.login("wrong").await.status(), StatusCode::UNAUTHORIZED);
    }
    let limited = ui.login(PASSWORD).await;
    assert_eq!(
        limited.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "even the right password waits"
    );
}

#[tokio::test]
async fn forms_without_their_csrf_token_are_refused() {
    let ui = start(local_only()).await;
    let session = ui.first_run().await;
    let call = "1700000000.7";
    let step = NewStep::new(call, format!("{call}/register"), "register", json!({}));
    ui.store.enqueue(&[step], Timestamp::now()).expect("enqueue");
    let claimed = ui
        .store
        .claim_due(Timestamp::now(), 10, std::time::Duration::from_secs(60))
        .expect("claim");
    ui.store
        .mark_failed(claimed.claimed[0].lease(), "ACCESS_DENIED", Timestamp::now())
        .expect("fail");
    let cookie = format!("ringlink_session={session}");
    let path = format!("/calls/{call}/retry");
    assert_eq!(ui.post(&path, Some(&cookie), &[]).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        ui.post(&path, Some(&cookie), &[("csrf", "guess")]).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(ui.store.step_counts().expect("counts").failed, 1, "nothing was retried");
    let csrf = ui.session_csrf(&session).await;
    let ok = ui.post(&path, Some(&cookie), &[("csrf", &csrf)]).await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&ok), format!("/calls/{call}?retried=1"));
    assert_eq!(
        ui.store.step_counts().expect("counts").pending,
        1,
        "the step is pending again"
    );
    // The login form is guarded too: without the form cookie it is refused.
    let forged = ui.post("/login", None, &[("csrf", "x"), ("password", PASSWORD)]).await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
}

/// The service's side of "Re-process this call", answering what the test tells it and noting each call asked.
#[derive(Default)]
struct FakeReprocess {
    answer: std::sync::Mutex<Option<Result<web::Reprocessed, String>>>,
    asked: std::sync::Mutex<Vec<String>>,
}

impl FakeReprocess {
    fn answer(&self, answer: Result<web::Reprocessed, String>) {
        *self.answer.lock().expect("answer") = Some(answer);
    }
    fn asked(&self) -> Vec<String> {
        self.asked.lock().expect("asked").clone()
    }
}

impl web::Reprocess for FakeReprocess {
    fn reprocess(&self, call: &str) -> web::reprocess::ReprocessFuture {
        self.asked.lock().expect("asked").push(call.to_owned());
        let answer = self
            .answer
            .lock()
            .expect("answer")
            .clone()
            .unwrap_or_else(|| Err("no answer set".into()));
        Box::pin(async move { answer })
    }
}

#[tokio::test]
async fn reprocess_needs_a_session_and_its_csrf_token_and_the_timeline_shows_what_the_service_did() {
    let port = Arc::new(FakeReprocess::default());
    let given = port.clone();
    let ui = start_with(local_only(), move |web, _| web.reprocess(given)).await;
    let session = ui.first_run().await;
    let call = "1700000000.11";
    ui.store
        .append_journal(&[NewJournalEntry::new(
            call,
            Timestamp::now(),
            EntryKind::Ami,
            "call_ended",
        )])
        .expect("journal");
    let path = format!("/calls/{call}/reprocess");
    let timeline = format!("/calls/{call}");
    let cookie = format!("ringlink_session={session}");
    port.answer(Ok(web::Reprocessed {
        source: Some(web::reprocess::Source::Journal),
        added: vec!["register".into(), "finish".into()],
        reset: 0,
        waiting: 2,
        ..web::Reprocessed::default()
    }));

    let anonymous = ui.post(&path, None, &[("csrf", "x")]).await;
    assert_eq!(location(&anonymous), "/login", "no session: the login page");
    assert_eq!(ui.post(&path, Some(&cookie), &[]).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        ui.post(&path, Some(&cookie), &[("csrf", "guess")]).await.status(),
        StatusCode::FORBIDDEN
    );
    assert!(port.asked().is_empty(), "refused requests never reach the service");

    let page = ui.get(&timeline, Some(&session)).await.text().await.expect("html");
    assert!(
        page.contains("id=\"reprocess\"") && page.contains(&format!("action=\"{path}\"")),
        "the timeline offers the button: {page}"
    );
    let csrf = hidden_csrf(&page);
    let done = ui.post(&path, Some(&cookie), &[("csrf", &csrf)]).await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&done), timeline, "back to the call's timeline");
    assert_eq!(port.asked(), [call], "the service was asked for this call");
    let shown = ui.get(&timeline, Some(&session)).await.text().await.expect("html");
    assert!(
        shown.contains("id=\"reprocessed\"")
            && shown.contains("Planned again from the journal")
            && shown.contains("<code>register</code>")
            && shown.contains("<code>finish</code>")
            && shown.contains("2 steps wait to be sent"),
        "{shown}"
    );
    let again = ui.get(&timeline, Some(&session)).await.text().await.expect("html");
    assert!(
        !again.contains("id=\"reprocessed\""),
        "the result is shown once: {again}"
    );

    // A call Bitrix24 has whole: the page says nothing was sent again.
    port.answer(Ok(web::Reprocessed::default()));
    ui.post(&path, Some(&cookie), &[("csrf", &csrf)]).await;
    let complete = ui.get(&timeline, Some(&session)).await.text().await.expect("html");
    assert!(
        complete.contains("Nothing to re-process") && complete.contains("data-changed=\"no\""),
        "{complete}"
    );
    // A live call, and a service that could not do it.
    port.answer(Ok(web::Reprocessed {
        live: true,
        ..web::Reprocessed::default()
    }));
    ui.post(&path, Some(&cookie), &[("csrf", &csrf)]).await;
    let live = ui.get(&timeline, Some(&session)).await.text().await.expect("html");
    assert!(live.contains("still going on"), "{live}");
    port.answer(Err("cannot read the PBX's CEL <db down>".into()));
    ui.post(&path, Some(&cookie), &[("csrf", &csrf)]).await;
    let failed = ui.get(&timeline, Some(&session)).await.text().await.expect("html");
    assert!(
        failed.contains("could not be re-processed") && failed.contains("&lt;db down&gt;"),
        "{failed}"
    );
    assert_eq!(port.asked().len(), 4);
}

#[tokio::test]
async fn caller_names_and_crm_text_are_shown_as_text() {
    let ui = start(local_only()).await;
    let session = ui.first_run().await;
    let call = "1700000000.9";
    let evil = "<script>alert(1)</script>";
    let now = Timestamp::now();
    ui.store
        .append_journal(&[
            NewJournalEntry::new(call, now, EntryKind::Ami, "leg_ringing")
                .data(json!({"caller_name": evil, "number": "+79001234567"})),
            NewJournalEntry::new(call, now, EntryKind::CrmRequest, "register")
                .data(json!({"auth": "SECRET-TOKEN", "params": {"PHONE_NUMBER": "+79001234567"}})),
            NewJournalEntry::new(call, now, EntryKind::Decision, format!("card for {evil}")),
        ])
        .expect("journal");
    let list = ui.get("/calls", Some(&session)).await.text().await.expect("html");
    assert!(list.contains(call), "the call is listed");
    assert!(!list.contains(evil) && list.contains("&lt;script&gt;"), "{list}");
    let page = ui.get(&format!("/calls/{call}"), Some(&session)).await;
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers().get("content-security-policy").cloned();
    let html = page.text().await.expect("html");
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(
        html.contains("card for &lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(!html.contains("SECRET-TOKEN"), "secrets are masked: {html}");
    assert!(csp.is_some(), "a content security policy as a second line of defence");
    assert!(
        !html.contains("id=\"reprocess\""),
        "no re-process button without a service to do it"
    );
    // Filters: by number, and "has errors" (none here).
    let found = ui
        .get("/calls?number=9001234567", Some(&session))
        .await
        .text()
        .await
        .expect("html");
    assert!(found.contains(call));
    let none = ui
        .get("/calls?number=5550000", Some(&session))
        .await
        .text()
        .await
        .expect("html");
    assert!(!none.contains(call));
    let errors = ui
        .get("/calls?errors=1", Some(&session))
        .await
        .text()
        .await
        .expect("html");
    assert!(!errors.contains(call));
}

#[tokio::test]
async fn monitoring_by_allow_list_or_token_and_metrics_parse() {
    let mut settings = local_only();
    settings.status_allow = vec!["192.0.2.0/24".into()];
    settings.metrics_allow = vec![];
    settings.status_token = Some("status-token-0123456789".into());
    settings.metrics_token = Some("metrics-token-0123456789".into());
    let ui = start(settings).await;
    assert_eq!(ui.get("/status", None).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(ui.get("/metrics", None).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        ui.get("/status?token=metrics-token-0123456789", None).await.status(),
        StatusCode::FORBIDDEN,
        "each endpoint has its own token"
    );
    let status = ui
        .http
        .get(format!("{}/status", ui.base))
        .bearer_auth("status-token-0123456789")
        .send()
        .await
        .expect("GET");
    assert_eq!(status.status(), StatusCode::OK);
    let status: serde_json::Value = status.json().await.expect("json");
    assert_eq!(status["app_status"], "Error", "AMI is not connected: {status}");
    assert_eq!(status["version"], "9.9.9");
    assert!(status["reasons"][0].as_str().expect("reason").contains("AMI"));

    ui.telemetry.ami_connected();
    ui.telemetry
        .crm_request("batch", std::time::Duration::from_millis(40), None);
    ui.telemetry.step("telephony.externalcall.register", "sent");
    ui.telemetry.call_ended("incoming", "200");
    ui.telemetry.card_popped(std::time::Duration::from_millis(120));
    ui.telemetry.held(&[("tracker_calls", 3), ("tracker_remembered", 44)]);
    let text = ui
        .get("/metrics?token=metrics-token-0123456789", None)
        .await
        .text()
        .await
        .expect("text");
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let names: Vec<&str> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for name in [
        "ringlink_up_seconds",
        "ringlink_outbox_steps",
        "ringlink_calls_total",
        "ringlink_steps_total",
        "ringlink_bitrix24_request_seconds",
        "ringlink_card_pop_seconds",
    ] {
        assert!(names.contains(&name), "{name} missing from {text}");
    }
    let pop = scrape
        .samples
        .iter()
        .find(|s| s.metric == "ringlink_card_pop_seconds")
        .expect("card pop");
    match &pop.value {
        prometheus_parse::Value::Histogram(buckets) => {
            let le_025 = buckets.iter().find(|b| b.less_than == 0.25).expect("0.25 bucket");
            assert_eq!(le_025.count, 1.0, "{text}");
        }
        other => panic!("card pop is not a histogram: {other:?}"),
    }
    let calls = scrape
        .samples
        .iter()
        .find(|s| s.metric == "ringlink_calls_total")
        .expect("calls");
    let remembered = scrape
        .samples
        .iter()
        .find(|s| s.metric == "ringlink_held_entries" && s.labels.get("what") == Some("tracker_remembered"))
        .expect("remembered keys");
    assert!(
        matches!(remembered.value, prometheus_parse::Value::Gauge(v) if v == 44.0),
        "{:?}",
        remembered.value
    );
    // Where the memory is: SQLite's caches (this UI's store is SQLite) and, with glibc, the heap.
    let memory = |what: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == "ringlink_memory_bytes" && s.labels.get("what") == Some(what))
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v) => v,
                _ => -1.0,
            })
    };
    assert!(memory("sqlite").is_some_and(|b| b > 0.0), "{text}");
    if cfg!(target_env = "gnu") {
        assert!(memory("heap_in_use").is_some_and(|b| b > 0.0), "{text}");
        assert!(memory("heap_free").is_some_and(|b| b >= 0.0), "{text}");
    }
    assert_eq!(calls.labels.get("direction"), Some("incoming"));
    assert!(
        matches!(calls.value, prometheus_parse::Value::Counter(v) if v == 1.0),
        "{:?}",
        calls.value
    );
}

/// The PBX writes recordings under this directory; the test maps it to its own.
const PBX_DIR: &str = "/var/spool/asterisk/monitor/";

fn with_recordings(web: Web, dir: &std::path::Path) -> Web {
    let local = dir.to_owned();
    let links = web::RecordLinks::new(vec![42; 32]);
    web.recordings(
        links,
        Arc::new(move |pbx: &str| local.join(pbx.strip_prefix(PBX_DIR).unwrap_or(pbx))),
    )
}

#[tokio::test]
async fn recordings_by_signed_links_only() {
    let ui = start_with(local_only(), with_recordings).await;
    let session = ui.first_run().await;
    let audio: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(ui._dir.path().join("call.wav"), &audio).expect("recording");
    std::fs::write(ui._dir.path().join("secret.txt"), "not a recording").expect("other file");
    let call = "1700000000.11";
    let step_key = format!("{call}/record");
    let step = NewStep::new(
        call,
        &step_key,
        "attach_record",
        json!({"record_path": format!("{PBX_DIR}call.wav")}),
    );
    ui.store.enqueue(&[step], Timestamp::now()).expect("enqueue");
    ui.store
        .append_journal(&[NewJournalEntry::new(
            call,
            Timestamp::now(),
            EntryKind::Ami,
            "call_ended",
        )])
        .expect("journal");

    // The timeline's player carries a signed link that plays, in ranges too.
    let html = ui
        .get(&format!("/calls/{call}"), Some(&session))
        .await
        .text()
        .await
        .expect("html");
    let at = html.find("src=\"/records/").expect("a player") + "src=\"".len();
    let link = html[at..].split('"').next().expect("link").to_owned();
    let full = ui.get(&link, None).await;
    assert_eq!(full.status(), StatusCode::OK);
    assert_eq!(full.headers()["content-type"], "audio/wav");
    assert_eq!(full.bytes().await.expect("body").as_ref(), audio.as_slice());
    let part = ui
        .http
        .get(format!("{}{link}", ui.base))
        .header("range", "bytes=100-199")
        .send()
        .await
        .expect("GET");
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.headers()["content-range"], "bytes 100-199/10000");
    assert_eq!(part.bytes().await.expect("body").as_ref(), &audio[100..200]);

    // Tampered, expired, for another key, or a path: refused.
    let links = web::RecordLinks::new(vec![42; 32]);
    let token = link.trim_start_matches("/records/");
    let mut tampered = token.to_owned();
    let last = tampered.pop().expect("a char");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let expired = links.sign(call, &step_key, Timestamp::from_secs(1_000));
    let foreign = web::RecordLinks::new(vec![1; 32]).sign(call, &step_key, Timestamp::from_secs(4_000_000_000));
    let unknown_step = links.sign(call, "1700000000.11/other", Timestamp::from_secs(4_000_000_000));
    let other_call = links.sign("1700000000.12", &step_key, Timestamp::from_secs(4_000_000_000));
    for bad in [&tampered, &expired, &foreign, &unknown_step, &other_call] {
        let r = ui.get(&format!("/records/{bad}"), None).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{bad}");
    }
    for path in [
        "/records/..%2Fsecret.txt",
        "/records/%2Fetc%2Fpasswd",
        "/records/..%2F..%2F..%2Fetc%2Fpasswd",
        "/records/secret.txt",
        "/records/call.wav",
    ] {
        let r = ui.get(path, None).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
        assert!(!r.text().await.expect("text").contains("not a recording"), "{path}");
    }
    let r = ui.get("/records/../secret.txt", None).await;
    assert_ne!(r.status(), StatusCode::OK, "a dot-dot path is never served");
}

const CONFIG: &str = "[ami]\naddress = \"127.0.0.1:5038\"\nusername = \"ringlink\"\n\
                      secret = \"never-shown-secret\"   # from the vault\n\n\
                      [engine.black_list]   # never registered\nextensions = []\n";

#[tokio::test]
async fn settings_are_validated_saved_with_their_comments_and_applied() {
    let applied = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = applied.clone();
    let ui = start_with(local_only(), move |web, dir| {
        let path = dir.join("ringlink.toml");
        std::fs::write(&path, CONFIG).expect("config");
        web.settings_file(web::SettingsFile {
            path,
            hooks: vec![],
            validate: Arc::new(|text: &str| {
                if text.contains("\"999\"") {
                    Err("engine.black_list.extensions: 999 is not an extension of this PBX".into())
                } else {
                    Ok(())
                }
            }),
            apply: Arc::new(move |text: &str| {
                seen.lock().expect("lock").push(text.to_owned());
                Ok(())
            }),
        })
    })
    .await;
    let session = ui.first_run().await;
    let cookie = format!("ringlink_session={session}");
    let path = ui._dir.path().join("ringlink.toml");
    let page = ui.get("/settings", Some(&session)).await.text().await.expect("html");
    assert!(!page.contains("never-shown-secret"), "a secret is never rendered back");
    assert!(page.contains("engine.missed.task.enabled"));
    let csrf = hidden_csrf(&page);
    let version = page_version(&page);
    let form = |list: &'static str| {
        vec![
            ("csrf".to_owned(), csrf.clone()),
            ("version".to_owned(), version.clone()),
            ("engine.black_list.extensions".to_owned(), list.to_owned()),
            ("ami.secret".to_owned(), String::new()),
        ]
    };
    let post = |form: Vec<(String, String)>| {
        ui.http
            .post(format!("{}/settings", ui.base))
            .header(COOKIE, cookie.clone())
            .form(&form)
            .send()
    };
    // Without the CSRF token: refused, nothing written.
    let mut no_csrf = form("103");
    no_csrf.remove(0);
    assert_eq!(post(no_csrf).await.expect("POST").status(), StatusCode::FORBIDDEN);
    // Refused by the validation: the message is shown, nothing written or applied.
    let refused = post(form("103, 999")).await.expect("POST");
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(refused.text().await.expect("html").contains("999 is not an extension"));
    assert_eq!(std::fs::read_to_string(&path).expect("config"), CONFIG);
    assert!(applied.lock().expect("lock").is_empty());
    // A valid change: saved with the comments, applied, and the page says so.
    let ok = post(form("103, 104")).await.expect("POST");
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    let text = std::fs::read_to_string(&path).expect("config");
    assert!(
        text.contains("secret = \"never-shown-secret\"   # from the vault"),
        "{text}"
    );
    assert!(
        text.contains("[engine.black_list]   # never registered\nextensions = [\"103\", \"104\"]"),
        "{text}"
    );
    assert_eq!(applied.lock().expect("lock").as_slice(), std::slice::from_ref(&text));
    let after = ui.get(location(&ok), Some(&session)).await.text().await.expect("html");
    assert!(after.contains("settings-saved") && after.contains("engine.black_list.extensions"));
    // The page the admin had is stale now.
    let stale = post(form("105")).await.expect("POST");
    assert_eq!(stale.status(), StatusCode::BAD_REQUEST);
    assert!(stale.text().await.expect("html").contains("reload"));
}

/// Trunks are read by call tracking at start, but the service syncs Bitrix24's external lines as soon as they
/// are saved: the page says both, beside the key and after the save.
#[tokio::test]
async fn changed_trunks_wait_for_a_restart_for_call_tracking_but_not_for_the_external_lines() {
    let ui = start_with(local_only(), |web, dir| {
        let path = dir.join("ringlink.toml");
        std::fs::write(&path, CONFIG).expect("config");
        web.settings_file(web::SettingsFile {
            path,
            hooks: vec![],
            validate: Arc::new(|_: &str| Ok(())),
            apply: Arc::new(|_: &str| Ok(())),
        })
    })
    .await;
    let session = ui.first_run().await;
    let note = "Call tracking uses the new trunks after a restart of ringlink; the Bitrix24 external lines are \
                synced at once (added or renamed when saved).";
    let page = ui.get("/settings", Some(&session)).await.text().await.expect("html");
    assert!(
        page.contains("call tracking after restart") && page.contains(note),
        "{page}"
    );
    let version = page_version(&page);
    let form = [
        ("csrf", hidden_csrf(&page)),
        ("version", version),
        ("tracker.trunks", "rows".into()),
        ("tracker.trunks.0.endpoint", "carrier".into()),
        ("tracker.trunks.0.number", "74950000000".into()),
        ("tracker.trunks.0.name", "Main line".into()),
    ];
    let saved = ui
        .http
        .post(format!("{}/settings", ui.base))
        .header(COOKIE, format!("ringlink_session={session}"))
        .form(&form)
        .send()
        .await
        .expect("POST");
    assert_eq!(saved.status(), StatusCode::SEE_OTHER);
    let after = ui
        .get(location(&saved), Some(&session))
        .await
        .text()
        .await
        .expect("html");
    let notice = after
        .split("id=\"settings-saved\"")
        .nth(1)
        .and_then(|rest| rest.split("</div>").next())
        .expect("the saved notice");
    assert!(notice.contains("tracker.trunks") && notice.contains(note), "{notice}");
}

#[tokio::test]
async fn status_counts_each_hooks_runs_by_outcome_and_warns_of_failures() {
    let ui = start(local_only()).await;
    ui.telemetry.hooks_source(|| {
        vec![
            HookStatus {
                name: "process_client_phone".into(),
                enabled: true,
                calls: 12,
                applied: 9,
                cancelled: 2,
                failures: 1,
            },
            HookStatus {
                name: "get_responsible".into(),
                enabled: true,
                calls: 4,
                applied: 4,
                cancelled: 0,
                failures: 0,
            },
        ]
    });
    let status: serde_json::Value = ui.get("/status", None).await.json().await.expect("json");
    assert_eq!(status["hooks"]["enabled"], json!(true));
    assert_eq!(
        status["hooks"]["hooks"][0],
        json!({"name": "process_client_phone", "enabled": true, "calls": 12, "applied": 9, "cancelled": 2, "failures": 1})
    );
    assert_eq!(status["hooks"]["hooks"][1]["applied"], json!(4));
    let reasons = status.to_string();
    assert!(
        reasons.contains("hook process_client_phone failed 1 time(s)"),
        "{reasons}"
    );
    assert!(!reasons.contains("hook get_responsible failed"), "{reasons}");

    let session = ui.first_run().await;
    let page = ui.get("/", Some(&session)).await.text().await.expect("html");
    assert!(
        page.contains("process_client_phone: 12 runs, 9 applied, 2 cancelled, 1 failed"),
        "{page}"
    );
}

#[tokio::test]
async fn status_names_the_store_its_tenant_and_whether_this_instance_leads() {
    let ui = start(local_only()).await;
    // A standby: no AMI connection is how it should be, not an error.
    ui.telemetry.ami_address("10.0.0.5:5038");
    ui.telemetry.set_store_role(StoreRole {
        backend: "postgresql".into(),
        description: "PostgreSQL db.example:5432/ringlink, tenant north".into(),
        tenant: Some("north".into()),
        role: Role::Standby,
        instance: Some("pbx-b:4242:7f3a".into()),
        leader: Some("pbx-a:1717:09c1".into()),
        generation: Some(3),
    });
    let status: serde_json::Value = ui.get("/status", None).await.json().await.expect("json");
    assert_eq!(
        status["store"],
        json!({
            "backend": "postgresql",
            "description": "PostgreSQL db.example:5432/ringlink, tenant north",
            "tenant": "north",
            "role": "standby",
            "instance": "pbx-b:4242:7f3a",
            "leader": "pbx-a:1717:09c1",
            "generation": 3
        })
    );
    assert!(!status["reasons"].to_string().contains("AMI"), "{status}");
    let session = ui.first_run().await;
    let page = ui.get("/", Some(&session)).await.text().await.expect("html");
    assert!(page.contains("data-role=\"standby\""), "{page}");
    assert!(
        page.contains("standby: waits to take over from pbx-a:1717:09c1"),
        "{page}"
    );
    assert!(page.contains("tenant <strong>north</strong>"), "{page}");

    // The same instance once it took over: the leader, and a missing AMI connection is an error again.
    ui.telemetry.set_store_role(StoreRole {
        role: Role::Leader,
        leader: Some("pbx-b:4242:7f3a".into()),
        generation: Some(4),
        ..ui.telemetry.store_role()
    });
    let status: serde_json::Value = ui.get("/status", None).await.json().await.expect("json");
    assert_eq!(status["store"]["role"], json!("leader"));
    assert_eq!(status["store"]["generation"], json!(4));
    assert_eq!(status["app_status"], json!("Error"));
    assert!(
        status["reasons"]
            .to_string()
            .contains("AMI 10.0.0.5:5038 is not connected"),
        "{status}"
    );
    let page = ui.get("/", Some(&session)).await.text().await.expect("html");
    assert!(page.contains("data-role=\"leader\""), "{page}");
}

/// A period ringlink did not follow the PBX and CEL could not give back is a Warning naming it, its cause and
/// how to enable CEL; once CEL recovered it, `/status` says what CEL gave back and warns no more.
#[tokio::test]
async fn status_names_a_period_whose_calls_may_be_missing_and_the_last_one_recovered() {
    use web::gaps::{GapCause, SavedGap, SavedRecovery, HOW_TO_ENABLE_CEL, LAST_RECOVERED, MAY_BE_MISSING};
    // The period below ended days ago: it warns as long as this says.
    let ui = start(WebSettings {
        gap_warning_hours: 100 * 365 * 24,
        ..local_only()
    })
    .await;
    ui.telemetry.ami_connected();
    let status: serde_json::Value = ui.get("/status", None).await.json().await.expect("json");
    let reasons_before = status["reasons"].as_array().expect("reasons").len();
    assert_eq!(status["gaps"], json!({"may_be_missing": null, "last_recovered": null}));

    // 2026-11-22 09:00:00 – 09:20:00 UTC, while ringlink was stopped, without [cel].
    let (from, to) = (1_795_338_000_000_000_i64, 1_795_339_200_000_000_i64);
    let message = web::gaps::missing_sentence(
        "2026-11-22 12:00:00",
        "2026-11-22 12:20:00",
        &[GapCause::RinglinkStopped],
        HOW_TO_ENABLE_CEL,
    );
    let gap = SavedGap {
        from,
        to,
        causes: vec![GapCause::RinglinkStopped],
        how_to_recover: Some(HOW_TO_ENABLE_CEL.to_owned()),
        message: Some(message.clone()),
        acknowledged_at: None,
    };
    ui.store
        .set_setting(
            MAY_BE_MISSING,
            &serde_json::to_value(&gap).expect("json"),
            Timestamp::now(),
        )
        .expect("setting");
    let status: serde_json::Value = ui.get("/status", None).await.json().await.expect("json");
    // A warning, not an error: the service runs, calls of the period may be missing.
    assert_eq!(status["app_status"], json!("Warning"), "{status}");
    let reasons = status["reasons"].as_array().expect("reasons");
    assert_eq!(reasons.len(), reasons_before + 1, "{status}");
    assert!(reasons.contains(&json!(message)), "{status}");
    assert!(
        message.contains("ringlink was stopped") && message.contains("[cel] in ringlink.toml"),
        "{message}"
    );
    assert_eq!(
        status["gaps"]["may_be_missing"],
        json!({
            "from": "2026-11-22T09:00:00Z",
            "to": "2026-11-22T09:20:00Z",
            "causes": ["ringlink_stopped"],
            "how_to_recover": HOW_TO_ENABLE_CEL,
            "message": message,
            "acknowledged": false,
            "acknowledged_at": null,
            "warning": true,
        })
    );
    assert_eq!(status["gaps"]["last_recovered"], json!(null));

    // CEL configured since: the period was recovered, five calls found, three of them registered now.
    ui.store.delete_setting(MAY_BE_MISSING).expect("cleared");
    let recovered = SavedRecovery {
        from,
        to,
        causes: vec![GapCause::RinglinkStopped, GapCause::AmiDisconnected],
        calls_found: 5,
        registered: 3,
        already_handled: 2,
        at: to + 5_000_000,
        message: "calls of the gap recovered from CEL: …".into(),
    };
    ui.store
        .set_setting(
            LAST_RECOVERED,
            &serde_json::to_value(&recovered).expect("json"),
            Timestamp::now(),
        )
        .expect("setting");
    let status: serde_json::Value = ui.get("/status", None).await.json().await.expect("json");
    assert!(!status["reasons"].to_string().contains("may be missing"), "{status}");
    assert_eq!(
        status["reasons"].as_array().expect("reasons").len(),
        reasons_before,
        "{status}"
    );
    assert_eq!(status["gaps"]["may_be_missing"], json!(null));
    assert_eq!(
        status["gaps"]["last_recovered"],
        json!({
            "from": "2026-11-22T09:00:00Z",
            "to": "2026-11-22T09:20:00Z",
            "causes": ["ringlink_stopped", "ami_disconnected"],
            "calls_found": 5,
            "registered": 3,
            "already_handled": 2,
            "recovered_at": "2026-11-22T09:20:05Z",
            "message": "calls of the gap recovered from CEL: …",
        })
    );
}

fn missing_period(from: Timestamp, to: Timestamp) -> web::gaps::SavedGap {
    use web::gaps::{GapCause, HOW_TO_ENABLE_CEL};
    web::gaps::SavedGap {
        from: from.as_micros(),
        to: to.as_micros(),
        causes: vec![GapCause::AmiDisconnected],
        how_to_recover: Some(HOW_TO_ENABLE_CEL.to_owned()),
        message: Some(format!(
            "calls between {} and {} may be missing",
            from.as_micros(),
            to.as_micros()
        )),
        acknowledged_at: None,
    }
}

fn save_missing(ui: &Ui, gap: &web::gaps::SavedGap) {
    ui.store
        .set_setting(
            web::gaps::MAY_BE_MISSING,
            &serde_json::to_value(gap).expect("json"),
            Timestamp::now(),
        )
        .expect("setting");
}

async fn missing_warns(ui: &Ui) -> (bool, serde_json::Value) {
    let status: serde_json::Value = ui.get("/status", None).await.json().await.expect("json");
    let message = status["gaps"]["may_be_missing"]["message"].clone();
    let warns = status["reasons"].as_array().expect("reasons").contains(&message);
    (warns, status)
}

/// The stored period is a Warning, not acknowledged.
async fn warns_unacknowledged(ui: &Ui) {
    let (warns, status) = missing_warns(ui).await;
    assert!(warns, "{status}");
    assert_eq!(
        status["gaps"]["may_be_missing"]["acknowledged"],
        json!(false),
        "{status}"
    );
}

/// Acknowledging a period that may miss calls (a session and its CSRF token needed) keeps it on `/status` but
/// ends its Warning; a later gap warns again; an unacknowledged period warns for `gap_warning_hours` only.
#[tokio::test]
async fn a_period_that_may_miss_calls_warns_until_acknowledged_or_older_than_the_limit() {
    let ui = start(local_only()).await;
    ui.telemetry.ami_connected();
    let session = ui.first_run().await;
    let cookie = format!("ringlink_session={session}");
    let now = Timestamp::now();
    let hours_ago = |h: u64| now.saturating_sub(std::time::Duration::from_secs(h * 3600));
    let first = missing_period(hours_ago(3), hours_ago(2));
    save_missing(&ui, &first);
    let (warns, status) = missing_warns(&ui).await;
    assert!(warns, "{status}");
    assert_eq!(status["app_status"], json!("Warning"), "{status}");
    let page = ui.get("/", Some(&session)).await.text().await.expect("html");
    assert!(page.contains("id=\"acknowledge-gap\""), "{page}");
    let to = first.to.to_string();

    // Without a session: the login page; without the CSRF token: refused. Still a Warning.
    let r = ui.post("/gaps/acknowledge", None, &[("csrf", "x"), ("to", &to)]).await;
    assert_eq!(location(&r), "/login");
    let r = ui.post("/gaps/acknowledge", Some(&cookie), &[("to", &to)]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = ui
        .post("/gaps/acknowledge", Some(&cookie), &[("csrf", "guess"), ("to", &to)])
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    warns_unacknowledged(&ui).await;

    // With both: shown, acknowledged, no Warning reason.
    let csrf = ui.session_csrf(&session).await;
    let r = ui
        .post("/gaps/acknowledge", Some(&cookie), &[("csrf", &csrf), ("to", &to)])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/");
    let (warns, status) = missing_warns(&ui).await;
    assert!(!warns, "{status}");
    let missing = &status["gaps"]["may_be_missing"];
    assert_eq!(missing["acknowledged"], json!(true), "{status}");
    assert_eq!(missing["warning"], json!(false), "{status}");
    assert!(missing["acknowledged_at"].is_string(), "{status}");
    assert_eq!(missing["message"], json!(first.message), "{status}");
    let page = ui.get("/", Some(&session)).await.text().await.expect("html");
    assert!(
        page.contains("gap-acknowledged") && !page.contains("id=\"acknowledge-gap\""),
        "{page}"
    );

    // A later gap saves a new period: a Warning again, and the old form does not acknowledge it.
    let later = missing_period(hours_ago(3), now);
    save_missing(&ui, &later);
    warns_unacknowledged(&ui).await;
    let r = ui
        .post("/gaps/acknowledge", Some(&cookie), &[("csrf", &csrf), ("to", &to)])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (warns, status) = missing_warns(&ui).await;
    assert!(warns, "a stale Acknowledge leaves the new period warning: {status}");

    // Unacknowledged, ended more than gap_warning_hours (24) ago: shown, no Warning.
    let old = missing_period(hours_ago(26), hours_ago(25));
    save_missing(&ui, &old);
    let (warns, status) = missing_warns(&ui).await;
    assert!(!warns, "{status}");
    let missing = &status["gaps"]["may_be_missing"];
    assert_eq!(missing["acknowledged"], json!(false), "{status}");
    assert_eq!(missing["warning"], json!(false), "{status}");
    assert_eq!(missing["message"], json!(old.message), "{status}");
}

/// `/status` names the CRM ringlink records calls in: with none a warning, with amoCRM its own name (not
/// Bitrix24's) in the reachability error, the JSON and the Status page.
#[tokio::test]
async fn status_names_the_configured_crm() {
    let ui = start(local_only()).await;
    ui.telemetry.ami_connected();
    let status: serde_json::Value = ui.get("/status", None).await.json().await.expect("json");
    assert_eq!(status["app_status"], json!("Warning"), "{status}");
    assert_eq!(status["crm"]["name"], json!(null));
    assert!(
        status["reasons"].to_string().contains("no CRM is configured"),
        "{status}"
    );

    ui.telemetry.crm_configured("amoCRM");
    ui.telemetry.crm_request(
        "POST /api/v4/calls",
        std::time::Duration::from_millis(40),
        Some("the account blocked this IP address"),
    );
    let status: serde_json::Value = ui.get("/status", None).await.json().await.expect("json");
    assert_eq!(status["app_status"], json!("Error"), "{status}");
    assert_eq!(status["crm"]["name"], json!("amoCRM"));
    assert_eq!(status["crm"]["reachable"], json!(false));
    let reasons = status["reasons"].to_string();
    assert!(
        reasons.contains("amoCRM is not reachable: the account blocked this IP address"),
        "{reasons}"
    );
    assert!(!reasons.contains("Bitrix24"), "{reasons}");
    let session = ui.first_run().await;
    let page = ui.get("/", Some(&session)).await.text().await.expect("html");
    assert!(page.contains("<h2>amoCRM</h2>"), "{page}");
}
