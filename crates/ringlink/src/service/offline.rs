//! Offline events: `ONEXTERNALCALLSTART` kept by Bitrix24 until ringlink fetches it (`event.offline.get`), for a
//! PBX that Bitrix24 cannot reach (NAT, no public address).
//!
//! Safe consumption: `get` with `clear=0` reserves the records under a `process_id`, which is saved in the store
//! *before* the records are handled; each click is recorded under its `CALL_ID` (the clicks task answers once
//! it has); only then `event.offline.clear` removes them. After a crash, the saved `process_id` re-selects what
//! was reserved and not cleared, and the `CALL_ID` record makes a click that was already handled dial nothing:
//! no event is lost or done twice across a restart.
//!
//! The poll interval adapts to the portal's request budget (the limiter shared with call registration): fast
//! while there is headroom or events keep coming, slow when calls are using the budget.

use std::collections::BTreeMap;
use std::time::Duration;

use bitrix24::methods::events::{EventBind, EventOfflineClear, EventOfflineGet, EventType};
use bitrix24::Budget;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use super::events::CLICK_EVENT;
use super::listener::IncomingEvent;
use super::Shared;

/// The store setting holding the `process_id` of records reserved and not cleared yet.
const PROCESS_KEY: &str = "offline_events.process_id";

/// How long to wait before the next `event.offline.get`.
pub fn next_poll(budget: &Budget, found: usize, min: Duration, max: Duration) -> Duration {
    if budget.backoff_remaining.is_some() {
        return max;
    }
    if found > 0 {
        return min; // more may be queued behind them
    }
    let headroom = if budget.capacity > 0.0 {
        f64::from(budget.available_now) / budget.capacity
    } else {
        0.0
    };
    if headroom >= 0.5 {
        min
    } else if headroom >= 0.2 {
        (min + max) / 2
    } else {
        max
    }
}

/// Binds `ONEXTERNALCALLSTART` as an offline event (idempotent: an existing binding is fine).
pub async fn bind(client: &bitrix24::Client) {
    let bind = EventBind {
        event: CLICK_EVENT.into(),
        event_type: Some(EventType::Offline),
        ..Default::default()
    };
    match client.send(&bind).await {
        Ok(_) => info!("ONEXTERNALCALLSTART bound as an offline event"),
        Err(e) if e.to_string().contains("ERROR_HANDLER_ALREADY_EXIST") => {
            info!("ONEXTERNALCALLSTART already bound as an offline event")
        }
        Err(e) => warn!(error = %e, "cannot bind ONEXTERNALCALLSTART as an offline event"),
    }
}

fn event_data(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), text)
                })
                .collect()
        })
        .unwrap_or_default()
}

pub async fn run(
    shared: Shared,
    client: bitrix24::Client,
    clicks: mpsc::Sender<IncomingEvent>,
    (min, max): (Duration, Duration),
    mut stop: watch::Receiver<bool>,
) {
    let mut process_id: Option<String> = match shared.store(|s| s.setting(PROCESS_KEY)).await {
        Ok(v) => v.and_then(|v| v.as_str().map(str::to_owned)),
        Err(e) => {
            warn!(error = %e, "cannot read the saved offline-events process id");
            None
        }
    };
    if let Some(pid) = &process_id {
        info!(process_id = %pid, "offline events reserved before a restart are fetched again");
    }
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let request = EventOfflineGet {
            clear: Some(false),
            process_id: process_id.clone(),
            limit: Some(50),
            ..Default::default()
        };
        let found = match client.send(&request).await {
            Ok(answer) => {
                let found = answer.events.len();
                if found == 0 {
                    if process_id.take().is_some() {
                        forget_process(&shared).await;
                    }
                } else if let Some(pid) = answer.process_id.clone() {
                    if handle(&shared, &client, &clicks, pid, answer.events).await.is_err() {
                        return;
                    }
                    process_id = None;
                }
                found
            }
            Err(e) => {
                warn!(error = %e, "event.offline.get failed; retrying");
                0
            }
        };
        wait = next_poll(&client.budget(), found, min, max);
    }
}

/// Handles one reserved batch; `Err` when the service is stopping.
async fn handle(
    shared: &Shared,
    client: &bitrix24::Client,
    clicks: &mpsc::Sender<IncomingEvent>,
    pid: String,
    events: Vec<bitrix24::methods::events::OfflineEvent>,
) -> Result<(), ()> {
    let saved = pid.clone();
    if let Err(e) = shared
        .store(move |s| s.set_setting(PROCESS_KEY, &json!(saved), store::Timestamp::now()))
        .await
    {
        warn!(error = %e, "cannot save the offline-events process id; the batch is handled anyway");
    }
    for e in events {
        let (done, handled) = oneshot::channel();
        let incoming = IncomingEvent {
            event: e.event_name.trim().to_ascii_uppercase(),
            data: event_data(&e.event_data),
            done: Some(done),
        };
        if clicks.send(incoming).await.is_err() {
            return Err(());
        }
        // The click is recorded under its CALL_ID before the record is cleared.
        let _ = handled.await;
    }
    let clear = EventOfflineClear {
        process_id: pid.clone(),
        id: Vec::new(),
    };
    match client.send(&clear).await {
        Ok(_) => forget_process(shared).await,
        Err(e) => {
            warn!(process_id = %pid, error = %e, "event.offline.clear failed; the records come back and are recognised")
        }
    }
    Ok(())
}

async fn forget_process(shared: &Shared) {
    if let Err(e) = shared.store(|s| s.delete_setting(PROCESS_KEY).map(|_| ())).await {
        warn!(error = %e, "cannot forget the offline-events process id");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(available: u32, backoff: bool) -> Budget {
        Budget {
            available_now: available,
            level: 0.0,
            capacity: 50.0,
            drain_per_sec: 2.0,
            wait_for_next: Duration::ZERO,
            backoff_remaining: backoff.then_some(Duration::from_secs(1)),
            blocked_methods: Vec::new(),
        }
    }

    #[test]
    fn the_poll_slows_down_when_calls_use_the_budget() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(9));
        assert_eq!(next_poll(&budget(50, false), 0, min, max), min, "idle portal");
        assert_eq!(next_poll(&budget(15, false), 0, min, max), Duration::from_secs(5));
        assert_eq!(next_poll(&budget(5, false), 0, min, max), max, "calls need the budget");
        assert_eq!(next_poll(&budget(5, false), 3, min, max), min, "events keep coming");
        assert_eq!(next_poll(&budget(50, true), 3, min, max), max, "backing off");
    }

    #[test]
    fn event_data_values_become_strings() {
        let d = event_data(&json!({"CALL_ID": "x", "USER_ID": 1}));
        assert_eq!(d["USER_ID"], "1");
        assert_eq!(d["CALL_ID"], "x");
        assert!(event_data(&json!([])).is_empty());
    }
}
