//! The AMI client: one supervised connection that logs in, answers actions by ActionID, collects list actions,
//! streams events without ever making the socket reader wait, pings to detect a half-open connection, and
//! reconnects with exponential back-off and jitter.
//!
//! Shape: [`connect`] opens the first session (so a wrong address or secret is reported at once) and spawns a
//! supervisor task that owns the socket. [`Client`] handles send commands to it; [`Events`] receives what the
//! server says. Consumers resynchronise on [`ClientEvent::Reconnected`] and [`ClientEvent::EventsDropped`].

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use md5::{Digest, Md5};
use rand::Rng;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout, Instant};
use tokio_util::codec::Framed;
use tracing::{debug, info, warn};

use crate::codec::{AmiCodec, Frame};
use crate::message::{Message, MessageKind};

/// How the client proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMethod {
    /// `Login` with `Secret` in clear (fine on loopback).
    #[default]
    Plain,
    /// `Challenge` then `Login` with `Key: md5(challenge + secret)`: the secret never crosses the wire.
    Md5,
}

/// TLS for AMI over `tlsbindport` (usually 5039). AMI certificates are mostly self-signed, so the trusted
/// certificate(s) are given as a PEM file.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    pub ca_file: PathBuf,
    /// Name to verify the certificate against; defaults to the host part of the address.
    pub server_name: Option<String>,
}

/// Connection settings. [`ClientConfig::new`] gives production defaults.
#[derive(Clone)]
pub struct ClientConfig {
    /// `host:port`, e.g. `127.0.0.1:5038`.
    pub addr: String,
    pub username: String,
    pub secret: String,
    pub auth: AuthMethod,
    pub tls: Option<TlsOptions>,
    /// `Events:` of the Login action (event classes); `None` keeps the user's `read` classes.
    pub event_mask: Option<String>,
    pub connect_timeout: Duration,
    /// Default wait for an action's response.
    pub action_timeout: Duration,
    pub ping_interval: Duration,
    /// A ping unanswered this long means the connection is dead (half-open TCP).
    pub ping_timeout: Duration,
    /// Capacity of the event queue between the socket reader and the consumer.
    pub event_queue: usize,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub max_message_bytes: usize,
}

impl ClientConfig {
    pub fn new(addr: impl Into<String>, username: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            username: username.into(),
            secret: secret.into(),
            auth: AuthMethod::Plain,
            tls: None,
            event_mask: None,
            connect_timeout: Duration::from_secs(5),
            action_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(15),
            ping_timeout: Duration::from_secs(10),
            event_queue: 20_000,
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
            max_message_bytes: crate::codec::DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("addr", &self.addr)
            .field("username", &self.username)
            .field("secret", &"***")
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// Everything that can go wrong talking to AMI. Messages name the user and address, never the secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to AMI at {addr}: {error}")]
    Connect { addr: String, error: std::io::Error },
    #[error("AMI at {addr} did not answer within {after:?} ({stage})")]
    Timeout {
        addr: String,
        stage: &'static str,
        after: Duration,
    },
    #[error("{addr} is not an Asterisk Manager Interface (first line: {first_line:?})")]
    NotAmi { addr: String, first_line: String },
    #[error("AMI login as {user:?} at {addr} failed: {message}")]
    LoginFailed {
        user: String,
        addr: String,
        message: String,
    },
    #[error("TLS setup for AMI at {addr} failed: {reason}")]
    Tls { addr: String, reason: String },
    #[error("AMI connection closed{}", if .reason.is_empty() { String::new() } else { format!(": {}", .reason) })]
    Disconnected { reason: String },
    #[error("AMI is not connected (reconnecting)")]
    NotConnected,
    #[error("AMI action {action} got no response within {after:?}")]
    ActionTimeout { action: String, after: Duration },
    #[error("AMI action {action} failed: {message}")]
    ActionFailed { action: String, message: String },
    #[error("AMI client was shut down")]
    Closed,
    #[error("invalid AMI action: {0}")]
    InvalidAction(String),
}

/// What the event stream carries.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    Event(Message),
    /// The connection was lost; the client is reconnecting. Live state may be stale from here on.
    Disconnected {
        reason: String,
    },
    /// A new session is logged in. Events in between were lost: resynchronise (e.g. `CoreShowChannels`).
    Reconnected,
    /// The consumer fell behind and this many events were dropped to keep the socket reader going: resynchronise.
    EventsDropped {
        count: u64,
    },
}

