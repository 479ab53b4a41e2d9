//! `b24emu --listen 127.0.0.1:PORT --data portal.toml [--control 127.0.0.1:PORT2]`

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "b24emu", about = "Bitrix24 REST emulator for tests and demos")]
struct Args {
    /// Address of the emulated portal (REST, OAuth, control API).
    #[arg(long, default_value = "127.0.0.1:8090", env = "B24EMU_LISTEN")]
    listen: SocketAddr,
    /// Portal data and settings (TOML); built-in defaults when absent.
    #[arg(long, env = "B24EMU_DATA")]
    data: Option<PathBuf>,
    /// Extra address serving only the control API, reachable while the `down` fault closes the portal port.
    #[arg(long, env = "B24EMU_CONTROL")]
    control: Option<SocketAddr>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    let cfg = match &args.data {
        Some(path) => {
            b24emu::EmulatorConfig::from_toml_file(path).with_context(|| format!("loading {}", path.display()))?
        }
        None => b24emu::EmulatorConfig::default(),
    };
    let emu = b24emu::Emulator::start_on(cfg, args.listen, args.control).await?;
    let creds = emu.app_credentials();
    tracing::info!(base = %emu.base_url(), control = ?emu.control_addr(), "portal up");
    tracing::info!(webhook = %emu.webhook_url(), client_id = %creds.client_id, "credentials (also at /_emu/credentials)");
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    emu.shutdown().await;
    Ok(())
}
