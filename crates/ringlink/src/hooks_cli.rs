//! `ringlink hooks list|run`: the admin's tools for writing a customization hook.
//!
//! `list` says which hooks the configured directory holds, whether each is on, how it runs and its timeout.
//! `run NAME` runs one hook exactly as the service does (same runner, environment, timeout and validation) on
//! the JSON read from stdin, and prints its answer and what ringlink would make of it.

use std::io::{Read, Write};

use anyhow::Context as _;
use hooks::{Context, HookName, Hooks, HooksConfig, Mode, Outcome};
use serde_json::Value;

/// Prints one line per hook of the contract.
pub fn list(config: &HooksConfig, out: &mut dyn Write) -> anyhow::Result<()> {
    let hooks = Hooks::discover(config)?;
    match &config.dir {
        Some(dir) => writeln!(out, "hooks directory: {}", dir.display())?,
        None => writeln!(out, "hooks directory: not set (hooks.dir); no hook runs")?,
    }
    for info in hooks.list() {
        let state = match (&info.found, info.enabled) {
            (None, _) => "-",
            (Some(f), _) if f.unusable.is_some() => "broken",
            (Some(_), true) => "on",
            (Some(_), false) => "off",
        };
        let how = match &info.found {
            None => "not found".to_owned(),
            Some(found) => {
                let runner = if found.args.is_empty() {
                    "executable".to_owned()
                } else {
                    found.program.display().to_string()
                };
                let mut text = format!(
                    "{} {}s {} ({runner})",
                    mode_name(info.mode),
                    info.timeout.as_secs_f64(),
                    found.path.display()
                );
                if let Some(why) = &found.unusable {
                    text.push_str(&format!(": {why}"));
                }
                text
            }
        };
        writeln!(out, "{:<32} {:<6} {how}", info.hook.as_str(), state)?;
    }
    Ok(())
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Spawn => "spawn",
        Mode::Persistent => "persistent",
    }
}

/// Runs `name` on `input` (`{"params": …, "call_full": …, "call_stage": …}`, or bare params); returns whether
/// the hook's answer was usable (applied or cancelled).
pub async fn run(config: &HooksConfig, name: &str, input: &str, out: &mut dyn Write) -> anyhow::Result<bool> {
    let hook: HookName = name.parse()?;
    let hooks = Hooks::discover(config)?;
    let input: Value = serde_json::from_str(input).context("stdin is not JSON; give {\"params\": {…}}")?;
    let (params, context) = split_input(input);
    let info = hooks.list().into_iter().find(|i| i.hook == hook);
    let Some(found) = info.as_ref().and_then(|i| i.found.clone()) else {
        anyhow::bail!(
            "no {hook} hook in {} (looked for {})",
            config
                .dir
                .as_ref()
                .map(|d| d.display().to_string())
                .unwrap_or_else(|| "hooks.dir (not set)".into()),
            hook.file_names().join(", ")
        );
    };
    let hooks = if hooks.is_enabled(hook) {
        hooks
    } else {
        writeln!(out, "note: {hook} is turned off in the config; running it anyway")?;
        let mut forced = config.clone();
        forced.per_hook.retain(|k, _| k.parse::<HookName>() != Ok(hook));
        Hooks::discover(&forced)?
    };
    writeln!(out, "hook: {hook} ({})", found.path.display())?;
    let called = hooks
        .call(hook, &params, &context)
        .await
        .context("the hook is not enabled")?;
    match &called.answer {
        Some(answer) => writeln!(out, "answer: {}", serde_json::to_string_pretty(answer)?)?,
        None => writeln!(out, "answer: (none usable)")?,
    }
    writeln!(out, "took: {:.1} ms", called.elapsed.as_secs_f64() * 1000.0)?;
    let usable = match &called.outcome {
        Outcome::Applied(answer) => {
            writeln!(
                out,
                "ringlink would send: {}",
                serde_json::to_string_pretty(&answer.params)?
            )?;
            if let Some(action) = &answer.action {
                writeln!(out, "action: {action}")?;
            }
            if let Some(filter) = &answer.filter {
                writeln!(out, "filter: {filter}")?;
            }
            true
        }
        Outcome::Cancelled => {
            writeln!(out, "ringlink would not send this request: {}", called.describe())?;
            true
        }
        Outcome::Failed(_) => {
            writeln!(out, "{}", called.describe())?;
            false
        }
    };
    Ok(usable)
}

/// The seed's input, or bare params.
fn split_input(input: Value) -> (Value, Context) {
    match input {
        Value::Object(mut map) if map.contains_key("params") => {
            let params = map.remove("params").unwrap_or(Value::Null);
            let call_full = map.remove("call_full").filter(|v| !v.is_null());
            let call_stage = map.get("call_stage").and_then(Value::as_str).and_then(stage);
            (params, Context { call_full, call_stage })
        }
        other => (other, Context::default()),
    }
}

/// The known call stages (the context holds a `&'static str`).
pub fn stage(text: &str) -> Option<&'static str> {
    [
        "conversation_requested",
        "conversation_accepted",
        "conversation_ended",
        "call_ended",
    ]
    .into_iter()
    .find(|s| *s == text)
}

/// Reads all of stdin.
pub fn read_stdin() -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read stdin")?;
    Ok(text)
}

/// `ringlink replay --hooks`: the call-level hooks (`need_registration`, `process_client_phone`) on an ended
/// call, as `{hook: {"said": …, …journal data}}`.
pub async fn on_ended_call(hooks: &Hooks, call: &tracker::CallFull) -> Value {
    let call_full = serde_json::to_value(call).unwrap_or(Value::Null);
    let context = Context {
        call_full: Some(call_full.clone()),
        call_stage: Some("call_ended"),
    };
    let ch = &call.channel;
    let client = if ch.direction == tracker::Direction::Incoming {
        ch.from.preferred()
    } else {
        ch.to.preferred()
    };
    let asked = [
        (
            HookName::NeedRegistration,
            crate::service::need_registration_params(&call_full),
        ),
        (HookName::ProcessClientPhone, serde_json::json!({"phone": client})),
    ];
    let mut out = serde_json::Map::new();
    for (hook, params) in asked {
        if let Some(called) = hooks.call(hook, &params, &context).await {
            let mut data = called.journal_data();
            data["said"] = Value::String(called.describe());
            out.insert(hook.as_str().to_owned(), data);
        }
    }
    Value::Object(out)
}
