//! `gatehouse directory`: complete Confluence listings for people reviewing access.
//!
//! - `directory members GROUP [--id] [--format table|csv|json]`: every member of a group.
//! - `directory groups ACCOUNT_ID [--format …]`: every group an account is in.
//!
//! Listings are complete (every page is fetched; a progress line counts them on a terminal).
//! Group names match exactly, as Confluence's do; when nothing matches but a name differing only
//! in case exists, the error says which. Hidden emails show as `(hidden)` in tables and empty in
//! CSV; JSON has `null`.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Subcommand, ValueEnum};
use handlers::ports::{Group, User};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::atlassian::{AtlassianClients, AtlassianMetrics, ClientDeps, ConfluenceClient};
use crate::config::{AuthSettings, Settings};

use super::EXIT_CONFIG;

#[derive(Debug, Subcommand)]
pub enum DirectoryCommand {
    /// Every member of a Confluence group (the name is case-sensitive).
    Members {
        /// The group's exact name, or its id with --id.
        group: String,
        /// GROUP is a group id.
        #[arg(long)]
        id: bool,
        #[arg(long, value_enum, default_value_t = ListingFormat::Table)]
        format: ListingFormat,
    },
    /// Every Confluence group an account belongs to.
    Groups {
        account_id: String,
        #[arg(long, value_enum, default_value_t = ListingFormat::Table)]
        format: ListingFormat,
    },
}

/// How listings are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListingFormat {
    /// Aligned columns for reading.
    Table,
    /// RFC 4180 CSV with a header row, for spreadsheets.
    Csv,
    /// A JSON array, for scripts.
    Json,
}

