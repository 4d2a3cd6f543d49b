//! A scenario's results: one JSON object for scripts, or a table for people.

use serde_json::{Map, Value, json};

pub struct Report {
    scenario: &'static str,
    params: Value,
    /// Users, connections and other preparations.
    pub setup: Map<String, Value>,
    /// The results, in the order they are shown.
    items: Vec<(String, Value)>,
    warnings: Vec<String>,
}

impl Report {
    pub fn new(scenario: &'static str, params: Value) -> Self {
        Self {
            scenario,
            params,
            setup: Map::new(),
            items: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Adds (or replaces) a result.
    pub fn top(&mut self, key: &str, value: Value) {
        if let Some(item) = self.items.iter_mut().find(|(k, _)| k == key) {
            item.1 = value;
        } else {
            self.items.push((key.to_owned(), value));
        }
    }

    pub fn warn(&mut self, w: String) {
        self.warnings.push(w);
    }

    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("scenario".into(), json!(self.scenario));
        m.insert("params".into(), self.params.clone());
        m.insert("setup".into(), Value::Object(self.setup.clone()));
        for (k, v) in &self.items {
            m.insert(k.clone(), v.clone());
        }
        m.insert("warnings".into(), json!(self.warnings));
        Value::Object(m)
    }

    pub fn to_table(&self) -> String {
        let mut out = format!("confab-bench {}\n", self.scenario);
        let line = |out: &mut String, k: &str, v: String| {
            out.push_str(&format!("  {k:<24} {v}\n"));
        };
        line(&mut out, "parameters", inline(&self.params));
        line(
            &mut out,
            "setup",
            inline(&Value::Object(self.setup.clone())),
        );
        let mut latencies = Vec::new();
        for (k, v) in &self.items {
            if k.ends_with("_latency_us") {
                latencies.push((k.trim_end_matches("_latency_us"), v));
                continue;
            }
            line(&mut out, k, inline(v));
        }
        if !latencies.is_empty() {
            out.push_str(&format!(
                "\n  {:<14}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}\n",
                "latency (µs)", "count", "min", "p50", "p90", "p99", "p99.9", "max", "mean"
            ));
            for (name, v) in latencies {
                out.push_str(&format!("  {name:<14}"));
                for key in ["count", "min", "p50", "p90", "p99", "p999", "max", "mean"] {
                    out.push_str(&format!("{:>10}", scalar(&v[key])));
                }
                out.push('\n');
            }
        }
        if !self.warnings.is_empty() {
            out.push('\n');
            for w in &self.warnings {
                out.push_str(&format!("  warning: {w}\n"));
            }
        }
        out
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `k=v k=v` for an object, `(k=v) (k=v)` for a list of them, the value
/// itself otherwise.
fn inline(v: &Value) -> String {
    match v {
        Value::Object(m) if m.is_empty() => "none".into(),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| match v {
                Value::Object(_) => format!("{k}={v}"),
                _ => format!("{k}={}", scalar(v)),
            })
            .collect::<Vec<_>>()
            .join("  "),
        Value::Array(items) if items.is_empty() => "none".into(),
        Value::Array(items) => items
            .iter()
            .map(|item| format!("({})", inline(item)))
            .collect::<Vec<_>>()
            .join(" "),
        other => scalar(other),
    }
}
