//! Click-to-call: `ONEXTERNALCALLSTART` → one AMI `Originate` per Bitrix24 `CALL_ID`; the amoCRM telephony
//! widget's click (`POST /amocrm/click`) → the same `Originate` under ringlink's id of the click, answered to
//! the widget once it is recorded (or refused with the reason: a bad request, a user without an extension).
//!
//! The request is recorded in the store under its `CALL_ID` first (a second delivery dials nothing), announced
//! to the engine (which then follows the call under that `CALL_ID`), and the `Originate` built by the pure
//! [`engine::originate_params`] is sent asynchronously; the line the manager chose, and the way out it means, is
//! journaled first ([`engine::click_line_reason`] against the settings' current lines). A click that cannot ring anybody — unknown employee, AMI
//! down, the PBX refusing the originate, or an `OriginateResponse` failure (phone offline, no answer) — is
//! finished at once through the engine, with its reason in the call journal.

use std::collections::HashMap;

use ami::Message;
use engine::{ClickRefusal, ClickToCall};
use serde_json::json;
use store::{EntryKind, NewJournalEntry, NewStep};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::listener::{IncomingEvent, WidgetAnswer, WidgetClick};
use super::pipeline::new_step;
use super::users::store_time;
use super::Shared;
use crate::config::ClickToCallSettings;

/// How far back open clicks are re-announced to the engine after a restart (a click older than this cannot
/// still be a live call).
const REANNOUNCE_HOURS: u64 = 4;

/// Re-announces the clicks whose calls may still be live, so a restart keeps following them under their CALL_ID.
pub async fn reannounce(shared: &Shared) -> anyhow::Result<()> {
    let since = store::Timestamp::now().saturating_sub(std::time::Duration::from_secs(REANNOUNCE_HOURS * 3600));
    let open = shared.store(move |s| s.open_clicks(since)).await?;
    let mut engine = shared.engine();
    for (_, request) in open {
        if let Ok(click) = serde_json::from_value::<ClickToCall>(request) {
            engine.expect_click_to_call(click);
        }
    }
    Ok(())
}

pub async fn run(
    shared: Shared,
    settings: ClickToCallSettings,
    lines: watch::Receiver<Vec<engine::WantedLine>>,
    mut incoming: mpsc::Receiver<IncomingEvent>,
    mut widget: mpsc::Receiver<WidgetClick>,
    mut responses: mpsc::UnboundedReceiver<Message>,
    mut stop: watch::Receiver<bool>,
) {
    // Originates in flight, by ActionID; their OriginateResponse says whether the employee's phone was reached.
    let mut pending: HashMap<String, ClickToCall> = HashMap::new();
    // Bitrix24's events and the amoCRM widget's clicks: one of them is unused (its sender dropped).
    let (mut events_open, mut widget_open) = (true, true);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            event = incoming.recv(), if events_open => match event {
                None => events_open = false,
                Some(mut event) => {
                    let done = event.done.take();
                    handle_event(&shared, &settings, &lines, event, &mut pending).await;
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                }
            },
            widget = widget.recv(), if widget_open => match widget {
                None => widget_open = false,
                Some(click) => handle_widget(&shared, &settings, &lines, click, &mut pending).await,
            },
            response = responses.recv() => match response {
                None => break,
                Some(m) => {
                    let Some(click) = m.action_id().and_then(|id| pending.remove(id)) else {
                        continue;
                    };
                    if m.get("Response").map(str::trim) == Some("Success") {
                        info!(call_id = %click.call_id, "click-to-call: the employee picked up, dialling the client");
                        continue;
                    }
                    let refusal = ClickRefusal::from_originate_reason(
                        m.get("Reason").unwrap_or(""),
                        m.get("Channel").unwrap_or(""),
                    );
                    refuse(&shared, &click, &refusal).await;
                }
            },
        }
    }
}

async fn handle_event(
    shared: &Shared,
    settings: &ClickToCallSettings,
    lines: &watch::Receiver<Vec<engine::WantedLine>>,
    event: IncomingEvent,
    pending: &mut HashMap<String, ClickToCall>,
) {
    if event.event != "ONEXTERNALCALLSTART" {
        info!(event = %event.event, "event ignored: only ONEXTERNALCALLSTART is handled");
        return;
    }
    let click = match ClickToCall::from_event(&event.data) {
        Ok(click) => click,
        Err(e) => {
            warn!(error = %e, "ONEXTERNALCALLSTART ignored: not a usable click-to-call request");
            return;
        }
    };
    if let Ok(true) = record(shared, &click).await {
        dial(shared, settings, lines, click, pending).await;
    }
}

