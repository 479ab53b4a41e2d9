//! What a hook costs a call: one `process_client_phone` round trip through the runner, for a hook spawned per
//! call (Python, PHP, sh) and for a persistent hook (Python, PHP). Needs `python3` and `php` (`php-cli`).
//!
//! `cargo bench -p hooks --bench overhead`

use criterion::{criterion_group, criterion_main, Criterion};
use hooks::{Context, HookName, HookSettings, Hooks, HooksConfig, Mode, Outcome};
use serde_json::json;

const PYTHON: &str = r#"
import json, sys
for line in sys.stdin:
    phone = json.loads(line)["params"]["phone"]
    print(json.dumps({"data": {"phone": "8" + phone[2:]}, "state": "success"}), flush=True)
"#;

const PHP: &str = r#"<?php
while (($line = fgets(STDIN)) !== false) {
    $in = json_decode($line, true);
    $phone = $in["params"]["phone"];
    echo json_encode(["data" => ["phone" => "8" . substr($phone, 2)], "state" => "success"]), "\n";
    flush();
}
"#;

const SH: &str = r#"read line; echo '{"data": {"phone": "89001234567"}, "state": "success"}'"#;

fn hooks_for(file: &str, body: &str, mode: Mode) -> (tempfile::TempDir, Hooks) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(file), body).expect("write");
    let mut config = HooksConfig {
        dir: Some(dir.path().into()),
        ..HooksConfig::default()
    };
    config.per_hook.insert(
        "process_client_phone".into(),
        HookSettings {
            mode,
            ..HookSettings::default()
        },
    );
    let hooks = Hooks::discover(&config).expect("hooks");
    (dir, hooks)
}

fn overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let params = json!({"phone": "+79001234567"});
    let mut group = c.benchmark_group("process_client_phone");
    group.sample_size(30);
    for (label, file, body, mode) in [
        ("spawn/sh", "process_client_phone.sh", SH, Mode::Spawn),
        ("spawn/python", "process_client_phone.py", PYTHON, Mode::Spawn),
        ("spawn/php", "process_client_phone.php", PHP, Mode::Spawn),
        ("persistent/python", "process_client_phone.py", PYTHON, Mode::Persistent),
        ("persistent/php", "process_client_phone.php", PHP, Mode::Persistent),
    ] {
        let (_dir, hooks) = hooks_for(file, body, mode);
        group.bench_function(label, |b| {
            b.iter(|| {
                let called = rt
                    .block_on(hooks.call(HookName::ProcessClientPhone, &params, &Context::default()))
                    .expect("enabled");
                assert!(matches!(called.outcome, Outcome::Applied(_)), "{}", called.describe());
            })
        });
    }
    group.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
