//! Users cache, OAuth tokens, settings.

mod backends;

use backends::Backend;
use serde_json::json;
use store::{PortalTokens, Timestamp, User, UserPhone, EXTENSION_FIELD};

fn at(secs: i64) -> Timestamp {
    Timestamp::from_secs(1_700_000_000 + secs)
}

fn user(id: u64, name: &str, active: bool, phones: &[(&str, &str)]) -> User {
    User {
        id,
        name: name.into(),
        email: Some(format!("{}@example.com", name.to_lowercase())),
        position: Some("Manager".into()),
        active,
        phones: phones
            .iter()
            .map(|(field, number)| UserPhone::new(*field, *number))
            .collect(),
        raw: json!({"ID": id.to_string(), "NAME": name}),
    }
}

fn ids(users: &[User]) -> Vec<u64> {
    users.iter().map(|user| user.id).collect()
}

fn the_users_cache_is_replaced_as_a_whole(backend: Backend) {
    let store = backend.open();
    assert_eq!(store.users_refreshed_at().unwrap(), None);
    assert!(store.users().unwrap().is_empty());

    let anna = user(
        7,
        "Anna",
        true,
        &[(EXTENSION_FIELD, "101"), ("PERSONAL_MOBILE", "79161234567")],
    );
    let boris = user(
        3,
        "Boris",
        true,
        &[(EXTENSION_FIELD, "102"), ("WORK_PHONE", "74951112233")],
    );
    store.replace_users(&[anna.clone(), boris.clone()], at(0)).unwrap();
    assert_eq!(
        store.users().unwrap(),
        [boris.clone(), anna.clone()],
        "by id, every field kept"
    );
    assert_eq!(store.users_refreshed_at().unwrap(), Some(at(0)));
    assert_eq!(store.users().unwrap()[1].extension(), Some("101"));

    // The next refresh: Boris left, Vera came, and the list returned Vera twice (last copy wins).
    let vera_old = user(9, "Vera", true, &[(EXTENSION_FIELD, "109")]);
    let vera = user(9, "Vera", true, &[(EXTENSION_FIELD, "103")]);
    store
        .replace_users(&[anna.clone(), vera_old, vera.clone()], at(60))
        .unwrap();
    assert_eq!(store.users().unwrap(), [anna, vera]);
    assert_eq!(store.users_refreshed_at().unwrap(), Some(at(60)));
    assert_eq!(store.user_by_extension("102").unwrap(), None);
    assert_eq!(store.user_by_extension("109").unwrap(), None);
    assert_eq!(store.user_by_extension("103").unwrap().map(|u| u.id), Some(9));
}

fn users_are_found_by_extension_and_by_phone(backend: Backend) {
    let store = backend.open();
    store
        .replace_users(
            &[
                user(5, "Fired", false, &[(EXTENSION_FIELD, "101")]),
                user(
                    7,
                    "Anna",
                    true,
                    &[(EXTENSION_FIELD, "101"), ("PERSONAL_MOBILE", "79161234567")],
                ),
                user(
                    8,
                    "Gleb",
                    true,
                    &[("WORK_PHONE", "101"), ("PERSONAL_MOBILE", "89161234567")],
                ),
                user(9, "Dina", true, &[("PERSONAL_PHONE", "79161234567")]),
            ],
            at(0),
        )
        .unwrap();
    // The active holder of the extension wins over an inactive one; a WORK_PHONE "101" is not an extension.
    assert_eq!(store.user_by_extension("101").unwrap().map(|u| u.id), Some(7));
    assert_eq!(store.user_by_extension("999").unwrap(), None);

    // Several variants of one number, any field.
    assert_eq!(
        ids(&store
            .users_by_phone(&["79161234567", "89161234567", "9161234567"])
            .unwrap()),
        [7, 8, 9]
    );
    assert_eq!(ids(&store.users_by_phone(&["89161234567"]).unwrap()), [8]);
    assert!(store.users_by_phone(&["0000"]).unwrap().is_empty());
    assert!(store.users_by_phone(&[]).unwrap().is_empty());
    let found = store.users_by_phone(&["89161234567"]).unwrap();
    assert_eq!(
        found[0].phones,
        [
            UserPhone::new("WORK_PHONE", "101"),
            UserPhone::new("PERSONAL_MOBILE", "89161234567")
        ]
    );
}

