//! The one Redis a fleet shares: a local `redis-server` on a free port, or (with
//! the `containers` feature) a Redis container started through testcontainers.

use anyhow::{Context, Result};
use testkit::RedisServer;

/// Where a fleet's Redis runs.
pub enum RedisService {
    /// `redis-server` from PATH, started by testkit.
    Local(RedisServer),
    /// A `redis` container; stopped when dropped.
    #[cfg(feature = "containers")]
    Container {
        /// The running container.
        container: Box<testcontainers::ContainerAsync<testcontainers::GenericImage>>,
        /// `redis://{host}:{port}`.
        url: String,
    },
}

impl RedisService {
    /// A local `redis-server` (fails when it is not installed).
    pub fn local() -> Result<Self> {
        Ok(Self::Local(
            RedisServer::start().context("starting redis-server")?,
        ))
    }

    /// A Redis 7.0 container (the version the y-redis captures were made with).
    #[cfg(feature = "containers")]
    pub async fn container() -> Result<Self> {
        use testcontainers::core::{IntoContainerPort, WaitFor};
        use testcontainers::runners::AsyncRunner;
        use testcontainers::GenericImage;

        let container = GenericImage::new("redis", "7.0")
            .with_exposed_port(6379.tcp())
            .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"))
            .start()
            .await
            .context("starting a redis container")?;
        let host = container.get_host().await?;
        let port = container.get_host_port_ipv4(6379.tcp()).await?;
        Ok(Self::Container {
            container: Box::new(container),
            url: format!("redis://{host}:{port}"),
        })
    }

    /// The URL every member gets as `REDIS`.
    pub fn url(&self) -> String {
        match self {
            Self::Local(server) => server.url(),
            #[cfg(feature = "containers")]
            Self::Container { url, .. } => url.clone(),
        }
    }

    /// The process id of a local `redis-server` (`None` for a container, whose
    /// process is not ours to inspect), for reading its resource use.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Self::Local(server) => server.pid(),
            #[cfg(feature = "containers")]
            Self::Container { .. } => None,
        }
    }

    /// A new connection for inspecting or seeding Redis from a test.
    pub async fn connection(&self) -> Result<redis::aio::MultiplexedConnection> {
        redis::Client::open(self.url())?
            .get_multiplexed_async_connection()
            .await
            .context("connecting to the fleet's Redis")
    }
}
