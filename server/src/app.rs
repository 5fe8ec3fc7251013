//! One running instance: server, subscriber and worker wired together, and the
//! order in which they stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{AuthError, Authenticator};
use crate::config::Config;
use crate::connection::AppState;
use crate::listener::{self, ListenerSettings};
use crate::metrics::Metrics;
use crate::ops::{self, OpsState};
use crate::rooms::Rooms;
use crate::server;
use crate::storage::{open_storage, Storage, StorageError};
use crate::streams::{MemoryStreams, RedisStreams, StreamError, Streams};
use crate::subscriber;
use crate::worker::{Worker, WorkerSettings};

/// What this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Accept WebSocket clients.
    pub serve: bool,
    /// Compact streams into storage.
    pub worker: bool,
}

/// Why an instance could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Redis could not be reached or refused the layout.
    #[error("redis: {0}")]
    Streams(#[from] StreamError),
    /// The storage backend could not be opened.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Auth is misconfigured.
    #[error("auth: {0}")]
    Auth(#[from] AuthError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A worker alone needs a shared bus.
    #[error("a worker without a server needs Redis (set REDIS_URL)")]
    WorkerWithoutRedis,
}

/// A running instance. Stop it with [`Instance::shutdown`].
pub struct Instance {
    /// Where WebSocket clients connect (when serving).
    pub local_addr: Option<SocketAddr>,
    /// Where `/metrics`, `/healthz` and `/readyz` answer (when configured).
    pub metrics_addr: Option<SocketAddr>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// How long connections get to finish in-flight appends and close.
const CONNECTIONS_GRACE: Duration = Duration::from_secs(4);
/// How long the worker gets to finish the task it holds.
const WORKER_GRACE: Duration = Duration::from_secs(4);

impl Instance {
    /// Connect the bus and storage and start the given roles.
    pub async fn start(config: &Config, roles: Roles) -> Result<Self, StartError> {
        let prefix = &config.redis.prefix;
        let embedded = config.redis.url.is_none();
        let streams: Arc<dyn Streams> = match &config.redis.url {
            Some(url) => Arc::new(RedisStreams::connect(url, prefix).await?),
            None => {
                if !roles.serve {
                    return Err(StartError::WorkerWithoutRedis);
                }
                tracing::info!("no Redis configured: single instance on the embedded bus");
                Arc::new(MemoryStreams::new(prefix))
            }
        };
        let storage = open_storage(&config.storage).await?;
        let auth = match (&config.auth.public_key, &config.auth.perm_callback) {
            (Some(key), Some(callback)) => Some(Authenticator::new(
                key,
                callback,
                Duration::from_millis(config.auth.perm_timeout),
            )?),
            _ => None,
        };
        if roles.serve && auth.is_none() {
            tracing::warn!(
                "no AUTH_PUBLIC_KEY configured: every client may read and write every room"
            );
        }

        let stop = CancellationToken::new();
        let metrics = Arc::new(Metrics::default());
        let worker = roles.worker.then(|| {
            Arc::new(
                Worker::new(
                    Arc::clone(&streams),
                    Arc::clone(&storage),
                    WorkerSettings {
                        task_debounce: config.redis.task_debounce(),
                        min_message_lifetime: config.redis.min_message_lifetime(),
                        update_callback: config.worker.update_callback.clone(),
                    },
                )
                .with_metrics(Arc::clone(&metrics)),
            )
        });
        if embedded && !roles.worker {
            tracing::warn!("embedded bus without a worker: documents are not stored");
        }

        let mut local_addr = None;
        let serving = if roles.serve {
            let addr = SocketAddr::new(config.websocket.host, config.websocket.port);
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Listen { addr, source })?;
            local_addr = listener.local_addr().ok();
            Some((listener, Rooms::new()))
        } else {
            None
        };
        let state = serving.as_ref().map(|(_, rooms)| {
            Arc::new(AppState {
                streams: Arc::clone(&streams),
                storage: Arc::clone(&storage),
                rooms: Arc::clone(rooms),
                auth,
                settings: config.websocket.connection_settings(),
                connections: TaskTracker::new(),
                shutdown: CancellationToken::new(),
                metrics: Arc::clone(&metrics),
            })
        });

        let mut metrics_addr = None;
        if let Some(port) = config.metrics.port {
            let addr = SocketAddr::new(config.websocket.host, port);
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Listen { addr, source })?;
            metrics_addr = listener.local_addr().ok();
            let ops_router = ops::router(Arc::new(OpsState {
                metrics: Arc::clone(&metrics),
                rooms: state.as_ref().map(|state| Arc::clone(&state.rooms)),
                streams: Arc::clone(&streams),
            }));
            tokio::spawn(listener::serve(
                listener,
                ops_router,
                ListenerSettings::default(),
                stop.clone(),
            ));
            if let Some(addr) = metrics_addr {
                tracing::info!(%addr, "metrics and health endpoints");
            }
        }

        let settings = ListenerSettings {
            header_read_timeout: config.websocket.header_timeout(),
            max_handshakes: config.websocket.max_handshakes,
        };
        let task = tokio::spawn(run(
            stop.clone(),
            streams,
            storage,
            serving.map(|(listener, _)| (listener, settings)),
            state,
            worker,
            embedded,
        ));
        if let Some(addr) = local_addr {
            tracing::info!(%addr, "listening");
        }
        Ok(Self {
            local_addr,
            metrics_addr,
            stop,
            task,
        })
    }

    /// Stop in the documented order and wait until everything has stopped.
    pub async fn shutdown(self) {
        self.stop.cancel();
        if let Err(err) = self.task.await {
            tracing::error!(%err, "instance task failed");
        }
    }

    /// Wait until the instance stops by itself (it does not, unless it fails).
    pub async fn wait(&mut self) {
        let _ = (&mut self.task).await;
    }
}