/// A completed list action (`EventList: start` … `<X>Complete`).
#[derive(Debug, Clone)]
pub struct ListResponse {
    pub response: Message,
    pub items: Vec<Message>,
    pub complete: Option<Message>,
}

/// Counters a status page or metrics exporter can read.
#[derive(Debug, Default)]
pub struct ClientStats {
    pub events_received: AtomicU64,
    pub events_dropped: AtomicU64,
    pub reconnects: AtomicU64,
    pub skipped_frames: AtomicU64,
}

enum Command {
    Action {
        msg: Message,
        list: bool,
        reply: oneshot::Sender<Result<ActionReply, Error>>,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

enum ActionReply {
    Single(Message),
    List(ListResponse),
}

/// A handle for sending actions. Cheap to clone; the connection lives until [`Client::shutdown`] or until every
/// handle is dropped.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    stats: Arc<ClientStats>,
    action_timeout: Duration,
    addr: String,
}

/// The receiving end of the event stream.
pub struct Events {
    rx: mpsc::Receiver<ClientEvent>,
}

impl Events {
    /// The next event; `None` once the client has shut down.
    pub async fn recv(&mut self) -> Option<ClientEvent> {
        self.rx.recv().await
    }

    /// Whether no event is waiting right now (the next `recv` would wait).
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

impl futures::Stream for Events {
    type Item = ClientEvent;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<ClientEvent>> {
        self.rx.poll_recv(cx)
    }
}

/// Connects and logs in once (errors are returned, not retried), then keeps the session alive in the background.
pub async fn connect(config: ClientConfig) -> Result<(Client, Events), Error> {
    let session = open_session(&config).await?;
    info!(addr = %config.addr, user = %config.username, "AMI connected");
    let (cmd_tx, cmd_rx) = mpsc::channel(1024);
    let (event_tx, event_rx) = mpsc::channel(config.event_queue.max(1));
    let stats = Arc::new(ClientStats::default());
    let client = Client {
        commands: cmd_tx,
        stats: stats.clone(),
        action_timeout: config.action_timeout,
        addr: config.addr.clone(),
    };
    let supervisor = Supervisor {
        config,
        commands: cmd_rx,
        events: EventSink {
            tx: event_tx,
            stats,
            unreported_drops: 0,
        },
        next_action_id: 0,
    };
    tokio::spawn(supervisor.run(session));
    Ok((client, Events { rx: event_rx }))
}

impl Client {
    /// Sends an action and returns its response message (which may say `Response: Error`).
    pub async fn action(&self, msg: Message) -> Result<Message, Error> {
        self.action_with_timeout(msg, self.action_timeout).await
    }

    /// As [`Client::action`], with its own time limit (a synchronous `Originate` may take its whole `Timeout`).
    pub async fn action_with_timeout(&self, msg: Message, after: Duration) -> Result<Message, Error> {
        match self.request(msg, false, after).await? {
            ActionReply::Single(m) => Ok(m),
            ActionReply::List(l) => Ok(l.response),
        }
    }

    /// Sends an action and turns `Response: Error` into [`Error::ActionFailed`].
    pub async fn action_ok(&self, msg: Message) -> Result<Message, Error> {
        let name = action_name(&msg);
        let response = self.action(msg).await?;
        if response.is_success() {
            Ok(response)
        } else {
            Err(Error::ActionFailed {
                action: name,
                message: response.get("Message").unwrap_or("no message").to_owned(),
            })
        }
    }

