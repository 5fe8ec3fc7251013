//! One running instance: server, subscriber and worker wired together, and the
//! order in which they stop.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::ApiState;
use crate::auth::{AuthError, Authenticator};
use crate::config::{ApiConfig, Config, HistoryConfig};
use crate::connection::{AppState, ConnectionSettings};
use crate::control;
use crate::gate::Gate;
use crate::inspector::{Guard, Inspector, Slot};
use crate::listener::{self, ListenerSettings};
use crate::metrics::{Count, Metrics, Refusal};
use crate::ops::{self, OpsState};
use crate::restarts;
use crate::rooms::Rooms;
use crate::storage::{open_metered, Storage, StorageError};
use crate::streams::{
    CloseOrder, ClusterStreams, MemoryStreams, RedisStreams, RedisTarget, StreamError, Streams,
    Survey,
};
use crate::subscriber;
use crate::upgrade;
use crate::worker::{Unstored, UpdateCallback, Worker, WorkerError, WorkerSettings};

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
    /// The worker cannot be set up.
    #[error("worker: {0}")]
    Worker(#[from] WorkerError),
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
    /// Cancelled when shutdown begins: `/readyz` answers 503 from then on.
    draining: CancellationToken,
    /// How long clients are still served once shutdown began.
    drain: Duration,
    task: JoinHandle<Result<(), ShutdownError>>,
    /// The streams, once connected.
    connected: Arc<OnceLock<Arc<dyn Streams>>>,
    /// This instance's rooms (when serving).
    rooms: Option<Arc<Rooms>>,
}

/// How the stop is timed, from the moment the instance stops accepting: each
/// step must be done by its deadline, and what an earlier step leaves unused
/// goes to the next. Before them the listener takes up to [`listener::DRAIN`]
/// (1 s) for requests in flight; the last deadline, 8.5 s in all, stays inside
/// the binary's 9 s limit, so the final flush of a single instance is never the
/// step cut short.
const CONNECTIONS_DONE: Duration = Duration::from_millis(3_500);
/// Deadline of the worker's current task (left claimable when it is not done).
const WORKER_DONE: Duration = Duration::from_millis(4_500);
/// Deadline of a single instance's final flush: its larger share, since every
/// document of the embedded bus is lost if it is not stored by then.
const FLUSH_DONE: Duration = Duration::from_millis(7_500);

