//! The engine wing: the only code that speaks to the Docker engine (bollard): connection, containers, images, builds, runs, timeouts, cleanup.

use bollard::Docker;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub mod address;
pub mod build;
pub mod containers;
pub mod context;
pub mod images;
pub mod lease;
pub mod run;

use address::tls_files;
pub use address::Address;
pub use images::{tokio_stream_of, ChannelWriter, Commit, LocalImage};

/// What an engine says of itself.
#[derive(Debug, Clone)]
pub struct Described {
    pub version: String,
    pub api_version: String,
    /// Where it keeps its data (`/var/lib/docker`).
    pub root_dir: Option<String>,
}

/// What to do when no engine answers: the same words from `doctor` and
/// from every other command.
pub const ENGINE_FIX: &str = "start one: apt-get install -y docker.io && (rm -f /var/run/docker.pid; dockerd >/tmp/dockerd.log 2>&1 &) — or `bash .ci/run`, which does both — or set DOCKER_HOST";

/// The engine when nothing names one.
pub const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";

/// What went wrong talking to the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no Docker engine answers at {host}: {source}")]
    Unavailable {
        host: String,
        source: bollard::errors::Error,
    },
    #[error("engine {host}: `{url}` is not an engine address")]
    BadUrl { host: String, url: String },
    #[error("--engine: {platform} is given to two engines, {first} and {second}")]
    Twice {
        platform: String,
        first: String,
        second: String,
    },
    #[error(
        "engine {host}: TLS is asked for (DOCKER_TLS_VERIFY or https://), but {file} is missing"
    )]
    TlsFiles { host: String, file: String },
    #[error("{step}: timed out after {secs}s")]
    Timeout { step: String, secs: u64 },
    #[error("{step}: the Docker engine went away ({detail})")]
    Lost { step: String, detail: String },
    #[error("{step}: {source}")]
    Api {
        step: String,
        source: bollard::errors::Error,
    },
    #[error("{step}: {source}")]
    Rewrite {
        step: String,
        source: std::io::Error,
    },
    #[error("docker context `{name}` ({from}): {why}")]
    Context {
        name: String,
        from: String,
        why: String,
    },
}

impl EngineError {
    /// What to do about it.
    pub fn fix(&self) -> Option<String> {
        match self {
            EngineError::Unavailable { .. } => Some(ENGINE_FIX.into()),
            EngineError::Lost { .. } => Some("start it again (`bash .ci/run` starts one; `harness doctor` checks it), then rerun: what was built is kept".into()),
            EngineError::Twice { platform, .. } => Some(format!("give {platform} one --engine: a platform's legs run on one engine")),
            EngineError::BadUrl { .. } => Some("give unix:///path/to/docker.sock, tcp://HOST:PORT (TLS when DOCKER_TLS_VERIFY is set, as the docker CLI does) or https://HOST:PORT".into()),
            EngineError::TlsFiles { .. } => Some("put the engine's client key.pem, cert.pem and ca.pem in DOCKER_CERT_PATH (default ~/.docker), or unset DOCKER_TLS_VERIFY for a plain tcp:// engine".into()),
            EngineError::Rewrite { .. } => Some("run again: the image the engine had is kept until its rewrite is loaded".into()),
            EngineError::Context { .. } => Some("name a context `docker context ls` shows (DOCKER_CONTEXT, or `docker context use NAME`), or give the engine itself (--engine URL, DOCKER_HOST)".into()),
            EngineError::Timeout { .. } | EngineError::Api { .. } => None,
        }
    }

    /// Whether retrying may help: not a definite "no such host" (offline),
    /// a 404, or an image of another platform.
    pub fn is_transient(&self) -> bool {
        let text = self.to_string();
        !(text.contains("no such host")
            || text.contains("not found")
            || text.contains("404")
            || text.contains("does not match the specified platform"))
    }

