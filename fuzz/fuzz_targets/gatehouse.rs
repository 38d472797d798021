//! The libFuzzer entry point for every gatehouse fuzz target (src/fuzzing): the target is named
//! by `GATEHOUSE_FUZZ_TARGET`. Every execution is timed; one slower than 100 ms is kept under
//! `fuzz/artifacts/<target>/slow-*` and counted on standard error (libFuzzer's own `-timeout`
//! only counts whole seconds).
#![no_main]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use gatehouse::fuzzing::{Target, driver, target};

static SLOW: AtomicU64 = AtomicU64::new(0);

fn chosen() -> &'static Target {
    static CHOSEN: OnceLock<&'static Target> = OnceLock::new();
    CHOSEN.get_or_init(|| {
        let name = std::env::var("GATEHOUSE_FUZZ_TARGET").unwrap_or_default();
        match target(&name) {
            Some(target) => target,
            None => {
                let names: Vec<&str> = gatehouse::fuzzing::TARGETS.iter().map(|t| t.name).collect();
                eprintln!("set GATEHOUSE_FUZZ_TARGET to one of: {}", names.join(", "));
                std::process::exit(2);
            }
        }
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let target = chosen();
    let started = Instant::now();
    (target.run)(data);
    let took = started.elapsed();
    if took > driver::SLOW {
        let count = SLOW.fetch_add(1, Ordering::Relaxed) + 1;
        eprintln!("SLOW_EXECUTION target={} ms={} count={count}", target.name, took.as_millis());
        driver::save_artifact(target.name, "slow", data);
    }
});
