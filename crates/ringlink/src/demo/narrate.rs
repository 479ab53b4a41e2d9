//! Tells each demo call in plain words from what really happened: the phones' SIP outcomes (SIPp) and what the
//! Bitrix24 emulator recorded (card timeline, registered calls, finishes, records, CRM entities).

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant};

use b24emu::{CardAction, Emulator, StateSnapshot};
use chrono::{DateTime, Utc};
use testbed::{Outcome, TestBed, PHONES};
use tokio::sync::watch;

/// How long after a call ends its finish and recording may take to reach Bitrix24 before the demo tells what
/// there is.
const SETTLE: Duration = Duration::from_secs(30);

pub struct Watch<'a> {
    emu: &'a Emulator,
    started: Instant,
    first_card: Option<Duration>,
    /// Calls the emulator had before the current one.
    known: HashSet<String>,
    /// Card events already told.
    cards_told: usize,
    placed_at: DateTime<Utc>,
}

impl<'a> Watch<'a> {
    pub fn new(emu: &'a Emulator, started: Instant) -> Self {
        Watch {
            emu,
            started,
            first_card: None,
            known: HashSet::new(),
            cards_told: emu.card_timeline().events.len(),
            placed_at: Utc::now(),
        }
    }

    /// Plays one call, telling every card shown or hidden as it happens, then which phones rang. False when
    /// stopped meanwhile.
    pub async fn follow(
        &mut self,
        bed: &TestBed,
        play: impl Future<Output = testbed::Result<()>>,
        stop: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<bool> {
        self.known = self.emu.state().calls.into_iter().map(|c| c.call_id).collect();
        self.placed_at = Utc::now();
        tokio::pin!(play);
        let played = loop {
            tokio::select! {
                played = &mut play => break played,
                _ = stop.changed() => return Ok(false),
                _ = tokio::time::sleep(Duration::from_millis(100)) => self.tell_cards(),
            }
        };
        self.tell_cards();
        if let Err(e) = played {
            println!("  (the PBX did not play it exactly as planned: {e})");
        }
        // The desk phones that were called, and the client's phone behind the carrier (outgoing calls).
        let mut called: Vec<(String, Vec<Outcome>)> = PHONES
            .iter()
            .map(|ext| (ext.to_string(), bed.phone_outcomes(*ext)))
            .collect();
        called.push(("the client".to_owned(), bed.carrier_outcomes()));
        let with = |outcome: Outcome| -> Vec<String> {
            called
                .iter()
                .filter(|(_, seen)| seen.contains(&outcome))
                .map(|(who, _)| who.clone())
                .collect()
        };
        let (rang, answered) = (with(Outcome::Ringing), with(Outcome::Answered));
        println!(
            "  phones: {} rang; {}",
            if rang.is_empty() {
                "none".to_owned()
            } else {
                rang.join(", ")
            },
            if answered.is_empty() {
                "nobody answered".to_owned()
            } else {
                format!("{} answered", answered.join(", "))
            }
        );
        Ok(true)
    }

    fn tell_cards(&mut self) {
        let timeline = self.emu.card_timeline();
        let state = self.emu.state();
        for event in timeline.events.iter().skip(self.cards_told) {
            let who = user_name(&state, event.user_id);
            let after = (event.at - self.placed_at).num_milliseconds() as f64 / 1000.0;
            match event.action {
                CardAction::Shown => {
                    println!(
                        "  card popped up for {who} (user {}) {after:.2} s after the call was placed [call {}]",
                        event.user_id, event.call_id
                    );
                    if self.first_card.is_none() {
                        let since_start = self.started.elapsed();
                        self.first_card = Some(since_start);
                        println!(
                            "  (the first card popped {:.1} s after `ringlink demo` started)",
                            since_start.as_secs_f64()
                        );
                    }
                }
                CardAction::Hidden => println!("  card closed for {who} [call {}]", event.call_id),
            }
        }
        self.cards_told = timeline.events.len();
    }

    /// Waits until the calls registered for this one are finished (and an answered one has its recording), then
    /// tells what Bitrix24 got. False when stopped meanwhile.
    pub async fn settle(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        let deadline = Instant::now() + SETTLE;
        loop {
            let state = self.emu.state();
            let new: Vec<_> = state
                .calls
                .iter()
                .filter(|c| !self.known.contains(&c.call_id))
                .collect();
            let complete = !new.is_empty()
                && new.iter().all(|c| match &c.finish {
                    Some(finish) => finish.duration == 0 || c.record_file_id.is_some() || c.record_url.is_some(),
                    None => false,
                });
            if complete || Instant::now() > deadline {
                self.tell_cards();
                if new.is_empty() {
                    println!("  Bitrix24: nothing registered");
                }
                for call in new {
                    println!("{}", describe(&state, call));
                }
                return true;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = stop.changed() => return false,
            }
        }
    }
}

fn user_name(state: &StateSnapshot, id: u64) -> String {
    state
        .users
        .iter()
        .find(|u| u.id == id)
        .map(|u| format!("{} {}", u.name, u.last_name))
        .unwrap_or_else(|| format!("user {id}"))
}

/// One registered call as Bitrix24 has it, in one line:
/// `  Bitrix24: call <CALL_ID>, incoming from <phone> for <name> (user <id>); finished by <name> (user <id>), <n> s,
/// status <code> (<meaning>); recording <file> (<bytes> bytes) | no recording; lead #<id> created | bound to …`.
fn describe(state: &StateSnapshot, call: &b24emu::Call) -> String {
    let direction = match call.call_type {
        1 => "outgoing to",
        2 => "incoming from",
        3 => "incoming (redirected) from",
        4 => "callback to",
        _ => "call with",
    };
    let mut line = format!(
        "  Bitrix24: call {}, {direction} {} for {} (user {})",
        call.call_id,
        call.phone_number,
        user_name(state, call.user_id),
        call.user_id
    );
    match &call.finish {
        Some(finish) => line.push_str(&format!(
            "; finished by {} (user {}), {} s, status {} ({})",
            user_name(state, finish.user_id),
            finish.user_id,
            finish.duration,
            finish.status_code,
            meaning(&finish.status_code)
        )),
        None => line.push_str("; not finished yet"),
    }
    match call
        .record_file_id
        .and_then(|id| state.files.iter().find(|f| f.id == id))
    {
        Some(file) => line.push_str(&format!("; recording {} ({} bytes)", file.name, file.size)),
        None if call.record_url.is_some() => line.push_str("; recording attached by link"),
        None => line.push_str("; no recording"),
    }
    for (kind, id) in &call.crm_created {
        line.push_str(&format!("; {} #{id} created", kind.name().to_lowercase()));
    }
    if call.crm_created.is_empty() {
        if let Some((kind, id)) = &call.crm_entity {
            line.push_str(&format!("; bound to {} #{id}", kind.name().to_lowercase()));
        }
    }
    line
}

fn meaning(status: &str) -> &'static str {
    match status {
        "200" => "answered",
        "304" => "missed",
        "486" => "busy",
        "603" => "declined",
        "603-S" => "cancelled",
        _ => "failed",
    }
}
