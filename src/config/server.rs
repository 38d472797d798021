//! `[server]`, `[log]` and `[ingress]`: the HTTP listener, logging, and the ingress's own
//! duplicate window, with their checks.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The HTTP listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Where the ingress listens. Port 0 picks a free port (tests).
    #[serde(deserialize_with = "listen_address")]
    pub listen: SocketAddr,
    /// Bodies larger than this are refused with 413 before they are read in full.
    pub max_body_bytes: usize,
    /// A request that takes longer (usually a sender trickling its body) gets 408.
    pub request_timeout_seconds: u64,
    /// Requests beyond this many in flight get 503 at once instead of queueing in memory.
    pub max_concurrent_requests: usize,
    /// On SIGTERM, in-flight requests get this long to finish.
    pub shutdown_grace_seconds: u64,
    /// A request's line and headers must arrive within this once its first byte has; a client
    /// that trickles them (or sends half a request line and stops) is disconnected.
    pub header_read_timeout_seconds: u64,
    /// A kept-alive connection with no request for this long is closed.
    pub keep_alive_idle_seconds: u64,
    /// Open connections at most; a connection beyond this is answered 503 at once and closed,
    /// so idle or slow clients cannot hold every socket.
    pub max_connections: usize,
    /// Open connections from one client address at most (beyond: 503 at once). A quarter of
    /// `max_concurrent_requests` by default, so no one address can take every request place
    /// (a request needs a connection). Behind a load balancer every connection comes from its
    /// few addresses: raise it to `max_connections`.
    pub max_connections_per_peer: usize,
}

/// An IP address and port; a host name (`localhost:8080`) is refused with what to write instead,
/// where the address parser says only that the syntax is wrong.
fn listen_address<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "`{text}` is not an IP address and port: write e.g. `127.0.0.1:8080` (this machine only) \
             or `0.0.0.0:8080` (every interface); a host name is not accepted"
        ))
    })
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1024 * 1024,
            request_timeout_seconds: 15,
            max_concurrent_requests: 1024,
            shutdown_grace_seconds: 30,
            header_read_timeout_seconds: 10,
            keep_alive_idle_seconds: 75,
            max_connections: 4096,
            max_connections_per_peer: 256,
        }
    }
}

/// How gatehouse logs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `info,gatehouse::ingress=debug`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The most keys the ingress's duplicate window may hold: 1.0 GiB reserved
/// (`ingress::dedupe::reserved_bytes`).
pub const MAX_DEDUPE_WINDOW: usize = 10_000_000;

/// The most memory the ingress's dedupe window takes for each key it is sized for, whatever the
/// key's length: the bound `ingress.dedupe_window_size` is stated in. The window
/// (`ingress::dedupe::reserved_bytes`) is held to it by a test, at sizes up to a million.
pub const DEDUPE_BYTES_PER_KEY: usize = 140;

/// The ingress's own duplicate window (the authoritative dedupe is the worker's claim).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngressSettings {
    /// How many recently published dedupe keys are remembered (reserved up front: see
    /// `ingress::dedupe::reserved_bytes`; at most [`DEDUPE_BYTES_PER_KEY`] bytes a key, whatever its
    /// length).
    pub dedupe_window_size: usize,
    /// How long a published dedupe key is remembered.
    pub dedupe_window_seconds: u64,
}

impl Default for IngressSettings {
    fn default() -> Self {
        IngressSettings {
            dedupe_window_size: 100_000,
            dedupe_window_seconds: 3_600,
        }
    }
}

