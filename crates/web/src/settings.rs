//! The settings page: the keys of `ringlink.toml` an admin changes in practice, edited in the file itself.
//!
//! The file stays the source of truth. A save re-reads it, refuses if it changed since the page was shown,
//! changes only the keys whose value the form changed (with `toml_edit`, so comments, order and the layout of
//! everything else stay as they were), checks the result with the same validation as at start, writes it to a
//! temporary file beside the original, syncs it and renames it over the original. The service is then handed
//! the new text to apply what it can at once; the page says which changed keys wait for a restart.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use toml_edit::{ArrayOfTables, DocumentMut, Item, Table, Value};

/// Checks a whole configuration text (the same validation as at start); the message names the key to fix.
pub type Validate = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;
/// Applies a saved configuration text to the running service.
pub type Apply = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The configuration file the settings page edits, and how the service checks and applies it.
#[derive(Clone)]
pub struct SettingsFile {
    pub path: PathBuf,
    /// Names of the customization hooks found, each with an on/off switch.
    pub hooks: Vec<String>,
    pub validate: Validate,
    pub apply: Apply,
}

/// What a value looks like in the form and in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Int,
    /// An integer that may be left out.
    OptInt,
    Float,
    Text,
    /// Text that may be left out (empty = the key is removed).
    OptText,
    /// Strings, comma-separated in the form.
    List,
    Choice(&'static [&'static str]),
    /// Write-only: never shown; empty keeps the value in the file.
    Secret,
    /// An array of tables, one form row per table (a row whose first column is empty is removed).
    Rows(&'static [Column]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub int: bool,
}

/// One editable key.
#[derive(Debug, Clone)]
pub struct Key {
    /// Its dotted path in the file (`engine.missed.task.enabled`).
    pub path: String,
    pub kind: Kind,
    /// Applied to the running service (from the next call) when saved; otherwise after a restart.
    pub live: bool,
    /// The value used when the file does not set the key, as the form shows it.
    pub default: &'static str,
    /// The page's section (an i18n key).
    pub group: &'static str,
    /// For a key that is partly applied at once: its badge and a note saying what waits for a restart and what
    /// does not (i18n keys), shown beside it and after a save instead of the plain "after restart".
    pub note: Option<(&'static str, &'static str)>,
}

const TRACKER_TRUNK: &[Column] = &[
    Column {
        name: "endpoint",
        int: false,
    },
    Column {
        name: "number",
        int: false,
    },
    Column {
        name: "name",
        int: false,
    },
];

const ENGINE_TRUNK: &[Column] = &[
    Column {
        name: "number",
        int: false,
    },
    Column {
        name: "line_number",
        int: false,
    },
    Column {
        name: "crm_source",
        int: false,
    },
    Column {
        name: "responsible",
        int: true,
    },
];

