//! One benchmark's figures: a human table on stdout and the same as JSON on disk.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use super::clients::{GatewayCounters, ProcessReading};

/// Latencies in microseconds, summarised as percentiles in milliseconds.
pub struct Latencies {
    histogram: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    pub fn new() -> Self {
        Latencies {
            // 1 µs .. 10 min at 3 significant figures.
            histogram: Histogram::new_with_bounds(1, 600_000_000, 3)
                .expect("constant histogram bounds are valid"),
        }
    }

    pub fn record(&mut self, latency: Duration) {
        let micros = (latency.as_micros() as u64).max(1);
        self.histogram.saturating_record(micros);
    }

    pub fn merge(&mut self, other: &Latencies) {
        let _ = self.histogram.add(&other.histogram);
    }

    pub fn len(&self) -> u64 {
        self.histogram.len()
    }

    pub fn is_empty(&self) -> bool {
        self.histogram.is_empty()
    }

    fn ms(&self, quantile: f64) -> f64 {
        self.histogram.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// `{"n","p50_ms","p95_ms","p99_ms","max_ms"}`.
    pub fn summary(&self) -> Value {
        if self.histogram.is_empty() {
            return json!({"n": 0});
        }
        json!({
            "n": self.histogram.len(),
            "p50_ms": round(self.ms(0.50)),
            "p95_ms": round(self.ms(0.95)),
            "p99_ms": round(self.ms(0.99)),
            "max_ms": round(self.histogram.max() as f64 / 1000.0),
        })
    }
}

pub fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The figures of one run, in the order they were added.
pub struct Report {
    pub mode: &'static str,
    figures: Map<String, Value>,
}

impl Report {
    pub fn new(mode: &'static str) -> Self {
        let mut figures = Map::new();
        figures.insert(
            "date".into(),
            json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        );
        Report { mode, figures }
    }

    pub fn add(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        self.figures.insert(name.into(), value.into());
        self
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.figures.get(name)
    }

    pub fn print_table(&self) {
        println!("statgate-bench {}", self.mode);
        let width = self.figures.keys().map(String::len).max().unwrap_or(0);
        for (name, value) in &self.figures {
            let shown = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            println!("  {name:<width$}  {shown}");
        }
    }

    pub fn to_json(&self) -> Value {
        json!({"mode": self.mode, "figures": self.figures})
    }

    /// Writes the JSON to `path`, or to `target/bench/<mode>-<unix time>.json`.
    pub fn write_json(&self, path: Option<&Path>) -> std::io::Result<PathBuf> {
        let path = match path {
            Some(path) => path.to_owned(),
            None => {
                let stamp = chrono::Utc::now().timestamp();
                PathBuf::from("target/bench").join(format!("{}-{stamp}.json", self.mode))
            }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_string_pretty(&self.to_json()).unwrap_or_default();
        std::fs::write(&path, text + "\n")?;
        Ok(path)
    }
}

/// The gateway's side of a run: RSS and cores from `/proc` (if its pid is known) and the
/// pipeline counters from `/metrics`.
pub fn gateway_figures(
    before: &Option<ProcessReading>,
    after: &Option<ProcessReading>,
    counters: &GatewayCounters,
) -> Value {
    let process = match (before, after) {
        (Some(before), Some(after)) => json!({
            "rss_mib": round(after.rss_bytes as f64 / 1_048_576.0),
            "cores": round(after.cores_since(before)),
        }),
        _ => json!("n/a (pass --gateway-pid)"),
    };
    json!({
        "process": process,
        "notifications": counters.notifications,
        "recompute_statements": counters.recompute_statements,
        "pushes": counters.pushes,
        "coalesced_updates": counters.coalesced,
    })
}
