//! What follows a recorded step, on its own task so that no slow hook holds the outbox up: after a finish,
//! `process_final_params`' `action: delete`, `customize_activity` and `customize_entity`; after a register,
//! `post_registration`.

use serde_json::{json, Value};
use store::{EntryKind, NewJournalEntry, Timestamp};
use tracing::{info, warn};

use hooks::Outcome as HookOutcome;

use super::super::{crm_binding, customize};
use super::Worker;

impl Worker {
    /// Once a call's registration is finished: `action: delete` of `process_final_params` deletes its CRM
    /// activity; otherwise `customize_activity` may update the activity and `customize_entity` the entity this
    /// connector created for the call. On their own task: a slow hook holds no other step up.
    pub(super) fn after_finish(&self, finish_payload: Value, finish_result: Value, delete: bool) {
        let hooks = self.shared.hooks.clone();
        let wanted = delete
            || hooks.is_enabled(hooks::HookName::CustomizeActivity)
            || hooks.is_enabled(hooks::HookName::CustomizeEntity);
        if !wanted {
            return;
        }
        let (shared, client) = (self.shared.clone(), self.client.clone());
        tokio::spawn(async move {
            let Ok(planned) = serde_json::from_value::<engine::Step>(finish_payload.clone()) else {
                return;
            };
            let journal = |message: String, data: Value| {
                let entry = NewJournalEntry::new(&planned.call, Timestamp::now(), EntryKind::Hook, message).data(data);
                let shared = shared.clone();
                async move {
                    if let Err(e) = shared.store(move |s| s.append_journal(&[entry])).await {
                        warn!(error = %e, "cannot journal a customization after finish");
                    }
                }
            };
            let activity = finish_result.get("CRM_ACTIVITY_ID").filter(|v| !v.is_null()).cloned();
            if delete {
                let (message, data) = match activity {
                    None => (
                        "action delete of process_final_params: Bitrix24 named no CRM activity to delete".into(),
                        Value::Null,
                    ),
                    Some(id) => {
                        let request = json!({"id": id});
                        let answer = client.call("crm.activity.delete", request.clone()).await;
                        match answer {
                            Ok(a) => (
                                format!(
                                    "call deleted from the CRM (action delete of process_final_params): activity {id}"
                                ),
                                json!({"method": "crm.activity.delete", "params": request, "answer": a}),
                            ),
                            Err(e) => (
                                format!("action delete of process_final_params: crm.activity.delete failed: {e}"),
                                json!({"method": "crm.activity.delete", "params": request, "error": e.to_string()}),
                            ),
                        }
                    }
                };
                info!(call = %planned.call, "{message}");
                journal(message, data).await;
                return;
            }
            let context = customize::context_of(&finish_payload);
            let summary = customize::call_summary(&planned.call, context.call_full.as_ref());
            let mut updates = Vec::new();
            if let Some(id) = activity {
                updates.push((hooks::HookName::CustomizeActivity, "crm.activity.update".to_owned(), id));
            }
            let refs = engine::references(&planned.params);
            let created = shared
                .store(move |s| {
                    for key in refs {
                        if let Some(r) = s.result_by_key(&key)? {
                            return Ok(customize::created_entity(&r));
                        }
                    }
                    Ok(None)
                })
                .await
                .ok()
                .flatten();
            let created = match created {
                Some(c) => Some(c),
                None => crm_binding::created_for(&shared, &planned.call).await,
            };
            if let Some((kind, id)) = created {
                updates.push((hooks::HookName::CustomizeEntity, format!("crm.{kind}.update"), id));
            }
            for (hook, method, id) in updates {
                let Some(called) = hooks.call(hook, &summary, &context).await else {
                    continue;
                };
                journal(called.describe(), called.journal_data()).await;
                let HookOutcome::Applied(_) = called.outcome else {
                    continue;
                };
                // Only the fields the hook named: the call's summary it was given is not written back.
                let fields = called
                    .answer
                    .as_ref()
                    .and_then(|a| a.get("data"))
                    .cloned()
                    .unwrap_or(Value::Null);
                let request = json!({"id": id, "fields": fields});
                let (message, data) = match client.call(&method, request.clone()).await {
                    Ok(a) => (
                        format!("{hook}: {method} {id} updated"),
                        json!({"method": method, "params": request, "answer": a}),
                    ),
                    Err(e) => (
                        format!("{hook}: {method} {id} failed: {e}"),
                        json!({"method": method, "params": request, "error": e.to_string()}),
                    ),
                };
                journal(message, data).await;
            }
        });
    }

    /// `post_registration`: told what was registered; its answer changes nothing, so it runs on its own and
    /// holds no other step up.
    pub(super) fn post_registration(&self, payload: Value, request: Option<Value>, result: Option<Value>) {
        let hooks = self.shared.hooks.clone();
        if !hooks.is_enabled(hooks::HookName::PostRegistration) {
            return;
        }
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let Ok(planned) = serde_json::from_value::<engine::Step>(payload.clone()) else {
                return;
            };
            let params = json!({
                "registration": request.and_then(|r| r.get("params").cloned()).unwrap_or(Value::Null),
                "result": result.unwrap_or(Value::Null),
            });
            let context = customize::context_of(&payload);
            let Some(called) = hooks.call(hooks::HookName::PostRegistration, &params, &context).await else {
                return;
            };
            let entry = customize::entry(&planned.call, Timestamp::now(), &planned.key, &called);
            if let Err(e) = shared.store(move |s| s.append_journal(&[entry])).await {
                warn!(error = %e, "cannot journal post_registration");
            }
        });
    }
}
