//! The admin UI in a real headless Chromium (Debian's `chromium` + `chromium-driver`, driven over WebDriver),
//! against `ringlink run` between the real Asterisk test bed and the Bitrix24 emulator.
//!
//! On failure the browser's screenshot is saved under `target/web-ui-screenshots/`.

#[path = "e2e/checks.rs"]
#[allow(dead_code)]
mod checks;
#[path = "e2e/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use harness::{E2e, WAIT};
use testbed::scenarios;

const PASSWORD: &str = "correct horse battery";

/// chromedriver, ended with the test.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts chromedriver and a fresh headless Chromium session.
async fn browser(profile: &std::path::Path) -> (Driver, Client) {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian package chromium-driver; scripts/test.sh installs it)");
    let driver = Driver(child);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--lang=en-US", format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => return (driver, client),
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot start a Chromium session: {e}"),
        }
    }
}

async fn save_screenshot(browser: &Client, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/web-ui-screenshots");
    if let Ok(png) = browser.screenshot().await {
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("{name}.png"));
        let _ = std::fs::write(&path, png);
        eprintln!("screenshot: {}", path.display());
    }
}

type Step = Result<(), String>;

fn fail(what: &str) -> impl FnOnce(fantoccini::error::CmdError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// The text of the first element matching `css`, waiting (up to 10 s) for it to appear: a form submitted by a click
/// may still be loading its answer when the next step looks.
async fn text_of(browser: &Client, css: &str) -> Result<String, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match browser.find(Locator::Css(css)).await {
            Ok(element) => return element.text().await.map_err(fail(css)),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(fail(css)(e)),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn body(browser: &Client) -> Result<String, String> {
    text_of(browser, "body").await
}

/// Waits until the page (reloaded each try) contains `needle`.
async fn wait_for_text(browser: &Client, url: &str, needle: &str) -> Step {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        browser.goto(url).await.map_err(fail(url))?;
        let text = body(browser).await?;
        if text.contains(needle) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("{url} never showed {needle:?}; it shows:\n{text}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The first-run page: the setup code from ringlink's log, then the password.
async fn first_run(browser: &Client, e2e: &E2e) -> Step {
    let base = e2e.web_url();
    browser
        .goto(&format!("{base}/login"))
        .await
        .map_err(fail("open login"))?;
    let url = browser.current_url().await.map_err(fail("url"))?;
    if !url.path().ends_with("/setup") {
        return Err(format!("without a password the UI should ask to set one, got {url}"));
    }
    let log = e2e.log();
    let code = log
        .split("setup_code=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or_else(|| format!("no setup code in the log:\n{log}"))?
        .to_owned();
    for (name, value) in [("code", code.as_str()), ("password", PASSWORD), ("again", PASSWORD)] {
        browser
            .find(Locator::Css(&format!("input[name={name}]")))
            .await
            .map_err(fail(name))?
            .send_keys(value)
            .await
            .map_err(fail(name))?;
    }
    click(browser, "save").await?;
    // On to the rest of the setup.
    path_is(browser, "/wizard/ami").await
}

async fn click(browser: &Client, id: &str) -> Step {
    browser
        .find(Locator::Id(id))
        .await
        .map_err(fail(id))?
        .click()
        .await
        .map_err(fail(id))
}

async fn type_into(browser: &Client, css: &str, value: &str) -> Step {
    let field = browser.find(Locator::Css(css)).await.map_err(fail(css))?;
    field.clear().await.map_err(fail(css))?;
    field.send_keys(value).await.map_err(fail(css))
}

/// Waits (a form's submission navigates on its own time) until the browser is at `path`.
async fn path_is(browser: &Client, path: &str) -> Step {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let url = browser.current_url().await.map_err(fail("url"))?;
        if url.path() == path {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("expected {path}, at {url}:\n{}", body(browser).await?));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The setup wizard against the test bed and the emulator: the AMI test logs in and lists the phones and the
/// carrier trunk, the webhook test names the emulator's user, the trunks page saves a lead source the next call
/// carries, and the last page shows that call arriving.
async fn wizard(browser: &Client, e2e: &E2e) -> Step {
    // The PBX page starts from the file's address and user; the secret is typed (write-only).
    type_into(browser, "input[name=secret]", e2e.bed.ami_secret()).await?;
    click(browser, "ami-test").await?;
    let version = text_of(browser, "#ami-version").await?;
    if !version.starts_with("22") {
        return Err(format!("the AMI test should show Asterisk 22, shows {version:?}"));
    }
    let mut trunks = Vec::new();
    for cell in browser
        .find_all(Locator::Css("tr.trunk td.endpoint"))
        .await
        .map_err(fail("trunks"))?
    {
        trunks.push(cell.text().await.map_err(fail("trunk"))?);
    }
    let mut phones = Vec::new();
    for cell in browser
        .find_all(Locator::Css("tr.phone td.endpoint"))
        .await
        .map_err(fail("phones"))?
    {
        phones.push(cell.text().await.map_err(fail("phone"))?);
    }
    if trunks != ["carrier"] || !["101", "102", "103"].iter().all(|p| phones.iter().any(|x| x == p)) {
        return Err(format!("the AMI test found trunks {trunks:?} and phones {phones:?}"));
    }
    // A wrong secret: the test says so.
    type_into(browser, "input[name=secret]", "not-the-secret").await?;
    click(browser, "ami-test").await?;
    let refused = text_of(browser, "#ami-result").await?;
    if !refused.contains("failed") {
        return Err(format!("a wrong secret should fail the test: {refused}"));
    }
    type_into(browser, "input[name=secret]", e2e.bed.ami_secret()).await?;
    click(browser, "ami-save").await?;
    path_is(browser, "/wizard/bitrix24").await?;

    type_into(browser, "input[name=webhook_url]", &e2e.emu.webhook_url()).await?;
    click(browser, "crm-test").await?;
    let user = text_of(browser, "#crm-user").await?;
    if !user.contains("(ID 1)") {
        return Err(format!("the webhook test should name the webhook's user: {user:?}"));
    }
    click(browser, "crm-save").await?;
    path_is(browser, "/wizard/trunks").await?;

    // The file's trunk is listed; give it a lead source and a responsible.
    let endpoint = browser
        .find(Locator::Css("input[name='trunk.0.endpoint']"))
        .await
        .map_err(fail("trunk row"))?
        .prop("value")
        .await
        .map_err(fail("trunk row"))?
        .unwrap_or_default();
    if endpoint != "carrier" {
        return Err(format!(
            "the trunks page should list the carrier trunk first, has {endpoint:?}"
        ));
    }
    type_into(browser, "input[name='trunk.0.crm_source']", "CALL").await?;
    type_into(browser, "input[name='trunk.0.responsible']", "1").await?;
    click(browser, "trunks-save").await?;
    path_is(browser, "/wizard/call").await?;
    let file = std::fs::read_to_string(e2e.config_path()).map_err(|e| format!("read the config: {e}"))?;
    if !file.contains("[[engine.trunks]]") || !file.contains("crm_source = \"CALL\"") {
        return Err(format!("the trunk's lead source is not in the file:\n{file}"));
    }
    text_of(browser, "#call-waiting").await?;
    // A call now: the page (reloading itself every 3 s) shows it, and its registration carries the lead source.
    let registers = e2e.emu.requests_for("telephony.externalcall.register").len();
    scenarios::play(&e2e.bed, "s1")
        .await
        .map_err(|e| format!("play S1: {e}"))?;
    let deadline = tokio::time::Instant::now() + WAIT;
    // The page reloads itself: read its source, not elements that a reload makes stale.
    loop {
        let source = browser.source().await.map_err(fail("page source"))?;
        if source.contains("id=\"call-arrived\"") {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("the test call never showed:\n{source}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let sent = e2e
        .wait_requests("telephony.externalcall.register", registers + 1, WAIT)
        .await;
    let source = sent[registers].param_str("CRM_SOURCE");
    if source.as_deref() != Some("CALL") {
        return Err(format!(
            "the call after the wizard should carry CRM_SOURCE=CALL, has {source:?}"
        ));
    }
    click(browser, "wizard-done").await?;
    let status = text_of(browser, "#app-status").await?;
    if !["Ok", "Warning"].contains(&status.as_str()) {
        return Err(format!("after the wizard the status page shows {status}"));
    }
    Ok(())
}

/// A local application's install: the ONAPPINSTALL POST with tokens the portal accepts is stored (a forged one
/// is refused and stores nothing); the wizard then shows the portal and writes the application into the file,
/// which `ringlink check` finds working.
async fn application_install(browser: &Client, e2e: &E2e) -> Step {
    let app = e2e.emu.app_credentials();
    let http = reqwest::Client::new();
    let install = |token: &str| {
        let form = [
            ("event", "ONAPPINSTALL"),
            ("data[VERSION]", "1"),
            ("data[LANGUAGE_ID]", "ru"),
            ("auth[access_token]", token),
            ("auth[refresh_token]", app.refresh_token.as_str()),
            ("auth[expires_in]", "3600"),
            ("auth[client_endpoint]", app.client_endpoint.as_str()),
            ("auth[member_id]", "a223c6b3710f85df22e9377d6c4f7553"),
            ("auth[application_token]", "app-token-from-install"),
        ];
        http.post(format!("{}/bitrix24/install", e2e.web_url()))
            .form(&form)
            .send()
    };
    let forged = install("forged-access-token").await.map_err(|e| e.to_string())?;
    if forged.status() != reqwest::StatusCode::FORBIDDEN {
        return Err(format!(
            "a token the portal refuses must be refused: {}",
            forged.status()
        ));
    }
    let db = e2e.dir.path().join("ringlink.db");
    let stored = || {
        store::SqliteStore::open(&db)
            .and_then(|s| store::Store::load_tokens(&s, &e2e.emu.base_url()))
            .map_err(|e| e.to_string())
    };
    if stored()?.is_some() {
        return Err("a refused install stored tokens".into());
    }
    let accepted = install(&app.access_token).await.map_err(|e| e.to_string())?;
    if !accepted.status().is_success() {
        return Err(format!(
            "the install was refused: {}",
            accepted.text().await.unwrap_or_default()
        ));
    }
    let tokens = stored()?.ok_or("the install's tokens are not in the store")?;
    if tokens.refresh_token != app.refresh_token {
        return Err("the stored refresh token is not the install's".into());
    }
    browser
        .goto(&format!("{}/wizard/bitrix24", e2e.web_url()))
        .await
        .map_err(fail("wizard"))?;
    let shown = text_of(browser, "#app-installed").await?;
    if !shown.contains(&e2e.emu.base_url()) {
        return Err(format!("the wizard should show the installed portal: {shown}"));
    }
    type_into(browser, "input[name=client_id]", &app.client_id).await?;
    type_into(browser, "input[name=client_secret]", &app.client_secret).await?;
    type_into(browser, "input[name=oauth_url]", &e2e.emu.oauth_url()).await?;
    click(browser, "app-save").await?;
    path_is(browser, "/wizard/trunks").await?;
    let file = std::fs::read_to_string(e2e.config_path()).map_err(|e| format!("read the config: {e}"))?;
    if file.contains("webhook_url") || !file.contains(&format!("portal_url = \"{}\"", e2e.emu.base_url())) {
        return Err(format!(
            "the file should hold the application, not the webhook:\n{file}"
        ));
    }
    // Off the test's runtime thread: the emulator answers on it.
    let config = e2e.config_path();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_ringlink"))
            .args(["check", "--config"])
            .arg(config)
            .output()
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !text.contains("ok       bitrix24: reachable") {
        return Err(format!("ringlink check with the installed application:\n{text}"));
    }
    Ok(())
}

async fn journal_shows_the_call(browser: &Client, e2e: &E2e) -> Step {
    let base = e2e.web_url();
    let records = e2e.emu.requests_for("telephony.externalcall.attachrecord").len();
    scenarios::play(&e2e.bed, "s1")
        .await
        .map_err(|e| format!("play S1: {e}"))?;
    e2e.wait_requests("telephony.externalcall.attachrecord", records + 1, WAIT)
        .await;
    wait_for_text(browser, &format!("{base}/calls"), "attach_record done").await?;
    browser
        .find(Locator::Css("a.call"))
        .await
        .map_err(fail("a call in the journal"))?
        .click()
        .await
        .map_err(fail("open the call"))?;
    // The journal may show an earlier call's "attach_record done" (the wizard's test call) before this one's
    // last answer is journaled: the timeline is read until it has it all.
    let deadline = tokio::time::Instant::now() + WAIT;
    let needles = [
        "leg_ringing",
        "leg_answered",
        "to Bitrix24",
        "from Bitrix24",
        "register",
        "finish",
    ];
    loop {
        let timeline = body(browser).await?;
        let Some(lacking) = needles.iter().find(|needle| !timeline.contains(*needle)) else {
            break;
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("the timeline lacks {lacking:?}:\n{timeline}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        browser.refresh().await.map_err(fail("reload the timeline"))?;
    }
    // The recording plays from a signed link.
    let player = browser
        .find(Locator::Css("audio.player"))
        .await
        .map_err(fail("the recording's player"))?;
    let src = player
        .attr("src")
        .await
        .map_err(fail("player src"))?
        .unwrap_or_default();
    if !src.starts_with("/records/") {
        return Err(format!("the player's source is not a signed link: {src:?}"));
    }
    // Filters: the client's number finds it; a number nobody called does not.
    browser
        .goto(&format!("{base}/calls?number={}", harness::CLIENT_BASE))
        .await
        .map_err(fail("filter"))?;
    if browser
        .find_all(Locator::Css("a.call"))
        .await
        .map_err(fail("calls"))?
        .is_empty()
    {
        return Err("filtering by the client's number lost the call".into());
    }
    browser
        .goto(&format!("{base}/calls?number=5550001"))
        .await
        .map_err(fail("filter"))?;
    if !browser
        .find_all(Locator::Css("a.call"))
        .await
        .map_err(fail("calls"))?
        .is_empty()
    {
        return Err("filtering by another number still lists the call".into());
    }
    Ok(())
}

async fn language_switch(browser: &Client, e2e: &E2e) -> Step {
    browser
        .goto(&format!("{}/calls", e2e.web_url()))
        .await
        .map_err(fail("calls"))?;
    let english = text_of(browser, "h1").await?;
    browser
        .find(Locator::Id("lang-ru"))
        .await
        .map_err(fail("RU"))?
        .click()
        .await
        .map_err(fail("RU"))?;
    let russian = text_of(browser, "h1").await?;
    if english != "Calls journal" || russian != "Журнал звонков" {
        return Err(format!("language switch: {english:?} → {russian:?}"));
    }
    browser
        .find(Locator::Id("lang-en"))
        .await
        .map_err(fail("EN"))?
        .click()
        .await
        .map_err(fail("EN"))?;
    let back = text_of(browser, "h1").await?;
    if back != "Calls journal" {
        return Err(format!("back to English: {back:?}"));
    }
    Ok(())
}

/// The comment lines the test's configuration carries around the key the UI changes.
const TASK_SECTION: &str = "[engine.missed.task]   # the missed-call task, switched on from the admin UI\n\
                            enabled = false        # off until the UI turns it on\n";

/// The settings page turns the missed-call task on with a title of its own and blacklists nothing new; the file
/// keeps its comments, and the next missed call (S2) makes Bitrix24 receive the task with that title.
async fn a_setting_changes_the_next_call(browser: &Client, e2e: &E2e) -> Step {
    let base = e2e.web_url();
    browser
        .goto(&format!("{base}/settings"))
        .await
        .map_err(fail("settings"))?;
    browser
        .find(Locator::Css("input[type=checkbox][name='engine.missed.task.enabled']"))
        .await
        .map_err(fail("the task switch"))?
        .click()
        .await
        .map_err(fail("the task switch"))?;
    let title = browser
        .find(Locator::Css("input[name='engine.missed.task.title']"))
        .await
        .map_err(fail("the task title"))?;
    title.clear().await.map_err(fail("clear the title"))?;
    title
        .send_keys("Call back {phone} (set in the UI)")
        .await
        .map_err(fail("type the title"))?;
    browser
        .find(Locator::Id("save-settings"))
        .await
        .map_err(fail("save"))?
        .click()
        .await
        .map_err(fail("save"))?;
    let saved = text_of(browser, "#settings-saved").await?;
    if !saved.contains("engine.missed.task.enabled") || !saved.contains("engine.missed.task.title") {
        return Err(format!("the page should say the task settings were applied: {saved}"));
    }
    let file = std::fs::read_to_string(e2e.config_path()).map_err(|e| format!("read the config: {e}"))?;
    for kept in [
        "[engine.missed.task]   # the missed-call task, switched on from the admin UI",
        "enabled = true        # off until the UI turns it on",
        "title = \"Call back {phone} (set in the UI)\"",
        "[[tracker.trunks]]",
    ] {
        if !file.contains(kept) {
            return Err(format!("the saved file lacks {kept:?}:\n{file}"));
        }
    }
    scenarios::play(&e2e.bed, "s2")
        .await
        .map_err(|e| format!("play S2: {e}"))?;
    let tasks = e2e.wait_requests("tasks.task.add", 1, WAIT).await;
    let title = tasks[0]
        .param("fields")
        .and_then(|f| f.get("TITLE").cloned())
        .unwrap_or_default();
    let expected = format!("Call back {} (set in the UI)", harness::CLIENT_BASE);
    if !title
        .as_str()
        .is_some_and(|t| t.contains("(set in the UI)") && t.contains(harness::CLIENT_BASE))
    {
        return Err(format!(
            "the missed call's task should be titled like {expected:?}, got {title}"
        ));
    }
    Ok(())
}

/// The Users page lists the emulator's employees by extension and its button asks for a refresh; the Logs page
/// shows ringlink's recent lines by level, with the first-run code masked.
async fn users_and_logs(browser: &Client, e2e: &E2e) -> Step {
    let base = e2e.web_url();
    browser.goto(&format!("{base}/users")).await.map_err(fail("users"))?;
    let extensions: Vec<String> = {
        let mut found = Vec::new();
        for cell in browser
            .find_all(Locator::Css("td.ext"))
            .await
            .map_err(fail("extensions"))?
        {
            found.push(cell.text().await.map_err(fail("extension"))?);
        }
        found
    };
    for ext in ["101", "102", "103"] {
        if !extensions.iter().any(|e| e == ext) {
            return Err(format!("the Users page lacks extension {ext}: {extensions:?}"));
        }
    }
    let refreshes = e2e.emu.requests_for("user.get").len();
    browser
        .find(Locator::Id("refresh-users"))
        .await
        .map_err(fail("refresh"))?
        .click()
        .await
        .map_err(fail("refresh"))?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while e2e.emu.requests_for("user.get").len() <= refreshes {
        if tokio::time::Instant::now() >= deadline {
            return Err("the refresh button did not make ringlink ask Bitrix24 for the users".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = e2e.log();
    let code = log
        .split("setup_code=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("no-code-in-the-log");
    browser
        .goto(&format!("{base}/logs?level=info"))
        .await
        .map_err(fail("logs"))?;
    let info = text_of(browser, "#log-lines").await?;
    if !info.contains("admin UI listening") || !info.contains("setup_code=***") || info.contains(code) {
        return Err(format!(
            "the Logs page at info should show the start, with the setup code masked:\n{info}"
        ));
    }
    browser
        .goto(&format!("{base}/logs?level=warn"))
        .await
        .map_err(fail("logs"))?;
    let warn = text_of(browser, "#log-lines").await?;
    if warn.contains("admin UI listening") || !warn.contains("setup_code=***") {
        return Err(format!(
            "the Logs page at warn should show only warnings and errors:\n{warn}"
        ));
    }
    Ok(())
}

/// `/status` from an allowed address, as a monitoring system reads it, once a call went through.
async fn status_json(browser: &Client, e2e: &E2e) -> Step {
    browser
        .goto(&format!("{}/status", e2e.web_url()))
        .await
        .map_err(fail("status"))?;
    let text = body(browser).await?;
    let status: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("/status: {e}: {text}"))?;
    if status["ami"]["connected"] != true || status["crm"]["reachable"] != true {
        return Err(format!("AMI and Bitrix24 should be up: {status}"));
    }
    Ok(())
}

/// Ends a browser test: on a failed step, its screenshot and the failure with ringlink's log.
async fn end(browser: Client, e2e: E2e, outcome: Result<(), (&str, String)>) {
    if let Err((step, error)) = &outcome {
        save_screenshot(&browser, step).await;
        let _ = browser.clone().close().await;
        panic!("{step}: {error}\nringlink log:\n{}", e2e.log());
    }
    let _ = browser.close().await;
    e2e.stop().await;
}

#[tokio::test]
async fn admin_ui_in_chromium() {
    let e2e = E2e::start(TASK_SECTION).await;
    let profile = tempfile::tempdir().expect("profile dir");
    let (_driver, browser) = browser(profile.path()).await;
    let mut outcome = first_run(&browser, &e2e).await.map_err(|e| ("first_run", e));
    if outcome.is_ok() {
        outcome = wizard(&browser, &e2e).await.map_err(|e| ("wizard", e));
    }
    if outcome.is_ok() {
        outcome = journal_shows_the_call(&browser, &e2e).await.map_err(|e| ("journal", e));
    }
    if outcome.is_ok() {
        outcome = language_switch(&browser, &e2e).await.map_err(|e| ("language", e));
    }
    if outcome.is_ok() {
        outcome = a_setting_changes_the_next_call(&browser, &e2e)
            .await
            .map_err(|e| ("settings", e));
    }
    if outcome.is_ok() {
        outcome = users_and_logs(&browser, &e2e).await.map_err(|e| ("users_logs", e));
    }
    if outcome.is_ok() {
        outcome = status_json(&browser, &e2e).await.map_err(|e| ("status", e));
    }
    if outcome.is_ok() {
        outcome = application_install(&browser, &e2e)
            .await
            .map_err(|e| ("application_install", e));
    }
    end(browser, e2e, outcome).await;
}

/// The timeline of the only call in the journal, once none of its steps waits any more; its path.
async fn settled_timeline(browser: &Client, e2e: &E2e) -> Result<String, String> {
    let base = e2e.web_url();
    let deadline = tokio::time::Instant::now() + WAIT;
    while e2e.calls_ended() == 0 {
        if tokio::time::Instant::now() >= deadline {
            return Err("ringlink never saw the call end".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    browser.goto(&format!("{base}/calls")).await.map_err(fail("journal"))?;
    let link = browser
        .find(Locator::Css("a.call"))
        .await
        .map_err(fail("a call in the journal"))?
        .attr("href")
        .await
        .map_err(fail("its link"))?
        .ok_or("a call without a link")?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        browser.goto(&format!("{base}{link}")).await.map_err(fail("timeline"))?;
        let states: Vec<String> = {
            let mut states = Vec::new();
            for row in browser
                .find_all(Locator::Css("table.steps tbody tr"))
                .await
                .map_err(fail("steps"))?
            {
                states.push(row.attr("class").await.map_err(fail("state"))?.unwrap_or_default());
            }
            states
        };
        let waiting = states.iter().any(|s| s == "state-pending" || s == "state-in_flight");
        if !states.is_empty() && !waiting {
            return Ok(link);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("the steps of {link} never settled: {states:?}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Bitrix24 refuses every register for good (the emulator's `method_refused`): S1's steps fail, the register
/// refused and the rest for want of its CALL_ID. With the portal fixed, "Re-process this call" sends them again:
/// Bitrix24 ends up with the call registered, finished and its recording attached once each. Pressed again, it
/// changes nothing and the page says the call is complete.
async fn reprocess_failed_call(browser: &Client, e2e: &E2e) -> Step {
    e2e.emu.set_fault(b24emu::Fault::MethodRefused {
        method: "telephony.externalcall.register".into(),
    });
    scenarios::play(&e2e.bed, "s1")
        .await
        .map_err(|e| format!("play S1: {e}"))?;
    let link = settled_timeline(browser, e2e).await?;
    let failed = browser
        .find_all(Locator::Css("table.steps tr.state-failed"))
        .await
        .map_err(fail("failed steps"))?
        .len();
    let refused = e2e.emu.requests_for("telephony.externalcall.register");
    if failed == 0 || refused.is_empty() || refused.iter().any(|r| r.is_ok()) {
        return Err(format!(
            "the register should have been refused and the steps failed ({failed} failed):\n{}",
            body(browser).await?
        ));
    }
    e2e.emu.clear_fault();
    click(browser, "reprocess").await?;
    path_is(browser, &link).await?;
    let said = text_of(browser, "#reprocessed").await?;
    if !said.contains("steps set to be sent again") {
        return Err(format!("the page should say the failed steps go again: {said:?}"));
    }
    e2e.wait_requests("telephony.externalcall.attachrecord", 1, WAIT).await;
    let seen = checks::Seen::check_despite_faults(e2e);
    seen.single();
    // Everything is done now: pressed again, nothing is sent and the page says why.
    settled_timeline(browser, e2e).await?;
    click(browser, "reprocess").await?;
    path_is(browser, &link).await?;
    let said = text_of(browser, "#reprocessed").await?;
    if !said.contains("Nothing to re-process") {
        return Err(format!("a complete call should be left alone, the page says {said:?}"));
    }
    let before = e2e.telephony().len();
    e2e.settle(Duration::from_secs(3)).await;
    if e2e.telephony().len() != before {
        return Err(format!(
            "re-processing a complete call sent something:\n{}",
            e2e.describe()
        ));
    }
    let seen = checks::Seen::check_despite_faults(e2e);
    seen.single();
    for method in ["register", "finish", "attachrecord"] {
        let done = e2e
            .emu
            .requests_for(&format!("telephony.externalcall.{method}"))
            .into_iter()
            .filter(|r| r.is_ok())
            .count();
        if done != 1 {
            return Err(format!(
                "{done} successful {method} instead of one:\n{}",
                e2e.describe()
            ));
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_call_whose_steps_failed_for_good_is_reprocessed_from_its_timeline() {
    let e2e = E2e::start(TASK_SECTION).await;
    let profile = tempfile::tempdir().expect("profile dir");
    let (_driver, browser) = browser(profile.path()).await;
    let mut outcome = first_run(&browser, &e2e).await.map_err(|e| ("first_run", e));
    if outcome.is_ok() {
        outcome = reprocess_failed_call(&browser, &e2e)
            .await
            .map_err(|e| ("reprocess", e));
    }
    end(browser, e2e, outcome).await;
}
