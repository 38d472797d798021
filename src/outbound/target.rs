//! Where outbound deliveries may go, checked again at every attempt: a host name resolves only
//! to public addresses unless the endpoint allows private ones (a name that points into the
//! private network, or is made to later, cannot turn a delivery into a request to an internal
//! service), redirects are never followed, and no proxy from the environment is used.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::config::is_private_address;

/// Resolves with the system resolver and drops every non-public address; a name with none left
/// fails to resolve, with the reason.
#[derive(Debug, Clone, Copy)]
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|addr| !is_private_address(addr.ip()))
                .collect();
            if public.is_empty() {
                return Err(format!(
                    "refused: {host} resolves only to private or local addresses ({})",
                    all.iter()
                        .map(|a| a.ip().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// The client one endpoint's deliveries go out with.
pub fn client(timeout: Duration, allow_private: bool) -> reqwest::Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")));
    if allow_private {
        builder.build()
    } else {
        builder.dns_resolver(PublicOnly).build()
    }
}

/// Why the error chain of a failed request says it was refused by `PublicOnly`, if it was.
pub fn refused_target(error: &reqwest::Error) -> Option<String> {
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = source {
        let text = e.to_string();
        if text.starts_with("refused: ") {
            return Some(text);
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_that_resolve_into_the_private_network_are_refused_at_send_time() {
        crate::app::install_crypto_provider();
        // `localhost` resolves from /etc/hosts, without a network.
        let refused = PublicOnly
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .expect("localhost is refused");
        assert!(
            refused
                .to_string()
                .starts_with("refused: localhost resolves only to private"),
            "{refused}"
        );

        // Through a client, as a delivery would go: refused before any connection is made.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = client(Duration::from_secs(5), false).unwrap();
        let error = client
            .post(format!("http://localhost:{port}/hook"))
            .send()
            .await
            .unwrap_err();
        assert!(refused_target(&error).is_some(), "{error:?}");
        listener.set_nonblocking(true).unwrap();
        assert!(listener.accept().is_err(), "nothing connected");
    }
}
