//! Steps claimed for the worker elsewhere, waiting in memory for its next round: the card steps the pipeline
//! claims in the commit that stores them ([`CARDS`]), and the claim the worker's own last round made when it
//! recorded its outcomes. A round takes whole claims from the front, as many as one `batch` holds.
//!
//! A claim here is leased in the store like any other: if the process dies before sending it, its steps are
//! due again once the lease runs out (at once at the next start, on SQLite). Each step is claimed once, so it
//! is sent once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use store::{ClaimNew, ClaimOutcome};

use super::{FOLLOWERS, LEASE, ROUND};

/// What the pipeline claims for the worker as it stores a plan: the steps that pop a card (and the shows
/// after them), so that a card goes to Bitrix24 right after the one disk sync that stored it.
pub const CARDS: ClaimNew<'static> = ClaimNew {
    kinds: &["register", "show"],
    limit: ROUND,
    lease: LEASE,
    pairs: FOLLOWERS,
};

/// The claims waiting for the worker. Only a service with a Bitrix24 worker takes claims from the pipeline.
#[derive(Clone, Default)]
pub struct Handoff {
    claims: Arc<Mutex<VecDeque<ClaimOutcome>>>,
    enabled: bool,
}

impl Handoff {
    /// Hand-offs for a Bitrix24 worker (`enabled`), or none (no worker of this kind: the pipeline claims
    /// nothing).
    pub fn new(enabled: bool) -> Self {
        Self {
            claims: Default::default(),
            enabled,
        }
    }

    /// Whether the pipeline should claim card steps for the worker.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Queues a claim for the worker's next round (the caller wakes the worker).
    pub fn hand(&self, claim: ClaimOutcome) {
        if !claim.claimed.is_empty() {
            self.lock().push_back(claim);
        }
    }

    /// The claims for one round: `own` (the worker's claim of its last round) after those handed to it, whole
    /// claims from the front as long as their steps (followers not counted) stay within `limit`; the rest wait
    /// for the next round.
    pub fn take(&self, own: Option<ClaimOutcome>, limit: usize) -> Option<ClaimOutcome> {
        let mut claims = self.lock();
        if let Some(own) = own.filter(|c| !c.claimed.is_empty()) {
            claims.push_back(own);
        }
        let mut round = claims.pop_front()?;
        while let Some(next) = claims.front() {
            if round.claimed.len() + next.claimed.len() > limit {
                break;
            }
            let Some(next) = claims.pop_front() else { break };
            round.absorb(next);
        }
        Some(round)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<ClaimOutcome>> {
        self.claims.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(ids: &[i64]) -> ClaimOutcome {
        let step = |id: i64| store::Step {
            id: store::StepId(id),
            call_key: format!("call{id}"),
            seq: 1,
            idempotency_key: format!("call{id}/register"),
            kind: "register".into(),
            payload: serde_json::Value::Null,
            priority: 0,
            state: store::StepState::InFlight,
            attempts: 1,
            next_attempt_at: store::Timestamp::from_secs(0),
            lease_until: None,
            last_error: None,
            result: None,
            expires_at: None,
            created_at: store::Timestamp::from_secs(0),
            updated_at: store::Timestamp::from_secs(0),
        };
        ClaimOutcome {
            claimed: ids.iter().map(|&id| step(id)).collect(),
            ..Default::default()
        }
    }

    fn ids(claim: &ClaimOutcome) -> Vec<i64> {
        claim.claimed.iter().map(|s| s.id.0).collect()
    }

    #[test]
    fn a_round_takes_the_handed_claims_first_and_no_more_than_a_batch() {
        let handoff = Handoff::new(true);
        handoff.hand(claim(&[1, 2]));
        handoff.hand(claim(&[]));
        handoff.hand(claim(&[3]));
        let round = handoff.take(Some(claim(&[4, 5])), 4).expect("a round");
        assert_eq!(ids(&round), [1, 2, 3]);
        // The worker's own claim did not fit: it waits for the next round, and nothing is lost.
        assert_eq!(ids(&handoff.take(None, 4).expect("the rest")), [4, 5]);
        assert!(handoff.take(None, 4).is_none());
    }
}
