//! Phone number normalisation.
//!
//! Every number the PBX reports (caller, dialled number, trunk line) becomes a [`Number`]: the text as it came
//! (`original`), the number without any configured prefix (`base`), the number rewritten by the first matching
//! replace rule (`custom`), whether it is an internal extension (`is_local`), and the forms under which the CRM may
//! have stored it (`variants`: `base`, then every prefix glued to `base`, in the configured order).
//!
//! With prefixes `+7495`, `8495`, `+7`, `7`, `8` and the replace rule `^\+7(\d{10})$` → `8$1`, the number
//! `+79001234567` becomes base `9001234567`, custom `89001234567` and variants `9001234567`, `+74959001234567`,
//! `84959001234567`, `+79001234567`, `79001234567`, `89001234567`.
//!
//! The field names are part of the hook contract (`call_full` JSON), so they must not change.

use regex::Regex;
use serde::{Deserialize, Serialize};

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {what} pattern {pattern:?}: {source}")]
    InvalidPattern {
        what: &'static str,
        pattern: String,
        #[source]
        source: Box<regex::Error>,
    },
    #[error("invalid prefix {0:?}: a prefix needs at least one digit")]
    InvalidPrefix(String),
}

/// Number settings as written in the configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NumbersConfig {
    /// Prefixes a full number may carry in front of its base, e.g. `["+7495", "8495", "+7", "7", "8"]`.
    /// The order is the order of `variants`; for stripping, the longest matching prefix wins.
    pub prefixes: Vec<String>,
    /// What counts as an internal (extension) number.
    pub internal: InternalRule,
    /// Replace rules, tried in order; the first whose pattern matches the original number produces `custom`.
    pub replace: Vec<ReplaceRule>,
}

/// A number is internal if it has at most `max_length` digits (and nothing else), or if `pattern` matches it.
/// Either test alone is enough; with neither set no number is internal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InternalRule {
    pub max_length: Option<usize>,
    /// A regular expression searched in the number; anchor it (`^1\d\d$`) to match the whole number.
    pub pattern: Option<String>,
}

/// `pattern` is a regular expression searched in the original number; the first match is replaced by
/// `replacement`, where `$1` / `${1}` / `$name` refer to capture groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaceRule {
    pub pattern: String,
    pub replacement: String,
}

/// A normalised number, as it appears in `call_full` (`from`, `to`, `trunk`, entity phones).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Number {
    /// The number without prefixes (digits only for external numbers).
    pub base: String,
    /// The number after the replace rules, or empty if no rule matched.
    pub custom: String,
    /// True for internal (extension) numbers.
    pub is_local: bool,
    /// The number exactly as Asterisk reported it.
    pub original: String,
    /// `base`, then `prefix + base` for every configured prefix (external numbers only), without repeats.
    pub variants: Vec<String>,
}

impl Number {
    /// The number to use when talking to the CRM: `custom` if a rule produced one, else `original`.
    pub fn preferred(&self) -> &str {
        if self.custom.is_empty() {
            &self.original
        } else {
            &self.custom
        }
    }
}

/// Compiled [`NumbersConfig`]; cheap to share by reference. The default knows no prefixes, rules or extensions.
#[derive(Debug, Clone, Default)]
pub struct Normalizer {
    /// Prefixes as configured (for variants) and in their cleaned form (for matching), in configured order.
    prefixes: Vec<(String, String)>,
    internal_max_length: Option<usize>,
    internal_pattern: Option<Regex>,
    rules: Vec<(Regex, String)>,
}

fn compile(what: &'static str, pattern: &str) -> Result<Regex, Error> {
    Regex::new(pattern).map_err(|source| Error::InvalidPattern {
        what,
        pattern: pattern.to_owned(),
        source: Box::new(source),
    })
}

/// Keeps a leading `+` and the digits; drops the formatting people and carriers add (spaces, dashes, brackets).
fn clean(number: &str) -> String {
    let trimmed = number.trim();
    let mut out = String::with_capacity(trimmed.len());
    if trimmed.starts_with('+') {
        out.push('+');
    }
    out.extend(trimmed.chars().filter(char::is_ascii_digit));
    out
}

/// Feature and service codes (`*8`, `**101`, `#31#`) are dialled strings, not phone numbers: no prefix applies.
fn is_service_code(number: &str) -> bool {
    number.contains(['*', '#'])
}

