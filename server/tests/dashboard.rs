//! The Grafana dashboard in `ops/` only queries series that `/metrics` exports.

use std::collections::BTreeSet;

/// Every series name `/metrics` renders (histograms with their `_bucket`,
/// `_sum` and `_count` series), once storage is opened.
fn exported() -> BTreeSet<String> {
    let metrics = websocket::metrics::Metrics::default();
    let _storage = metrics.storage("fs");
    metrics
        .render(0)
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            line.split(['{', ' '])
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// The `yws_` names a PromQL expression mentions.
fn names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("yws_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn every_dashboard_query_names_an_exported_metric() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ops/grafana-dashboard.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{path}: {err}"));
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let exported = exported();
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    let mut queries = 0;
    for panel in panels {
        let targets = panel["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("panel without targets: {panel}"));
        assert!(!targets.is_empty(), "panel without queries: {panel}");
        for target in targets {
            let expr = target["expr"].as_str().expect("a PromQL expr");
            let mentioned = names(expr);
            assert!(!mentioned.is_empty(), "query names no metric: {expr}");
            for name in mentioned {
                assert!(
                    exported.contains(&name),
                    "{expr} queries {name}, which /metrics does not export: {exported:?}"
                );
            }
            queries += 1;
        }
    }
    assert!(queries >= 9, "{queries} queries");
}

#[test]
fn the_exported_names_include_every_documented_series() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/operations.md"
    ))
    .expect("docs/operations.md");
    let exported = exported();
    for name in &exported {
        let family = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_count")
            .trim_end_matches("_sum");
        assert!(
            doc.contains(family),
            "docs/operations.md does not describe {family}"
        );
    }
}
