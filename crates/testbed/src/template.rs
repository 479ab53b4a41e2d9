//! The PBX configuration and SIPp scenarios, compiled into the crate so a test
//! binary works from any directory, rendered with `{{NAME}}` placeholders.

use crate::error::{Error, Result};

/// Asterisk configuration files: (file name, template).
pub(crate) const ASTERISK_CONFIGS: &[(&str, &str)] = &[
    ("asterisk.conf", include_str!("../../../testbed/asterisk/asterisk.conf")),
    ("modules.conf", include_str!("../../../testbed/asterisk/modules.conf")),
    ("logger.conf", include_str!("../../../testbed/asterisk/logger.conf")),
    ("manager.conf", include_str!("../../../testbed/asterisk/manager.conf")),
    ("pjsip.conf", include_str!("../../../testbed/asterisk/pjsip.conf")),
    (
        "extensions.conf",
        include_str!("../../../testbed/asterisk/extensions.conf"),
    ),
    ("queues.conf", include_str!("../../../testbed/asterisk/queues.conf")),
    ("features.conf", include_str!("../../../testbed/asterisk/features.conf")),
    (
        "res_parking.conf",
        include_str!("../../../testbed/asterisk/res_parking.conf"),
    ),
    ("cel.conf", include_str!("../../../testbed/asterisk/cel.conf")),
    (
        "cel_sqlite3_custom.conf",
        include_str!("../../../testbed/asterisk/cel_sqlite3_custom.conf"),
    ),
    ("cdr.conf", include_str!("../../../testbed/asterisk/cdr.conf")),
    (
        "cdr_manager.conf",
        include_str!("../../../testbed/asterisk/cdr_manager.conf"),
    ),
    ("rtp.conf", include_str!("../../../testbed/asterisk/rtp.conf")),
    (
        "musiconhold.conf",
        include_str!("../../../testbed/asterisk/musiconhold.conf"),
    ),
    (
        "indications.conf",
        include_str!("../../../testbed/asterisk/indications.conf"),
    ),
    ("acl.conf", include_str!("../../../testbed/asterisk/acl.conf")),
    ("ccss.conf", include_str!("../../../testbed/asterisk/ccss.conf")),
    (
        "pjproject.conf",
        include_str!("../../../testbed/asterisk/pjproject.conf"),
    ),
    (
        "pjsip_wizard.conf",
        include_str!("../../../testbed/asterisk/pjsip_wizard.conf"),
    ),
    ("udptl.conf", include_str!("../../../testbed/asterisk/udptl.conf")),
];

pub(crate) const SIPP_REGISTER: &str = include_str!("../../../testbed/sipp/register.xml");
pub(crate) const SIPP_UAS_ANSWER: &str = include_str!("../../../testbed/sipp/uas-answer.xml");
pub(crate) const SIPP_UAS_REJECT: &str = include_str!("../../../testbed/sipp/uas-reject.xml");
pub(crate) const SIPP_UAC: &str = include_str!("../../../testbed/sipp/uac.xml");

pub(crate) const BUILD_CHROOT_SH: &str = include_str!("../../../testbed/build-chroot.sh");
pub(crate) const INSTALL_HOST_DEPS_SH: &str = include_str!("../../../testbed/install-host-deps.sh");

/// Replaces every `{{KEY}}`; a placeholder left over is an error, so a
/// template and its caller cannot drift apart silently.
pub(crate) fn render(name: &str, template: &str, vars: &[(&str, String)]) -> Result<String> {
    let mut out = template.to_owned();
    for (key, value) in vars {
        out = out.replace(&format!("{{{{{key}}}}}"), value);
    }
    if let Some(start) = out.find("{{") {
        let end = out[start..].find("}}").map_or(out.len(), |e| start + e + 2);
        return Err(Error::Template {
            template: name.to_owned(),
            placeholder: out[start..end].to_owned(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_fills_all_placeholders() {
        let out = render("t", "a={{A}} b={{B}} a={{A}}", &[("A", "1".into()), ("B", "2".into())]).unwrap();
        assert_eq!(out, "a=1 b=2 a=1");
    }

    #[test]
    fn render_reports_a_missing_placeholder() {
        let err = render("t", "x={{MISSING}}", &[("A", "1".into())]).unwrap_err();
        assert!(err.to_string().contains("{{MISSING}}"), "{err}");
    }

    #[test]
    fn every_asterisk_template_renders_with_the_instance_variables() {
        let vars = crate::instance::tests::sample_vars();
        for (name, template) in ASTERISK_CONFIGS {
            render(name, template, &vars).unwrap();
        }
    }
}
