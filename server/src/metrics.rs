//! One instance's metrics, kept in a `prometheus-client` registry and rendered
//! in the OpenMetrics text format that Prometheus scrapes.
//!
//! Counters, gauges and histograms are atomics shared explicitly (an
//! `Arc<Metrics>` handed to the parts that count); a labelled series is looked
//! up once, when the metrics are built, so counting on the hot paths is one
//! atomic operation (a few for a histogram observation) and no lookup.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A counter of whole events.
pub type Count = Counter<u64, AtomicU64>;

/// Why a WebSocket connection was closed, the label of
/// `yws_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed it or went away.
    Client,
    /// The client sent a frame or message that is not valid.
    InvalidFrame,
    /// The client sent a message over the size limit or over a rate limit.
    TooLarge,
    /// The client fell too far behind its room.
    SlowConsumer,
    /// The instance shut down.
    Shutdown,
    /// Nothing was heard from the client within the idle timeout.
    Silent,
    /// The server failed it (document not loaded, append failed).
    Error,
    /// Closed by order: a close order for its document or user (4401, 4404),
    /// or its token expired (4401).
    Ordered,
}

impl CloseReason {
    /// Every reason, in label order.
    const ALL: [CloseReason; 8] = [
        CloseReason::Client,
        CloseReason::InvalidFrame,
        CloseReason::TooLarge,
        CloseReason::SlowConsumer,
        CloseReason::Shutdown,
        CloseReason::Silent,
        CloseReason::Error,
        CloseReason::Ordered,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::Client => "client",
            CloseReason::InvalidFrame => "invalid_frame",
            CloseReason::TooLarge => "too_large",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Silent => "silent",
            CloseReason::Error => "error",
            CloseReason::Ordered => "ordered",
        }
    }
}

/// Why a WebSocket upgrade was refused, the label of
/// `yws_upgrades_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Auth is on and the request carried no token (401).
    NoToken,
    /// The token is malformed, its signature does not verify, or it names no
    /// user (401).
    BadToken,
    /// The token's `exp` is past (401).
    Expired,
    /// The permission callback could not be asked or answered unreadably:
    /// unreachable, timed out, not JSON (401).
    CallbackError,
    /// The permission callback answered and granted nothing: a non-2xx
    /// status (404, 403, ...) or no usable `yaccess` (401).
    Forbidden,
    /// The path is no room (404).
    NotFound,
    /// The request is no WebSocket upgrade (400, 405, 426).
    BadRequest,
    /// Redis has not answered yet since the instance started (503).
    Unavailable,
    /// The request's `Origin` is not in the allowed origins (403).
    Origin,
}

impl Refusal {
    /// Every reason, in label order.
    const ALL: [Refusal; 9] = [
        Refusal::NoToken,
        Refusal::BadToken,
        Refusal::Expired,
        Refusal::CallbackError,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::BadRequest,
        Refusal::Unavailable,
        Refusal::Origin,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::NoToken => "no_token",
            Refusal::BadToken => "bad_token",
            Refusal::Expired => "expired",
            Refusal::CallbackError => "callback_error",
            Refusal::Forbidden => "forbidden",
            Refusal::NotFound => "not_found",
            Refusal::BadRequest => "bad_request",
            Refusal::Unavailable => "unavailable",
            Refusal::Origin => "origin",
        }
    }
}

/// The `reason` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// One of the [`crate::storage::Storage`] trait's operations, the `operation`
/// label of the storage series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageOperation {
    /// Every stored item of a document.
    Load,
    /// Store a new item.
    Put,
    /// Delete replaced items.
    Delete,
    /// The stored document's state vector.
    StateVector,
    /// Keep, list, read, name or delete versions of a document (its history).
    History,
}

impl StorageOperation {
    /// Every operation, in label order.
    const ALL: [StorageOperation; 5] = [
        StorageOperation::Load,
        StorageOperation::Put,
        StorageOperation::Delete,
        StorageOperation::StateVector,
        StorageOperation::History,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            StorageOperation::Load => "load",
            StorageOperation::Put => "put",
            StorageOperation::Delete => "delete",
            StorageOperation::StateVector => "state_vector",
            StorageOperation::History => "history",
        }
    }
}

/// The `backend` and `operation` labels of the storage series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StorageLabels {
    backend: &'static str,
    operation: &'static str,
}

/// The latency histogram and error counter of one storage operation on one
/// backend, looked up once so that a call only touches atomics.
#[derive(Debug, Clone)]
pub struct StorageSeries {
    /// Seconds each call took, successful or not.
    pub seconds: Histogram,
    /// Calls that failed.
    pub errors: Count,
}

