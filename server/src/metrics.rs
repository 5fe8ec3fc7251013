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

impl Metrics {
    /// The Prometheus text exposition of every metric; `rooms` is the number of
    /// rooms open on this instance.
    pub fn render(&self, rooms: usize) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let rows: [(&str, &str, &str, u64); 13] = [
            (
                "yws_connections_open",
                "gauge",
                "WebSocket connections open now",
                get(&self.connections_open),
            ),
            (
                "yws_connections_total",
                "counter",
                "WebSocket connections accepted",
                get(&self.connections_total),
            ),
            (
                "yws_connections_dropped_slow_total",
                "counter",
                "connections closed for falling behind their room",
                get(&self.connections_dropped_slow),
            ),
            (
                "yws_rooms_open",
                "gauge",
                "rooms with at least one connection on this instance",
                rooms as u64,
            ),
            (
                "yws_messages_appended_total",
                "counter",
                "client messages appended to a stream",
                get(&self.messages_appended),
            ),
            (
                "yws_messages_refused_total",
                "counter",
                "client frames refused as invalid",
                get(&self.messages_refused),
            ),
            (
                "yws_append_errors_total",
                "counter",
                "appends that failed",
                get(&self.append_errors),
            ),
            (
                "yws_messages_delivered_total",
                "counter",
                "messages queued to connections",
                get(&self.messages_delivered),
            ),
            (
                "yws_stream_entries_read_total",
                "counter",
                "stream entries read by the subscriber",
                get(&self.stream_entries_read),
            ),
            (
                "yws_stream_read_errors_total",
                "counter",
                "stream reads that failed",
                get(&self.stream_read_errors),
            ),
            (
                "yws_compactions_total",
                "counter",
                "compaction passes that succeeded",
                get(&self.compactions),
            ),
            (
                "yws_compaction_errors_total",
                "counter",
                "compaction passes that failed",
                get(&self.compaction_errors),
            ),
            (
                "yws_documents_stored_total",
                "counter",
                "documents stored by compaction",
                get(&self.documents_stored),
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
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