/// Why a stop lost something.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    /// A single instance could not store every document before it stopped.
    #[error(transparent)]
    Unstored(#[from] Unstored),
    /// The instance's task failed.
    #[error("the instance task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl Instance {
    /// Open storage, bind the listeners and start the given roles. With Redis
    /// configured and not answering, the instance starts anyway and waits for
    /// it (upgrades and `/readyz` answer 503 meanwhile), unless
    /// `redis.fail_fast` asks for an error instead.
    pub async fn start(config: &Config, roles: Roles) -> Result<Self, StartError> {
        let embedded = config.redis.url.is_none() && config.redis.sentinels.is_none();
        let metrics = Arc::new(Metrics::default());
        let bus = open_bus(config, roles, &metrics.redis_reconnects).await?;
        let storage = open_metered(&config.storage, &metrics).await?;
        let auth = open_auth(config, roles)?;
        if embedded && !roles.worker {
            tracing::warn!("embedded bus without a worker: documents are not stored");
        }

        let stop = CancellationToken::new();
        let draining = CancellationToken::new();
        let rooms = roles.serve.then(Rooms::new);
        let connected = Arc::new(OnceLock::new());
        let inspector: Slot = Arc::new(OnceLock::new());
        let metrics_addr = match config.metrics.port {
            Some(port) => {
                let state = OpsState {
                    metrics: Arc::clone(&metrics),
                    rooms: rooms.clone(),
                    streams: Arc::clone(&connected),
                    draining: draining.clone(),
                    inspector: Arc::clone(&inspector),
                    guard: Guard {
                        secret: config.api.secret.clone(),
                    },
                };
                serve_ops(SocketAddr::new(config.websocket.host, port), state, &stop).await?
            }
            None => None,
        };
        let gate = Arc::new(Gate::new(metrics.refusals(Refusal::Unavailable).clone()));
        let (local_addr, serving) = if roles.serve {
            let (addr, serving) = serve_websocket(config, &gate, &stop).await?;
            (addr, Some(serving))
        } else {
            (None, None)
        };

        let parts = Parts {
            storage,
            rooms: rooms.clone(),
            auth,
            settings: ConnectionSettings {
                message_lifetime: config.redis.min_message_lifetime(),
                ..config.websocket.connection_settings()
            },
            metrics,
            worker: roles.worker.then(|| worker_settings(config)).transpose()?,
            embedded,
            api: (roles.serve && config.api.enabled).then(|| config.api.clone()),
            history: config.history.clone(),
            allowed_origins: config.websocket.allowed_origins.clone(),
            inspector,
            max_body: config.api.max_body,
        };
        // Assembled now when the bus answers, so the first client after
        // `start` returns is served, not refused.
        let start = match bus {
            Bus::Ready(bus) => Start::Assembled(parts.assemble(bus, &connected, &gate)),
            pending => Start::Pending(pending, Box::new(parts)),
        };
        let task = tokio::spawn(run(
            stop.clone(),
            start,
            Arc::clone(&connected),
            gate,
            serving,
        ));
        Ok(Self {
            local_addr,
            metrics_addr,
            stop,
            draining,
            drain: config.websocket.shutdown_drain(),
            task,
            connected,
            rooms,
        })
    }

    /// Tell every instance of the fleet, this one included, to close the
    /// connections `order` names (docs/protocol.md §3.1).
    pub async fn publish_close(&self, order: &CloseOrder) -> Result<(), StreamError> {
        match self.connected.get() {
            Some(streams) => streams.publish_close(order).await,
            None => Err(StreamError::NotConnected),
        }
    }

    /// Close the connections of this instance alone that `order` names;
    /// returns how many were told to close.
    pub fn close_local(&self, order: &CloseOrder) -> usize {
        self.rooms.as_ref().map_or(0, |rooms| rooms.close(order))
    }

    /// Stop in the documented order and wait until everything has stopped:
    /// `/readyz` answers 503 at once, clients are still served for the drain
    /// time (`shutdown_drain`), then the instance stops accepting and closes
    /// its connections. An error says what the stop lost.
    pub async fn shutdown(self) -> Result<(), ShutdownError> {
        self.draining.cancel();
        if !self.drain.is_zero() {
            tracing::info!(drain = ?self.drain, "draining: /readyz answers 503");
            tokio::time::sleep(self.drain).await;
        }
        self.stop.cancel();
        self.task.await?
    }

    /// How long [`Instance::shutdown`] keeps serving before it closes
    /// connections.
    pub fn drain(&self) -> Duration {
        self.drain
    }

    /// Wait until the instance stops by itself (it does not, unless it fails).
    pub async fn wait(&mut self) {
        let _ = (&mut self.task).await;
    }
}

/// Connect to Redis, or the embedded bus without a Redis URL. Redis not
/// answering is an error with `redis.fail_fast`, else it is waited for.
/// Redis connections count their reconnects into `reconnects`.
async fn open_bus(config: &Config, roles: Roles, reconnects: &Count) -> Result<Bus, StartError> {
    let prefix = &config.redis.prefix;
    let Some(target) = config.redis.target()? else {
        if !roles.serve {
            return Err(StartError::WorkerWithoutRedis);
        }
        tracing::info!("no Redis configured: single instance on the embedded bus");
        return Ok(Bus::Ready(Connected::of(MemoryStreams::new(prefix))));
    };
    match connect_bus(&target, prefix, reconnects).await {
        Ok(bus) => Ok(Bus::Ready(bus)),
        Err(err) if config.redis.fail_fast => Err(err.into()),
        Err(err) => {
            tracing::warn!(
                %err,
                "redis is not answering; waiting for it (WebSocket upgrades and /readyz answer 503)"
            );
            Ok(Bus::Pending {
                target: Box::new(target),
                prefix: prefix.clone(),
                reconnects: reconnects.clone(),
            })
        }
    }
}

/// Connect once to the Redis `target` names: one server (found through
/// Sentinel, maybe) or a cluster through its seed nodes.
async fn connect_bus(
    target: &RedisTarget,
    prefix: &str,
    reconnects: &Count,
) -> Result<Connected, StreamError> {
    Ok(match target {
        RedisTarget::Cluster { seeds, shards } => Connected::of(
            ClusterStreams::connect(seeds, prefix, *shards)
                .await?
                .with_reconnects(reconnects.clone()),
        ),
        _ => Connected::of(
            RedisStreams::open(target, prefix)
                .await?
                .with_reconnects(reconnects.clone()),
        ),
    })
}

