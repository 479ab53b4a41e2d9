//! External lines: the trunks Bitrix24 lists (`telephony.externalLine.*`), so that a manager can choose the line
//! a click-to-call goes out on and the `LINE_NUMBER` of the click names a trunk ringlink knows.
//!
//! Pure: [`configured_lines`] reads the settings (each trunk's line number and name, and the click-to-call lines
//! that are not a trunk's), [`plan_lines`] compares them with what Bitrix24 lists and says what to add or rename,
//! each change with its reason. Lines Bitrix24 lists and the settings do not name are left alone (another
//! connector or an admin may use them); nothing is ever deleted.

use serde::{Deserialize, Serialize};
use tracker::TrunkConfig;

use crate::click::ClickSettings;
use crate::settings::TrunkSettings;

/// A line the settings ask Bitrix24 to list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WantedLine {
    /// `NUMBER`: the `LINE_NUMBER` calls through the trunk are registered with.
    pub number: String,
    /// `NAME`: what the manager sees.
    pub name: String,
    /// Where it comes from (`trunk carrier`, `click_to_call.dial.lines`).
    pub source: String,
    /// The context a click on this line dials the client in (`None`: click-to-call is off).
    pub way_out: Option<String>,
}

/// A line as Bitrix24 lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedLine {
    pub number: String,
    pub name: Option<String>,
}

/// What to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum LineChange {
    /// `telephony.externalLine.add`.
    Add { number: String, name: String },
    /// `telephony.externalLine.update` with the new `NAME`.
    Rename {
        number: String,
        name: String,
        was: Option<String>,
    },
}

/// One line's outcome, with its reason for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineDecision {
    pub number: String,
    /// `None`: Bitrix24 already lists it as configured, or it is not ringlink's to change.
    pub change: Option<LineChange>,
    pub reason: String,
}

/// The lines the settings name, in order, each number once: every trunk with a number (its `LINE_NUMBER` is the
/// `[[engine.trunks]]` `line_number` when one is set for it, else the trunk's number; its name the trunk's
/// `name`, else its endpoint), then the click-to-call lines that are no trunk's.
pub fn configured_lines(
    trunks: &[TrunkConfig],
    engine_trunks: &[TrunkSettings],
    click: Option<&ClickSettings>,
) -> Vec<WantedLine> {
    let way_out = |number: &str| {
        click.map(|c| {
            c.lines
                .iter()
                .find(|l| l.line_number.trim() == number)
                .and_then(|l| l.context.clone())
                .unwrap_or_else(|| c.context.clone())
        })
    };
    let mut lines: Vec<WantedLine> = Vec::new();
    for trunk in trunks {
        let number = trunk.number.trim();
        if number.is_empty() {
            continue;
        }
        let line = engine_trunks
            .iter()
            .find(|t| t.number.trim() == number)
            .and_then(|t| t.line_number.as_deref())
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .unwrap_or(number);
        if lines.iter().any(|l| l.number == line) {
            continue;
        }
        let name = trunk
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .unwrap_or(trunk.endpoint.trim());
        lines.push(WantedLine {
            number: line.to_owned(),
            name: name.to_owned(),
            source: format!("trunk {}", trunk.endpoint.trim()),
            way_out: way_out(line),
        });
    }
    for line in click.map(|c| c.lines.as_slice()).unwrap_or_default() {
        let number = line.line_number.trim();
        if number.is_empty() || lines.iter().any(|l| l.number == number) {
            continue;
        }
        lines.push(WantedLine {
            number: number.to_owned(),
            name: number.to_owned(),
            source: "click_to_call.dial.lines".into(),
            way_out: way_out(number),
        });
    }
    lines
}

