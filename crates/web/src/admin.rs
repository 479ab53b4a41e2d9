//! The settings page's handlers and markup.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;
use tracing::info;

use crate::auth::Session;
use crate::i18n::Lang;
use crate::pages::{encode, layout, Frame};
use crate::server::{frame, html_page, internal, lock, Web};
use crate::settings::{self, Kind, SaveError, Shown, View};

/// Blank rows offered under a table, to add entries.
const NEW_ROWS: usize = 2;

const GROUPS: [&str; 7] = [
    "set_business",
    "set_lists",
    "set_missed",
    "set_trunks",
    "set_recordings",
    "set_hooks",
    "set_connections",
];

#[derive(Deserialize, Default)]
pub(crate) struct SavedNotice {
    #[serde(default)]
    applied: Option<String>,
    #[serde(default)]
    restart: Option<String>,
}

pub(crate) async fn settings_page(
    State(web): State<Web>,
    axum::Extension(session): axum::Extension<Session>,
    headers: HeaderMap,
    Query(notice): Query<SavedNotice>,
) -> Response {
    let lang = Lang::of(&headers);
    render(&web, &session, lang, &notice, None).await
}

async fn render(web: &Web, session: &Session, lang: Lang, notice: &SavedNotice, error: Option<String>) -> Response {
    let frame = frame(web, lang, session, "/settings");
    let Some(file) = web.0.config.clone() else {
        return html_page(layout(
            &frame,
            lang.t("settings"),
            html! { p.muted { (lang.t("set_no_file")) } },
        ));
    };
    let view = match tokio::task::spawn_blocking(move || settings::view(&file)).await {
        Ok(Ok(view)) => view,
        Ok(Err(e)) => return internal(e.to_string()),
        Err(e) => return internal(e.to_string()),
    };
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let page = settings_markup(&frame, &view, notice, error.as_deref());
    (status, html_page(page)).into_response()
}

pub(crate) async fn save_settings(
    State(web): State<Web>,
    axum::Extension(session): axum::Extension<Session>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let lang = Lang::of(&headers);
    let Some(file) = web.0.config.clone() else {
        return Redirect::to("/settings").into_response();
    };
    let version = form
        .iter()
        .find(|(k, _)| k == "version")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let saving = web.clone();
    let result = web
        .blocking(move || {
            let _one_at_a_time = lock(&saving.0.config_lock);
            settings::save(&file, &version, &form)
        })
        .await;
    match result {
        Ok(Ok(saved)) => {
            if !saved.applied.is_empty() || !saved.restart.is_empty() {
                info!(applied = ?saved.applied, after_restart = ?saved.restart, "settings saved from the admin UI");
            }
            Redirect::to(&format!(
                "/settings?applied={}&restart={}",
                encode(&saved.applied.join(",")),
                encode(&saved.restart.join(","))
            ))
            .into_response()
        }
        Ok(Err(SaveError::Io(e))) => internal(e),
        Ok(Err(e)) => render(&web, &session, lang, &SavedNotice::default(), Some(e.to_string())).await,
        Err(e) => internal(e.to_string()),
    }
}

fn badge(l: Lang, key: &settings::Key) -> Markup {
    html! {
        @if let Some((badge, note)) = key.note {
            span.restart title=(l.t(note)) { (l.t(badge)) }
            small.muted.note { (l.t(note)) }
        } @else if !key.live {
            span.restart title=(l.t("set_restart_hint")) { (l.t("set_restart")) }
        }
    }
}

/// The changed keys that wait for a restart, each with its note when part of it applied at once.
pub(crate) fn waiting_for_restart(l: Lang, restart: &[String]) -> Markup {
    html! {
        @for k in restart {
            @if let Some(note) = settings::note_of(k) { p.note { code { (k) } ": " (l.t(note)) } }
        }
    }
}