fn a_user_id_beyond_the_database_range_is_refused_and_nothing_changes(backend: Backend) {
    let store = backend.open();
    store.replace_users(&[user(1, "Anna", true, &[])], at(0)).unwrap();
    let error = store
        .replace_users(&[user(2, "B", true, &[]), user(u64::MAX, "Huge", true, &[])], at(1))
        .unwrap_err();
    assert!(
        matches!(error, store::StoreError::Invalid { what: "user id", .. }),
        "{error}"
    );
    assert_eq!(ids(&store.users().unwrap()), [1]);
    assert_eq!(store.users_refreshed_at().unwrap(), Some(at(0)));
}

fn tokens_are_saved_per_portal_and_never_printed(backend: Backend) {
    let store = backend.open();
    assert_eq!(store.load_tokens("example.bitrix24.ru").unwrap(), None);
    let tokens = PortalTokens {
        access_token: "ACCESS-SECRET".into(),
        refresh_token: "REFRESH-SECRET".into(),
        expires_at: Some(at(3600)),
        scope: Some("crm,telephony,user".into()),
        client_endpoint: Some("https://example.bitrix24.ru/rest/".into()),
        member_id: Some("abc123".into()),
    };
    store.save_tokens("example.bitrix24.ru", &tokens, at(0)).unwrap();
    let refreshed = PortalTokens {
        access_token: "ACCESS-2".into(),
        refresh_token: "REFRESH-2".into(),
        expires_at: None,
        scope: None,
        client_endpoint: None,
        member_id: None,
    };
    store.save_tokens("other.bitrix24.ru", &refreshed, at(1)).unwrap();
    assert_eq!(store.load_tokens("example.bitrix24.ru").unwrap(), Some(tokens.clone()));
    store.save_tokens("example.bitrix24.ru", &refreshed, at(2)).unwrap();
    assert_eq!(
        store.load_tokens("example.bitrix24.ru").unwrap(),
        Some(refreshed.clone())
    );
    assert_eq!(store.load_tokens("other.bitrix24.ru").unwrap(), Some(refreshed));

    let printed = format!("{tokens:?}");
    assert!(!printed.contains("SECRET"), "{printed}");
    assert!(printed.contains("abc123"));
}

fn settings_hold_json_by_key(backend: Backend) {
    let store = backend.open();
    assert_eq!(store.setting("missed_call.responsible").unwrap(), None);
    store
        .set_setting(
            "missed_call.responsible",
            &json!(["entity_owner", "last_rang", "default"]),
            at(0),
        )
        .unwrap();
    store.set_setting("create_lead.incoming", &json!(true), at(0)).unwrap();
    store.set_setting("create_lead.incoming", &json!(false), at(1)).unwrap();
    assert_eq!(store.setting("create_lead.incoming").unwrap(), Some(json!(false)));
    assert_eq!(
        store.settings().unwrap(),
        [
            ("create_lead.incoming".to_string(), json!(false)),
            (
                "missed_call.responsible".to_string(),
                json!(["entity_owner", "last_rang", "default"])
            )
        ]
    );
    assert!(store.delete_setting("create_lead.incoming").unwrap());
    assert!(!store.delete_setting("create_lead.incoming").unwrap());
    assert_eq!(store.settings().unwrap().len(), 1);
}

on_both_backends!(
    the_users_cache_is_replaced_as_a_whole,
    users_are_found_by_extension_and_by_phone,
    a_user_id_beyond_the_database_range_is_refused_and_nothing_changes,
    tokens_are_saved_per_portal_and_never_printed,
    settings_hold_json_by_key,
);

on_postgres_over_tls!(users_are_found_by_extension_and_by_phone, settings_hold_json_by_key);