/// Token auth when configured; a server without it says so once.
fn open_auth(config: &Config, roles: Roles) -> Result<Option<Authenticator>, StartError> {
    let auth = match (&config.auth.public_key, &config.auth.perm_callback) {
        (Some(key), Some(callback)) => Some(Authenticator::new(
            key,
            callback,
            Duration::from_millis(config.auth.perm_timeout),
        )?),
        _ => None,
    };
    if roles.serve && auth.is_none() {
        if config.api.enabled && config.api.secret.is_none() {
            tracing::warn!(
                "no AUTH_PUBLIC_KEY configured: every client may read and write every room, \
                 and with no WS_API_SECRET the document API under /api is open to everyone"
            );
        } else {
            tracing::warn!(
                "no AUTH_PUBLIC_KEY configured: every client may read and write every room"
            );
        }
    }
    Ok(auth)
}

/// Serve the operations endpoints on `addr` until `stop`; returns the bound address.
async fn serve_ops(
    addr: SocketAddr,
    state: OpsState,
    stop: &CancellationToken,
) -> Result<Option<SocketAddr>, StartError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })?;
    let bound = listener.local_addr().ok();
    tokio::spawn(listener::serve(
        listener,
        ops::router(Arc::new(state)),
        ListenerSettings::default(),
        stop.clone(),
    ));
    if let Some(addr) = bound {
        tracing::info!(%addr, "metrics and health endpoints");
    }
    Ok(bound)
}

/// Accept WebSocket upgrades through `gate` until `stop`; returns the bound
/// address and the accept loop, which ends when it stopped accepting.
async fn serve_websocket(
    config: &Config,
    gate: &Arc<Gate>,
    stop: &CancellationToken,
) -> Result<(Option<SocketAddr>, JoinHandle<()>), StartError> {
    let addr = SocketAddr::new(config.websocket.host, config.websocket.port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })?;
    let bound = listener.local_addr().ok();
    let settings = ListenerSettings {
        header_read_timeout: config.websocket.header_timeout(),
        max_handshakes: config.websocket.max_handshakes,
    };
    let serving = tokio::spawn(listener::serve(
        listener,
        gate.router(),
        settings,
        stop.clone(),
    ));
    if let Some(addr) = bound {
        tracing::info!(%addr, "listening");
    }
    Ok((bound, serving))
}

/// The worker's timing, update callback and history retention.
fn worker_settings(config: &Config) -> Result<WorkerSettings, StartError> {
    Ok(WorkerSettings {
        task_debounce: config.redis.task_debounce(),
        min_message_lifetime: config.redis.min_message_lifetime(),
        update_callback: (config.worker.update_callback.as_deref())
            .map(UpdateCallback::new)
            .transpose()?,
        history: config.history.enabled.then(|| config.history.retention()),
    })
}

/// The connected streams, in every role, and their survey (the inspector's).
struct Connected {
    streams: Arc<dyn Streams>,
    survey: Arc<dyn Survey>,
}

impl Connected {
    fn of<T: Streams + Survey>(streams: T) -> Self {
        let streams = Arc::new(streams);
        Self {
            survey: Arc::clone(&streams) as Arc<dyn Survey>,
            streams,
        }
    }
}

/// The stream bus at start: connected, or Redis still to be waited for.
enum Bus {
    Ready(Connected),
    Pending {
        target: Box<RedisTarget>,
        prefix: String,
        reconnects: Count,
    },
}

/// How often a Redis that did not answer at start is tried again.
const REDIS_RETRY: Duration = Duration::from_secs(2);

impl Bus {
    /// The connected bus; `None` when `stop` fired first.
    async fn connected(self, stop: &CancellationToken) -> Option<Connected> {
        let (target, prefix, reconnects) = match self {
            Bus::Ready(bus) => return Some(bus),
            Bus::Pending {
                target,
                prefix,
                reconnects,
            } => (target, prefix, reconnects),
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(REDIS_RETRY) => {}
            }
            let attempt = tokio::select! {
                _ = stop.cancelled() => return None,
                attempt = connect_bus(&target, &prefix, &reconnects) => attempt,
            };
            match attempt {
                Ok(streams) => {
                    tracing::info!("redis answers; serving");
                    return Some(streams);
                }
                Err(err) => tracing::warn!(
                    %err,
                    retry_in = ?REDIS_RETRY,
                    "redis is still not answering"
                ),
            }
        }
    }
}

