//! The services the fault suite owns so that it may kill them: a RabbitMQ node, a PostgreSQL
//! cluster and a small tmpfs, each on its own ports, node name and folders. The machine's shared
//! broker and database are never touched: every process here is one this suite started, ended by
//! its own id.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::harness::{Scratch, free_port};

/// `kill -{signal} {pid}`.
pub fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .context("running kill")?;
    anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
    Ok(())
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

async fn wait_port(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on port {port} after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The first of `candidates` that exists, else `name` on the `PATH`.
fn program(candidates: &[&str], name: &str) -> PathBuf {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// A RabbitMQ node of the suite's own: node name `gh-faults-{id}@localhost`, its own AMQP and
/// distribution ports, data and log folders, and no plugins (the machine's management plugin
/// would want the shared node's port).
#[derive(Debug)]
pub struct OwnBroker {
    scratch: Scratch,
    pub node: String,
    pub port: u16,
    dist_port: u16,
    child: Option<tokio::process::Child>,
}

impl OwnBroker {
    pub async fn start() -> anyhow::Result<OwnBroker> {
        let scratch = Scratch::new("broker")?;
        let port = free_port()?;
        let dist_port = free_port()?;
        let id = ulid::Ulid::generate().to_string().to_lowercase();
        let node = format!("gh-faults-{}@localhost", &id[id.len() - 8..]);
        std::fs::write(
            scratch.0.join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{port}\nloopback_users = none\n"),
        )?;
        std::fs::write(scratch.0.join("enabled_plugins"), "[].\n")?;
        let mut broker = OwnBroker {
            scratch,
            node,
            port,
            dist_port,
            child: None,
        };
        broker.launch().await?;
        Ok(broker)
    }

    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let dir = &self.scratch.0;
        // The node script itself, not Debian's wrapper (which would switch to the rabbitmq
        // user, whose Erlang cookie the CLI run by this user does not hold).
        let server = program(&["/usr/lib/rabbitmq/bin/rabbitmq-server"], "rabbitmq-server");
        let log = std::fs::File::create(dir.join("server.out"))?;
        let child = tokio::process::Command::new(server)
            .current_dir(dir)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_PID_FILE", dir.join("pid"))
            // Not the machine's rabbitmq-env.conf: it names the shared node.
            .env("RABBITMQ_CONF_ENV_FILE", dir.join("no-env.conf"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(false)
            .spawn()
            .context("starting rabbitmq-server (is RabbitMQ installed?)")?;
        self.child = Some(child);
        wait_port(self.port, Duration::from_secs(90))
            .await
            .with_context(|| format!("RabbitMQ node {} did not come up", self.node))
    }

    /// The node's Erlang VM, from its pid file.
    pub fn beam_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.scratch.0.join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    async fn reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
    }

    /// `kill -9` of the node's VM: no chance to flush or say goodbye.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        let pid = self.beam_pid().context("the broker wrote no pid file")?;
        signal(pid, "KILL")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.reap().await;
        Ok(())
    }

    /// Starts the node again on the same ports and data.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(self.scratch.0.join("pid"));
        self.launch().await
    }

    /// SIGSTOP: the node holds its connections open and answers nothing.
    pub fn freeze(&self) -> anyhow::Result<()> {
        signal(self.beam_pid().context("no broker pid")?, "STOP")
    }

    pub fn thaw(&self) -> anyhow::Result<()> {
        signal(self.beam_pid().context("no broker pid")?, "CONT")
    }

    /// `rabbitmqctl -n {node} {args}`; what it printed.
    pub async fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let ctl = program(&["/usr/lib/rabbitmq/bin/rabbitmqctl"], "rabbitmqctl");
        let output = tokio::process::Command::new(ctl)
            .arg("-n")
            .arg(&self.node)
            .args(args)
            .output()
            .await
            .context("running rabbitmqctl")?;
        anyhow::ensure!(
            output.status.success(),
            "rabbitmqctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Stops the node (politely, then for good) and removes its folders.
    pub async fn stop(mut self) {
        if let Some(pid) = self.beam_pid() {
            let _ = signal(pid, "CONT");
            if tokio::time::timeout(Duration::from_secs(30), self.ctl(&["stop"]))
                .await
                .is_err()
                || alive(pid)
            {
                let _ = signal(pid, "KILL");
            }
        }
        self.reap().await;
    }
}

/// A RabbitMQ cluster of the suite's own: [`OwnBroker`] nodes joined to the first, each on its
/// own ports and folders (what `scripts/rabbitmq-cluster` stands up by hand).
#[derive(Debug)]
pub struct OwnCluster {
    pub nodes: Vec<OwnBroker>,
}

impl OwnCluster {
    /// Starts `size` nodes and joins them into one cluster.
    pub async fn start(size: usize) -> anyhow::Result<OwnCluster> {
        let started = futures_util::future::join_all((0..size).map(|_| OwnBroker::start())).await;
        // Nodes that did start are stopped by their drop if another failed.
        let nodes = started.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        let first = nodes.first().context("a cluster needs a node")?.node.clone();
        for node in &nodes[1..] {
            for step in [
                &["stop_app"][..],
                &["reset"],
                &["join_cluster", &first],
                &["start_app"],
            ] {
                node.ctl(step)
                    .await
                    .with_context(|| format!("joining {} to {first}", node.node))?;
            }
        }
        Ok(OwnCluster { nodes })
    }

    /// Every node's AMQP URL, in order, as one `queue.url` value.
    pub fn amqp_urls(&self) -> String {
        self.nodes
            .iter()
            .map(OwnBroker::amqp_url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node leading quorum queue `queue` (its index), asked of a running node.
    pub async fn leader_of(&self, queue: &str) -> anyhow::Result<usize> {
        let mut last_error = None;
        for asked in &self.nodes {
            match asked.ctl(&["-q", "list_queues", "name", "leader"]).await {
                Ok(listing) => {
                    let leader = listing
                        .lines()
                        .find_map(|line| line.split_once('\t').filter(|(name, _)| *name == queue))
                        .map(|(_, leader)| leader.trim().to_owned())
                        .with_context(|| format!("no queue {queue} in the listing"))?;
                    return self
                        .nodes
                        .iter()
                        .position(|n| n.node == leader)
                        .with_context(|| format!("{queue} is led by {leader}, not one of ours"));
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no node to ask")))
    }

    pub async fn stop(self) {
        futures_util::future::join_all(self.nodes.into_iter().map(OwnBroker::stop)).await;
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        if let Some(pid) = self.beam_pid()
            && alive(pid)
        {
            let _ = signal(pid, "KILL");
        }
    }
}

/// A PostgreSQL cluster of the suite's own (`initdb` and `pg_ctl` on a temp folder and port,
/// trust authentication on 127.0.0.1). As root it runs as the `postgres` user, as PostgreSQL
/// requires.
#[derive(Debug)]
pub struct OwnPostgres {
    scratch: Scratch,
    bin: PathBuf,
    pub port: u16,
}

impl OwnPostgres {
    pub async fn start() -> anyhow::Result<OwnPostgres> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .context("PostgreSQL's server is not installed (/usr/lib/postgresql)")?
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("initdb").exists())
            .max_by_key(|p| {
                p.parent()
                    .and_then(Path::file_name)
                    .and_then(|v| v.to_str())
                    .and_then(|v| v.parse::<u32>().ok())
                    .unwrap_or(0)
            })
            .context("no initdb under /usr/lib/postgresql/*/bin")?;
        let scratch = Scratch::new("postgres")?;
        let postgres = OwnPostgres {
            scratch,
            bin,
            port: free_port()?,
        };
        if as_root() {
            let status = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&postgres.scratch.0)
                .status()?;
            anyhow::ensure!(status.success(), "chown of the PostgreSQL folder failed");
        }
        let data = postgres.data();
        postgres
            .run(
                "initdb",
                &[
                    "-D",
                    &data,
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ],
            )
            .await?;
        postgres.start_again().await?;
        Ok(postgres)
    }

    fn data(&self) -> String {
        self.scratch.0.join("data").display().to_string()
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// PostgreSQL's `tool`, as the `postgres` user when this is root (PostgreSQL refuses root).
    fn command(&self, tool: &str) -> std::process::Command {
        let path = self.bin.join(tool);
        if as_root() {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            std::process::Command::new(path)
        }
    }

    async fn run(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let output = tokio::process::Command::from(self.command(tool))
            .args(args)
            .current_dir(&self.scratch.0)
            .output()
            .await
            .with_context(|| format!("running {tool}"))?;
        anyhow::ensure!(
            output.status.success(),
            "{tool} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(())
    }

    /// Starts (or starts again) the server and waits until it accepts connections.
    pub async fn start_again(&self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.scratch.0.display()
        );
        let log = self.scratch.0.join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-o", &options, "-l", &log, "-w", "start"],
        )
        .await
    }

    /// A fast shutdown: clients are disconnected, the server gone until started again.
    pub async fn stop(&self) -> anyhow::Result<()> {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"])
            .await
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("0")
    })
}

/// A tmpfs of a few MiB mounted on a folder of its own (root only), so that a disk can be
/// filled without filling the machine's.
#[derive(Debug)]
pub struct SmallDisk {
    scratch: Scratch,
}

impl SmallDisk {
    pub fn mount(mib: u32) -> anyhow::Result<SmallDisk> {
        let scratch = Scratch::new("disk")?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&scratch.0)
            .status()
            .context("running mount")?;
        anyhow::ensure!(
            status.success(),
            "mounting a {mib} MiB tmpfs failed (the full-disk scenario needs root)"
        );
        Ok(SmallDisk { scratch })
    }

    pub fn path(&self) -> &Path {
        &self.scratch.0
    }

    /// Writes a filler file until the disk is full; returns the bytes written.
    pub fn fill(&self) -> anyhow::Result<u64> {
        use std::io::Write;
        let mut file = std::fs::File::create(self.filler())?;
        let block = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => return Err(e.into()),
            }
        }
        let _ = file.sync_all();
        Ok(written)
    }

    pub fn free(&self) -> anyhow::Result<()> {
        std::fs::remove_file(self.filler())?;
        Ok(())
    }

    fn filler(&self) -> PathBuf {
        self.scratch.0.join("filler")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.scratch.0).status();
    }
}
