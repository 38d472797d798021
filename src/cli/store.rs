//! `gatehouse store`: work on the store itself. `seal` seals in place the credentials written in
//! clear before `store.encryption_key` was set; with a key, gatehouse refuses them (and the roles
//! refuse to start) until they are sealed.

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::app::open_store;
use crate::config::Settings;

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Seal the credentials stored in clear with store.encryption_key.
    ///
    /// Connect shared secrets and OAuth tokens written before the key was set, each bound to its
    /// row; all or nothing. Values already sealed are checked and left alone.
    Seal {
        /// Print what would be sealed, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub async fn run(settings: Settings, command: StoreCommand) -> anyhow::Result<()> {
    match command {
        StoreCommand::Seal { dry_run } => seal(&settings, dry_run).await,
    }
}

async fn seal(settings: &Settings, dry_run: bool) -> anyhow::Result<()> {
    if settings.store.encryption_key.is_none() {
        bail!(
            "store.encryption_key is not configured: there is no key to seal with \
             (set it to a secret reference holding `openssl rand -base64 32`, then run this again)"
        );
    }
    let store = open_store(settings).await?;
    let report = store.seal_in_place(dry_run).await;
    store.close().await;
    let report = report.context("sealing stored credentials")?;
    let verb = if dry_run { "would seal" } else { "sealed" };
    for column in &report {
        println!(
            "{verb} {} value(s) in {} ({} already sealed)",
            column.sealed, column.column, column.already_sealed
        );
    }
    if dry_run {
        eprintln!("dry run: nothing changed");
    }
    Ok(())
}
