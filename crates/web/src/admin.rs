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
    let result = tokio::task::spawn_blocking(move || {
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

fn badge(l: Lang, live: bool) -> Markup {
    html! {
        @if !live { span.restart title=(l.t("set_restart_hint")) { (l.t("set_restart")) } }
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
                    code { (name) } (badge(l, key.live))
                }
            }
            (Kind::Secret, Shown::Secret(set)) => {
                label {
                    span { code { (name) } (badge(l, key.live)) }
                    input type="password" name=(name) autocomplete="new-password"
                        placeholder=(if *set { l.t("set_secret_kept") } else { l.t("set_secret_unset") });
                }
            }
            (Kind::Choice(choices), _) => {
                label {
                    span { code { (name) } (badge(l, key.live)) }
                    select name=(name) {
                        @for c in choices { option value=(c) selected[*c == text] { (c) } }
                    }
                }
            }
            (Kind::Rows(columns), Shown::Rows(rows)) => {
                div.rows {
                    span { code { (name) } (badge(l, key.live)) }
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
                    span { code { (name) } (badge(l, key.live)) }
                    input type="text" name=(name) value=(text)
                        placeholder=(if key.kind == Kind::List { l.t("set_list_hint") } else { "" });
                }
            }
        }
    }
}