fn settings_markup(frame: &Frame<'_>, view: &View, notice: &SavedNotice, error: Option<&str>) -> Markup {
    let l = frame.lang;
    let list = |text: &Option<String>| -> Vec<String> {
        text.as_deref()
            .unwrap_or("")
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let (applied, restart) = (list(&notice.applied), list(&notice.restart));
    let saved = notice.applied.is_some() || notice.restart.is_some();
    layout(
        frame,
        l.t("settings"),
        html! {
            @if let Some(e) = error { p.error id="settings-error" { (e) } }
            @if saved {
                div.card id="settings-saved" {
                    @if applied.is_empty() && restart.is_empty() { p { (l.t("set_nothing")) } }
                    @if !applied.is_empty() { p { (l.t("set_applied")) ": " @for k in &applied { code { (k) } " " } } }
                    @if !restart.is_empty() { p.warning { (l.t("set_after_restart")) ": " @for k in &restart { code { (k) } " " } } }
                    (waiting_for_restart(l, &restart))
                }
            }
            p.muted { (l.t("set_intro")) }
            form.settings method="post" action="/settings" {
                input type="hidden" name="csrf" value=(frame.csrf.unwrap_or(""));
                input type="hidden" name="version" value=(view.version);
                @for group in GROUPS {
                    fieldset {
                        legend { (l.t(group)) }
                        @for (key, shown) in view.values.iter().filter(|(k, _)| k.group == group) {
                            (field(l, key, shown))
                        }
                    }
                }
                button type="submit" id="save-settings" { (l.t("save")) }
            }
        },
    )
}

fn field(l: Lang, key: &settings::Key, shown: &Shown) -> Markup {
    let name = key.path.as_str();
    let text = match shown {
        Shown::Text(t) => t.as_str(),
        _ => "",
    };
    html! {
        @match (key.kind, shown) {
            (Kind::Bool, _) => {
                label.check {
                    input type="hidden" name=(name) value="false";
                    input type="checkbox" name=(name) value="true" checked[text == "true"];
                    code { (name) } (badge(l, key))
                }
            }
            (Kind::Secret, Shown::Secret(set)) => {
                label {
                    span { code { (name) } (badge(l, key)) }
                    input type="password" name=(name) autocomplete="new-password"
                        placeholder=(if *set { l.t("set_secret_kept") } else { l.t("set_secret_unset") });
                }
            }
            (Kind::Choice(choices), _) => {
                label {
                    span { code { (name) } (badge(l, key)) }
                    select name=(name) {
                        @for c in choices { option value=(c) selected[*c == text] { (c) } }
                    }
                }
            }
            (Kind::Rows(columns), Shown::Rows(rows)) => {
                div.rows {
                    span { code { (name) } (badge(l, key)) }
                    input type="hidden" name=(name) value="rows";
                    table {
                        thead { tr { @for c in columns { th { (c.name) } } } }
                        tbody {
                            @for (i, row) in rows.iter().map(Some).chain(std::iter::repeat_n(None, NEW_ROWS)).enumerate() {
                                tr {
                                    @for (j, c) in columns.iter().enumerate() {
                                        td { input type="text" name=(format!("{name}.{i}.{}", c.name))
                                            value=(row.and_then(|r| r.get(j)).map(String::as_str).unwrap_or("")); }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            _ => {
                label {
                    span { code { (name) } (badge(l, key)) }
                    input type="text" name=(name) value=(text)
                        placeholder=(if key.kind == Kind::List { l.t("set_list_hint") } else { "" });
                }
            }
        }
    }
}

// ---- logs ----

/// Lines the Logs page shows at most.
const LOG_LINES: usize = 500;

#[derive(Deserialize, Default)]
pub(crate) struct LogsQuery {
    #[serde(default)]
    level: String,
}

pub(crate) async fn logs_page(
    State(web): State<Web>,
    axum::Extension(session): axum::Extension<Session>,
    headers: HeaderMap,
    Query(query): Query<LogsQuery>,
) -> Response {
    let l = Lang::of(&headers);
    let level = query.level.parse::<tracing::Level>().unwrap_or(tracing::Level::INFO);
    let path = format!("/logs?level={}", encode(&query.level));
    let frame = frame(&web, l, &session, &path);
    let lines = web.0.logs.as_ref().map(|b| b.lines(level, LOG_LINES));
    html_page(layout(
        &frame,
        l.t("logs"),
        html! {
            form.filters method="get" action="/logs" {
                label { (l.t("level"))
                    select name="level" id="log-level" {
                        @for name in ["error", "warn", "info", "debug", "trace"] {
                            option value=(name) selected[level.as_str().eq_ignore_ascii_case(name)] { (name) }
                        }
                    }
                }
                button type="submit" id="show-logs" { (l.t("filter")) }
            }
            @match lines {
                None => p.muted { (l.t("logs_off")) },
                Some(lines) if lines.is_empty() => p.muted { (l.t("logs_none")) },
                Some(lines) => {
                    p.muted { (l.t("logs_intro")) }
                    pre.logs id="log-lines" {
                        @for line in lines.iter().rev() {
                            span class=(format!("log-{}", line.level.as_str().to_ascii_lowercase())) { (line.text) } "\n"
                        }
                    }
                }
            }
        },
    ))
}

// ---- users ----

#[derive(Deserialize, Default)]
pub(crate) struct UsersQuery {
    #[serde(default)]
    refreshing: Option<String>,
}

pub(crate) async fn users_page(
    State(web): State<Web>,
    axum::Extension(session): axum::Extension<Session>,
    headers: HeaderMap,
    Query(query): Query<UsersQuery>,
) -> Response {
    let l = Lang::of(&headers);
    let store = web.0.store.clone();
    let read = web
        .0
        .reports
        .read(move || -> store::Result<_> { Ok((store.users()?, store.users_refreshed_at()?)) })
        .await;
    let (mut users, refreshed) = match read {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => return internal(e.to_string()),
        Err(e) => return internal(e.to_string()),
    };
    users.sort_by(|a, b| {
        let key = |u: &store::User| (u.extension().is_none(), u.extension().unwrap_or("").to_owned(), u.id);
        key(a).cmp(&key(b))
    });
    let frame = frame(&web, l, &session, "/users");
    let age = refreshed.map(|at| store::Timestamp::now().as_micros().saturating_sub(at.as_micros()) / 1_000_000);
    html_page(layout(
        &frame,
        l.t("users_title"),
        html! {
            div.card {
                p id="users-age" {
                    (users.len()) " " (l.t("users")) " · " (l.t("updated")) " "
                    @match (refreshed, age) {
                        (Some(at), Some(age)) => { (crate::pages::local_time(at, frame.offset_secs, false)) " (" (age) " s)" },
                        _ => (l.t("never")),
                    }
                }
                @if query.refreshing.is_some() { p.notice { (l.t("users_refreshing")) } }
                form method="post" action="/users/refresh" {
                    input type="hidden" name="csrf" value=(frame.csrf.unwrap_or(""));
                    button type="submit" id="refresh-users" { (l.t("users_refresh")) }
                }
            }
            @if users.is_empty() {
                p.muted { (l.t("users_none")) }
            } @else {
                table.users {
                    thead { tr { th { (l.t("extension")) } th { "ID" } th { (l.t("name")) } th { (l.t("phones")) } th { (l.t("active")) } } }
                    tbody {
                        @for u in &users {
                            tr class=(if u.active { "" } else { "muted" }) {
                                td.ext { (u.extension().unwrap_or("—")) }
                                td { (u.id) }
                                td { (u.name) }
                                td { @for p in u.phones.iter().filter(|p| p.field != store::EXTENSION_FIELD) { (p.field) ": " (p.number) br; } }
                                td { (if u.active { l.t("yes") } else { l.t("no") }) }
                            }
                        }
                    }
                }
            }
        },
    ))
}

pub(crate) async fn refresh_users(State(web): State<Web>) -> Response {
    web.0.wake.users.notify_one();
    info!("web: users directory refresh asked for");
    Redirect::to("/users?refreshing=1").into_response()
}

#[derive(Deserialize)]
pub(crate) struct AcknowledgeForm {
    /// The end of the period the page showed (microseconds since the epoch).
    to: i64,
}

/// The Status page's Acknowledge: the period whose calls may be missing stays on `/status` but warns no more.
pub(crate) async fn acknowledge_gap(State(web): State<Web>, Form(form): Form<AcknowledgeForm>) -> Response {
    let store = web.0.store.clone();
    let done = web
        .blocking(move || crate::gaps::acknowledge(store.as_ref(), form.to, store::Timestamp::now()))
        .await;
    match done {
        Ok(Ok(true)) => {
            info!("web: the period whose calls may be missing was acknowledged");
            Redirect::to("/").into_response()
        }
        // A later gap replaced the period shown: the page shows the new one.
        Ok(Ok(false)) => Redirect::to("/").into_response(),
        Ok(Err(e)) => internal(e.to_string()),
        Err(e) => internal(e.to_string()),
    }
}
