//! `gatehouse audit …`: read, follow, export and verify the audit trail from the store, and look up
//! the hash an email or display name is recorded under.
//!
//! Exit codes: 0 fine; 1 the store cannot be read; 2 configuration error (e.g. `hash` without
//! `[audit] hash_key`); 3 `verify` found a broken link (named on stderr).
//!
//! Times (`--since`, `--until`, `--from`) are RFC 3339 (`2026-05-01T12:00:00Z`), a date
//! (`2026-05-01`, midnight UTC) or an age (`15m`, `24h`, `7d`: that long ago).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use super::EXIT_CONFIG;
use super::terminal::safe;
use crate::audit::ocsf::to_ocsf;
use crate::audit::query::{AuditFilters, AuditQuery, first_seq_since, query};
use crate::audit::{AuditRecord, hashing, verify};
use crate::config::Settings;
use crate::store::Store;

/// `verify` found a broken link.
pub const EXIT_CHAIN_BROKEN: u8 = 3;

/// Records read per query when streaming many out.
const BATCH: usize = 1_000;

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print records in order, from a point in the trail; with --follow, keep printing new ones.
    Tail {
        /// Start at this seq (a number) or time; default: the last 10 records.
        #[arg(long)]
        from: Option<String>,
        /// Keep waiting for new records (Ctrl-C stops).
        #[arg(long)]
        follow: bool,
        /// Only records about this tenant.
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: RecordFormat,
    },
    /// Print the records matching every filter given.
    Query {
        #[arg(long)]
        account_id: Option<String>,
        /// Only records about this tenant.
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        event_id: Option<String>,
        /// One or more kinds, comma-separated (received, executed, failed, …).
        #[arg(long, value_delimiter = ',')]
        kind: Vec<String>,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        /// Only records after this seq (paging).
        #[arg(long)]
        after_seq: Option<u64>,
        /// At most this many records (0: all).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long, value_enum, default_value = "table")]
        format: RecordFormat,
    },
    /// Write the whole trail (or a time range) as JSON lines or OCSF events.
    Export {
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        /// Only records about this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Write here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Walk the hash chain and name the first broken link; exit 3 on any break.
    Verify {
        /// Start at this seq, trusting the hash of the one before.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// SEQ:HASH kept outside the store (a head hash `verify` printed before): the record at
        /// SEQ must have HASH, or the chain was rewritten. Repeatable.
        #[arg(long, value_parser = parse_anchor)]
        anchor: Vec<(u64, String)>,
    },
    /// Print what VALUE (an email or display name) is recorded as under `[audit] hash_key`.
    Hash { value: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RecordFormat {
    Table,
    Jsonl,
    Ocsf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Ocsf,
}

pub async fn run(args: AuditArgs, settings: &Settings) -> ExitCode {
    if let AuditCommand::Hash { value } = &args.command {
        return match &settings.audit.hash_key {
            Some(key) => {
                println!("{}", hashing::lookup(key, value));
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("config error: audit.hash_key: not set; records are not hashed");
                ExitCode::from(EXIT_CONFIG)
            }
        };
    }
    let result = async {
        let store = crate::app::open_store(settings).await?;
        let code = match args.command {
            AuditCommand::Tail {
                from,
                follow,
                tenant,
                format,
            } => tail(&store, from, follow, tenant, format).await,
            AuditCommand::Query {
                account_id,
                tenant,
                event_id,
                kind,
                since,
                until,
                after_seq,
                limit,
                format,
            } => {
                let query = AuditFilters {
                    account_id: account_id.as_deref(),
                    tenant: tenant.as_deref(),
                    event_id: event_id.as_deref(),
                    kinds: kind.iter().map(String::as_str).collect(),
                    since: since.as_deref(),
                    until: until.as_deref(),
                    after_seq,
                    limit,
                }
                .parse()
                .map_err(anyhow::Error::msg)?;
                let records = query_all(&store, query.clone()).await?;
                let mut out = Output::stdout();
                if format == RecordFormat::Table {
                    out.line(&table_header())?;
                }
                for record in &records {
                    out.record(record, format)?;
                }
                out.flush()?;
                // Oldest first, `limit` at most: say so when more match, or a query for failures
                // would quietly show only the oldest ones.
                if let Some(last) = records.last().filter(|_| limit > 0 && records.len() == limit) {
                    let more = AuditQuery {
                        after_seq: Some(last.seq),
                        limit: 1,
                        ..query
                    };
                    if !crate::audit::query::query(&store, &more)
                        .await
                        .context("reading the audit trail")?
                        .is_empty()
                    {
                        eprintln!(
                            "{limit} record(s) shown, oldest first; more match: add --after-seq {} for the next ones, or --limit 0 for all",
                            last.seq
                        );
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            AuditCommand::Export {
                format,
                since,
                until,
                tenant,
                output,
            } => {
                let query = AuditFilters {
                    tenant: tenant.as_deref(),
                    since: since.as_deref(),
                    until: until.as_deref(),
                    ..AuditFilters::default()
                }
                .parse()
                .map_err(anyhow::Error::msg)?;
                let mut out = match &output {
                    Some(path) => Output::file(path)?,
                    None => Output::stdout(),
                };
                let format = match format {
                    ExportFormat::Jsonl => RecordFormat::Jsonl,
                    ExportFormat::Ocsf => RecordFormat::Ocsf,
                };
                let count = export(&store, query, format, &mut out).await?;
                out.flush()?;
                if output.is_some() {
                    eprintln!("exported {count} records");
                }
                Ok(ExitCode::SUCCESS)
            }
            AuditCommand::Verify { from, anchor } => verify_chain(&store, from, &anchor).await,
            AuditCommand::Hash { .. } => Ok(ExitCode::SUCCESS),
        };
        store.close().await;
        code
    }
    .await;
    match result {
        Ok(code) => code,
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

/// A time as the filters take it (see [`crate::audit::query::parse_time`]).
pub fn parse_time(text: &str) -> anyhow::Result<DateTime<Utc>> {
    crate::audit::query::parse_time(text).map_err(anyhow::Error::msg)
}

/// Hands every record `query_spec` selects after its `after_seq` to `each`, a batch at a time,
/// until the trail ends or `max` records were read (0: no bound). `after_seq` moves along, so a
/// later call goes on from there. Returns how many were read.
async fn for_each_batch(
    store: &Store,
    query_spec: &mut AuditQuery,
    max: usize,
    mut each: impl FnMut(Vec<AuditRecord>) -> anyhow::Result<()>,
) -> anyhow::Result<usize> {
    let mut read = 0;
    loop {
        let left = if max == 0 { BATCH } else { (max - read).min(BATCH) };
        if left == 0 {
            return Ok(read);
        }
        query_spec.limit = left;
        let batch = query(store, query_spec)
            .await
            .context("reading the audit trail")?;
        let done = batch.len() < left;
        query_spec.after_seq = batch.last().map(|r| r.seq).or(query_spec.after_seq);
        read += batch.len();
        each(batch)?;
        if done {
            return Ok(read);
        }
    }
}

/// Every record `query` selects (its `limit` applies; 0 = all), read in batches.
async fn query_all(store: &Store, mut query_spec: AuditQuery) -> anyhow::Result<Vec<AuditRecord>> {
    let max = query_spec.limit;
    let mut records = Vec::new();
    for_each_batch(store, &mut query_spec, max, |batch| {
        records.extend(batch);
        Ok(())
    })
    .await?;
    Ok(records)
}

async fn export(
    store: &Store,
    mut query_spec: AuditQuery,
    format: RecordFormat,
    out: &mut Output,
) -> anyhow::Result<u64> {
    let read = for_each_batch(store, &mut query_spec, 0, |batch| {
        batch.iter().try_for_each(|record| out.record(record, format))
    })
    .await?;
    Ok(read as u64)
}

async fn tail(
    store: &Store,
    from: Option<String>,
    follow: bool,
    tenant: Option<String>,
    format: RecordFormat,
) -> anyhow::Result<ExitCode> {
    let (head, _) = crate::audit::log::head(store)
        .await
        .context("reading the audit head")?;
    let after = match from.as_deref() {
        None => head.saturating_sub(10),
        Some(text) => match text.parse::<u64>() {
            Ok(seq) => seq.saturating_sub(1),
            Err(_) => {
                let time = parse_time(text)?;
                match first_seq_since(store, time).await? {
                    Some(seq) => seq - 1,
                    None => head,
                }
            }
        },
    };
    let shutdown = CancellationToken::new();
    if follow {
        tokio::spawn(super::cancel_on_signal(shutdown.clone()));
    }
    let mut out = Output::stdout();
    if format == RecordFormat::Table {
        out.line(&table_header())?;
    }
    let mut query_spec = AuditQuery {
        after_seq: Some(after),
        tenant,
        ..AuditQuery::default()
    };
    loop {
        for_each_batch(store, &mut query_spec, 0, |batch| {
            batch.iter().try_for_each(|record| out.record(record, format))?;
            out.flush()
        })
        .await?;
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        if !crate::pacing::sleep_unless(Duration::from_millis(500), &shutdown).await {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

/// `SEQ:HASH`, the hash 64 hex digits.
fn parse_anchor(text: &str) -> Result<(u64, String), String> {
    let (seq, hash) = text
        .split_once(':')
        .ok_or_else(|| format!("`{text}`: expected SEQ:HASH"))?;
    let seq: u64 = seq
        .trim()
        .parse()
        .map_err(|_| format!("`{seq}`: not a seq (a whole number)"))?;
    let hash = hash.trim();
    if seq == 0 || hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "`{text}`: expected a seq from 1 and a hash of 64 hex digits"
        ));
    }
    Ok((seq, hash.to_ascii_lowercase()))
}

async fn verify_chain(store: &Store, from: u64, anchors: &[(u64, String)]) -> anyhow::Result<ExitCode> {
    let (head, _) = crate::audit::log::head(store)
        .await
        .context("reading the audit head")?;
    let total = head.saturating_sub(from.max(1) - 1);
    let mut progress = super::progress::CommandProgress::new("verifying", total);
    let every = (total / 10).max(100_000);
    let report = verify(store, from, |_| progress.tick(every))
        .await
        .context("reading the audit trail")?;
    progress.finish();
    let mut report = report;
    if report.broken.is_none() {
        for (seq, hash) in anchors {
            if let Some(broken) = crate::audit::verify::check_anchor(store, *seq, hash)
                .await
                .context("reading the anchored record")?
            {
                report.broken = Some(broken);
                break;
            }
        }
    }
    match &report.broken {
        None => {
            println!(
                "chain intact: {} records checked (seq {}..={}), head hash {}",
                report.checked, report.from, report.head_seq, report.head_hash
            );
            for (seq, _) in anchors {
                println!("anchor at seq {seq} matches");
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(broken) => {
            eprintln!(
                "chain BROKEN at {broken} ({} records before it verified)",
                report.checked
            );
            if from > report.head_seq + 1 {
                eprintln!(
                    "--from {from} is past the chain's head (seq {}): if records up to {} were there before, the chain was cut back",
                    report.head_seq,
                    from - 1
                );
            }
            Ok(ExitCode::from(EXIT_CHAIN_BROKEN))
        }
    }
}

/// One line of the table: seq, time, kind, event, account, action, outcome.
fn columns(cells: [&str; 7]) -> String {
    let [seq, time, kind, event, account, action, outcome] = cells;
    format!("{seq:>8}  {time:<24}  {kind:<13}  {event:<26}  {account:<24}  {action:<32}  {outcome}")
}

fn table_header() -> String {
    columns(["SEQ", "TIME", "KIND", "EVENT", "ACCOUNT", "ACTION", "OUTCOME"])
}

fn table_row(record: &AuditRecord) -> String {
    let r = &record.record;
    let action = r
        .action
        .as_ref()
        .map(|a| format!("{} {}", a.action_type, a.target))
        .unwrap_or_default();
    let mut outcome = r.outcome.status.clone();
    if let Some(code) = r.outcome.http_status {
        outcome.push_str(&format!(" {code}"));
    }
    if let Some(error) = &r.outcome.error {
        outcome.push_str(&format!(": {error}"));
    }
    if r.dry_run {
        outcome.push_str(" (dry run)");
    }
    // Targets, accounts and errors can hold what a sender wrote: escaped, never obeyed.
    columns([
        &record.seq.to_string(),
        &crate::audit::chain::format_time(record.time),
        r.kind.as_str(),
        &r.event_id.to_string(),
        &safe(r.account_id.as_deref().unwrap_or("-")),
        &safe(&action),
        &safe(&outcome),
    ])
}

/// Buffered output that reports a closed pipe as an error the caller can recognize.
struct Output {
    writer: Box<dyn Write>,
}

impl Output {
    fn stdout() -> Self {
        Output {
            writer: Box::new(std::io::BufWriter::new(std::io::stdout())),
        }
    }

    fn file(path: &PathBuf) -> anyhow::Result<Self> {
        let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Output {
            writer: Box::new(std::io::BufWriter::new(file)),
        })
    }

    fn line(&mut self, line: &str) -> anyhow::Result<()> {
        self.writer.write_all(line.as_bytes())?;
        self.writer.write_all(b"\n")?;
        Ok(())
    }

    fn record(&mut self, record: &AuditRecord, format: RecordFormat) -> anyhow::Result<()> {
        let line = match format {
            RecordFormat::Table => table_row(record),
            RecordFormat::Jsonl => serde_json::to_string(record)?,
            RecordFormat::Ocsf => serde_json::to_string(&to_ocsf(record))?,
        };
        self.line(&line)
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.writer.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(
            parse_time("2026-05-01T12:00:00Z").unwrap().to_rfc3339(),
            "2026-05-01T12:00:00+00:00"
        );
        assert_eq!(
            parse_time("2026-05-01").unwrap().to_rfc3339(),
            "2026-05-01T00:00:00+00:00"
        );
        let ago = Utc::now() - parse_time("2h").unwrap();
        assert!((ago.num_seconds() - 7_200).abs() < 5);
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("").is_err());
    }
}