/// Compares the configured lines with Bitrix24's list: a line it lacks is added, a line with another name is
/// renamed, the rest is left as it is. Running it again after the changes were made plans nothing, so a
/// restart never adds a line twice.
pub fn plan_lines(wanted: &[WantedLine], listed: &[ListedLine]) -> Vec<LineDecision> {
    let mut decisions = Vec::new();
    for line in wanted {
        let clicks = match &line.way_out {
            Some(context) => format!("; a click on it dials the client in context {context}"),
            None => String::new(),
        };
        let existing = listed.iter().find(|l| l.number.trim() == line.number);
        let (change, reason) = match existing {
            None => (
                Some(LineChange::Add {
                    number: line.number.clone(),
                    name: line.name.clone(),
                }),
                format!(
                    "line {} ({}) is not in Bitrix24: added as {:?}{clicks}",
                    line.number, line.source, line.name
                ),
            ),
            Some(l) if l.name.as_deref().map(str::trim) != Some(line.name.as_str()) => (
                Some(LineChange::Rename {
                    number: line.number.clone(),
                    name: line.name.clone(),
                    was: l.name.clone(),
                }),
                format!(
                    "line {} ({}) is named {:?} in Bitrix24: renamed to {:?}{clicks}",
                    line.number,
                    line.source,
                    l.name.as_deref().unwrap_or_default(),
                    line.name
                ),
            ),
            Some(_) => (
                None,
                format!(
                    "line {} ({}) is listed in Bitrix24 as {:?}{clicks}",
                    line.number, line.source, line.name
                ),
            ),
        };
        decisions.push(LineDecision {
            number: line.number.clone(),
            change,
            reason,
        });
    }
    for l in listed
        .iter()
        .filter(|l| !wanted.iter().any(|w| w.number == l.number.trim()))
    {
        decisions.push(LineDecision {
            number: l.number.clone(),
            change: None,
            reason: format!(
                "line {} ({:?}) is in Bitrix24 but no trunk of the settings has it: left as it is (a click on it \
                 dials through the default context)",
                l.number,
                l.name.as_deref().unwrap_or_default()
            ),
        });
    }
    decisions
}