    /// Sends a list action (`CoreShowChannels`, `PJSIPShowEndpoints`, …) and collects its events until `…Complete`.
    pub async fn list(&self, msg: Message) -> Result<ListResponse, Error> {
        match self.request(msg, true, self.action_timeout).await? {
            ActionReply::List(l) => Ok(l),
            ActionReply::Single(m) => Ok(ListResponse {
                response: m,
                items: Vec::new(),
                complete: None,
            }),
        }
    }

    async fn request(&self, msg: Message, list: bool, after: Duration) -> Result<ActionReply, Error> {
        let name = action_name(&msg);
        if !matches!(msg.kind(), MessageKind::Action(_)) {
            return Err(Error::InvalidAction("the first header must be `Action`".into()));
        }
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Action { msg, list, reply })
            .await
            .map_err(|_| Error::Closed)?;
        match timeout(after, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::ActionTimeout { action: name, after }),
        }
    }

    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Logs off and closes the connection; the event stream then ends.
    pub async fn shutdown(self) {
        let (done, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown { done }).await.is_ok() {
            let _ = timeout(Duration::from_secs(3), rx).await;
        }
    }
}

fn action_name(msg: &Message) -> String {
    msg.get("Action").unwrap_or("?").to_owned()
}

// ---------------------------------------------------------------------------------------------------------------
// Sessions

pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(crate) type Transport = Framed<Box<dyn Io>, AmiCodec>;

/// Opens TCP (and TLS), checks the banner and logs in.
async fn open_session(config: &ClientConfig) -> Result<Transport, Error> {
    open_session_with_tap(config, None).await
}

/// As [`open_session`], copying every received byte into a trace when `tap` is given.
pub(crate) async fn open_session_with_tap(
    config: &ClientConfig,
    tap: Option<std::sync::Arc<std::sync::Mutex<crate::trace::TraceWriter>>>,
) -> Result<Transport, Error> {
    let addr = config.addr.clone();
    let tcp = match timeout(config.connect_timeout, TcpStream::connect(&config.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(error)) => return Err(Error::Connect { addr, error }),
        Err(_) => {
            return Err(Error::Timeout {
                addr,
                stage: "TCP connect",
                after: config.connect_timeout,
            })
        }
    };
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = match &config.tls {
        None => Box::new(tcp),
        Some(tls) => Box::new(crate::tls::wrap(tcp, &config.addr, tls, config.connect_timeout).await?),
    };
    let io: Box<dyn Io> = match tap {
        Some(writer) => Box::new(crate::trace::Tap::new(io, writer)),
        None => io,
    };
    let codec = AmiCodec::new().with_max_message_bytes(config.max_message_bytes);
    let mut transport = Framed::new(io, codec);

    let first = read_frame(&mut transport, config, "banner").await?;
    match first {
        Frame::Banner(b) if b.starts_with("Asterisk Call Manager") || b.contains("Call Manager") => {
            debug!(banner = %b, "AMI banner");
        }
        Frame::Banner(b) => return Err(Error::NotAmi { addr, first_line: b }),
        other => {
            return Err(Error::NotAmi {
                addr,
                first_line: format!("{other:?}"),
            })
        }
    }
    login(&mut transport, config).await?;
    Ok(transport)
}

async fn read_frame(transport: &mut Transport, config: &ClientConfig, stage: &'static str) -> Result<Frame, Error> {
    match timeout(config.connect_timeout, transport.next()).await {
        Ok(Some(Ok(frame))) => Ok(frame),
        Ok(Some(Err(e))) => Err(Error::Disconnected {
            reason: format!("{stage}: {e}"),
        }),
        Ok(None) => Err(Error::Disconnected {
            reason: format!("peer closed the connection during {stage}"),
        }),
        Err(_) => Err(Error::Timeout {
            addr: config.addr.clone(),
            stage,
            after: config.connect_timeout,
        }),
    }
}

