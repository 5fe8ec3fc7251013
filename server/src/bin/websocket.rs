//! The `websocket` command: server, worker, and operator tools.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use websocket::app::{Instance, Roles};
use websocket::config::Config;

/// A y-redis compatible WebSocket server for Yjs collaborative editing.
#[derive(Parser)]
#[command(name = "websocket", version, after_help = websocket::config::help())]
struct Cli {
    /// TOML configuration file (environment variables override it).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Port to listen on (overrides file and environment).
    #[arg(long, global = true)]
    port: Option<u16>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve WebSocket clients, with a worker unless --no-worker (the default command).
    Serve {
        /// Do not compact streams in this process.
        #[arg(long)]
        no_worker: bool,
    },
    /// Only compact streams into storage (needs Redis).
    Worker,
    /// Serve, and serve a collaborative editor page on --demo-port (open it in
    /// two windows; `?server=ws://HOST:PORT` on the page picks another server).
    Demo {
        /// Port of the editor page.
        #[arg(long, default_value_t = 8080)]
        demo_port: u16,
        /// A second server's WebSocket URL (`ws://host:port`, Rust or
        /// JavaScript, same fleet), linked from the page.
        #[arg(long, value_name = "URL")]
        peer: Option<String>,
        /// Do not compact streams in this process.
        #[arg(long)]
        no_worker: bool,
    },
    /// Key and token tools for y-redis compatible auth.
    #[command(subcommand)]
    Auth(AuthCommand),
}

#[derive(Subcommand)]
enum AuthCommand {
    /// Print a new P-384 key pair as JWKs: the private key, then the public key
    /// (use it as AUTH_PUBLIC_KEY).
    Keygen,
    /// Print a token for a user, signed with a private JWK.
    Token {
        /// The private key as JWK JSON text, or @FILE to read it from a file.
        #[arg(long)]
        private_key: String,
        /// The user id (`yuserid`).
        #[arg(long)]
        user: String,
        /// Lifetime in seconds; the token's `exp` is written in milliseconds as
        /// y-redis expects. Without it the token does not expire.
        #[arg(long)]
        ttl: Option<u64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match std::env::var("LOG_FORMAT").ok().as_deref().map(str::trim) {
        None | Some("") | Some("text") => logs
            // Colours only on a terminal: piped logs (files, journald) stay plain text.
            .with_ansi(std::io::stderr().is_terminal())
            .init(),
        Some("json") => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        Some(other) => {
            eprintln!("error: LOG_FORMAT {other:?}: expected text or json");
            return ExitCode::from(2);
        }
    }
    match cli.command {
        Some(Command::Auth(command)) => match auth(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        },
        command => {
            let (roles, demo) = roles_of(command);
            let config = match load_config(&cli.config, cli.port) {
                Ok(config) => config,
                Err(err) => {
                    eprintln!("error: {err:#}");
                    return ExitCode::from(2);
                }
            };
            let runtime = match config.websocket.threads {
                1 => tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build(),
                0 => tokio::runtime::Runtime::new(),
                threads => tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .enable_all()
                    .build(),
            };
            let runtime = match runtime {
                Ok(runtime) => runtime,
                Err(err) => {
                    eprintln!("error: cannot start the runtime: {err}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(config, roles, demo)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("error: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// What the command runs, and for `demo` its page's port and peer.
#[allow(clippy::type_complexity)]
fn roles_of(command: Option<Command>) -> (Roles, Option<(u16, Option<String>)>) {
    match command {
        Some(Command::Worker) => (
            Roles {
                serve: false,
                worker: true,
            },
            None,
        ),
        Some(Command::Serve { no_worker }) => (
            Roles {
                serve: true,
                worker: !no_worker,
            },
            None,
        ),
        Some(Command::Demo {
            demo_port,
            peer,
            no_worker,
        }) => (
            Roles {
                serve: true,
                worker: !no_worker,
            },
            Some((demo_port, peer)),
        ),
        _ => (
            Roles {
                serve: true,
                worker: true,
            },
            None,
        ),
    }
}

fn load_config(path: &Option<PathBuf>, port: Option<u16>) -> anyhow::Result<Config> {
    let mut config = match path {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    config.apply_env(|name| std::env::var(name).ok())?;
    if let Some(port) = port {
        config.websocket.port = port;
    }
    Ok(config)
}

async fn serve(
    config: Config,
    roles: Roles,
    demo: Option<(u16, Option<String>)>,
) -> anyhow::Result<()> {
    let mut instance = Instance::start(&config, roles)
        .await
        .context("cannot start")?;
    let demo_stop = tokio_util::sync::CancellationToken::new();
    let _stop_demo = demo_stop.clone().drop_guard();
    if let Some((port, peer)) = demo {
        let settings = websocket::demo::DemoSettings {
            websocket_port: instance
                .local_addr
                .map_or(config.websocket.port, |a| a.port()),
            peer,
        };
        let addr = std::net::SocketAddr::new(config.websocket.host, port);
        let bound = websocket::demo::serve(addr, settings, demo_stop)
            .await
            .with_context(|| format!("cannot serve the demo on {addr}"))?;
        let shown = match bound.ip().is_unspecified() {
            true => std::net::SocketAddr::from(([127, 0, 0, 1], bound.port())),
            false => bound,
        };
        tracing::info!("demo: open http://{shown}/ in two windows and type in both");
    }
    tokio::select! {
        signal = shutdown_signal() => signal?,
        _ = instance.wait() => anyhow::bail!("the instance stopped unexpectedly"),
    }
    tracing::info!("shutting down");
    // Whatever happens, the process ends within 10 s of the end of the drain;
    // a stop that lost documents, or did not finish, ends it with status 1.
    let limit = instance.drain() + Duration::from_secs(9);
    match tokio::time::timeout(limit, instance.shutdown()).await {
        Ok(stopped) => Ok(stopped?),
        Err(_) => anyhow::bail!("shutdown took too long, exiting anyway"),
    }
}

/// SIGINT (Ctrl+C) or SIGTERM.
async fn shutdown_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl+C")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}

fn auth(command: AuthCommand) -> anyhow::Result<()> {
    match command {
        AuthCommand::Keygen => {
            let (private, public) = websocket::auth::generate_key_pair()?;
            println!("{private}");
            println!("{public}");
        }
        AuthCommand::Token {
            private_key,
            user,
            ttl,
        } => {
            let key = match private_key.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("reading the private key from {path}"))?,
                None => private_key,
            };
            let token = websocket::auth::mint_token(&key, &user, ttl.map(Duration::from_secs))?;
            println!("{token}");
        }
    }
    Ok(())
}