/// The editable keys, in the page's order. `hooks` are the hooks found in `hooks.dir`.
pub fn catalogue(hooks: &[String]) -> Vec<Key> {
    let key = |path: &str, kind: Kind, live: bool, default: &'static str, group: &'static str| Key {
        path: path.to_owned(),
        kind,
        live,
        default,
        group,
        note: None,
    };
    let mut keys = vec![
        key("engine.register_local_calls", Kind::Bool, true, "false", "set_business"),
        key("engine.show_card", Kind::Bool, true, "true", "set_business"),
        key("engine.add_to_chat", Kind::Bool, true, "true", "set_business"),
        key("engine.attach_records", Kind::Bool, true, "true", "set_business"),
        key("engine.crm_create.incoming", Kind::Bool, true, "true", "set_business"),
        key("engine.crm_create.outgoing", Kind::Bool, true, "false", "set_business"),
        key(
            "engine.users_refresh_interval_secs",
            Kind::Int,
            false,
            "300",
            "set_business",
        ),
        key("engine.black_list.extensions", Kind::List, true, "", "set_lists"),
        key("engine.black_list.trunks", Kind::List, true, "", "set_lists"),
        key("engine.white_list.extensions", Kind::List, true, "", "set_lists"),
        key("engine.white_list.trunks", Kind::List, true, "", "set_lists"),
        key(
            "engine.missed.responsible",
            Kind::List,
            true,
            "entity_owner, last_rung, default_user",
            "set_missed",
        ),
        key("engine.missed.default_user", Kind::OptInt, true, "", "set_missed"),
        key("engine.missed.task.enabled", Kind::Bool, true, "false", "set_missed"),
        key(
            "engine.missed.task.title",
            Kind::Text,
            true,
            "Missed call from {phone}",
            "set_missed",
        ),
        key(
            "engine.missed.task.description",
            Kind::Text,
            true,
            "Call back {phone}: the call to line {line} at {time} was not answered.",
            "set_missed",
        ),
        key(
            "engine.missed.task.deadline_minutes",
            Kind::Int,
            true,
            "60",
            "set_missed",
        ),
        key("engine.missed.task.created_by", Kind::OptInt, true, "", "set_missed"),
        // Call tracking reads the trunks at start; the Bitrix24 external lines are synced on save.
        Key {
            note: Some(("set_trunks_badge", "set_trunks_note")),
            ..key("tracker.trunks", Kind::Rows(TRACKER_TRUNK), false, "", "set_trunks")
        },
        key("engine.trunks", Kind::Rows(ENGINE_TRUNK), true, "", "set_trunks"),
        key(
            "recordings.inline_max_bytes",
            Kind::Int,
            false,
            "5242880",
            "set_recordings",
        ),
        key("recordings.settle_secs", Kind::Float, false, "1.0", "set_recordings"),
        key(
            "recordings.missing_timeout_secs",
            Kind::Int,
            false,
            "600",
            "set_recordings",
        ),
        key("recordings.link_base_url", Kind::OptText, false, "", "set_recordings"),
        key("recordings.link_ttl_hours", Kind::Int, false, "168", "set_recordings"),
        key("hooks.dir", Kind::OptText, false, "", "set_hooks"),
        key("hooks.timeout_secs", Kind::Float, false, "3.0", "set_hooks"),
    ];
    for hook in hooks {
        keys.push(key(
            &format!("hooks.per_hook.{hook}.enabled"),
            Kind::Bool,
            false,
            "true",
            "set_hooks",
        ));
    }
    keys.extend([
        key("ami.address", Kind::Text, false, "", "set_connections"),
        key("ami.username", Kind::Text, false, "", "set_connections"),
        key("ami.secret", Kind::Secret, false, "", "set_connections"),
        key("bitrix24.webhook_url", Kind::Secret, false, "", "set_connections"),
        key("bitrix24.portal_url", Kind::OptText, false, "", "set_connections"),
        key("bitrix24.client_id", Kind::OptText, false, "", "set_connections"),
        key("bitrix24.client_secret", Kind::Secret, false, "", "set_connections"),
        key("bitrix24.oauth_url", Kind::OptText, false, "", "set_connections"),
        key("bitrix24.access_token", Kind::Secret, false, "", "set_connections"),
        key("bitrix24.refresh_token", Kind::Secret, false, "", "set_connections"),
        key(
            "bitrix24.plan",
            Kind::Choice(&["standard", "enterprise"]),
            false,
            "standard",
            "set_connections",
        ),
        key("log.level", Kind::Text, false, "info", "set_connections"),
    ]);
    keys
}

/// The note of a key that is partly applied at once (an i18n key; see [`Key::note`]).
pub fn note_of(path: &str) -> Option<&'static str> {
    catalogue(&[])
        .into_iter()
        .find(|k| k.path == path)
        .and_then(|k| k.note)
        .map(|(_, note)| note)
}

/// A key's value as the form shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shown {
    Text(String),
    /// Whether a secret is set (never its value).
    Secret(bool),
    Rows(Vec<Vec<String>>),
}

/// The file as the page shows it: each key's value, and the version a save must still find.
pub struct View {
    pub values: Vec<(Key, Shown)>,
    pub version: String,
}

/// What a save did.
#[derive(Debug, Default)]
pub struct Saved {
    /// Changed keys the running service now uses.
    pub applied: Vec<String>,
    /// Changed keys that take effect after a restart.
    pub restart: Vec<String>,
}

