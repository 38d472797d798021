//! `gatehouse probe`: asks the gatehouse running with this config whether it is ready (or, with
//! `--live`, alive), for container health checks. The image carries no curl, and the probe
//! knows where to ask from the config (`server.listen`, an unspecified address asked on
//! loopback). Exit 0 when the answer is 200, 1 otherwise, with the answer printed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use crate::config::Settings;

/// How long the probe waits for an answer: a health check's own timeout is usually longer.
const TIMEOUT: Duration = Duration::from_secs(3);

pub async fn run(settings: &Settings, live: bool) -> ExitCode {
    let url = format!(
        "http://{}{}",
        reachable(settings.server.listen),
        if live { "/healthz" } else { "/readyz" }
    );
    let client = match reqwest::Client::builder().timeout(TIMEOUT).build() {
        Ok(client) => client,
        Err(error) => {
            eprintln!("probe: {error}");
            return ExitCode::FAILURE;
        }
    };
    match client.get(&url).send().await {
        Ok(response) => {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            println!("{} {}", status.as_u16(), body.trim());
            if status == reqwest::StatusCode::OK {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("probe: no answer from {url}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Where to reach a listener bound to `listen`: an unspecified address on loopback.
fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port()),
        _ => listen,
    }
}

#[cfg(test)]
mod tests {
    use super::reachable;

    #[test]
    fn an_unspecified_listen_address_is_asked_on_loopback() {
        assert_eq!(
            reachable("0.0.0.0:8080".parse().unwrap()),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            reachable("[::]:8080".parse().unwrap()),
            "[::1]:8080".parse().unwrap()
        );
        assert_eq!(
            reachable("10.0.0.5:9000".parse().unwrap()),
            "10.0.0.5:9000".parse().unwrap()
        );
    }
}