/// A click of the amoCRM widget: answered once it is recorded (or refused, with the reason), then dialled.
async fn handle_widget(
    shared: &Shared,
    settings: &ClickToCallSettings,
    lines: &watch::Receiver<Vec<engine::WantedLine>>,
    widget: WidgetClick,
    pending: &mut HashMap<String, ClickToCall>,
) {
    let WidgetClick {
        fields,
        fallback_id,
        reply,
    } = widget;
    let click = match ClickToCall::from_amocrm(&fields, &fallback_id) {
        Ok(click) => click,
        Err(e) => {
            warn!(error = %e, "amoCRM click-to-call refused: not a usable request");
            let _ = reply.send(WidgetAnswer::refused(400, e.to_string()));
            return;
        }
    };
    let (loaded, extension) = {
        let engine = shared.engine();
        let users = engine.users();
        (
            users.refreshed_at().is_some(),
            users.extension_of(click.user_id).map(str::to_owned),
        )
    };
    if extension.is_none() {
        let (status, why) = match loaded {
            false => (
                503,
                "the users directory is not loaded yet (amoCRM not reached since ringlink started): try again"
                    .to_owned(),
            ),
            true => (
                422,
                format!(
                    "amoCRM user {} has no extension: map it in [amocrm.extensions] (\"<extension>\" = {})",
                    click.user_id, click.user_id
                ),
            ),
        };
        warn!(user = click.user_id, reason = %why, "amoCRM click-to-call refused: nothing dialled");
        let _ = reply.send(WidgetAnswer::refused(status, why));
        return;
    }
    let answer = match record(shared, &click).await {
        Ok(true) => WidgetAnswer::accepted("dialling", &click.call_id),
        Ok(false) => WidgetAnswer::accepted("already_dialled", &click.call_id),
        Err(e) => WidgetAnswer::refused(503, format!("the click could not be recorded: {e}")),
    };
    let dialling = answer.body["status"] == "dialling";
    let _ = reply.send(answer);
    if dialling {
        dial(shared, settings, lines, click, pending).await;
    }
}

/// Records a click under its `CALL_ID` in the store: `Ok(true)` the first time (it is to be dialled), `Ok(false)`
/// for a repeat (journaled, nothing dialled).
async fn record(shared: &Shared, click: &ClickToCall) -> Result<bool, String> {
    let key = engine::click_call_key(&click.call_id);
    let request = serde_json::to_value(click).unwrap_or_default();
    let (call_id, k) = (click.call_id.clone(), key.clone());
    let accepted = match shared
        .store(move |s| s.accept_click(&call_id, &k, &request, store::Timestamp::now()))
        .await
    {
        Ok(accepted) => accepted,
        Err(e) => {
            warn!(call_id = %click.call_id, error = %e, "click-to-call not dialled: cannot record it in the store");
            return Err(e.to_string());
        }
    };
    if !accepted {
        info!(call_id = %click.call_id, "click-to-call delivered again: already dialled, nothing done");
        journal(
            shared,
            &key,
            "the same click-to-call was delivered again: not dialled twice",
            json!({"call_id": click.call_id}),
        )
        .await;
        return Ok(false);
    }
    journal(
        shared,
        &key,
        &format!(
            "click-to-call received and recorded under CALL_ID {}: user {} to {} on line {}",
            click.call_id,
            click.user_id,
            click.phone_number,
            click.line_number.as_deref().unwrap_or("(default)")
        ),
        json!({"call_id": click.call_id, "request": click}),
    )
    .await;
    Ok(true)
}

