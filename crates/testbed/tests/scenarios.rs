//! Every scenario player on one real Asterisk, in order.

use testbed::{scenarios, TestBed};

#[tokio::test]
async fn every_scenario_plays_and_leaves_no_channel() {
    let bed = TestBed::start().await.unwrap();
    let only = std::env::var("RINGLINK_SCENARIOS").ok();
    let mut failures = Vec::new();
    for scenario in scenarios::ALL {
        if let Some(only) = &only {
            if !only.split(',').any(|id| id == scenario.id) {
                continue;
            }
        }
        let started = std::time::Instant::now();
        match scenarios::play(&bed, scenario.id).await {
            Ok(()) => println!("{} ok in {:?}", scenario.id, started.elapsed()),
            Err(e) => {
                println!("{} FAILED: {e}", scenario.id);
                failures.push(format!("{}: {e}", scenario.id));
            }
        }
    }
    bed.stop().await.unwrap();
    assert!(failures.is_empty(), "failed scenarios:\n{}", failures.join("\n"));
}