/// Waits for the response carrying `action_id`, skipping anything else (no events flow before login).
async fn read_response(
    transport: &mut Transport,
    config: &ClientConfig,
    action_id: &str,
    stage: &'static str,
) -> Result<Message, Error> {
    loop {
        match read_frame(transport, config, stage).await {
            Ok(Frame::Message(m)) if m.action_id() == Some(action_id) => return Ok(m),
            Ok(_) => continue,
            // Asterisk closes the socket right after "Authentication failed"; a close here is a refusal.
            Err(Error::Disconnected { reason }) => {
                return Err(Error::LoginFailed {
                    user: config.username.clone(),
                    addr: config.addr.clone(),
                    message: reason,
                })
            }
            Err(e) => return Err(e),
        }
    }
}

async fn send(transport: &mut Transport, msg: &Message, config: &ClientConfig) -> Result<(), Error> {
    match timeout(config.action_timeout, transport.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::Disconnected { reason: e.to_string() }),
        Err(_) => Err(Error::Timeout {
            addr: config.addr.clone(),
            stage: "write",
            after: config.action_timeout,
        }),
    }
}

async fn login(transport: &mut Transport, config: &ClientConfig) -> Result<(), Error> {
    let mut msg = Message::action("Login")
        .with("ActionID", "login")
        .with("Username", &config.username);
    match config.auth {
        AuthMethod::Plain => msg.push("Secret", &config.secret),
        AuthMethod::Md5 => {
            let challenge = Message::action("Challenge")
                .with("ActionID", "challenge")
                .with("AuthType", "MD5");
            send(transport, &challenge, config).await?;
            let answer = read_response(transport, config, "challenge", "MD5 challenge").await?;
            let Some(challenge) = answer.get("Challenge").filter(|_| answer.is_success()) else {
                return Err(Error::LoginFailed {
                    user: config.username.clone(),
                    addr: config.addr.clone(),
                    message: format!(
                        "MD5 challenge refused: {}",
                        answer.get("Message").unwrap_or("no challenge in the answer")
                    ),
                });
            };
            let mut hasher = Md5::new();
            hasher.update(challenge.as_bytes());
            hasher.update(config.secret.as_bytes());
            let key: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
            msg.push("AuthType", "MD5");
            msg.push("Key", key);
        }
    }
    if let Some(mask) = &config.event_mask {
        msg.push("Events", mask);
    }
    send(transport, &msg, config).await?;
    let answer = read_response(transport, config, "login", "login").await?;
    if answer.is_success() {
        Ok(())
    } else {
        Err(Error::LoginFailed {
            user: config.username.clone(),
            addr: config.addr.clone(),
            message: answer.get("Message").unwrap_or("refused").to_owned(),
        })
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The supervisor: one task per client, owning the socket.

struct EventSink {
    tx: mpsc::Sender<ClientEvent>,
    stats: Arc<ClientStats>,
    unreported_drops: u64,
}

impl EventSink {
    /// Never waits: a full queue drops the event and counts it, and the count is delivered as soon as there is room.
    fn deliver(&mut self, event: ClientEvent) {
        if self.tx.is_closed() {
            return;
        }
        if self.unreported_drops > 0 {
            match self.tx.try_send(ClientEvent::EventsDropped {
                count: self.unreported_drops,
            }) {
                Ok(()) => self.unreported_drops = 0,
                Err(_) => {
                    self.drop_one();
                    return;
                }
            }
        }
        if self.tx.try_send(event).is_err() {
            self.drop_one();
        }
    }

    fn drop_one(&mut self) {
        self.unreported_drops += 1;
        let total = self.stats.events_dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if total == 1 || total.is_multiple_of(1000) {
            warn!(
                dropped_total = total,
                "AMI event consumer is too slow; events dropped (consumers will resync)"
            );
        }
    }
}

struct Pending {
    name: String,
    list: bool,
    reply: oneshot::Sender<Result<ActionReply, Error>>,
    collected: Option<ListResponse>,
}

enum SessionEnd {
    Shutdown(Option<oneshot::Sender<()>>),
    Lost(String),
}

struct Supervisor {
    config: ClientConfig,
    commands: mpsc::Receiver<Command>,
    events: EventSink,
    next_action_id: u64,
}

impl Supervisor {
    async fn run(mut self, first: Transport) {
        let mut transport = first;
        loop {
            let end = self.session(&mut transport).await;
            match end {
                SessionEnd::Shutdown(done) => {
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
                SessionEnd::Lost(reason) => {
                    warn!(addr = %self.config.addr, %reason, "AMI connection lost; reconnecting");
                    self.events.deliver(ClientEvent::Disconnected { reason });
                }
            }
            match self.reconnect().await {
                Some(t) => {
                    transport = t;
                    self.events.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    info!(addr = %self.config.addr, "AMI reconnected");
                    self.events.deliver(ClientEvent::Reconnected);
                }
                None => return,
            }
        }
    }

    /// Tries to connect again with exponential back-off and full jitter; answers actions with `NotConnected`
    /// meanwhile. `None` means shutdown was asked for.
    async fn reconnect(&mut self) -> Option<Transport> {
        let mut attempt: u32 = 0;
        loop {
            let ceiling = self
                .config
                .reconnect_min
                .saturating_mul(2u32.saturating_pow(attempt.min(16)))
                .min(self.config.reconnect_max);
            let delay = ceiling.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
            let deadline = Instant::now() + delay;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    cmd = self.commands.recv() => match cmd {
                        None => return None,
                        Some(Command::Shutdown { done }) => { let _ = done.send(()); return None; }
                        Some(Command::Action { reply, .. }) => { let _ = reply.send(Err(Error::NotConnected)); }
                    }
                }
            }
            match open_session(&self.config).await {
                Ok(t) => return Some(t),
                Err(e) => {
                    attempt = attempt.saturating_add(1);
                    warn!(addr = %self.config.addr, attempt, error = %e, "AMI reconnect failed");
                }
            }
        }
    }

    async fn session(&mut self, transport: &mut Transport) -> SessionEnd {
        let mut pending: HashMap<String, Pending> = HashMap::new();
        let mut ping = tokio::time::interval(self.config.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await; // the first tick is immediate; the session has just proved itself alive
        let mut awaiting_ping: Option<(String, Instant)> = None;
        // A second sender so a drop report can wait for room without borrowing `self`.
        let drop_reports = self.events.tx.clone();
        let end = loop {
            tokio::select! {
                permit = drop_reports.reserve(), if self.events.unreported_drops > 0 => {
                    if let Ok(permit) = permit {
                        permit.send(ClientEvent::EventsDropped { count: self.events.unreported_drops });
                    }
                    self.events.unreported_drops = 0;
                }
                frame = transport.next() => match frame {
                    None => break SessionEnd::Lost("peer closed the connection".into()),
                    Some(Err(e)) => break SessionEnd::Lost(format!("read error: {e}")),
                    Some(Ok(Frame::Message(m))) => {
                        if let Some((id, _)) = &awaiting_ping {
                            if m.action_id() == Some(id.as_str()) {
                                awaiting_ping = None;
                                continue;
                            }
                        }
                        self.route(m, &mut pending);
                    }
                    Some(Ok(Frame::Skipped { offset, bytes, reason })) => {
                        self.events.stats.skipped_frames.fetch_add(1, Ordering::Relaxed);
                        warn!(offset, bytes, %reason, "AMI input skipped");
                    }
                    Some(Ok(Frame::Banner(_))) => {}
                },
                cmd = self.commands.recv() => match cmd {
                    None => break SessionEnd::Shutdown(None),
                    Some(Command::Shutdown { done }) => break SessionEnd::Shutdown(Some(done)),
                    Some(Command::Action { mut msg, list, reply }) => {
                        let id = self.new_action_id();
                        msg.set("ActionID", id.clone());
                        if let Err(e) = send(transport, &msg, &self.config).await {
                            let _ = reply.send(Err(Error::Disconnected { reason: e.to_string() }));
                            break SessionEnd::Lost(format!("write failed: {e}"));
                        }
                        pending.retain(|_, p| !p.reply.is_closed());
                        pending.insert(id, Pending { name: action_name(&msg), list, reply, collected: None });
                    }
                },
                _ = ping.tick() => {
                    if let Some((_, sent)) = &awaiting_ping {
                        if sent.elapsed() >= self.config.ping_timeout {
                            break SessionEnd::Lost(format!(
                                "no answer to Ping within {:?} (half-open connection)",
                                self.config.ping_timeout
                            ));
                        }
                        continue;
                    }
                    let id = self.new_action_id();
                    let msg = Message::action("Ping").with("ActionID", id.clone());
                    if let Err(e) = send(transport, &msg, &self.config).await {
                        break SessionEnd::Lost(format!("write failed: {e}"));
                    }
                    awaiting_ping = Some((id, Instant::now()));
                    // Check again when the timeout would expire rather than a whole interval later.
                    ping.reset_after(self.config.ping_timeout.min(self.config.ping_interval));
                }
            }
        };
        let reason = match &end {
            SessionEnd::Lost(r) => r.clone(),
            SessionEnd::Shutdown(_) => "shut down".to_owned(),
        };
        for (_, p) in pending.drain() {
            let _ = p.reply.send(Err(Error::Disconnected { reason: reason.clone() }));
        }
        if matches!(end, SessionEnd::Shutdown(_)) {
            let logoff = Message::action("Logoff").with("ActionID", "logoff");
            if send(transport, &logoff, &self.config).await.is_ok() {
                // Wait briefly for `Response: Goodbye` so Asterisk logs a clean logoff.
                let _ = timeout(Duration::from_millis(500), async {
                    while let Some(Ok(frame)) = transport.next().await {
                        if matches!(&frame, Frame::Message(m) if m.action_id() == Some("logoff")) {
                            break;
                        }
                    }
                })
                .await;
            }
        }
        end
    }

    fn new_action_id(&mut self) -> String {
        self.next_action_id += 1;
        format!("ringlink-{}", self.next_action_id)
    }

    fn route(&mut self, msg: Message, pending: &mut HashMap<String, Pending>) {
        let id = msg.action_id().map(str::to_owned);
        match msg.kind() {
            MessageKind::Response(_) => {
                let Some(id) = id else {
                    debug!(?msg, "AMI response without ActionID ignored");
                    return;
                };
                let Some(mut p) = pending.remove(&id) else {
                    debug!(%id, "AMI response to an unknown or abandoned action");
                    return;
                };
                let list_starts = msg.get("EventList").is_some_and(|v| v.eq_ignore_ascii_case("start"));
                if p.list && list_starts && msg.is_success() {
                    p.collected = Some(ListResponse {
                        response: msg,
                        items: Vec::new(),
                        complete: None,
                    });
                    pending.insert(id, p);
                } else if p.list && !msg.is_success() {
                    let message = msg.get("Message").unwrap_or("no message").to_owned();
                    let _ = p.reply.send(Err(Error::ActionFailed {
                        action: p.name,
                        message,
                    }));
                } else {
                    let _ = p.reply.send(Ok(ActionReply::Single(msg)));
                }
            }
            MessageKind::Event(_) => {
                self.events.stats.events_received.fetch_add(1, Ordering::Relaxed);
                if let Some(id) = &id {
                    if let Some(p) = pending.get_mut(id) {
                        if let Some(list) = p.collected.as_mut() {
                            let complete = msg.get("EventList").is_some_and(|v| {
                                v.eq_ignore_ascii_case("Complete") || v.eq_ignore_ascii_case("cancelled")
                            });
                            if complete {
                                list.complete = Some(msg);
                                if let Some(p) = pending.remove(id) {
                                    if let Some(list) = p.collected {
                                        let _ = p.reply.send(Ok(ActionReply::List(list)));
                                    }
                                }
                            } else {
                                list.items.push(msg);
                            }
                            return;
                        }
                    }
                }
                self.events.deliver(ClientEvent::Event(msg));
            }
            MessageKind::Action(_) | MessageKind::Other => {
                debug!(?msg, "unexpected AMI message ignored");
            }
        }
    }
}
