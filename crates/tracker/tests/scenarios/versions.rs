//! Asterisk versions and channel drivers other than the test bed's (Asterisk 22, PJSIP) cannot run here, so
//! their differences are applied to the scenario scripts and the tracker must conclude the same (or the
//! documented difference). See the tracker's README, "Other Asterisk versions and channel drivers".

use std::collections::HashMap;

use ami::Message;
use tracker::{CallEvent, Tracker, TrackerConfig};

use super::common::{config, run, summary, tracker};
use super::scripts::{self, Script};

/// Every header value rewritten by `f` (None keeps it); messages `f_drop` says yes to are left out.
fn rewritten(
    messages: &[Message],
    drop: impl Fn(&Message) -> bool,
    f: impl Fn(&str, &str) -> Option<String>,
) -> Vec<Message> {
    messages
        .iter()
        .filter(|m| !drop(m))
        .map(|m| {
            let mut out = Message::new();
            for (k, v) in m.iter() {
                match f(k, v) {
                    Some(new) => out.push(k, new),
                    None => out.push(k, v),
                }
            }
            out
        })
        .collect()
}

/// The summary lines of a stream, with the script's labels; `unmap` turns the stream's ids back into the
/// script's own.
fn lines(t: &mut Tracker, s: &Script, messages: &[Message], unmap: impl Fn(&str) -> String) -> Vec<String> {
    let events: Vec<CallEvent> = run(t, messages);
    let labels: HashMap<String, &str> = s.labels.iter().map(|(k, v)| (k.clone(), *v)).collect();
    summary(&events, &HashMap::new())
        .into_iter()
        .map(|line| {
            unmap(&line)
                .split(' ')
                .map(|word| labels.get(word).map_or(word.to_owned(), |l| (*l).to_owned()))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn reference(s: &Script) -> Vec<String> {
    lines(&mut tracker(), s, &s.pbx.messages, str::to_owned)
}

/// chan_sip (`SIP/…`) and IAX2 (`IAX2/…`) instead of PJSIP: the same calls, event for event.
#[test]
fn chan_sip_and_iax2_channel_names_give_the_same_calls() {
    for s in scripts::all() {
        let expected = reference(&s);
        for tech in ["SIP/", "IAX2/"] {
            let renamed = rewritten(
                &s.pbx.messages,
                |_| false,
                |_, v| v.contains("PJSIP/").then(|| v.replace("PJSIP/", tech)),
            );
            let got = lines(&mut tracker(), &s, &renamed, str::to_owned);
            assert_eq!(got, expected, "{tech} differs");
        }
    }
}

/// A carrier on an ISDN span (`DAHDI/i1/<number>-<n>`), configured as trunk `DAHDI/i1`.
#[test]
fn a_dahdi_span_as_the_trunk_gives_the_same_calls() {
    let mut cfg: TrackerConfig = config();
    cfg.trunks[0].endpoint = "DAHDI/i1".into();
    for s in [
        scripts::s1_incoming_answered(),
        scripts::s7_outgoing(scripts::Outcome::Answer),
    ] {
        let expected = reference(&s);
        let renamed = rewritten(
            &s.pbx.messages,
            |_| false,
            |_, v| {
                v.starts_with("PJSIP/carrier-")
                    .then(|| v.replace("PJSIP/carrier-", "DAHDI/i1/79001234567-"))
            },
        );
        let mut t = Tracker::new(cfg.clone()).expect("valid config");
        assert_eq!(lines(&mut t, &s, &renamed, str::to_owned), expected);
    }
}

/// Asterisk before 20.17 / 22.7 has no `TechCause`; before 12 no `DialState`; CEL headers spelled
/// `Uniqueid`/`Linkedid` and a non-JSON `Extra`: the same calls (a decline still carries Q.850 cause 21).
#[test]
fn older_asterisk_event_shapes_give_the_same_calls() {
    for (i, s) in scripts::all().into_iter().enumerate() {
        let older = rewritten(
            &s.pbx.messages,
            |m| m.event_name() == Some("DialState"),
            |k, v| match k {
                "TechCause" => Some(String::new()),
                "Extra" if !v.is_empty() => Some("16,PJSIP/101,ANSWER".into()),
                _ => None,
            },
        )
        .into_iter()
        .map(|m| {
            let mut out = Message::new();
            for (k, v) in m.iter() {
                let k = match (m.event_name(), k) {
                    (Some("CEL"), "UniqueID") => "Uniqueid",
                    (Some("CEL"), "LinkedID") => "Linkedid",
                    _ => k,
                };
                if !(k == "TechCause" && v.is_empty()) {
                    out.push(k, v);
                }
            }
            out
        })
        .collect::<Vec<_>>();
        let expected = reference(&s);
        let got = lines(&mut tracker(), &s, &older, str::to_owned);
        assert_eq!(got, expected, "script {i}");
    }
}

/// `systemname` in asterisk.conf (Asterisk 13 and later): uniqueids and linkedids are `<system>-<epoch>.<n>`.
/// Merges (transfers, pickup, park) still go to the oldest linkedid.
#[test]
fn linkedids_with_a_system_name_give_the_same_calls() {
    let uid = regex::Regex::new(r"^\d+\.\d+$").expect("regex");
    for s in scripts::all() {
        let expected = reference(&s);
        let named = rewritten(
            &s.pbx.messages,
            |_| false,
            |_, v| uid.is_match(v).then(|| format!("pbx-east-{v}")),
        );
        let got = lines(&mut tracker(), &s, &named, |line| line.replace("pbx-east-", ""));
        assert_eq!(got, expected);
    }
}
