//! Runs against a real Asterisk 22 (the sid chroot is built on first use).

use std::future::IntoFuture;
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

#[tokio::test]
async fn outgoing_call_from_101_goes_out_via_the_carrier() {
    let bed = TestBed::start().await.unwrap();
    bed.carrier().answer_after(SECS(1)).await.unwrap();
    bed.phone(101).answer_after(SECS(1)).await.unwrap();
    let mut call = bed.dial(101, "979001234567").talk(SECS(3)).await.unwrap();
    let trunk_leg = bed
        .wait_for_channel("trunk leg up", SECS(10), |c| c.is_endpoint("carrier") && c.is_up())
        .await
        .unwrap();
    // The trunk leg presents the company number, not the extension.
    assert_eq!(trunk_leg.caller_id, "73432723033", "{trunk_leg:?}");
    assert_eq!(
        call.finished(SECS(30)).await.unwrap(),
        vec![Outcome::Answered, Outcome::HangupLocal]
    );
    bed.wait_all_channels_gone(SECS(10)).await.unwrap();
    assert_eq!(
        bed.carrier_outcomes(),
        vec![Outcome::Ringing, Outcome::Answered, Outcome::HangupRemote]
    );
    let recordings = bed.recordings();
    assert_eq!(recordings.len(), 1, "{recordings:?}");
    assert!(
        recordings[0].to_string_lossy().contains("/out-79001234567-101-"),
        "{recordings:?}"
    );
    bed.stop().await.unwrap();
}

#[tokio::test]
async fn ringall_queue_call_is_answered_by_102() {
    let bed = TestBed::start().await.unwrap();
    bed.route_incoming(Route::QueueRingAll).await.unwrap();
    bed.phone(101).no_answer().await.unwrap();
    bed.phone(102).answer_after(SECS(2)).await.unwrap();
    bed.phone(103).no_answer().await.unwrap();
    let mut call = bed.incoming(CLIENT).talk(SECS(3)).await.unwrap();
    bed.wait_phone_talking(102, SECS(15)).await.unwrap();
    assert_eq!(
        call.finished(SECS(30)).await.unwrap(),
        vec![Outcome::Answered, Outcome::HangupLocal]
    );
    bed.wait_all_channels_gone(SECS(10)).await.unwrap();
    assert_eq!(bed.phone_outcomes(101), vec![Outcome::Ringing, Outcome::Cancelled]);
    assert_eq!(
        bed.phone_outcomes(102),
        vec![Outcome::Ringing, Outcome::Answered, Outcome::HangupRemote]
    );
    assert_eq!(bed.phone_outcomes(103), vec![Outcome::Ringing, Outcome::Cancelled]);
    bed.stop().await.unwrap();
}

#[tokio::test]
async fn unregistered_phone_is_unavailable() {
    let bed = TestBed::start().await.unwrap();
    bed.route_incoming(Route::Extension(104)).await.unwrap();
    let mut call = bed.incoming(CLIENT).await.unwrap();
    let outcomes = call.finished(SECS(30)).await.unwrap();
    assert!(matches!(outcomes.as_slice(), [Outcome::Rejected(_)]), "{outcomes:?}");
    bed.wait_all_channels_gone(SECS(10)).await.unwrap();
    bed.stop().await.unwrap();
}

#[tokio::test]
async fn parallel_instances_do_not_collide() {
    let (a, b) = tokio::join!(TestBed::start(), TestBed::start());
    let (a, b) = (a.unwrap(), b.unwrap());
    println!(
        "two instances started in {:?} and {:?}",
        a.startup_time(),
        b.startup_time()
    );
    assert_ne!(a.ami_addr(), b.ami_addr());
    assert_ne!(a.recordings_dir(), b.recordings_dir());
    for bed in [&a, &b] {
        bed.route_incoming(Route::Extension(101)).await.unwrap();
        bed.phone(101).answer_after(SECS(1)).await.unwrap();
    }
    let (call_a, call_b) = tokio::join!(
        a.incoming(CLIENT).talk(SECS(2)).into_future(),
        b.incoming("+79007654321").talk(SECS(2)).into_future()
    );
    let (mut call_a, mut call_b) = (call_a.unwrap(), call_b.unwrap());
    let (ra, rb) = tokio::join!(call_a.finished(SECS(30)), call_b.finished(SECS(30)));
    assert_eq!(ra.unwrap(), vec![Outcome::Answered, Outcome::HangupLocal]);
    assert_eq!(rb.unwrap(), vec![Outcome::Answered, Outcome::HangupLocal]);
    a.wait_all_channels_gone(SECS(10)).await.unwrap();
    b.wait_all_channels_gone(SECS(10)).await.unwrap();
    // Each PBX recorded only its own client.
    let names = |bed: &TestBed| -> Vec<String> {
        bed.recordings()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    let (na, nb) = (names(&a), names(&b));
    assert!(na.len() == 1 && na[0].contains("+79001234567"), "{na:?}");
    assert!(nb.len() == 1 && nb[0].contains("+79007654321"), "{nb:?}");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// Logs in over raw AMI, plain or with the MD5 challenge; returns the login response.
async fn ami_login(addr: std::net::SocketAddr, user: &str, secret: &str, md5: bool) -> String {
    use md5::{Digest, Md5};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut banner = String::new();
    reader.read_line(&mut banner).await.unwrap();
    assert!(banner.starts_with("Asterisk Call Manager/"), "{banner}");
    async fn read_message(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> String {
        let mut message = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await.unwrap() == 0 || line == "\r\n" {
                return message;
            }
            message.push_str(&line);
        }
    }
    let login = if md5 {
        write
            .write_all(b"Action: Challenge\r\nAuthType: MD5\r\n\r\n")
            .await
            .unwrap();
        let challenge_msg = read_message(&mut reader).await;
        let challenge = challenge_msg
            .lines()
            .find_map(|l| l.strip_prefix("Challenge: "))
            .unwrap_or_else(|| panic!("no challenge in {challenge_msg}"))
            .trim()
            .to_owned();
        let key = Md5::digest(format!("{challenge}{secret}").as_bytes());
        let key: String = key.iter().map(|b| format!("{b:02x}")).collect();
        format!("Action: Login\r\nAuthType: MD5\r\nUsername: {user}\r\nKey: {key}\r\n\r\n")
    } else {
        format!("Action: Login\r\nUsername: {user}\r\nSecret: {secret}\r\n\r\n")
    };
    write.write_all(login.as_bytes()).await.unwrap();
    read_message(&mut reader).await
}

#[tokio::test]
async fn both_ami_accounts_log_in_plain_and_with_md5() {
    let bed = TestBed::start().await.unwrap();
    for (user, secret) in [(bed.ami_user(), bed.ami_secret()), (bed.md5_user(), bed.md5_secret())] {
        for md5 in [false, true] {
            let response = ami_login(bed.ami_addr(), user, secret, md5).await;
            assert!(
                response.contains("Authentication accepted"),
                "{user} md5={md5}: {response}"
            );
        }
    }
    let refused = ami_login(bed.ami_addr(), bed.md5_user(), "wrong", true).await;
    assert!(refused.contains("Authentication failed"), "{refused}");
    bed.stop().await.unwrap();
}
