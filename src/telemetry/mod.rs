//! Logging and metrics.
//!
//! Logs go to stderr as text or JSON lines (`log.format`); `RUST_LOG` overrides `log.level`.
//! Request spans carry `source` and `event_id`, so every line logged while handling a delivery
//! can be tied to it. Secrets never reach a log: config types print secret references only (see
//! `config::Secret`).

pub mod metrics;
pub mod worker_metrics;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::{LogFormat, LogSettings};

pub use metrics::Metrics;
pub use worker_metrics::WorkerMetrics;

/// Installs the global subscriber. Safe to call more than once (later calls are ignored), so
/// tests that build several apps in one process do not fail.
pub fn init(settings: &LogSettings) {
    use std::io::IsTerminal;
    let colors = settings.format == LogFormat::Text && std::io::stderr().is_terminal();
    let _ = tracing::subscriber::set_global_default(subscriber(settings, colors, std::io::stderr));
}

/// The subscriber gatehouse logs through, writing to `writer` (tests capture it).
pub fn subscriber<W>(
    settings: &LogSettings,
    colors: bool,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(colors)
        .with_span_events(FmtSpan::NONE);
    match settings.format {
        LogFormat::Json => Box::new(
            builder
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .finish(),
        ),
        LogFormat::Text => Box::new(builder.finish()),
    }
}
