//! Employees: which Bitrix24 user a phone belongs to.

use std::collections::HashMap;

use serde_json::Value;
use tracker::Timestamp;

/// A Bitrix24 user id.
pub type UserId = u64;

/// Bitrix24 user fields that hold an employee's phones, in lookup priority order.
pub const PHONE_FIELDS: [&str; 4] = ["UF_PHONE_INNER", "PERSONAL_MOBILE", "WORK_PHONE", "PERSONAL_PHONE"];

/// One employee as the directory needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    pub id: UserId,
    /// The internal extension (`UF_PHONE_INNER`).
    pub extension: Option<String>,
    /// Other phones (`PERSONAL_MOBILE`, `WORK_PHONE`, `PERSONAL_PHONE`).
    pub phones: Vec<String>,
}

/// Extension → Bitrix24 user. Filled from `user.get` answers (or the store's users cache) by the shell; the
/// engine only reads it. An extension it does not know makes the engine ask for a refresh (at most once per
/// `users_refresh_interval_secs`), see [`crate::Plan::refresh_users`].
#[derive(Debug, Clone, Default)]
pub struct UsersDirectory {
    by_extension: HashMap<String, UserId>,
    by_phone: HashMap<String, UserId>,
    /// User → their extension (the first one seen for the user).
    extension_by_user: HashMap<UserId, String>,
    refreshed_at: Option<Timestamp>,
}

/// Keeps the digits of a phone (and nothing else), so `+7 (900) 123-45-67` and `79001234567` meet.
fn phone_key(phone: &str) -> String {
    phone.chars().filter(char::is_ascii_digit).collect()
}

impl UsersDirectory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the whole directory; `refreshed_at` is when the list was fetched. Inactive users must be left
    /// out by the caller (`user.get` with `ACTIVE=true`). When two users claim the same extension, the first wins.
    pub fn replace(&mut self, users: impl IntoIterator<Item = DirectoryUser>, refreshed_at: Timestamp) {
        self.by_extension.clear();
        self.by_phone.clear();
        self.extension_by_user.clear();
        for user in users {
            if let Some(ext) = user.extension.as_deref().map(str::trim).filter(|e| !e.is_empty()) {
                let owner = *self.by_extension.entry(ext.to_owned()).or_insert(user.id);
                if owner == user.id {
                    self.extension_by_user.entry(user.id).or_insert_with(|| ext.to_owned());
                }
            }
            for phone in &user.phones {
                let key = phone_key(phone);
                if !key.is_empty() {
                    self.by_phone.entry(key).or_insert(user.id);
                }
            }
        }
        self.refreshed_at = Some(refreshed_at);
    }

    /// Builds directory entries from `user.get` result items. Items without a numeric `ID`, or with
    /// `ACTIVE` false, are skipped (never an error: the answer comes from outside).
    pub fn users_from_user_get(items: &[Value]) -> Vec<DirectoryUser> {
        let text = |item: &Value, field: &str| -> Option<String> {
            match item.get(field)? {
                Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        };
        items
            .iter()
            .filter(|item| !matches!(item.get("ACTIVE"), Some(Value::Bool(false))))
            .filter_map(|item| {
                let id = text(item, "ID")?.parse::<UserId>().ok()?;
                let extension = text(item, "UF_PHONE_INNER");
                let phones = PHONE_FIELDS[1..].iter().filter_map(|f| text(item, f)).collect();
                Some(DirectoryUser { id, extension, phones })
            })
            .collect()
    }

    /// The user of an employee's phone: by extension first, then by the other phone fields.
    pub fn user_of(&self, number: &str) -> Option<UserId> {
        let number = number.trim();
        if number.is_empty() {
            return None;
        }
        if let Some(id) = self.by_extension.get(number) {
            return Some(*id);
        }
        let key = phone_key(number);
        if key.is_empty() {
            return None;
        }
        self.by_phone.get(&key).copied()
    }

    /// The extension of a user (`UF_PHONE_INNER`), if they have one of their own.
    pub fn extension_of(&self, user: UserId) -> Option<&str> {
        self.extension_by_user.get(&user).map(String::as_str)
    }

    /// When the directory was last filled; `None` if never.
    pub fn refreshed_at(&self) -> Option<Timestamp> {
        self.refreshed_at
    }

    pub fn len(&self) -> usize {
        self.by_extension.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_extension.is_empty() && self.by_phone.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_user_get_answers() {
        let items = vec![
            json!({"ID": "1", "ACTIVE": true, "UF_PHONE_INNER": "101", "PERSONAL_MOBILE": "+7 900 111-22-33"}),
            json!({"ID": "2", "UF_PHONE_INNER": 102, "WORK_PHONE": ""}),
            json!({"ID": "3", "ACTIVE": false, "UF_PHONE_INNER": "103"}),
            json!({"ID": "x", "UF_PHONE_INNER": "104"}),
            json!({"UF_PHONE_INNER": "105"}),
            json!("garbage"),
        ];
        let users = UsersDirectory::users_from_user_get(&items);
        assert_eq!(users.len(), 2);
        let mut dir = UsersDirectory::new();
        dir.replace(users, Timestamp::from_secs(10));
        assert_eq!(dir.user_of("101"), Some(1));
        assert_eq!(dir.user_of("102"), Some(2));
        assert_eq!(dir.user_of("103"), None);
        assert_eq!(dir.user_of("79001112233"), Some(1));
        assert_eq!(dir.user_of(""), None);
        assert_eq!(dir.user_of("---"), None);
        assert_eq!(dir.refreshed_at(), Some(Timestamp::from_secs(10)));
    }

    #[test]
    fn first_claim_of_an_extension_wins() {
        let mut dir = UsersDirectory::new();
        dir.replace(
            [
                DirectoryUser {
                    id: 1,
                    extension: Some("101".into()),
                    phones: vec![],
                },
                DirectoryUser {
                    id: 2,
                    extension: Some("101".into()),
                    phones: vec![],
                },
            ],
            Timestamp::from_secs(1),
        );
        assert_eq!(dir.user_of("101"), Some(1));
        assert_eq!(dir.extension_of(1), Some("101"));
        assert_eq!(dir.extension_of(2), None, "the extension is user 1's");
        dir.replace([], Timestamp::from_secs(2));
        assert_eq!(dir.user_of("101"), None);
        assert!(dir.is_empty());
    }
}
