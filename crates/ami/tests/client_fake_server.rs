//! The AMI client against a scripted in-process server: protocol paths that a real Asterisk will not produce on
//! demand (half-open sockets, floods, hostile banners). The same client is tested against a real Asterisk in the
//! `ringlink` crate's live tests.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ami::{AmiCodec, AuthMethod, ClientConfig, ClientEvent, Error, Frame, Message};
use futures::{SinkExt, StreamExt};
use md5::{Digest, Md5};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

#[derive(Clone, Default)]
struct Behaviour {
    /// Stop answering anything (but keep the socket open) after login.
    go_silent: Arc<AtomicBool>,
    /// Events to send right after login.
    flood: usize,
    /// Close the connection after this many actions on the first connection.
    close_after_actions: Option<usize>,
    connections: Arc<AtomicUsize>,
    banner: Option<&'static str>,
}

const USER: &str = "ringlink";
const SECRET: &str = "s3cret-value";

async fn serve(behaviour: Behaviour) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("local addr").to_string();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let b = behaviour.clone();
            let n = b.connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(session(socket, b, n));
        }
    });
    addr
}

async fn session(socket: TcpStream, b: Behaviour, connection_no: usize) {
    let mut framed = Framed::new(socket, AmiCodec::without_banner());
    let banner = b.banner.unwrap_or("Asterisk Call Manager/11.0.0");
    let mut first = Message::new();
    first.push_bare_line(banner);
    if framed.get_mut().try_write(format!("{banner}\r\n").as_bytes()).is_err() {
        return;
    }
    let challenge = "123456789";
    let mut actions = 0usize;
    while let Some(Ok(Frame::Message(m))) = framed.next().await {
        let id = m.action_id().unwrap_or("").to_owned();
        let reply = |pairs: &[(&str, &str)]| {
            let mut r = Message::new();
            for (k, v) in pairs {
                r.push(k, *v);
            }
            r.push("ActionID", id.clone());
            r
        };
        if b.go_silent.load(Ordering::SeqCst) {
            continue;
        }
        match m.get("Action").unwrap_or("") {
            "Challenge" => {
                let _ = framed
                    .send(reply(&[("Response", "Success"), ("Challenge", challenge)]))
                    .await;
            }
            "Login" => {
                let ok = m.get("Username") == Some(USER)
                    && match m.get("AuthType") {
                        Some("MD5") => {
                            let mut h = Md5::new();
                            h.update(challenge.as_bytes());
                            h.update(SECRET.as_bytes());
                            let key: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
                            m.get("Key") == Some(key.as_str())
                        }
                        _ => m.get("Secret") == Some(SECRET),
                    };
                if !ok {
                    let _ = framed
                        .send(reply(&[("Response", "Error"), ("Message", "Authentication failed")]))
                        .await;
                    return;
                }
                let _ = framed
                    .send(reply(&[
                        ("Response", "Success"),
                        ("Message", "Authentication accepted"),
                    ]))
                    .await;
                let booted = Message::new()
                    .with("Event", "FullyBooted")
                    .with("Status", "Fully Booted");
                let _ = framed.send(booted).await;
                for i in 0..b.flood {
                    let ev = Message::new().with("Event", "VarSet").with("Value", i.to_string());
                    if framed.feed(ev).await.is_err() {
                        return;
                    }
                }
                let _ = SinkExt::<Message>::flush(&mut framed).await;
            }
            "Ping" => {
                let _ = framed.send(reply(&[("Response", "Success"), ("Ping", "Pong")])).await;
            }
            "CoreShowChannels" => {
                let _ = framed
                    .feed(reply(&[
                        ("Response", "Success"),
                        ("EventList", "start"),
                        ("Message", "follows"),
                    ]))
                    .await;
                for ch in ["PJSIP/101-00000001", "PJSIP/carrier-00000000"] {
                    let mut ev = Message::new().with("Event", "CoreShowChannel");
                    ev.push("ActionID", id.clone());
                    ev.push("Channel", ch);
                    let _ = framed.feed(ev).await;
                }
                // An unrelated event in the middle of the list must go to the event stream, not the list.
                let _ = framed.feed(Message::new().with("Event", "Newexten")).await;
                let done = reply(&[
                    ("Event", "CoreShowChannelsComplete"),
                    ("EventList", "Complete"),
                    ("ListItems", "2"),
                ]);
                let mut done_first = Message::new().with("Event", "CoreShowChannelsComplete");
                for (k, v) in done.iter().skip(1) {
                    done_first.push(k, v);
                }
                let _ = framed.send(done_first).await;
            }
            "Logoff" => {
                let _ = framed.send(reply(&[("Response", "Goodbye")])).await;
                return;
            }
            other => {
                let msg = format!("Invalid/unknown command: {other}");
                let _ = framed.send(reply(&[("Response", "Error"), ("Message", &msg)])).await;
            }
        }
        actions += 1;
        if connection_no == 0 && b.close_after_actions == Some(actions) {
            return;
        }
    }
}

