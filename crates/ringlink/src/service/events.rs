//! Binding ringlink's Bitrix24 events (application mode): `ONEXTERNALCALLSTART` → the listener's handler URL.

use bitrix24::methods::events::{EventBind, EventGet, EventType, EventUnbind};
use tracing::{info, warn};

use super::listener::EVENT_PATH;
use crate::config::ListenerSettings;

/// The event ringlink handles.
pub const CLICK_EVENT: &str = "ONEXTERNALCALLSTART";

/// The handler URL Bitrix24 posts events to.
pub fn handler_url(listener: &ListenerSettings) -> Option<String> {
    listener
        .public_url
        .as_deref()
        .map(|u| format!("{}{EVENT_PATH}", u.trim_end_matches('/')))
}

/// Binds `ONEXTERNALCALLSTART` to the handler unless it is bound already. Failures are logged: calls are
/// followed regardless, and `ringlink check` tells the admin.
pub async fn bind(client: &bitrix24::Client, listener: &ListenerSettings) {
    let Some(handler) = handler_url(listener) else {
        return;
    };
    match client.send(&EventGet {}).await {
        Ok(bound) if bound.iter().any(|h| is_ours(h, &handler)) => {
            info!(%handler, "ONEXTERNALCALLSTART already bound to the listener");
            return;
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "event.get failed; binding anyway"),
    }
    let bind = EventBind {
        event: CLICK_EVENT.into(),
        handler: Some(handler.clone()),
        event_type: Some(EventType::Online),
        ..Default::default()
    };
    match client.send(&bind).await {
        Ok(_) => info!(%handler, "ONEXTERNALCALLSTART bound to the listener"),
        Err(e) => warn!(error = %e, "cannot bind ONEXTERNALCALLSTART: click-to-call will not reach ringlink"),
    }
}

/// Takes the binding away on a clean stop.
pub async fn unbind(client: &bitrix24::Client, listener: &ListenerSettings) {
    let Some(handler) = handler_url(listener) else {
        return;
    };
    let unbind = EventUnbind {
        event: CLICK_EVENT.into(),
        handler: Some(handler),
        ..Default::default()
    };
    match client.send(&unbind).await {
        Ok(u) => info!(count = u.count, "ONEXTERNALCALLSTART unbound"),
        Err(e) => warn!(error = %e, "cannot unbind ONEXTERNALCALLSTART"),
    }
}

pub fn is_ours(h: &bitrix24::methods::events::EventHandler, handler: &str) -> bool {
    h.event.eq_ignore_ascii_case(CLICK_EVENT) && h.handler.as_deref() == Some(handler) && h.offline != Some(true)
}
