//! [`TestBed`]: a running PBX with its phones and carrier, and the vocabulary
//! tests use to play calls on it.

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::ami_client::{self, AmiResponse};
use crate::error::{io, Error, Result};
use crate::instance::{self, Instance};
use crate::layout;
use crate::process::Reaper;
use crate::sipp::{Outcome, SippProcess, SippSpec};
use crate::slot::{self, SIP_PORT};
use crate::template;

/// The extensions of the office's desk phones.
pub const PHONES: [u16; 5] = [101, 102, 103, 104, 105];
/// The number clients call (the carrier brings it to context from-trunk).
pub const DID: &str = instance::DID;
/// The client of the scenarios.
pub const CLIENT: &str = "+79001234567";

/// Dialplan globals as extensions.conf sets them.
const DEFAULT_GLOBALS: [(&str, &str); 4] = [
    ("INCOMING_ROUTE", "did-ext,101"),
    ("DIAL_TIMEOUT", "15"),
    ("QUEUE_MAX_WAIT", "40"),
    ("OUTBOUND_TIMEOUT", "30"),
];

/// Long enough to mean "until the other side acts" in a test.
const FOREVER: Duration = Duration::from_secs(3600);
const POLL: Duration = Duration::from_millis(100);

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a call to the DID goes (dialplan global `INCOMING_ROUTE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Straight to one phone (`Dial(PJSIP/<ext>)`).
    Extension(u16),
    /// Queue `sales`: 101, 102, 103 ring all at once.
    QueueRingAll,
    /// Queue `support`: 101, then 102, then 103, each for 4 s.
    QueueLinear,
    /// FreePBX-style queue `400` (members `Local/<ext>@from-queue/n`), ringall.
    FreePbxQueueRingAll,
    /// FreePBX-style queue `401`, one by one.
    FreePbxQueueLinear,
    /// IVR: greeting, then 1 = 101, 2 or timeout = sales queue.
    Ivr,
    /// FreePBX-style follow-me: the phone and, through the carrier, the mobile `FOLLOWME_NUMBER` at once.
    FollowMe(u16),
}

impl Route {
    fn dialplan_target(self) -> String {
        match self {
            Route::Extension(ext) => format!("did-ext,{ext}"),
            Route::QueueRingAll => "did-queue,sales".into(),
            Route::QueueLinear => "did-queue,support".into(),
            Route::FreePbxQueueRingAll => "did-queue,400".into(),
            Route::FreePbxQueueLinear => "did-queue,401".into(),
            Route::Ivr => "did-ivr,s".into(),
            Route::FollowMe(ext) => format!("did-followme,{ext}"),
        }
    }
}

/// One row of `core show channels concise`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    pub name: String,
    pub context: String,
    pub exten: String,
    pub state: String,
    pub application: String,
    pub data: String,
    pub caller_id: String,
    pub duration_secs: u64,
    pub bridge_id: String,
    pub uniqueid: String,
}

impl ChannelInfo {
    fn parse(line: &str) -> Option<ChannelInfo> {
        let f: Vec<&str> = line.split('!').collect();
        if f.len() < 14 {
            return None;
        }
        Some(ChannelInfo {
            name: f[0].to_owned(),
            context: f[1].to_owned(),
            exten: f[2].to_owned(),
            state: f[4].to_owned(),
            application: f[5].to_owned(),
            data: f[6].to_owned(),
            caller_id: f[7].to_owned(),
            duration_secs: f[11].parse().unwrap_or(0),
            bridge_id: f[12].to_owned(),
            uniqueid: f[13].to_owned(),
        })
    }

    /// `PJSIP/101-0000002a` belongs to endpoint 101.
    pub fn is_endpoint(&self, endpoint: &str) -> bool {
        self.name
            .strip_prefix("PJSIP/")
            .and_then(|rest| rest.rsplit_once('-'))
            .is_some_and(|(ep, _)| ep == endpoint)
    }

    pub fn is_up(&self) -> bool {
        self.state == "Up"
    }

    pub fn is_bridged(&self) -> bool {
        !self.bridge_id.is_empty() && self.bridge_id != "(None)"
    }
}

/// The CEL table `cel_pgsql` writes to, as Asterisk's schema scripts create it (`eventtime` in the PBX's local
/// time, without a zone), for tests that stand in for a PBX writing its CEL to PostgreSQL.
pub const CEL_PGSQL_TABLE: &str = "CREATE TABLE cel (
    id serial PRIMARY KEY,
    eventtype varchar(30) NOT NULL,
    eventtime timestamp NOT NULL,
    userdeftype varchar(255) NOT NULL,
    cid_name varchar(80) NOT NULL,
    cid_num varchar(80) NOT NULL,
    cid_ani varchar(80) NOT NULL,
    cid_rdnis varchar(80) NOT NULL,
    cid_dnid varchar(80) NOT NULL,
    exten varchar(80) NOT NULL,
    context varchar(80) NOT NULL,
    channame varchar(80) NOT NULL,
    appname varchar(80) NOT NULL,
    appdata varchar(80) NOT NULL,
    amaflags integer NOT NULL,
    accountcode varchar(20) NOT NULL,
    peeraccount varchar(20) NOT NULL,
    uniqueid varchar(150) NOT NULL,
    linkedid varchar(150) NOT NULL,
    userfield varchar(255) NOT NULL,
    peer varchar(80) NOT NULL,
    extra varchar(512)
)";

/// A real Asterisk 22 with five desk phones and a carrier trunk, all SIPp on loopback.
pub struct TestBed {
    instance: Instance,
    reaper: Reaper,
    phones: Mutex<HashMap<u16, SippProcess>>,
    carrier: Mutex<Option<SippProcess>>,
    sequence: AtomicU32,
    startup: Duration,
}

impl TestBed {
    /// Builds the chroot if needed, renders a fresh configuration and starts
    /// Asterisk; returns once AMI answers and Asterisk is fully booted.
    pub async fn start() -> Result<TestBed> {
        let started = Instant::now();
        let layout = layout::prepare().await?;
        let slot = slot::claim()?;
        let reaper = Reaper::default();
        let instance = match Instance::start(layout, slot, &reaper).await {
            Ok(instance) => instance,
            Err(e) => {
                reaper.kill_all();
                return Err(e);
            }
        };
        Ok(TestBed {
            instance,
            reaper,
            phones: Mutex::new(HashMap::new()),
            carrier: Mutex::new(None),
            sequence: AtomicU32::new(0),
            startup: started.elapsed(),
        })
    }

    /// How long [`TestBed::start`] took.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    pub fn slot(&self) -> u8 {
        self.instance.slot.number
    }

    pub fn ami_addr(&self) -> SocketAddr {
        self.instance.ami_addr()
    }
    pub fn ami_user(&self) -> &str {
        instance::AMI_USER
    }
    pub fn ami_secret(&self) -> &str {
        instance::AMI_SECRET
    }
    /// A second AMI account, for plain and MD5-challenge login tests.
    pub fn md5_user(&self) -> &str {
        instance::MD5_USER
    }
    pub fn md5_secret(&self) -> &str {
        instance::MD5_SECRET
    }
    pub fn did(&self) -> &str {
        DID
    }
    /// The PBX's SIP address (UDP).
    pub fn sip_addr(&self) -> SocketAddr {
        self.instance.sip_addr()
    }
    pub fn carrier_ip(&self) -> Ipv4Addr {
        self.instance.slot.carrier_ip()
    }
    pub fn phone_ip(&self, ext: u16) -> Result<Ipv4Addr> {
        check_phone(ext)?;
        Ok(self.instance.slot.phone_ip(ext))
    }

    /// Host directory where MixMonitor writes (`YYYY/MM/DD/<name>.wav` below it).
    pub fn recordings_dir(&self) -> PathBuf {
        self.instance.dir_host.join("spool/monitor")
    }

    /// The recordings directory as Asterisk names it (what `MIXMONITOR_FILENAME` starts with).
    pub fn recordings_dir_in_asterisk(&self) -> String {
        format!("{}/spool/monitor", self.instance.dir_inside)
    }

    /// Host path of a path Asterisk reports (e.g. a `MIXMONITOR_FILENAME` value).
    pub fn host_path(&self, asterisk_path: &str) -> PathBuf {
        self.instance.layout.host_path(asterisk_path)
    }

    /// Host path of the SQLite database `cel_sqlite3_custom` writes the PBX's CEL to (table `cel`, with the
    /// database backends' column names).
    pub fn cel_sqlite_path(&self) -> PathBuf {
        self.instance.dir_host.join("log/master.db")
    }

    /// Lets this Asterisk write its CEL to PostgreSQL through `cel_pgsql`, as a PBX set up for ringlink's CEL
    /// recovery would: creates the database `asterisk` on `server` with the table `cel_pgsql` writes
    /// ([`CEL_PGSQL_TABLE`]), writes `cel_pgsql.conf` pointing at it, loads the module (the bed's `modules.conf`
    /// leaves it out) and checks that it runs. `cel.conf` already enables every event. Returns the database's
    /// URL (as ringlink's `[cel] url`). Event times are the PBX's local time (UTC in the bed) with microseconds.
    pub async fn enable_cel_pgsql(&self, server: &crate::postgres::Postgres) -> Result<String> {
        let url = server.create_database("asterisk")?;
        server.psql("asterisk", CEL_PGSQL_TABLE)?;
        let conf = format!(
            "; Written by the test bed: CEL rows into the throwaway PostgreSQL server.\n\
             [global]\n\
             hostname = 127.0.0.1\n\
             port = {port}\n\
             dbname = asterisk\n\
             user = {user}\n\
             password =\n\
             appname = asterisk-cel\n\
             table = cel\n\
             usegmtime = no\n",
            port = server.port(),
            user = crate::postgres::SUPERUSER,
        );
        let path = self.instance.dir_host.join("etc/cel_pgsql.conf");
        std::fs::write(&path, conf).map_err(io(format!("writing {}", path.display())))?;
        if let Some((uid, gid)) = self.instance.layout.run_as {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(io(format!("chown {}", path.display())))?;
        }
        self.asterisk_cli("module load cel_pgsql.so").await?;
        let shown = self.asterisk_cli("module show like cel_pgsql").await?;
        if !shown
            .lines()
            .any(|l| l.contains("cel_pgsql.so") && l.contains("Running"))
        {
            return Err(Error::Cli {
                command: "module show like cel_pgsql".into(),
                message: format!("cel_pgsql.so is not running: {}", shown.trim()),
            });
        }
        Ok(url)
    }

    /// Makes Asterisk write its CEL the way FreePBX does: `cel_odbc` through `res_odbc` and the MariaDB ODBC
    /// driver into `asteriskcdrdb.cel` (FreePBX's table, which must exist) on `server`, over TCP. The driver and
    /// DSN files are this instance's own (`ODBCSYSINI`/`ODBCINI`); fails unless `cel_odbc` runs.
    pub async fn enable_cel_odbc(&self, server: &crate::mariadb::MariaDb) -> Result<()> {
        let driver = ["usr/lib/x86_64-linux-gnu", "usr/lib/aarch64-linux-gnu", "usr/lib"]
            .iter()
            .map(|dir| format!("/{dir}/odbc/libmaodbc.so"))
            .find(|inside| self.instance.layout.host_path(inside).exists())
            .ok_or_else(|| Error::Cli {
                command: "enable_cel_odbc".into(),
                message: "no MariaDB ODBC driver (libmaodbc.so) in the test bed: build the chroot with odbc-mariadb"
                    .into(),
            })?;
        let files = [
            (
                "odbcinst.ini",
                format!("[MariaDB]\nDescription = MariaDB Connector/ODBC\nDriver = {driver}\n"),
            ),
            (
                "odbc.ini",
                format!(
                    "[asteriskcdrdb]\nDriver = MariaDB\nServer = 127.0.0.1\nPort = {port}\nDatabase = {db}\n",
                    port = server.port(),
                    db = server.database(),
                ),
            ),
            (
                "res_odbc.conf",
                format!(
                    "; Written by the test bed: FreePBX's CDR database on the throwaway MariaDB server.\n\
                     [asteriskcdrdb]\n\
                     enabled => yes\n\
                     dsn => asteriskcdrdb\n\
                     username => {user}\n\
                     password => {password}\n\
                     pre-connect => yes\n",
                    user = server.user(),
                    password = server.password(),
                ),
            ),
            (
                "cel_odbc.conf",
                "; Written by the test bed: CEL rows into FreePBX's asteriskcdrdb.cel.\n\
                 [cel]\n\
                 connection = asteriskcdrdb\n\
                 table = cel\n\
                 usegmtime = no\n"
                    .to_owned(),
            ),
        ];
        for (name, text) in files {
            let path = self.instance.dir_host.join("etc").join(name);
            std::fs::write(&path, text).map_err(io(format!("writing {}", path.display())))?;
            if let Some((uid, gid)) = self.instance.layout.run_as {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .map_err(io(format!("chown {}", path.display())))?;
            }
        }
        // res_odbc and res_odbc_transaction need each other, so both are known from the start (res_odbc declines
        // without res_odbc.conf) and res_odbc loads now; cel_odbc (noload) comes after.
        self.asterisk_cli("module load res_odbc.so").await?;
        self.asterisk_cli("module load cel_odbc.so").await?;
        for module in ["res_odbc", "cel_odbc"] {
            let shown = self.asterisk_cli(&format!("module show like {module}")).await?;
            if !shown
                .lines()
                .any(|l| l.contains(&format!("{module}.so")) && l.contains("Running") && !l.contains("Not Running"))
            {
                return Err(Error::Cli {
                    command: format!("module show like {module}"),
                    message: format!("{module}.so is not running: {}", shown.trim()),
                });
            }
        }
        Ok(())
    }

    /// Host directory of this instance (config, logs, SIPp files).
    pub fn instance_dir(&self) -> PathBuf {
        self.instance.dir_host.clone()
    }

    /// Every recording file written so far.
    pub fn recordings(&self) -> Vec<PathBuf> {
        fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for entry in entries.flatten() {
                    let path = entry.path();
                    if path.is_dir() {
                        walk(&path, out);
                    } else {
                        out.push(path);
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.recordings_dir(), &mut out);
        out.sort();
        out
    }

    /// Runs a CLI command (`asterisk -rx`) on this instance.
    pub async fn asterisk_cli(&self, command: &str) -> Result<String> {
        self.instance.cli(command).await
    }

    /// Runs one AMI action as the ringlink user; `Response: Error` is an error.
    pub async fn ami_action(&self, action: &str, headers: &[(&str, &str)]) -> Result<AmiResponse> {
        let response = ami_client::action(self.ami_addr(), self.ami_user(), self.ami_secret(), action, headers).await?;
        if !response.is_success() {
            return Err(Error::Ami {
                action: action.to_owned(),
                message: response.get("Message").unwrap_or("Response: Error").to_owned(),
            });
        }
        Ok(response)
    }

    /// Turns the `Timestamp` header of AMI events on or off (manager.conf `timestampevents`), as on a PBX
    /// configured without it; sessions already connected see the change at once.
    pub async fn set_timestamp_events(&self, on: bool) -> Result<()> {
        let path = self.instance.dir_host.join("etc/manager.conf");
        let text = std::fs::read_to_string(&path).map_err(io(format!("reading {}", path.display())))?;
        let wanted = if on {
            "timestampevents = yes"
        } else {
            "timestampevents = no"
        };
        let text = text
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("timestampevents") {
                    wanted
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&path, text + "\n").map_err(io(format!("writing {}", path.display())))?;
        self.asterisk_cli("manager reload").await?;
        Ok(())
    }

    /// Sets a dialplan global (e.g. `DIAL_TIMEOUT`, `OUTBOUND_TIMEOUT`).
    pub async fn set_global(&self, name: &str, value: &str) -> Result<()> {
        self.asterisk_cli(&format!("dialplan set global {name} {value}"))
            .await?;
        Ok(())
    }

    /// Chooses where the next calls to the DID go.
    pub async fn route_incoming(&self, route: Route) -> Result<()> {
        if let Route::Extension(ext) | Route::FollowMe(ext) = route {
            check_phone(ext)?;
        }
        self.set_global("INCOMING_ROUTE", &route.dialplan_target()).await
    }

    // ---------- phones and carrier ----------

    /// Sets up a desk phone; `.await` registers it and starts answering.
    pub fn phone(&self, ext: u16) -> PhoneSetup<'_> {
        PhoneSetup {
            bed: self,
            ext,
            answer: Answering::default(),
        }
    }

    /// Sets up the carrier's far end, which answers calls going out over the trunk.
    pub fn carrier(&self) -> CarrierSetup<'_> {
        CarrierSetup {
            bed: self,
            answer: Answering::default(),
        }
    }

    /// Takes a phone offline: stops it and removes its registration.
    pub async fn unregister(&self, ext: u16) -> Result<()> {
        check_phone(ext)?;
        let old = lock(&self.phones).remove(&ext);
        if let Some(old) = old {
            old.stop().await;
        }
        self.register(ext, 0).await
    }

    /// What a phone's SIPp has logged so far (ringing, answered, ...).
    pub fn phone_outcomes(&self, ext: u16) -> Vec<Outcome> {
        lock(&self.phones).get(&ext).map(|p| p.outcomes()).unwrap_or_default()
    }

    /// What the carrier's far end has logged so far.
    pub fn carrier_outcomes(&self) -> Vec<Outcome> {
        lock(&self.carrier).as_ref().map(|p| p.outcomes()).unwrap_or_default()
    }

    /// A client calls the DID through the carrier (`.to()` for another number).
    pub fn incoming(&self, from: &str) -> CallSetup<'_> {
        CallSetup {
            bed: self,
            source: CallSource::Carrier,
            from_user: from.to_owned(),
            from_name: String::new(),
            to: DID.to_owned(),
            cancel_after: FOREVER,
            talk: FOREVER,
        }
    }

    /// A desk phone dials `number` (an extension, `9<number>`, a full number, `*8`, `**101`, `701`...).
    pub fn dial(&self, ext: u16, number: &str) -> CallSetup<'_> {
        CallSetup {
            bed: self,
            source: CallSource::Phone(ext),
            from_user: ext.to_string(),
            from_name: String::new(),
            to: number.to_owned(),
            cancel_after: FOREVER,
            talk: FOREVER,
        }
    }

    async fn register(&self, ext: u16, expires: u32) -> Result<()> {
        let ip = self.phone_ip(ext)?;
        let xml = template::render(
            "register.xml",
            template::SIPP_REGISTER,
            &[
                ("EXT", ext.to_string()),
                ("CONTACT", format!("{ip}:{SIP_PORT}")),
                ("EXPIRES", expires.to_string()),
            ],
        )?;
        let n = self.next();
        let mut process = SippProcess::spawn(
            SippSpec {
                name: format!("register-{ext}-{n}"),
                xml,
                local: (ip, 5061),
                media_port: 6100,
                remote: self.sip_addr(),
                max_calls: Some(1),
                work_dir: &self.instance.dir_host.join("sipp"),
            },
            &self.reaper,
        )?;
        process.wait(Duration::from_secs(10)).await?;
        Ok(())
    }

    fn answering_process(&self, name: String, user: &str, ip: Ipv4Addr, answer: &Answering) -> Result<SippProcess> {
        let xml = answer.scenario(user, &self.tone_path())?;
        SippProcess::spawn(
            SippSpec {
                name,
                xml,
                local: (ip, SIP_PORT),
                media_port: 6000,
                remote: self.sip_addr(),
                max_calls: None,
                work_dir: &self.instance.dir_host.join("sipp"),
            },
            &self.reaper,
        )
    }

    /// The tone SIPp streams while talking (written at instance start).
    fn tone_path(&self) -> String {
        self.instance
            .dir_host
            .join("sipp/tone.wav")
            .to_string_lossy()
            .into_owned()
    }

    fn next(&self) -> u32 {
        self.sequence.fetch_add(1, Ordering::Relaxed)
    }

    // ---------- looking at the PBX ----------

    /// Current channels (`core show channels concise`).
    pub async fn channels(&self) -> Result<Vec<ChannelInfo>> {
        let out = self.asterisk_cli("core show channels concise").await?;
        Ok(out.lines().filter_map(ChannelInfo::parse).collect())
    }

    /// Polls the channel list until `pick` finds one.
    pub async fn wait_for_channel<F>(&self, what: &str, timeout: Duration, mut pick: F) -> Result<ChannelInfo>
    where
        F: FnMut(&ChannelInfo) -> bool,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = self.channels().await?.into_iter().find(&mut pick) {
                return Ok(found);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: what.to_owned(),
                    after: timeout,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until a phone's channel is answered and bridged (in a conversation).
    pub async fn wait_phone_talking(&self, ext: u16, timeout: Duration) -> Result<ChannelInfo> {
        let endpoint = ext.to_string();
        self.wait_for_channel(&format!("phone {ext} talking"), timeout, |c| {
            c.is_endpoint(&endpoint) && c.is_up() && c.is_bridged()
        })
        .await
    }

    /// Waits until a phone's channel exists and is ringing.
    pub async fn wait_phone_ringing(&self, ext: u16, timeout: Duration) -> Result<ChannelInfo> {
        let endpoint = ext.to_string();
        self.wait_for_channel(&format!("phone {ext} ringing"), timeout, |c| {
            c.is_endpoint(&endpoint) && c.state == "Ringing"
        })
        .await
    }

    /// Waits until the carrier's (client's) channel is answered and bridged.
    pub async fn wait_client_talking(&self, timeout: Duration) -> Result<ChannelInfo> {
        self.wait_for_channel("client talking", timeout, |c| {
            c.is_endpoint("carrier") && c.is_up() && c.is_bridged()
        })
        .await
    }

    /// Waits until Asterisk has no channel left.
    pub async fn wait_all_channels_gone(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let channels = self.channels().await?;
            if channels.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let names: Vec<String> = channels.into_iter().map(|c| c.name).collect();
                return Err(Error::Timeout {
                    what: format!("all channels to be gone (left: {})", names.join(", ")),
                    after: timeout,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    // ---------- call control over AMI ----------

    /// Blind transfer: the party talking with `channel` is sent to `exten` (from-internal).
    pub async fn blind_transfer(&self, channel: &str, exten: &str) -> Result<AmiResponse> {
        self.ami_action(
            "BlindTransfer",
            &[("Channel", channel), ("Exten", exten), ("Context", "from-internal")],
        )
        .await
    }

    /// Attended transfer: `channel` consults `exten`; hang `channel` up to complete it.
    pub async fn attended_transfer(&self, channel: &str, exten: &str) -> Result<AmiResponse> {
        self.ami_action(
            "Atxfer",
            &[("Channel", channel), ("Exten", exten), ("Context", "from-internal")],
        )
        .await
    }

    /// Parks `channel`; `timeout_channel` is dialled back if nobody retrieves it.
    pub async fn park(&self, channel: &str, timeout_channel: &str) -> Result<AmiResponse> {
        self.ami_action("Park", &[("Channel", channel), ("TimeoutChannel", timeout_channel)])
            .await
    }

    /// Sends `channel` to `exten@context`.
    pub async fn redirect(&self, channel: &str, exten: &str, context: &str) -> Result<AmiResponse> {
        self.ami_action(
            "Redirect",
            &[
                ("Channel", channel),
                ("Exten", exten),
                ("Context", context),
                ("Priority", "1"),
            ],
        )
        .await
    }

    /// Click-to-call: rings phone `ext` first, then dials `number` from it.
    pub async fn originate(&self, ext: u16, number: &str) -> Result<AmiResponse> {
        check_phone(ext)?;
        self.originate_from(&format!("PJSIP/{ext}"), &ext.to_string(), number)
            .await
    }

    /// Click-to-call as FreePBX places it: `Originate` of `Local/<ext>@from-internal` (the Local pair rings the
    /// phone first), then the `;1` half dials `number` in `from-internal`.
    pub async fn originate_via_local(&self, ext: u16, number: &str) -> Result<AmiResponse> {
        check_phone(ext)?;
        self.originate_from(&format!("Local/{ext}@from-internal"), number, number)
            .await
    }

    async fn originate_from(&self, channel: &str, caller_id: &str, number: &str) -> Result<AmiResponse> {
        self.ami_action(
            "Originate",
            &[
                ("Channel", channel),
                ("Context", "from-internal"),
                ("Exten", number),
                ("Priority", "1"),
                ("CallerID", caller_id),
                ("Async", "true"),
            ],
        )
        .await
    }

    /// Hangs a channel up from the PBX side.
    pub async fn hangup(&self, channel: &str) -> Result<AmiResponse> {
        self.ami_action("Hangup", &[("Channel", channel)]).await
    }

    /// Parking spaces in use: (space, parked channel).
    pub async fn parked_calls(&self) -> Result<Vec<(String, String)>> {
        let out = self.asterisk_cli("parking show default").await?;
        let mut result = Vec::new();
        let mut space = None;
        for line in out.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            match key.trim() {
                "Space" => space = Some(value.trim().to_owned()),
                "Channel" => {
                    if let Some(s) = space.take() {
                        result.push((s, value.trim().to_owned()));
                    }
                }
                _ => {}
            }
        }
        Ok(result)
    }

    /// Back to a quiet office: phones unregistered, carrier gone, default
    /// routing and timeouts. Calls still up are hung up first.
    pub async fn reset(&self) -> Result<()> {
        for channel in self.channels().await? {
            let _ = self
                .asterisk_cli(&format!("channel request hangup {}", channel.name))
                .await;
        }
        self.wait_all_channels_gone(Duration::from_secs(10)).await?;
        let phones: Vec<(u16, SippProcess)> = lock(&self.phones).drain().collect();
        for (ext, phone) in phones {
            phone.stop().await;
            self.register(ext, 0).await?;
        }
        let carrier = lock(&self.carrier).take();
        if let Some(carrier) = carrier {
            carrier.stop().await;
        }
        for (name, value) in DEFAULT_GLOBALS {
            self.set_global(name, value).await?;
        }
        Ok(())
    }

    /// Stops every phone, the carrier and Asterisk.
    pub async fn stop(mut self) -> Result<()> {
        let phones: Vec<SippProcess> = lock(&self.phones).drain().map(|(_, p)| p).collect();
        for phone in phones {
            phone.stop().await;
        }
        let carrier = lock(&self.carrier).take();
        if let Some(carrier) = carrier {
            carrier.stop().await;
        }
        self.instance.stop(&self.reaper).await;
        self.reaper.kill_all();
        Ok(())
    }
}

impl Drop for TestBed {
    fn drop(&mut self) {
        self.reaper.kill_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn check_phone(ext: u16) -> Result<()> {
    if PHONES.contains(&ext) {
        Ok(())
    } else {
        Err(Error::UnknownPhone(ext))
    }
}

fn millis(d: Duration) -> String {
    // SIPp treats a timeout of 0 as "none".
    d.as_millis().clamp(1, u128::from(u32::MAX)).to_string()
}

/// How the answering side (a phone or the carrier's far end) treats calls.
#[derive(Debug, Clone)]
struct Answering {
    ring: Duration,
    /// None = answer; Some = reply with this final status.
    reject: Option<(u16, &'static str)>,
    answer: bool,
    talk: Duration,
}

impl Default for Answering {
    fn default() -> Self {
        Answering {
            ring: Duration::from_secs(1),
            reject: None,
            answer: true,
            talk: FOREVER,
        }
    }
}

impl Answering {
    fn scenario(&self, user: &str, audio: &str) -> Result<String> {
        if let Some((code, reason)) = self.reject {
            template::render(
                "uas-reject.xml",
                template::SIPP_UAS_REJECT,
                &[
                    ("USER", user.to_owned()),
                    ("RING_MS", millis(self.ring)),
                    ("CODE", code.to_string()),
                    ("REASON", reason.to_owned()),
                ],
            )
        } else {
            let ring = if self.answer { self.ring } else { FOREVER };
            template::render(
                "uas-answer.xml",
                template::SIPP_UAS_ANSWER,
                &[
                    ("USER", user.to_owned()),
                    ("RING_MS", millis(ring)),
                    ("TALK_MS", millis(self.talk)),
                    ("AUDIO", audio.to_owned()),
                ],
            )
        }
    }
}

macro_rules! answering_methods {
    () => {
        /// Rings this long, then answers.
        pub fn answer_after(mut self, ring: Duration) -> Self {
            self.answer.ring = ring;
            self.answer.answer = true;
            self.answer.reject = None;
            self
        }
        /// Rings until the caller gives up.
        pub fn no_answer(mut self) -> Self {
            self.answer.answer = false;
            self.answer.reject = None;
            self
        }
        /// Answers 486 Busy Here (after `ring_for`, default at once).
        pub fn busy(self) -> Self {
            self.reject(486, "Busy Here")
        }
        /// Answers 603 Decline.
        pub fn decline(self) -> Self {
            self.reject(603, "Decline")
        }
        /// Answers with any final status.
        pub fn reject(mut self, code: u16, reason: &'static str) -> Self {
            self.answer.reject = Some((code, reason));
            if self.answer.ring == Duration::from_secs(1) {
                self.answer.ring = Duration::from_millis(1);
            }
            self
        }
        /// Rings this long before a busy/decline/reject answer.
        pub fn ring_for(mut self, ring: Duration) -> Self {
            self.answer.ring = ring;
            self
        }
        /// After answering, hangs up itself after `talk` (default: holds until the PBX hangs up).
        pub fn talk(mut self, talk: Duration) -> Self {
            self.answer.talk = talk;
            self
        }
    };
}

/// A desk phone's behaviour; `.await` registers it and starts it.
pub struct PhoneSetup<'a> {
    bed: &'a TestBed,
    ext: u16,
    answer: Answering,
}

impl PhoneSetup<'_> {
    answering_methods!();
}

impl<'a> IntoFuture for PhoneSetup<'a> {
    type Output = Result<()>;
    type IntoFuture = BoxFuture<'a, Result<()>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let bed = self.bed;
            let ip = bed.phone_ip(self.ext)?;
            let old = lock(&bed.phones).remove(&self.ext);
            if let Some(old) = old {
                old.stop().await;
            }
            let n = bed.next();
            let process = bed.answering_process(
                format!("phone-{}-{n}", self.ext),
                &self.ext.to_string(),
                ip,
                &self.answer,
            )?;
            lock(&bed.phones).insert(self.ext, process);
            bed.register(self.ext, 3600).await
        })
    }
}

/// The carrier's far end for outgoing calls; `.await` starts it.
pub struct CarrierSetup<'a> {
    bed: &'a TestBed,
    answer: Answering,
}

impl CarrierSetup<'_> {
    answering_methods!();
}

impl<'a> IntoFuture for CarrierSetup<'a> {
    type Output = Result<()>;
    type IntoFuture = BoxFuture<'a, Result<()>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let bed = self.bed;
            let old = lock(&bed.carrier).take();
            if let Some(old) = old {
                old.stop().await;
            }
            let n = bed.next();
            let process = bed.answering_process(format!("carrier-{n}"), "carrier", bed.carrier_ip(), &self.answer)?;
            *lock(&bed.carrier) = Some(process);
            Ok(())
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum CallSource {
    Carrier,
    Phone(u16),
}

/// A call to place; `.await` starts it and returns the running [`Call`].
pub struct CallSetup<'a> {
    bed: &'a TestBed,
    source: CallSource,
    from_user: String,
    from_name: String,
    to: String,
    cancel_after: Duration,
    talk: Duration,
}

impl CallSetup<'_> {
    /// Number to call (default: the DID for incoming calls).
    pub fn to(mut self, number: &str) -> Self {
        self.to = number.to_owned();
        self
    }
    /// Caller name shown (SIP display name).
    pub fn name(mut self, name: &str) -> Self {
        self.from_name = name.to_owned();
        self
    }
    /// Hangs up (CANCEL) if not answered within `after`.
    pub fn cancel_after(mut self, after: Duration) -> Self {
        self.cancel_after = after;
        self
    }
    /// Once answered, hangs up after `talk` (default: holds until the PBX hangs up).
    pub fn talk(mut self, talk: Duration) -> Self {
        self.talk = talk;
        self
    }
}

impl<'a> IntoFuture for CallSetup<'a> {
    type Output = Result<Call>;
    type IntoFuture = BoxFuture<'a, Result<Call>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let bed = self.bed;
            let ip = match self.source {
                CallSource::Carrier => bed.carrier_ip(),
                CallSource::Phone(ext) => bed.phone_ip(ext)?,
            };
            let xml = template::render(
                "uac.xml",
                template::SIPP_UAC,
                &[
                    ("TO", self.to.clone()),
                    ("FROM_USER", self.from_user.clone()),
                    ("FROM_NAME", self.from_name.clone()),
                    ("CANCEL_MS", millis(self.cancel_after)),
                    ("TALK_MS", millis(self.talk)),
                    ("AUDIO", bed.tone_path()),
                ],
            )?;
            let n = bed.next();
            // A port of its own per call, so calls from one address can overlap.
            let slot = (n % 400) as u16;
            let process = SippProcess::spawn(
                SippSpec {
                    name: format!("call-{}-{}-{n}", self.from_user.trim_start_matches('+'), self.to),
                    xml,
                    local: (ip, 5100 + slot),
                    media_port: 7000 + slot * 4,
                    remote: bed.sip_addr(),
                    max_calls: Some(1),
                    work_dir: &bed.instance.dir_host.join("sipp"),
                },
                &bed.reaper,
            )?;
            Ok(Call { process })
        })
    }
}

/// A call placed by a SIPp caller (the client via the carrier, or a phone).
#[derive(Debug)]
pub struct Call {
    process: SippProcess,
}

impl Call {
    /// Waits until the caller's side of the call is over; returns what it saw.
    pub async fn finished(&mut self, timeout: Duration) -> Result<Vec<Outcome>> {
        self.process.wait(timeout).await
    }

    /// What the caller has seen so far.
    pub fn outcomes(&self) -> Vec<Outcome> {
        self.process.outcomes()
    }
}
