//! A minimal FastAGI server for auto-distribution: `AGI(agi://127.0.0.1:4573/autodistribution,${CALLERID(num)})`
//! in the dialplan sets the channel variable (`RINGLINK_EXTENSION` by default) to the responsible employee's
//! extension, or to the empty string for "no preference".
//!
//! The protocol (Asterisk's `res_agi`): on connect Asterisk sends the AGI environment, `agi_<name>: <value>`
//! lines ending with an empty line; the server then sends commands, one line each, and reads each result line
//! (`200 result=1`; `5xx` errors may span several lines, ending with a `5xx ` line). Closing the connection ends
//! the AGI and the dialplan goes on. The phone is `agi_arg_1` (or else `agi_callerid`), the call
//! `agi_uniqueid`. Only sources in `agi_allow` are served; a connection that does not send its environment in
//! time, or sends too much, is dropped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::autodist::AutoDistributor;
use super::listener::AllowRule;

/// The script name the dialplan asks for (`agi://host:port/autodistribution`).
pub const SCRIPT: &str = "autodistribution";
/// How long Asterisk may take to send its environment, and to acknowledge the command.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many environment lines (Asterisk sends about 25, plus the arguments).
const MAX_LINES: usize = 200;
/// At most this long an environment line.
const MAX_LINE: usize = 4096;

/// Reads one line (without its end); `None` at the end of the stream. A line longer than [`MAX_LINE`] is an
/// error.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    let n = tokio::io::AsyncReadExt::take(&mut *reader, MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if line.len() > MAX_LINE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "AGI line too long",
        ));
    }
    let text = String::from_utf8_lossy(&line);
    Ok(Some(text.trim_end_matches(['\r', '\n']).to_owned()))
}

/// Reads the AGI environment up to its closing empty line.
pub async fn read_environment<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
) -> std::io::Result<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    for _ in 0..MAX_LINES {
        let Some(line) = read_line(reader).await? else {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        };
        if line.is_empty() {
            return Ok(env);
        }
        if let Some((name, value)) = line.split_once(':') {
            env.insert(name.trim().to_owned(), value.trim().to_owned());
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "AGI environment too long",
    ))
}

/// The script part of `agi_network_script` / `agi_request` (`autodistribution?x=1` → `autodistribution`).
fn script(env: &BTreeMap<String, String>) -> String {
    let raw = env
        .get("agi_network_script")
        .cloned()
        .or_else(|| {
            env.get("agi_request")
                .and_then(|r| r.strip_prefix("agi://"))
                .and_then(|r| r.split_once('/'))
                .map(|(_, s)| s.to_owned())
        })
        .unwrap_or_default();
    raw.split(['?', '/']).next().unwrap_or("").to_owned()
}

/// The calling number: the first argument, else the channel's caller ID (`unknown` means none).
fn phone(env: &BTreeMap<String, String>) -> Option<String> {
    [env.get("agi_arg_1"), env.get("agi_callerid")]
        .into_iter()
        .flatten()
        .map(|v| v.trim())
        .find(|v| !v.is_empty() && !v.eq_ignore_ascii_case("unknown"))
        .map(str::to_owned)
}

/// `SET VARIABLE name "value"`, quoted as `res_agi` parses it.
pub fn set_variable(name: &str, value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    format!("SET VARIABLE {name} \"{escaped}\"\n")
}

/// Reads result lines up to the final one (`200 result=1`, or the last line of a `5xx-` block); its code.
async fn read_result<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<u16> {
    loop {
        let Some(line) = read_line(reader).await? else {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        };
        let code = line.get(..3).and_then(|c| c.parse::<u16>().ok());
        match (code, line.as_bytes().get(3)) {
            (Some(code), Some(b' ') | None) => return Ok(code),
            // `HANGUP` (the channel went away) or a `5xx-` continuation line: keep reading.
            _ => continue,
        }
    }
}

