//! Tracker settings and the endpoint classification they imply.

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::time::LocalClock;
use crate::Error;

/// Settings of the call tracker (a section of ringlink's TOML configuration).
///
/// ```toml
/// utc_offset = "+03:00"
/// call_idle_timeout_secs = 14400
///
/// [[trunks]]
/// endpoint = "carrier"          # PJSIP endpoint name (or "PJSIP/carrier", "SIP/peer")
/// number = "73432723033"        # DID / line number of this trunk
/// name = "Main line"
///
/// [internal]
/// endpoints = ["alice"]         # extra internal endpoints by name
/// pattern = '^\d{2,6}$'         # endpoints whose name matches are internal phones
///
/// [numbers]
/// prefixes = ["+7495", "8495", "+7", "7", "8"]
/// internal = { max_length = 4 }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackerConfig {
    /// Endpoints that connect to carriers; calls arriving on them are incoming, calls dialled to them outgoing.
    pub trunks: Vec<TrunkConfig>,
    /// Which endpoints are employees' phones.
    pub internal: InternalEndpoints,
    /// Number normalisation for `from` / `to` / `trunk`.
    pub numbers: numbers::NumbersConfig,
    /// The PBX's zone as a fixed UTC offset (`+03:00`); `call_full` times are written in it.
    pub utc_offset: String,
    /// A call with no event for this long is closed by [`crate::Tracker::tick`] (its hang-up was lost).
    /// AMI is silent during a long conversation, so this is a safety net; resynchronisation is the precise tool.
    pub call_idle_timeout_secs: u64,
    /// How long ended calls and hung-up channels are remembered, so that late or repeated events about them
    /// are ignored instead of starting a ghost call (and at most [`crate::REMEMBERED_KEYS_CAP`] of each).
    /// Asterisk sends those within moments of the hang-up: a uniqueid is never given twice, the CEL events that
    /// trail the AMI `Hangup` come from the same PBX a moment later (Stasis topics are not mutually ordered), and
    /// an ended call's linkedid only comes back on a channel that call left. Two minutes is ample; longer only
    /// holds more memory.
    pub forget_after_secs: u64,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            trunks: Vec::new(),
            internal: InternalEndpoints::default(),
            numbers: numbers::NumbersConfig::default(),
            utc_offset: "+00:00".into(),
            call_idle_timeout_secs: 4 * 3600,
            forget_after_secs: 120,
        }
    }
}

/// One trunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    /// Endpoint name as in the channel name (`PJSIP/<endpoint>-0000001a`), optionally with the technology.
    pub endpoint: String,
    /// The DID / line number this trunk brings (Bitrix24 `LINE_NUMBER`); empty → the dialled extension is used.
    #[serde(default)]
    pub number: String,
    /// A human-readable name for logs and the admin UI.
    #[serde(default)]
    pub name: Option<String>,
}

/// Internal (employee) endpoints: listed by name, or matching a pattern. The default pattern treats endpoints
/// named by 2–6 digits as phones, which is how FreePBX and most hand-written configs name them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InternalEndpoints {
    pub endpoints: Vec<String>,
    /// Regular expression matched against the endpoint name; empty disables it.
    pub pattern: Option<String>,
}

impl Default for InternalEndpoints {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            pattern: Some(r"^\d{2,6}$".into()),
        }
    }
}

/// What a channel's endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndpointKind {
    Trunk(usize),
    Internal,
    /// `Local/…` plumbing channels.
    Local,
    Other,
}

/// A channel name taken apart: `PJSIP/101-0000000a` → tech `PJSIP`, endpoint `101`;
/// `Local/102@from-queue-0000000b;2` → endpoint `102@from-queue`, pair base `Local/102@from-queue-0000000b`, half 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChannelName<'a> {
    pub tech: &'a str,
    pub endpoint: &'a str,
    pub local_pair: Option<(&'a str, u8)>,
}

pub(crate) fn parse_channel_name(name: &str) -> ChannelName<'_> {
    let name = name.split('<').next().unwrap_or(name); // "<ZOMBIE>" and similar suffixes
    let Some((tech, rest)) = name.split_once('/') else {
        return ChannelName {
            tech: name,
            endpoint: "",
            local_pair: None,
        };
    };
    let mut local_pair = None;
    let mut rest_no_half = rest;
    if tech.eq_ignore_ascii_case("Local") {
        for (suffix, half) in [(";1", 1u8), (";2", 2u8)] {
            if let Some(stripped) = rest.strip_suffix(suffix) {
                rest_no_half = stripped;
                local_pair = Some((&name[..tech.len() + 1 + stripped.len()], half));
            }
        }
    }
    let endpoint = match rest_no_half.rfind('-') {
        Some(i) if i > 0 => &rest_no_half[..i],
        _ => rest_no_half,
    };
    // DAHDI's ISDN channels name the span and the number: `DAHDI/i1/79001234567-5` is span `i1`.
    let endpoint = if tech.eq_ignore_ascii_case("DAHDI") {
        endpoint.split('/').next().unwrap_or(endpoint)
    } else {
        endpoint
    };
    ChannelName {
        tech,
        endpoint,
        local_pair,
    }
}

/// The compiled settings.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    pub trunks: Vec<TrunkConfig>,
    internal_names: Vec<String>,
    internal_pattern: Option<Regex>,
    pub numbers: numbers::Normalizer,
    pub clock: LocalClock,
    pub idle_timeout_secs: u64,
    pub forget_after_secs: u64,
}

