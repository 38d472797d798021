//! `ingest`: N signed webhooks (realistic Connect user-event bodies) at concurrency C against a
//! gatehouse ingress, measured to the 202; then, in the same run, the ceiling of the queue
//! underneath: the same bodies published raw (RabbitMQ: confirmed, persistent, mandatory, to the
//! same topic exchange and quorum queue, as many in flight; embedded: the same durable insert
//! into the same table, committed in groups as large as the concurrency, back to back: the best
//! batching SQLite allows).

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Confirmation};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::Common;
use crate::harness::{
    Running, Scratch, broker_cpu, cpu_of, delete_prefix, free_port, metric_sum, own_cpu, peak_rss_kib,
    wait_ready,
};
use crate::load::Load;
use crate::report::Results;
use crate::stats::{Percentiles, median, percentiles};

#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    #[arg(long, default_value_t = 20_000)]
    pub requests: usize,
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 2_048)]
    pub body_bytes: usize,
    /// Runs the minimal relay before gatehouse instead of after it (RabbitMQ), to see what the
    /// order costs whichever goes first.
    #[arg(long)]
    pub relay_first: bool,
    /// Measures this many rounds, the order swapped every other round, and reports each
    /// figure's median (and each round's ratios): one run that a noisy, shared machine's drift
    /// does not decide.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
}

impl Default for IngestArgs {
    fn default() -> Self {
        IngestArgs {
            requests: 20_000,
            concurrency: 64,
            body_bytes: 2_048,
            relay_first: false,
            rounds: 1,
        }
    }
}

pub const SECRET: &str = "bench-hub-secret-0123456789abcdef";

/// Where the bodies are sent, on gatehouse and on the minimal relay alike.
pub const WEBHOOK_PATH: &str = "/webhooks/confluence/user_deactivated";

/// The routing key gatehouse gives these events (the relay and the raw ceiling use it too).
const ROUTING_KEY: &str = "confluence.user.deactivated";

/// An admin-webhook `user_deactivated` body of about `size` bytes (Atlassian's user object is
/// large: avatars, time zone, locale, …). It names its own event and carries a current timestamp,
/// as a hub-signature source requires; each `i` is a distinct body (its dedupe key).
pub fn body(i: usize, size: usize) -> Vec<u8> {
    let mut value = json!({
        "webhookEvent": "user_deactivated",
        "timestamp": chrono::Utc::now().timestamp_millis(),
        "userAccountId": "5b10ac8d82e05b22cc7d4ef5",
        "accountType": "atlassian",
        "user": {
            "accountId": format!("5b10a2844c20165700ede{i:06}"),
            "accountType": "atlassian",
            "displayName": format!("Bench User {i}"),
            "email": null,
            "publicName": format!("bench.user.{i}"),
            "timeZone": "Europe/Berlin",
            "locale": "en_US",
            "profilePicture": {"path": format!("/wiki/aa-avatar/5b10a2844c20165700ede{i:06}"), "width": 48, "height": 48, "isDefault": false},
            "operations": [{"operation": "administer", "targetType": "application"}, {"operation": "use", "targetType": "application"}],
        },
        "padding": "",
    });
    let current = value.to_string().len();
    if current < size {
        value["padding"] = json!("x".repeat(size - current));
    }
    value.to_string().into_bytes()
}

