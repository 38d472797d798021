//! `GATEHOUSE__…` environment overrides, applied to the parsed TOML before it becomes typed
//! settings.
//!
//! `GATEHOUSE__QUEUE__URL=amqp://…` sets `queue.url`; a numeric segment indexes an array
//! (`GATEHOUSE__SOURCES__0__TOLERANCE_SECONDS=60`), and the index one past the end appends a new
//! table. Values are read as TOML scalars when they parse as one (`true`, `42`, `1.5`, `[1, 2]`)
//! and as strings otherwise, so `0.0.0.0:8080` needs no quoting.

use toml::{Table, Value};

use super::ConfigError;

/// The prefix of the environment variables that override config keys.
pub const PREFIX: &str = "GATEHOUSE__";

/// The `GATEHOUSE__…` variables of this process. Others are not read at all, so a variable of
/// some other program that is not UTF-8 cannot stop gatehouse (`std::env::vars` panics on one);
/// one of ours that is not UTF-8 is an error naming it.
pub fn from_process() -> Result<Vec<(String, String)>, ConfigError> {
    let mut ours = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str().filter(|name| name.starts_with(PREFIX)) else {
            continue;
        };
        let value = value
            .into_string()
            .map_err(|_| ConfigError::new(name, "is not valid UTF-8"))?;
        ours.push((name.to_owned(), value));
    }
    Ok(ours)
}

/// A key an environment variable set, as config errors name keys (`sources[0].tolerance_seconds`),
/// and the variable's name: an error about the key then names the variable, which a user would
/// otherwise look for in their file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overridden {
    pub key: String,
    pub variable: String,
}

impl Overridden {
    /// Whether an error about `key` is about this override (the key, or one inside it).
    pub fn covers(&self, key: &str) -> bool {
        super::is_within(key, &self.key)
    }
}

/// Applies every `GATEHOUSE__…` variable in `vars` to `root`; returns the keys they set.
pub fn apply(
    root: &mut Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Overridden>, ConfigError> {
    let mut vars: Vec<(String, String)> = vars.into_iter().filter(|(k, _)| k.starts_with(PREFIX)).collect();
    // Sorted so that appending by index (`…__0__`, then `…__1__`) is deterministic, and indexes
    // as numbers: `…__2__` before `…__10__`.
    vars.sort_by(|(a, _), (b, _)| segments(a).cmp(segments(b)));
    let mut overridden = Vec::new();
    for (name, raw) in vars {
        let path: Vec<String> = name[PREFIX.len()..]
            .split("__")
            .map(|s| s.to_ascii_lowercase())
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::new(
                &name,
                "empty key segment in environment override",
            ));
        }
        set(root, &path, parse_value(&raw)).map_err(|message| ConfigError::new(&name, message))?;
        let key = path
            .iter()
            .fold(String::new(), |key, segment| match segment.parse::<usize>() {
                Ok(index) => super::item_key(&key, index),
                Err(_) => super::field_key(&key, segment),
            });
        overridden.push(Overridden { key, variable: name });
    }
    Ok(overridden)
}

/// A variable's name as the sort key of [`apply`]: its segments, a number as a number.
fn segments(name: &str) -> impl Iterator<Item = (Option<u64>, &str)> {
    name.split("__").map(|segment| (segment.parse().ok(), segment))
}

fn parse_value(raw: &str) -> Value {
    // A bare word like `embedded` or `0.0.0.0:8080` is not valid TOML: keep it as a string.
    match format!("v = {raw}").parse::<Table>() {
        Ok(mut table) => match table.remove("v") {
            Some(value @ (Value::String(_) | Value::Table(_))) => {
                // `"quoted"` stays a string; an inline table is almost certainly not what a user
                // meant by an env var, keep the raw text.
                if matches!(value, Value::String(_)) {
                    value
                } else {
                    Value::String(raw.to_owned())
                }
            }
            Some(value) => value,
            None => Value::String(raw.to_owned()),
        },
        Err(_) => Value::String(raw.to_owned()),
    }
}

fn set(table: &mut Table, path: &[String], value: Value) -> Result<(), String> {
    let (head, rest) = path.split_first().ok_or("empty key")?;
    if rest.is_empty() {
        table.insert(head.clone(), value);
        return Ok(());
    }
    let child = table.entry(head.clone()).or_insert_with(|| {
        if rest[0].parse::<usize>().is_ok() {
            Value::Array(Vec::new())
        } else {
            Value::Table(Table::new())
        }
    });
    set_in_value(child, rest, value)
}

fn set_in_value(node: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    match node {
        Value::Table(table) => set(table, path, value),
        Value::Array(items) => {
            let (head, rest) = path.split_first().ok_or("empty key")?;
            let index: usize = head
                .parse()
                .map_err(|_| format!("`{head}` is not an array index"))?;
            if index > items.len() {
                return Err(format!(
                    "index {index} skips past the end of an array of {}",
                    items.len()
                ));
            }
            if rest.is_empty() {
                if index == items.len() {
                    items.push(value);
                } else {
                    items[index] = value;
                }
                return Ok(());
            }
            if index == items.len() {
                items.push(Value::Table(Table::new()));
            }
            set_in_value(&mut items[index], rest, value)
        }
        _ => Err("cannot set a key inside a scalar value".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply_vars(toml: &str, vars: &[(&str, &str)]) -> Table {
        let mut root: Table = toml.parse().unwrap();
        apply(
            &mut root,
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap();
        root
    }

    #[test]
    fn scalars_tables_and_arrays() {
        let root = apply_vars(
            "[server]\nlisten = \"127.0.0.1:1\"\n[[sources]]\nname = \"a\"\n",
            &[
                ("GATEHOUSE__SERVER__LISTEN", "0.0.0.0:8080"),
                ("GATEHOUSE__SERVER__MAX_BODY_BYTES", "42"),
                ("GATEHOUSE__SOURCES__0__NAME", "b"),
                ("GATEHOUSE__SOURCES__1__NAME", "c"),
                ("GATEHOUSE__QUEUE__BACKEND", "rabbitmq"),
                ("OTHER", "ignored"),
            ],
        );
        assert_eq!(root["server"]["listen"].as_str(), Some("0.0.0.0:8080"));
        assert_eq!(root["server"]["max_body_bytes"].as_integer(), Some(42));
        assert_eq!(root["sources"][0]["name"].as_str(), Some("b"));
        assert_eq!(root["sources"][1]["name"].as_str(), Some("c"));
        assert_eq!(root["queue"]["backend"].as_str(), Some("rabbitmq"));
    }

    #[test]
    fn entries_are_appended_in_the_order_of_their_index_as_a_number() {
        let vars: Vec<(String, String)> = (0..12)
            .rev()
            .map(|i| (format!("GATEHOUSE__SOURCES__{i}__NAME"), format!("s{i}")))
            .collect();
        let mut root = Table::new();
        root.insert("sources".into(), Value::Array(Vec::new()));
        apply(&mut root, vars).unwrap();
        let names: Vec<&str> = root["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        let expected: Vec<String> = (0..12).map(|i| format!("s{i}")).collect();
        assert_eq!(names, expected);
    }

    #[test]
    fn bad_paths_name_the_variable() {
        let mut root: Table = "[[sources]]\nname = \"a\"\n".parse().unwrap();
        let err = apply(
            &mut root,
            [("GATEHOUSE__SOURCES__5__NAME".to_owned(), "x".to_owned())],
        )
        .unwrap_err();
        assert!(err.to_string().contains("GATEHOUSE__SOURCES__5__NAME"), "{err}");
    }
}
