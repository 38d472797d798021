//! Running gatehouse as a child process for a measurement: a generated config, readiness, its
//! peak memory, a clean stop, and removing what it left on the broker.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::Common;

/// A throwaway folder, removed on drop.
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> anyhow::Result<Scratch> {
        let path = std::env::temp_dir().join(format!("gatehouse-bench-{name}-{}", ulid::Ulid::generate()));
        std::fs::create_dir_all(&path)?;
        Ok(Scratch(path))
    }

    /// Writes a secret to a file and returns its `file:` reference.
    pub fn secret(&self, name: &str, value: &str) -> anyhow::Result<String> {
        let path = self.0.join(name);
        std::fs::write(&path, value)?;
        Ok(format!("file:{}", path.display()))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running gatehouse.
#[derive(Debug)]
pub struct Running {
    child: tokio::process::Child,
    pub addr: SocketAddr,
    pub prefix: String,
    pub backend: &'static str,
    pub store_url: String,
    amqp_url: String,
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Running {
    /// Starts `gatehouse {role}` with `backend` and the extra config `extra` (TOML), and waits
    /// until it is ready.
    pub async fn start(
        common: &Common,
        scratch: &Scratch,
        role: &str,
        backend: &'static str,
        extra: &str,
    ) -> anyhow::Result<Running> {
        Running::start_with(common, scratch, role, backend, "", extra).await
    }

    /// Like [`Running::start`], with `worker` (TOML lines) added to the `[worker]` table: TOML
    /// does not let `extra` open that table a second time.
    pub async fn start_with(
        common: &Common,
        scratch: &Scratch,
        role: &str,
        backend: &'static str,
        worker: &str,
        extra: &str,
    ) -> anyhow::Result<Running> {
        let port = free_port()?;
        let prefix = format!("bench-{}", ulid::Ulid::generate().to_string().to_lowercase());
        let store_url = format!("sqlite://{}/gatehouse.db", scratch.0.display());
        let config = format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
max_concurrent_requests = 8192
[log]
level = {log_level:?}
[queue]
backend = "{backend}"
url = "{amqp}"
prefix = "{prefix}"
publish_channels = 2  # gatehouse's default, as many as the minimal relay has
prefetch = 64
[store]
url = "{store_url}"
max_connections = 16
[worker]
concurrency = 16
depth_sample_seconds = 5
{worker}
[audit.stream]
enabled = false
{extra}
"#,
            amqp = common.amqp_url,
            log_level = common.log_level,
        );
        let path = scratch.0.join("gatehouse.toml");
        std::fs::write(&path, config)?;
        let binary = gatehouse_binary(common)?;
        let child = tokio::process::Command::new(&binary)
            .arg(role)
            .arg("--config")
            .arg(&path)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let running = Running {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            prefix,
            backend,
            store_url,
            amqp_url: common.amqp_url.clone(),
        };
        wait_ready(&running.url("/readyz"), Duration::from_secs(30)).await?;
        Ok(running)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The process's id (0 once it has been reaped).
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// The process's peak resident set (`VmHWM`), in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        let Some(pid) = self.child.id() else { return 0.0 };
        peak_rss_kib(&pid.to_string()) as f64 / 1024.0
    }

    /// The store the child writes (opened alongside it).
    pub async fn store(&self) -> anyhow::Result<::gatehouse::store::Store> {
        open_store(&self.store_url).await
    }

    /// SIGTERM, wait, then remove the run's queues from the broker.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop_timed().await.map(|_| ())
    }

    /// Like [`Running::stop`], saying how the process ended: a measurement that claims a clean
    /// shutdown needs the exit status, not just the absence of an error. A process still running
    /// after 30 s is killed (when dropped) and reported as such.
    pub async fn stop_timed(mut self) -> anyhow::Result<Stopped> {
        let asked = Instant::now();
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let exit = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .ok()
            .and_then(Result::ok);
        let took = asked.elapsed();
        if self.backend == "rabbitmq" {
            delete_prefix(&self.amqp_url, &self.prefix).await;
        }
        Ok(Stopped { exit, took })
    }
}

/// How a gatehouse child ended after SIGTERM.
#[derive(Debug, Clone, Copy)]
pub struct Stopped {
    /// Its exit status; `None` when it had not exited within the wait (it is then killed).
    pub exit: Option<std::process::ExitStatus>,
    /// From SIGTERM to exit (or to giving up).
    pub took: Duration,
}

impl Stopped {
    /// Exited by itself with status 0.
    pub fn clean(&self) -> bool {
        self.exit.is_some_and(|status| status.success())
    }

