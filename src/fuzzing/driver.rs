//! The stable mutational driver: replays a target's seed corpus, then runs mutations of it
//! (bit flips, byte edits, insertions and deletions, splices of two seeds, dictionary tokens,
//! interesting numbers), timing every execution. Not coverage-guided: it needs no nightly
//! toolchain and no instrumentation, so it runs in `cargo test` (a short run of every target,
//! in CI) and, with `GATEHOUSE_FUZZ_SECONDS` set, as a whole campaign on the stable toolchain
//! (`fuzz/README.md`).
//!
//! A panic is reported with the input that caused it (escaped, and saved under
//! `fuzz/artifacts/<target>/` by the campaign); an execution slower than [`SLOW`] is counted
//! as a hang and its input kept the same way.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::Target;

/// An execution slower than this counts as a hang.
pub const SLOW: Duration = Duration::from_millis(100);

/// Mutated inputs are cut to this length.
pub const MAX_INPUT: usize = 8 * 1024;

/// Tokens that matter to the parsers under test, inserted by mutations.
const DICTIONARY: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b":",
    b",",
    b"null",
    b"true",
    b"-0",
    b"1e400",
    b"\n",
    b"&",
    b"=",
    b"%",
    b"%26",
    b"%C3%A9",
    b"+",
    b"?",
    b"/",
    b"jwt",
    b"sha256=",
    b"v1,",
    b"whsec_",
    b"Bearer ",
    b"eyJ",
    b".",
    b"@",
    b"\x02",
    b"\x03",
    b"<",
    b">; rel=\"next\"",
    b"cursor=",
    b"file:",
    b"env:",
    b"GATEHOUSE__",
    b"[[sources]]",
    b"[[tenants]]",
    b"\"accountId\"",
    b"\"type\"",
    b"\"data\"",
    b"\"id\"",
    b"\"Resources\"",
    b"\"results\"",
    b"\"_links\"",
    b"\"next\"",
    b"\"attributes\"",
    b"\"context\"",
    b"\"timestamp\"",
    b"\"time\"",
    b"\"user\"",
    b"\"group\"",
    b"Z",
    b"T",
    b"+00:00",
];

/// Numbers at the edges of the types the parsers read into.
const NUMBERS: &[&[u8]] = &[
    b"0",
    b"-1",
    b"1",
    b"255",
    b"65536",
    b"2147483648",
    b"4294967296",
    b"9007199254740993",
    b"9223372036854775807",
    b"-9223372036854775808",
    b"18446744073709551615",
    b"18446744073709551616",
    b"100000000000",
    b"1e309",
    b"0.5",
    b"NaN",
    b"9999-12-31T23:59:59Z",
    b"0000-01-01T00:00:00Z",
    b"Fri, 31 Dec 9999 23:59:59 GMT",
];

/// The seed corpus of a target: every file in `fuzz/corpus/<name>/`, sorted by name.
pub fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = corpus_dir(name);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    paths.sort();
    paths
        .iter()
        .filter(|p| p.is_file())
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}

/// `fuzz/corpus/<name>/` in this checkout.
pub fn corpus_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
        .join(name)
}

/// A small deterministic generator (xorshift), so a run is repeated by its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a [u8]]) -> &'a [u8] {
        items[self.below(items.len())]
    }
}

/// One to four mutations of `input`, `others` giving material to splice in.
pub fn mutate(input: &[u8], others: &[Vec<u8>], rng: &mut Rng) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(10) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = rng.next_u64() as u8;
            }
            2 => {
                let run: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.next_u64() as u8).collect();
                out.splice(at..at, run);
            }
            3 if !out.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                out.drain(at.min(end)..end);
            }
            4 if !out.is_empty() => {
                let start = rng.below(out.len());
                let end = (start + 1 + rng.below(32)).min(out.len());
                let chunk = out[start..end].to_vec();
                out.splice(at..at, chunk);
            }
            5 if !others.is_empty() => {
                let other = &others[rng.below(others.len())];
                if !other.is_empty() {
                    let start = rng.below(other.len());
                    let end = (start + 1 + rng.below(64)).min(other.len());
                    out.splice(at..at, other[start..end].iter().copied());
                }
            }
            6 | 7 => {
                let token = rng.pick(DICTIONARY);
                out.splice(at..at, token.iter().copied());
            }
            8 => replace_number(&mut out, rng),
            _ if !out.is_empty() => {
                // Cut the tail: truncated input.
                out.truncate(at);
            }
            _ => out.push(rng.next_u64() as u8),
        }
    }
    out.truncate(MAX_INPUT);
    out
}

/// Replaces a run of digits with an edge number (or inserts one when there is none).
fn replace_number(out: &mut Vec<u8>, rng: &mut Rng) {
    let number = rng.pick(NUMBERS);
    let digits: Vec<usize> = (0..out.len()).filter(|&i| out[i].is_ascii_digit()).collect();
    if digits.is_empty() {
        let at = rng.below(out.len() + 1);
        out.splice(at..at, number.iter().copied());
        return;
    }
    let start = digits[rng.below(digits.len())];
    let end = (start..out.len())
        .find(|&i| !out[i].is_ascii_digit())
        .unwrap_or(out.len());
    out.splice(start..end, number.iter().copied());
}

/// What a run of one target did.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    pub executions: u64,
    pub elapsed: Duration,
    pub slowest: Duration,
    /// Inputs that took longer than [`SLOW`].
    pub slow_inputs: Vec<Vec<u8>>,
}

