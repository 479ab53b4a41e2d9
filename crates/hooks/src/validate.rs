//! What a hook's answer may be, and what ringlink makes of it.
//!
//! The contract (seed): `{"data": …, "state": "success"}`. `data` is laid over the params the hook was given:
//! a key it names replaces the value (objects are laid over recursively), a key it leaves out keeps its value,
//! and a key ringlink did not send is passed through to Bitrix24 (a field of the portal ringlink does not know).
//! Empty `data` (`{}`, `[]`, `null`) cancels the request. A value whose type does not fit the field (an array for
//! `DURATION`, an object for `PHONE_NUMBER`), a changed `CALL_ID`/`EXTERNAL_CALL_ID`, a `state` other than
//! `success` or an `action` the hook does not have makes the whole answer invalid: the caller then sends the
//! un-customized params. A missing `state` is accepted, as the seed's own examples for `process_originate_params`
//! and `process_search_params` omit it.

use serde_json::{Map, Value};

use crate::name::HookName;

/// Keys a hook may not change: they tie the request to the call ringlink registered.
pub const PROTECTED_KEYS: [&str; 2] = ["CALL_ID", "EXTERNAL_CALL_ID"];

/// A valid answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Use these params (the given ones with `data` laid over them).
    Apply(Answer),
    /// Empty `data`: do not send this request.
    Cancel,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The customized params; for `need_registration` a boolean.
    pub params: Value,
    /// The seed's `action` (`ignore`, `delete`, `register`), when the hook has one and gave it.
    pub action: Option<String>,
    /// The seed's `filter` of `process_search_params`, when given.
    pub filter: Option<Value>,
}

/// Why an answer cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("the answer is not a JSON object")]
    NotAnObject,
    #[error("\"state\" is {0}, not \"success\"")]
    State(String),
    #[error("\"data\" is a {0}; an object is expected")]
    DataNotObject(&'static str),
    #[error("field {field}: expected {expected}, got {got}")]
    WrongType {
        field: String,
        expected: &'static str,
        got: &'static str,
    },
    #[error("field {0} may not be changed by a hook")]
    Protected(String),
    #[error("\"action\": {0} is not one of {1}")]
    Action(String, String),
    #[error(
        "need_registration must answer true or false (\"data\": true, or {{\"need_registration\": true}}), got {0}"
    )]
    Verdict(String),
}

/// Checks `answer` (the hook's parsed stdout) against the `params` it was given.
pub fn validate(hook: HookName, params: &Value, answer: &Value) -> Result<Verdict, Invalid> {
    let Value::Object(answer) = answer else {
        return Err(Invalid::NotAnObject);
    };
    match answer.get("state") {
        None => {}
        Some(Value::String(s)) if s == "success" => {}
        Some(other) => return Err(Invalid::State(other.to_string())),
    }
    let action = match answer.get("action") {
        None | Some(Value::Null) => None,
        Some(Value::String(a)) if hook.actions().contains(&a.as_str()) => Some(a.clone()),
        Some(other) => return Err(Invalid::Action(other.to_string(), format!("{:?}", hook.actions()))),
    };
    let data = answer.get("data").unwrap_or(&Value::Null);
    if is_empty(data) {
        return Ok(Verdict::Cancel);
    }
    if hook == HookName::NeedRegistration {
        let verdict = match data {
            Value::Bool(b) => Some(*b),
            Value::Object(m) => m
                .get("need_registration")
                .or_else(|| m.get("register"))
                .and_then(Value::as_bool),
            _ => None,
        };
        return match verdict {
            Some(b) => Ok(Verdict::Apply(Answer {
                params: Value::Bool(b),
                action,
                filter: None,
            })),
            None => Err(Invalid::Verdict(data.to_string())),
        };
    }
    let Value::Object(data) = data else {
        return Err(Invalid::DataNotObject(type_name(data)));
    };
    let mut merged = match params {
        Value::Object(p) => p.clone(),
        _ => Map::new(),
    };
    overlay(&mut merged, data, "")?;
    let filter = match answer.get("filter") {
        None | Some(Value::Null) => None,
        Some(f @ Value::Object(_)) => Some(f.clone()),
        Some(other) => {
            return Err(Invalid::WrongType {
                field: "filter".into(),
                expected: "an object",
                got: type_name(other),
            })
        }
    };
    Ok(Verdict::Apply(Answer {
        params: Value::Object(merged),
        action,
        filter,
    }))
}

