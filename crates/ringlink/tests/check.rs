//! `ringlink check` and `ringlink config default` against the real test bed and the Bitrix24 emulator.

use std::process::Command;

use testbed::TestBed;

fn ringlink(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringlink"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run ringlink");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Multi-threaded: the emulator must keep serving while the test waits for the `ringlink` process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_each_part_in_plain_words() {
    let bed = TestBed::start().await.expect("test bed");
    let emu = b24emu::Emulator::start(b24emu::EmulatorConfig::default())
        .await
        .expect("emulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, default) = ringlink(&["config", "default"], &[]);
    assert!(ok, "{default}");
    let config = dir.path().join("ringlink.toml");
    std::fs::write(&config, &default).expect("write config");
    let db = dir.path().join("check.db");
    let addr = bed.ami_addr().to_string();
    let webhook = emu.webhook_url();
    let good: Vec<(&str, &str)> = vec![
        ("RINGLINK__AMI__ADDRESS", &addr),
        ("RINGLINK__AMI__USERNAME", bed.ami_user()),
        ("RINGLINK__AMI__SECRET", bed.ami_secret()),
        ("RINGLINK__AMI__AUTH", "plain"),
        ("RINGLINK__BITRIX24__WEBHOOK_URL", &webhook),
        ("RINGLINK__STORE__PATH", db.to_str().expect("utf-8 path")),
    ];
    let config_arg = config.to_str().expect("utf-8 path");
    let (ok, out) = ringlink(&["check", "--config", config_arg], &good);
    assert!(ok, "{out}");
    assert!(out.contains("ok       AMI: Asterisk 22"), "{out}");
    assert!(out.contains("ok       bitrix24: reachable; scopes"), "{out}");
    assert!(!out.contains("PROBLEM"), "{out}");
    assert!(out.contains("ok       AMI: events carry the PBX's timestamps"), "{out}");
    assert!(out.contains("note     web: plain HTTP on 0.0.0.0:8077"), "{out}");
    assert!(out.contains("note     auto-distribution: off"), "{out}");

    // Auto-distribution on: its budget, how the dialplan asks, and the CRM's answer time.
    let mut auto = good.clone();
    auto.push(("RINGLINK__AUTODISTRIBUTION__TOKEN", "check-autodistribution-token"));
    auto.push(("RINGLINK__AUTODISTRIBUTION__AGI_BIND", "127.0.0.1:4573"));
    let (ok, out) = ringlink(&["check", "--config", config_arg], &auto);
    assert!(ok, "{out}");
    assert!(
        out.contains("ok       auto-distribution: on, budget 300 ms, responsible of CONTACT > COMPANY > LEAD, asked by FastAGI on 127.0.0.1:4573; the CRM answered a look-up in"),
        "{out}"
    );
    assert!(
        !out.contains("check-autodistribution-token"),
        "the token is never shown"
    );

    // HTTPS for the admin UI: a certificate and key that make a pair, then a key file that is not PEM.
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, made.cert.pem()).expect("cert");
    std::fs::write(&key, made.key_pair.serialize_pem()).expect("key");
    let mut tls = good.clone();
    tls.push(("RINGLINK__WEB__TLS_CERT", cert.to_str().expect("utf-8 path")));
    tls.push(("RINGLINK__WEB__TLS_KEY", key.to_str().expect("utf-8 path")));
    let (ok, out) = ringlink(&["check", "--config", config_arg], &tls);
    assert!(ok, "{out}");
    assert!(out.contains("ok       web: HTTPS on 0.0.0.0:8077 with"), "{out}");
    std::fs::write(&key, "not a key\n").expect("key");
    let (ok, out) = ringlink(&["check", "--config", config_arg], &tls);
    assert!(!ok, "{out}");
    assert!(
        out.contains("PROBLEM  web: web.tls_key: no usable private key in") && out.contains("key.pem"),
        "{out}"
    );

    // A PBX whose manager.conf lacks timestampevents = yes: said in plain words.
    bed.set_timestamp_events(false).await.expect("timestampevents = no");
    let (ok, out) = ringlink(&["check", "--config", config_arg], &good);
    assert!(!ok, "{out}");
    assert!(
        out.contains("PROBLEM  AMI: events carry no Timestamp: set timestampevents = yes"),
        "{out}"
    );
    assert!(out.contains("1 problem(s) found"), "{out}");
    bed.set_timestamp_events(true).await.expect("timestampevents = yes");

    let mut wrong = good.clone();
    wrong[2] = ("RINGLINK__AMI__SECRET", "wrong-secret");
    wrong[4] = ("RINGLINK__BITRIX24__WEBHOOK_URL", "http://example.com/rest/1/x/");
    let (ok, out) = ringlink(&["check", "--config", config_arg], &wrong);
    assert!(!ok, "{out}");
    assert!(out.contains("PROBLEM  AMI: AMI login as \"ringlink\""), "{out}");
    assert!(out.contains("set [ami] username and secret"), "the fix is named: {out}");
    assert!(!out.contains("wrong-secret"), "the secret is never printed: {out}");
    assert!(
        out.contains("PROBLEM  bitrix24:") && out.contains("https"),
        "plain http off loopback: {out}"
    );
    assert!(out.contains("2 problem(s) found"), "{out}");

    let (ok, out) = ringlink(&["check", "--config", "/nonexistent/ringlink.toml"], &[]);
    assert!(!ok);
    assert!(out.contains("PROBLEM  config: cannot read config file"), "{out}");
    assert!(
        out.contains("create it with `ringlink config default > /nonexistent/ringlink.toml`"),
        "{out}"
    );
    emu.shutdown().await;
    bed.stop().await.expect("stop");
}
