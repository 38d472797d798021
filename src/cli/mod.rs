//! The command line: the roles (`serve`, `ingress`, `worker`), operator commands (`dlq`,
//! `outbound`, `audit`, `directory`, `store`, `check-config`, `probe`), and the exit codes scripts rely on (0 fine,
//! 1 failure, 2 configuration error, 3 audit chain broken).

mod approvals;
mod console;
mod demo;
mod dlq;
pub mod outbound;
mod plan;
mod probe;
mod progress;
mod reconcile;
mod store;
mod table;
mod terminal;

pub mod audit;
pub mod directory;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::app::{Application, Roles};
use crate::config::{ConfigWarning, Settings};
use crate::telemetry;

/// Exit code for a configuration that cannot be used.
pub const EXIT_CONFIG: u8 = 2;

/// The config file read when neither `--config` nor `GATEHOUSE_CONFIG` names one.
const DEFAULT_CONFIG: &str = "config/default.toml";

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
        default_value = DEFAULT_CONFIG
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch gatehouse do its job: a simulated organization, a story of signed webhooks, what
    /// gatehouse did with each, and the audit trail (no broker, no Atlassian account, no config).
    Demo(demo::DemoArgs),
    /// The operator console's tools (`hash-password`).
    Console {
        #[command(subcommand)]
        command: console::ConsoleCommand,
    },
    #[command(flatten)]
    Configured(Configured),
}

/// The commands that run with the config file.
#[derive(Debug, Subcommand)]
pub enum Configured {
    /// Run the ingress and the worker in one process.
    Serve,
    /// Run only the ingress (webhooks in, envelopes onto the queue).
    Ingress,
    /// Run only the worker (envelopes off the queue, reactions out).
    Worker,
    /// Manage dead letters.
    Dlq {
        /// The tenant whose dead letters (default: the only tenant).
        #[arg(long, global = true)]
        tenant: Option<String>,
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// Print the effective config (secrets redacted) and its warnings; exit 2 on any error.
    CheckConfig {
        /// Check everything but the secrets' values, reading none of them (`env:`/`file:`
        /// references are checked for their form and listed): for a pipeline where the
        /// deployment's secrets are not at hand.
        #[arg(long)]
        without_secrets: bool,
    },
    /// Read, follow, export and verify the audit trail (exit 3: chain broken).
    Audit(audit::AuditArgs),
    /// Plans waiting for a person's decision.
    Approvals {
        /// The tenant whose plans (default: the only tenant).
        #[arg(long, global = true)]
        tenant: Option<String>,
        #[command(subcommand)]
        command: approvals::ApprovalsCommand,
    },
    /// The outbox: signed deliveries to `[[outbound]]` endpoints and Slack messages (list, show,
    /// replay).
    Outbound {
        #[command(subcommand)]
        command: outbound::OutboundCommand,
    },
    /// Print the plans an envelope would produce; performs and queues nothing.
    Plan(plan::PlanArgs),
    /// Compare the real state with what events said, and queue what no webhook reported.
    Reconcile(reconcile::ReconcileArgs),
    /// Complete Confluence listings for access reviews (groups, members).
    Directory {
        /// The tenant whose site is read (default: the only tenant).
        #[arg(long, global = true)]
        tenant: Option<String>,
        #[command(subcommand)]
        command: directory::DirectoryCommand,
    },
    /// Ask the gatehouse running with this config whether it is ready (exit 0) or not (exit 1):
    /// for container health checks.
    Probe {
        /// Ask whether it is alive (`/healthz`) instead of ready (`/readyz`).
        #[arg(long)]
        live: bool,
    },
    /// Work on the store itself (seal credentials stored in clear).
    Store {
        #[command(subcommand)]
        command: store::StoreCommand,
    },
}

pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        // The demo brings its own config (written next to its data).
        Command::Demo(args) => {
            // The story is the output; only errors are logged beside it.
            telemetry::init(&crate::config::LogSettings {
                level: "error".to_owned(),
                ..crate::config::LogSettings::default()
            });
            if cli.config != std::path::Path::new(DEFAULT_CONFIG) {
                eprintln!(
                    "note: the demo writes and uses a config of its own; {} (--config or GATEHOUSE_CONFIG) is not read",
                    cli.config.display()
                );
            }
            report(demo::run(args).await)
        }
        // Needs no config: it hashes a password for one.
        Command::Console { command } => report(console::run(command)),
        Command::Configured(command) => run_configured(&cli.config, command).await,
    }
}