/// Which way a click on `line` goes out, and why, for the call's journal. Bitrix24 only offers lines it lists,
/// but it keeps listing a line whose trunk was since taken out of the settings (ringlink never deletes a line);
/// a click on such a line, like a click without a line (the portal's default), is dialled through
/// `default_context`, the PBX's normal outgoing route, rather than not at all.
pub fn click_line_reason(line: Option<&str>, wanted: &[WantedLine], default_context: &str) -> String {
    let Some(number) = line.map(str::trim).filter(|l| !l.is_empty()) else {
        return format!(
            "no line chosen (the portal's default line): the client is dialled in context {default_context}"
        );
    };
    match wanted.iter().find(|w| w.number == number) {
        Some(w) => format!(
            "line {number} ({}, {:?}): the client is dialled in context {}",
            w.source,
            w.name,
            w.way_out.as_deref().unwrap_or(default_context)
        ),
        None => format!(
            "line {number} is not one of the settings' lines (no trunk or click_to_call line has it; Bitrix24 still \
             lists a line whose trunk was removed): the client is dialled in the default context {default_context}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::click::ClickLine;

    #[test]
    fn a_click_on_a_line_no_trunk_has_goes_out_the_default_way_and_says_so() {
        let click = ClickSettings {
            lines: vec![ClickLine {
                line_number: "73432723033".into(),
                context: Some("outbound".into()),
                prefix: String::new(),
            }],
            ..ClickSettings::default()
        };
        let wanted = configured_lines(&[trunk("carrier", "73432723033", Some("Main"))], &[], Some(&click));
        assert_eq!(
            click_line_reason(Some("73432723033"), &wanted, "from-internal"),
            "line 73432723033 (trunk carrier, \"Main\"): the client is dialled in context outbound"
        );
        let unknown = click_line_reason(Some(" 74950009999 "), &wanted, "from-internal");
        assert!(
            unknown.starts_with("line 74950009999 is not one of the settings' lines")
                && unknown.ends_with("dialled in the default context from-internal"),
            "{unknown}"
        );
        for none in [None, Some(""), Some("  ")] {
            assert_eq!(
                click_line_reason(none, &wanted, "from-internal"),
                "no line chosen (the portal's default line): the client is dialled in context from-internal"
            );
        }
    }

    fn trunk(endpoint: &str, number: &str, name: Option<&str>) -> TrunkConfig {
        TrunkConfig {
            endpoint: endpoint.into(),
            number: number.into(),
            name: name.map(str::to_owned),
        }
    }

    fn listed(number: &str, name: &str) -> ListedLine {
        ListedLine {
            number: number.into(),
            name: Some(name.into()),
        }
    }

    #[test]
    fn each_trunk_with_a_number_is_a_line_named_like_the_trunk() {
        let trunks = [
            trunk("carrier", "73432723033", Some("Main line")),
            trunk("second", " 74950000001 ", None),
            trunk("internal-gw", "", Some("no number")),
            trunk("carrier-backup", "73432723033", Some("Backup")),
        ];
        let engine_trunks = [TrunkSettings {
            number: "74950000001".into(),
            line_number: Some("line-2".into()),
            crm_source: None,
            responsible: None,
        }];
        let lines = configured_lines(&trunks, &engine_trunks, None);
        let got: Vec<_> = lines.iter().map(|l| (l.number.as_str(), l.name.as_str())).collect();
        assert_eq!(
            got,
            [("73432723033", "Main line"), ("line-2", "second")],
            "the engine's line_number is the LINE_NUMBER; a number without a trunk name takes the endpoint; \
             a trunk without a number, or with a number already listed, adds nothing"
        );
        assert_eq!(lines[0].way_out, None, "click-to-call off");
    }

    #[test]
    fn click_lines_name_the_way_out_and_add_lines_no_trunk_has() {
        let click = ClickSettings {
            lines: vec![
                ClickLine {
                    line_number: "73432723033".into(),
                    context: Some("outbound".into()),
                    prefix: String::new(),
                },
                ClickLine {
                    line_number: "555".into(),
                    context: None,
                    prefix: "9".into(),
                },
            ],
            ..ClickSettings::default()
        };
        let lines = configured_lines(&[trunk("carrier", "73432723033", None)], &[], Some(&click));
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].way_out.as_deref(), Some("outbound"));
        assert_eq!(
            (
                lines[1].number.as_str(),
                lines[1].source.as_str(),
                lines[1].way_out.as_deref()
            ),
            ("555", "click_to_call.dial.lines", Some("from-internal"))
        );
    }

    #[test]
    fn missing_lines_are_added_renamed_trunks_updated_and_a_second_run_plans_nothing() {
        let wanted = configured_lines(
            &[
                trunk("carrier", "73432723033", Some("Main")),
                trunk("b", "2", Some("B")),
            ],
            &[],
            None,
        );
        let plan = plan_lines(&wanted, &[listed("2", "old name"), listed("999", "someone else's")]);
        let changes: Vec<_> = plan.iter().filter_map(|d| d.change.clone()).collect();
        assert_eq!(
            changes,
            [
                LineChange::Add {
                    number: "73432723033".into(),
                    name: "Main".into()
                },
                LineChange::Rename {
                    number: "2".into(),
                    name: "B".into(),
                    was: Some("old name".into())
                },
            ]
        );
        assert!(
            plan[0].reason.contains("is not in Bitrix24: added as \"Main\""),
            "{plan:?}"
        );
        assert!(
            plan[2].reason.contains("line 999") && plan[2].reason.contains("left as it is"),
            "a line the settings do not name is never touched: {plan:?}"
        );
        let after = [listed("73432723033", "Main"), listed("2", "B"), listed("999", "x")];
        assert!(
            plan_lines(&wanted, &after).iter().all(|d| d.change.is_none()),
            "idempotent"
        );
    }
}
