//! `tasks.task.add`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::de;
use crate::method::Method;

/// Fields of a new task (UPPER_CASE on the wire).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct TaskFields {
    pub title: String,
    pub responsible_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `2025-12-31T23:59:59+03:00`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// 0 low, 1 medium, 2 high.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// Bindings such as `L_4`, `C_7`, `CO_5`, `D_10`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub uf_crm_task: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub auditors: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub accomplices: Vec<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id: Option<u64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `tasks.task.add`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TaskAdd {
    pub fields: TaskFields,
}

/// A task as returned (camelCase, numbers as strings).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Task {
    #[serde(deserialize_with = "de::u64_lenient")]
    pub id: u64,
    #[serde(default, deserialize_with = "de::opt_string_lenient")]
    pub title: Option<String>,
    #[serde(rename = "responsibleId", default, deserialize_with = "de::opt_u64_lenient")]
    pub responsible_id: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_string_lenient")]
    pub status: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TaskAdded {
    pub task: Task,
}

impl Method for TaskAdd {
    const NAME: &'static str = "tasks.task.add";
    type Output = TaskAdded;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::to_params;
    use serde_json::json;

    #[test]
    fn params_and_result() {
        let req = TaskAdd {
            fields: TaskFields {
                title: "Call back".into(),
                responsible_id: 7,
                uf_crm_task: vec!["L_4".into()],
                ..Default::default()
            },
        };
        assert_eq!(
            to_params(&req).unwrap(),
            json!({"fields": {"TITLE": "Call back", "RESPONSIBLE_ID": 7, "UF_CRM_TASK": ["L_4"]}})
        );
        let r: TaskAdded = serde_json::from_value(json!({"task": {"id": "3711", "title": "Call back", "responsibleId": "7", "status": "2", "deadline": null}})).unwrap();
        assert_eq!((r.task.id, r.task.responsible_id), (3711, Some(7)));
    }
}
