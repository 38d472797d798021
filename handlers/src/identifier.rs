//! What an Atlassian identifier may look like before gatehouse puts it into a URL or a plan.
//!
//! Account ids (`5b10ac8d82e05b22cc7d4ef5`, `557058:f58131cb-…`, `qm:…:…`), group ids and SCIM
//! ids (UUIDs) are short runs of ASCII letters, digits, `-`, `_` and `:`. Anything else (`.`,
//! `..`, `/`, `%`, whitespace, control characters) is refused with an error naming the value,
//! never cleaned up: a URL library would normalize `group/../x` away and turn a request about one
//! group into a request about another.

use std::fmt;

/// The longest identifier accepted (Atlassian's are well under 100 bytes).
pub const MAX_LEN: usize = 128;

/// Which identifier a value claims to be, for the error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Account,
    Group,
    ScimUser,
    ScimGroup,
}

impl IdKind {
    fn as_str(self) -> &'static str {
        match self {
            IdKind::Account => "account id",
            IdKind::Group => "group id",
            IdKind::ScimUser => "SCIM user id",
            IdKind::ScimGroup => "SCIM group id",
        }
    }
}

/// A value that is not a well-formed identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct BadIdentifier {
    pub kind: IdKind,
    /// The offending value, escaped for display (never raw control characters).
    pub shown: String,
}

impl fmt::Display for BadIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} is not a valid identifier (1 to {MAX_LEN} ASCII letters, digits, `-`, `_` and `:`)",
            self.kind.as_str(),
            self.shown
        )
    }
}

/// `value` as a `kind`, or why not.
pub fn check(kind: IdKind, value: &str) -> Result<&str, BadIdentifier> {
    let valid = !value.is_empty()
        && value.len() <= MAX_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':'));
    if valid {
        Ok(value)
    } else {
        let shown: String = value.chars().take(MAX_LEN).collect();
        Err(BadIdentifier {
            kind,
            shown: format!("{shown:?}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_ids_pass_and_path_tricks_do_not() {
        for ok in [
            "5b10ac8d82e05b22cc7d4ef5",
            "557058:f58131cb-b67d-43c7-b30d-6b58d40bd077",
            "qm:a713c8ea-1075-4e30-9d96-891a7d181739:5ad6d3581db05e2a66fa80b",
            "b3d5e7f9-0000-4000-8000-000000000001",
            "scim_ada",
        ] {
            assert_eq!(check(IdKind::Account, ok), Ok(ok));
        }
        for bad in [
            "", ".", "..", "../admin", "a/b", "a\tb", "a b", "a%2Fb", "a?x=1", "a#b", "é", "a\nb",
        ] {
            let error = check(IdKind::Group, bad).unwrap_err();
            assert!(error.to_string().starts_with("group id \""), "{error}");
        }
        assert!(check(IdKind::ScimUser, &"a".repeat(MAX_LEN + 1)).is_err());
        let shown = check(IdKind::Account, "\u{1b}[31mx").unwrap_err().to_string();
        assert!(!shown.contains('\u{1b}'), "{shown}");
    }
}
