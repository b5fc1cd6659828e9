//! The Docker engine: connection, labels on everything we create, timeouts, cleanup.

use bollard::query_parameters::{
    CommitContainerOptionsBuilder, ListContainersOptionsBuilder, ListImagesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
};
use bollard::Docker;

pub mod context;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Label on every container, image and volume the harness creates.
pub const LABEL_MANAGED: &str = "io.guix-matrix.managed";
/// Label carrying the content hash of an image's inputs.
pub const LABEL_INPUTS: &str = "io.guix-matrix.inputs";
/// The inputs part by part (JSON), to say what changed between two images.
pub const LABEL_PARTS: &str = "io.guix-matrix.inputs.parts";
/// Label carrying the Docker platform an image or container is for.
pub const LABEL_PLATFORM: &str = "io.guix-matrix.platform";

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
            EngineError::Unavailable { .. } => Some("start one (`sudo dockerd &`, or `bash .ci/run` which installs and starts it), or set DOCKER_HOST".into()),
            EngineError::Lost { .. } => Some("start it again (`bash .ci/run` starts one; `harness doctor` checks it), then rerun: what was built is kept".into()),
            EngineError::Twice { platform, .. } => Some(format!("give {platform} one --engine: a platform's legs run on one engine")),
            EngineError::BadUrl { .. } => Some("give unix:///path/to/docker.sock, tcp://HOST:PORT (TLS when DOCKER_TLS_VERIFY is set, as the docker CLI does) or https://HOST:PORT".into()),
            EngineError::TlsFiles { .. } => Some("put the engine's client key.pem, cert.pem and ca.pem in DOCKER_CERT_PATH (default ~/.docker), or unset DOCKER_TLS_VERIFY for a plain tcp:// engine".into()),
            EngineError::Context { .. } => Some("name a context `docker context ls` shows (DOCKER_CONTEXT, or `docker context use NAME`), or give the engine itself (--engine URL, DOCKER_HOST)".into()),
            EngineError::Timeout { .. } | EngineError::Api { .. } => None,
        }
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

/// Where an engine listens, as the docker CLI takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Unix(String),
    Tcp(String),
    Tls(String),
}

impl Address {
    /// `unix:///run/docker.sock`, `tcp://host:2375` (TLS when
    /// DOCKER_TLS_VERIFY is set and not empty), `https://host:2376`.
    pub fn parse(url: &str) -> Result<Self, EngineError> {
        let tls = std::env::var_os("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty())
            || context::tls_dir_for(url).is_some();
        Self::parse_with(url, tls)
    }

    fn parse_with(url: &str, tls: bool) -> Result<Self, EngineError> {
        let bad = || EngineError::BadUrl {
            host: url.to_string(),
            url: url.to_string(),
        };
        if let Some(path) = url.strip_prefix("unix://") {
            return if path.starts_with('/') {
                Ok(Address::Unix(path.to_string()))
            } else {
                Err(bad())
            };
        }
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        let authority = rest.trim_end_matches('/');
        let (name, port) = authority.rsplit_once(':').ok_or_else(bad)?;
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-[]:".contains(c));
        if !name_ok || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad());
        }
        match (scheme, tls) {
            ("tcp", false) => Ok(Address::Tcp(format!("tcp://{authority}"))),
            ("tcp", true) | ("https", _) => Ok(Address::Tls(format!("tcp://{authority}"))),
            _ => Err(bad()),
        }
    }
}

/// DOCKER_CERT_PATH's (default ~/.docker) key, cert and CA, each checked to exist.
fn tls_files(host: &str) -> Result<[std::path::PathBuf; 3], EngineError> {
    let dir = std::env::var_os("DOCKER_CERT_PATH")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| context::tls_dir_for(host))
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".docker")))
        .unwrap_or_default();
    let files = ["key.pem", "cert.pem", "ca.pem"].map(|f| dir.join(f));
    if let Some(missing) = files.iter().find(|f| !f.is_file()) {
        return Err(EngineError::TlsFiles {
            host: host.to_string(),
            file: missing.display().to_string(),
        });
    }
    Ok(files)
}

