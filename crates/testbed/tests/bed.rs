//! Runs against a real Asterisk 22 (the sid chroot is built on first use).

use std::time::Duration;

use testbed::{Outcome, Route, TestBed, CLIENT};

const SECS: fn(u64) -> Duration = Duration::from_secs;

#[tokio::test]
async fn client_call_to_the_did_reaches_101_and_ends_cleanly() {
    let bed = TestBed::start().await.unwrap();
    println!("test bed slot {} started in {:?}", bed.slot(), bed.startup_time());
    let version = bed.asterisk_cli("core show version").await.unwrap();
    assert!(version.starts_with("Asterisk 2"), "{version}");

    bed.route_incoming(Route::Extension(101)).await.unwrap();
    bed.phone(101).answer_after(SECS(1)).await.unwrap();
    let mut call = bed.incoming(CLIENT).talk(SECS(3)).await.unwrap();
    let talking = bed.wait_phone_talking(101, SECS(10)).await.unwrap();
    assert!(talking.name.starts_with("PJSIP/101-"), "{talking:?}");

    let outcomes = call.finished(SECS(30)).await.unwrap();
    assert_eq!(outcomes, vec![Outcome::Answered, Outcome::HangupLocal]);
    bed.wait_all_channels_gone(SECS(10)).await.unwrap();
    assert_eq!(
        bed.phone_outcomes(101),
        vec![Outcome::Ringing, Outcome::Answered, Outcome::HangupRemote]
    );
    let recordings = bed.recordings();
    assert_eq!(recordings.len(), 1, "{recordings:?}");
    let name = recordings[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("in-73432723033-+79001234567-"), "{name}");
    bed.stop().await.unwrap();
}