async fn session(stream: TcpStream, peer: SocketAddr, autodist: Arc<AutoDistributor>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let env = tokio::time::timeout(IO_TIMEOUT, read_environment(&mut reader))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no AGI environment in time"))??;
    let script = script(&env);
    if script != SCRIPT {
        warn!(%peer, script, "FastAGI: unknown script (only {SCRIPT} is served)");
        return Ok(());
    }
    let call = env.get("agi_uniqueid").map(String::as_str).filter(|c| !c.is_empty());
    let extension = match phone(&env) {
        Some(phone) => autodist.answer(&phone, call).await.extension,
        None => {
            info!(%peer, call = call.unwrap_or(""), "auto-distribution: the call has no calling number: normal route");
            None
        }
    };
    let command = set_variable(autodist.variable(), extension.as_deref().unwrap_or(""));
    write.write_all(command.as_bytes()).await?;
    let code = tokio::time::timeout(IO_TIMEOUT, read_result(&mut reader))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no AGI result in time"))??;
    if code != 200 {
        warn!(%peer, code, "FastAGI: Asterisk refused SET VARIABLE");
    }
    Ok(())
}

/// Serves FastAGI on `bind` until `stop`.
pub async fn serve(
    bind: String,
    allow: Vec<String>,
    autodist: Arc<AutoDistributor>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let addr: SocketAddr = bind
        .parse()
        .map_err(|_| anyhow::anyhow!("autodistribution.agi_bind {bind:?} is not ip:port"))?;
    let allow: Vec<AllowRule> = allow.iter().filter_map(|a| AllowRule::parse(a)).collect();
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (autodistribution.agi_bind): {e}"))?;
    info!(%addr, "FastAGI server up");
    loop {
        let (stream, peer) = tokio::select! {
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "FastAGI: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if !allow.iter().any(|r| r.matches(peer.ip())) {
            warn!(%peer, "FastAGI: source address not in autodistribution.agi_allow, connection closed");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let autodist = autodist.clone();
        tokio::spawn(async move {
            if let Err(e) = session(stream, peer, autodist).await {
                debug!(%peer, error = %e, "FastAGI session ended early");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_asterisks_environment_and_results() {
        let raw = b"agi_network: yes\nagi_network_script: autodistribution\n\
                    agi_request: agi://127.0.0.1:4573/autodistribution\nagi_channel: PJSIP/carrier-00000001\n\
                    agi_uniqueid: 1700000000.1\nagi_callerid: +79001234567\nagi_arg_1: 89001234567\n\n\
                    HANGUP\n520-Invalid command syntax.  Proper usage follows:\nUsage: ...\n520 End of proper usage.\n\
                    200 result=1\n";
        let mut reader = BufReader::new(&raw[..]);
        let env = read_environment(&mut reader).await.expect("environment");
        assert_eq!(script(&env), "autodistribution");
        assert_eq!(env["agi_uniqueid"], "1700000000.1");
        assert_eq!(phone(&env).as_deref(), Some("89001234567"), "the argument first");
        assert_eq!(read_result(&mut reader).await.expect("result"), 520);
        assert_eq!(read_result(&mut reader).await.expect("result"), 200);
        assert!(read_result(&mut reader).await.is_err(), "end of stream");
    }

    #[tokio::test]
    async fn refuses_endless_or_cut_environments() {
        let long = "agi_x: y\n".repeat(MAX_LINES + 1);
        assert!(read_environment(&mut BufReader::new(long.as_bytes())).await.is_err());
        let huge = format!("agi_x: {}\n\n", "y".repeat(MAX_LINE + 10));
        assert!(read_environment(&mut BufReader::new(huge.as_bytes())).await.is_err());
        assert!(read_environment(&mut BufReader::new(&b"agi_x: y\n"[..])).await.is_err());
    }

    #[test]
    fn script_phone_and_command() {
        let mut env = BTreeMap::new();
        env.insert(
            "agi_request".to_owned(),
            "agi://10.0.0.1/autodistribution?x=1".to_owned(),
        );
        assert_eq!(script(&env), "autodistribution");
        env.insert("agi_callerid".to_owned(), "unknown".to_owned());
        assert_eq!(phone(&env), None);
        env.insert("agi_callerid".to_owned(), "+79001234567".to_owned());
        assert_eq!(phone(&env).as_deref(), Some("+79001234567"));
        assert_eq!(set_variable("OWNER", "102"), "SET VARIABLE OWNER \"102\"\n");
        assert_eq!(set_variable("OWNER", ""), "SET VARIABLE OWNER \"\"\n");
        assert_eq!(set_variable("X", "a\"b\\c"), "SET VARIABLE X \"a\\\"b\\\\c\"\n");
    }
}