/// Why a save was refused; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("{0} changed since this page was loaded; reload it and make the changes again")]
    Stale(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Io(String),
}

fn version_of(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

fn read(path: &Path) -> Result<(String, DocumentMut), SaveError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| SaveError::Io(format!("cannot read {}: {e}", path.display())))?;
    let doc = text
        .parse::<DocumentMut>()
        .map_err(|e| SaveError::Invalid(format!("{} is not valid TOML: {e}", path.display())))?;
    Ok((text, doc))
}

/// Reads the file for the page.
pub fn view(file: &SettingsFile) -> Result<View, SaveError> {
    let (text, doc) = read(&file.path)?;
    let values = catalogue(&file.hooks)
        .into_iter()
        .map(|key| {
            let shown = shown(doc.as_item(), &key);
            (key, shown)
        })
        .collect();
    Ok(View {
        values,
        version: version_of(&text),
    })
}

/// A key's current text in the file, secrets included (for the service's own use, e.g. a connection test with
/// the saved secret; never rendered).
pub fn current(file: &SettingsFile, path: &str) -> Option<String> {
    let (_, doc) = read(&file.path).ok()?;
    lookup(doc.as_item(), path)
        .and_then(Item::as_value)
        .map(scalar)
        .filter(|v| !v.is_empty())
}

fn lookup<'a>(root: &'a Item, path: &str) -> Option<&'a Item> {
    path.split('.').try_fold(root, |item, segment| item.get(segment))
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.value().clone(),
        Value::Integer(i) => i.value().to_string(),
        Value::Float(f) => format!("{:?}", f.value()),
        Value::Boolean(b) => b.value().to_string(),
        Value::Array(a) => a.iter().map(scalar).collect::<Vec<_>>().join(", "),
        other => other.to_string().trim().to_owned(),
    }
}

fn shown(root: &Item, key: &Key) -> Shown {
    let item = lookup(root, &key.path);
    match key.kind {
        Kind::Secret => Shown::Secret(item.and_then(Item::as_str).is_some_and(|s| !s.is_empty())),
        Kind::Rows(columns) => {
            let rows = match item.and_then(Item::as_array_of_tables) {
                Some(tables) => tables
                    .iter()
                    .map(|t| {
                        columns
                            .iter()
                            .map(|c| t.get(c.name).and_then(Item::as_value).map(scalar).unwrap_or_default())
                            .collect()
                    })
                    .collect(),
                None => Vec::new(),
            };
            Shown::Rows(rows)
        }
        _ => Shown::Text(
            item.and_then(Item::as_value)
                .map(scalar)
                .unwrap_or_else(|| key.default.to_owned()),
        ),
    }
}

/// The form's value of a key as the file would hold it; `None` removes the key.
fn parse_value(key: &Key, text: &str) -> Result<Option<Value>, String> {
    let text = text.trim();
    let number = |t: &str| {
        t.parse::<i64>()
            .map_err(|_| format!("{}: {t:?} is not a whole number", key.path))
    };
    Ok(Some(match key.kind {
        Kind::Bool => Value::from(text == "true"),
        Kind::Int => Value::from(number(text)?),
        Kind::OptInt if text.is_empty() => return Ok(None),
        Kind::OptInt => Value::from(number(text)?),
        Kind::Float => Value::from(
            text.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .ok_or_else(|| format!("{}: {text:?} is not a number", key.path))?,
        ),
        Kind::OptText if text.is_empty() => return Ok(None),
        Kind::Text | Kind::OptText | Kind::Secret => Value::from(text),
        Kind::Choice(choices) => {
            if !choices.contains(&text) {
                return Err(format!("{}: choose one of {}", key.path, choices.join(", ")));
            }
            Value::from(text)
        }
        Kind::List => Value::Array(text.split(',').map(str::trim).filter(|s| !s.is_empty()).collect()),
        Kind::Rows(_) => return Err(format!("{}: a table is not one value", key.path)),
    }))
}

