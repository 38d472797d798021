//! Connect's query string hash: binds a JWT to one method, path and query, so a token captured
//! from one request cannot be replayed against another.
//!
//! `qsh = hex(SHA-256(METHOD & canonical_uri & canonical_query))`, canonicalized exactly as
//! Atlassian's reference implementations do:
//! - canonical URI: the path relative to the app's base URL path, `&` as `%26`, a leading `/`, no
//!   trailing `/` (an empty path is `/`);
//! - canonical query: `jwt` dropped, parameters sorted by name, repeated values sorted and joined
//!   by `,`, names and values percent-encoded per RFC 3986 (only `A-Za-z0-9-._~` left alone).

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use ring::digest;

/// Everything but the RFC 3986 unreserved characters is encoded.
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The canonical request string (`METHOD&uri&query`).
pub fn canonical_request(method: &str, path: &str, query: Option<&str>, base_path: &str) -> String {
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        canonical_uri(path, base_path),
        canonical_query(query)
    )
}

/// The `qsh` claim value for a request.
pub fn qsh(method: &str, path: &str, query: Option<&str>, base_path: &str) -> String {
    let canonical = canonical_request(method, path, query, base_path);
    hex::encode(digest::digest(&digest::SHA256, canonical.as_bytes()))
}

fn canonical_uri(path: &str, base_path: &str) -> String {
    let base = base_path.trim_end_matches('/');
    let relative = if !base.is_empty() && (path == base || path.starts_with(&format!("{base}/"))) {
        &path[base.len()..]
    } else {
        path
    };
    let mut uri = relative.replace('&', "%26");
    if !uri.starts_with('/') {
        uri.insert(0, '/');
    }
    while uri.len() > 1 && uri.ends_with('/') {
        uri.pop();
    }
    uri
}

fn canonical_query(query: Option<&str>) -> String {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return String::new();
    };
    let mut params: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if name == "jwt" {
            continue;
        }
        params
            .entry(name.into_owned())
            .or_default()
            .push(value.into_owned());
    }
    params
        .into_iter()
        .map(|(name, mut values)| {
            values.sort();
            let values: Vec<String> = values.iter().map(|v| encode(v)).collect();
            format!("{}={}", encode(&name), values.join(","))
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(value: &str) -> String {
    utf8_percent_encode(value, RFC3986).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atlassian_documented_examples() {
        assert_eq!(
            canonical_request("get", "/", Some("param=foo"), ""),
            "GET&/&param=foo"
        );
        assert_eq!(canonical_request("POST", "/user", None, ""), "POST&/user&");
        assert_eq!(canonical_request("GET", "", None, ""), "GET&/&");
    }

    #[test]
    fn paths_are_relative_to_the_base_and_trimmed() {
        assert_eq!(canonical_uri("/gh/webhooks/c/", "/gh"), "/webhooks/c");
        assert_eq!(canonical_uri("/gh", "/gh/"), "/");
        assert_eq!(canonical_uri("/ghost/x", "/gh"), "/ghost/x");
        assert_eq!(canonical_uri("/a&b", ""), "/a%26b");
    }

    #[test]
    fn queries_are_sorted_joined_and_rfc3986_encoded() {
        assert_eq!(
            canonical_query(Some("b=2&a=x%20y&a=c*d&jwt=abc&z=%7E&e=")),
            "a=c%2Ad,x%20y&b=2&e=&z=~"
        );
        assert_eq!(canonical_query(Some("q=a+b")), "q=a%20b");
        assert_eq!(canonical_query(Some("jwt=only")), "");
    }

    mod props {
        use proptest::prelude::*;

        use super::*;

        /// Arbitrary Unicode, arbitrary bytes, or pieces of paths and queries.
        fn text() -> impl Strategy<Value = String> {
            const PIECES: &[&str] = &[
                "/", "//", "&", "=", "%", "%2", "%26", "%C3%A9", "%FF", "+", "jwt", "a", "B", "é", "😀", "?",
                "#", ",", " ", "~", "\u{0}",
            ];
            prop_oneof![
                any::<String>(),
                prop::collection::vec(any::<u8>(), 0..48)
                    .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
                prop::collection::vec(prop::sample::select(PIECES), 0..12).prop_map(|parts| parts.concat()),
            ]
        }

        /// `name=value` (either possibly empty or odd), or a bare name, or the `jwt` parameter.
        fn parameter() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => (text(), text()).prop_map(|(name, value)| format!("{name}={value}")),
                1 => text(),
                1 => text().prop_map(|token| format!("jwt={token}")),
            ]
        }

        proptest! {
            #[test]
            fn never_panics_and_the_uri_is_canonical(
                method in text(),
                path in text(),
                query in prop::option::of(text()),
                base in text(),
            ) {
                let request = canonical_request(&method, &path, query.as_deref(), &base);
                let method_part = method.to_ascii_uppercase() + "&";
                prop_assert!(request.starts_with(&method_part), "{:?}", request);
                prop_assert_eq!(qsh(&method, &path, query.as_deref(), &base).len(), 64);
                let uri = canonical_uri(&path, &base);
                prop_assert!(uri.starts_with('/'), "{:?}", uri);
                prop_assert!(uri == "/" || !uri.ends_with('/'), "{:?}", uri);
                prop_assert!(!uri.contains('&'), "{:?}", uri);
            }

            #[test]
            fn the_query_does_not_depend_on_parameter_order(
                (parameters, shuffled) in prop::collection::vec(parameter(), 0..8)
                    .prop_flat_map(|p| (Just(p.clone()), Just(p).prop_shuffle())),
            ) {
                let canonical = canonical_query(Some(&parameters.join("&")));
                prop_assert_eq!(&canonical_query(Some(&shuffled.join("&"))), &canonical);
                // Only unreserved characters, escapes and the separators are left.
                prop_assert!(
                    canonical.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%=,&".contains(&b)),
                    "{:?}",
                    canonical
                );
            }
        }
    }
}