pub async fn run(settings: &Settings, tenant: Option<&str>, command: DirectoryCommand) -> ExitCode {
    let tenant = match settings.choose_tenant(tenant) {
        Ok(tenant) => tenant,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let Some(atlassian) = settings.tenant(&tenant) else {
        eprintln!(
            "config error: tenant `{tenant}` is not configured ([[tenants]] or [atlassian]); `gatehouse directory` reads Confluence through it"
        );
        return ExitCode::from(EXIT_CONFIG);
    };
    let result = async {
        let store = match atlassian.auth {
            // Rotated OAuth refresh tokens live in the store.
            Some(AuthSettings::Oauth { .. }) => Some(crate::app::open_store(settings).await?),
            _ => None,
        };
        let clients =
            AtlassianClients::build(atlassian, ClientDeps::new(store, AtlassianMetrics::detached()))?;
        let confluence = clients.confluence()?;
        let output = match command {
            DirectoryCommand::Members { group, id, format } => {
                members(confluence, &group, id, format).await?
            }
            DirectoryCommand::Groups { account_id, format } => {
                groups(confluence, &account_id, format).await?
            }
        };
        super::terminal::print_out(&output).context("writing the listing")
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// A counter on stderr while pages arrive, when a person is watching.
fn progress(what: &'static str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.set_message(format!("fetching {what}…"));
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

async fn members(
    confluence: &ConfluenceClient,
    group: &str,
    by_id: bool,
    format: ListingFormat,
) -> anyhow::Result<String> {
    let group = if by_id {
        Group {
            id: group.to_owned(),
            name: group.to_owned(),
        }
    } else {
        match confluence.group_named(group).await? {
            Some(found) => found,
            None => {
                let near = confluence.groups_named_like(group).await?;
                if near.is_empty() {
                    bail!("no Confluence group is named `{group}`");
                }
                let names: Vec<String> = near.iter().map(|g| format!("`{}`", g.name)).collect();
                bail!(
                    "no Confluence group is named `{group}`; did you mean {}? (group names are case-sensitive)",
                    names.join(" or ")
                );
            }
        }
    };
    let bar = progress("members");
    let fetched = confluence
        .group_members(&group.id, &|n| bar.set_message(format!("{n} members fetched")))
        .await;
    bar.finish_and_clear();
    let users = fetched.with_context(|| format!("listing the members of `{}`", group.name))?;
    eprintln!(
        "{} members in `{}` ({})",
        users.len(),
        super::terminal::safe(&group.name),
        group.id
    );
    render_users(&users, format)
}

async fn groups(
    confluence: &ConfluenceClient,
    account_id: &str,
    format: ListingFormat,
) -> anyhow::Result<String> {
    let bar = progress("groups");
    let fetched = confluence
        .member_groups(account_id, &|n| bar.set_message(format!("{n} groups fetched")))
        .await;
    bar.finish_and_clear();
    let groups = fetched.with_context(|| format!("listing the groups of {account_id}"))?;
    eprintln!("{account_id} is in {} groups", groups.len());
    render_groups(&groups, format)
}

fn render_users(users: &[User], format: ListingFormat) -> anyhow::Result<String> {
    let rows: Vec<Vec<String>> = users
        .iter()
        .map(|u| {
            vec![
                u.account_id.clone(),
                u.display_name.clone().unwrap_or_default(),
                u.email.clone().unwrap_or_default(),
                u.account_type.clone().unwrap_or_default(),
            ]
        })
        .collect();
    match format {
        ListingFormat::Json => Ok(serde_json::to_string_pretty(users)? + "\n"),
        ListingFormat::Csv => Ok(csv(
            &["account_id", "display_name", "email", "account_type"],
            &rows,
        )),
        ListingFormat::Table => {
            let shown: Vec<Vec<String>> = rows
                .into_iter()
                .map(|mut row| {
                    if row[2].is_empty() {
                        row[2] = "(hidden)".to_owned();
                    }
                    row
                })
                .collect();
            Ok(super::table::render(
                &["ACCOUNT ID", "DISPLAY NAME", "EMAIL", "TYPE"],
                &shown,
            ))
        }
    }
}

fn render_groups(groups: &[Group], format: ListingFormat) -> anyhow::Result<String> {
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|g| vec![g.id.clone(), g.name.clone()])
        .collect();
    match format {
        ListingFormat::Json => Ok(serde_json::to_string_pretty(groups)? + "\n"),
        ListingFormat::Csv => Ok(csv(&["id", "name"], &rows)),
        ListingFormat::Table => Ok(super::table::render(&["ID", "NAME"], &rows)),
    }
}

/// RFC 4180: quote fields holding a comma, a quote or a line break; double inner quotes.
fn csv(header: &[&str], rows: &[Vec<String>]) -> String {
    let field = |value: &str| {
        if value.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", value.replace('"', "\"\""))
        } else {
            value.to_owned()
        }
    };
    let mut out = header.join(",") + "\r\n";
    for row in rows {
        let fields: Vec<String> = row.iter().map(|v| field(v)).collect();
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, name: &str, email: Option<&str>) -> User {
        User {
            account_id: id.into(),
            display_name: Some(name.into()),
            email: email.map(str::to_owned),
            account_type: Some("atlassian".into()),
        }
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let users = [
            user("a", "Lovelace, Ada", None),
            user("b", "Grace \"Amazing\" Hopper", Some("g@x")),
        ];
        assert_eq!(
            render_users(&users, ListingFormat::Csv).unwrap(),
            "account_id,display_name,email,account_type\r\n\
             a,\"Lovelace, Ada\",,atlassian\r\n\
             b,\"Grace \"\"Amazing\"\" Hopper\",g@x,atlassian\r\n"
        );
    }

    #[test]
    fn tables_align_and_show_hidden_emails() {
        let users = [user("a", "Ada", None), user("bbbb", "Grace", Some("g@x"))];
        assert_eq!(
            render_users(&users, ListingFormat::Table).unwrap(),
            "ACCOUNT ID  DISPLAY NAME  EMAIL     TYPE\n\
             a           Ada           (hidden)  atlassian\n\
             bbbb        Grace         g@x       atlassian\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render_users(&users, ListingFormat::Json).unwrap()).unwrap();
        assert!(json[0]["email"].is_null());
    }
}
