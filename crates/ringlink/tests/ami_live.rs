//! The AMI client against a real Asterisk 22 (the project's test bed): login modes, wrong secret, Originate with
//! its OriginateResponse, a list action during a live call, an Asterisk restart mid-stream, and a connection cut by
//! the peer.

use std::time::Duration;

use ami::{AuthMethod, ClientConfig, ClientEvent, Message};
use testbed::{Route, TestBed, CLIENT};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(30);

fn plain(bed: &TestBed) -> ClientConfig {
    let mut c = ClientConfig::new(bed.ami_addr().to_string(), bed.ami_user(), bed.ami_secret());
    c.reconnect_min = Duration::from_millis(100);
    c.reconnect_max = Duration::from_millis(500);
    c
}

/// Waits for the first stream signal that is not an AMI event, or for an event matching `pick`.
async fn wait_for(events: &mut ami::Events, what: &str, mut pick: impl FnMut(&ClientEvent) -> bool) -> ClientEvent {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(ev)) if pick(&ev) => return ev,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("event stream ended while waiting for {what}"),
            Err(_) => panic!("no {what} within {WAIT:?}"),
        }
    }
}

#[tokio::test]
async fn login_plain_md5_and_wrong_secret() {
    let bed = TestBed::start().await.expect("test bed");

    let (client, mut events) = ami::connect(plain(&bed)).await.expect("plain login");
    wait_for(
        &mut events,
        "FullyBooted",
        |e| matches!(e, ClientEvent::Event(m) if m.event_name() == Some("FullyBooted")),
    )
    .await;
    let settings = client
        .action_ok(Message::action("CoreSettings"))
        .await
        .expect("CoreSettings");
    assert!(
        settings.get("AsteriskVersion").is_some_and(|v| v.starts_with("22")),
        "{settings:?}"
    );
    client.shutdown().await;

    let mut md5 = ClientConfig::new(bed.ami_addr().to_string(), bed.md5_user(), bed.md5_secret());
    md5.auth = AuthMethod::Md5;
    let (client, _events) = ami::connect(md5).await.expect("MD5 login");
    client.action_ok(Message::action("Ping")).await.expect("ping");
    client.shutdown().await;

    for auth in [AuthMethod::Plain, AuthMethod::Md5] {
        let mut wrong = ClientConfig::new(bed.ami_addr().to_string(), bed.ami_user(), "not-the-secret");
        wrong.auth = auth;
        let err = ami::connect(wrong).await.err().expect("wrong secret must fail");
        let text = err.to_string();
        assert!(matches!(err, ami::Error::LoginFailed { .. }), "{err:?}");
        assert!(
            text.contains(bed.ami_user()) && text.contains(&bed.ami_addr().to_string()),
            "{text}"
        );
        assert!(!text.contains("not-the-secret"), "{text}");
    }
    bed.stop().await.expect("stop");
}

#[tokio::test]
async fn originate_gets_its_originate_response() {
    let bed = TestBed::start().await.expect("test bed");
    bed.phone(101)
        .answer_after(Duration::from_millis(500))
        .await
        .expect("phone 101");
    let (client, mut events) = ami::connect(plain(&bed)).await.expect("login");
    let response = client
        .action_ok(
            Message::action("Originate")
                .with("Channel", "PJSIP/101")
                .with("Application", "Wait")
                .with("Data", "1")
                .with("CallerID", "\"ringlink\" <100>")
                .with("Async", "true"),
        )
        .await
        .expect("Originate queued");
    let id = response.action_id().expect("response carries the ActionID").to_owned();
    let ev = wait_for(&mut events, "OriginateResponse", |e| {
        matches!(e, ClientEvent::Event(m) if m.event_name() == Some("OriginateResponse") && m.action_id() == Some(id.as_str()))
    })
    .await;
    let ClientEvent::Event(m) = ev else { unreachable!() };
    assert_eq!(m.get("Response"), Some("Success"), "{m:?}");
    assert_eq!(m.get("Reason"), Some("4"), "answered: {m:?}");
    assert!(m.get("Channel").is_some_and(|c| c.starts_with("PJSIP/101-")), "{m:?}");
    bed.wait_all_channels_gone(WAIT).await.expect("call over");
    client.shutdown().await;
    bed.stop().await.expect("stop");
}