pub async fn run(common: &Common, args: &IngestArgs, results: &mut Results) -> anyhow::Result<()> {
    // Warms up connections and caches; not measured.
    let warmup: Vec<Vec<u8>> = (0..200).map(|i| body(1_000_000 + i, args.body_bytes)).collect();
    let rounds = args.rounds.max(1);
    for backend in common.backend.backends() {
        let mut measured = Vec::with_capacity(rounds);
        let mut bodies = Vec::new();
        for round in 0..rounds {
            // Made again each round: a hub-signature source refuses a payload older than its
            // tolerance, and many rounds take minutes.
            bodies = (0..args.requests).map(|i| body(i, args.body_bytes)).collect();
            // Every other round swaps the order, so whichever phase meets the broker still
            // settling the last one is gatehouse as often as the relay.
            let relay_first = args.relay_first != (round % 2 == 1);
            if rounds > 1 {
                eprintln!("ingest ({backend}): round {} of {rounds}", round + 1);
            }
            let workload = Workload {
                warmup: &warmup,
                bodies: &bodies,
                concurrency: args.concurrency,
            };
            measured.push(one_round(common, backend, &workload, relay_first).await?);
        }

        let before = (Duration::ZERO, own_cpu(), broker_cpu());
        let bodies = Arc::new(bodies);
        let ceiling = match backend {
            "rabbitmq" => raw_rabbitmq(common, bodies.clone(), args.concurrency).await?,
            _ => raw_embedded(bodies.clone(), args.concurrency).await?,
        };
        let raw_cpu = Cpu::since(before, Duration::ZERO, args.requests);
        let gatehouse = Phase::median(measured.iter().map(|round| &round.gatehouse));
        let ratio = gatehouse.accepted_per_second / ceiling;
        let mut rows = vec![
            (
                "requests",
                format!(
                    "{} × {} B at concurrency {}{}",
                    args.requests,
                    args.body_bytes,
                    args.concurrency,
                    if rounds > 1 {
                        format!(
                            ", {rounds} rounds (below: medians, except failures summed and the highest peak RSS)"
                        )
                    } else {
                        String::new()
                    }
                ),
            ),
            ("accepted/s", format!("{:.0}", gatehouse.accepted_per_second)),
            ("not accepted", gatehouse.failures.to_string()),
            (
                "latency to 202",
                format!(
                    "p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
                    gatehouse.latency.p50_ms, gatehouse.latency.p99_ms, gatehouse.latency.p999_ms
                ),
            ),
            ("raw ceiling/s", format!("{ceiling:.0}")),
            ("ratio", format!("{:.1} %", ratio * 100.0)),
            (
                "CPU per message",
                format!(
                    "gatehouse {:.0} µs, load generator {:.0} µs, broker {:.0} µs (raw: publisher {:.0} µs, broker {:.0} µs)",
                    gatehouse.cpu.server_us,
                    gatehouse.cpu.driver_us,
                    gatehouse.cpu.broker_us,
                    raw_cpu.driver_us,
                    raw_cpu.broker_us
                ),
            ),
            (
                "peak RSS",
                format!(
                    "{:.1} MiB{}",
                    gatehouse.peak_rss_mib,
                    gatehouse.dedupe_window.map_or(String::new(), |window| format!(
                        " (its dedupe window holding {:.0} keys in the {:.1} MiB it reserved)",
                        window.keys,
                        window.reserved_bytes / (1024.0 * 1024.0)
                    ))
                ),
            ),
        ];
        let relay = measured
            .iter()
            .all(|round| round.relay.is_some())
            .then(|| Phase::median(measured.iter().filter_map(|round| round.relay.as_ref())));
        let mut relay_json = serde_json::Value::Null;
        if let Some(relay) = relay {
            rows.push(("minimal relay", format!(
                "{:.0}/s, p50 {:.2} ms, p99 {:.2} ms, CPU per message {:.0} µs (load generator {:.0} µs, broker {:.0} µs), peak RSS {:.1} MiB, {} not accepted",
                relay.accepted_per_second, relay.latency.p50_ms, relay.latency.p99_ms, relay.cpu.server_us,
                relay.cpu.driver_us, relay.cpu.broker_us, relay.peak_rss_mib, relay.failures
            )));
            let versus: Vec<Ratios> = measured.iter().filter_map(Round::ratios).collect();
            let median = Ratios::median(&versus);
            rows.push(("order", order(&measured)));
            rows.push((
                "gatehouse / relay",
                format!(
                    "accepted/s {:.2}× (target ≥ 0.9), p99 {:.2}× (≤ 1.2), CPU per message {:.2}× (≤ 1.15){}",
                    median.throughput,
                    median.p99,
                    median.cpu,
                    if rounds > 1 {
                        ": the medians of the rounds' own ratios"
                    } else {
                        ""
                    }
                ),
            ));
            if rounds > 1 {
                let each: Vec<String> = versus
                    .iter()
                    .map(|r| format!("{:.2}/{:.2}/{:.2}", r.throughput, r.p99, r.cpu))
                    .collect();
                rows.push((
                    "each round",
                    format!("accepted/s / p99 / CPU: {}", each.join(", ")),
                ));
            }
            relay_json = json!({
                "accepted_per_second": relay.accepted_per_second, "latency": relay.latency,
                "cpu_us_per_message": relay.cpu.server_us, "load_generator_cpu_us_per_message": relay.cpu.driver_us,
                "broker_cpu_us_per_message": relay.cpu.broker_us, "peak_rss_mib": relay.peak_rss_mib,
                "failures": relay.failures, "ran_first": args.relay_first && rounds == 1,
                "gatehouse_over_relay": median,
            });
        }
        results.add(
            &format!("ingest ({backend})"),
            rows,
            json!({
                "backend": backend, "requests": args.requests, "concurrency": args.concurrency, "body_bytes": args.body_bytes,
                "accepted_per_second": gatehouse.accepted_per_second, "failures": gatehouse.failures, "latency": gatehouse.latency,
                "ceiling_per_second": ceiling, "ratio": ratio, "peak_rss_mib": gatehouse.peak_rss_mib,
                "cpu_us_per_message": gatehouse.cpu, "raw_cpu_us_per_message": raw_cpu, "minimal_relay": relay_json,
                "rounds": measured,
            }),
        );
    }
    Ok(())
}

