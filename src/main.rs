//! The `gatehouse` binary: parse the command line and hand over to [`gatehouse::cli`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = gatehouse::cli::Cli::parse();
    // Every HTTP and AMQP client of the process uses rustls with ring.
    gatehouse::app::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(gatehouse::cli::run(cli))
}
