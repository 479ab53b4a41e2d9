//! One-shot AMI actions for driving the PBX (transfers, parking, originates) through the project's `ami` client:
//! log in without events, run one action, log off.

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::{Error, Result};

/// One AMI response (an ordered multi-map: `get` is case-insensitive).
pub use ami::Message as AmiResponse;

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
    let mut config = ami::ClientConfig::new(addr.to_string(), user, secret);
    config.event_mask = Some("off".into());
    config.connect_timeout = IO_TIMEOUT;
    let (client, _events) = ami::connect(config).await.map_err(|e| err(e.to_string()))?;
    let mut message = ami::Message::action(name);
    for (key, value) in headers {
        message.push(key, *value);
    }
    let response = client.action_with_timeout(message, IO_TIMEOUT).await;
    client.shutdown().await;
    response.map_err(|e| err(e.to_string()))
}
