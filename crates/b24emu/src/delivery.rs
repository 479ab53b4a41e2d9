//! Emitting portal events: POSTs to bound online handlers and outgoing webhooks, offline queue for the rest.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::auth::{lifetime, TokenInfo};
use crate::core::Core;
use crate::error::EmuError;
use crate::methods::events::KNOWN_EVENTS;
use crate::methods::telephony::{register_call, Registration};
use crate::record::{CardAction, CardCause, CardEvent, Delivery};
use crate::state::{phone_key, EntityType, OfflineEvent};

/// A user clicking a phone number in the portal (the `ONEXTERNALCALLSTART` trigger).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClickToCall {
    pub user_id: u64,
    pub phone_number: String,
    /// The external line the user chose: one the portal lists (`telephony.externalLine.add`), or `None` for
    /// the default line.
    #[serde(default)]
    pub line_number: Option<String>,
    #[serde(default)]
    pub crm_entity_type: Option<String>,
    #[serde(default)]
    pub crm_entity_id: Option<u64>,
    #[serde(default)]
    pub call_list_id: u64,
    #[serde(default)]
    pub is_mobile: bool,
}

impl ClickToCall {
    pub fn new(user_id: u64, phone_number: &str) -> Self {
        Self {
            user_id,
            phone_number: phone_number.into(),
            line_number: None,
            crm_entity_type: None,
            crm_entity_id: None,
            call_list_id: 0,
            is_mobile: false,
        }
    }
}

/// What emitting an event did.
#[derive(Debug, Clone, Serialize)]
pub struct EventOutcome {
    /// The CALL_ID the portal registered (click-to-call only).
    pub call_id: Option<String>,
    pub deliveries: Vec<Delivery>,
    /// Offline events queued for `event.offline.get`.
    pub queued_offline: usize,
}

struct Target {
    handler: String,
    body: String,
}

fn host_of(base: &str) -> String {
    url::Url::parse(base)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_owned(),
            })
        })
        .unwrap_or_default()
}

/// Register the call as Bitrix24 does for a click, then emit `ONEXTERNALCALLSTART`. A click on a line the
/// portal does not list is refused (nothing registered, nothing emitted): a real portal offers only its lines.
pub(crate) async fn click_to_call(core: &Arc<Core>, click: ClickToCall) -> Result<EventOutcome, EmuError> {
    let now = core.clock.now();
    let (call_id, data) = {
        let mut w = core.world();
        let user = w
            .portal
            .users
            .get(&click.user_id)
            .filter(|u| u.active)
            .cloned()
            .ok_or_else(|| EmuError::Control(format!("user {} is not found or is not active", click.user_id)))?;
        if phone_key(&click.phone_number).is_empty() {
            return Err(EmuError::Control("phone_number has no digits".into()));
        }
        // The portal offers only the lines it lists (`telephony.externalLine.add`); no line is the default one.
        if let Some(line) = click.line_number.as_deref().filter(|l| !l.trim().is_empty()) {
            if !w.portal.lines.iter().any(|l| l.number == line.trim()) {
                let listed: Vec<&str> = w.portal.lines.iter().map(|l| l.number.as_str()).collect();
                return Err(EmuError::Control(format!(
                    "line {line} is not listed in the portal (listed: {listed:?}); a portal offers only lines \
                     added with telephony.externalLine.add, or none for the default line"
                )));
            }
        }
        let crm_entity = match (&click.crm_entity_type, click.crm_entity_id) {
            (Some(t), Some(id)) => Some((
                EntityType::parse(t).ok_or_else(|| EmuError::Control(format!("unknown CRM entity type {t}")))?,
                id,
            )),
            _ => None,
        };
        let done = register_call(
            core,
            &mut w,
            now,
            Registration {
                principal: "portal".into(),
                user_id: user.id,
                phone_number: click.phone_number.clone(),
                call_type: 1,
                start_date: core.clock.to_local(now),
                crm_create: false,
                crm_source: None,
                crm_entity,
                show: true,
                line_number: click.line_number.clone(),
                external_call_id: None,
            },
        );
        w.timeline.events.push(CardEvent {
            at: now,
            user_id: user.id,
            call_id: done.call_id.clone(),
            action: CardAction::Shown,
            cause: CardCause::ClickToCall,
            request_seq: None,
        });
        let digits = phone_key(&click.phone_number);
        let mut data = BTreeMap::new();
        data.insert("PHONE_NUMBER".to_owned(), click.phone_number.clone());
        data.insert("PHONE_NUMBER_INTERNATIONAL".to_owned(), format!("+{digits}"));
        data.insert("EXTENSION".to_owned(), user.uf_phone_inner.clone());
        data.insert("USER_ID".to_owned(), user.id.to_string());
        data.insert("CALL_LIST_ID".to_owned(), click.call_list_id.to_string());
        data.insert("LINE_NUMBER".to_owned(), click.line_number.clone().unwrap_or_default());
        data.insert(
            "IS_MOBILE".to_owned(),
            if click.is_mobile { "1" } else { "0" }.to_owned(),
        );
        data.insert("CALL_ID".to_owned(), done.call_id.clone());
        let (t, id) = done.entity.map_or((String::new(), String::new()), |(t, id)| {
            (t.name().to_owned(), id.to_string())
        });
        data.insert("CRM_ENTITY_TYPE".to_owned(), t);
        data.insert("CRM_ENTITY_ID".to_owned(), id);
        (done.call_id, data)
    };
    let mut outcome = emit(core, "ONEXTERNALCALLSTART", data, click.user_id).await?;
    outcome.call_id = Some(call_id);
    Ok(outcome)
}

