//! A minimal one-shot AMI client: log in, run one action, log off. Enough to
//! drive transfers, parking and originates; event streams are the `ami`
//! crate's job.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::error::{Error, Result};

/// One AMI response: headers in arrival order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AmiResponse {
    pub headers: Vec<(String, String)>,
}

impl AmiResponse {
    /// First value of a header, key compared case-insensitively.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_success(&self) -> bool {
        self.get("Response").is_some_and(|r| r.eq_ignore_ascii_case("Success"))
    }
}

const IO_TIMEOUT: Duration = Duration::from_secs(15);

pub(crate) async fn action(
    addr: SocketAddr,
    user: &str,
    secret: &str,
    name: &str,
    headers: &[(&str, &str)],
) -> Result<AmiResponse> {
    let err = |message: String| Error::Ami {
        action: name.to_owned(),
        message,
    };
    let run = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| err(format!("connect {addr}: {e}")))?;
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        let mut banner = String::new();
        reader
            .read_line(&mut banner)
            .await
            .map_err(|e| err(format!("reading banner: {e}")))?;

        send(
            &mut write,
            "Login",
            &[("Username", user), ("Secret", secret)],
            "tb-login",
        )
        .await
        .map_err(|e| err(format!("sending login: {e}")))?;
        let login = read_response(&mut reader, "tb-login").await.map_err(err)?;
        if !login.is_success() {
            return Err(err(format!("login as {user} refused: {:?}", login.get("Message"))));
        }
        send(&mut write, name, headers, "tb-action")
            .await
            .map_err(|e| err(format!("sending: {e}")))?;
        let response = read_response(&mut reader, "tb-action").await.map_err(err)?;
        let _ = send(&mut write, "Logoff", &[], "tb-logoff").await;
        Ok(response)
    };
    tokio::time::timeout(IO_TIMEOUT, run)
        .await
        .map_err(|_| err(format!("no answer within {IO_TIMEOUT:?}")))?
}

async fn send(
    write: &mut tokio::net::tcp::OwnedWriteHalf,
    name: &str,
    headers: &[(&str, &str)],
    action_id: &str,
) -> std::io::Result<()> {
    let mut text = format!("Action: {name}\r\nActionID: {action_id}\r\n");
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("\r\n");
    write.write_all(text.as_bytes()).await
}

/// Reads messages until the response carrying `action_id`; events in between are skipped.
async fn read_response(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    action_id: &str,
) -> std::result::Result<AmiResponse, String> {
    loop {
        let mut message = AmiResponse::default();
        loop {
            let mut line = Vec::new();
            let n = reader
                .read_until(b'\n', &mut line)
                .await
                .map_err(|e| format!("reading: {e}"))?;
            if n == 0 {
                return Err("connection closed by Asterisk".into());
            }
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                message.headers.push((k.to_owned(), v.trim_start().to_owned()));
            }
        }
        if message.get("Response").is_some() && message.get("ActionID") == Some(action_id) {
            return Ok(message);
        }
    }
}