/// A connected engine plus the registry of what this process created and has
/// not yet removed (for Ctrl-C).
#[derive(Clone)]
pub struct Engine {
    pub docker: Docker,
    pub host: String,
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
            host,
            live: Arc::default(),
        })
    }

    /// The labels every object we create carries.
    pub fn labels(platform: Option<&str>) -> HashMap<String, String> {
        let mut labels = HashMap::from([(LABEL_MANAGED.to_string(), "true".to_string())]);
        if let Some(p) = platform {
            labels.insert(LABEL_PLATFORM.to_string(), p.to_string());
        }
        labels
    }

    /// Remembers a container to remove on Ctrl-C or when its leg times out.
    pub fn track(&self, id: &str, platform: Option<&str>) {
        self.live
            .lock()
            .expect("registry lock")
            .insert(id.to_string(), platform.map(str::to_string));
    }

    /// Forgets a container once it is removed (or kept on purpose).
    pub fn untrack(&self, id: &str) {
        self.live.lock().expect("registry lock").remove(id);
    }

    /// Force-removes a container; a container already gone is fine.
    pub async fn remove_container(&self, id: &str) {
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        let res = timeout(
            "remove container",
            Duration::from_secs(60),
            self.docker.remove_container(id, Some(opts)),
        )
        .await;
        match res {
            Ok(Ok(())) => {}
            Ok(Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            })) => {}
            Ok(Err(e)) => tracing::warn!("could not remove container {id}: {e}"),
            Err(e) => tracing::warn!("could not remove container {id}: {e}"),
        }
        self.untrack(id);
    }

    /// Removes every container this process created and still tracks.
    pub async fn remove_tracked(&self) -> usize {
        self.remove_tracked_where(|_| true).await
    }

    /// After an interrupt: removes labelled containers created since `since`
    /// (unix seconds) that we did not track ourselves — the classic builder's
    /// step containers, which inherit our labels from the base image.
    pub async fn remove_created_since(&self, since: i64) -> usize {
        let Ok(list) = self.managed_containers(None).await else {
            return 0;
        };
        let ids: Vec<String> = list
            .into_iter()
            .filter(|c| c.created.unwrap_or(0) >= since)
            .filter_map(|c| c.id)
            .collect();
        self.remove_containers(&ids).await
    }

    /// Force-removes each of `ids`; returns how many.
    async fn remove_containers(&self, ids: &[String]) -> usize {
        for id in ids {
            self.remove_container(id).await;
        }
        ids.len()
    }

    /// The containers (running or not) that carry our label, and with
    /// `platform` that platform's label too.
    pub async fn managed_containers(
        &self,
        platform: Option<&str>,
    ) -> Result<Vec<bollard::models::ContainerSummary>, EngineError> {
        let mut labels = vec![format!("{LABEL_MANAGED}=true")];
        labels.extend(platform.map(|p| format!("{LABEL_PLATFORM}={p}")));
        let filter = HashMap::from([("label".to_string(), labels)]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filter)
            .build();
        timeout(
            "list containers",
            Duration::from_secs(30),
            self.docker.list_containers(Some(opts)),
        )
        .await?
        .map_err(EngineError::api("list containers"))
    }

    /// Removes the tracked containers of one platform (a leg that timed out).
    pub async fn remove_tracked_for(&self, platform: &str) -> usize {
        self.remove_tracked_where(|p| p == Some(platform)).await
    }

    async fn remove_tracked_where(&self, selected: impl Fn(Option<&str>) -> bool) -> usize {
        let ids: Vec<String> = self
            .live
            .lock()
            .expect("registry lock")
            .iter()
            .filter(|(_, p)| selected(p.as_deref()))
            .map(|(id, _)| id.clone())
            .collect();
        self.remove_containers(&ids).await
    }

    /// Removes every container that carries our label, and every image tag
    /// under `prefix` (`guix-matrix:*`, `guix-matrix-base:*`, …: what the
    /// harness built, loaded or tagged); an image left without tags goes too.
    /// With `containers_only`, images (the build cache) stay.
    pub async fn clean(
        &self,
        prefix: &str,
        containers_only: bool,
    ) -> Result<(usize, usize), EngineError> {
        let ids: Vec<String> = self
            .managed_containers(None)
            .await?
            .into_iter()
            .filter_map(|c| c.id)
            .collect();
        let containers = self.remove_containers(&ids).await;
        if containers_only {
            return Ok((containers, 0));
        }
        let images = self
            .docker
            .list_images(Some(ListImagesOptionsBuilder::default().all(false).build()))
            .await
            .map_err(EngineError::api("list images"))?;
        let ours = |tag: &str| {
            tag.strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with(':') || rest.starts_with('-'))
        };
        let mut removed = 0;
        for tag in images
            .iter()
            .flat_map(|i| i.repo_tags.iter())
            .filter(|t| ours(t))
        {
            let opts = RemoveImageOptionsBuilder::default().force(true).build();
            match self.docker.remove_image(tag, Some(opts), None).await {
                Ok(_) => removed += 1,
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(e) => tracing::warn!("could not remove image {tag}: {e}"),
            }
        }
        Ok((containers, removed))
    }

    /// `docker commit CONTAINER TAG`: the container's file system as a new
    /// image, which keeps the container's config (and so our labels).
    pub async fn commit(&self, container: &str, tag: &str) -> Result<String, EngineError> {
        self.commit_with(container, tag, "").await
    }

    /// `docker commit --change CHANGES CONTAINER TAG` (Dockerfile
    /// instructions, one per line, e.g. `ENTRYPOINT ["/entry-point.sh"]`).
    pub async fn commit_with(
        &self,
        container: &str,
        tag: &str,
        changes: &str,
    ) -> Result<String, EngineError> {
        let config = bollard::models::ContainerConfig::default();
        self.commit_as(container, tag, changes, config, Duration::from_secs(300))
            .await
    }

    /// `docker commit` with a config merged over the container's (labels
    /// added, `Cmd`, `Entrypoint` and `Env` entries replaced by name).
    pub async fn commit_config(
        &self,
        container: &str,
        tag: &str,
        config: bollard::models::ContainerConfig,
    ) -> Result<String, EngineError> {
        self.commit_as(container, tag, "", config, Duration::from_secs(600))
            .await
    }

    async fn commit_as(
        &self,
        container: &str,
        tag: &str,
        changes: &str,
        config: bollard::models::ContainerConfig,
        limit: Duration,
    ) -> Result<String, EngineError> {
        let (repo, t) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
        let mut opts = CommitContainerOptionsBuilder::default()
            .container(container)
            .repo(repo)
            .tag(t);
        if !changes.is_empty() {
            opts = opts.changes(changes);
        }
        let step = format!("commit {container} as {tag}");
        Ok(timeout(
            &step,
            limit,
            self.docker.commit_container(opts.build(), config),
        )
        .await?
        .map_err(EngineError::api(step.clone()))?
        .id)
    }

    /// Removes an image tag (and the image, when no other tag holds it); one
    /// already gone is fine.
    pub async fn remove_image(&self, reference: &str) {
        let opts = RemoveImageOptionsBuilder::default().force(true).build();
        match self.docker.remove_image(reference, Some(opts), None).await {
            Ok(_)
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => tracing::warn!("could not remove image {reference}: {e}"),
        }
    }

    /// Every tag in the engine, with the id it names.
    pub async fn tags(&self) -> Result<HashMap<String, String>, EngineError> {
        let images = self
            .docker
            .list_images(Some(ListImagesOptionsBuilder::default().all(false).build()))
            .await
            .map_err(EngineError::api("list images"))?;
        Ok(images
            .into_iter()
            .flat_map(|i| {
                let id = i.id;
                i.repo_tags.into_iter().map(move |t| (t, id.clone()))
            })
            .collect())
    }

    /// Removes an image that nothing needs any more; one still used by a
    /// container, or by another tag, stays.
    pub async fn remove_unused_image(&self, id: &str) {
        let opts = RemoveImageOptionsBuilder::default().force(false).build();
        if let Err(e) = self.docker.remove_image(id, Some(opts), None).await {
            tracing::debug!("kept image {id}: {e}");
        }
    }

    /// Removes the dangling images (untagged, no child) that carry our label:
    /// what interrupted or replaced builds leave. Returns (count, bytes).
    pub async fn prune_dangling(&self) -> Result<(usize, u64), EngineError> {
        let filters = HashMap::from([
            ("dangling".to_string(), vec!["true".to_string()]),
            ("label".to_string(), vec![format!("{LABEL_MANAGED}=true")]),
        ]);
        let opts = bollard::query_parameters::PruneImagesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let pruned = timeout(
            "prune dangling images",
            Duration::from_secs(600),
            self.docker.prune_images(Some(opts)),
        )
        .await?
        .map_err(EngineError::api("prune dangling images"))?;
        let count = pruned
            .images_deleted
            .unwrap_or_default()
            .iter()
            .filter(|d| d.deleted.is_some())
            .count();
        Ok((count, pruned.space_reclaimed.unwrap_or(0).max(0) as u64))
    }

    /// `Some(labels)` when `reference` names a local image, with its architecture.
    pub async fn local_image(&self, reference: &str) -> Result<Option<LocalImage>, EngineError> {
        match self.docker.inspect_image(reference).await {
            Ok(i) => Ok(Some(LocalImage {
                id: i.id.unwrap_or_default(),
                architecture: i.architecture.unwrap_or_default(),
                variant: i.variant,
                repo_digests: i.repo_digests.unwrap_or_default(),
                layers: i.root_fs.and_then(|r| r.layers).unwrap_or_default(),
                labels: i.config.and_then(|c| c.labels).unwrap_or_default(),
            })),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(EngineError::Api {
                step: format!("inspect image {reference}"),
                source: e,
            }),
        }
    }
}

