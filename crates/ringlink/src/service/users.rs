//! The employees directory: Bitrix24 `user.get` (or amoCRM's `/api/v4/users` with the configured extensions) →
//! the store's users cache → the engine's extension lookup.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use hooks::{HookName, Outcome};
use serde_json::{json, Value};
use store::{User, UserPhone};
use tokio::sync::watch;
use tracing::{info, warn};

use super::Shared;

/// Fields Bitrix24 keeps employees' phones in (the internal extension first).
const PHONE_FIELDS: [&str; 4] = ["UF_PHONE_INNER", "PERSONAL_MOBILE", "WORK_PHONE", "PERSONAL_PHONE"];

pub fn tracker_time(at: store::Timestamp) -> tracker::Timestamp {
    tracker::Timestamp::from_micros(at.as_micros())
}

pub fn store_time(at: tracker::Timestamp) -> store::Timestamp {
    store::Timestamp::from_micros(at.as_micros())
}

/// The engine's view of a cached user.
pub fn directory_user(user: &User) -> engine::DirectoryUser {
    engine::DirectoryUser {
        id: user.id,
        extension: user.extension().map(str::to_owned),
        phones: user
            .phones
            .iter()
            .filter(|p| p.field != store::EXTENSION_FIELD)
            .map(|p| p.number.clone())
            .collect(),
    }
}

/// A `user.get` item as the cache keeps it; `None` for an item without a usable ID.
fn cached_user(item: &Value) -> Option<User> {
    let id = match item.get("ID")? {
        Value::String(s) => s.trim().parse().ok()?,
        Value::Number(n) => n.as_u64()?,
        _ => return None,
    };
    let text = |field: &str| -> Option<String> {
        match item.get(field)? {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let name = [text("NAME"), text("LAST_NAME")]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let active = match item.get("ACTIVE") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => !matches!(s.as_str(), "N" | "false" | "0"),
        _ => true,
    };
    let phones = PHONE_FIELDS
        .iter()
        .filter_map(|f| text(f).map(|n| UserPhone::new(*f, n)))
        .collect();
    Some(User {
        id,
        name,
        email: text("EMAIL"),
        position: text("WORK_POSITION"),
        active,
        phones,
        raw: item.clone(),
    })
}

/// Fetches every active user, page by page.
pub async fn fetch_users(client: &bitrix24::Client) -> Result<Vec<User>, bitrix24::Error> {
    let mut users = Vec::new();
    let mut start = 0u64;
    loop {
        let page = client
            .call_with(
                "user.get",
                &json!({"FILTER": {"ACTIVE": true}, "start": start}),
                bitrix24::Encoding::Json,
            )
            .await?;
        if let Some(items) = page.result.as_array() {
            users.extend(items.iter().filter_map(cached_user).filter(|u| u.active));
        }
        match page.next {
            Some(next) if next > start => start = next,
            _ => break,
        }
    }
    Ok(users)
}

/// Where the employees come from.
#[derive(Clone)]
pub enum Source {
    Bitrix24(bitrix24::Client),
    /// amoCRM's users carry no extension: `extensions` (extension → user id) gives them theirs.
    AmoCrm {
        client: amocrm::Client,
        extensions: BTreeMap<String, u64>,
    },
}

impl Source {
    fn name(&self) -> &'static str {
        match self {
            Source::Bitrix24(_) => "Bitrix24",
            Source::AmoCrm { .. } => "amoCRM",
        }
    }

    async fn fetch(&self) -> anyhow::Result<Vec<User>> {
        match self {
            Source::Bitrix24(client) => Ok(fetch_users(client).await?),
            Source::AmoCrm { client, extensions } => Ok(amocrm_users(&client.users().await?, extensions)),
        }
    }
}

/// amoCRM's active users as the cache keeps them, each with the extension the configuration gives it.
fn amocrm_users(users: &[amocrm::User], extensions: &BTreeMap<String, u64>) -> Vec<User> {
    users
        .iter()
        .filter(|u| u.rights.is_active)
        .map(|u| User {
            id: u.id,
            name: u.name.clone(),
            email: Some(u.email.clone()).filter(|e| !e.is_empty()),
            position: None,
            active: true,
            phones: extensions
                .iter()
                .filter(|(_, id)| **id == u.id)
                .map(|(ext, _)| UserPhone::new(store::EXTENSION_FIELD, ext.clone()))
                .collect(),
            raw: json!({"id": u.id, "name": u.name, "email": u.email, "rights": {"is_admin": u.rights.is_admin, "is_active": u.rights.is_active}}),
        })
        .collect()
}