/// What an instance builds once the bus is connected.
struct Parts {
    storage: Arc<dyn Storage>,
    rooms: Option<Arc<Rooms>>,
    auth: Option<Authenticator>,
    settings: ConnectionSettings,
    metrics: Arc<Metrics>,
    worker: Option<WorkerSettings>,
    embedded: bool,
    /// The document API's settings, when it is served.
    api: Option<ApiConfig>,
    history: HistoryConfig,
    allowed_origins: Vec<String>,
    /// Filled with the inspector once the bus answers.
    inspector: Slot,
    /// Largest API request body, for the inspector's API calls too.
    max_body: usize,
}

impl Parts {
    /// Everything that needs the bus; the gate opens to the WebSocket router.
    fn assemble(
        self,
        bus: Connected,
        connected: &OnceLock<Arc<dyn Streams>>,
        gate: &Gate,
    ) -> Assembled {
        let Parts {
            storage,
            rooms,
            auth,
            settings,
            metrics,
            worker,
            embedded,
            api,
            history,
            allowed_origins,
            inspector,
            max_body,
        } = self;
        let Connected { streams, survey } = bus;
        let _ = connected.set(Arc::clone(&streams));
        let _ = inspector.set(Arc::new(Inspector::new(
            Arc::clone(&streams),
            survey,
            Arc::clone(&storage),
            rooms.clone(),
            inspector_api(&streams, &storage, max_body, &history),
        )));
        let worker = worker.map(|settings| {
            Arc::new(
                Worker::new(Arc::clone(&streams), Arc::clone(&storage), settings)
                    .with_metrics(Arc::clone(&metrics)),
            )
        });
        let state = rooms.map(|rooms| {
            Arc::new(AppState {
                streams: Arc::clone(&streams),
                storage: Arc::clone(&storage),
                rooms,
                auth,
                settings,
                connections: TaskTracker::new(),
                shutdown: CancellationToken::new(),
                bus_restarts: tokio::sync::watch::Sender::new(0),
                metrics,
                allowed_origins,
            })
        });
        if let Some(state) = &state {
            let api = api.map(|api| {
                Arc::new(ApiState {
                    streams: Arc::clone(&streams),
                    storage: Arc::clone(&storage),
                    auth: state.auth.clone(),
                    secret: api.secret,
                    max_body: api.max_body,
                    history: history.enabled,
                    retention: history.retention(),
                })
            });
            gate.open(upgrade::router(Arc::clone(state), api));
        }
        Assembled {
            streams,
            storage,
            state,
            worker,
            embedded,
        }
    }
}

/// The document API as the inspector calls it: no access checks of its own,
/// the inspector's guard being in front of it.
fn inspector_api(
    streams: &Arc<dyn Streams>,
    storage: &Arc<dyn Storage>,
    max_body: usize,
    history: &HistoryConfig,
) -> ApiState {
    ApiState {
        streams: Arc::clone(streams),
        storage: Arc::clone(storage),
        auth: None,
        secret: None,
        max_body,
        history: history.enabled,
        retention: history.retention(),
    }
}

/// Everything an instance runs, built and connected, not yet started.
struct Assembled {
    streams: Arc<dyn Streams>,
    storage: Arc<dyn Storage>,
    state: Option<Arc<AppState>>,
    worker: Option<Arc<Worker>>,
    embedded: bool,
}

impl Assembled {
    /// Start the subscriber and the Redis restart watch (when serving; a
    /// worker-only process still follows a Sentinel failover) and the worker
    /// (when compacting).
    fn spawn(self) -> Running {
        let Assembled {
            streams,
            storage,
            state,
            worker,
            embedded,
        } = self;
        let subscriber_stop = CancellationToken::new();
        let subscriber = state.as_ref().map(|state| {
            tokio::spawn(subscriber::run(
                Arc::clone(&streams),
                Arc::clone(state),
                subscriber_stop.clone(),
            ))
        });
        let restarts = match (&state, &worker) {
            (Some(state), _) => Some(tokio::spawn(restarts::watch(
                Arc::clone(&streams),
                Arc::clone(state),
                subscriber_stop.clone(),
            ))),
            (None, Some(_)) => Some(tokio::spawn(restarts::follow(
                Arc::clone(&streams),
                subscriber_stop.clone(),
            ))),
            (None, None) => None,
        };
        let control = state.as_ref().map(|state| {
            tokio::spawn(control::watch(
                Arc::clone(&streams),
                Arc::clone(&state.rooms),
                subscriber_stop.clone(),
            ))
        });
        let worker_stop = CancellationToken::new();
        let worker_task = worker.clone().map(|worker| {
            let token = worker_stop.clone();
            tokio::spawn(async move { worker.run(token).await })
        });
        Running {
            streams,
            storage,
            state,
            worker,
            worker_stop,
            worker_task,
            subscriber_stop,
            subscriber,
            restarts,
            control,
            embedded,
        }
    }
}

