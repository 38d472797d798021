//! TLS for every client of the process (reqwest towards Atlassian, lapin towards RabbitMQ): both
//! use rustls, with ring as its one crypto provider.

/// Installs ring as rustls's process-wide crypto provider. Idempotent: every entry point (the
/// binary, the demo, the clients, the tests) may call it.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
