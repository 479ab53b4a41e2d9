//! Auto-distribution's shell: the dialplan asks (HTTP for `CURL()`, or FastAGI) which extension a calling number
//! belongs to, and gets an answer within the budget.
//!
//! The number is looked up in the CRM (`telephony.externalCall.searchCrmEntities`) unless a recent answer is
//! cached; the pure [`engine::route_to_owner`] decides from the CRM's records and the users directory; the
//! `customize_autodistribution` hook may change the extension; the decision and its reason go to the call's
//! journal (when the dialplan names the call). Whatever happens — the CRM slow or down, the hook slow — the
//! answer comes within `budget_ms`, empty ("no preference") when nothing better is known by then, so the call
//! follows its normal route. A look-up the budget cut short goes on in the background and fills the cache for
//! the next call.
//!
//! The cache holds the CRM's records by number (not extensions, so a directory change applies at once): an
//! answer with records for `cache_ttl_secs`, an answer without for `negative_ttl_secs` (a new client's lead
//! soon exists), failures never. A number's entry is dropped when the registration of one of its calls created
//! a CRM record (a lead for a new client).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitrix24::methods::telephony::SearchCrmEntities;
use engine::{CrmOwner, Lookup, Route};
use hooks::{HookName, Outcome};
use serde_json::{json, Value};
use store::{EntryKind, NewJournalEntry};
use tracing::{info, warn};

use super::users::store_time;
use super::Shared;
use crate::config::AutodistributionSettings;

/// The dialplan's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The extension to ring first; `None`: no preference.
    pub extension: Option<String>,
    /// Whether the CRM's records came from the cache.
    pub cached: bool,
    pub reason: String,
}

struct Cached {
    owners: Vec<CrmOwner>,
    until: Instant,
}

/// Answers the dialplan's "whose client is this?".
pub struct AutoDistributor {
    shared: Shared,
    client: bitrix24::Client,
    settings: AutodistributionSettings,
    numbers: numbers::Normalizer,
    cache: Mutex<HashMap<String, Cached>>,
}

/// Characters an extension handed to the dialplan may have (it ends up in `Dial()`).
fn safe_extension(text: &str) -> Option<String> {
    let text = text.trim();
    let ok = !text.is_empty()
        && text.len() <= 40
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | '#' | '+' | '_' | '-' | '.'));
    ok.then(|| text.to_owned())
}