    /// Wraps an API error for `step`; a connection that broke or vanished
    /// becomes `Lost` (the engine went away), not a raw transport error.
    pub fn api(step: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> EngineError {
        let step = step.into();
        move |source| {
            use bollard::errors::Error as B;
            match source {
                B::SocketNotFoundError(_)
                | B::IOError { .. }
                | B::HyperResponseError { .. }
                | B::HyperLegacyError { .. } => EngineError::Lost {
                    step,
                    detail: source.to_string(),
                },
                _ => EngineError::Api { step, source },
            }
        }
    }
}

/// A connected engine plus the registry of what this process created and has
/// not yet removed (for Ctrl-C).
#[derive(Clone)]
pub struct Engine {
    pub(crate) docker: Docker,
    /// Where it answers, as `--engine` takes it (`unix:///…`, `tcp://…`).
    pub url: String,
    /// Live containers: id -> the platform they run for.
    live: Arc<Mutex<HashMap<String, Option<String>>>>,
}

impl Engine {
    /// The default engine's address: DOCKER_HOST, else the local socket.
    pub fn default_host() -> String {
        Self::resolve_default().unwrap_or_else(|_| DEFAULT_SOCKET.into())
    }

    /// The engine the docker CLI would use: DOCKER_HOST, else the endpoint
    /// of its context (DOCKER_CONTEXT, else the config's currentContext),
    /// else the local socket. A context that does not resolve is an error.
    pub fn resolve_default() -> Result<String, EngineError> {
        if let Some(host) = std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()) {
            return Ok(host);
        }
        Ok(context::current()?.map_or_else(|| DEFAULT_SOCKET.into(), |e| e.host))
    }

    /// Connects to the engine the docker CLI would use and checks it answers.
    pub async fn connect() -> Result<Self, EngineError> {
        Self::connect_to(&Self::resolve_default()?).await
    }

    /// Connects to `host` (`unix:///path` or `tcp://…`) and checks the engine answers.
    pub async fn connect_to(host: &str) -> Result<Self, EngineError> {
        let host = host.to_string();
        let unavailable = |source| EngineError::Unavailable {
            host: host.clone(),
            source,
        };
        let docker = match Address::parse(&host)? {
            Address::Unix(path) => {
                Docker::connect_with_unix(&path, 120, bollard::API_DEFAULT_VERSION)
            }
            Address::Tcp(addr) => {
                Docker::connect_with_http(&addr, 120, bollard::API_DEFAULT_VERSION)
            }
            Address::Tls(addr) => {
                let [key, cert, ca] = tls_files(&host)?;
                Docker::connect_with_ssl(&addr, &key, &cert, &ca, 120, bollard::API_DEFAULT_VERSION)
            }
        }
        .map_err(unavailable)?;
        let docker = timeout("connect to the engine", Duration::from_secs(15), async {
            let docker = docker.negotiate_version().await.map_err(unavailable)?;
            docker.ping().await.map_err(unavailable)?;
            Ok(docker)
        })
        .await??;
        Ok(Engine {
            docker,
            url: host,
            live: Arc::default(),
        })
    }

    /// The docker CLI's options that reach this engine: none when it is the
    /// one the CLI uses anyway, else `--host URL` (a command we print or
    /// run through the CLI goes to the engine the command used).
    pub fn cli_flags(&self) -> Vec<String> {
        if self.url == Self::default_host() {
            vec![]
        } else {
            vec!["--host".into(), self.url.clone()]
        }
    }

    /// What the engine says of itself: its version, API version and data directory.
    pub async fn describe(&self) -> Result<Described, EngineError> {
        let limit = Duration::from_secs(30);
        let v = timeout("engine version", limit, self.docker.version())
            .await?
            .map_err(EngineError::api("engine version"))?;
        let info = timeout("engine info", limit, self.docker.info())
            .await?
            .map_err(EngineError::api("engine info"))?;
        Ok(Described {
            version: v.version.unwrap_or_default(),
            api_version: v.api_version.unwrap_or_default(),
            root_dir: info.docker_root_dir,
        })
    }

    /// The engine's architecture, as it reports it (`amd64`, `arm64`).
    pub async fn arch(&self) -> Result<String, EngineError> {
        let version = timeout(
            "engine version",
            Duration::from_secs(30),
            self.docker.version(),
        )
        .await?
        .map_err(EngineError::api("engine version"))?;
        Ok(version.arch.unwrap_or_default())
    }
}

/// Runs `fut` with a deadline; the error names the step and the budget.
pub async fn timeout<T>(
    step: &str,
    limit: Duration,
    fut: impl Future<Output = T>,
) -> Result<T, EngineError> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| EngineError::Timeout {
            step: step.to_string(),
            secs: limit.as_secs(),
        })
}