/// Refreshes the directory: Bitrix24 → store → engine. On failure the cache stays as it is; a directory that
/// was loaded before (from Bitrix24 or the cache) is marked as looked at, so the engine stops asking until the
/// next interval. One that never was stays unknown: calls that need it wait instead of going to nobody.
pub async fn refresh(shared: &Shared, source: &Source) -> anyhow::Result<usize> {
    let now = store::Timestamp::now();
    match source.fetch().await {
        Ok(mut users) => {
            customize_phones(shared, &mut users).await;
            let count = users.len();
            let directory: Vec<_> = users.iter().map(directory_user).collect();
            shared.store(move |s| s.replace_users(&users, now)).await?;
            shared.engine().users_mut().replace(directory, tracker_time(now));
            shared.directory_loaded.notify_one();
            Ok(count)
        }
        Err(e) => {
            let (cached, cached_at) = shared
                .store(|s| Ok((s.users()?, s.users_refreshed_at()?)))
                .await
                .unwrap_or_default();
            let mut engine = shared.engine();
            if engine.users().refreshed_at().is_some() || cached_at.is_some() {
                engine
                    .users_mut()
                    .replace(cached.iter().map(directory_user), tracker_time(now));
                drop(engine);
                shared.directory_loaded.notify_one();
            }
            Err(e)
        }
    }
}

/// The `process_user_phone` hook (old name `process_phone_number`) on every employee's number, before the
/// directory matches them against the PBX: an answered phone replaces the number, empty data drops it from the
/// directory, a failing hook leaves it as Bitrix24 has it. One hook call per distinct number per refresh. The
/// cache keeps the customized numbers, so a Bitrix24 outage does not undo them.
async fn customize_phones(shared: &Shared, users: &mut [User]) {
    let hooks = &shared.hooks;
    if !hooks.is_enabled(HookName::ProcessUserPhone) {
        return;
    }
    let mut answers: HashMap<String, Option<String>> = HashMap::new();
    let (mut changed, mut dropped, mut failed) = (0usize, 0usize, 0usize);
    for user in users.iter_mut() {
        let mut kept = Vec::with_capacity(user.phones.len());
        for phone in std::mem::take(&mut user.phones) {
            if !answers.contains_key(&phone.number) {
                let params = json!({"phone": phone.number});
                let answer = match hooks
                    .call(HookName::ProcessUserPhone, &params, &hooks::Context::default())
                    .await
                {
                    Some(called) => {
                        super::report_hook(shared, &called);
                        match called.outcome {
                            Outcome::Applied(answer) => match answer.params.get("phone") {
                                Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
                                Some(Value::Number(n)) => Some(n.to_string()),
                                _ => Some(phone.number.clone()),
                            },
                            Outcome::Cancelled => None,
                            Outcome::Failed(_) => {
                                failed += 1;
                                warn!(user = user.id, phone = %phone.number, "{}", called.describe());
                                Some(phone.number.clone())
                            }
                        }
                    }
                    None => Some(phone.number.clone()),
                };
                answers.insert(phone.number.clone(), answer);
            }
            match answers.get(&phone.number).cloned().flatten() {
                Some(number) if number == phone.number => kept.push(phone),
                Some(number) => {
                    changed += 1;
                    kept.push(UserPhone::new(&phone.field, number));
                }
                None => dropped += 1,
            }
        }
        user.phones = kept;
    }
    info!(
        changed,
        dropped, failed, "process_user_phone applied to the employees' numbers"
    );
}

/// The first retry after a failed refresh; each next one waits twice as long, up to [`LAST_RETRY`] (or the
/// refresh interval, if shorter).
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(30);

/// Refreshes at start, every `every`, and whenever the pipeline meets an unknown extension. A failed refresh
/// is retried with back-off (1 s, 2 s, 4 s, … up to 30 s) until one succeeds.
pub async fn refresher(shared: Shared, source: Source, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut retry = FIRST_RETRY;
    loop {
        let wait = match refresh(&shared, &source).await {
            Ok(n) => {
                info!(users = n, crm = source.name(), "users directory refreshed");
                retry = FIRST_RETRY;
                every
            }
            Err(e) => {
                warn!(error = %e, retry_in = ?retry, "users directory refresh failed; using the cached one meanwhile");
                let wait = retry;
                retry = (retry * 2).min(LAST_RETRY).min(every);
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.users_refresh.notified() => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_get_items_become_cached_users() {
        let u = cached_user(
            &json!({"ID": "3", "NAME": "Ольга", "LAST_NAME": "Смирнова", "ACTIVE": true,
            "UF_PHONE_INNER": "103", "PERSONAL_MOBILE": "+79990001122", "WORK_PHONE": ""}),
        )
        .expect("valid");
        assert_eq!(u.id, 3);
        assert_eq!(u.name, "Ольга Смирнова");
        assert_eq!(u.extension(), Some("103"));
        let d = directory_user(&u);
        assert_eq!(d.extension.as_deref(), Some("103"));
        assert_eq!(d.phones, ["+79990001122"]);
        assert!(cached_user(&json!({"NAME": "no id"})).is_none());
        assert!(cached_user(&json!({"ID": [1]})).is_none());
        let inactive = cached_user(&json!({"ID": 4, "ACTIVE": false})).expect("valid");
        assert!(!inactive.active);
        let inactive = cached_user(&json!({"ID": 4, "ACTIVE": "N"})).expect("valid");
        assert!(!inactive.active);
    }
}
