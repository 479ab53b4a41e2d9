//! External lines: keeps Bitrix24's list of lines (`telephony.externalLine.*`) in step with the trunks of the
//! settings, at start and whenever the settings page saves new trunks, so that a manager can choose the line a
//! click-to-call goes out on and its `LINE_NUMBER` names a trunk.
//!
//! Each sync reads Bitrix24's list first and sends only what [`engine::plan_lines`] says is missing or renamed:
//! a restart adds nothing twice. A failed sync is logged and tried again later, with growing pauses; it runs
//! beside the worker, waits while calls use the portal's request budget, and never holds a registration up.

use std::time::Duration;

use bitrix24::methods::telephony::{ExternalLineAdd, ExternalLineUpdate};
use engine::{LineChange, LineDecision, ListedLine, WantedLine};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::Config;

/// The first pause after a failed sync; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(5);
const MAX_RETRY: Duration = Duration::from_secs(300);
/// A sync waits at most this long for the portal's budget to have room for it.
const MAX_BUDGET_WAIT: Duration = Duration::from_secs(30);

/// The lines `config` names.
pub fn wanted(config: &Config) -> Vec<WantedLine> {
    engine::configured_lines(
        &config.tracker.trunks,
        &config.engine.trunks,
        config.click_to_call.as_ref().map(|c| &c.dial),
    )
}

/// One sync: Bitrix24's list, the plan, its changes. Each decision is logged with its reason.
pub async fn sync(client: &bitrix24::Client, wanted: &[WantedLine]) -> Result<Vec<LineDecision>, bitrix24::Error> {
    let listed: Vec<ListedLine> = client
        .external_lines()
        .await?
        .into_iter()
        .map(|l| ListedLine {
            number: l.number,
            name: l.name,
        })
        .collect();
    let decisions = engine::plan_lines(wanted, &listed);
    for decision in &decisions {
        match &decision.change {
            Some(LineChange::Add { number, name }) => {
                let add = ExternalLineAdd {
                    number: number.clone(),
                    name: Some(name.clone()),
                    crm_auto_create: None,
                };
                match client.send(&add).await {
                    Ok(_) => {}
                    // Added meanwhile (another instance, an admin): the next sync sees it and fixes its name.
                    Err(e) if e.description().is_some_and(|d| d.contains("already exists")) => {}
                    Err(e) => return Err(e),
                }
            }
            Some(LineChange::Rename { number, name, .. }) => {
                let update = ExternalLineUpdate {
                    number: number.clone(),
                    name: Some(name.clone()),
                    crm_auto_create: None,
                };
                client.send(&update).await?;
            }
            None => {}
        }
        info!(line = %decision.number, changed = decision.change.is_some(), "external line: {}", decision.reason);
    }
    Ok(decisions)
}

