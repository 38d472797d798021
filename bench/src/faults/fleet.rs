//! gatehouse as the fault suite runs it: one config file shared by several child processes
//! (`serve`, or `ingress` and `worker` apart), each killable with `-9` and started again on the
//! same port, store and queue, as an orchestrator would restart a crashed container.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::harness::{Scratch, delete_prefix_with_ladder, free_port, open_store, wait_ready};

/// The fleet's retry ladder: short, so that a run sees events retried and dead-lettered in
/// seconds (and its queues are deleted by these names).
const RETRY_LADDER: [f64; 3] = [0.5, 1.0, 2.0];

/// What the config says beyond the defaults the suite always uses.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// `rabbitmq` or `embedded`.
    pub backend: &'static str,
    pub amqp_url: String,
    pub store_url: String,
    /// The `[[sources]]`, `[atlassian]` and `[[policies]]` sections (the `react` bench's, in
    /// front of the simulator).
    pub sections: String,
    /// How long a publish may wait for the broker's confirm.
    pub publish_timeout_ms: u64,
    /// Atlassian calls: a whole request's timeout.
    pub request_timeout_ms: u64,
    /// `queue.quorum_initial_group_size` (a cluster: its size).
    pub quorum_initial_group_size: Option<u16>,
    /// Events one worker process handles at once (its prefetch is twice that).
    pub worker_concurrency: usize,
}

/// A role's process.
#[derive(Debug)]
struct Member {
    role: &'static str,
    port: u16,
    child: Option<tokio::process::Child>,
}

/// gatehouse processes sharing one config.
#[derive(Debug)]
pub struct Fleet {
    binary: PathBuf,
    config: PathBuf,
    /// Each process's output goes to `{role}-{index}.log` here.
    logs: PathBuf,
    pub prefix: String,
    pub backend: &'static str,
    amqp_url: String,
    pub store_url: String,
    /// Where webhooks go: the first `serve` or `ingress` process listens here, restarts
    /// included (more ingress processes get ports of their own).
    pub ingress_port: u16,
    members: Vec<Member>,
    /// When the workers lost track of calls in flight, unix milliseconds from..to: a `-9` of a
    /// process that acts (`serve`, `worker`; an instant), or the store gone (its outage), when a
    /// call's outcome could not be recorded.
    pub interruptions_ms: Vec<(i64, i64)>,
}

impl Fleet {
    /// Writes the config into `scratch`; starts nothing yet.
    pub fn configure(binary: PathBuf, scratch: &Scratch, config: &FleetConfig) -> anyhow::Result<Fleet> {
        let prefix = format!("faults-{}", ulid::Ulid::generate().to_string().to_lowercase());
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:0"
[log]
level = "warn"
[queue]
backend = "{backend}"
url = "{amqp}"
prefix = "{prefix}"
publish_timeout_ms = {publish_timeout}
publish_channels = 2
prefetch = {prefetch}
reconnect_max_delay_ms = 1000
{group_size}# A short ladder, so that a run sees events retried and dead-lettered in seconds.
retry_delays_seconds = {ladder:?}
embedded_poll_ms = 50
# A killed worker's deliveries come back after this (embedded backend).
visibility_timeout_seconds = 5
[store]
url = "{store}"
max_connections = 8
[worker]
concurrency = {concurrency}
# A killed worker's claims are taken over after this.
claim_lease_seconds = 5
shutdown_grace_seconds = 5
depth_sample_seconds = 5
[audit.stream]
enabled = false

{sections}
[atlassian.http]
connect_timeout_ms = 1000
request_timeout_ms = {request_timeout}
[atlassian.retry]
max_attempts = 4
base_delay_ms = 50
max_delay_ms = 1000
max_wait_ms = 2000
"#,
            backend = config.backend,
            amqp = config.amqp_url,
            publish_timeout = config.publish_timeout_ms,
            store = config.store_url,
            sections = config.sections,
            request_timeout = config.request_timeout_ms,
            ladder = RETRY_LADDER,
            concurrency = config.worker_concurrency,
            prefetch = config.worker_concurrency * 2,
            group_size = config
                .quorum_initial_group_size
                .map(|size| format!("quorum_initial_group_size = {size}\n"))
                .unwrap_or_default(),
        );
        let path = scratch.0.join("gatehouse.toml");
        std::fs::write(&path, text)?;
        Ok(Fleet {
            binary,
            config: path,
            logs: scratch.0.clone(),
            prefix,
            backend: config.backend,
            amqp_url: config.amqp_url.clone(),
            store_url: config.store_url.clone(),
            ingress_port: free_port()?,
            members: Vec::new(),
            interruptions_ms: Vec::new(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ingress_port)
    }

    /// `path` on every process that takes webhooks (the first ingress's port when none runs
    /// yet), for a load balancer's round robin.
    pub fn ingress_urls(&self, path: &str) -> Vec<String> {
        let mut urls: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.role != "worker")
            .map(|m| format!("http://127.0.0.1:{}{path}", m.port))
            .collect();
        if urls.is_empty() {
            urls.push(self.url(path));
        }
        urls
    }