/// Which server went first: the one order, or how many rounds had each.
fn order(rounds: &[Round]) -> String {
    let relay_first = rounds.iter().filter(|round| round.relay_first).count();
    match (rounds.len(), relay_first) {
        (1, 0) => "gatehouse, then the minimal relay".to_owned(),
        (1, _) => "the minimal relay, then gatehouse".to_owned(),
        (n, r) => format!(
            "rounds with gatehouse first: {}, with the minimal relay first: {r}",
            n - r
        ),
    }
}

/// What each server is sent: `warmup` first (not measured), then `bodies`, `concurrency` at
/// a time.
struct Workload<'a> {
    warmup: &'a [Vec<u8>],
    bodies: &'a [Vec<u8>],
    concurrency: usize,
}

/// One round: gatehouse and, on RabbitMQ, the minimal relay, in the order asked for.
async fn one_round(
    common: &Common,
    backend: &'static str,
    workload: &Workload<'_>,
    relay_first: bool,
) -> anyhow::Result<Round> {
    let relay = || async {
        match backend {
            "rabbitmq" => minimal_relay(common, workload).await.map(Some),
            _ => Ok(None),
        }
    };
    let (relay, gatehouse) = if relay_first {
        let relay = relay().await?;
        (relay, gatehouse_phase(common, backend, workload).await?)
    } else {
        let gatehouse = gatehouse_phase(common, backend, workload).await?;
        (relay().await?, gatehouse)
    };
    Ok(Round {
        gatehouse,
        relay,
        relay_first,
    })
}

/// What one round measured.
#[derive(Debug, serde::Serialize)]
struct Round {
    gatehouse: Phase,
    relay: Option<Phase>,
    relay_first: bool,
}

impl Round {
    /// gatehouse against the relay in this round, when it ran.
    fn ratios(&self) -> Option<Ratios> {
        let relay = self.relay.as_ref()?;
        Some(Ratios {
            throughput: self.gatehouse.accepted_per_second / relay.accepted_per_second,
            p99: self.gatehouse.latency.p99_ms / relay.latency.p99_ms,
            cpu: self.gatehouse.cpu.server_us / relay.cpu.server_us,
        })
    }
}

/// gatehouse's figures over the relay's.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Ratios {
    throughput: f64,
    p99: f64,
    cpu: f64,
}

impl Ratios {
    /// Each ratio's median over the rounds (each taken on its own).
    fn median(all: &[Ratios]) -> Ratios {
        Ratios {
            throughput: median(all.iter().map(|r| r.throughput)),
            p99: median(all.iter().map(|r| r.p99)),
            cpu: median(all.iter().map(|r| r.cpu)),
        }
    }
}

/// One server's phase, summed up.
#[derive(Debug, Clone, serde::Serialize)]
struct Phase {
    accepted_per_second: f64,
    latency: Percentiles,
    cpu: Cpu,
    peak_rss_mib: f64,
    failures: usize,
    /// gatehouse's dedupe window at the end of the phase: its memory is reserved up front, so
    /// the peak RSS does not depend on how full it got, but the figure says whether the run
    /// filled it (the default holds 100,000 keys).
    dedupe_window: Option<DedupeWindow>,
}

