//! Counters and gauges of one instance, rendered in Prometheus's text format.
//!
//! Plain atomics, shared explicitly (an `Arc<Metrics>` handed to the parts that
//! count), so counting costs next to nothing on the hot paths.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// One instance's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// WebSocket connections open now.
    pub connections_open: AtomicU64,
    /// WebSocket connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections closed because they fell too far behind their room.
    pub connections_dropped_slow: AtomicU64,
    /// Client messages appended to a stream.
    pub messages_appended: AtomicU64,
    /// Client frames refused as invalid (the connection was closed).
    pub messages_refused: AtomicU64,
    /// Messages handed to connections' queues by the subscriber.
    pub messages_delivered: AtomicU64,
    /// Stream entries the subscriber read.
    pub stream_entries_read: AtomicU64,
    /// Failed stream reads (Redis unreachable, say).
    pub stream_read_errors: AtomicU64,
    /// Failed appends (the client was asked to reconnect).
    pub append_errors: AtomicU64,
    /// Compaction passes that succeeded.
    pub compactions: AtomicU64,
    /// Compaction passes that failed (the task is retried).
    pub compaction_errors: AtomicU64,
    /// Documents stored by compaction.
    pub documents_stored: AtomicU64,
}

/// Add one to a counter.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Add `n` to a counter.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Subtract one from a gauge.
pub fn dec(gauge: &AtomicU64) {
    gauge.fetch_sub(1, Ordering::Relaxed);
}

/// One exported metric: its name, type and help text, and how its value is read
/// (from the counters, or the number of open rooms).
struct Row {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&Metrics, usize) -> u64,
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Every exported metric, in the order `/metrics` lists them.
const ROWS: &[Row] = &[
    Row {
        name: "yws_connections_open",
        kind: "gauge",
        help: "WebSocket connections open now",
        value: |m, _| load(&m.connections_open),
    },
    Row {
        name: "yws_connections_total",
        kind: "counter",
        help: "WebSocket connections accepted",
        value: |m, _| load(&m.connections_total),
    },
    Row {
        name: "yws_connections_dropped_slow_total",
        kind: "counter",
        help: "connections closed for falling behind their room",
        value: |m, _| load(&m.connections_dropped_slow),
    },
    Row {
        name: "yws_rooms_open",
        kind: "gauge",
        help: "rooms with at least one connection on this instance",
        value: |_, rooms| rooms as u64,
    },
    Row {
        name: "yws_messages_appended_total",
        kind: "counter",
        help: "client messages appended to a stream",
        value: |m, _| load(&m.messages_appended),
    },
    Row {
        name: "yws_messages_refused_total",
        kind: "counter",
        help: "client frames refused as invalid",
        value: |m, _| load(&m.messages_refused),
    },
    Row {
        name: "yws_append_errors_total",
        kind: "counter",
        help: "appends that failed",
        value: |m, _| load(&m.append_errors),
    },
    Row {
        name: "yws_messages_delivered_total",
        kind: "counter",
        help: "messages queued to connections",
        value: |m, _| load(&m.messages_delivered),
    },
    Row {
        name: "yws_stream_entries_read_total",
        kind: "counter",
        help: "stream entries read by the subscriber",
        value: |m, _| load(&m.stream_entries_read),
    },
    Row {
        name: "yws_stream_read_errors_total",
        kind: "counter",
        help: "stream reads that failed",
        value: |m, _| load(&m.stream_read_errors),
    },
    Row {
        name: "yws_compactions_total",
        kind: "counter",
        help: "compaction passes that succeeded",
        value: |m, _| load(&m.compactions),
    },
    Row {
        name: "yws_compaction_errors_total",
        kind: "counter",
        help: "compaction passes that failed",
        value: |m, _| load(&m.compaction_errors),
    },
    Row {
        name: "yws_documents_stored_total",
        kind: "counter",
        help: "documents stored by compaction",
        value: |m, _| load(&m.documents_stored),
    },
];

impl Metrics {
    /// The Prometheus text exposition of every metric; `rooms` is the number of
    /// rooms open on this instance.
    pub fn render(&self, rooms: usize) -> String {
        let mut out = String::new();
        for row in ROWS {
            let name = row.name;
            let _ = writeln!(out, "# HELP {name} {}", row.help);
            let _ = writeln!(out, "# TYPE {name} {}", row.kind);
            let _ = writeln!(out, "{name} {}", (row.value)(self, rooms));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::default();
        inc(&metrics.connections_total);
        inc(&metrics.connections_open);
        add(&metrics.messages_appended, 3);
        let text = metrics.render(2);
        assert!(text.contains("# TYPE yws_connections_total counter\nyws_connections_total 1\n"));
        assert!(text.contains("yws_messages_appended_total 3\n"));
        assert!(text.contains("yws_rooms_open 2\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.split_once(' ').unwrap();
            assert!(name.starts_with("yws_"), "{line}");
            value.parse::<u64>().unwrap();
        }
    }
}