/// Runs `input` through `target`, timed; a panic is re-raised after the input is printed.
pub fn execute(target: &Target, input: &[u8]) -> Duration {
    let started = Instant::now();
    let outcome = std::panic::catch_unwind(|| (target.run)(input));
    let took = started.elapsed();
    if let Err(panic) = outcome {
        eprintln!(
            "fuzz target {} panicked on input {:?}",
            target.name,
            String::from_utf8_lossy(input)
        );
        save_artifact(target.name, "crash", input);
        std::panic::resume_unwind(panic);
    }
    took
}

/// Keeps an input under `fuzz/artifacts/<target>/` (best effort: a read-only checkout skips it).
pub fn save_artifact(target: &str, kind: &str, input: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("artifacts")
        .join(target);
    let digest = ring::digest::digest(&ring::digest::SHA256, input);
    let name = format!("{kind}-{}", hex::encode(&digest.as_ref()[..8]));
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join(name), input);
    }
}

/// The corpus, then mutations until `mutations` ran or `budget` passed, whichever comes first.
pub fn run(target: &Target, seeds: &[Vec<u8>], mutations: u64, budget: Duration, seed: u64) -> RunReport {
    let started = Instant::now();
    let mut report = RunReport::default();
    let record = |input: &[u8], report: &mut RunReport| {
        let took = execute(target, input);
        report.executions += 1;
        report.slowest = report.slowest.max(took);
        if took > SLOW {
            save_artifact(target.name, "slow", input);
            report.slow_inputs.push(input.to_vec());
        }
    };
    for input in seeds {
        record(input, &mut report);
    }
    let mut rng = Rng::new(seed);
    let empty = Vec::new();
    let mut done = 0;
    while done < mutations {
        // Check the clock every 64 executions: cheap, and close enough to the budget.
        if done % 64 == 0 && started.elapsed() >= budget {
            break;
        }
        let base = if seeds.is_empty() {
            &empty
        } else {
            &seeds[rng.below(seeds.len())]
        };
        let input = mutate(base, seeds, &mut rng);
        record(&input, &mut report);
        done += 1;
    }
    report.elapsed = started.elapsed();
    report
}

#[cfg(test)]
mod tests {
    use super::super::TARGETS;
    use super::*;

    /// Mutations per target in the short run: about ten seconds for all of them in a debug build.
    const SHORT_RUN_MUTATIONS: u64 = 8_000;

    /// CI's short run: every target replays its committed corpus and survives mutations of it.
    /// (A slow execution is not failed here: a debug build on a busy CI machine is no measure;
    /// the campaign counts hangs on an optimized build.)
    #[test]
    fn every_target_survives_its_corpus_and_mutations_of_it() {
        for target in TARGETS {
            let seeds = corpus(target.name);
            let report = run(
                target,
                &seeds,
                SHORT_RUN_MUTATIONS,
                Duration::from_secs(2),
                0x5eed,
            );
            assert!(report.executions > seeds.len() as u64, "{}", target.name);
        }
    }

    #[test]
    fn mutations_are_deterministic_and_bounded() {
        let seeds = vec![b"{\"a\": 12}".to_vec(), b"x=1&y=2".to_vec()];
        let first: Vec<Vec<u8>> = {
            let mut rng = Rng::new(7);
            (0..200).map(|_| mutate(&seeds[0], &seeds, &mut rng)).collect()
        };
        let mut rng = Rng::new(7);
        for expected in &first {
            let again = mutate(&seeds[0], &seeds, &mut rng);
            assert_eq!(&again, expected);
            assert!(again.len() <= MAX_INPUT);
        }
    }

    /// The stable campaign: `GATEHOUSE_FUZZ_SECONDS` (per target) and optionally
    /// `GATEHOUSE_FUZZ_TARGETS` (comma-separated names) and `GATEHOUSE_FUZZ_SEED`; run it on an
    /// optimized build (fuzz/README.md). Prints one line per target. An input seen slower than
    /// 100 ms is run again alone three times, and is a hang only if it is slow every time.
    #[test]
    #[ignore = "a fuzzing campaign: run on purpose, see fuzz/README.md"]
    fn campaign() {
        let seconds: u64 = std::env::var("GATEHOUSE_FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10);
        let only = std::env::var("GATEHOUSE_FUZZ_TARGETS").unwrap_or_default();
        let seed: u64 = std::env::var("GATEHOUSE_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5eed);
        let mut hangs = 0;
        for target in TARGETS {
            if !only.is_empty() && !only.split(',').any(|name| name.trim() == target.name) {
                continue;
            }
            let seeds = corpus(target.name);
            let report = run(target, &seeds, u64::MAX, Duration::from_secs(seconds), seed);
            // Slow every time alone: the input's own cost. Otherwise the machine stalled.
            let target_hangs = report
                .slow_inputs
                .iter()
                .filter(|input| (0..3).all(|_| execute(target, input) > SLOW))
                .count();
            println!(
                "{}\texecutions {}\tseconds {:.1}\tslowest_ms {:.2}\tslow_seen {}\thangs_over_100ms {}\tcorpus {}",
                target.name,
                report.executions,
                report.elapsed.as_secs_f64(),
                report.slowest.as_secs_f64() * 1000.0,
                report.slow_inputs.len(),
                target_hangs,
                seeds.len()
            );
            hangs += target_hangs;
        }
        assert_eq!(
            hangs, 0,
            "inputs slower than 100 ms every time (kept under fuzz/artifacts/)"
        );
    }
}
