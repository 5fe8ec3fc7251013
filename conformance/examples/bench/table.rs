//! The results table: one row per scenario and metric, with the Rust and
//! JavaScript values, their ratio, the target and whether it is met.

use conformance::Lang;

/// What the Rust value is held to.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// Shown for information only.
    None,
    /// At most the JavaScript value divided by this.
    AtMostJsOver(f64),
    /// Exactly this (delivery ratio 1.0).
    Equals(f64),
    /// At least this.
    AtLeast(f64),
    /// At most this.
    AtMost(f64),
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::None => String::new(),
            Target::AtMostJsOver(d) if *d == 1.0 => "≤ JS".into(),
            Target::AtMostJsOver(d) => format!("≤ JS/{d}"),
            Target::Equals(v) => format!("= {v:.1}"),
            Target::AtLeast(v) => format!("≥ {v}"),
            Target::AtMost(v) => format!("≤ {v:.0}"),
        }
    }

    /// "met", or by how much it is missed; empty without a target or a value
    /// to compare with.
    fn verdict(&self, rust: Option<f64>, js: Option<f64>) -> String {
        let Some(rust) = rust else {
            return String::new();
        };
        match self {
            Target::None => String::new(),
            Target::AtMostJsOver(d) => match js {
                Some(js) => {
                    let limit = js / d;
                    if rust <= limit {
                        "met".into()
                    } else if limit > 0.0 {
                        format!("missed: {:.2}× the target", rust / limit)
                    } else {
                        "missed".into()
                    }
                }
                None => String::new(),
            },
            Target::Equals(v) => {
                if (rust - v).abs() < 1e-9 {
                    "met".into()
                } else {
                    format!("missed by {:.4}", (rust - v).abs())
                }
            }
            Target::AtMost(v) => {
                if rust <= *v {
                    "met".into()
                } else {
                    format!("missed: {:.2}× the target", rust / v)
                }
            }
            Target::AtLeast(v) => {
                if rust >= *v {
                    "met".into()
                } else {
                    format!("missed by {}", v - rust)
                }
            }
        }
    }
}

/// One measured quantity of a scenario on one server.
#[derive(Debug, Clone)]
pub struct Metric {
    pub name: String,
    pub target: Target,
    /// The number compared (None when it could not be measured).
    pub value: Option<f64>,
    /// How the value is shown (e.g. `12.3 ms`, or `24 / 28 / 32 ms`).
    pub shown: String,
}

impl Metric {
    pub fn new(name: impl Into<String>, target: Target, value: f64, shown: String) -> Self {
        Self {
            name: name.into(),
            target,
            value: Some(value),
            shown,
        }
    }

    pub fn missing(name: impl Into<String>, target: Target) -> Self {
        Self {
            name: name.into(),
            target,
            value: None,
            shown: "-".into(),
        }
    }
}

/// Everything measured: per scenario (in run order) and server, its metrics
/// or why it failed.
#[derive(Default)]
pub struct Results {
    entries: Vec<(String, Lang, Result<Vec<Metric>, String>)>,
}

impl Results {
    pub fn add(&mut self, scenario: &str, lang: Lang, outcome: Result<Vec<Metric>, String>) {
        self.entries.push((scenario.to_string(), lang, outcome));
    }

    pub fn failures(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter_map(|(scenario, lang, outcome)| {
                outcome
                    .as_ref()
                    .err()
                    .map(|err| format!("{lang} {scenario}: {err}"))
            })
            .collect()
    }

    fn metrics(&self, scenario: &str, lang: Lang) -> Option<&[Metric]> {
        self.entries
            .iter()
            .find(|(s, l, _)| s == scenario && *l == lang)
            .and_then(|(_, _, outcome)| outcome.as_ref().ok())
            .map(Vec::as_slice)
    }

    /// The table in Markdown, scenarios in `order`.
    pub fn render(&self, order: &[&str]) -> String {
        let mut rows = vec![[
            "scenario".to_string(),
            "metric".into(),
            "Rust".into(),
            "JS".into(),
            "JS/Rust".into(),
            "target (Rust)".into(),
            "result".into(),
        ]];
        for scenario in order {
            let rust = self.metrics(scenario, Lang::Rust).unwrap_or(&[]);
            let js = self.metrics(scenario, Lang::Js).unwrap_or(&[]);
            let mut names: Vec<&Metric> = rust.iter().collect();
            names.extend(js.iter().filter(|m| !rust.iter().any(|r| r.name == m.name)));
            for metric in names {
                let find =
                    |metrics: &[Metric]| metrics.iter().find(|m| m.name == metric.name).cloned();
                let r = find(rust);
                let j = find(js);
                let rv = r.as_ref().and_then(|m| m.value);
                let jv = j.as_ref().and_then(|m| m.value);
                let ratio = match (rv, jv) {
                    (Some(r), Some(j))
                        if r > 0.0 && !matches!(metric.target, Target::Equals(_)) =>
                    {
                        format!("{:.2}", j / r)
                    }
                    _ => String::new(),
                };
                rows.push([
                    scenario.to_string(),
                    metric.name.clone(),
                    r.map_or_else(|| "-".into(), |m| m.shown),
                    j.map_or_else(|| "-".into(), |m| m.shown),
                    ratio,
                    metric.target.describe(),
                    metric.target.verdict(rv, jv),
                ]);
            }
        }
        let widths: Vec<usize> = (0..7)
            .map(|c| {
                rows.iter()
                    .map(|row| row[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |row: &[String; 7]| {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            format!("| {} |", cells.join(" | "))
        };
        let mut out = vec![line(&rows[0])];
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push(format!("|-{}-|", rule.join("-|-")));
        out.extend(rows[1..].iter().map(line));
        out.join("\n")
    }
}