/// Emit an event with `data` on behalf of `user_id` to every subscriber.
pub(crate) async fn emit(
    core: &Arc<Core>,
    event: &str,
    data: BTreeMap<String, String>,
    user_id: u64,
) -> Result<EventOutcome, EmuError> {
    let event = event.to_ascii_uppercase();
    if !KNOWN_EVENTS.contains(&event.as_str()) {
        return Err(EmuError::Control(format!("unknown event {event}")));
    }
    let now = core.clock.now();
    let base = core.base_url().to_owned();
    let domain = host_of(&base);
    let client_endpoint = format!("{base}/rest/");
    let server_endpoint = format!("{base}/oauth/rest/");
    let app = &core.cfg.app;
    let mut targets = Vec::new();
    let mut queued_offline = 0;
    {
        let mut w = core.world();
        let online: Vec<(u64, String)> = w
            .portal
            .handlers
            .iter()
            .filter(|h| h.event == event && !h.offline)
            .map(|h| (h.id, h.handler.clone()))
            .collect();
        if w.portal.handlers.iter().any(|h| h.event == event && h.offline) {
            let id = w.portal.next_offline_event_id();
            let message_id = w.portal.next_hash("message");
            w.portal.offline_events.push(OfflineEvent {
                id,
                event_name: event.clone(),
                data: serde_json::to_value(&data).unwrap_or_default(),
                auth_user_id: user_id,
                created_at: now,
                message_id,
                process_id: None,
            });
            queued_offline += 1;
        }
        for (handler_id, handler) in online {
            // Each delivery carries a fresh access token for the user who triggered the event.
            let token = w.portal.next_hash("event-token");
            w.tokens.access.insert(
                token.clone(),
                TokenInfo {
                    user_id,
                    expires_at: now + lifetime(app.access_token_lifetime_secs),
                },
            );
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("event", &event);
            form.append_pair("event_handler_id", &handler_id.to_string());
            for (k, v) in &data {
                form.append_pair(&format!("data[{k}]"), v);
            }
            form.append_pair("ts", &now.timestamp().to_string());
            form.append_pair("auth[access_token]", &token);
            form.append_pair("auth[expires_in]", &app.access_token_lifetime_secs.to_string());
            form.append_pair("auth[scope]", &app.scope.join(","));
            form.append_pair("auth[domain]", &domain);
            form.append_pair("auth[server_endpoint]", &server_endpoint);
            form.append_pair("auth[status]", "L");
            form.append_pair("auth[client_endpoint]", &client_endpoint);
            form.append_pair("auth[member_id]", &core.cfg.portal.member_id);
            form.append_pair("auth[user_id]", &user_id.to_string());
            form.append_pair("auth[application_token]", &app.application_token);
            targets.push(Target {
                handler,
                body: form.finish(),
            });
        }
    }
    for hook in core
        .cfg
        .events
        .outgoing_webhooks
        .iter()
        .filter(|h| h.event.eq_ignore_ascii_case(&event))
    {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("event", &event);
        form.append_pair("event_handler_id", "0");
        for (k, v) in &data {
            form.append_pair(&format!("data[{k}]"), v);
        }
        form.append_pair("ts", &now.timestamp().to_string());
        form.append_pair("auth[domain]", &domain);
        form.append_pair("auth[client_endpoint]", &client_endpoint);
        form.append_pair("auth[server_endpoint]", &server_endpoint);
        form.append_pair("auth[member_id]", &core.cfg.portal.member_id);
        form.append_pair("auth[application_token]", &hook.application_token);
        targets.push(Target {
            handler: hook.handler.clone(),
            body: form.finish(),
        });
    }

    let mut deliveries = Vec::new();
    for target in targets {
        let (status, error) = if core.cfg.events.deliver {
            // One attempt, no retries, as Bitrix24 does.
            match core
                .http
                .post(&target.handler)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(target.body.clone())
                .send()
                .await
            {
                Ok(resp) => (Some(resp.status().as_u16()), None),
                Err(e) => (None, Some(e.to_string())),
            }
        } else {
            (None, Some("delivery disabled".to_owned()))
        };
        let d = Delivery {
            at: now,
            event: event.clone(),
            handler: target.handler,
            body: target.body,
            status,
            error,
        };
        core.push_delivery(d.clone());
        deliveries.push(d);
    }
    Ok(EventOutcome {
        call_id: None,
        deliveries,
        queued_offline,
    })
}