/// Dials a recorded click: the line journaled, the `Originate` built, customized by the hook and sent.
async fn dial(
    shared: &Shared,
    settings: &ClickToCallSettings,
    lines: &watch::Receiver<Vec<engine::WantedLine>>,
    click: ClickToCall,
    pending: &mut HashMap<String, ClickToCall>,
) {
    let key = engine::click_call_key(&click.call_id);
    // The line the manager chose: one of the settings' lines, none, or one Bitrix24 still lists for a trunk
    // the settings no longer have (dialled the default way, and the journal says so).
    let line = engine::click_line_reason(click.line_number.as_deref(), &lines.borrow(), &settings.dial.context);
    journal(
        shared,
        &key,
        &format!("click-to-call: {line}"),
        json!({"call_id": click.call_id, "line": click.line_number}),
    )
    .await;
    let built = {
        let mut engine = shared.engine();
        engine.expect_click_to_call(click.clone());
        engine::originate_params(&click, &settings.dial, engine.users())
    };
    let params = match built {
        Ok(params) => params,
        Err(refusal) => return refuse(shared, &click, &refusal).await,
    };
    let Some(client) = ami_client(shared).await else {
        let refusal = ClickRefusal::OriginateFailed("AMI is not connected".into());
        return refuse(shared, &click, &refusal).await;
    };
    if let Some(device) = &params.device {
        let asked = Message::action("Getvar").with("Variable", format!("DEVICE_STATE({device})"));
        let state = match client.action(asked).await {
            Ok(answer) => answer.get("Value").map(|v| v.trim().to_ascii_uppercase()),
            Err(e) => {
                warn!(%device, error = %e, "cannot ask the employee's device state; dialling anyway");
                None
            }
        };
        if matches!(state.as_deref(), Some("UNAVAILABLE" | "INVALID")) {
            return refuse(shared, &click, &ClickRefusal::PhoneOffline(device.clone())).await;
        }
    }
    // The `process_originate_params` hook may change the way out (context, trunk, number format); the ids
    // that make the call recognisable and the ring timeout stay ringlink's.
    let seed = crate::originate::OriginateParams {
        caller_id: params.caller_id.clone(),
        channel: params.channel.clone(),
        context: params.context.clone(),
        extension: params.exten.clone(),
        priority: params.priority.to_string(),
        codecs: None,
        variable: Some(
            params
                .variables
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        ),
    };
    let (originate, called) = seed.customized(&shared.hooks, &hooks::Context::default()).await;
    if let Some(called) = &called {
        journal(
            shared,
            &key,
            &format!("process_originate_params: {}", called.describe()),
            json!({"input": called.input, "answer": called.answer}),
        )
        .await;
    }
    let action = originate
        .action()
        .with("Timeout", params.timeout_ms.to_string())
        .with("ChannelId", params.channel_id.as_str())
        .with("OtherChannelId", params.other_channel_id.as_str());
    journal(
        shared,
        &key,
        &format!(
            "click-to-call: Originate {} → {}@{}",
            originate.channel, originate.extension, originate.context
        ),
        json!({"call_id": click.call_id, "originate": originate, "built": params}),
    )
    .await;
    match client.action(action).await {
        Ok(response) if response.is_success() => {
            info!(call_id = %click.call_id, channel = %originate.channel, exten = %originate.extension, "click-to-call: ringing the employee");
            if let Some(id) = response.action_id() {
                pending.insert(id.to_owned(), click);
            }
        }
        Ok(response) => {
            let message = response.get("Message").unwrap_or("no message").to_owned();
            refuse(shared, &click, &ClickRefusal::OriginateFailed(message)).await;
        }
        Err(e) => refuse(shared, &click, &ClickRefusal::OriginateFailed(e.to_string())).await,
    }
}

/// How long a click waits for the AMI connection (at start, or while it reconnects).
const AMI_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

async fn ami_client(shared: &Shared) -> Option<ami::Client> {
    let deadline = tokio::time::Instant::now() + AMI_WAIT;
    loop {
        if let Some(client) = shared.ami.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Some(client);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Finishes a click that rings nobody, and records why.
async fn refuse(shared: &Shared, click: &ClickToCall, refusal: &ClickRefusal) {
    let now = super::now();
    warn!(call_id = %click.call_id, user = click.user_id, reason = %refusal, "click-to-call not placed");
    let plan = shared.engine().click_refused(click, refusal, now);
    let key = engine::click_call_key(&click.call_id);
    let entries = super::pipeline::decision_entries(&plan.journal);
    let steps: Vec<NewStep> = plan.steps.iter().map(|s| new_step(s, None)).collect();
    let has_steps = !steps.is_empty();
    let stored = shared
        .store(move |s| {
            s.enqueue(&steps, store::Timestamp::now())?;
            s.append_journal(&entries)?;
            s.close_click(&key, store::Timestamp::now())
        })
        .await;
    if let Err(e) = stored {
        warn!(call_id = %click.call_id, error = %e, "could not store the finish of a refused click-to-call");
    }
    if has_steps {
        shared.work.notify_one();
    }
}

async fn journal(shared: &Shared, key: &str, message: &str, data: serde_json::Value) {
    let entry = NewJournalEntry::new(key, store_time(super::now()), EntryKind::Decision, message).data(data);
    if let Err(e) = shared.store(move |s| s.append_journal(&[entry])).await {
        warn!(error = %e, "could not journal a click-to-call decision");
    }
}
