//! Which instance of a tenant leads: the rules of the lease, without a database.
//!
//! Instances of one tenant sharing a PostgreSQL store elect one leader through a lease row: who holds it
//! (`holder`), a `generation` that rises by one on every takeover, and when it expires (the database's clock, so
//! the hosts' clocks do not matter). The holder renews it well before it expires; any other instance takes it
//! once it has expired. Every write transaction of an instance that took part checks that the row still carries
//! its generation, so a deposed leader (paused, cut off, slow) cannot write after a takeover: fencing.
//!
//! [`decide`] is what an instance does with the row it read; [`verdict`] is what a leader concludes from its
//! last renewal. The PostgreSQL store applies the first under a row lock, the service the second.

use std::time::Duration;

use crate::types::Timestamp;

/// The lease row of a tenant as read (locked) from the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    /// Who holds it; empty when nobody ever did.
    pub holder: String,
    /// Raised by one on every takeover (0: never taken).
    pub generation: i64,
    /// The holder leads until then (database clock).
    pub expires_at: Timestamp,
}

/// What an instance does with the lease row it read at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The lease is free or expired: take it with this generation.
    Take { generation: i64 },
    /// This instance holds it: push the expiry on.
    Renew,
    /// Another instance holds it and it has not expired: stay standby.
    Wait,
    /// This instance led with an older generation, and another took over since: it must stop acting.
    Deposed,
}

/// The decision of instance `me`, which led with generation `mine` (if it did), on reading `row` at `now`.
pub fn decide(row: &LeaseRow, me: &str, mine: Option<i64>, now: Timestamp) -> Decision {
    let ours = row.holder == me && mine == Some(row.generation);
    if ours {
        // Even when expired: nobody took it (the generation is ours), so nobody wrote in between.
        return Decision::Renew;
    }
    if mine.is_some_and(|generation| generation != row.generation) {
        return Decision::Deposed;
    }
    if row.holder.is_empty() || row.expires_at <= now {
        return Decision::Take {
            generation: row.generation + 1,
        };
    }
    Decision::Wait
}

/// Where an instance stands after an attempt to take or renew the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    /// The only instance there can be (an embedded store): it always leads and nothing is fenced.
    Sole,
    /// This instance leads with `generation` for `remaining` from the attempt; `took_over` when this attempt
    /// took the lease (from `previous`, empty when it was never held).
    Leader {
        generation: i64,
        remaining: Duration,
        took_over: bool,
        previous: String,
    },
    /// `holder` leads with `generation` for at least `remaining`.
    Standby {
        holder: String,
        generation: i64,
        remaining: Duration,
    },
    /// Another instance (`holder`) took the lease over with `generation`: this one must stop acting.
    Deposed { holder: String, generation: i64 },
}

impl Leadership {
    /// Whether this instance may act (follow the PBX, send steps).
    pub fn leads(&self) -> bool {
        matches!(self, Leadership::Sole | Leadership::Leader { .. })
    }
}

/// What a leader concludes on its renewal timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Still the leader: go on.
    Lead,
    /// Stop acting now, for this reason (in plain words, for the log).
    StepDown(String),
}

