//! The command line: `gatehouse serve`, `gatehouse check-config`, `gatehouse directory`, and the
//! exit codes scripts rely on (0 fine, 1 runtime failure, 2 configuration error).

pub mod directory;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::app::Application;
use crate::config::Settings;
use crate::telemetry;

/// Exit code for a configuration that cannot be used.
pub const EXIT_CONFIG: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "Verified Atlassian identity events to safe, audited reactions"
)]
pub struct Cli {
    /// The config file (TOML); every key can be overridden by GATEHOUSE__SECTION__KEY.
    #[arg(
        long,
        short,
        global = true,
        env = "GATEHOUSE_CONFIG",
        default_value = "config/default.toml"
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the ingress.
    Serve,
    /// Print the effective config (secrets redacted) and its warnings; exit 2 on any error.
    CheckConfig,
    /// Complete Confluence listings for access reviews (groups, members).
    Directory {
        #[command(subcommand)]
        command: directory::DirectoryCommand,
    },
}

pub async fn run(cli: Cli) -> ExitCode {
    let (settings, warnings) = match Settings::load(&cli.config) {
        Ok(loaded) => loaded,
        Err(errors) => {
            for error in &errors.0 {
                eprintln!("config error: {error}");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match cli.command {
        Command::CheckConfig => {
            print!("{}", settings.to_redacted_toml());
            for warning in &warnings {
                eprintln!("warning: {warning}");
            }
            eprintln!("config OK: {}", cli.config.display());
            ExitCode::SUCCESS
        }
        Command::Directory { command } => {
            telemetry::init(&settings.log);
            for warning in &warnings {
                eprintln!("warning: {warning}");
            }
            directory::run(&settings, command).await
        }
        Command::Serve => {
            telemetry::init(&settings.log);
            for warning in &warnings {
                tracing::warn!(key = %warning.key, "{}", warning.message);
            }
            match serve(settings).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(error = format!("{error:#}"), "gatehouse failed");
                    eprintln!("error: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    app.run(shutdown).await
}

/// Cancels `token` on SIGTERM or SIGINT (Ctrl-C).
pub async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = terminate => tracing::info!("SIGTERM received"),
    }
    token.cancel();
}
