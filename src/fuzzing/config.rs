//! The config file target (src/config): TOML and `GATEHOUSE__…` overrides, typed, resolved and
//! validated; a config that loads renders to TOML that loads back to the same config.
//!
//! Secret references to files (`file:/path`) are left out: reading whatever file a mutation
//! names (`/dev/zero`, a FIFO) is the operator's choice in a real config, not an input to fuzz.

use super::text;
use crate::config::Settings;
use crate::config::env_override;

/// True when any string in the table is a `file:` reference.
fn names_a_file(value: &toml::Value) -> bool {
    match value {
        toml::Value::String(s) => s.trim_start().starts_with("file:"),
        toml::Value::Array(items) => items.iter().any(names_a_file),
        toml::Value::Table(table) => table.values().any(names_a_file),
        _ => false,
    }
}

/// Leading `GATEHOUSE__NAME=value` lines are environment overrides; the rest is the file.
pub fn settings(data: &[u8]) {
    let input = text(data);
    let mut env = Vec::new();
    let mut file = input.as_str();
    while file.starts_with(env_override::PREFIX) {
        let (line, rest) = file.split_once('\n').unwrap_or((file, ""));
        if let Some((name, value)) = line.split_once('=') {
            env.push((name.to_owned(), value.to_owned()));
        }
        file = rest;
    }
    if let Ok(mut root) = file.parse::<toml::Table>() {
        if env_override::apply(&mut root, env.clone()).is_err() {
            return;
        }
        if names_a_file(&toml::Value::Table(root)) {
            return;
        }
    }
    let Ok((settings, _warnings)) = Settings::from_toml(file, env) else {
        return;
    };
    let rendered = settings.to_redacted_toml();
    if let Err(error) = rendered.parse::<toml::Table>() {
        panic!("the rendered config is not TOML: {error}\n{rendered}");
    }
    if let Ok((again, _)) = Settings::from_toml(&rendered, std::iter::empty()) {
        assert_eq!(
            again.to_redacted_toml(),
            rendered,
            "the config changed on a round trip"
        );
    }
}
