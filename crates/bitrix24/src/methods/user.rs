//! `user.get`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::client::Client;
use crate::de;
use crate::error::Error;
use crate::method::{ListMethod, Method};

/// `user.get`: pages of 50; [`Client::users_all`] follows every page.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UserGet {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sort: Option<String>,
    /// `ASC` or `DESC`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
    /// Any user field plus `UF_DEPARTMENT`, `UF_PHONE_INNER`, `ACTIVE`, `USER_TYPE`…; prefixes as in CRM.
    #[serde(rename = "FILTER", skip_serializing_if = "Map::is_empty")]
    pub filter: Map<String, Value>,
    #[serde(rename = "ADMIN_MODE", skip_serializing_if = "Option::is_none")]
    pub admin_mode: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
}

impl UserGet {
    /// Active employees only.
    pub fn active() -> Self {
        let mut filter = Map::new();
        filter.insert("ACTIVE".into(), Value::Bool(true));
        UserGet {
            filter,
            ..Default::default()
        }
    }
}

/// A portal user. `UF_PHONE_INNER` is the extension the PBX knows the user by.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct User {
    #[serde(rename = "ID", deserialize_with = "de::u64_lenient")]
    pub id: u64,
    #[serde(rename = "ACTIVE", default, deserialize_with = "de::opt_bool_lenient")]
    pub active: Option<bool>,
    #[serde(rename = "NAME", default, deserialize_with = "de::opt_string_lenient")]
    pub name: Option<String>,
    #[serde(rename = "LAST_NAME", default, deserialize_with = "de::opt_string_lenient")]
    pub last_name: Option<String>,
    #[serde(rename = "SECOND_NAME", default, deserialize_with = "de::opt_string_lenient")]
    pub second_name: Option<String>,
    #[serde(rename = "EMAIL", default, deserialize_with = "de::opt_string_lenient")]
    pub email: Option<String>,
    #[serde(rename = "WORK_POSITION", default, deserialize_with = "de::opt_string_lenient")]
    pub work_position: Option<String>,
    #[serde(rename = "PERSONAL_MOBILE", default, deserialize_with = "de::opt_string_lenient")]
    pub personal_mobile: Option<String>,
    #[serde(rename = "WORK_PHONE", default, deserialize_with = "de::opt_string_lenient")]
    pub work_phone: Option<String>,
    #[serde(rename = "PERSONAL_PHONE", default, deserialize_with = "de::opt_string_lenient")]
    pub personal_phone: Option<String>,
    #[serde(rename = "UF_PHONE_INNER", default, deserialize_with = "de::opt_string_lenient")]
    pub uf_phone_inner: Option<String>,
    #[serde(rename = "UF_DEPARTMENT", default, deserialize_with = "de::ids_lenient")]
    pub uf_department: Vec<u64>,
    #[serde(rename = "USER_TYPE", default, deserialize_with = "de::opt_string_lenient")]
    pub user_type: Option<String>,
    #[serde(rename = "IS_ONLINE", default, deserialize_with = "de::opt_bool_lenient")]
    pub is_online: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Method for UserGet {
    const NAME: &'static str = "user.get";
    type Output = Vec<User>;
}

impl ListMethod for UserGet {
    type Item = User;
    fn set_start(&mut self, start: u64) {
        self.start = Some(start);
    }
}

impl Client {
    /// `user.get` over every page.
    pub async fn users_all(&self, request: UserGet) -> Result<Vec<User>, Error> {
        self.list_all(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::to_params;
    use serde_json::json;

    #[test]
    fn params_and_user() {
        let mut req = UserGet::active();
        req.set_start(50);
        assert_eq!(
            to_params(&req).unwrap(),
            json!({"FILTER": {"ACTIVE": true}, "start": 50})
        );
        let u: User = serde_json::from_value(
            json!({"ID": "1", "ACTIVE": true, "NAME": "Ann", "UF_PHONE_INNER": "101",
            "UF_DEPARTMENT": [1], "IS_ONLINE": "Y", "TIME_ZONE": ""}),
        )
        .unwrap();
        assert_eq!(
            (u.id, u.uf_phone_inner.as_deref(), u.is_online),
            (1, Some("101"), Some(true))
        );
    }
}