fn endpoint_matches(configured: &str, tech: &str, endpoint: &str) -> bool {
    match configured.split_once('/') {
        Some((t, e)) => t.eq_ignore_ascii_case(tech) && e == endpoint,
        None => configured == endpoint,
    }
}

impl Compiled {
    pub fn new(config: &TrackerConfig) -> Result<Self, Error> {
        let internal_pattern = match config.internal.pattern.as_deref() {
            Some(p) if !p.is_empty() => Some(Regex::new(p).map_err(|e| Error::InvalidPattern {
                pattern: p.to_owned(),
                reason: e.to_string(),
            })?),
            _ => None,
        };
        let offset = LocalClock::parse_offset(&config.utc_offset)
            .ok_or_else(|| Error::InvalidUtcOffset(config.utc_offset.clone()))?;
        for trunk in &config.trunks {
            if trunk.endpoint.trim().is_empty() {
                return Err(Error::EmptyTrunkEndpoint);
            }
        }
        Ok(Self {
            trunks: config.trunks.clone(),
            internal_names: config.internal.endpoints.clone(),
            internal_pattern,
            numbers: numbers::Normalizer::new(&config.numbers)?,
            clock: LocalClock::new(offset),
            idle_timeout_secs: config.call_idle_timeout_secs,
            forget_after_secs: config.forget_after_secs,
        })
    }

    pub fn classify(&self, name: &ChannelName<'_>) -> EndpointKind {
        if name.tech.eq_ignore_ascii_case("Local") {
            return EndpointKind::Local;
        }
        if name.endpoint.is_empty() {
            return EndpointKind::Other;
        }
        if let Some(i) = self
            .trunks
            .iter()
            .position(|t| endpoint_matches(t.endpoint.trim(), name.tech, name.endpoint))
        {
            return EndpointKind::Trunk(i);
        }
        let listed = self
            .internal_names
            .iter()
            .any(|e| endpoint_matches(e.trim(), name.tech, name.endpoint));
        if listed
            || self
                .internal_pattern
                .as_ref()
                .is_some_and(|re| re.is_match(name.endpoint))
        {
            EndpointKind::Internal
        } else {
            EndpointKind::Other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_come_apart() {
        let n = parse_channel_name("PJSIP/101-0000000a");
        assert_eq!((n.tech, n.endpoint, n.local_pair), ("PJSIP", "101", None));
        let n = parse_channel_name("PJSIP/my-trunk-0000000a");
        assert_eq!(n.endpoint, "my-trunk");
        let n = parse_channel_name("Local/102@from-queue-0000000b;2");
        assert_eq!(n.endpoint, "102@from-queue");
        assert_eq!(n.local_pair, Some(("Local/102@from-queue-0000000b", 2)));
        let n = parse_channel_name("SIP/101-0000000a");
        assert_eq!((n.tech, n.endpoint), ("SIP", "101"));
        let n = parse_channel_name("IAX2/provider-4711");
        assert_eq!((n.tech, n.endpoint), ("IAX2", "provider"));
        let n = parse_channel_name("DAHDI/i1/79001234567-5");
        assert_eq!((n.tech, n.endpoint), ("DAHDI", "i1"));
        let n = parse_channel_name("DAHDI/3-1");
        assert_eq!((n.tech, n.endpoint), ("DAHDI", "3"));
        let n = parse_channel_name("PJSIP/101-0000000a<ZOMBIE>");
        assert_eq!(n.endpoint, "101");
        for odd in ["", "none", "/", "PJSIP/", "PJSIP/-", "Local/;1", "ü/ü-ü"] {
            let _ = parse_channel_name(odd);
        }
    }

    #[test]
    fn endpoints_are_classified() {
        let cfg = TrackerConfig {
            trunks: vec![TrunkConfig {
                endpoint: "carrier".into(),
                number: "73432723033".into(),
                name: None,
            }],
            internal: InternalEndpoints {
                endpoints: vec!["SIP/alice".into()],
                ..InternalEndpoints::default()
            },
            ..TrackerConfig::default()
        };
        let c = Compiled::new(&cfg).unwrap();
        let kind = |name: &str| c.classify(&parse_channel_name(name));
        assert_eq!(kind("PJSIP/carrier-00000001"), EndpointKind::Trunk(0));
        assert_eq!(kind("PJSIP/101-00000001"), EndpointKind::Internal);
        assert_eq!(kind("SIP/alice-00000001"), EndpointKind::Internal);
        assert_eq!(kind("PJSIP/alice-00000001"), EndpointKind::Other);
        assert_eq!(kind("Local/101@from-queue-00000001;1"), EndpointKind::Local);
        assert_eq!(kind("Message/ast_msg_queue"), EndpointKind::Other);
    }

    #[test]
    fn bad_settings_are_errors() {
        let cfg = TrackerConfig {
            utc_offset: "MSK".into(),
            ..TrackerConfig::default()
        };
        assert!(matches!(Compiled::new(&cfg), Err(Error::InvalidUtcOffset(_))));
        let cfg = TrackerConfig {
            internal: InternalEndpoints {
                endpoints: vec![],
                pattern: Some("(".into()),
            },
            ..TrackerConfig::default()
        };
        assert!(matches!(Compiled::new(&cfg), Err(Error::InvalidPattern { .. })));
    }
}
