//! The `[hooks]` section of the configuration.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How a hook process lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A new process per call: JSON on stdin, JSON on stdout, then it exits.
    #[default]
    Spawn,
    /// One long-running process speaking JSON lines (one request line → one answer line), restarted when it
    /// dies. For hot hooks: spawning PHP costs milliseconds per call.
    Persistent,
}

/// `[hooks]`: where the hooks are and how they run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HooksConfig {
    /// The directory holding the hooks (`<dir>/<hook>`, `<dir>/<hook>.php`, `.py`, `.sh`…); it is also their
    /// working directory. Unset: no hook runs.
    pub dir: Option<PathBuf>,
    /// Hard limit of one call, in seconds; the un-customized params are used after it.
    pub timeout_secs: f64,
    /// Largest answer read from a hook; a longer one is a failure.
    pub max_answer_bytes: usize,
    /// Environment given to every hook. Hooks start from an empty environment (ringlink's secrets stay out):
    /// only `PATH`, `LANG`, `HOME` (the hooks directory) and these.
    pub env: BTreeMap<String, String>,
    /// Per hook (by its seed name): `enabled`, `timeout_secs`, `mode`.
    pub per_hook: BTreeMap<String, HookSettings>,
}

impl Default for HooksConfig {
    fn default() -> Self {
        Self {
            dir: None,
            timeout_secs: 3.0,
            max_answer_bytes: 1024 * 1024,
            env: BTreeMap::new(),
            per_hook: BTreeMap::new(),
        }
    }
}

/// `[hooks.per_hook.<name>]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HookSettings {
    /// A hook found in the directory runs unless turned off here.
    pub enabled: bool,
    /// Overrides `hooks.timeout_secs` for this hook.
    pub timeout_secs: Option<f64>,
    pub mode: Mode,
}

impl Default for HookSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            timeout_secs: None,
            mode: Mode::Spawn,
        }
    }
}
