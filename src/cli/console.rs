//! `gatehouse console`: what an operator of the console needs on the command line: making the
//! Argon2 hash of a password for `[[console.operators]] password_hash`.

use std::io::{BufRead, IsTerminal};

use anyhow::{Context, bail};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ConsoleCommand {
    /// Reads a password from stdin (one line) and prints its Argon2id hash, for
    /// `[[console.operators]] password_hash`. Nothing is stored or logged.
    HashPassword,
}

pub fn run(command: ConsoleCommand) -> anyhow::Result<()> {
    match command {
        ConsoleCommand::HashPassword => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("password (input is shown; pipe it in to keep it off the screen):");
            }
            let mut line = String::new();
            stdin
                .lock()
                .read_line(&mut line)
                .context("reading the password from stdin")?;
            let password = line.trim_end_matches(['\n', '\r']);
            if password.chars().count() < 12 {
                bail!("choose a password of at least 12 characters");
            }
            let hash = crate::console::hash_password(password).map_err(anyhow::Error::msg)?;
            println!("{hash}");
            Ok(())
        }
    }
}