fn config(addr: &str) -> ClientConfig {
    let mut c = ClientConfig::new(addr, USER, SECRET);
    c.reconnect_min = Duration::from_millis(20);
    c.reconnect_max = Duration::from_millis(100);
    c
}

async fn next_non_event(events: &mut ami::Events) -> ClientEvent {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Some(ClientEvent::Event(_))) => continue,
            Ok(Some(other)) => return other,
            Ok(None) => panic!("event stream ended"),
            Err(_) => panic!("no signal within 10 s"),
        }
    }
}

#[tokio::test]
async fn plain_and_md5_login_and_actions() {
    let addr = serve(Behaviour::default()).await;
    for auth in [AuthMethod::Plain, AuthMethod::Md5] {
        let mut cfg = config(&addr);
        cfg.auth = auth;
        let (client, mut events) = ami::connect(cfg).await.expect("login");
        match events.recv().await {
            Some(ClientEvent::Event(m)) => assert_eq!(m.event_name(), Some("FullyBooted")),
            other => panic!("expected FullyBooted, got {other:?}"),
        }
        let pong = client.action_ok(Message::action("Ping")).await.expect("ping");
        assert_eq!(pong.get("Ping"), Some("Pong"));
        let err = client.action_ok(Message::action("Bogus")).await;
        assert!(
            matches!(err, Err(Error::ActionFailed { ref message, .. }) if message.contains("Bogus")),
            "{err:?}"
        );
        client.shutdown().await;
        assert!(events.recv().await.is_none(), "stream ends after shutdown");
    }
}

#[tokio::test]
async fn wrong_secret_names_user_and_address_but_not_the_secret() {
    let addr = serve(Behaviour::default()).await;
    for auth in [AuthMethod::Plain, AuthMethod::Md5] {
        let mut cfg = ClientConfig::new(&addr, USER, "wrong-secret-xyz");
        cfg.auth = auth;
        let err = ami::connect(cfg).await.err().expect("login must fail");
        let text = err.to_string();
        assert!(matches!(err, Error::LoginFailed { .. }), "{err:?}");
        assert!(text.contains(USER) && text.contains(&addr), "{text}");
        assert!(!text.contains("wrong-secret-xyz"), "{text}");
    }
}

#[tokio::test]
async fn not_an_ami_server_is_refused() {
    let addr = serve(Behaviour {
        banner: Some("SSH-2.0-OpenSSH_9.2"),
        ..Default::default()
    })
    .await;
    let err = ami::connect(config(&addr)).await.err().expect("must fail");
    assert!(matches!(err, Error::NotAmi { .. }), "{err:?}");
}

#[tokio::test]
async fn unreachable_address_is_a_clear_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    drop(listener);
    let err = ami::connect(config(&addr)).await.err().expect("must fail");
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains(&addr));
}

#[tokio::test]
async fn list_action_collects_until_complete() {
    let addr = serve(Behaviour::default()).await;
    let (client, mut events) = ami::connect(config(&addr)).await.expect("login");
    let list = client.list(Message::action("CoreShowChannels")).await.expect("list");
    let names: Vec<_> = list.items.iter().filter_map(|m| m.get("Channel")).collect();
    assert_eq!(names, ["PJSIP/101-00000001", "PJSIP/carrier-00000000"]);
    assert_eq!(list.complete.as_ref().and_then(|m| m.get("ListItems")), Some("2"));
    let mut saw_newexten = false;
    while let Ok(Some(ClientEvent::Event(m))) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
        saw_newexten |= m.event_name() == Some("Newexten");
    }
    assert!(saw_newexten, "unrelated events still reach the stream");
    client.shutdown().await;
}