/// Sets `path` in the document, keeping the comment after an existing value and creating missing tables.
fn set(doc: &mut DocumentMut, path: &str, value: Option<Value>) {
    let segments: Vec<&str> = path.split('.').collect();
    let Some((last, parents)) = segments.split_last() else {
        return;
    };
    let mut table: &mut dyn toml_edit::TableLike = doc.as_table_mut();
    for segment in parents {
        if value.is_none() && table.get(segment).is_none() {
            return;
        }
        let item = table.entry(segment).or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        });
        let Some(next) = item.as_table_like_mut() else {
            return;
        };
        table = next;
    }
    match value {
        None => {
            table.remove(last);
        }
        Some(mut value) => match table.get_mut(last).and_then(Item::as_value_mut) {
            Some(old) => {
                *value.decor_mut() = old.decor().clone();
                *old = value;
            }
            None => {
                table.insert(last, Item::Value(value));
            }
        },
    }
}

/// Replaces the tables at `path` row by row, keeping each remaining table's comments.
fn set_rows(doc: &mut DocumentMut, path: &str, columns: &[Column], rows: &[Vec<String>]) -> Result<(), String> {
    let mut parsed = Vec::new();
    for row in rows {
        let mut values = Vec::new();
        for (column, text) in columns.iter().zip(row) {
            let text = text.trim();
            let value = match (text.is_empty(), column.int) {
                (true, _) => None,
                (false, true) => {
                    Some(Value::from(text.parse::<i64>().map_err(|_| {
                        format!("{path}.{}: {text:?} is not a whole number", column.name)
                    })?))
                }
                (false, false) => Some(Value::from(text)),
            };
            values.push((column.name, value));
        }
        parsed.push(values);
    }
    let segments: Vec<&str> = path.split('.').collect();
    let Some((last, parents)) = segments.split_last() else {
        return Ok(());
    };
    let mut table: &mut Table = doc.as_table_mut();
    for segment in parents {
        let item = table.entry(segment).or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        });
        table = item
            .as_table_mut()
            .ok_or_else(|| format!("{path}: {segment} is not a section in the file"))?;
    }
    if parsed.is_empty() {
        table.remove(last);
        return Ok(());
    }
    let item = table
        .entry(last)
        .or_insert_with(|| Item::ArrayOfTables(ArrayOfTables::new()));
    let tables = item
        .as_array_of_tables_mut()
        .ok_or_else(|| format!("{path} is not written as [[{path}]] tables in the file"))?;
    while tables.len() > parsed.len() {
        tables.remove(tables.len() - 1);
    }
    for (i, values) in parsed.into_iter().enumerate() {
        if tables.get(i).is_none() {
            tables.push(Table::new());
        }
        let Some(t) = tables.get_mut(i) else {
            continue;
        };
        for (name, value) in values {
            match value {
                None => {
                    t.remove(name);
                }
                Some(mut value) => match t.get_mut(name).and_then(Item::as_value_mut) {
                    Some(old) => {
                        *value.decor_mut() = old.decor().clone();
                        *old = value;
                    }
                    None => {
                        t.insert(name, Item::Value(value));
                    }
                },
            }
        }
    }
    Ok(())
}

/// The rows a form sent for a `Rows` key (`<path>.<row>.<column>`), without empty rows.
fn form_rows(form: &[(String, String)], path: &str, columns: &[Column]) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = Vec::new();
    for (name, value) in form {
        let Some(rest) = name.strip_prefix(path).and_then(|r| r.strip_prefix('.')) else {
            continue;
        };
        let Some((index, column)) = rest.split_once('.') else {
            continue;
        };
        let (Ok(index), Some(col)) = (index.parse::<usize>(), columns.iter().position(|c| c.name == column)) else {
            continue;
        };
        if index >= 100 {
            continue;
        }
        if rows.len() <= index {
            rows.resize(index + 1, vec![String::new(); columns.len()]);
        }
        rows[index][col] = value.trim().to_owned();
    }
    rows.retain(|row| row.first().is_some_and(|first| !first.is_empty()));
    rows
}