/// The instance's life: serve until `stop`, then stop accepting, let
/// connections finish their appends, stop the worker, stop the subscriber.
async fn run(
    stop: CancellationToken,
    streams: Arc<dyn Streams>,
    storage: Arc<dyn Storage>,
    listener: Option<(TcpListener, ListenerSettings)>,
    state: Option<Arc<AppState>>,
    worker: Option<Arc<Worker>>,
    embedded: bool,
) {
    let subscriber_stop = CancellationToken::new();
    let subscriber = state.as_ref().map(|state| {
        tokio::spawn(subscriber::run(
            Arc::clone(&streams),
            Arc::clone(&state.rooms),
            Arc::clone(&state.metrics),
            subscriber_stop.clone(),
        ))
    });
    let worker_stop = CancellationToken::new();
    let worker_task = worker.clone().map(|worker| {
        let token = worker_stop.clone();
        tokio::spawn(async move { worker.run(token).await })
    });

    // 1. Serve until asked to stop; then stop accepting.
    match (listener, &state) {
        (Some((listener, settings)), Some(state)) => {
            let app = server::router(Arc::clone(state));
            listener::serve(listener, app, settings, stop.clone()).await;
        }
        _ => stop.cancelled().await,
    }
    tracing::info!("stopping: no new connections");

    // 2. Connections finish the append they are doing and close.
    if let Some(state) = &state {
        state.shutdown.cancel();
        state.connections.close();
        if tokio::time::timeout(CONNECTIONS_GRACE, state.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close in time");
        }
    }

    // 3. The worker finishes its task; a single instance stores everything now,
    // since its streams die with it.
    worker_stop.cancel();
    if let Some(task) = worker_task {
        if tokio::time::timeout(WORKER_GRACE, task).await.is_err() {
            tracing::warn!("worker did not stop in time; its task stays claimable");
        }
    }
    if embedded {
        if let Some(worker) = &worker {
            if tokio::time::timeout(WORKER_GRACE, worker.flush())
                .await
                .is_err()
            {
                tracing::error!("could not store every document before stopping");
            }
        }
    }

    // 4. The subscriber stops reading.
    subscriber_stop.cancel();
    if let Some(task) = subscriber {
        let _ = task.await;
    }
    // 5. Connections to Redis and storage are released when dropped here.
    drop(streams);
    drop(storage);
    tracing::info!("stopped");
}
