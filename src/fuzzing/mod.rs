//! Fuzz targets for everything that parses outside input, in one place that both fuzzers reach:
//! the coverage-guided harness in `fuzz/` (libFuzzer, out of the workspace) and the stable
//! mutational driver here ([`driver`]), which CI runs briefly as a unit test and which can run a
//! whole campaign on a machine with the stable toolchain only (`fuzz/README.md`).
//!
//! Each target is a `fn(&[u8])` that feeds the bytes to the real parser or verifier and asserts
//! what must hold whatever the input: no panic, the verifier accepts what was signed properly
//! and refuses what was not, canonical forms are deterministic, round trips come back equal.
//! Inputs that need several parts (headers, a query, a body) are newline-separated fields
//! ([`fields`]), so the seed corpus in `fuzz/corpus/<target>/` stays readable.
//!
//! Not part of gatehouse's interface: hidden from the docs, used by `fuzz/` and the tests only.

pub mod atlassian;
pub mod audit;
pub mod config;
pub mod driver;
pub mod payloads;
pub mod qsh_spec;
pub mod verifiers;

use std::future::Future;

use futures_util::FutureExt;

/// One fuzz target: its name (also its corpus folder, `fuzz/corpus/<name>/`) and its entry point.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every target, in the order the campaign runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "connect_jwt",
        run: verifiers::connect_jwt,
    },
    Target {
        name: "jwt_der",
        run: verifiers::jwt_and_der,
    },
    Target {
        name: "qsh",
        run: verifiers::qsh_canonical,
    },
    Target {
        name: "hub_signature",
        run: verifiers::hub_signature,
    },
    Target {
        name: "standard_webhooks",
        run: verifiers::standard_webhooks,
    },
    Target {
        name: "url_token",
        run: verifiers::url_token,
    },
    Target {
        name: "normalize",
        run: payloads::normalize,
    },
    Target {
        name: "connect_lifecycle",
        run: payloads::connect_lifecycle,
    },
    Target {
        name: "config",
        run: config::settings,
    },
    Target {
        name: "audit_canonical",
        run: audit::canonical_form,
    },
    Target {
        name: "scrub_and_hash",
        run: audit::scrub_and_hash,
    },
    Target {
        name: "scim_response",
        run: atlassian::scim_response,
    },
    Target {
        name: "confluence_response",
        run: atlassian::confluence_response,
    },
    Target {
        name: "events_stream_response",
        run: atlassian::events_stream_response,
    },
    Target {
        name: "atlassian_answer",
        run: atlassian::answer_headers_and_errors,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// Splits `data` into `count` fields: the first `count - 1` end at a newline, the last takes the
/// rest (a body may hold newlines). Missing fields are empty.
pub fn fields<const COUNT: usize>(data: &[u8]) -> [&[u8]; COUNT] {
    let mut out: [&[u8]; COUNT] = [&[]; COUNT];
    let mut rest = data;
    for (index, slot) in out.iter_mut().enumerate() {
        if index + 1 == COUNT {
            *slot = rest;
            break;
        }
        match rest.iter().position(|&b| b == b'\n') {
            Some(end) => {
                *slot = &rest[..end];
                rest = &rest[end + 1..];
            }
            None => {
                *slot = rest;
                rest = &[];
            }
        }
    }
    out
}

/// The bytes as text, invalid UTF-8 replaced.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The output of a future that never waits (the targets' lookups are in memory).
fn complete<F: Future>(future: F) -> F::Output {
    match future.now_or_never() {
        Some(output) => output,
        None => panic!("a fuzz target's future waited: its lookups must be in memory"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_split_on_newlines_and_keep_the_rest_whole() {
        assert_eq!(fields::<3>(b"a\nb\nc\nd"), [&b"a"[..], b"b", b"c\nd"]);
        assert_eq!(fields::<3>(b"a"), [&b"a"[..], b"", b""]);
        assert_eq!(fields::<1>(b"a\nb"), [&b"a\nb"[..]]);
    }

    #[test]
    fn target_names_are_unique_and_have_a_corpus() {
        let names: std::collections::BTreeSet<&str> = TARGETS.iter().map(|t| t.name).collect();
        assert_eq!(names.len(), TARGETS.len());
        for name in names {
            assert!(
                !driver::corpus(name).is_empty(),
                "fuzz/corpus/{name}/ holds no seed"
            );
        }
    }
}