/// The last value the form sent for `name` (a checkbox follows its hidden `false`).
fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Applies a submitted form to the file: see the module's description. `version` is the one the page showed.
pub fn save(file: &SettingsFile, version: &str, form: &[(String, String)]) -> Result<Saved, SaveError> {
    let (text, mut doc) = read(&file.path)?;
    if version_of(&text) != version {
        return Err(SaveError::Stale(file.path.display().to_string()));
    }
    let mut saved = Saved::default();
    for key in catalogue(&file.hooks) {
        let before = shown(doc.as_item(), &key);
        let changed = match key.kind {
            Kind::Rows(columns) => {
                // The page marks the tables it shows; a form without them leaves them alone.
                if field(form, &key.path).is_none() {
                    continue;
                }
                let rows = form_rows(form, &key.path, columns);
                if before == Shown::Rows(rows.clone()) {
                    continue;
                }
                set_rows(&mut doc, &key.path, columns, &rows).map_err(SaveError::Invalid)?;
                true
            }
            Kind::Secret => match field(form, &key.path).map(str::trim) {
                // The same secret again (a wizard page sends the one it tested) changes nothing.
                Some(secret) if lookup(doc.as_item(), &key.path).and_then(Item::as_str) == Some(secret) => false,
                Some(secret) if !secret.is_empty() => {
                    set(&mut doc, &key.path, Some(Value::from(secret)));
                    true
                }
                // `<path>.remove` takes a secret out of the file (switching Bitrix24 between webhook and
                // application).
                _ if field(form, &format!("{}.remove", key.path)) == Some("true") && before == Shown::Secret(true) => {
                    set(&mut doc, &key.path, None);
                    true
                }
                _ => false,
            },
            _ => {
                let Some(text) = field(form, &key.path) else {
                    continue;
                };
                let value = parse_value(&key, text).map_err(SaveError::Invalid)?;
                let after = value.as_ref().map(scalar).unwrap_or_else(|| key.default.to_owned());
                if before == Shown::Text(after) {
                    continue;
                }
                set(&mut doc, &key.path, value);
                true
            }
        };
        if changed {
            if key.live {
                saved.applied.push(key.path);
            } else {
                saved.restart.push(key.path);
            }
        }
    }
    if saved.applied.is_empty() && saved.restart.is_empty() {
        return Ok(saved);
    }
    let new_text = doc.to_string();
    (file.validate)(&new_text).map_err(SaveError::Invalid)?;
    write_atomically(&file.path, &new_text)
        .map_err(|e| SaveError::Io(format!("cannot write {}: {e}", file.path.display())))?;
    if let Err(e) = (file.apply)(&new_text) {
        // The file is saved and valid; what could not be applied now waits for a restart.
        tracing::warn!(error = %e, "the saved settings could not be applied at once; restart ringlink");
        saved.restart.append(&mut saved.applied);
    }
    Ok(saved)
}