/// A leader's verdict from its latest attempt (`attempt`: the leadership it read, or the error it got) and the
/// time since its last successful renewal began (`since_renewed`, on its own monotonic clock). A failed attempt
/// is survivable while the lease it last renewed may still be running; once `lease` has passed since that
/// renewal began, a standby may already have taken over, so the leader steps down even without hearing so.
pub fn verdict<E: std::fmt::Display>(
    attempt: &Result<Leadership, E>,
    since_renewed: Duration,
    lease: Duration,
) -> Verdict {
    match attempt {
        Ok(Leadership::Sole | Leadership::Leader { .. }) => Verdict::Lead,
        Ok(Leadership::Deposed { holder, generation }) => Verdict::StepDown(format!(
            "{holder} took the lease over (generation {generation}) while this instance could not renew it"
        )),
        Ok(Leadership::Standby { holder, generation, .. }) => {
            Verdict::StepDown(format!("{holder} holds the lease (generation {generation})"))
        }
        Err(error) if since_renewed >= lease => Verdict::StepDown(format!(
            "the lease could not be renewed for {:.1} s, longer than it lasts ({:.1} s): {error}",
            since_renewed.as_secs_f64(),
            lease.as_secs_f64()
        )),
        Err(_) => Verdict::Lead,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(holder: &str, generation: i64, expires: i64) -> LeaseRow {
        LeaseRow {
            holder: holder.into(),
            generation,
            expires_at: Timestamp::from_secs(expires),
        }
    }

    const NOW: i64 = 1_000;

    fn at() -> Timestamp {
        Timestamp::from_secs(NOW)
    }

    #[test]
    fn a_lease_never_held_is_taken_with_generation_one() {
        assert_eq!(
            decide(&row("", 0, 0), "a", None, at()),
            Decision::Take { generation: 1 }
        );
    }

    #[test]
    fn a_running_lease_of_another_keeps_this_instance_standby() {
        assert_eq!(decide(&row("b", 4, NOW + 1), "a", None, at()), Decision::Wait);
    }

    #[test]
    fn an_expired_lease_is_taken_with_the_next_generation() {
        assert_eq!(
            decide(&row("b", 4, NOW), "a", None, at()),
            Decision::Take { generation: 5 }
        );
        assert_eq!(
            decide(&row("b", 4, NOW - 30), "a", None, at()),
            Decision::Take { generation: 5 }
        );
    }

    #[test]
    fn the_holder_renews_even_an_expired_lease_nobody_took() {
        assert_eq!(decide(&row("a", 4, NOW + 5), "a", Some(4), at()), Decision::Renew);
        assert_eq!(decide(&row("a", 4, NOW - 5), "a", Some(4), at()), Decision::Renew);
    }

    #[test]
    fn a_leader_whose_generation_moved_on_is_deposed_even_if_the_lease_expired_again() {
        assert_eq!(decide(&row("b", 5, NOW + 5), "a", Some(4), at()), Decision::Deposed);
        assert_eq!(decide(&row("b", 5, NOW - 5), "a", Some(4), at()), Decision::Deposed);
        // Its own name with a newer generation is still someone else's takeover (a restarted process).
        assert_eq!(decide(&row("a", 5, NOW + 5), "a", Some(4), at()), Decision::Deposed);
    }

    #[test]
    fn an_instance_that_never_led_does_not_renew_a_lease_held_under_its_name() {
        // Holder names are unique per process; a row naming it without its generation is not its lease.
        assert_eq!(decide(&row("a", 3, NOW + 5), "a", None, at()), Decision::Wait);
        assert_eq!(
            decide(&row("a", 3, NOW - 5), "a", None, at()),
            Decision::Take { generation: 4 }
        );
    }

    const LEASE: Duration = Duration::from_secs(8);

    fn leader() -> Result<Leadership, String> {
        Ok(Leadership::Leader {
            generation: 2,
            remaining: LEASE,
            took_over: false,
            previous: String::new(),
        })
    }

    #[test]
    fn a_renewed_lease_keeps_the_leader() {
        assert_eq!(verdict(&leader(), Duration::ZERO, LEASE), Verdict::Lead);
        assert_eq!(
            verdict(&Ok::<_, String>(Leadership::Sole), LEASE * 9, LEASE),
            Verdict::Lead
        );
    }

    #[test]
    fn a_failed_renewal_is_survived_only_while_the_last_lease_may_run() {
        let failed: Result<Leadership, String> = Err("connection refused".into());
        assert_eq!(verdict(&failed, Duration::from_secs(7), LEASE), Verdict::Lead);
        let Verdict::StepDown(reason) = verdict(&failed, LEASE, LEASE) else {
            panic!("must step down once the lease may have run out");
        };
        assert!(
            reason.contains("connection refused") && reason.contains("8.0 s"),
            "{reason}"
        );
    }

    #[test]
    fn a_takeover_or_another_holder_makes_the_leader_step_down_at_once() {
        let deposed: Result<Leadership, String> = Ok(Leadership::Deposed {
            holder: "b".into(),
            generation: 3,
        });
        assert!(matches!(verdict(&deposed, Duration::ZERO, LEASE), Verdict::StepDown(r) if r.contains("b took")));
        let standby: Result<Leadership, String> = Ok(Leadership::Standby {
            holder: "b".into(),
            generation: 3,
            remaining: LEASE,
        });
        assert!(matches!(verdict(&standby, Duration::ZERO, LEASE), Verdict::StepDown(_)));
    }
}