    pub fn describe(&self) -> String {
        match self.exit {
            Some(status) if status.success() => format!("cleanly in {:.1} s", self.took.as_secs_f64()),
            Some(status) => format!("{status} after {:.1} s", self.took.as_secs_f64()),
            None => format!("not within {:.0} s (killed)", self.took.as_secs_f64()),
        }
    }
}

/// The gatehouse binary to run: `--gatehouse`, or the one next to this binary.
pub fn gatehouse_binary(common: &Common) -> anyhow::Result<PathBuf> {
    Ok(match &common.gatehouse {
        Some(binary) => binary.clone(),
        None => std::env::current_exe()?.with_file_name("gatehouse"),
    })
}

/// Waits until `url` (a `/readyz`) answers 200.
pub async fn wait_ready(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    while !http.get(url).send().await.is_ok_and(|r| r.status() == 200) {
        if Instant::now() > deadline {
            bail!("{url} not ready after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The store at `url`, opened beside the gatehouse processes that write it (two connections).
pub async fn open_store(url: &str) -> anyhow::Result<::gatehouse::store::Store> {
    let settings = ::gatehouse::config::StoreSettings {
        url: ::gatehouse::config::SensitiveUrl::new(url.to_owned()),
        max_connections: 2,
        encryption_key: None,
        retired_encryption_keys: Vec::new(),
    };
    Ok(::gatehouse::store::Store::connect(&settings).await?)
}

/// The sum of the samples of `metric` whose labels include every one of `labels` (`k="v"`), in
/// gatehouse's `/metrics` text (with no `labels`, an unlabelled sample counts too); 0 when there
/// are none (a counter never incremented).
pub fn metric_sum(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(metric)?;
            let (set, value) = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            let pairs: Vec<&str> = set.split(',').collect();
            labels
                .iter()
                .all(|l| pairs.contains(l))
                .then(|| value.split_whitespace().next()?.parse::<f64>().ok())
                .flatten()
        })
        // An empty sum of floats is -0, which would print as "-0".
        .sum::<f64>()
        + 0.0
}

/// CPU time (user + system) process `pid` has used, from `/proc/{pid}/stat`.
pub fn cpu_of(pid: u32) -> Duration {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the command name (which may hold spaces) start after the last `)`.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some(utime + stime)
        })
        .unwrap_or(0);
    // Linux reports in clock ticks of 1/100 s on every common configuration.
    Duration::from_millis(ticks * 10)
}

/// CPU time of this process.
pub fn own_cpu() -> Duration {
    cpu_of(std::process::id())
}

/// The broker's CPU time, if it runs on this machine (`beam.smp`).
pub fn broker_cpu() -> Duration {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "beam.smp")
        })
        .map(cpu_of)
        .sum()
}

/// Deletes gatehouse's objects under `prefix` (default retry ladder) from the broker.
pub async fn delete_prefix(amqp_url: &str, prefix: &str) {
    delete_prefix_with_ladder(
        amqp_url,
        prefix,
        &::gatehouse::config::QueueSettings::default().retry_delays_seconds,
    )
    .await;
}

/// Like [`delete_prefix`], for a config whose retry ladder is `retry_delays_seconds` (a retry
/// queue per rung: the default ladder's names would leave them behind).
pub async fn delete_prefix_with_ladder(amqp_url: &str, prefix: &str, retry_delays_seconds: &[f64]) {
    let settings = ::gatehouse::config::QueueSettings {
        prefix: prefix.to_owned(),
        retry_delays_seconds: retry_delays_seconds.to_vec(),
        ..Default::default()
    };
    let topology = ::gatehouse::queue::rabbitmq::Topology::new(&settings);
    // `amqp_url` may name a cluster's nodes (comma-separated), as `queue.url` may.
    let nodes = ::gatehouse::config::BrokerUrls::new(amqp_url);
    let Ok((connection, _)) =
        ::gatehouse::broker::connect_first(&nodes, "gatehouse-bench", std::time::Duration::from_secs(5))
            .await
    else {
        return;
    };
    let stream = ::gatehouse::audit::stream::stream_name(prefix);
    topology.delete(&connection, &[&stream]).await;
    let _ = connection.close(200, "bench done".into()).await;
}

