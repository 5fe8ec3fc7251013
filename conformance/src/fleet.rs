//! A fleet: one Redis, any number of Rust and JavaScript servers and workers on
//! it, a storage choice and optional auth, all on loopback and all stopped when
//! the fleet is dropped.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use testkit::{PostgresServer, S3Server};

use crate::auth::{AuthService, Keys};
use crate::member::{Lang, Launch, Member, Role};
use crate::paths;
use crate::redis::RedisService;
use crate::storage::{Storage, StorageService, StoredItem};

/// What to start; [`FleetBuilder::start`] starts it.
#[must_use]
pub struct FleetBuilder {
    counts: [(Lang, Role, usize); 4],
    storage: Storage,
    auth: Option<Keys>,
    prefix: String,
    env: Vec<(String, String)>,
    #[cfg(feature = "containers")]
    redis_container: bool,
}

impl Default for FleetBuilder {
    fn default() -> Self {
        Self {
            counts: [
                (Lang::Rust, Role::Server, 0),
                (Lang::Js, Role::Server, 0),
                (Lang::Rust, Role::Worker, 0),
                (Lang::Js, Role::Worker, 0),
            ],
            storage: Storage::Memory,
            auth: None,
            prefix: "y".into(),
            env: Vec::new(),
            #[cfg(feature = "containers")]
            redis_container: false,
        }
    }
}

impl FleetBuilder {
    fn count(mut self, lang: Lang, role: Role, n: usize) -> Self {
        for entry in &mut self.counts {
            if entry.0 == lang && entry.1 == role {
                entry.2 = n;
            }
        }
        self
    }

    /// Rust servers (`websocket serve --no-worker`).
    pub fn rust_servers(self, n: usize) -> Self {
        self.count(Lang::Rust, Role::Server, n)
    }

    /// JavaScript servers (`node bin/server.js`).
    pub fn js_servers(self, n: usize) -> Self {
        self.count(Lang::Js, Role::Server, n)
    }

    /// Rust workers (`websocket worker`).
    pub fn rust_workers(self, n: usize) -> Self {
        self.count(Lang::Rust, Role::Worker, n)
    }

    /// JavaScript workers (`node bin/worker.js`).
    pub fn js_workers(self, n: usize) -> Self {
        self.count(Lang::Js, Role::Worker, n)
    }

    /// Where workers persist documents (default: memory).
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }

    /// Require tokens: servers get `AUTH_PUBLIC_KEY` and `AUTH_PERM_CALLBACK`,
    /// and [`Fleet::auth`] mints tokens and grants access.
    pub fn auth(mut self) -> Self {
        self.auth = Some(Keys::Library);
        self
    }

    /// [`FleetBuilder::auth`] with the key pair printed by `websocket auth keygen`,
    /// as an operator makes it.
    pub fn auth_with_cli_keys(mut self) -> Self {
        self.auth = Some(Keys::Cli);
        self
    }

    /// The Redis key prefix (`REDIS_PREFIX`, default `y`).
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_string();
        self
    }

    /// An extra environment variable for every member, e.g.
    /// `REDIS_TASK_DEBOUNCE`, `REDIS_MIN_MESSAGE_LIFETIME`, `YDOC_UPDATE_CALLBACK`.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Start Redis in a container (testcontainers) instead of from PATH.
    #[cfg(feature = "containers")]
    pub fn redis_in_container(mut self) -> Self {
        self.redis_container = true;
        self
    }

    /// Start Redis, storage, auth, then every member; fails (never skips) when a
    /// program is missing or a member does not become ready.
    pub async fn start(self) -> Result<Fleet> {
        let langs: Vec<(Lang, Role)> = self
            .counts
            .iter()
            .filter(|(_, _, n)| *n > 0)
            .map(|(l, r, _)| (*l, *r))
            .collect();
        check_storage(self.storage, &langs)?;
        #[cfg(feature = "containers")]
        let redis = if self.redis_container {
            RedisService::container().await?
        } else {
            RedisService::local()?
        };
        #[cfg(not(feature = "containers"))]
        let redis = RedisService::local()?;
        let storage = StorageService::start(self.storage)?;
        let auth = match self.auth {
            Some(keys) => Some(AuthService::start_with(keys).await?),
            None => None,
        };
        let uses_js = langs.iter().any(|(l, _)| *l == Lang::Js);
        let js_dir = if uses_js {
            Some(paths::js_dir()?)
        } else {
            None
        };
        let mut fleet = Fleet {
            redis,
            storage,
            storage_kind: self.storage,
            auth,
            prefix: self.prefix,
            env: self.env,
            js_dir,
            members: Vec::new(),
        };
        // Servers first: they create the worker group, as y-redis instances do.
        for role in [Role::Server, Role::Worker] {
            for (lang, r, n) in self.counts {
                if r == role {
                    for _ in 0..n {
                        fleet.add(lang, role).await?;
                    }
                }
            }
        }
        Ok(fleet)
    }
}