impl Phase {
    /// Every figure's median over `phases` (each taken on its own); the highest peak RSS and
    /// every failure.
    fn median<'a>(phases: impl Iterator<Item = &'a Phase> + Clone) -> Phase {
        let of = |figure: fn(&Phase) -> f64| median(phases.clone().map(figure));
        Phase {
            accepted_per_second: of(|p| p.accepted_per_second),
            latency: Percentiles {
                p50_ms: of(|p| p.latency.p50_ms),
                p99_ms: of(|p| p.latency.p99_ms),
                p999_ms: of(|p| p.latency.p999_ms),
                max_ms: of(|p| p.latency.max_ms),
            },
            cpu: Cpu {
                server_us: of(|p| p.cpu.server_us),
                driver_us: of(|p| p.cpu.driver_us),
                broker_us: of(|p| p.cpu.broker_us),
            },
            peak_rss_mib: phases.clone().map(|p| p.peak_rss_mib).fold(0.0, f64::max),
            failures: phases.clone().map(|p| p.failures).sum(),
            // The fullest: the rounds send the same number of webhooks.
            dedupe_window: phases
                .filter_map(|p| p.dedupe_window)
                .max_by(|a, b| a.keys.total_cmp(&b.keys)),
        }
    }
}

/// What gatehouse's `/metrics` says of its dedupe window.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct DedupeWindow {
    keys: f64,
    reserved_bytes: f64,
}

