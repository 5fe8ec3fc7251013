//! Noticing that Redis restarted or lost its data under a running instance,
//! so that what it lost is sent again.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::connection::AppState;
use crate::streams::Health;

/// How often Redis is asked whether it restarted.
const RESTART_CHECK: Duration = Duration::from_secs(1);

/// Close every connection when Redis restarted or lost its data: its run id
/// changed (a restart, or a failover to another server), or the fleet's epoch
/// marker came back with a new value (a `FLUSHALL` or `FLUSHDB`). A Redis
/// without persistence comes back empty, one with it or a promoted replica may
/// have lost its last writes; a client whose connection stayed open would never send again what
/// was lost, and its later updates would wait in every loaded document for
/// updates that never come. Closed, y-websocket clients reconnect and send
/// their documents, which restores everything Redis lost.
pub async fn watch<H: Health + ?Sized>(
    streams: Arc<H>,
    state: Arc<AppState>,
    stop: CancellationToken,
) {
    let mut known = streams.first_run_id();
    loop {
        let id = tokio::select! {
            _ = stop.cancelled() => return,
            id = streams.run_id() => id,
        };
        if let Ok(Some(id)) = id {
            if known.as_ref().is_some_and(|known| *known != id) {
                tracing::warn!(
                    "redis restarted or lost its data; closing connections so that clients send their documents again"
                );
                crate::metrics::inc(&state.metrics.redis_restarts);
                state.rooms.forget_last_syncs();
                state.bus_restarts.send_modify(|restarts| *restarts += 1);
            }
            known = Some(id);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RESTART_CHECK) => {}
        }
    }
}

/// A process that only compacts has no connections to close, but behind
/// Sentinel it still follows a failover as soon as a serving instance does:
/// asking for the run id every [`RESTART_CHECK`] looks for the master first
/// (docs/protocol.md §3.3), instead of waiting for a command to fail.
pub async fn follow<H: Health + ?Sized>(streams: Arc<H>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RESTART_CHECK) => {}
        }
        if let Err(err) = streams.run_id().await {
            tracing::debug!(%err, "redis health check failed");
        }
    }
}
