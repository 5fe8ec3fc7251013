//! Finding the Redis master through Sentinel (docs/protocol.md §3.3), so that
//! a fleet follows a failover instead of writing to a server that is gone or
//! has become a replica.

use std::time::Duration;

use redis::{
    Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo, Value,
};

use super::StreamError;

/// How long one Sentinel or a candidate master may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// The Sentinels of one monitored master, and how to log in to that master.
#[derive(Debug, Clone)]
pub struct Sentinels {
    /// `host:port` of each Sentinel, asked in this order.
    addresses: Vec<String>,
    /// The master's name as the Sentinels monitor it.
    master: String,
    /// The user, password and database of the master (from `REDIS_URL`); its
    /// address is replaced by the one the Sentinels name.
    base: ConnectionInfo,
    /// How to log in to the Sentinels themselves (their `requirepass`, or an
    /// ACL user); empty when they ask for nothing.
    login: RedisConnectionInfo,
}

impl Sentinels {
    /// Sentinels at `list` (`host:port`, comma-separated) watching `master`;
    /// `url`, when given, supplies the credentials and database.
    pub fn new(list: &str, master: &str, url: Option<&str>) -> Result<Self, StreamError> {
        let addresses: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        if addresses.is_empty() {
            return Err(StreamError::Reply("no Sentinel address given".into()));
        }
        let base = url.unwrap_or("redis://127.0.0.1").into_connection_info()?;
        Ok(Self {
            addresses,
            master: master.to_string(),
            base,
            login: RedisConnectionInfo::default(),
        })
    }

    /// Log in to the Sentinels with `password` (and `username`, for an ACL
    /// user), as `REDIS_SENTINEL_PASSWORD` and `REDIS_SENTINEL_USERNAME` say.
    /// The master's own credentials stay those of `REDIS_URL`.
    pub fn with_login(mut self, username: Option<&str>, password: Option<&str>) -> Self {
        let mut login = RedisConnectionInfo::default();
        if let Some(username) = username {
            login = login.set_username(username);
        }
        if let Some(password) = password {
            login = login.set_password(password);
        }
        self.login = login;
        self
    }

    /// The master's name as the Sentinels monitor it.
    pub fn master_name(&self) -> &str {
        &self.master
    }

    /// The current master: the address the first answering Sentinel names,
    /// once that server confirms it is a master (`ROLE`). During a failover a
    /// Sentinel may still name the old master for a moment, or a promoted
    /// replica may not have switched role yet: both are an error, to be asked
    /// again shortly.
    pub async fn master(&self) -> Result<(String, ConnectionInfo), StreamError> {
        let mut last = StreamError::Reply(format!(
            "no Sentinel knows a master named {:?}",
            self.master
        ));
        for sentinel in &self.addresses {
            match self.ask(sentinel).await {
                Ok(Some((host, port))) => {
                    let address = format!("{host}:{port}");
                    let info = self.base.clone().set_addr(ConnectionAddr::Tcp(host, port));
                    match confirm_master(&info).await {
                        Ok(()) => return Ok((address, info)),
                        Err(err) => last = err,
                    }
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::debug!(%sentinel, %err, "sentinel did not answer");
                    last = err;
                }
            }
        }
        Err(last)
    }

    /// `SENTINEL get-master-addr-by-name` on one Sentinel.
    async fn ask(&self, sentinel: &str) -> Result<Option<(String, u16)>, StreamError> {
        let info = format!("redis://{sentinel}")
            .into_connection_info()?
            .set_redis_settings(self.login.clone());
        let client = Client::open(info)?;
        let ask = async {
            let mut connection = client.get_multiplexed_async_connection().await?;
            let reply: Option<(String, u16)> = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&self.master)
                .query_async(&mut connection)
                .await?;
            Ok::<_, StreamError>(reply)
        };
        tokio::time::timeout(ASK_TIMEOUT, ask)
            .await
            .map_err(|_| StreamError::NoAnswer(ASK_TIMEOUT))?
    }
}

/// Whether the server at `info` says it is a master.
async fn confirm_master(info: &ConnectionInfo) -> Result<(), StreamError> {
    let client = Client::open(info.clone())?;
    let ask = async {
        let mut connection = client.get_multiplexed_async_connection().await?;
        let role: Value = redis::cmd("ROLE").query_async(&mut connection).await?;
        Ok::<_, StreamError>(role)
    };
    let role = tokio::time::timeout(ASK_TIMEOUT, ask)
        .await
        .map_err(|_| StreamError::NoAnswer(ASK_TIMEOUT))??;
    let first = match &role {
        Value::Array(items) => items.first(),
        _ => None,
    };
    match first {
        Some(Value::BulkString(role)) if role == b"master" => Ok(()),
        Some(Value::SimpleString(role)) if role == "master" => Ok(()),
        _ => Err(StreamError::Reply(format!(
            "the server Sentinel names is not a master yet: {role:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_credentials() {
        let sentinels =
            Sentinels::new(" a:1 ,b:2,", "main", Some("redis://:secret@ignored:9/3")).unwrap();
        assert_eq!(sentinels.addresses, ["a:1", "b:2"]);
        assert_eq!(sentinels.master_name(), "main");
        assert_eq!(sentinels.base.redis_settings().db(), 3);
        assert!(Sentinels::new(" , ", "main", None).is_err());
        assert_eq!(sentinels.login.password(), None);
        let sentinels = sentinels.with_login(Some("watcher"), Some("pass"));
        assert_eq!(sentinels.login.username(), Some("watcher"));
        assert_eq!(sentinels.login.password(), Some("pass"));
        // The master's credentials are still REDIS_URL's.
        assert_eq!(sentinels.base.redis_settings().password(), Some("secret"));
    }
}