impl DedupeWindow {
    /// Read from gatehouse's `/metrics`; `None` when it cannot be read or does not say (a binary
    /// from before the gauges, run with `--gatehouse`): the figure is a note, not a measurement
    /// the run depends on.
    async fn of(running: &Running) -> Option<DedupeWindow> {
        let text = reqwest::get(running.url("/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let reserved_bytes = metric_sum(&text, "gatehouse_ingress_dedupe_window_reserved_bytes", &[]);
        (reserved_bytes > 0.0).then(|| DedupeWindow {
            keys: metric_sum(&text, "gatehouse_ingress_dedupe_window_keys", &[]),
            reserved_bytes,
        })
    }
}

/// gatehouse ingress on `backend`, measured as [`measure`] does.
async fn gatehouse_phase(
    common: &Common,
    backend: &'static str,
    workload: &Workload<'_>,
) -> anyhow::Result<Phase> {
    let scratch = Scratch::new("ingest")?;
    let extra = source(&scratch)?;
    let running = Running::start(common, &scratch, "ingress", backend, &extra).await?;
    let url = running.url(WEBHOOK_PATH);
    let run = measure(&url, running.pid(), workload).await;
    let window = DedupeWindow::of(&running).await;
    running.stop().await?;
    Ok(Phase {
        dedupe_window: window,
        ..run?
    })
}

/// Warms the server `pid` up through `url` with the workload's warm-up (not measured), then
/// drives its bodies through it: what the load saw, the CPU each process spent a message and
/// the server's peak RSS.
async fn measure(url: &str, pid: u32, workload: &Workload<'_>) -> anyhow::Result<Phase> {
    let url = [url.to_owned()];
    Load::prepare(SECRET, workload.warmup)?
        .drive(&url, workload.concurrency)
        .await?;
    let load = Load::prepare(SECRET, workload.bodies)?;
    let before = (cpu_of(pid), own_cpu(), broker_cpu());
    let driven = load.drive(&url, workload.concurrency).await?;
    let cpu = Cpu::since(before, cpu_of(pid), workload.bodies.len());
    let accepted_per_second = driven.accepted_per_second();
    let mut latencies = driven.latencies;
    Ok(Phase {
        accepted_per_second,
        latency: percentiles(&mut latencies),
        cpu,
        peak_rss_mib: peak_rss_kib(&pid.to_string()) as f64 / 1024.0,
        failures: driven.failures,
        dedupe_window: None,
    })
}

/// CPU microseconds per message, by process, over a measured phase.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Cpu {
    /// The server measured: gatehouse, or the minimal relay.
    server_us: f64,
    /// This process: the HTTP load generator, or the raw publisher.
    driver_us: f64,
    broker_us: f64,
}

impl Cpu {
    fn since(before: (Duration, Duration, Duration), server_now: Duration, messages: usize) -> Cpu {
        let per = |spent: Duration| spent.as_secs_f64() * 1e6 / messages.max(1) as f64;
        Cpu {
            server_us: per(server_now.saturating_sub(before.0)),
            driver_us: per(own_cpu().saturating_sub(before.1)),
            broker_us: per(broker_cpu().saturating_sub(before.2)),
        }
    }
}

/// The `[[sources]]` entry the bodies are signed for (hub-signature, source `confluence`).
pub fn source(scratch: &Scratch) -> anyhow::Result<String> {
    Ok(format!(
        "[[sources]]\nname = \"confluence\"\nscheme = \"hub-signature\"\nsecrets = [{{ id = \"bench\", value = \"{}\" }}]\n",
        scratch.secret("hub-secret", SECRET)?
    ))
}

/// Runs the minimal relay ([`crate::relay`]) as a child process in front of a fresh copy of
/// gatehouse's topology, and drives the same load through it.
async fn minimal_relay(common: &Common, workload: &Workload<'_>) -> anyhow::Result<Phase> {
    let (prefix, topology, connection) = declare_topology(common, "bench-relay").await?;
    let _ = connection.close(200, "declared".into()).await;
    let port = free_port()?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("relay")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--amqp-url", &common.amqp_url])
        .args(["--exchange", topology.events_exchange()])
        .args(["--routing-key", ROUTING_KEY])
        .args(["--secret", SECRET])
        .kill_on_drop(true)
        .spawn()?;
    let measured = async {
        let base = format!("http://127.0.0.1:{port}");
        wait_ready(&format!("{base}/readyz"), Duration::from_secs(30)).await?;
        measure(
            &format!("{base}{WEBHOOK_PATH}"),
            child.id().unwrap_or(0),
            workload,
        )
        .await
    }
    .await;
    let _ = child.kill().await;
    delete_prefix(&common.amqp_url, &prefix).await;
    measured
}

/// A fresh copy of gatehouse's RabbitMQ topology under a new prefix starting with `name`
/// (removed with [`delete_prefix`]), and the connection that declared it.
async fn declare_topology(
    common: &Common,
    name: &str,
) -> anyhow::Result<(String, ::gatehouse::queue::rabbitmq::Topology, lapin::Connection)> {
    let prefix = format!("{name}-{}", ulid::Ulid::generate().to_string().to_lowercase());
    let settings = ::gatehouse::config::QueueSettings {
        prefix: prefix.clone(),
        ..Default::default()
    };
    let topology = ::gatehouse::queue::rabbitmq::Topology::new(&settings);
    let connection =
        lapin::Connection::connect(&common.amqp_url, lapin::ConnectionProperties::default()).await?;
    topology.declare(&connection).await?;
    Ok((prefix, topology, connection))
}

/// Confirmed publishes of `bodies` to the same topology gatehouse uses, `concurrency` in flight.
async fn raw_rabbitmq(common: &Common, bodies: Arc<Vec<Vec<u8>>>, concurrency: usize) -> anyhow::Result<f64> {
    let (prefix, topology, connection) = declare_topology(common, "bench-raw").await?;
    let mut channels = Vec::new();
    for _ in 0..4 {
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        channels.push(channel);
    }
    let exchange = topology.events_exchange().to_owned();
    let permits = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(bodies.len());
    for (i, body) in bodies.iter().enumerate() {
        let permit = permits.clone().acquire_owned().await?;
        let channel = channels[i % channels.len()].clone();
        let exchange = exchange.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into());
            let options = BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            };
            let confirmed = channel
                .basic_publish(
                    exchange.as_str().into(),
                    ROUTING_KEY.into(),
                    options,
                    &body,
                    properties,
                )
                .await?
                .await?;
            drop(permit);
            Ok::<bool, lapin::Error>(matches!(confirmed, Confirmation::Ack(None)))
        }));
    }
    let mut acked = 0;
    for task in tasks {
        if matches!(task.await, Ok(Ok(true))) {
            acked += 1;
        }
    }
    let elapsed = started.elapsed();
    let _ = connection.close(200, "done".into()).await;
    delete_prefix(&common.amqp_url, &prefix).await;
    anyhow::ensure!(
        acked == bodies.len(),
        "only {acked} of {} raw publishes were confirmed",
        bodies.len()
    );
    Ok(bodies.len() as f64 / elapsed.as_secs_f64())
}