/// How the instance's task begins: assembled already (the bus answered at
/// start, so the first client is served at once), or waiting for Redis.
enum Start {
    Assembled(Assembled),
    Pending(Bus, Box<Parts>),
}

impl Start {
    /// The assembled instance once the bus answers; `None` when `stop` fired
    /// first.
    async fn assembled(
        self,
        stop: &CancellationToken,
        connected: &OnceLock<Arc<dyn Streams>>,
        gate: &Gate,
    ) -> Option<Assembled> {
        match self {
            Start::Assembled(assembled) => Some(assembled),
            Start::Pending(bus, parts) => {
                let bus = bus.connected(stop).await?;
                Some(parts.assemble(bus, connected, gate))
            }
        }
    }
}

/// The instance's life: wait for the bus, serve until `stop`, then stop in
/// the documented order (step 1, no new connections, is the listener's).
async fn run(
    stop: CancellationToken,
    start: Start,
    connected: Arc<OnceLock<Arc<dyn Streams>>>,
    gate: Arc<Gate>,
    serving: Option<JoinHandle<()>>,
) -> Result<(), ShutdownError> {
    let running = start
        .assembled(&stop, &connected, &gate)
        .await
        .map(Assembled::spawn);
    // 1. Serve until asked to stop; then stop accepting.
    match serving {
        Some(listener) => {
            let _ = listener.await;
        }
        None => stop.cancelled().await,
    }
    let Some(running) = running else {
        tracing::info!("stopped before redis answered");
        return Ok(());
    };
    tracing::info!("stopping: no new connections");
    let stopped = running.stop(tokio::time::Instant::now()).await;
    tracing::info!("stopped");
    stopped
}

/// What runs once the instance is serving, to be stopped in order.
struct Running {
    streams: Arc<dyn Streams>,
    storage: Arc<dyn Storage>,
    state: Option<Arc<AppState>>,
    worker: Option<Arc<Worker>>,
    worker_stop: CancellationToken,
    worker_task: Option<JoinHandle<()>>,
    subscriber_stop: CancellationToken,
    subscriber: Option<JoinHandle<()>>,
    restarts: Option<JoinHandle<()>>,
    control: Option<JoinHandle<()>>,
    embedded: bool,
}

impl Running {
    /// Steps 2 to 5 of the shutdown order, each by its deadline counted from
    /// `stopping` (when accepting stopped). A single instance's documents not
    /// stored on the way are the error.
    async fn stop(self, stopping: tokio::time::Instant) -> Result<(), ShutdownError> {
        // 2. Connections finish the append they are doing and close.
        if let Some(state) = &self.state {
            state.shutdown.cancel();
            state.connections.close();
            let closed = state.connections.wait();
            if tokio::time::timeout_at(stopping + CONNECTIONS_DONE, closed)
                .await
                .is_err()
            {
                tracing::warn!("some connections did not close in time");
            }
        }

        // 3. The worker finishes its task; a single instance stores everything
        // now, since its streams die with it.
        self.worker_stop.cancel();
        if let Some(task) = self.worker_task {
            if tokio::time::timeout_at(stopping + WORKER_DONE, task)
                .await
                .is_err()
            {
                tracing::warn!("worker did not stop in time; its task stays claimable");
            }
        }
        let flushed = match (self.embedded, &self.worker) {
            (true, Some(worker)) => worker.flush(stopping + FLUSH_DONE).await,
            _ => Ok(()),
        };

        // 4. The subscriber, the restart watch and the close orders stop reading.
        self.subscriber_stop.cancel();
        for task in [self.subscriber, self.restarts, self.control]
            .into_iter()
            .flatten()
        {
            let _ = task.await;
        }
        // 5. Connections to Redis and storage are released when dropped here.
        drop(self.streams);
        drop(self.storage);
        Ok(flushed?)
    }
}
