//! The leader lease of a tenant: instances sharing a PostgreSQL store take turns, a takeover raises the
//! generation, and a deposed leader's writes are refused (fencing). An embedded SQLite store has one instance
//! only and always leads.

mod backends;

use std::time::Duration;

use backends::Backend;
use serde_json::json;
use store::{Leadership, NewStep, StoreError, Timestamp};

const LEASE: Duration = Duration::from_millis(700);

fn step(call: &str) -> NewStep {
    NewStep::new(call, format!("{call}/register"), "register", json!({}))
}

fn generation(leadership: &Leadership) -> i64 {
    match leadership {
        Leadership::Leader { generation, .. } => *generation,
        other => panic!("expected to lead, got {other:?}"),
    }
}

#[test]
fn an_embedded_store_always_leads_and_fences_nothing() {
    let store = Backend::Sqlite.open();
    assert_eq!(store.lead("a", LEASE).unwrap(), Leadership::Sole);
    store.resign("a").unwrap();
    store.enqueue(&[step("c1")], Timestamp::now()).unwrap();
}

#[test]
fn one_instance_leads_the_other_waits_and_takes_over_when_the_lease_expires() {
    let first = Backend::Postgres.open();
    let second = first.open_again();

    let taken = first.lead("first", LEASE).unwrap();
    assert!(
        matches!(&taken, Leadership::Leader { generation: 1, took_over: true, previous, .. } if previous.is_empty()),
        "{taken:?}"
    );
    let waiting = second.lead("second", LEASE).unwrap();
    assert!(
        matches!(&waiting, Leadership::Standby { holder, generation: 1, remaining } if holder == "first" && *remaining <= LEASE),
        "{waiting:?}"
    );
    // Renewing keeps the generation; the standby keeps waiting as long as the leader renews.
    for _ in 0..3 {
        std::thread::sleep(LEASE / 3);
        assert_eq!(generation(&first.lead("first", LEASE).unwrap()), 1);
        assert!(!second.lead("second", LEASE).unwrap().leads());
    }
    first
        .enqueue(&[step("c1")], Timestamp::now())
        .expect("the leader writes");

    // The leader stops renewing (killed, paused, cut off): once its lease expires the standby takes over.
    std::thread::sleep(LEASE + Duration::from_millis(100));
    let took = second.lead("second", LEASE).unwrap();
    assert!(
        matches!(&took, Leadership::Leader { generation: 2, took_over: true, previous, .. } if previous == "first"),
        "{took:?}"
    );
    second
        .enqueue(&[step("c2")], Timestamp::now())
        .expect("the new leader writes");

    // The old leader comes back: every write is refused, and it learns it was deposed.
    let refused = first.enqueue(&[step("c3")], Timestamp::now()).expect_err("fenced");
    assert!(
        matches!(
            refused,
            StoreError::Fenced {
                generation: 1,
                current: 2
            }
        ),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("no longer leads"), "{refused}");
    let claim = first.claim_due(Timestamp::now(), 10, Duration::from_secs(30));
    assert!(matches!(claim, Err(StoreError::Fenced { .. })), "{claim:?}");
    assert_eq!(
        first.lead("first", LEASE).unwrap(),
        Leadership::Deposed {
            holder: "second".into(),
            generation: 2
        }
    );
    // Even once the new leader's lease has expired in turn, the deposed store stays fenced: its process must
    // start again as a new instance.
    std::thread::sleep(LEASE + Duration::from_millis(100));
    assert!(matches!(
        first.lead("first", LEASE).unwrap(),
        Leadership::Deposed { .. }
    ));
    assert!(first.append_journal(&[]).is_err());

    assert!(
        second.step_by_key("c3/register").unwrap().is_none(),
        "the fenced write left nothing"
    );
    assert!(second.step_by_key("c1/register").unwrap().is_some());
    // Reads are not fenced: a deposed instance can still show what it knows.
    assert!(first.step_by_key("c2/register").unwrap().is_some());
}

#[test]
fn a_leader_that_resigns_hands_over_at_once_and_writes_nothing_more() {
    let first = Backend::Postgres.open();
    let second = first.open_again();
    assert!(first.lead("first", Duration::from_secs(60)).unwrap().leads());
    assert!(!second.lead("second", Duration::from_secs(60)).unwrap().leads());
    first.resign("first").unwrap();
    assert!(matches!(
        first.enqueue(&[step("c1")], Timestamp::now()),
        Err(StoreError::Fenced { .. })
    ));
    assert_eq!(generation(&second.lead("second", Duration::from_secs(60)).unwrap()), 2);
}

#[test]
fn a_write_in_progress_finishes_before_a_takeover_and_none_starts_after_it() {
    // The takeover waits for the row lock every fenced write holds: run many writes of the old leader while the
    // standby takes over, and check that each one either committed before the new generation or was refused.
    let first = Backend::Postgres.open();
    let second = first.open_again();
    assert!(first.lead("first", LEASE).unwrap().leads());
    std::thread::sleep(LEASE + Duration::from_millis(50));
    let mut committed = 0;
    let mut refused = 0;
    let (takeover, written) = std::thread::scope(|scope| {
        let taking = scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(20));
            second.lead("second", LEASE).unwrap()
        });
        let mut n = 0;
        while refused < 10 && n < 20_000 {
            n += 1;
            match first.enqueue(&[step(&format!("w{n}"))], Timestamp::now()) {
                Ok(_) => committed += 1,
                Err(StoreError::Fenced { .. }) => refused += 1,
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        (taking.join().unwrap(), n)
    });
    assert_eq!(generation(&takeover), 2);
    assert!(refused > 0, "the old leader kept writing after the takeover");
    // Every write of the old leader that committed did so before the takeover: the ones after are all refused.
    for n in 1..=written {
        let stored = second.step_by_key(&format!("w{n}/register")).unwrap().is_some();
        assert_eq!(
            stored,
            n <= committed,
            "write {n}: stored {stored}, committed {committed}"
        );
    }
}
