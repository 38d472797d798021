//! The `gatehouse` binary: parse the command line and hand over to [`gatehouse::cli`].

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's allocator: request handling allocates many small, short-lived
/// buffers across threads, where glibc spent about a fifth of the ingress's CPU. Built without
/// transparent huge pages (Cargo.toml), which kept every touched 2 MiB of its arenas resident
/// (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