/// Memory storage is per process: with workers of a mixed fleet, documents a
/// worker persisted and trimmed from the stream would be lost to other members.
fn check_storage(storage: Storage, members: &[(Lang, Role)]) -> Result<()> {
    let mixed = members.iter().any(|(l, _)| *l == Lang::Rust)
        && members.iter().any(|(l, _)| *l == Lang::Js);
    let workers = members.iter().any(|(_, r)| *r == Role::Worker);
    if storage == Storage::Memory && mixed && workers {
        bail!("a fleet mixing Rust and JavaScript with workers needs shared storage (Postgres or S3), not memory");
    }
    Ok(())
}

/// A running fleet. Members are kept in start order; dropping the fleet kills
/// them and stops Redis, storage and the auth callback. When a test panics while
/// a fleet is alive, every member's output is printed to help the diagnosis.
pub struct Fleet {
    redis: RedisService,
    storage: StorageService,
    storage_kind: Storage,
    auth: Option<AuthService>,
    prefix: String,
    env: Vec<(String, String)>,
    js_dir: Option<PathBuf>,
    members: Vec<Member>,
}

impl Fleet {
    /// Describe a fleet to start.
    pub fn builder() -> FleetBuilder {
        FleetBuilder::default()
    }

    /// The shared Redis.
    pub fn redis(&self) -> &RedisService {
        &self.redis
    }

    /// The key prefix of every member.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The storage choice.
    pub fn storage(&self) -> Storage {
        self.storage_kind
    }

    /// The PostgreSQL server, when the fleet stores there.
    pub fn postgres(&self) -> Option<&PostgresServer> {
        match &self.storage {
            StorageService::Postgres(pg) => Some(pg),
            _ => None,
        }
    }

    /// The S3 server, when the fleet stores there.
    pub fn s3(&self) -> Option<&S3Server> {
        match &self.storage {
            StorageService::S3(s3) => Some(s3),
            _ => None,
        }
    }

    /// Every item in the shared storage, read independently of both
    /// implementations (an error for memory storage, which nothing shares).
    pub fn stored_items(&self) -> Result<Vec<StoredItem>> {
        self.storage.items()
    }

    /// Keys, grants and tokens, when the fleet was built with auth.
    pub fn auth(&self) -> Option<&AuthService> {
        self.auth.as_ref()
    }

    /// Every member, in start order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The servers of `lang`, in start order.
    pub fn servers(&self, lang: Lang) -> Vec<&Member> {
        self.of(lang, Role::Server)
    }

    /// The workers of `lang`, in start order.
    pub fn workers(&self, lang: Lang) -> Vec<&Member> {
        self.of(lang, Role::Worker)
    }

    fn of(&self, lang: Lang, role: Role) -> Vec<&Member> {
        self.members
            .iter()
            .filter(|m| m.lang() == lang && m.role() == role)
            .collect()
    }

    /// The `index`-th server of `lang`.
    pub fn server(&self, lang: Lang, index: usize) -> Result<&Member> {
        self.servers(lang)
            .get(index)
            .copied()
            .ok_or_else(|| anyhow!("the fleet has no {lang} server #{index}"))
    }

