//! One PostgreSQL database, several tenants (PBX ⇄ portal pairs): each sees only its own rows, even when both
//! use the same call keys, idempotency keys, user ids and setting names.

mod backends;

use std::time::Duration;

use backends::Backend;
use serde_json::json;
use store::{EntryKind, NewJournalEntry, NewStep, PortalTokens, Timestamp, User, UserPhone, EXTENSION_FIELD};

fn at(secs: i64) -> Timestamp {
    Timestamp::from_secs(1_700_000_000 + secs)
}

fn register(call: &str, tenant: &str) -> NewStep {
    NewStep::new(
        call,
        format!("{call}/register"),
        "register",
        json!({ "tenant": tenant }),
    )
}

fn user(id: u64, name: &str, extension: &str) -> User {
    User {
        id,
        name: name.into(),
        email: None,
        position: None,
        active: true,
        phones: vec![UserPhone {
            field: EXTENSION_FIELD.into(),
            number: extension.into(),
        }],
        raw: json!({ "ID": id.to_string() }),
    }
}

#[test]
fn tenants_sharing_a_database_never_see_each_others_rows() {
    let north = Backend::Postgres.open();
    let south = north.other_tenant("south");

    // The same keys in both: each tenant gets its own step, numbered from 1.
    let a = north.enqueue(&[register("1700000000.1", "north")], at(0)).unwrap();
    let b = south.enqueue(&[register("1700000000.1", "south")], at(0)).unwrap();
    assert!(a[0].created && b[0].created, "the same key is new in each tenant");
    assert_eq!((a[0].step.seq, b[0].step.seq), (1, 1));

    let claimed = north.claim_due(at(1), 10, Duration::from_secs(30)).unwrap().claimed;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].payload, json!({ "tenant": "north" }));
    assert_eq!(north.step_counts().unwrap().in_flight, 1);
    assert_eq!(
        south.step_counts().unwrap().pending,
        1,
        "north's claim left south's step alone"
    );
    // A lease of one tenant means nothing to the other.
    north
        .mark_done(claimed[0].lease(), &json!({"CALL_ID": "N"}), at(2))
        .unwrap();
    assert_eq!(south.result_by_key("1700000000.1/register").unwrap(), None);
    assert_eq!(south.release_claims(at(3)).unwrap(), 0);

    north
        .append_journal(&[NewJournalEntry::new(
            "1700000000.1",
            at(0),
            EntryKind::Decision,
            "north's",
        )])
        .unwrap();
    assert!(south.call_timeline("1700000000.1").unwrap().is_empty());
    assert!(south.recent_calls(10).unwrap().is_empty());

    north.replace_users(&[user(1, "Anna", "101")], at(0)).unwrap();
    south.replace_users(&[user(1, "Boris", "101")], at(0)).unwrap();
    assert_eq!(
        north.user_by_extension("101").unwrap().map(|u| u.name),
        Some("Anna".into())
    );
    assert_eq!(
        south.user_by_extension("101").unwrap().map(|u| u.name),
        Some("Boris".into())
    );
    south.replace_users(&[], at(1)).unwrap();
    assert_eq!(
        north.users().unwrap().len(),
        1,
        "south's refresh kept north's directory"
    );

    north.set_setting("ui.password", &json!("n"), at(0)).unwrap();
    assert_eq!(south.setting("ui.password").unwrap(), None);
    let tokens = PortalTokens {
        access_token: "north-access".into(),
        refresh_token: "north-refresh".into(),
        expires_at: None,
        scope: None,
        client_endpoint: None,
        member_id: None,
    };
    north.save_tokens("portal", &tokens, at(0)).unwrap();
    assert!(south.load_tokens("portal").unwrap().is_none());

    assert!(north
        .accept_click("externalCall.1", "c2c-1", &json!({}), at(0))
        .unwrap());
    assert!(south
        .accept_click("externalCall.1", "c2c-1", &json!({}), at(0))
        .unwrap());
}

#[test]
fn a_tenant_name_is_required() {
    let error = store::PgStore::open("postgres://nobody@127.0.0.1:1/none", store::PgOptions::new(""))
        .expect_err("an empty tenant is refused before connecting");
    assert!(error.to_string().contains("tenant"), "{error}");
}
