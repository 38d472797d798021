//! `parse`: what reading a hostile 1 MiB body costs the ingress. Each probe runs in a fresh
//! child process (this binary, `parse-probe`), so the growth of its peak resident set (`VmHWM`)
//! is the probe's own: gatehouse's normalizer (borrowed views of the body) next to building a
//! `serde_json::Value` of the same body, the way the ingress parsed before.

use std::process::Command;
use std::time::Instant;

use clap::{Args, ValueEnum};
use serde_json::json;

use crate::report::Results;

#[derive(Debug, Clone, Args)]
pub struct ParseArgs {
    /// Body size, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub body_bytes: usize,
}

impl Default for ParseArgs {
    fn default() -> Self {
        ParseArgs {
            body_bytes: 1024 * 1024,
        }
    }
}

/// How a probe reads the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Reader {
    /// `gatehouse::ingress::normalize::normalize`, as the ingress does.
    Normalize,
    /// A whole `serde_json::Value` of the body.
    Value,
}

/// The body's shape: what makes a tree of values expensive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shape {
    /// `[0,0,0,…]`: the most values per byte.
    FlatArray,
    /// Many small objects: `[{"a":0},…]`.
    SmallObjects,
}

/// A hub-style user event padded with `shape` to about `size` bytes.
fn body(shape: Shape, size: usize) -> Vec<u8> {
    let head = json!({"event": "user_created", "timestamp": chrono::Utc::now().timestamp_millis(), "user": {"accountId": "a1"}})
        .to_string();
    let (item, separator) = match shape {
        Shape::FlatArray => ("0", ","),
        Shape::SmallObjects => (r#"{"a":0}"#, ","),
    };
    // Written in place: building the body must not raise the peak the probe then measures.
    let mut body = String::with_capacity(size + 64);
    body.push_str(&head[..head.len() - 1]);
    body.push_str(",\"noise\":[");
    body.push_str(item);
    while body.len() + separator.len() + item.len() + 2 <= size {
        body.push_str(separator);
        body.push_str(item);
    }
    body.push_str("]}");
    body.into_bytes()
}

fn peak_rss_kib() -> u64 {
    crate::harness::peak_rss_kib("self")
}

/// The child's side: read one body the chosen way and print `peak-growth-kib micros`.
pub fn probe(reader: Reader, shape: Shape, size: usize) -> anyhow::Result<()> {
    let body = body(shape, size);
    let before = peak_rss_kib();
    let started = Instant::now();
    match reader {
        Reader::Normalize => {
            let source = ::gatehouse::config::SourceSettings::new(
                "bench",
                ::gatehouse::config::VerificationScheme::HubSignature,
                vec![],
            );
            let verified = ::gatehouse::ingress::verify::Verified::by_secret("bench");
            let normalized = ::gatehouse::ingress::normalize::normalize(
                &source,
                None,
                &Default::default(),
                &body,
                verified,
            )?;
            std::hint::black_box(&normalized);
        }
        Reader::Value => {
            let value: serde_json::Value = serde_json::from_slice(&body)?;
            std::hint::black_box(&value);
        }
    }
    let micros = started.elapsed().as_micros();
    println!("{} {micros}", peak_rss_kib().saturating_sub(before));
    Ok(())
}

/// Runs every reader on every shape, each in its own process.
pub fn run(args: &ParseArgs, results: &mut Results) -> anyhow::Result<()> {
    let me = std::env::current_exe()?;
    for shape in [Shape::FlatArray, Shape::SmallObjects] {
        let mut fields = Vec::new();
        let mut measured = serde_json::Map::new();
        for reader in [Reader::Normalize, Reader::Value] {
            let output = Command::new(&me)
                .args(["parse-probe", "--body-bytes", &args.body_bytes.to_string()])
                .arg("--reader")
                .arg(
                    reader
                        .to_possible_value()
                        .map(|v| v.get_name().to_owned())
                        .unwrap_or_default(),
                )
                .arg("--shape")
                .arg(
                    shape
                        .to_possible_value()
                        .map(|v| v.get_name().to_owned())
                        .unwrap_or_default(),
                )
                .output()?;
            anyhow::ensure!(
                output.status.success(),
                "parse probe failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let text = String::from_utf8_lossy(&output.stdout);
            let mut numbers = text.split_whitespace().map(|n| n.parse::<u64>().unwrap_or(0));
            let (kib, micros) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
            let multiple = (kib * 1024) as f64 / args.body_bytes as f64;
            let name = format!("{reader:?}").to_lowercase();
            fields.push((
                if reader == Reader::Normalize {
                    "gatehouse normalize"
                } else {
                    "serde_json::Value"
                },
                format!(
                    "peak +{:.1} MiB ({multiple:.1}× the body), {:.1} ms",
                    kib as f64 / 1024.0,
                    micros as f64 / 1000.0
                ),
            ));
            measured.insert(
                name,
                json!({"peak_growth_kib": kib, "multiple_of_body": multiple, "micros": micros}),
            );
        }
        results.add(
            &format!("parse: a {} KiB body, {shape:?}", args.body_bytes / 1024),
            fields,
            serde_json::Value::Object(measured),
        );
    }
    Ok(())
}