/// What the engine knows of a local image.
#[derive(Debug, Clone)]
pub struct LocalImage {
    pub id: String,
    pub architecture: String,
    pub variant: Option<String>,
    /// `repo@sha256:…` for an image that came from a registry.
    pub repo_digests: Vec<String>,
    /// The diff ids of its layers, bottom first.
    pub layers: Vec<String>,
    pub labels: HashMap<String, String>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_addresses_parse_as_the_docker_cli_takes_them() {
        let ok = |url, tls| Address::parse_with(url, tls).unwrap();
        assert_eq!(
            ok("unix:///run/other.sock", false),
            Address::Unix("/run/other.sock".into())
        );
        assert_eq!(
            ok("tcp://10.0.0.2:2375", false),
            Address::Tcp("tcp://10.0.0.2:2375".into())
        );
        assert_eq!(
            ok("tcp://arm.example:2376", true),
            Address::Tls("tcp://arm.example:2376".into())
        );
        assert_eq!(
            ok("https://arm.example:2376/", false),
            Address::Tls("tcp://arm.example:2376".into())
        );
        for bad in [
            "arm.example:2376",
            "tcp://arm.example",
            "tcp://:2376",
            "tcp://arm example:2376",
            "tcp://arm.example:99999",
            "ssh://me@arm.example:22",
            "unix://relative.sock",
        ] {
            let e = Address::parse_with(bad, false).unwrap_err();
            assert!(
                e.to_string().contains(bad) && e.fix().unwrap().contains("tcp://HOST:PORT"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn missing_tls_files_are_named() {
        let dir = std::env::temp_dir().join(format!("gm-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("key.pem"), "").unwrap();
        std::env::set_var("DOCKER_CERT_PATH", &dir);
        let e = tls_files("tcp://arm:2376").unwrap_err();
        std::env::remove_var("DOCKER_CERT_PATH");
        std::fs::remove_dir_all(&dir).unwrap();
        let msg = e.to_string();
        assert!(
            msg.starts_with("engine tcp://arm:2376: TLS") && msg.ends_with("cert.pem is missing"),
            "{msg}"
        );
    }
}