impl AutoDistributor {
    pub fn new(
        shared: Shared,
        client: bitrix24::Client,
        settings: AutodistributionSettings,
        numbers: numbers::Normalizer,
    ) -> Arc<Self> {
        Arc::new(Self {
            shared,
            client,
            settings,
            numbers,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The channel variable FastAGI sets.
    pub fn variable(&self) -> &str {
        &self.settings.variable
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached(&self, number: &str) -> Option<Vec<CrmOwner>> {
        let mut cache = self.cache();
        match cache.get(number) {
            Some(c) if c.until > Instant::now() => Some(c.owners.clone()),
            Some(_) => {
                cache.remove(number);
                None
            }
            None => None,
        }
    }

    fn remember(&self, number: &str, owners: &[CrmOwner]) {
        let ttl = if owners.is_empty() {
            self.settings.negative_ttl_secs
        } else {
            self.settings.cache_ttl_secs
        };
        if ttl == 0 {
            return;
        }
        let now = Instant::now();
        let mut cache = self.cache();
        if cache.len() >= self.settings.cache_size {
            cache.retain(|_, c| c.until > now);
            if cache.len() >= self.settings.cache_size {
                cache.clear();
            }
        }
        cache.insert(
            number.to_owned(),
            Cached {
                owners: owners.to_vec(),
                until: now + Duration::from_secs(ttl),
            },
        );
    }

    /// Drops a number's cached records (a call from it was registered: the CRM may now know it differently).
    pub fn forget(&self, phone: &str) {
        let number = self.numbers.normalize(phone).preferred().to_owned();
        self.cache().remove(&number);
    }

    /// Asks the CRM; the answer also fills the cache, even when the caller stopped waiting.
    fn look_up(self: &Arc<Self>, number: String) -> tokio::task::JoinHandle<Result<Vec<CrmOwner>, String>> {
        let this = self.clone();
        tokio::spawn(async move {
            let request = SearchCrmEntities {
                phone_number: number.clone(),
            };
            match this.client.send(&request).await {
                Ok(found) => {
                    let owners: Vec<CrmOwner> = found
                        .into_iter()
                        .map(|m| CrmOwner {
                            entity_type: m.crm_entity_type,
                            entity_id: m.crm_entity_id,
                            responsible: m.assigned_by_id.or_else(|| m.assigned_by.and_then(|u| u.id)),
                        })
                        .collect();
                    this.remember(&number, &owners);
                    Ok(owners)
                }
                Err(e) => Err(e.to_string()),
            }
        })
    }

    /// Which extension a call from `phone` rings first; `call` is the call's uniqueid, for the journal.
    pub async fn answer(self: &Arc<Self>, phone: &str, call: Option<&str>) -> Answer {
        let started = Instant::now();
        let budget = Duration::from_millis(self.settings.budget_ms);
        let deadline = tokio::time::Instant::from_std(started + budget);
        let number = self.numbers.normalize(phone.trim()).preferred().to_owned();
        if !number.bytes().any(|b| b.is_ascii_digit()) {
            let reason = format!("the calling number {phone:?} has no digits: normal route");
            return self.done(phone, call, None, false, reason, json!({"phone": phone}), started);
        }
        let (lookup, cached) = match self.cached(&number) {
            Some(owners) => (Lookup::Found(owners), true),
            None => {
                let lookup = match tokio::time::timeout_at(deadline, self.look_up(number.clone())).await {
                    Ok(Ok(Ok(owners))) => Lookup::Found(owners),
                    Ok(Ok(Err(e))) => Lookup::Failed(e),
                    Ok(Err(e)) => Lookup::Failed(format!("the look-up task failed: {e}")),
                    Err(_) => Lookup::TimedOut {
                        budget_ms: self.settings.budget_ms,
                    },
                };
                (lookup, false)
            }
        };
        let route = {
            let engine = self.shared.engine();
            engine::route_to_owner(&number, &lookup, &self.settings.order, engine.users())
        };
        let Route {
            mut extension,
            user,
            entity,
            mut reason,
            data,
        } = route;
        if self.shared.hooks.is_enabled(HookName::CustomizeAutodistribution) {
            let (entity_type, entity_id) = entity.clone().unwrap_or_default();
            let params = json!({
                "phone": number,
                "extension": extension.clone().unwrap_or_default(),
                "user_id": user.unwrap_or(0),
                "entity_type": entity_type,
                "entity_id": entity_id,
            });
            let hooks = self.shared.hooks.clone();
            let asked = params.clone();
            let task = tokio::spawn(async move {
                hooks
                    .call(HookName::CustomizeAutodistribution, &asked, &hooks::Context::default())
                    .await
            });
            match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(Some(called))) => {
                    super::report_hook(&self.shared, &called);
                    match &called.outcome {
                        Outcome::Applied(answer) => {
                            let chosen = answer.params.get("extension").and_then(Value::as_str).unwrap_or("");
                            extension = safe_extension(chosen);
                            if extension.is_none() && !chosen.trim().is_empty() {
                                reason = format!(
                                    "customize_autodistribution answered {chosen:?}, not an extension: normal route"
                                );
                            } else {
                                reason = match &extension {
                                    Some(ext) => format!("customize_autodistribution chose extension {ext} ({reason})"),
                                    None => format!("customize_autodistribution chose no preference ({reason})"),
                                };
                            }
                        }
                        Outcome::Cancelled => {
                            extension = None;
                            reason = format!("customize_autodistribution answered empty data: normal route ({reason})");
                        }
                        Outcome::Failed(_) => reason = format!("{} ({reason})", called.describe()),
                    }
                    if let Some(call) = call {
                        let entry =
                            NewJournalEntry::new(call, store_time(super::now()), EntryKind::Hook, called.describe())
                                .data(json!({"input": called.input, "answer": called.answer}));
                        self.journal(entry);
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    extension = None;
                    reason = format!(
                        "customize_autodistribution did not answer within the {} ms budget: normal route",
                        self.settings.budget_ms
                    );
                }
            }
        }
        self.done(phone, call, extension, cached, reason, data, started)
    }

    #[allow(clippy::too_many_arguments)]
    fn done(
        &self,
        phone: &str,
        call: Option<&str>,
        extension: Option<String>,
        cached: bool,
        reason: String,
        data: Value,
        started: Instant,
    ) -> Answer {
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        info!(
            phone,
            call = call.unwrap_or(""),
            extension = extension.as_deref().unwrap_or(""),
            cached,
            elapsed_ms = format!("{elapsed_ms:.1}"),
            "auto-distribution: {reason}"
        );
        if let Some(call) = call {
            let entry = NewJournalEntry::new(
                call,
                store_time(super::now()),
                EntryKind::Decision,
                format!("auto-distribution: {reason}"),
            )
            .data(json!({"rule": engine::Rule::AutoDistribution, "data": data,
                         "extension": extension, "cached": cached, "elapsed_ms": elapsed_ms}));
            self.journal(entry);
        }
        Answer {
            extension,
            cached,
            reason,
        }
    }

    /// Writes a journal entry without making the dialplan wait for it.
    fn journal(&self, entry: NewJournalEntry) {
        let shared = self.shared.clone();
        tokio::spawn(async move {
            if let Err(e) = shared.store(move |s| s.append_journal(&[entry])).await {
                warn!(error = %e, "could not journal an auto-distribution decision");
            }
        });
    }
}

/// Drops the number of a registration that created a CRM record (a lead for a new client) from the look-up
/// cache: the number's records changed.
pub fn forget_registered(shared: &Shared, request: Option<&Value>, result: Option<&Value>) {
    let Some(autodist) = shared.autodist.get() else {
        return;
    };
    let created = result.is_some_and(|r| {
        r.get("CRM_CREATED_LEAD").is_some_and(|l| !l.is_null())
            || r.get("CRM_CREATED_ENTITIES")
                .and_then(Value::as_array)
                .is_some_and(|e| !e.is_empty())
    });
    if !created {
        return;
    }
    if let Some(phone) = request
        .and_then(|r| r.get("params"))
        .and_then(|p| p.get("PHONE_NUMBER"))
        .and_then(Value::as_str)
    {
        autodist.forget(phone);
    }
}

#[cfg(test)]
mod tests {
    use super::safe_extension;

    #[test]
    fn only_dialable_extensions_reach_the_dialplan() {
        assert_eq!(safe_extension(" 102 ").as_deref(), Some("102"));
        assert_eq!(safe_extension("sales-1").as_deref(), Some("sales-1"));
        assert_eq!(safe_extension(""), None);
        assert_eq!(safe_extension("102&PJSIP/103"), None);
        assert_eq!(safe_extension("1,2"), None);
        assert_eq!(safe_extension("102\nHANGUP"), None);
    }
}