    /// Starts `role` (`serve`, `ingress` or `worker`) and waits until it is ready; its index.
    pub async fn start(&mut self, role: &'static str) -> anyhow::Result<usize> {
        let first_ingress = role != "worker" && self.members.iter().all(|m| m.role == "worker");
        let port = if first_ingress {
            self.ingress_port
        } else {
            free_port()?
        };
        self.members.push(Member {
            role,
            port,
            child: None,
        });
        let index = self.members.len() - 1;
        self.launch(index).await?;
        Ok(index)
    }

    async fn launch(&mut self, index: usize) -> anyhow::Result<()> {
        let member = &mut self.members[index];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{}-{index}.log", member.role)))?;
        let child = tokio::process::Command::new(&self.binary)
            .arg(member.role)
            .arg("--config")
            .arg(&self.config)
            .env("GATEHOUSE__SERVER__LISTEN", format!("127.0.0.1:{}", member.port))
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        member.child = Some(child);
        let port = member.port;
        wait_ready(
            &format!("http://127.0.0.1:{port}/readyz"),
            Duration::from_secs(60),
        )
        .await
        .with_context(|| format!("gatehouse {} on port {port}", self.members[index].role))
    }

    /// The last `lines` lines each process wrote (for a scenario that broke).
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for (index, member) in self.members.iter().enumerate() {
            let path = self.logs.join(format!("{}-{index}.log", member.role));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- gatehouse {} #{index}, last lines:\n", member.role));
            for line in &all[all.len().saturating_sub(lines)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// The process ids of the running members in `role`.
    pub fn pids(&self, role: &str) -> Vec<u32> {
        self.members
            .iter()
            .filter(|m| m.role == role)
            .filter_map(|m| m.child.as_ref().and_then(tokio::process::Child::id))
            .collect()
    }

    /// `kill -9` of member `index`.
    pub async fn kill9(&mut self, index: usize) -> anyhow::Result<()> {
        let member = &mut self.members[index];
        let Some(mut child) = member.child.take() else {
            bail!("gatehouse {} is not running", member.role);
        };
        if member.role != "ingress" {
            let now = chrono::Utc::now().timestamp_millis();
            self.interruptions_ms.push((now, now));
        }
        child.start_kill().context("kill -9")?;
        let _ = child.wait().await;
        Ok(())
    }

    /// Starts member `index` again, same role and port.
    pub async fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        self.launch(index).await
    }

    /// Runs `gatehouse {args}` with the fleet's config to the end; fails unless it exits 0.
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = tokio::process::Command::new(&self.binary)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .await?;
        anyhow::ensure!(
            output.status.success(),
            "gatehouse {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The store the fleet writes.
    pub async fn store(&self) -> anyhow::Result<::gatehouse::store::Store> {
        open_store(&self.store_url).await
    }

    /// SIGTERM to every member; the fleet's store and queues are still there to be read.
    pub async fn stop(mut self) -> Fleet {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                if let Some(pid) = child.id() {
                    let _ = super::services::signal(pid, "TERM");
                }
                if tokio::time::timeout(Duration::from_secs(20), child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.kill().await;
                }
            }
        }
        self
    }

    /// Removes the run's queues from the broker (after [`Fleet::stop`]).
    pub async fn forget(self) {
        if self.backend == "rabbitmq" {
            delete_prefix_with_ladder(&self.amqp_url, &self.prefix, &RETRY_LADDER).await;
        }
    }
}