    /// The `index`-th worker of `lang`.
    pub fn worker(&self, lang: Lang, index: usize) -> Result<&Member> {
        self.workers(lang)
            .get(index)
            .copied()
            .ok_or_else(|| anyhow!("the fleet has no {lang} worker #{index}"))
    }

    /// Start one more member (e.g. a worker in the middle of a test).
    pub async fn add(&mut self, lang: Lang, role: Role) -> Result<&Member> {
        self.add_with_env(lang, role, &[]).await
    }

    /// [`Fleet::add`] with extra environment variables for this member only,
    /// set last (so they override the fleet's): e.g. a different
    /// `YDOC_UPDATE_CALLBACK` per worker, to tell which worker compacted what.
    pub async fn add_with_env(
        &mut self,
        lang: Lang,
        role: Role,
        env: &[(&str, &str)],
    ) -> Result<&Member> {
        self.add_launched(lang, role, env, None).await
    }

    /// Add a Rust server started with `args` instead of `serve --no-worker`
    /// (the `demo` command, say), with `env` on top of the fleet's.
    pub async fn add_rust_with_args(
        &mut self,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<&Member> {
        let args = args.iter().map(|a| a.to_string()).collect();
        self.add_launched(Lang::Rust, Role::Server, env, Some(args))
            .await
    }

    async fn add_launched(
        &mut self,
        lang: Lang,
        role: Role,
        env: &[(&str, &str)],
        args: Option<Vec<String>>,
    ) -> Result<&Member> {
        let mut kinds: Vec<(Lang, Role)> =
            self.members.iter().map(|m| (m.lang(), m.role())).collect();
        kinds.push((lang, role));
        check_storage(self.storage_kind, &kinds)?;
        let index = self
            .members
            .iter()
            .filter(|m| m.lang() == lang && m.role() == role)
            .count();
        let mut launch = self.launch(lang, role, index)?;
        launch
            .env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        if let Some(args) = args {
            launch.args = args;
        }
        let member = Member::start(&launch).await?;
        self.members.push(member);
        Ok(&self.members[self.members.len() - 1])
    }

    fn launch(&mut self, lang: Lang, role: Role, index: usize) -> Result<Launch> {
        let mut env = vec![
            ("REDIS".to_string(), self.redis.url()),
            ("REDIS_PREFIX".to_string(), self.prefix.clone()),
        ];
        env.extend(self.storage.env(lang));
        if let (Some(auth), Role::Server) = (&self.auth, role) {
            env.push(("AUTH_PUBLIC_KEY".into(), auth.public_jwk().to_string()));
            env.push((
                "AUTH_PERM_CALLBACK".into(),
                auth.perm_callback().to_string(),
            ));
        }
        let (program, args, cwd) = match lang {
            Lang::Rust => {
                env.push(("HOST".into(), "127.0.0.1".into()));
                env.push(("NO_COLOR".into(), "1".into()));
                let filter =
                    std::env::var("CONFORMANCE_RUST_LOG").unwrap_or_else(|_| "info".into());
                env.push(("RUST_LOG".into(), filter));
                let args = match role {
                    Role::Server => vec!["serve".to_string(), "--no-worker".to_string()],
                    Role::Worker => vec!["worker".to_string()],
                };
                (paths::websocket_binary()?, args, paths::workspace_root())
            }
            Lang::Js => {
                let dir = match &self.js_dir {
                    Some(dir) => dir.clone(),
                    None => {
                        let dir = paths::js_dir()?;
                        self.js_dir = Some(dir.clone());
                        dir
                    }
                };
                let script = match role {
                    Role::Server => "bin/server.js",
                    Role::Worker => "bin/worker.js",
                };
                (PathBuf::from("node"), vec![script.to_string()], dir)
            }
        };
        env.extend(self.env.iter().cloned());
        Ok(Launch {
            lang,
            role,
            index,
            program,
            args,
            cwd,
            env,
        })
    }

    /// Every member's output, for failure messages.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("===== {} =====\n{}", m.name(), m.logs()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("fleet output at the failure:\n{}", self.logs());
        }
        for member in &self.members {
            member.kill();
        }
    }
}
