//! `mcp-warden-aggregator serve`: loads tokens and configuration, opens the database, serves the
//! API, and re-evaluates scores on a timer until SIGINT or SIGTERM.

use clap::{Parser, Subcommand};
use mcp_warden_aggregator::{http, serve, Location, Service, Settings, SystemClock, Tokens};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use tracing::info;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

#[derive(Parser)]
#[command(name = "mcp-warden-aggregator", version, about = "Trust aggregator of mcp-warden")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (logs go to stderr; `RUST_LOG` sets levels, e.g. `info,mcp_warden_aggregator=debug`).
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:8090 (port 0 picks a free one; the bound address
        /// is printed on stdout as `listening on ADDR`).
        #[arg(long)]
        listen: SocketAddr,
        /// The database: a SQLite file (created if missing; one aggregator process), or a
        /// PostgreSQL URL `postgres://user:password@host:port/dbname` (any number of replicas on
        /// one database; the schema is created and migrated at start).
        #[arg(long, env = "MCP_WARDEN_DB")]
        db: String,
        /// Tokens file: {"tokens":[{"token":"...","name":"...","role":"sidecar|rater|scanner|operator|reader"}]}.
        #[arg(long)]
        tokens: PathBuf,
        /// Optional JSON configuration (trust-model overrides, service bounds).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

fn main() -> ExitCode {
    let filter: Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi))
        .with(filter)
        .init();
    let Command::Serve { listen, db, tokens, config } = Cli::parse().command;
    match serve(listen, &db, &tokens, config.as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-warden-aggregator: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(listen: SocketAddr, db: &str, tokens: &Path, config: Option<&Path>) -> Result<(), String> {
    let tokens = Tokens::from_json(&read(tokens, "tokens file")?).map_err(|e| e.to_string())?;
    let settings = match config {
        Some(p) => Settings::from_json(&read(p, "configuration")?).map_err(|e| e.to_string())?,
        None => Settings::default(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let roles = [
            mcp_warden_aggregator::Role::Sidecar,
            mcp_warden_aggregator::Role::Rater,
            mcp_warden_aggregator::Role::Scanner,
            mcp_warden_aggregator::Role::Operator,
            mcp_warden_aggregator::Role::Reader,
        ]
        .map(|r| format!("{r}={}", tokens.count(r)))
        .join(" ");
        let params = format!("{:?}", settings.trust);
        let db = Location::parse(db);
        let service = Service::open(&db, tokens, settings, Arc::new(SystemClock)).map_err(|e| e.to_string())?;
        let listener =
            tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        info!(%addr, db = %db, tokens = roles, "mcp-warden-aggregator serving; version {}", service.published().version);
        info!("trust parameters: {params}");
        // The line tests and scripts wait for: the database is open and the port bound.
        println!("listening on {addr}");
        let _ = std::io::stdout().flush();
        let ticker = service.spawn_ticker();
        let limits = service.guard().limits().clone();
        serve::serve(listener, http::router(service), &limits, shutdown()).await;
        ticker.abort();
        info!("stopped");
        Ok(())
    })
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    info!("shutting down");
}