/// Checks `[server]`, `[ingress]` and `[log]`.
pub(super) fn validate(settings: &super::Settings, error: &mut impl FnMut(String, String)) {
    if let Err(why) = check_log_filter(&settings.log.level) {
        error("log.level".into(), why);
    }
    let server = &settings.server;
    if server.max_body_bytes == 0 {
        error("server.max_body_bytes".into(), "must be greater than 0".into());
    }
    if server.request_timeout_seconds == 0 {
        error(
            "server.request_timeout_seconds".into(),
            "must be greater than 0".into(),
        );
    }
    if server.max_concurrent_requests == 0 {
        error(
            "server.max_concurrent_requests".into(),
            "must be greater than 0".into(),
        );
    }
    for (key, value, max) in [
        (
            "server.header_read_timeout_seconds",
            server.header_read_timeout_seconds,
            3_600,
        ),
        (
            "server.keep_alive_idle_seconds",
            server.keep_alive_idle_seconds,
            86_400,
        ),
        ("server.max_connections", server.max_connections as u64, 1_000_000),
        (
            "server.max_connections_per_peer",
            server.max_connections_per_peer as u64,
            1_000_000,
        ),
    ] {
        if value == 0 || value > max {
            error(key.into(), format!("must be between 1 and {max}"));
        }
    }

    let window = settings.ingress.dedupe_window_size;
    if window == 0 || window > MAX_DEDUPE_WINDOW {
        error(
            "ingress.dedupe_window_size".into(),
            format!(
                "must be between 1 and {MAX_DEDUPE_WINDOW} (each entry takes at most {} bytes, and the window is reserved up front)",
                DEDUPE_BYTES_PER_KEY
            ),
        );
    }
}

/// Checks a `log.level` as the logger will read it: a filter `tracing` can parse, every
/// directive of which names a level. `tracing` reads a bare word that is not a level as a target
/// with every level on, so a typo such as `inf` would keep the lines of a target nothing logs to
/// and silence every other line, errors included; and a filter it cannot parse would be replaced
/// by `info` without a word.
pub fn check_log_filter(filter: &str) -> Result<(), String> {
    const EXAMPLE: &str = "e.g. `info` or `info,gatehouse::ingress=debug`";
    if filter.split(',').all(|directive| directive.trim().is_empty()) {
        return Err(format!("is empty; name a level, {EXAMPLE}"));
    }
    if filter.contains(char::is_whitespace) {
        // `tracing` misreads a directive with a space around it (`warn, lapin=error`).
        return Err(format!(
            "`{filter}` has spaces; separate its directives with commas alone, {EXAMPLE}"
        ));
    }
    if let Err(why) = tracing_subscriber::EnvFilter::builder().parse(filter) {
        return Err(format!("`{filter}` is not a log filter ({why}); {EXAMPLE}"));
    }
    for directive in filter.split(',').filter(|d| !d.is_empty()) {
        if !directive.contains('=') && directive.parse::<tracing::level_filters::LevelFilter>().is_err() {
            return Err(format!(
                "`{directive}` is not a level (trace, debug, info, warn, error or off), and a target \
                 or span with no level would turn every other line off; give it one after `=`, \
                 e.g. `{directive}=debug`"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_log_filter;

    #[test]
    fn a_log_filter_names_a_level_in_every_directive() {
        for good in [
            "info",
            "WARN",
            "off",
            "info,gatehouse::ingress=debug",
            "warn,lapin=error",
            "info,[webhook]=debug",
            "info,[webhook{source=admin}]=trace",
        ] {
            assert_eq!(check_log_filter(good), Ok(()), "{good}");
        }
        for (bad, says) in [
            ("inf", "`inf` is not a level"),
            ("info,gatehouse", "`gatehouse` is not a level"),
            ("[webhook]", "`[webhook]` is not a level"),
            ("gatehouse=loud", "is not a log filter"),
            ("info,=debug", "is not a log filter"),
            ("", "is empty"),
            (" , ", "is empty"),
            (",", "is empty"),
            ("warn, lapin=error", "has spaces"),
            ("info ", "has spaces"),
        ] {
            let why = check_log_filter(bad).expect_err(bad);
            assert!(why.contains(says), "{bad}: {why}");
        }
    }
}