impl Normalizer {
    pub fn new(config: &NumbersConfig) -> Result<Self, Error> {
        let mut prefixes = Vec::with_capacity(config.prefixes.len());
        for prefix in &config.prefixes {
            let cleaned = clean(prefix);
            if !cleaned.chars().any(|c| c.is_ascii_digit()) {
                return Err(Error::InvalidPrefix(prefix.clone()));
            }
            prefixes.push((prefix.trim().to_owned(), cleaned));
        }
        let internal_pattern = config
            .internal
            .pattern
            .as_deref()
            .map(|p| compile("internal number", p))
            .transpose()?;
        let rules = config
            .replace
            .iter()
            .map(|r| Ok((compile("replace", &r.pattern)?, r.replacement.clone())))
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Self {
            prefixes,
            internal_max_length: config.internal.max_length,
            internal_pattern,
            rules,
        })
    }

    /// True if `number` is an internal extension by the configured rule.
    pub fn is_local(&self, number: &str) -> bool {
        let trimmed = number.trim();
        if trimmed.is_empty() {
            return false;
        }
        let short_enough = self
            .internal_max_length
            .is_some_and(|max| trimmed.len() <= max && trimmed.bytes().all(|b| b.is_ascii_digit()));
        short_enough || self.internal_pattern.as_ref().is_some_and(|re| re.is_match(trimmed))
    }

    /// The number without its longest matching prefix. Internal numbers and service codes (`*8`, `#31#`) are
    /// kept as they are (trimmed).
    pub fn base(&self, number: &str) -> String {
        if self.is_local(number) || is_service_code(number) {
            return number.trim().to_owned();
        }
        self.external_base(number)
    }

    fn external_base(&self, number: &str) -> String {
        let cleaned = clean(number);
        let longest = self
            .prefixes
            .iter()
            .map(|(_, c)| c.as_str())
            .filter(|p| cleaned.len() > p.len() && cleaned.starts_with(p))
            .max_by_key(|p| p.len());
        let rest = match longest {
            Some(p) => &cleaned[p.len()..],
            None => cleaned.as_str(),
        };
        // A `+` no prefix accounted for is international notation, not part of the number.
        rest.trim_start_matches('+').to_owned()
    }

    /// The first replace rule that matches, applied to the original; `None` if none matches.
    pub fn custom(&self, number: &str) -> Option<String> {
        self.rules
            .iter()
            .find(|(re, _)| re.is_match(number))
            .map(|(re, replacement)| re.replace(number, replacement.as_str()).into_owned())
    }

    /// Builds the full [`Number`].
    pub fn normalize(&self, original: &str) -> Number {
        let is_local = self.is_local(original);
        let keep_as_is = is_local || is_service_code(original);
        let base = if keep_as_is {
            original.trim().to_owned()
        } else {
            self.external_base(original)
        };
        let mut variants = Vec::new();
        if !base.is_empty() {
            variants.push(base.clone());
            if !keep_as_is {
                for (prefix, _) in &self.prefixes {
                    let variant = format!("{prefix}{base}");
                    if !variants.contains(&variant) {
                        variants.push(variant);
                    }
                }
            }
        }
        Number {
            custom: self.custom(original).unwrap_or_default(),
            base,
            is_local,
            original: original.to_owned(),
            variants,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seed_config() -> NumbersConfig {
        NumbersConfig {
            prefixes: ["+7495", "8495", "+7", "7", "8"].map(String::from).to_vec(),
            internal: InternalRule {
                max_length: Some(4),
                pattern: None,
            },
            replace: vec![ReplaceRule {
                pattern: r"^\+7(\d{10})$".into(),
                replacement: "8$1".into(),
            }],
        }
    }

    #[test]
    fn seed_example_comes_out_exactly() {
        let n = Normalizer::new(&seed_config()).unwrap();
        let number = n.normalize("+79001234567");
        let json = serde_json::to_value(&number).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "base": "9001234567",
                "custom": "89001234567",
                "is_local": false,
                "original": "+79001234567",
                "variants": [
                    "9001234567",
                    "+74959001234567",
                    "84959001234567",
                    "+79001234567",
                    "79001234567",
                    "89001234567"
                ]
            })
        );
        assert_eq!(number.preferred(), "89001234567");
    }

    #[test]
    fn longest_prefix_wins_whatever_the_order() {
        let mut cfg = seed_config();
        cfg.prefixes = ["8", "7", "+7", "8495", "+7495"].map(String::from).to_vec();
        let n = Normalizer::new(&cfg).unwrap();
        assert_eq!(n.base("+74951234567"), "1234567");
        assert_eq!(n.base("84951234567"), "1234567");
        assert_eq!(n.base("89001234567"), "9001234567");
        // variants follow the configured order
        assert_eq!(
            n.normalize("84951234567").variants,
            [
                "1234567",
                "81234567",
                "71234567",
                "+71234567",
                "84951234567",
                "+74951234567"
            ]
        );
    }

    #[test]
    fn formatting_is_dropped_and_unknown_plus_stripped() {
        let n = Normalizer::new(&seed_config()).unwrap();
        assert_eq!(n.base(" +7 (900) 123-45-67 "), "9001234567");
        assert_eq!(n.base("+4930123456"), "4930123456");
        assert_eq!(n.base("9001234567"), "9001234567");
    }

    #[test]
    fn a_prefix_alone_is_not_stripped_to_nothing() {
        let cfg = NumbersConfig {
            internal: InternalRule::default(),
            ..seed_config()
        };
        let n = Normalizer::new(&cfg).unwrap();
        assert_eq!(n.base("88"), "8");
        assert_eq!(n.base("8"), "8");
        let lone = n.normalize("+7");
        assert_eq!(lone.base, "7");
        assert!(lone.variants.contains(&lone.base));
    }

    #[test]
    fn internal_numbers_by_length_or_pattern() {
        let n = Normalizer::new(&seed_config()).unwrap();
        let ext = n.normalize("101");
        assert!(ext.is_local);
        assert_eq!(ext.base, "101");
        assert_eq!(ext.variants, ["101"]);
        assert!(!n.is_local("12345"));
        assert!(!n.is_local("*97"), "non-digits are not internal by length");

        let cfg = NumbersConfig {
            internal: InternalRule {
                max_length: None,
                pattern: Some(r"^(1\d\d|\*\d+)$".into()),
            },
            ..seed_config()
        };
        let n = Normalizer::new(&cfg).unwrap();
        assert!(n.is_local("101"));
        assert!(n.is_local("*97"));
        assert!(!n.is_local("201"));
    }

    #[test]
    fn service_codes_are_not_phone_numbers() {
        let n = Normalizer::new(&seed_config()).unwrap();
        let code = n.normalize("*8");
        assert_eq!(code.base, "*8");
        assert_eq!(code.variants, ["*8"]);
        assert_eq!(n.base("#31#89001234567"), "#31#89001234567");
    }

    #[test]
    fn no_rule_matching_leaves_custom_empty() {
        let n = Normalizer::new(&seed_config()).unwrap();
        let number = n.normalize("84951234567");
        assert_eq!(number.custom, "");
        assert_eq!(number.preferred(), "84951234567");
    }

    #[test]
    fn first_matching_rule_wins() {
        let cfg = NumbersConfig {
            replace: vec![
                ReplaceRule {
                    pattern: r"^8(\d{10})$".into(),
                    replacement: "+7$1".into(),
                },
                ReplaceRule {
                    pattern: r"^\d+$".into(),
                    replacement: "never".into(),
                },
            ],
            ..NumbersConfig::default()
        };
        let n = Normalizer::new(&cfg).unwrap();
        assert_eq!(n.normalize("89001234567").custom, "+79001234567");
        assert_eq!(n.normalize("123").custom, "never");
    }

    #[test]
    fn non_numbers_have_an_empty_base() {
        let n = Normalizer::new(&seed_config()).unwrap();
        for s in ["", "anonymous", "<unknown>"] {
            let number = n.normalize(s);
            assert_eq!(number.base, "", "{s}");
            assert!(number.variants.is_empty(), "{s}");
            assert!(!number.is_local, "{s}");
        }
    }

    #[test]
    fn bad_settings_are_reported() {
        let mut cfg = seed_config();
        cfg.replace[0].pattern = "(".into();
        let err = Normalizer::new(&cfg).unwrap_err();
        assert!(err.to_string().contains("invalid replace pattern"), "{err}");

        let mut cfg = seed_config();
        cfg.prefixes.push("+".into());
        assert!(matches!(Normalizer::new(&cfg), Err(Error::InvalidPrefix(_))));

        let mut cfg = seed_config();
        cfg.internal.pattern = Some("[".into());
        assert!(Normalizer::new(&cfg).is_err());
    }

    #[test]
    fn config_reads_from_toml() {
        let cfg: NumbersConfig = toml::from_str(
            r#"
            prefixes = ["+7495", "8495", "+7", "7", "8"]
            internal = { max_length = 4 }
            [[replace]]
            pattern = '^\+7(\d{10})$'
            replacement = "8$1"
            "#,
        )
        .unwrap();
        assert_eq!(cfg, seed_config());
        assert!(toml::from_str::<NumbersConfig>("prefixs = []").is_err());
    }

    proptest! {
        #[test]
        fn never_panics_and_keeps_invariants(s in "\\PC{0,24}|[+0-9 ()-]{0,20}") {
            let n = Normalizer::new(&seed_config()).unwrap();
            let number = n.normalize(&s);
            prop_assert!(number.base.len() <= s.len());
            prop_assert_eq!(&number.original, &s);
            if !number.base.is_empty() {
                prop_assert_eq!(&number.variants[0], &number.base);
            }
            let mut unique = number.variants.clone();
            unique.sort();
            unique.dedup();
            prop_assert_eq!(unique.len(), number.variants.len());
        }

        #[test]
        fn every_prefixed_form_has_the_same_base(base in "9[0-9]{9}") {
            let n = Normalizer::new(&seed_config()).unwrap();
            for variant in n.normalize(&base).variants {
                prop_assert_eq!(n.base(&variant), base.clone());
            }
        }
    }
}
