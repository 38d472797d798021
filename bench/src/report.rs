//! The results: one row per measurement, printed as a table and written as JSON.

use std::path::Path;

use serde_json::{Value, json};

#[derive(Debug, Default)]
pub struct Results {
    rows: Vec<(String, Vec<(String, String)>)>,
    json: Vec<Value>,
}

impl Results {
    /// Adds a measurement: `name`, its printed fields, and its JSON.
    pub fn add(&mut self, name: &str, fields: Vec<(&str, String)>, json: Value) {
        self.rows.push((
            name.to_owned(),
            fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        ));
        self.json.push(json!({"name": name, "result": json}));
    }

    pub fn print(&self) {
        let width = self
            .rows
            .iter()
            .flat_map(|(_, f)| f.iter().map(|(k, _)| k.len()))
            .max()
            .unwrap_or(0);
        for (name, fields) in &self.rows {
            println!("\n{name}");
            for (key, value) in fields {
                println!("  {key:<width$}  {value}");
            }
        }
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let document = json!({
            "machine": machine(),
            "time": chrono::Utc::now().to_rfc3339(),
            "results": self.json,
        });
        std::fs::write(path, serde_json::to_string_pretty(&document)?)?;
        Ok(())
    }
}

/// What the numbers were measured on.
fn machine() -> Value {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .unwrap_or(0);
    json!({"cpus": cpus, "cpu": model, "memory_mib": memory_kib / 1024})
}
