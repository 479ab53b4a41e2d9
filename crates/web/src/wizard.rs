//! The setup wizard that follows the first-run password: the PBX (AMI address and credentials, with a test that
//! logs in and lists the PJSIP endpoints and trunks found), Bitrix24 (an incoming webhook tested with `user.current`,
//! or a local application whose install callback hands ringlink its first OAuth tokens), the trunks (numbers,
//! names, lead source, responsible), and a last page that shows a test call arriving in the journal.
//!
//! The install callback is [`crate::install`]. Every page saves through the settings page's writer ([`settings::save`]: only the changed keys, comments kept,
//! checked, atomic rename). The tests themselves are the service's ([`Probes`]): the crate never opens an AMI or
//! Bitrix24 connection of its own.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;
use store::{CallFilter, Timestamp};
use tracing::{info, warn};

use crate::auth::Session;
use crate::i18n::Lang;
use crate::install::{Installed, INSTALL_SETTING};
use crate::pages::{encode, layout, local_time, Frame};
use crate::server::{frame, html_page, internal, lock, Web};
use crate::settings::{self, SaveError, Shown, View};

/// What the AMI test logs in with.
#[derive(Debug, Clone)]
pub struct AmiLogin {
    pub address: String,
    pub username: String,
    pub secret: String,
}

/// What the AMI test found.
#[derive(Debug, Clone, Default)]
pub struct PbxFound {
    pub version: String,
    pub endpoints: Vec<PbxEndpoint>,
}

/// A PJSIP endpoint of the PBX.
#[derive(Debug, Clone)]
pub struct PbxEndpoint {
    pub name: String,
    /// A trunk (not a phone): see the service's probe for how it tells.
    pub trunk: bool,
    /// Its device state (`Not in use`, `Unavailable`…).
    pub state: String,
}

/// How the Bitrix24 test authenticates.
#[derive(Debug, Clone)]
pub enum CrmLogin {
    Webhook {
        url: String,
    },
    /// A local application's access token at the portal's REST base (`client_endpoint`).
    App {
        endpoint: String,
        access_token: String,
    },
}

/// Who Bitrix24 says the credentials belong to.
#[derive(Debug, Clone)]
pub struct CrmFound {
    /// `Name Last (ID 1)`.
    pub user: String,
}

pub type ProbeFuture<T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send>>;

/// The service's connection tests; the error is a sentence naming what to fix.
#[derive(Clone)]
pub struct Probes {
    pub ami: Arc<dyn Fn(AmiLogin) -> ProbeFuture<PbxFound> + Send + Sync>,
    pub crm: Arc<dyn Fn(CrmLogin) -> ProbeFuture<CrmFound> + Send + Sync>,
}

/// What a session tried on the wizard's pages and has not saved yet (a tested secret is kept here, never
/// rendered back into a page).
#[derive(Default, Clone)]
pub(crate) struct Draft {
    ami: Option<AmiLogin>,
    pbx: Option<Result<PbxFound, String>>,
    crm: Option<Result<CrmFound, String>>,
    webhook_url: Option<String>,
}

/// Drafts by session (its CSRF token names it).
#[derive(Default)]
pub(crate) struct Drafts(std::sync::Mutex<HashMap<String, Draft>>);

impl Drafts {
    fn get(&self, session: &Session) -> Draft {
        lock(&self.0).get(&session.csrf).cloned().unwrap_or_default()
    }
    fn update(&self, session: &Session, f: impl FnOnce(&mut Draft)) {
        let mut drafts = lock(&self.0);
        // A handful of admins at most; a long-running service forgets old drafts.
        if drafts.len() > 64 {
            drafts.clear();
        }
        f(drafts.entry(session.csrf.clone()).or_default());
    }
}

const STEPS: [(&str, &str); 4] = [
    ("/wizard/ami", "wiz_ami"),
    ("/wizard/bitrix24", "wiz_crm"),
    ("/wizard/trunks", "wiz_trunks"),
    ("/wizard/call", "wiz_call"),
];

fn steps_nav(l: Lang, current: &str) -> Markup {
    html! {
        ol.wizard-steps {
            @for (i, (path, key)) in STEPS.iter().enumerate() {
                li { @if *path == current { b { (i + 1) ". " (l.t(key)) } } @else { a href=(path) { (i + 1) ". " (l.t(key)) } } }
            }
        }
    }
}

