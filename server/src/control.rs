//! Carrying out the fleet's close orders on this instance: every order
//! published on the streams' control channel closes the connections it names
//! here (docs/protocol.md §3.1).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::log_text::bounded;
use crate::rooms::Rooms;
use crate::streams::Control;

/// How long a subscription that failed or ended waits before the next.
const RESUBSCRIBE: Duration = Duration::from_millis(500);

/// Follow the close orders until `stop`, closing this instance's connections
/// that each names. A subscription that ends or cannot be made is made again
/// after [`RESUBSCRIBE`]; orders published meanwhile are not seen here.
pub async fn watch<C: Control + ?Sized>(
    streams: Arc<C>,
    rooms: Arc<Rooms>,
    stop: CancellationToken,
) {
    let mut lost = false;
    loop {
        let subscribed = tokio::select! {
            _ = stop.cancelled() => return,
            subscribed = streams.close_orders() => subscribed,
        };
        match subscribed {
            Ok(mut orders) => {
                if lost {
                    tracing::info!("close orders followed again");
                    lost = false;
                }
                loop {
                    let order = tokio::select! {
                        _ = stop.cancelled() => return,
                        order = orders.next() => order,
                    };
                    let Some(order) = order else { break };
                    let closed = rooms.close(&order);
                    tracing::debug!(
                        stream = %bounded(&order.stream),
                        user = order.user.as_deref().map(bounded).map(tracing::field::display),
                        code = order.code,
                        closed,
                        "close order"
                    );
                }
                if !lost {
                    tracing::warn!("the close orders subscription ended; subscribing again");
                }
                lost = true;
            }
            Err(err) => {
                if !lost {
                    tracing::warn!(%err, "cannot follow close orders; retrying");
                }
                lost = true;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RESUBSCRIBE) => {}
        }
    }
}