#[tokio::test]
async fn core_show_channels_lists_a_live_call() {
    let bed = TestBed::start().await.expect("test bed");
    bed.route_incoming(Route::Extension(101)).await.expect("route");
    bed.phone(101)
        .answer_after(Duration::from_millis(500))
        .await
        .expect("phone");
    let (client, _events) = ami::connect(plain(&bed)).await.expect("login");
    let mut call = bed.incoming(CLIENT).talk(Duration::from_secs(4)).await.expect("call");
    bed.wait_client_talking(WAIT).await.expect("talking");
    let list = client
        .list(Message::action("CoreShowChannels"))
        .await
        .expect("CoreShowChannels");
    let channels: Vec<&str> = list.items.iter().filter_map(|m| m.get("Channel")).collect();
    assert!(channels.iter().any(|c| c.starts_with("PJSIP/carrier-")), "{channels:?}");
    assert!(channels.iter().any(|c| c.starts_with("PJSIP/101-")), "{channels:?}");
    assert!(
        list.items.iter().all(|m| m.event_name() == Some("CoreShowChannel")),
        "only list items are collected"
    );
    let linked: Vec<&str> = list.items.iter().filter_map(|m| m.get("Linkedid")).collect();
    assert!(
        linked.windows(2).all(|w| w[0] == w[1]),
        "one call, one linkedid: {linked:?}"
    );
    assert_eq!(
        list.complete.as_ref().and_then(|m| m.get("ListItems")),
        Some(list.items.len().to_string().as_str())
    );
    call.finished(WAIT).await.expect("client hung up after talking");
    bed.wait_all_channels_gone(WAIT).await.expect("call over");
    client.shutdown().await;
    bed.stop().await.expect("stop");
}

#[tokio::test]
async fn reconnects_after_asterisk_restarts() {
    let bed = TestBed::start().await.expect("test bed");
    let (client, mut events) = ami::connect(plain(&bed)).await.expect("login");
    // `core restart now` re-executes Asterisk in place: the AMI socket closes and comes back.
    bed.asterisk_cli("core restart now").await.ok();
    wait_for(&mut events, "Disconnected", |e| {
        matches!(e, ClientEvent::Disconnected { .. })
    })
    .await;
    wait_for(&mut events, "Reconnected", |e| matches!(e, ClientEvent::Reconnected)).await;
    wait_for(
        &mut events,
        "FullyBooted after the restart",
        |e| matches!(e, ClientEvent::Event(m) if m.event_name() == Some("FullyBooted")),
    )
    .await;
    client
        .action_ok(Message::action("Ping"))
        .await
        .expect("ping after restart");
    assert!(client.stats().reconnects.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    client.shutdown().await;
    bed.stop().await.expect("stop");
}

/// A TCP relay the test can cut, standing for a connection reset by the network or the peer. Aborting the
/// returned task drops its `JoinSet`, which aborts every relayed session: both sockets close at once.
async fn relay(target: String) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
    let addr = listener.local_addr().expect("addr").to_string();
    let task = tokio::spawn(async move {
        let mut sessions = tokio::task::JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            sessions.spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn recovers_from_a_connection_cut_by_the_peer() {
    let bed = TestBed::start().await.expect("test bed");
    let (relay_addr, relay_task) = relay(bed.ami_addr().to_string()).await;
    let mut cfg = plain(&bed);
    cfg.addr = relay_addr.clone();
    let (client, mut events) = ami::connect(cfg).await.expect("login through relay");
    client.action_ok(Message::action("Ping")).await.expect("ping");

    // Cut every relayed connection and stop listening: the client sees the peer close.
    relay_task.abort();
    let _ = relay_task.await;
    wait_for(&mut events, "Disconnected", |e| {
        matches!(e, ClientEvent::Disconnected { .. })
    })
    .await;
    let err = client.action(Message::action("Ping")).await;
    assert!(err.is_err(), "actions fail fast while disconnected: {err:?}");

    // The relay comes back on the same address; the client reconnects by itself.
    let listener = TcpListener::bind(&relay_addr).await.expect("rebind relay");
    let target = bed.ami_addr().to_string();
    let back = tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    wait_for(&mut events, "Reconnected", |e| matches!(e, ClientEvent::Reconnected)).await;
    client
        .action_ok(Message::action("Ping"))
        .await
        .expect("ping after reconnect");
    client.shutdown().await;
    back.abort();
    bed.stop().await.expect("stop");
}