async fn read_view(web: &Web) -> Result<Option<View>, Response> {
    let Some(file) = web.0.config.clone() else {
        return Ok(None);
    };
    match tokio::task::spawn_blocking(move || settings::view(&file)).await {
        Ok(Ok(view)) => Ok(Some(view)),
        Ok(Err(e)) => Err(internal(e.to_string())),
        Err(e) => Err(internal(e.to_string())),
    }
}

fn text(view: &View, path: &str) -> String {
    view.values
        .iter()
        .find(|(k, _)| k.path == path)
        .and_then(|(_, shown)| match shown {
            Shown::Text(t) => Some(t.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn secret_set(view: &View, path: &str) -> bool {
    view.values
        .iter()
        .any(|(k, shown)| k.path == path && *shown == Shown::Secret(true))
}

fn rows(view: &View, path: &str) -> Vec<Vec<String>> {
    view.values
        .iter()
        .find(|(k, _)| k.path == path)
        .and_then(|(_, shown)| match shown {
            Shown::Rows(r) => Some(r.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// Saves `form` (the keys as the settings page names them) with the settings writer.
async fn save(web: &Web, form: Vec<(String, String)>) -> Result<settings::Saved, SaveError> {
    let Some(file) = web.0.config.clone() else {
        return Err(SaveError::Invalid(
            "ringlink was started without a configuration file".into(),
        ));
    };
    let saving = web.clone();
    web.blocking(move || {
        let _one_at_a_time = lock(&saving.0.config_lock);
        let version = settings::view(&file)?.version;
        settings::save(&file, &version, &form)
    })
    .await
    .map_err(|e| SaveError::Io(e.to_string()))?
}

fn no_file(frame: &Frame<'_>) -> Response {
    let l = frame.lang;
    html_page(layout(frame, l.t("wizard"), html! { p.muted { (l.t("set_no_file")) } }))
}

fn saved_note(l: Lang, saved: &settings::Saved) -> Markup {
    html! {
        @if !saved.restart.is_empty() {
            p.warning id="wizard-restart" { (l.t("wiz_restart")) ": " @for k in &saved.restart { code { (k) } " " } }
            (crate::admin::waiting_for_restart(l, &saved.restart))
        }
    }
}

// ---- the PBX ----

#[derive(Deserialize, Default)]
pub(crate) struct AmiForm {
    #[serde(default)]
    action: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    secret: String,
}

pub(crate) async fn ami_page(
    State(web): State<Web>,
    axum::Extension(session): axum::Extension<Session>,
    headers: HeaderMap,
) -> Response {
    let lang = Lang::of(&headers);
    let frame = frame(&web, lang, &session, "/wizard/ami");
    let view = match read_view(&web).await {
        Ok(Some(view)) => view,
        Ok(None) => return no_file(&frame),
        Err(response) => return response,
    };
    let draft = web.0.drafts.get(&session);
    html_page(ami_markup(&frame, &view, &draft, None))
}

pub(crate) async fn ami_post(
    State(web): State<Web>,
    axum::Extension(session): axum::Extension<Session>,
    headers: HeaderMap,
    Form(form): Form<AmiForm>,
) -> Response {
    let lang = Lang::of(&headers);
    let frame = frame(&web, lang, &session, "/wizard/ami");
    let Some(file) = web.0.config.clone() else {
        return no_file(&frame);
    };
    let draft = web.0.drafts.get(&session);
    // An empty secret field: the one tested last, else the file's.
    let secret = if !form.secret.trim().is_empty() {
        form.secret.trim().to_owned()
    } else if let Some(tested) = draft.ami.as_ref().filter(|a| !a.secret.is_empty()) {
        tested.secret.clone()
    } else {
        settings::current(&file, "ami.secret").unwrap_or_default()
    };
    let login = AmiLogin {
        address: form.address.trim().to_owned(),
        username: form.username.trim().to_owned(),
        secret,
    };
    if form.action == "save" {
        let fields = vec![
            ("ami.address".to_owned(), login.address.clone()),
            ("ami.username".to_owned(), login.username.clone()),
            ("ami.secret".to_owned(), login.secret.clone()),
        ];
        return match save(&web, fields).await {
            Ok(saved) => {
                info!(restart = ?saved.restart, "AMI settings saved from the setup wizard");
                Redirect::to("/wizard/bitrix24").into_response()
            }
            Err(SaveError::Io(e)) => internal(e),
            Err(e) => rerender_ami(&web, &frame, &session, Some(e.to_string())).await,
        };
    }
    let Some(probes) = web.0.probes.clone() else {
        return rerender_ami(&web, &frame, &session, Some(lang.t("wiz_no_probe").to_owned())).await;
    };
    let found = (probes.ami)(login.clone()).await;
    if let Err(e) = &found {
        warn!(address = %login.address, error = %e, "setup wizard: the AMI test failed");
    }
    web.0.drafts.update(&session, |d| {
        d.ami = Some(login);
        d.pbx = Some(found);
    });
    rerender_ami(&web, &frame, &session, None).await
}

async fn rerender_ami(web: &Web, frame: &Frame<'_>, session: &Session, error: Option<String>) -> Response {
    let view = match read_view(web).await {
        Ok(Some(view)) => view,
        Ok(None) => return no_file(frame),
        Err(response) => return response,
    };
    let draft = web.0.drafts.get(session);
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    (status, html_page(ami_markup(frame, &view, &draft, error.as_deref()))).into_response()
}

fn ami_markup(frame: &Frame<'_>, view: &View, draft: &Draft, error: Option<&str>) -> Markup {
    let l = frame.lang;
    let address = draft
        .ami
        .as_ref()
        .map(|a| a.address.clone())
        .unwrap_or_else(|| text(view, "ami.address"));
    let username = draft
        .ami
        .as_ref()
        .map(|a| a.username.clone())
        .unwrap_or_else(|| text(view, "ami.username"));
    let secret_known = draft.ami.as_ref().is_some_and(|a| !a.secret.is_empty()) || secret_set(view, "ami.secret");
    layout(
        frame,
        l.t("wizard"),
        html! {
            (steps_nav(l, "/wizard/ami"))
            h2 { (l.t("wiz_ami")) }
            p.muted { (l.t("wiz_ami_intro")) }
            @if let Some(e) = error { p.error id="wizard-error" { (e) } }
            form.card method="post" action="/wizard/ami" {
                input type="hidden" name="csrf" value=(frame.csrf.unwrap_or(""));
                label { (l.t("wiz_ami_address")) input type="text" name="address" value=(address) placeholder="127.0.0.1:5038" required; }
                label { (l.t("wiz_ami_user")) input type="text" name="username" value=(username) required; }
                label { (l.t("wiz_ami_secret")) input type="password" name="secret" autocomplete="new-password"
                    placeholder=(if secret_known { l.t("set_secret_kept") } else { l.t("set_secret_unset") }); }
                button type="submit" name="action" value="test" id="ami-test" { (l.t("wiz_test")) }
                " "
                button type="submit" name="action" value="save" id="ami-save" { (l.t("wiz_save_next")) }
            }
            @match &draft.pbx {
                Some(Ok(found)) => {
                    div.card id="ami-result" {
                        p.ok { (l.t("wiz_ami_ok")) " " span id="ami-version" { (found.version) } }
                        table {
                            thead { tr { th { (l.t("wiz_endpoint")) } th { (l.t("wiz_kind")) } th { (l.t("wiz_state")) } } }
                            tbody {
                                @for e in &found.endpoints {
                                    tr class=(if e.trunk { "trunk" } else { "phone" }) {
                                        td.endpoint { (e.name) }
                                        td { (if e.trunk { l.t("wiz_trunk") } else { l.t("wiz_phone") }) }
                                        td { (e.state) }
                                    }
                                }
                            }
                        }
                    }
                }
                Some(Err(e)) => { p.error id="ami-result" { (l.t("wiz_ami_failed")) ": " (e) } }
                None => {}
            }
        },
    )
}

// ---- Bitrix24 ----

#[derive(Deserialize, Default)]
pub(crate) struct CrmForm {
    #[serde(default)]
    action: String,
    #[serde(default)]
    webhook_url: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    client_secret: String,
    #[serde(default)]
    oauth_url: String,
}

async fn installed(web: &Web) -> Option<Installed> {
    let store = web.0.store.clone();
    let value = web
        .blocking(move || store.setting(INSTALL_SETTING))
        .await
        .ok()?
        .ok()??;
    serde_json::from_value(value).ok()
}

pub(crate) async fn crm_page(
    State(web): State<Web>,
    axum::Extension(session): axum::Extension<Session>,
    headers: HeaderMap,
) -> Response {
    let lang = Lang::of(&headers);
    let frame = frame(&web, lang, &session, "/wizard/bitrix24");
    rerender_crm(&web, &frame, &session, None, None).await
}

async fn rerender_crm(
    web: &Web,
    frame: &Frame<'_>,
    session: &Session,
    error: Option<String>,
    saved: Option<settings::Saved>,
) -> Response {
    let view = match read_view(web).await {
        Ok(Some(view)) => view,
        Ok(None) => return no_file(frame),
        Err(response) => return response,
    };
    let draft = web.0.drafts.get(session);
    let install = installed(web).await;
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let page = crm_markup(frame, &view, &draft, install.as_ref(), error.as_deref(), saved.as_ref());
    (status, html_page(page)).into_response()
}

pub(crate) async fn crm_post(
    State(web): State<Web>,
    axum::Extension(session): axum::Extension<Session>,
    headers: HeaderMap,
    Form(form): Form<CrmForm>,
) -> Response {
    let lang = Lang::of(&headers);
    let frame = frame(&web, lang, &session, "/wizard/bitrix24");
    let Some(file) = web.0.config.clone() else {
        return no_file(&frame);
    };
    let draft = web.0.drafts.get(&session);
    let webhook = if !form.webhook_url.trim().is_empty() {
        form.webhook_url.trim().to_owned()
    } else if let Some(tested) = draft.webhook_url.clone() {
        tested
    } else {
        settings::current(&file, "bitrix24.webhook_url").unwrap_or_default()
    };
    match form.action.as_str() {
        "test" => {
            let Some(probes) = web.0.probes.clone() else {
                return rerender_crm(&web, &frame, &session, Some(lang.t("wiz_no_probe").into()), None).await;
            };
            if webhook.is_empty() {
                return rerender_crm(&web, &frame, &session, Some(lang.t("wiz_webhook_missing").into()), None).await;
            }
            let found = (probes.crm)(CrmLogin::Webhook { url: webhook.clone() }).await;
            if let Err(e) = &found {
                warn!(error = %e, "setup wizard: the Bitrix24 webhook test failed");
            }
            web.0.drafts.update(&session, |d| {
                d.webhook_url = Some(webhook);
                d.crm = Some(found);
            });
            rerender_crm(&web, &frame, &session, None, None).await
        }
        "save_webhook" => {
            if webhook.is_empty() {
                return rerender_crm(&web, &frame, &session, Some(lang.t("wiz_webhook_missing").into()), None).await;
            }
            let mut fields = vec![("bitrix24.webhook_url".to_owned(), webhook)];
            fields.extend(app_removed());
            finish_crm_save(&web, &frame, &session, fields).await
        }
        "save_app" => {
            let Some(install) = installed(&web).await else {
                return rerender_crm(&web, &frame, &session, Some(lang.t("wiz_no_install").into()), None).await;
            };
            let store = web.0.store.clone();
            let portal = install.portal.clone();
            let tokens = web.blocking(move || store.load_tokens(&portal)).await;
            let tokens = match tokens {
                Ok(Ok(Some(tokens))) => tokens,
                Ok(Ok(None)) => {
                    return rerender_crm(&web, &frame, &session, Some(lang.t("wiz_no_install").into()), None).await
                }
                Ok(Err(e)) => return internal(e.to_string()),
                Err(e) => return internal(e.to_string()),
            };
            let client_secret = if form.client_secret.trim().is_empty() {
                settings::current(&file, "bitrix24.client_secret").unwrap_or_default()
            } else {
                form.client_secret.trim().to_owned()
            };
            let fields = vec![
                ("bitrix24.portal_url".to_owned(), install.portal.clone()),
                ("bitrix24.client_id".to_owned(), form.client_id.trim().to_owned()),
                ("bitrix24.client_secret".to_owned(), client_secret),
                ("bitrix24.oauth_url".to_owned(), form.oauth_url.trim().to_owned()),
                ("bitrix24.access_token".to_owned(), tokens.access_token),
                ("bitrix24.refresh_token".to_owned(), tokens.refresh_token),
                ("bitrix24.webhook_url.remove".to_owned(), "true".to_owned()),
            ];
            finish_crm_save(&web, &frame, &session, fields).await
        }
        _ => Redirect::to("/wizard/bitrix24").into_response(),
    }
}

/// The form fields that take an application's keys out of the file.
fn app_removed() -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = ["bitrix24.portal_url", "bitrix24.client_id", "bitrix24.oauth_url"]
        .into_iter()
        .map(|k| (k.to_owned(), String::new()))
        .collect();
    for secret in ["client_secret", "access_token", "refresh_token"] {
        fields.push((format!("bitrix24.{secret}.remove"), "true".to_owned()));
    }
    fields
}

async fn finish_crm_save(web: &Web, frame: &Frame<'_>, session: &Session, fields: Vec<(String, String)>) -> Response {
    match save(web, fields).await {
        Ok(saved) => {
            info!(restart = ?saved.restart, "Bitrix24 settings saved from the setup wizard");
            Redirect::to("/wizard/trunks").into_response()
        }
        Err(SaveError::Io(e)) => internal(e),
        Err(e) => rerender_crm(web, frame, session, Some(e.to_string()), None).await,
    }
}

fn crm_markup(
    frame: &Frame<'_>,
    view: &View,
    draft: &Draft,
    install: Option<&Installed>,
    error: Option<&str>,
    saved: Option<&settings::Saved>,
) -> Markup {
    let l = frame.lang;
    let webhook_known = draft.webhook_url.is_some() || secret_set(view, "bitrix24.webhook_url");
    let csrf = frame.csrf.unwrap_or("");
    html! {
        (layout(frame, l.t("wizard"), html! {
            (steps_nav(l, "/wizard/bitrix24"))
            h2 { (l.t("wiz_crm")) }
            @if let Some(e) = error { p.error id="wizard-error" { (e) } }
            @if let Some(saved) = saved { (saved_note(l, saved)) }
            h3 { (l.t("wiz_webhook")) }
            p.muted { (l.t("wiz_webhook_intro")) }
            form.card method="post" action="/wizard/bitrix24" {
                input type="hidden" name="csrf" value=(csrf);
                label { (l.t("wiz_webhook_url")) input type="password" name="webhook_url" autocomplete="off"
                    placeholder=(if webhook_known { l.t("set_secret_kept") } else { "https://PORTAL.bitrix24.ru/rest/1/SECRET/" }); }
                button type="submit" name="action" value="test" id="crm-test" { (l.t("wiz_test")) }
                " "
                button type="submit" name="action" value="save_webhook" id="crm-save" { (l.t("wiz_save_next")) }
            }
            @match &draft.crm {
                Some(Ok(found)) => {
                    p.ok id="crm-result" { (l.t("wiz_crm_ok")) " " span id="crm-user" { (found.user) } }
                }
                Some(Err(e)) => { p.error id="crm-result" { (l.t("wiz_crm_failed")) ": " (e) } }
                None => {}
            }
            h3 { (l.t("wiz_app")) }
            p.muted { (l.t("wiz_app_intro")) " " code { "/bitrix24/install" } }
            @match install {
                Some(i) => {
                    p.ok id="app-installed" { (l.t("wiz_app_installed")) " " code { (i.portal) } " (" (i.user) ", " (i.at) ")" }
                }
                None => { p.muted id="app-installed" { (l.t("wiz_app_waiting")) } }
            }
            form.card method="post" action="/wizard/bitrix24" {
                input type="hidden" name="csrf" value=(csrf);
                label { "client_id" input type="text" name="client_id" value=(text(view, "bitrix24.client_id")); }
                label { "client_secret" input type="password" name="client_secret" autocomplete="off"
                    placeholder=(if secret_set(view, "bitrix24.client_secret") { l.t("set_secret_kept") } else { l.t("set_secret_unset") }); }
                label { "oauth_url" input type="text" name="oauth_url" value=(text(view, "bitrix24.oauth_url"))
                    placeholder="https://oauth.bitrix.info/oauth/token/"; }
                button type="submit" name="action" value="save_app" id="app-save" disabled[install.is_none()] { (l.t("wiz_save_next")) }
            }
        }))
    }
}

// ---- trunks ----

/// Blank rows offered under the trunks.
const NEW_TRUNKS: usize = 2;
/// A trunk row: endpoint, number, name, lead source, responsible.
type TrunkRow = [String; 5];

fn trunk_rows(view: &View, draft: &Draft) -> Vec<TrunkRow> {
    let engine = rows(view, "engine.trunks");
    let mut out: Vec<TrunkRow> = rows(view, "tracker.trunks")
        .into_iter()
        .map(|t| {
            let number = t.get(1).cloned().unwrap_or_default();
            let e = engine.iter().find(|e| e.first() == Some(&number));
            let at = |row: Option<&Vec<String>>, i: usize| row.and_then(|r| r.get(i)).cloned().unwrap_or_default();
            [
                t.first().cloned().unwrap_or_default(),
                number,
                t.get(2).cloned().unwrap_or_default(),
                at(e, 2),
                at(e, 3),
            ]
        })
        .collect();
    if let Some(Ok(found)) = &draft.pbx {
        for trunk in found.endpoints.iter().filter(|e| e.trunk) {
            if !out.iter().any(|row| row[0] == trunk.name) {
                out.push([
                    trunk.name.clone(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                ]);
            }
        }
    }
    out
}

pub(crate) async fn trunks_page(
    State(web): State<Web>,
    axum::Extension(session): axum::Extension<Session>,
    headers: HeaderMap,
) -> Response {
    let lang = Lang::of(&headers);
    let frame = frame(&web, lang, &session, "/wizard/trunks");
    rerender_trunks(&web, &frame, &session, None).await
}

async fn rerender_trunks(web: &Web, frame: &Frame<'_>, session: &Session, error: Option<String>) -> Response {
    let view = match read_view(web).await {
        Ok(Some(view)) => view,
        Ok(None) => return no_file(frame),
        Err(response) => return response,
    };
    let draft = web.0.drafts.get(session);
    let l = frame.lang;
    let trunks = trunk_rows(&view, &draft);
    let blank: TrunkRow = Default::default();
    let page = layout(
        frame,
        l.t("wizard"),
        html! {
            (steps_nav(l, "/wizard/trunks"))
            h2 { (l.t("wiz_trunks")) }
            p.muted { (l.t("wiz_trunks_intro")) }
            @if let Some(e) = &error { p.error id="wizard-error" { (e) } }
            form.card method="post" action="/wizard/trunks" {
                input type="hidden" name="csrf" value=(frame.csrf.unwrap_or(""));
                table {
                    thead { tr {
                        th { (l.t("wiz_endpoint")) } th { (l.t("wiz_trunk_number")) } th { (l.t("wiz_trunk_name")) }
                        th { (l.t("wiz_trunk_source")) } th { (l.t("wiz_trunk_responsible")) }
                    } }
                    tbody {
                        @for (i, row) in trunks.iter().chain(std::iter::repeat_n(&blank, NEW_TRUNKS)).enumerate() {
                            tr {
                                @for (j, column) in ["endpoint", "number", "name", "crm_source", "responsible"].iter().enumerate() {
                                    td { input type="text" name=(format!("trunk.{i}.{column}")) value=(row[j]); }
                                }
                            }
                        }
                    }
                }
                button type="submit" id="trunks-save" { (l.t("wiz_save_next")) }
            }
        },
    );
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    (status, html_page(page)).into_response()
}

pub(crate) async fn trunks_post(
    State(web): State<Web>,
    axum::Extension(session): axum::Extension<Session>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let lang = Lang::of(&headers);
    let frame = frame(&web, lang, &session, "/wizard/trunks");
    // trunk.<i>.<column> → the tracker's trunks (endpoint, number, name) and the engine's (number, lead source,
    // responsible), one row each per trunk with an endpoint.
    let mut trunks: Vec<TrunkRow> = Vec::new();
    for (name, value) in &form {
        let Some(rest) = name.strip_prefix("trunk.") else {
            continue;
        };
        let Some((index, column)) = rest.split_once('.') else {
            continue;
        };
        let (Ok(index), Some(col)) = (
            index.parse::<usize>(),
            ["endpoint", "number", "name", "crm_source", "responsible"]
                .iter()
                .position(|c| *c == column),
        ) else {
            continue;
        };
        if index >= 100 {
            continue;
        }
        if trunks.len() <= index {
            trunks.resize(index + 1, Default::default());
        }
        trunks[index][col] = value.trim().to_owned();
    }
    trunks.retain(|row| !row[0].is_empty());
    let mut fields = vec![
        ("tracker.trunks".to_owned(), "rows".to_owned()),
        ("engine.trunks".to_owned(), "rows".to_owned()),
    ];
    let mut engine_row = 0;
    for (i, row) in trunks.iter().enumerate() {
        for (column, value) in [("endpoint", &row[0]), ("number", &row[1]), ("name", &row[2])] {
            fields.push((format!("tracker.trunks.{i}.{column}"), value.clone()));
        }
        // The engine's settings are per number; a trunk without a number has none.
        if !row[1].is_empty() && (!row[3].is_empty() || !row[4].is_empty()) {
            for (column, value) in [("number", &row[1]), ("crm_source", &row[3]), ("responsible", &row[4])] {
                fields.push((format!("engine.trunks.{engine_row}.{column}"), value.clone()));
            }
            engine_row += 1;
        }
    }
    match save(&web, fields).await {
        Ok(saved) => {
            info!(applied = ?saved.applied, restart = ?saved.restart, "trunks saved from the setup wizard");
            let since = Timestamp::now().as_micros();
            Redirect::to(&format!("/wizard/call?since={since}")).into_response()
        }
        Err(SaveError::Io(e)) => internal(e),
        Err(e) => rerender_trunks(&web, &frame, &session, Some(e.to_string())).await,
    }
}

// ---- the test call ----

#[derive(Deserialize, Default)]
pub(crate) struct CallQuery {
    #[serde(default)]
    since: Option<i64>,
}

/// Calls journaled since the page was first opened; it reloads every few seconds until one arrives.
pub(crate) async fn call_page(
    State(web): State<Web>,
    axum::Extension(session): axum::Extension<Session>,
    headers: HeaderMap,
    Query(query): Query<CallQuery>,
) -> Response {
    let lang = Lang::of(&headers);
    let Some(since) = query.since else {
        let since = Timestamp::now().as_micros();
        return Redirect::to(&format!("/wizard/call?since={since}")).into_response();
    };
    let filter = CallFilter {
        from: Some(Timestamp::from_micros(since)),
        ..CallFilter::default()
    };
    let store = web.0.store.clone();
    let calls = match web.0.reports.read(move || store.find_calls(&filter, 10)).await {
        Ok(Ok(calls)) => calls,
        Ok(Err(e)) => return internal(e.to_string()),
        Err(e) => return internal(e.to_string()),
    };
    let status = crate::server::read_status(&web).await.ok();
    let path = format!("/wizard/call?since={since}");
    let mut frame = frame(&web, lang, &session, &path);
    let l = lang;
    if calls.is_empty() {
        frame.refresh = Some(3);
    }
    let off = frame.offset_secs;
    html_page(layout(
        &frame,
        l.t("wizard"),
        html! {
            (steps_nav(l, "/wizard/call"))
            h2 { (l.t("wiz_call")) }
            @if let Some(s) = &status {
                ul.checks {
                    li class=(if s.ami.connected { "ok" } else { "error" }) { "AMI " (s.ami.address) ": "
                        (if s.ami.connected { l.t("connected") } else { l.t("disconnected") }) }
                    li class=(if s.crm.reachable == Some(true) { "ok" } else { "warning" }) { "Bitrix24: "
                        (match s.crm.reachable { Some(true) => l.t("wiz_reachable"), Some(false) => l.t("wiz_unreachable"), None => l.t("wiz_not_tried") }) }
                }
            }
            @if calls.is_empty() {
                p id="call-waiting" { (l.t("wiz_call_intro")) }
            } @else {
                p.ok id="call-arrived" { (l.t("wiz_call_arrived")) }
                ul {
                    @for c in &calls {
                        li { a.call href=(format!("/calls/{}", encode(&c.call_key))) { (c.call_key) }
                            " " (local_time(c.first_at, off, false)) " " span.muted { (c.last_message) } }
                    }
                }
                p { a id="wizard-done" href="/" { (l.t("wiz_done")) } }
            }
        },
    ))
}
