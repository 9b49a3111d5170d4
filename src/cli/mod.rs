//! The command line: `serve`, `check-config`, `config defaults`, `healthcheck`, and developer
//! helpers for trying callrelay out.

mod dev;
mod healthcheck;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, Config};

#[derive(Debug, Parser)]
#[command(
    name = "callrelay",
    version,
    about = "Relays Twilio Voice call notifications to APNs, FCM and WebSockets"
)]
pub struct Cli {
    /// Configuration file (TOML). Every key can also be set as CALLRELAY__SECTION__KEY.
    #[arg(long, short, global = true, env = "CALLRELAY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the relay.
    Serve,
    /// Validate the configuration and say what is wrong.
    CheckConfig {
        /// Also connect to the configured Redis (as `serve` would) and report its version and
        /// mode; fails on TLS, authentication or network errors.
        #[arg(long)]
        connect: bool,
    },
    /// Move data written by callrelay before 0.2 to the current Redis layout (bindings and the
    /// device-token index), then mark the store as moved. Safe to run again and beside
    /// serving replicas; run it once every replica runs this version.
    Migrate,
    /// Print the OpenAPI document of the public API.
    Openapi,
    /// Configuration helpers.
    #[command(subcommand, name = "config")]
    ConfigFile(ConfigCommand),
    /// Ask a running callrelay's admin listener whether it is healthy: exit 0 if so, 1 if not
    /// (a container HEALTHCHECK; the image has no shell or curl).
    Healthcheck(healthcheck::Args),
    /// Helpers for trying callrelay out locally.
    #[command(subcommand)]
    Dev(dev::DevCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print every configuration key, what it means and its default, as a commented TOML
    /// file (examples/callrelay.toml is its output).
    Defaults,
}

pub async fn run() -> ExitCode {
    let cli = Cli::parse();
    crate::channels::push_client::install_crypto_provider();
    // These need no configuration, or read only what they need of it.
    match cli.command {
        Command::Openapi => return print_openapi(),
        Command::ConfigFile(ConfigCommand::Defaults) => {
            print!("{}", config::render_defaults());
            return ExitCode::SUCCESS;
        }
        Command::Healthcheck(args) => return healthcheck::run(args, cli.config.as_deref()).await,
        _ => {}
    }
    let config = match config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(config::ConfigError::Apps(errors)) => {
            // One line per broken app, each naming its key path.
            for e in &errors.0 {
                eprintln!("callrelay: configuration error: {e}");
            }
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("callrelay: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Serve => serve(config).await,
        Command::CheckConfig { connect } => {
            let code = check_config(&config);
            if connect && code == ExitCode::SUCCESS {
                check_store(&config).await
            } else {
                code
            }
        }
        Command::Dev(command) => dev::run(command, &config).await,
        Command::Migrate => migrate(&config).await,
        Command::Openapi | Command::ConfigFile(_) | Command::Healthcheck(_) => {
            unreachable!("answered above")
        }
    }
}

fn print_openapi() -> ExitCode {
    let text = serde_json::to_string_pretty(&crate::http::openapi::document())
        .expect("the document serialises");
    println!("{text}");
    ExitCode::SUCCESS
}

async fn serve(config: Config) -> ExitCode {
    let telemetry = match crate::telemetry::init(&config.log, &config.traces) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("callrelay: {e}");
            return ExitCode::FAILURE;
        }
    };
    let app = match crate::start(config, crate::Options::default()).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "callrelay could not start");
            eprintln!("callrelay: {e}");
            telemetry.close().await;
            return ExitCode::FAILURE;
        }
    };
    crate::app::shutdown_signal().await;
    tracing::info!("shutting down");
    app.shutdown();
    app.stopped().await;
    telemetry.close().await;
    ExitCode::SUCCESS
}

/// Configuration has read every setting and loaded every key and certificate by now.
fn check_config(config: &Config) -> ExitCode {
    println!(
        "configuration OK: {} account(s), {} push app(s), {} admin key(s), store: {}",
        config.accounts.len(),
        config.apps.len(),
        config.admin.api_keys.len(),
        match &config.store.redis {
            Some(redis) => format!("redis ({})", redis.topology.mode()),
            None => "memory (embedded)".to_owned(),
        }
    );
    ExitCode::SUCCESS
}

/// `check-config --connect`: what answers at the configured store.
async fn migrate(config: &Config) -> ExitCode {
    let progress = |r: &crate::store::MigrationReport| {
        eprintln!(
            "callrelay: moved {} identities ({} bindings) and {} tokens so far",
            r.identities, r.bindings, r.tokens
        );
    };
    match crate::store::migrate(&config.store, progress).await {
        Ok(Some(r)) => {
            println!(
                "migrated: {} identities ({} bindings) and {} device tokens moved; the store is marked as moved",
                r.identities, r.bindings, r.tokens
            );
            ExitCode::SUCCESS
        }
        Ok(None) => {
            println!("nothing to migrate: the embedded memory store keeps nothing between runs");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("callrelay: migration stopped: {e} (run it again: what moved stays moved)");
            ExitCode::FAILURE
        }
    }
}

async fn check_store(config: &Config) -> ExitCode {
    match crate::store::probe(&config.store).await {
        Ok(Some(report)) => {
            println!(
                "store OK: Redis {} ({}), {}",
                report.version, report.mode, report.detail
            );
            ExitCode::SUCCESS
        }
        Ok(None) => {
            println!("store OK: the embedded memory store (nothing to connect to)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("callrelay: store check failed: {e}");
            ExitCode::FAILURE
        }
    }
}