#[tokio::test]
async fn slow_consumer_never_blocks_the_reader() {
    let addr = serve(Behaviour {
        flood: 50_000,
        ..Default::default()
    })
    .await;
    let mut cfg = config(&addr);
    cfg.event_queue = 100;
    let (client, mut events) = ami::connect(cfg).await.expect("login");
    // The consumer reads nothing while the server floods; actions must still be answered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pong = client
        .action_ok(Message::action("Ping"))
        .await
        .expect("ping while flooded");
    assert_eq!(pong.get("Ping"), Some("Pong"));
    let dropped = client.stats().events_dropped.load(Ordering::Relaxed);
    assert!(dropped > 0, "overflow is counted");
    let mut received = 0u64;
    let mut reported = 0u64;
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(300), events.recv()).await {
        match ev {
            ClientEvent::Event(_) => received += 1,
            ClientEvent::EventsDropped { count } => reported += count,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(reported > 0, "the consumer is told to resynchronise");
    // Every event the server sent was either delivered or counted as dropped (+1 FullyBooted).
    assert_eq!(received + client.stats().events_dropped.load(Ordering::Relaxed), 50_001);
    client.shutdown().await;
}

#[tokio::test]
async fn half_open_connection_is_detected_by_ping_and_reconnected() {
    let behaviour = Behaviour::default();
    let silent = behaviour.go_silent.clone();
    let connections = behaviour.connections.clone();
    let addr = serve(behaviour).await;
    let mut cfg = config(&addr);
    cfg.ping_interval = Duration::from_millis(100);
    cfg.ping_timeout = Duration::from_millis(200);
    let (client, mut events) = ami::connect(cfg).await.expect("login");
    silent.store(true, Ordering::SeqCst);
    match next_non_event(&mut events).await {
        ClientEvent::Disconnected { reason } => assert!(reason.contains("Ping"), "{reason}"),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    silent.store(false, Ordering::SeqCst);
    assert_eq!(next_non_event(&mut events).await, ClientEvent::Reconnected);
    assert!(connections.load(Ordering::SeqCst) >= 2);
    client
        .action_ok(Message::action("Ping"))
        .await
        .expect("works after reconnect");
    client.shutdown().await;
}

#[tokio::test]
async fn connection_cut_by_peer_fails_pending_and_reconnects() {
    let addr = serve(Behaviour {
        close_after_actions: Some(1),
        ..Default::default()
    })
    .await;
    let (client, mut events) = ami::connect(config(&addr)).await.expect("login");
    // Login counts as the first action: the server closes right after it.
    match next_non_event(&mut events).await {
        ClientEvent::Disconnected { .. } => {}
        other => panic!("expected Disconnected, got {other:?}"),
    }
    assert_eq!(next_non_event(&mut events).await, ClientEvent::Reconnected);
    assert_eq!(client.stats().reconnects.load(Ordering::Relaxed), 1);
    client
        .action_ok(Message::action("Ping"))
        .await
        .expect("works after reconnect");
    client.shutdown().await;
}

#[tokio::test]
async fn tls_session_with_self_signed_certificate() {
    use tokio_rustls::rustls::{self, pki_types::PrivateKeyDer};
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ami.pem");
    std::fs::write(&ca, cert.cert.pem()).expect("write pem");
    let key = PrivateKeyDer::try_from(cert.key_pair.serialize_der()).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(socket).await else {
                    return;
                };
                let mut framed = Framed::new(tls, AmiCodec::without_banner());
                let _ = framed.get_mut().write_all_banner().await;
                while let Some(Ok(Frame::Message(m))) = framed.next().await {
                    let mut r = Message::new().with("Response", "Success");
                    r.push("ActionID", m.action_id().unwrap_or(""));
                    let _ = framed.send(r).await;
                }
            });
        }
    });
    let mut cfg = config(&format!("localhost:{port}"));
    cfg.tls = Some(ami::TlsOptions {
        ca_file: ca.clone(),
        server_name: None,
    });
    let (client, _events) = ami::connect(cfg).await.expect("TLS login");
    client.action_ok(Message::action("Ping")).await.expect("ping over TLS");
    client.shutdown().await;

    // A certificate that is not trusted is refused with a TLS error.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    std::fs::write(&ca, other.cert.pem()).expect("write pem");
    let mut cfg = config(&format!("localhost:{port}"));
    cfg.tls = Some(ami::TlsOptions {
        ca_file: ca,
        server_name: None,
    });
    let err = ami::connect(cfg).await.err().expect("untrusted certificate");
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
}

trait WriteBanner {
    async fn write_all_banner(&mut self) -> std::io::Result<()>;
}

impl<S: tokio::io::AsyncWrite + Unpin> WriteBanner for S {
    async fn write_all_banner(&mut self) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.write_all(b"Asterisk Call Manager/11.0.0\r\n").await
    }
}
