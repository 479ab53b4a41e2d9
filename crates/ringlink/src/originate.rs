//! The AMI `Originate` of a click-to-call, customized by `process_originate_params`.
//!
//! The seed's params (`caller_id`, `channel`, `context`, `extension`, `priority`, optional `codecs` and
//! `variable`) go to the hook; what it answers (another context, trunk or number format) becomes the action.
//! A hook that fails leaves the call as ringlink built it.

use hooks::{Called, Context, HookName, Hooks, Outcome};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What an `Originate` is made of, in the seed's names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginateParams {
    pub caller_id: String,
    /// The employee's phone, rung first (`PJSIP/101`).
    pub channel: String,
    pub context: String,
    /// The client's number, dialled once the employee answers.
    pub extension: String,
    pub priority: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codecs: Option<String>,
    /// Channel variables, `NAME=value` separated by commas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variable: Option<String>,
}

impl OriginateParams {
    /// The AMI action (asynchronous: the answer comes as `OriginateResponse`).
    pub fn action(&self) -> ami::Message {
        let mut action = ami::Message::action("Originate")
            .with("Channel", self.channel.as_str())
            .with("Context", self.context.as_str())
            .with("Exten", self.extension.as_str())
            .with("Priority", self.priority.as_str())
            .with("CallerID", self.caller_id.as_str())
            .with("Async", "true");
        if let Some(codecs) = &self.codecs {
            action = action.with("Codecs", codecs.as_str());
        }
        for variable in self
            .variable
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            action = action.with("Variable", variable);
        }
        action
    }

    /// Runs `process_originate_params` (when enabled) and returns the params to originate with.
    pub async fn customized(self, hooks: &Hooks, context: &Context) -> (Self, Option<Called>) {
        let Ok(params) = serde_json::to_value(&self) else {
            return (self, None);
        };
        let Some(called) = hooks.call(HookName::ProcessOriginateParams, &params, context).await else {
            return (self, None);
        };
        let customized = match &called.outcome {
            Outcome::Applied(answer) => from_answer(&answer.params).unwrap_or_else(|| self.clone()),
            Outcome::Cancelled | Outcome::Failed(_) => self.clone(),
        };
        (customized, Some(called))
    }
}

/// The answer's params; numbers a PHP hook printed as numbers (`"priority": 1`) read as text.
fn from_answer(params: &Value) -> Option<OriginateParams> {
    let mut params = params.clone();
    if let Value::Object(map) = &mut params {
        for value in map.values_mut() {
            if let Value::Number(n) = value {
                *value = Value::String(n.to_string());
            }
        }
    }
    serde_json::from_value(params).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn office_call() -> OriginateParams {
        OriginateParams {
            caller_id: "Bitrix24 <101>".into(),
            channel: "PJSIP/101".into(),
            context: "from-internal".into(),
            extension: "89001234567".into(),
            priority: "1".into(),
            codecs: None,
            variable: Some("RINGLINK_CALL_ID=externalCall.1".into()),
        }
    }

    #[tokio::test]
    async fn click_to_call_goes_through_the_context_the_example_hooks_choose() {
        for language in ["php", "python"] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../examples/hooks")
                .join(language);
            let config = hooks::HooksConfig {
                dir: Some(dir),
                ..hooks::HooksConfig::default()
            };
            let hooks = Hooks::discover(&config).expect("the examples directory");
            let (params, called) = office_call().customized(&hooks, &Context::default()).await;
            assert!(called.is_some(), "{language}: the hook ran");
            assert_eq!(params.context, "from-crm", "{language}");
            let action = params.action();
            assert_eq!(action.get("Context"), Some("from-crm"), "{language}");
            assert_eq!(action.get("Channel"), Some("PJSIP/101"), "{language}");
            assert_eq!(action.get("Exten"), Some("89001234567"), "{language}");
            assert_eq!(
                action.get("Variable"),
                Some("RINGLINK_CALL_ID=externalCall.1"),
                "{language}"
            );
        }
    }

    #[tokio::test]
    async fn a_failing_hook_leaves_the_originate_as_built() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("process_originate_params.sh"), "exit 2").expect("hook");
        let config = hooks::HooksConfig {
            dir: Some(dir.path().into()),
            ..hooks::HooksConfig::default()
        };
        let hooks = Hooks::discover(&config).expect("hooks");
        let (params, called) = office_call().customized(&hooks, &Context::default()).await;
        assert_eq!(params, office_call());
        assert!(called.is_some_and(|c| c.describe().contains("exited with status 2")));
    }
}