/// The most SQLite can do with `bodies` at `concurrency`: the same durable insert into the same
/// table of a fresh store (same `synchronous` setting, and gatehouse's own statement shapes,
/// `queue::embedded::insert_messages`), grouped as well as `concurrency` concurrent publishers
/// could ever be, one transaction per `concurrency` rows, back to back.
async fn raw_embedded(bodies: Arc<Vec<Vec<u8>>>, concurrency: usize) -> anyhow::Result<f64> {
    let scratch = Scratch::new("raw-embedded")?;
    let store = ::gatehouse::store::Store::connect(&::gatehouse::config::StoreSettings {
        url: ::gatehouse::config::SensitiveUrl::new(format!("sqlite://{}/raw.db", scratch.0.display())),
        max_connections: 16,
        encryption_key: None,
        retired_encryption_keys: Vec::new(),
    })
    .await?;
    let messages: Vec<::gatehouse::queue::OutgoingMessage> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| ::gatehouse::queue::OutgoingMessage {
            routing_key: ROUTING_KEY.to_owned(),
            message_id: format!("raw-{i}"),
            event_id: format!("raw-{i}"),
            event_type: "user.deactivated".to_owned(),
            body: body.clone(),
        })
        .collect();
    let started = Instant::now();
    for chunk in messages.chunks(concurrency.max(1)) {
        let now = chrono::Utc::now().timestamp_millis();
        let mut tx = store.begin_write().await?;
        let rows: Vec<&::gatehouse::queue::OutgoingMessage> = chunk.iter().collect();
        ::gatehouse::queue::embedded::insert_messages(&mut tx, &rows, now).await?;
        tx.commit().await?;
    }
    Ok(bodies.len() as f64 / started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(rate: f64, p99_ms: f64, server_us: f64, rss: f64, failures: usize) -> Phase {
        Phase {
            accepted_per_second: rate,
            latency: Percentiles {
                p50_ms: p99_ms / 2.0,
                p99_ms,
                p999_ms: p99_ms * 2.0,
                max_ms: p99_ms * 3.0,
            },
            cpu: Cpu {
                server_us,
                driver_us: 20.0,
                broker_us: 60.0,
            },
            peak_rss_mib: rss,
            failures,
            dedupe_window: None,
        }
    }

    #[test]
    fn rounds_are_summed_up_by_medians_and_paired_ratios() {
        let mut rounds = vec![
            Round {
                gatehouse: phase(8_000.0, 10.0, 50.0, 38.0, 0),
                relay: Some(phase(10_000.0, 8.0, 25.0, 21.0, 0)),
                relay_first: false,
            },
            Round {
                gatehouse: phase(9_000.0, 12.0, 40.0, 39.5, 2),
                relay: Some(phase(9_000.0, 12.0, 40.0, 20.0, 0)),
                relay_first: true,
            },
            Round {
                gatehouse: phase(6_000.0, 30.0, 60.0, 37.0, 1),
                relay: Some(phase(12_000.0, 10.0, 30.0, 22.0, 0)),
                relay_first: false,
            },
        ];
        for (round, keys) in rounds.iter_mut().zip([60_000.0, 100_000.0, 80_000.0]) {
            round.gatehouse.dedupe_window = Some(DedupeWindow {
                keys,
                reserved_bytes: 8_953_600.0,
            });
        }
        let gatehouse = Phase::median(rounds.iter().map(|round| &round.gatehouse));
        assert_eq!(
            gatehouse.dedupe_window.map(|window| window.keys),
            Some(100_000.0),
            "the fullest window"
        );
        assert_eq!(gatehouse.accepted_per_second, 8_000.0);
        assert_eq!(gatehouse.latency.p99_ms, 12.0);
        assert_eq!(gatehouse.cpu.server_us, 50.0);
        assert_eq!(gatehouse.peak_rss_mib, 39.5, "the highest peak, not a median");
        assert_eq!(gatehouse.failures, 3, "every failure counts");

        // Each round's ratios first, then their medians: not the ratio of the medians.
        let ratios: Vec<Ratios> = rounds.iter().filter_map(Round::ratios).collect();
        let median = Ratios::median(&ratios);
        assert_eq!(median.throughput, 0.8);
        assert_eq!(median.p99, 1.25);
        assert_eq!(median.cpu, 2.0);
        assert_eq!(
            order(&rounds),
            "rounds with gatehouse first: 2, with the minimal relay first: 1"
        );
        assert_eq!(order(&rounds[1..2]), "the minimal relay, then gatehouse");
    }
}