/// Waits (at most [`MAX_BUDGET_WAIT`]) until half the portal's request budget is free: calls come first.
async fn budget_room(client: &bitrix24::Client) {
    let deadline = tokio::time::Instant::now() + MAX_BUDGET_WAIT;
    loop {
        let b = client.budget();
        let room = b.capacity <= 0.0 || f64::from(b.available_now) >= b.capacity / 2.0;
        if (room && b.backoff_remaining.is_none()) || tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Syncs at start and after every change of `wanted`; a failure is retried with growing pauses until it
/// succeeds, the lines change again, or the service stops.
pub async fn run(
    client: bitrix24::Client,
    mut wanted: watch::Receiver<Vec<WantedLine>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut retry = FIRST_RETRY;
    loop {
        let lines = wanted.borrow_and_update().clone();
        let pause = if lines.is_empty() {
            None
        } else {
            budget_room(&client).await;
            match sync(&client, &lines).await {
                Ok(_) => {
                    retry = FIRST_RETRY;
                    None
                }
                Err(e) => {
                    warn!(error = %e, retry_in = ?retry, "cannot sync the external lines with Bitrix24; calls are \
                          registered meanwhile, and a click goes out on the line Bitrix24 names");
                    let pause = retry;
                    retry = (retry * 2).min(MAX_RETRY);
                    Some(pause)
                }
            }
        };
        let again = async {
            match pause {
                Some(p) => tokio::time::sleep(p).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            changed = wanted.changed() => {
                if changed.is_err() {
                    return;
                }
                retry = FIRST_RETRY;
            }
            _ = again => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use b24emu::{Emulator, EmulatorConfig, Fault, SeedLine};

    fn line(number: &str, name: &str) -> WantedLine {
        WantedLine {
            number: number.into(),
            name: name.into(),
            source: format!("trunk {name}"),
            way_out: None,
        }
    }

    fn client(emu: &Emulator) -> bitrix24::Client {
        bitrix24::Client::webhook(&emu.webhook_url())
            .expect("client")
            .build()
            .expect("client")
    }

    fn portal_lines(emu: &Emulator) -> Vec<(String, String)> {
        emu.state()
            .external_lines
            .into_iter()
            .map(|l| (l.number, l.name))
            .collect()
    }

    #[tokio::test]
    async fn lines_are_added_once_and_renamed_when_a_trunk_is() {
        let mut config = EmulatorConfig::default();
        config.external_lines.push(SeedLine {
            number: "999".into(),
            name: "someone else's".into(),
            crm_auto_create: true,
        });
        let emu = Emulator::start(config).await.expect("emulator");
        let client = client(&emu);
        let wanted = [line("73432723033", "Main"), line("74950000001", "Second")];
        sync(&client, &wanted).await.expect("first sync");
        assert_eq!(emu.requests_for("telephony.externalLine.add").len(), 2);

        emu.clear_requests();
        sync(&client, &wanted).await.expect("as after a restart");
        assert_eq!(
            emu.requests().iter().map(|r| r.method.as_str()).collect::<Vec<_>>(),
            ["telephony.externalline.get"],
            "nothing added twice"
        );

        let renamed = [line("73432723033", "Main office"), line("74950000001", "Second")];
        sync(&client, &renamed).await.expect("rename");
        let updates = emu.requests_for("telephony.externalLine.update");
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].param("NAME").and_then(|v| v.as_str()), Some("Main office"));
        assert_eq!(
            portal_lines(&emu),
            [
                ("999".to_owned(), "someone else's".to_owned()),
                ("73432723033".to_owned(), "Main office".to_owned()),
                ("74950000001".to_owned(), "Second".to_owned()),
            ],
            "one line per trunk, the foreign line untouched"
        );
        emu.shutdown().await;
    }

    #[tokio::test]
    async fn a_failed_sync_is_retried_and_a_settings_change_is_synced() {
        let emu = Emulator::start(EmulatorConfig::default()).await.expect("emulator");
        emu.set_fault(Fault::ServerError(500));
        let (tx, rx) = watch::channel(vec![line("73432723033", "Main")]);
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(client(&emu), rx, stop_rx));
        let refused = wait_for(|| !emu.requests_for("telephony.externalLine.get").is_empty()).await;
        assert!(refused, "the first attempt was made");
        assert!(portal_lines(&emu).is_empty(), "the portal failed it");
        emu.clear_fault();
        assert!(
            wait_for(|| portal_lines(&emu) == [("73432723033".to_owned(), "Main".to_owned())]).await,
            "retried after the pause: {:?}",
            emu.requests()
        );
        tx.send_replace(vec![line("73432723033", "Renamed")]);
        assert!(
            wait_for(|| portal_lines(&emu) == [("73432723033".to_owned(), "Renamed".to_owned())]).await,
            "the saved settings were synced"
        );
        let _ = stop_tx.send(true);
        task.await.expect("the task stops");
        emu.shutdown().await;
    }

    async fn wait_for(mut done: impl FnMut() -> bool) -> bool {
        for _ in 0..200 {
            if done() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}
