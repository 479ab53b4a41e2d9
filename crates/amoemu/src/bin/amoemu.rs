//! `amoemu --listen 127.0.0.1:PORT [--data account.toml] [--control 127.0.0.1:PORT2]`

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "amoemu", about = "amoCRM / Kommo REST emulator for tests")]
struct Args {
    /// Address of the emulated account (REST v4, OAuth, events API, control API under /_emu).
    #[arg(long, default_value = "127.0.0.1:8091", env = "AMOEMU_LISTEN")]
    listen: SocketAddr,
    /// Account data and settings (TOML, the fields of `EmulatorConfig`); built-in defaults when absent.
    #[arg(long, env = "AMOEMU_DATA")]
    data: Option<PathBuf>,
    /// Extra address serving only the control API, reachable while the `down` fault closes the account's port.
    #[arg(long, env = "AMOEMU_CONTROL")]
    control: Option<SocketAddr>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    let cfg = match &args.data {
        Some(path) => amoemu::EmulatorConfig::from_toml_file(path)?,
        None => amoemu::EmulatorConfig::default(),
    };
    let emu = amoemu::Emulator::start_on(cfg, args.listen, args.control).await?;
    tracing::info!(base = %emu.base_url(), control = ?emu.control_addr(), "account up");
    tracing::info!(client_id = %emu.config().client_id, "tokens and credentials at /_emu/credentials");
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    emu.shutdown().await;
    Ok(())
}