/// The effective config (secrets as their references), its warnings and its tenants.
fn show_checked(settings: &Settings, warnings: &[ConfigWarning]) {
    print!("{}", settings.to_redacted_toml());
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
    if let Some(note) = settings.tenant_note() {
        eprintln!("note: {note}");
    }
    let unconfigured = if settings.atlassian.is_none() && settings.tenants.is_empty() {
        " (no Atlassian site configured: [atlassian] or [[tenants]])"
    } else {
        ""
    };
    eprintln!("tenants: {}{unconfigured}", settings.tenant_names().join(", "));
}

/// Who an operator command acts as, for the audit trail: `--by`, else `$USER`.
fn who(by: Option<String>) -> String {
    by.or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Prints every config error; the exit code for them.
fn config_errors(errors: &crate::config::ConfigErrors) -> ExitCode {
    for error in &errors.0 {
        eprintln!("config error: {error}");
    }
    ExitCode::from(EXIT_CONFIG)
}

/// `check-config --without-secrets`: like `check-config`, reading no secret; lists the
/// references the deployment must provide.
fn check_without_secrets(config: &std::path::Path) -> ExitCode {
    let checked = match Settings::check_without_secrets(config) {
        Ok(checked) => checked,
        Err(errors) => return config_errors(&errors),
    };
    show_checked(&checked.settings, &checked.warnings);
    for unread in &checked.unread {
        eprintln!("secret not read: {} = {}", unread.key, unread.reference);
    }
    eprintln!(
        "config OK without its secrets ({} not read; their values are checked when gatehouse starts): {}",
        checked.unread.len(),
        config.display()
    );
    ExitCode::SUCCESS
}

async fn run_configured(config: &std::path::Path, command: Configured) -> ExitCode {
    if let Configured::CheckConfig {
        without_secrets: true,
    } = command
    {
        return check_without_secrets(config);
    }
    let (settings, warnings) = match Settings::load(config) {
        Ok(loaded) => loaded,
        Err(errors) => return config_errors(&errors),
    };
    match command {
        Configured::CheckConfig { .. } => {
            show_checked(&settings, &warnings);
            eprintln!("config OK: {}", config.display());
            ExitCode::SUCCESS
        }
        Configured::Audit(args) => audit::run(args, &settings).await,
        Configured::Probe { live } => probe::run(&settings, live).await,
        Configured::Directory { tenant, command } => {
            telemetry::init(&settings.log);
            for warning in &warnings {
                eprintln!("warning: {warning}");
            }
            directory::run(&settings, tenant.as_deref(), command).await
        }
        Configured::Serve | Configured::Ingress | Configured::Worker => {
            telemetry::init(&settings.log);
            for warning in &warnings {
                tracing::warn!(key = %warning.key, "{}", warning.message);
            }
            let roles = match command {
                Configured::Ingress => Roles::INGRESS,
                Configured::Worker => Roles::WORKER,
                _ => Roles::ALL,
            };
            report_served(serve(settings, roles).await)
        }
        Configured::Approvals { tenant, command } => {
            quiet_logs(&settings);
            report(approvals::run(settings, tenant.as_deref(), command).await)
        }
        Configured::Reconcile(args) => {
            quiet_logs(&settings);
            report(reconcile::run(settings, args).await)
        }
        Configured::Plan(args) => {
            quiet_logs(&settings);
            report(plan::run(settings, args).await)
        }
        Configured::Dlq { tenant, command } => {
            quiet_logs(&settings);
            report(dlq::run(settings, tenant.as_deref(), command).await)
        }
        Configured::Outbound { command } => {
            quiet_logs(&settings);
            report(outbound::run(settings, command).await)
        }
        Configured::Store { command } => {
            quiet_logs(&settings);
            report(store::run(settings, command).await)
        }
    }
}

/// Operator commands print their results; only warnings and errors are logged meanwhile.
fn quiet_logs(settings: &Settings) {
    telemetry::init(&crate::config::LogSettings {
        level: "warn".to_owned(),
        ..settings.log.clone()
    });
}

/// An operator command's outcome: its error on stderr, once.
fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// A server's outcome: its error in the log as well (where a deployment collects it, as JSON
/// when `log.format` says so), then on stderr.
fn report_served(result: anyhow::Result<()>) -> ExitCode {
    if let Err(error) = &result {
        tracing::error!(error = format!("{error:#}"), "gatehouse failed");
    }
    report(result)
}

async fn serve(settings: Settings, roles: Roles) -> anyhow::Result<()> {
    let app = Application::build_roles(settings, roles).await?;
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