/// The storage series of one backend, one per [`StorageOperation`].
#[derive(Debug, Clone)]
pub struct StorageMetrics {
    series: [StorageSeries; 5],
}

impl StorageMetrics {
    /// The series of `operation`.
    pub fn of(&self, operation: StorageOperation) -> &StorageSeries {
        let index = StorageOperation::ALL
            .iter()
            .position(|o| *o == operation)
            .unwrap_or(0);
        &self.series[index]
    }
}

/// Buckets of every histogram of seconds: 0.5 ms to about 16 s.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// One instance's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// WebSocket connections open now.
    pub connections_open: Gauge,
    /// WebSocket connections accepted since start.
    pub connections_total: Count,
    /// Connections closed because they fell too far behind their room.
    pub connections_dropped_slow: Count,
    /// Client messages appended to a stream.
    pub messages_appended: Count,
    /// Client frames refused as invalid (the connection was closed).
    pub messages_refused: Count,
    /// Messages handed to connections by the subscriber.
    pub messages_delivered: Count,
    /// Stream entries the subscriber read.
    pub stream_entries_read: Count,
    /// Failed stream reads (Redis unreachable, say).
    pub stream_read_errors: Count,
    /// Failed appends (the client was asked to reconnect).
    pub append_errors: Count,
    /// Compaction passes that succeeded.
    pub compactions: Count,
    /// Compaction passes that failed (the task is retried).
    pub compaction_errors: Count,
    /// Documents stored by compaction.
    pub documents_stored: Count,
    /// Documents loaded for an initial sync; joiners opening a room together
    /// share one load, so this grows by one for all of them.
    pub document_loads: Count,
    /// Connections to Redis re-established after they broke.
    pub redis_reconnects: Count,
    /// Redis restarts, failovers and data losses noticed (docs/protocol.md §3.2).
    pub redis_restarts: Count,
    /// Times every followed room was sent its whole document after stream
    /// reads failed for half the message lifetime or longer.
    pub room_resyncs: Count,
    /// Bytes read from clients' sockets after their upgrade.
    pub received_bytes: Count,
    /// Bytes written to clients' sockets after their upgrade.
    pub sent_bytes: Count,
    /// The deepest outbound queue of a connection since the last scrape, in
    /// frames; exported as `connection_queue_deepest` at each scrape.
    queue_deepest_since_scrape: AtomicU64,
    /// What `queue_deepest_since_scrape` held at the last scrape.
    connection_queue_deepest: Gauge,
    /// Seconds from a client message decoded to Redis acknowledging its append.
    pub append_seconds: Histogram,
    /// Seconds from a stream entry's id time to its frames written to the
    /// room's sockets (once per stream and read, for its oldest entry).
    pub delivery_lag_seconds: Histogram,
    /// Stream entries returned by one subscriber read.
    pub read_batch_entries: Histogram,
    /// Seconds one compaction pass took (successful or not).
    pub compaction_seconds: Histogram,
    /// Connections closed, by [`CloseReason`] (indexed as `CloseReason::ALL`).
    closed: [Count; 8],
    /// Upgrades refused, by [`Refusal`] (indexed as `Refusal::ALL`).
    refused: [Count; 9],
    /// Rooms open here, set when `/metrics` is rendered.
    rooms_open: Gauge,
    /// Storage call latency by backend and operation.
    storage_seconds: Family<StorageLabels, Histogram, fn() -> Histogram>,
    /// Failed storage calls by backend and operation.
    storage_errors: Family<StorageLabels, Count>,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let seconds = seconds_histogram;
        let closed_family = Family::<ReasonLabel, Count>::default();
        let closed = CloseReason::ALL.map(|reason| {
            closed_family
                .get_or_create(&ReasonLabel {
                    reason: reason.label(),
                })
                .clone()
        });
        let refused_family = Family::<ReasonLabel, Count>::default();
        let refused = Refusal::ALL.map(|reason| {
            refused_family
                .get_or_create(&ReasonLabel {
                    reason: reason.label(),
                })
                .clone()
        });
        let metrics = Self {
            connections_open: Gauge::default(),
            connections_total: Count::default(),
            connections_dropped_slow: Count::default(),
            messages_appended: Count::default(),
            messages_refused: Count::default(),
            messages_delivered: Count::default(),
            stream_entries_read: Count::default(),
            stream_read_errors: Count::default(),
            append_errors: Count::default(),
            compactions: Count::default(),
            compaction_errors: Count::default(),
            documents_stored: Count::default(),
            document_loads: Count::default(),
            redis_reconnects: Count::default(),
            redis_restarts: Count::default(),
            room_resyncs: Count::default(),
            received_bytes: Count::default(),
            sent_bytes: Count::default(),
            queue_deepest_since_scrape: AtomicU64::new(0),
            connection_queue_deepest: Gauge::default(),
            append_seconds: seconds(),
            delivery_lag_seconds: seconds(),
            read_batch_entries: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            compaction_seconds: seconds(),
            closed,
            refused,
            rooms_open: Gauge::default(),
            storage_seconds: Family::new_with_constructor(seconds_histogram),
            storage_errors: Family::default(),
            registry: Registry::default(),
        };
        let registry = metrics.registry(closed_family, refused_family);
        Self {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    /// The registry every series is exported from.
    fn registry(
        &self,
        closed_family: Family<ReasonLabel, Count>,
        refused_family: Family<ReasonLabel, Count>,
    ) -> Registry {
        let mut registry = Registry::default();
        let m = self;
        // Counter names lose their `_total` here: the encoder adds it back.
        registry.register(
            "yws_connections_open",
            "WebSocket connections open now",
            m.connections_open.clone(),
        );
        registry.register(
            "yws_connections",
            "WebSocket connections accepted",
            m.connections_total.clone(),
        );
        registry.register(
            "yws_connections_dropped_slow",
            "connections closed for falling behind their room",
            m.connections_dropped_slow.clone(),
        );
        registry.register(
            "yws_connections_closed",
            "connections closed, by reason",
            closed_family,
        );
        registry.register(
            "yws_upgrades_refused",
            "WebSocket upgrade requests refused, by reason",
            refused_family,
        );
        registry.register(
            "yws_connection_queue_deepest",
            "most frames queued for one connection since the previous scrape",
            m.connection_queue_deepest.clone(),
        );
        registry.register(
            "yws_rooms_open",
            "rooms with at least one connection on this instance",
            m.rooms_open.clone(),
        );
        registry.register(
            "yws_storage_operation_seconds",
            "duration of one storage call, by backend and operation",
            m.storage_seconds.clone(),
        );
        registry.register(
            "yws_storage_errors",
            "storage calls that failed, by backend and operation",
            m.storage_errors.clone(),
        );
        self.register_counters(&mut registry);
        self.register_histograms(&mut registry);
        registry
    }

    /// The plain counters.
    fn register_counters(&self, registry: &mut Registry) {
        let m = self;
        let counters: [(&str, &str, &Count); 15] = [
            (
                "yws_messages_appended",
                "client messages appended to a stream",
                &m.messages_appended,
            ),
            (
                "yws_messages_refused",
                "client frames refused as invalid",
                &m.messages_refused,
            ),
            ("yws_append_errors", "appends that failed", &m.append_errors),
            (
                "yws_messages_delivered",
                "messages queued to connections",
                &m.messages_delivered,
            ),
            (
                "yws_stream_entries_read",
                "stream entries read by the subscriber",
                &m.stream_entries_read,
            ),
            (
                "yws_stream_read_errors",
                "stream reads that failed",
                &m.stream_read_errors,
            ),
            (
                "yws_compactions",
                "compaction passes that succeeded",
                &m.compactions,
            ),
            (
                "yws_compaction_errors",
                "compaction passes that failed",
                &m.compaction_errors,
            ),
            (
                "yws_documents_stored",
                "documents stored by compaction",
                &m.documents_stored,
            ),
            (
                "yws_document_loads",
                "documents loaded for initial syncs (joiners opening a room together share one)",
                &m.document_loads,
            ),
            (
                "yws_redis_reconnects",
                "connections to Redis re-established after they broke",
                &m.redis_reconnects,
            ),
            (
                "yws_redis_restarts",
                "Redis restarts, failovers and data losses (FLUSHALL, FLUSHDB) noticed; each closes every connection",
                &m.redis_restarts,
            ),
            (
                "yws_room_resyncs",
                "times every followed room was sent its whole document after stream reads failed for half the message lifetime",
                &m.room_resyncs,
            ),
            (
                "yws_received_bytes",
                "bytes read from clients' sockets after the upgrade, frame headers included",
                &m.received_bytes,
            ),
            (
                "yws_sent_bytes",
                "bytes written to clients' sockets after the upgrade, frame headers included",
                &m.sent_bytes,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
    }

    /// The histograms.
    fn register_histograms(&self, registry: &mut Registry) {
        let m = self;
        let histograms: [(&str, &str, &Histogram); 4] = [
            (
                "yws_append_seconds",
                "client message decoded to its append acknowledged by Redis",
                &m.append_seconds,
            ),
            (
                "yws_delivery_lag_seconds",
                "stream entry id time to its frames written to the room's sockets",
                &m.delivery_lag_seconds,
            ),
            (
                "yws_read_batch_entries",
                "stream entries returned by one subscriber read",
                &m.read_batch_entries,
            ),
            (
                "yws_compaction_seconds",
                "duration of one compaction pass",
                &m.compaction_seconds,
            ),
        ];
        for (name, help, histogram) in histograms {
            registry.register(name, help, histogram.clone());
        }
    }
}

/// Something that counts up: a counter or a gauge.
pub trait Up {
    /// Add `n`.
    fn up(&self, n: u64);
}

impl Up for Count {
    fn up(&self, n: u64) {
        self.inc_by(n);
    }
}

impl Up for Gauge {
    fn up(&self, n: u64) {
        self.inc_by(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

/// Add one to a counter or gauge.
pub fn inc(metric: &impl Up) {
    metric.up(1);
}

/// Add `n` to a counter or gauge.
pub fn add(metric: &impl Up, n: u64) {
    metric.up(n);
}

/// Subtract one from a gauge.
pub fn dec(gauge: &Gauge) {
    gauge.dec();
}

/// Record a duration in a histogram of seconds.
pub fn observe(histogram: &Histogram, elapsed: Duration) {
    histogram.observe(elapsed.as_secs_f64());
}

impl Metrics {
    /// The storage series of `backend` (`fs`, `s3`, ...), created now so that
    /// they are exported before the first call.
    pub fn storage(&self, backend: &'static str) -> StorageMetrics {
        let series = StorageOperation::ALL.map(|operation| {
            let labels = StorageLabels {
                backend,
                operation: operation.label(),
            };
            StorageSeries {
                seconds: self.storage_seconds.get_or_create(&labels).clone(),
                errors: self.storage_errors.get_or_create(&labels).clone(),
            }
        });
        StorageMetrics { series }
    }

    /// The counter of upgrades refused for `reason`.
    pub fn refusals(&self, reason: Refusal) -> &Count {
        let index = Refusal::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        &self.refused[index]
    }

    /// A connection's outbound queue holds `frames` frames (its socket would
    /// block): the deepest since the last scrape is exported.
    pub fn queue_depth(&self, frames: usize) {
        let frames = u64::try_from(frames).unwrap_or(u64::MAX);
        self.queue_deepest_since_scrape
            .fetch_max(frames, Ordering::Relaxed);
    }

    /// Count a refused upgrade.
    pub fn refused(&self, reason: Refusal) {
        self.refusals(reason).inc();
    }

    /// Count a closed connection.
    pub fn closed(&self, reason: CloseReason) {
        let index = CloseReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.closed[index].inc();
    }

    /// The OpenMetrics text exposition of every metric; `rooms` is the number
    /// of rooms open on this instance.
    pub fn render(&self, rooms: usize) -> String {
        self.rooms_open
            .set(i64::try_from(rooms).unwrap_or(i64::MAX));
        let deepest = self.queue_deepest_since_scrape.swap(0, Ordering::Relaxed);
        self.connection_queue_deepest
            .set(i64::try_from(deepest).unwrap_or(i64::MAX));
        let mut out = String::new();
        if let Err(err) = encode(&mut out, &self.registry) {
            tracing::error!(%err, "could not render the metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series_with_its_name() {
        let metrics = Metrics::default();
        inc(&metrics.connections_total);
        inc(&metrics.connections_open);
        add(&metrics.messages_appended, 3);
        observe(&metrics.append_seconds, Duration::from_millis(2));
        metrics.closed(CloseReason::Shutdown);
        let text = metrics.render(2);
        assert!(
            text.contains("# TYPE yws_connections counter\nyws_connections_total 1\n"),
            "{text}"
        );
        assert!(text.contains("yws_connections_open 1\n"), "{text}");
        assert!(text.contains("yws_messages_appended_total 3\n"), "{text}");
        assert!(text.contains("yws_rooms_open 2\n"), "{text}");
        assert!(text.contains("yws_append_seconds_count 1\n"), "{text}");
        assert!(
            text.contains("yws_connections_closed_total{reason=\"shutdown\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("yws_connections_closed_total{reason=\"client\"} 0\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn the_deepest_queue_is_the_deepest_since_the_previous_scrape() {
        let metrics = Metrics::default();
        metrics.queue_depth(3);
        metrics.queue_depth(7);
        metrics.queue_depth(5);
        assert!(metrics
            .render(0)
            .contains("yws_connection_queue_deepest 7\n"));
        assert!(metrics
            .render(0)
            .contains("yws_connection_queue_deepest 0\n"));
        metrics.queue_depth(2);
        assert!(metrics
            .render(0)
            .contains("yws_connection_queue_deepest 2\n"));
    }
}