/// Writes `text` to a temporary file beside `path` (same permissions), syncs it, renames it over `path` and
/// syncs the directory: a crash leaves either the old file or the new one, never a mix.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ringlink.toml".into());
    let temp = dir.join(format!(".{name}.saving-{}", std::process::id()));
    let result = (|| {
        let mut out = std::fs::File::create(&temp)?;
        if let Ok(meta) = std::fs::metadata(path) {
            out.set_permissions(meta.permissions())?;
        }
        out.write_all(text.as_bytes())?;
        out.sync_all()?;
        drop(out);
        std::fs::rename(&temp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"# ringlink configuration
[ami]
address = "127.0.0.1:5038"
username = "ringlink"
secret = "s3cret"     # keep out of the page

[engine]
show_card = true              # pop the call card up

[engine.black_list]           # never registered
extensions = []
trunks = []

# One block per trunk
[[tracker.trunks]]
endpoint = "carrier"          # channel name
number = "74950000000"
name = "Main line"
"#;

    fn file(dir: &Path, validate: Validate) -> SettingsFile {
        let path = dir.join("ringlink.toml");
        std::fs::write(&path, FILE).expect("write");
        SettingsFile {
            path,
            hooks: vec!["need_registration".into()],
            validate,
            apply: Arc::new(|_| Ok(())),
        }
    }

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_save_changes_only_the_changed_keys_and_keeps_comments() {
        let dir = tempfile::tempdir().expect("dir");
        let f = file(dir.path(), Arc::new(|_| Ok(())));
        let v = view(&f).expect("view");
        let shown = |path: &str| v.values.iter().find(|(k, _)| k.path == path).map(|(_, s)| s.clone());
        assert_eq!(shown("ami.secret"), Some(Shown::Secret(true)));
        assert_eq!(shown("engine.show_card"), Some(Shown::Text("true".into())));
        assert_eq!(shown("engine.missed.task.enabled"), Some(Shown::Text("false".into())));
        let saved = save(
            &f,
            &v.version,
            &form(&[
                ("engine.show_card", "false"),
                ("engine.black_list.extensions", "103, 104"),
                ("engine.missed.task.enabled", "false"),
                ("engine.missed.task.enabled", "true"),
                ("engine.register_local_calls", "false"),
                ("ami.secret", ""),
                ("tracker.trunks", "rows"),
                ("tracker.trunks.0.endpoint", "carrier"),
                ("tracker.trunks.0.number", "74950000000"),
                ("tracker.trunks.0.name", "Main line"),
                ("tracker.trunks.1.endpoint", "second"),
                ("tracker.trunks.1.number", "74950000001"),
                ("tracker.trunks.1.name", ""),
            ]),
        )
        .expect("saved");
        assert_eq!(
            saved.applied,
            [
                "engine.show_card",
                "engine.black_list.extensions",
                "engine.missed.task.enabled"
            ]
        );
        assert_eq!(saved.restart, ["tracker.trunks"]);
        let text = std::fs::read_to_string(&f.path).expect("read");
        for kept in [
            "# ringlink configuration",
            "secret = \"s3cret\"     # keep out of the page",
            "show_card = false              # pop the call card up",
            "[engine.black_list]           # never registered",
            "extensions = [\"103\", \"104\"]",
            "# One block per trunk",
            "endpoint = \"carrier\"          # channel name",
        ] {
            assert!(text.contains(kept), "{kept:?} lost:\n{text}");
        }
        assert!(text.contains("[engine.missed.task]\nenabled = true"), "{text}");
        assert!(
            !text.contains("register_local_calls"),
            "unchanged defaults are not written:\n{text}"
        );
        let parsed: toml::Table = text.parse().expect("valid TOML");
        assert_eq!(parsed["tracker"]["trunks"].as_array().map(Vec::len), Some(2));
        // The page was read before this save: a second save with its version is refused.
        let stale = save(&f, &v.version, &form(&[("engine.show_card", "true")]));
        assert!(matches!(stale, Err(SaveError::Stale(_))), "{stale:?}");
    }

    #[test]
    fn an_invalid_value_leaves_the_file_alone() {
        let dir = tempfile::tempdir().expect("dir");
        let f = file(
            dir.path(),
            Arc::new(|text: &str| {
                if text.contains("deadline_minutes = -1") {
                    Err("engine.missed.task.deadline_minutes must be 0 or more".into())
                } else {
                    Ok(())
                }
            }),
        );
        let v = view(&f).expect("view");
        let e = save(
            &f,
            &v.version,
            &form(&[("engine.missed.task.deadline_minutes", "soon")]),
        );
        assert!(e.expect_err("not a number").to_string().contains("deadline_minutes"));
        let e = save(&f, &v.version, &form(&[("engine.missed.task.deadline_minutes", "-1")]));
        assert!(e.expect_err("refused").to_string().contains("0 or more"));
        assert_eq!(std::fs::read_to_string(&f.path).expect("read"), FILE);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn removing_every_row_removes_the_tables() {
        let dir = tempfile::tempdir().expect("dir");
        let f = file(dir.path(), Arc::new(|_| Ok(())));
        let v = view(&f).expect("view");
        let saved = save(
            &f,
            &v.version,
            &form(&[("tracker.trunks", "rows"), ("tracker.trunks.0.endpoint", "")]),
        )
        .expect("saved");
        assert_eq!(saved.restart, ["tracker.trunks"]);
        let text = std::fs::read_to_string(&f.path).expect("read");
        assert!(!text.contains("[[tracker.trunks]]"), "{text}");
    }
}
