//! A TCP relay between ringlink and a server it depends on (AMI, PostgreSQL) that a test can cut, as a network
//! outage would: every open connection reset in both directions at once, new ones refused until restored.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Relay {
    /// Where ringlink connects instead of the server.
    pub addr: SocketAddr,
    refusing: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Listens on a free port of 127.0.0.1 and relays every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay bind");
        let addr = listener.local_addr().expect("relay addr");
        let refusing = Arc::new(AtomicBool::new(false));
        let (cut, _) = watch::channel(0u64);
        let accept = tokio::spawn({
            let refusing = refusing.clone();
            let cut = cut.clone();
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if refusing.load(Ordering::SeqCst) {
                        let _ = inbound.set_zero_linger();
                        continue;
                    }
                    let mut cut_rx = cut.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cut_rx.changed() => {
                                // A reset, not a polite close: no FIN, no last bytes.
                                let _ = inbound.set_zero_linger();
                                let _ = outbound.set_zero_linger();
                            }
                        }
                    });
                }
            }
        });
        Relay {
            addr,
            refusing,
            cut,
            accept,
        }
    }

    /// Resets every open connection and refuses new ones until [`Relay::restore`].
    pub fn cut_and_refuse(&self) {
        self.refusing.store(true, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    /// Relays new connections again.
    pub fn restore(&self) {
        self.refusing.store(false, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut.send_modify(|n| *n += 1);
    }
}