/// The queues under `prefix` (default retry ladder, as [`delete_prefix`] deletes them) still on
/// the broker: deletion is best effort, so a bench that promises to leave nothing behind checks.
/// Asks by name with a passive declare (a missing queue closes the channel: one per name).
pub async fn leftover_queues(amqp_url: &str, prefix: &str) -> anyhow::Result<Vec<String>> {
    let settings = ::gatehouse::config::QueueSettings {
        prefix: prefix.to_owned(),
        ..Default::default()
    };
    let topology = ::gatehouse::queue::rabbitmq::Topology::new(&settings);
    let stream = ::gatehouse::audit::stream::stream_name(prefix);
    let names: Vec<String> = [topology.work_queue(), topology.dead_queue(), stream.as_str()]
        .into_iter()
        .chain(topology.retry_queues())
        .map(str::to_owned)
        .collect();
    let connection = lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default()).await?;
    let mut left = Vec::new();
    for name in names {
        let channel = connection.create_channel().await?;
        let passive = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        if channel
            .queue_declare(name.as_str().into(), passive, lapin::types::FieldTable::default())
            .await
            .is_ok()
        {
            left.push(name);
        }
    }
    let _ = connection.close(200, "checked".into()).await;
    Ok(left)
}

/// `X-Hub-Signature: sha256=<hex>` for `body`.
pub fn hub_signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    format!("sha256={}", hex::encode(ring::hmac::sign(&key, body).as_ref()))
}

/// Standard Webhooks headers for `body`.
pub fn standard_webhooks(whsec: &str, id: &str, body: &[u8]) -> anyhow::Result<Vec<(&'static str, String)>> {
    standard_webhooks_at(whsec, id, body, chrono::Utc::now().timestamp())
}

/// Standard Webhooks headers for `body`, sent as of `timestamp` (unix seconds): a sender whose
/// clock is off.
pub fn standard_webhooks_at(
    whsec: &str,
    id: &str,
    body: &[u8],
    timestamp: i64,
) -> anyhow::Result<Vec<(&'static str, String)>> {
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD.decode(whsec.trim_start_matches("whsec_"))?;
    let signature = ::gatehouse::ingress::verify::standard_webhooks::sign(&key, id, timestamp, body);
    Ok(vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ])
}

/// The peak resident set (`VmHWM`) of process `pid` (`self` for this one), in KiB; 0 when unknown.
pub fn peak_rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// A database of its own on a PostgreSQL server (the machine's: creating and dropping a
/// database leaves the server as it was), dropped by [`PgDatabase::drop_now`].
pub struct PgDatabase {
    admin: String,
    name: String,
    pub url: String,
}

impl PgDatabase {
    pub async fn create(admin: &str) -> anyhow::Result<PgDatabase> {
        let name = format!("gh_bench_{}", ulid::Ulid::generate().to_string().to_lowercase());
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(admin).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await?;
        let url = url_with_path(admin, &name)?;
        Ok(PgDatabase {
            admin: admin.to_owned(),
            name,
            url,
        })
    }

    pub async fn drop_now(self) {
        if let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(&self.admin).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&mut conn)
            .await;
        }
    }
}

/// `url` naming database `name` instead of its own.
fn url_with_path(url: &str, name: &str) -> anyhow::Result<String> {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let (server, _) = base
        .rsplit_once('/')
        .filter(|(server, _)| server.contains("//"))
        .ok_or_else(|| anyhow::anyhow!("{url} is not a postgres://…/database URL"))?;
    Ok(match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    })
}

#[cfg(test)]
mod tests {
    use super::{metric_sum, url_with_path};

    #[test]
    fn metrics_are_summed_by_name_and_labels() {
        let text = "# TYPE x gauge\n\
            gatehouse_window_keys 60200\n\
            gatehouse_window_keys_total 7\n\
            gatehouse_attempts_total{tenant=\"a\",outcome=\"ok\"} 3\n\
            gatehouse_attempts_total{tenant=\"b\",outcome=\"ok\"} 4\n\
            gatehouse_attempts_total{tenant=\"a\",outcome=\"retried\"} 5\n";
        // An unlabelled sample, not one whose name merely starts the same.
        assert_eq!(metric_sum(text, "gatehouse_window_keys", &[]), 60_200.0);
        assert_eq!(
            metric_sum(text, "gatehouse_attempts_total", &["outcome=\"ok\""]),
            7.0
        );
        assert_eq!(
            metric_sum(
                text,
                "gatehouse_attempts_total",
                &["tenant=\"a\"", "outcome=\"retried\""]
            ),
            5.0
        );
        assert_eq!(metric_sum(text, "gatehouse_missing", &[]), 0.0);
    }

    #[test]
    fn a_database_url_is_pointed_at_another_database() {
        assert_eq!(
            url_with_path("postgres://postgres@127.0.0.1:5432/postgres", "x").unwrap(),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            url_with_path("postgres://u:p@h/db?sslmode=disable", "x").unwrap(),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert!(url_with_path("nonsense", "x").is_err());
    }
}
