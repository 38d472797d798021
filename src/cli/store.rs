//! `gatehouse store`: work on the store itself. `seal` seals in place the credentials written in
//! clear before `store.encryption_key` was set (with a key, gatehouse refuses them, and the roles
//! refuse to start, until they are sealed) and reseals under it those a retired key sealed
//! (`store.retired_encryption_keys`, while the key is rotated).

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::app::open_store;
use crate::config::Settings;

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Seal the credentials stored in clear, or under a retired key, with store.encryption_key.
    ///
    /// Connect shared secrets and OAuth tokens written before the key was set or rotated, each
    /// bound to its row; all or nothing. Values already sealed with the key are checked and left
    /// alone. After a rotation, drop the old key from store.retired_encryption_keys once this
    /// reports nothing left to reseal.
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
    let (verb, reseal) = if dry_run {
        ("would seal", "would reseal")
    } else {
        ("sealed", "resealed")
    };
    for column in &report {
        println!(
            "{verb} {} value(s) in {} ({} already sealed)",
            column.sealed, column.column, column.already_sealed
        );
        if column.resealed > 0 {
            println!(
                "{reseal} {} value(s) in {} from a retired key to store.encryption_key",
                column.resealed, column.column
            );
        }
    }
    if !settings.store.retired_encryption_keys.is_empty() && !dry_run {
        // All or nothing: having succeeded, no value is left under a retired key.
        eprintln!(
            "every credential is sealed with store.encryption_key: store.retired_encryption_keys can go"
        );
    }
    if dry_run {
        eprintln!("dry run: nothing changed");
    }
    Ok(())
}