/// `{}`, `[]`, `null` (and `""`, which PHP's `json_encode` of an empty value can print).
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

fn overlay(into: &mut Map<String, Value>, data: &Map<String, Value>, path: &str) -> Result<(), Invalid> {
    for (key, new) in data {
        let field = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        match into.get_mut(key) {
            None => {
                into.insert(key.clone(), new.clone());
            }
            Some(old) => {
                if path.is_empty() && PROTECTED_KEYS.contains(&key.as_str()) && !same_scalar(old, new) {
                    return Err(Invalid::Protected(key.clone()));
                }
                match (&mut *old, new) {
                    (Value::Object(o), Value::Object(n)) => overlay(o, n, &field)?,
                    _ => {
                        check_type(old, new, &field)?;
                        *old = new.clone();
                    }
                }
            }
        }
    }
    Ok(())
}

/// `"5"` and `5` are the same id to Bitrix24.
fn same_scalar(a: &Value, b: &Value) -> bool {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    a == b || (text(a).is_some() && text(a) == text(b))
}

/// Whether `new` can stand where ringlink put `old`: a string or a number for a scalar field (Bitrix24 reads
/// both, a PHP hook often turns one into the other), a boolean for a boolean, an array for an array, an object
/// for an object; a field ringlink left null takes any value.
fn check_type(old: &Value, new: &Value, field: &str) -> Result<(), Invalid> {
    let ok = match (old, new) {
        (Value::Null, _) => true,
        (Value::String(_) | Value::Number(_), Value::String(_) | Value::Number(_)) => true,
        (Value::Bool(_), Value::Bool(_)) => true,
        (Value::Array(_), Value::Array(_)) => true,
        (Value::Object(_), Value::Object(_)) => true,
        // Clearing a field is allowed.
        (_, Value::Null) => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Invalid::WrongType {
            field: field.to_owned(),
            expected: match old {
                Value::String(_) | Value::Number(_) => "a string or a number",
                Value::Bool(_) => "a boolean",
                Value::Array(_) => "an array",
                _ => "an object",
            },
            got: type_name(new),
        })
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn register_params() -> Value {
        json!({"CALL_ID": "X1", "USER_ID": 1, "PHONE_NUMBER": "+79001234567", "TYPE": 2, "SHOW": 1,
               "CRM_CREATE": 1, "nested": {"a": "b"}})
    }

    fn applied(v: Result<Verdict, Invalid>) -> Answer {
        match v {
            Ok(Verdict::Apply(a)) => a,
            other => panic!("applied answer expected, got {other:?}"),
        }
    }

    #[test]
    fn data_is_laid_over_the_params_and_unknown_keys_pass_through() {
        let answer = json!({"data": {"PHONE_NUMBER": "89001234567", "UF_CUSTOM": [1, 2], "nested": {"c": 1}},
                            "state": "success"});
        let a = applied(validate(
            HookName::ProcessRegistrationParams,
            &register_params(),
            &answer,
        ));
        assert_eq!(a.params["PHONE_NUMBER"], "89001234567");
        assert_eq!(a.params["UF_CUSTOM"], json!([1, 2]));
        assert_eq!(a.params["USER_ID"], 1);
        assert_eq!(a.params["nested"], json!({"a": "b", "c": 1}));
    }

    #[test]
    fn empty_data_cancels_the_request() {
        for data in [json!({}), json!([]), Value::Null] {
            let answer = json!({"data": data, "state": "success"});
            assert_eq!(
                validate(HookName::ProcessFinalParams, &register_params(), &answer),
                Ok(Verdict::Cancel)
            );
        }
        assert_eq!(
            validate(
                HookName::ProcessFinalParams,
                &register_params(),
                &json!({"state": "success"})
            ),
            Ok(Verdict::Cancel)
        );
    }

    #[test]
    fn a_state_other_than_success_is_refused() {
        let answer = json!({"data": {"SHOW": 0}, "state": "error"});
        assert_eq!(
            validate(HookName::ProcessRegistrationParams, &register_params(), &answer),
            Err(Invalid::State("\"error\"".into()))
        );
    }

    #[test]
    fn wrong_types_are_refused_with_the_field_named() {
        let answer = json!({"data": {"USER_ID": [1]}, "state": "success"});
        let err = validate(HookName::ProcessRegistrationParams, &register_params(), &answer).unwrap_err();
        assert_eq!(
            err.to_string(),
            "field USER_ID: expected a string or a number, got array"
        );
        let answer = json!({"data": {"nested": {"a": {"deep": 1}}}});
        assert!(validate(HookName::ProcessRegistrationParams, &register_params(), &answer).is_err());
        let answer = json!({"data": "89001234567"});
        assert_eq!(
            validate(HookName::ProcessClientPhone, &json!({"phone": "+79001234567"}), &answer),
            Err(Invalid::DataNotObject("string"))
        );
    }

    #[test]
    fn call_id_cannot_be_changed_but_may_be_repeated() {
        let same = json!({"data": {"CALL_ID": "X1", "DURATION": 5}, "state": "success"});
        assert!(validate(HookName::ProcessFinalParams, &register_params(), &same).is_ok());
        let changed = json!({"data": {"CALL_ID": "X2"}, "state": "success"});
        assert_eq!(
            validate(HookName::ProcessFinalParams, &register_params(), &changed),
            Err(Invalid::Protected("CALL_ID".into()))
        );
    }

    #[test]
    fn actions_are_the_hooks_own() {
        let delete = json!({"data": {"DURATION": 5}, "action": "delete", "state": "success"});
        assert_eq!(
            applied(validate(HookName::ProcessFinalParams, &register_params(), &delete))
                .action
                .as_deref(),
            Some("delete")
        );
        assert!(validate(HookName::ProcessRegistrationParams, &register_params(), &delete).is_err());
        let ignore = json!({"data": {"SHOW": 1}, "action": "ignore", "filter": {"lead": {"STATUS_ID": "NEW"}}});
        let a = applied(validate(HookName::ProcessSearchParams, &register_params(), &ignore));
        assert_eq!(a.action.as_deref(), Some("ignore"));
        assert_eq!(a.filter, Some(json!({"lead": {"STATUS_ID": "NEW"}})));
    }

    #[test]
    fn need_registration_answers_a_boolean() {
        for (data, want) in [
            (json!(true), true),
            (json!(false), false),
            (json!({"need_registration": false}), false),
            (json!({"register": true}), true),
        ] {
            let a = applied(validate(HookName::NeedRegistration, &json!({}), &json!({"data": data})));
            assert_eq!(a.params, Value::Bool(want));
        }
        assert!(validate(HookName::NeedRegistration, &json!({}), &json!({"data": {"x": 1}})).is_err());
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[A-Za-z0-9_ +]{0,8}".prop_map(Value::from),
            prop_oneof![Just("success"), Just("error"), Just("CALL_ID"), Just("delete")].prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("data".to_owned()),
                        Just("state".to_owned()),
                        Just("action".to_owned()),
                        Just("CALL_ID".to_owned()),
                        Just("USER_ID".to_owned()),
                        Just("PHONE_NUMBER".to_owned()),
                        Just("nested".to_owned()),
                        "[a-z]{1,4}",
                    ],
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever a hook prints, ringlink either cancels, refuses, or gets params it can send: an object
        /// that keeps every field it gave with a value of a fitting type and the same CALL_ID.
        #[test]
        fn any_answer_is_refused_or_yields_sendable_params(answer in arb_json(), hook in 0usize..HookName::ALL.len()) {
            let hook = HookName::ALL[hook];
            let params = register_params();
            if let Ok(Verdict::Apply(a)) = validate(hook, &params, &answer) {
                if hook == HookName::NeedRegistration {
                    prop_assert!(a.params.is_boolean());
                } else {
                    let out = a.params.as_object().expect("params stay an object");
                    for (key, old) in params.as_object().expect("object") {
                        let new = out.get(key).expect("no field is lost");
                        if !new.is_null() {
                            prop_assert!(check_type(old, new, key).is_ok() || old.is_object(), "{key}: {new}");
                        }
                    }
                    prop_assert!(same_scalar(&out["CALL_ID"], &params["CALL_ID"]));
                    prop_assert_eq!(answer.get("state").and_then(Value::as_str).unwrap_or("success"), "success");
                }
            }
        }
    }
}
