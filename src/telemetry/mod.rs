//! Logging and metrics.
//!
//! Logs go to stderr as text or JSON lines (`log.format`); `RUST_LOG` overrides `log.level` when
//! it passes the same check (a refused one is said on stderr, and `log.level` is used).
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
    let rust_log = std::env::var("RUST_LOG").ok();
    let (directives, refused) = log_filter(rust_log.as_deref(), &settings.level);
    if let Some(why) = refused {
        // Nothing is logging yet: this is said where the logs would have gone.
        eprintln!(
            "RUST_LOG ignored, logging at log.level = {:?}: {why}",
            settings.level
        );
    }
    let filter = EnvFilter::try_new(directives).unwrap_or_else(|_| EnvFilter::new("info"));
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

/// The filter to log at: `RUST_LOG` when it is set (and not empty) and names a level in every
/// directive, as `log.level` must ([`crate::config::check_log_filter`]); otherwise `log.level`,
/// with why `RUST_LOG` was refused. Refused rather than taken as it is: a typo such as `inf` would
/// turn every line off, errors included.
fn log_filter<'a>(rust_log: Option<&'a str>, level: &'a str) -> (&'a str, Option<String>) {
    match rust_log.filter(|directives| !directives.is_empty()) {
        None => (level, None),
        Some(directives) => match crate::config::check_log_filter(directives) {
            Ok(()) => (directives, None),
            Err(why) => (level, Some(why)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn rust_log_overrides_log_level_only_when_it_names_levels() {
        assert_eq!(log_filter(None, "info"), ("info", None));
        assert_eq!(log_filter(Some(""), "info"), ("info", None));
        assert_eq!(
            log_filter(Some("warn,gatehouse::ingress=debug"), "info"),
            ("warn,gatehouse::ingress=debug", None)
        );
        let (chosen, refused) = log_filter(Some("inf"), "info");
        assert_eq!(chosen, "info");
        assert!(refused.is_some_and(|why| why.contains("`inf` is not a level")));
    }
}
