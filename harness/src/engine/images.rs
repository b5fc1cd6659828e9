//! Images in the engine: inspect, tag, pull, load, commit, remove, and whether one is up to date.

use super::{timeout, Engine, EngineError};
use crate::names::LABEL_MANAGED;
use bollard::query_parameters::{
    CommitContainerOptionsBuilder, CreateImageOptionsBuilder, ImportImageOptionsBuilder,
    ListImagesOptionsBuilder, RemoveImageOptionsBuilder, TagImageOptionsBuilder,
};
use futures::StreamExt;
use std::collections::HashMap;
use std::time::Duration;

impl Engine {
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
        config: Commit,
    ) -> Result<String, EngineError> {
        let config = bollard::models::ContainerConfig {
            labels: Some(config.labels),
            env: Some(config.env),
            cmd: Some(config.cmd),
            entrypoint: Some(config.entrypoint),
            ..Default::default()
        };
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
                created: i.created.map(|t| t.unix_timestamp()),
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
    /// Its config's `created` (seconds since the epoch), when it says.
    pub created: Option<i64>,
}

impl LocalImage {
    /// The content hash of the inputs it was built from, as its label says.
    pub fn inputs(&self) -> Option<&str> {
        self.labels
            .get(crate::names::LABEL_INPUTS)
            .map(String::as_str)
    }

    /// Whether it was built from `inputs` (the one up-to-date test).
    pub fn has_inputs(&self, inputs: &str) -> bool {
        self.inputs() == Some(inputs)
    }
}

/// What a commit sets over the container's config (`docker commit --change`).
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// Labels added to the container's.
    pub labels: HashMap<String, String>,
    /// `Env` entries, replaced by name.
    pub env: Vec<String>,
    pub cmd: Vec<String>,
    pub entrypoint: Vec<String>,
}

impl Engine {
    /// `docker tag ID TAG`.
    pub async fn tag(&self, id: &str, tag: &str) -> Result<(), EngineError> {
        let (repo, t) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
        let opts = TagImageOptionsBuilder::default().repo(repo).tag(t).build();
        let step = format!("tag {tag}");
        timeout(
            &step,
            Duration::from_secs(60),
            self.docker.tag_image(id, Some(opts)),
        )
        .await?
        .map_err(EngineError::api(step))
    }

    /// `docker pull --platform PLATFORM REFERENCE`, retried with back-off
    /// while the failure may go away (not a 404, not "no such host").
    pub async fn pull(
        &self,
        reference: &str,
        platform: &str,
        limit: Duration,
    ) -> Result<(), EngineError> {
        let step = format!("{platform}: pull {reference}");
        let opts = CreateImageOptionsBuilder::default()
            .from_image(reference)
            .platform(platform)
            .build();
        crate::retry::network(&step, EngineError::is_transient, || async {
            let mut stream = self.docker.create_image(Some(opts.clone()), None, None);
            timeout(&step, limit, async {
                while let Some(item) = stream.next().await {
                    item.map_err(EngineError::api(step.clone()))?;
                }
                Ok::<(), EngineError>(())
            })
            .await?
        })
        .await
    }

    /// `docker load` of the archive `body` streams: the id the engine says
    /// it loaded, if it says one.
    pub async fn load<S>(
        &self,
        step: &str,
        body: S,
        limit: Duration,
    ) -> Result<Option<String>, EngineError>
    where
        S: futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
    {
        let opts = ImportImageOptionsBuilder::default().quiet(false).build();
        let mut stream = self.docker.import_image_stream(opts, body, None);
        let mut loaded = None;
        timeout(step, limit, async {
            while let Some(item) = stream.next().await {
                let info = item.map_err(EngineError::api(step))?;
                let id = info.stream.as_deref().and_then(|s| {
                    s.trim()
                        .strip_prefix("Loaded image ID: ")
                        .map(str::to_string)
                });
                loaded = id.or(loaded.take());
            }
            Ok::<(), EngineError>(())
        })
        .await??;
        Ok(loaded)
    }

    /// The image `reference` when it is there and its inputs label says
    /// `inputs` (the one "is this image up to date" check).
    pub async fn up_to_date(
        &self,
        reference: &str,
        inputs: &str,
    ) -> Result<Option<LocalImage>, EngineError> {
        Ok(self.local_image(reference).await?.filter(|img| {
            img.labels
                .get(crate::names::LABEL_INPUTS)
                .map(String::as_str)
                == Some(inputs)
        }))
    }
}

impl Engine {
    /// `docker save NAMES…`: one archive of the images, as a byte stream.
    pub fn save(
        &self,
        names: &[&str],
    ) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
        self.docker
            .export_images(names)
            .map(|r| r.map_err(std::io::Error::other))
    }
}

impl Engine {
    /// `docker save NAME`, read by `read` (a blocking function) within `limit`.
    pub async fn read_saved<T: Send + 'static>(
        &self,
        step: &str,
        name: &str,
        limit: Duration,
        read: impl FnOnce(&mut dyn std::io::Read) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, EngineError> {
        let saved = self.save(&[name]);
        let mut reader =
            tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(Box::pin(saved)));
        let task = tokio::task::spawn_blocking(move || read(&mut reader));
        let failed = |source: std::io::Error| EngineError::Rewrite {
            step: step.to_string(),
            source,
        };
        timeout(step, limit, task)
            .await?
            .map_err(|e| failed(std::io::Error::other(e.to_string())))?
            .map_err(failed)
    }

    /// `docker save NAME | transform | docker load`: the image rewritten in
    /// the engine by `transform`, a blocking reader-to-writer function whose
    /// result comes back once the engine has loaded what it wrote.
    pub async fn rewrite<T: Send + 'static>(
        &self,
        step: &str,
        name: &str,
        limit: Duration,
        transform: impl FnOnce(&mut dyn std::io::Read, &mut dyn std::io::Write) -> std::io::Result<T>
            + Send
            + 'static,
    ) -> Result<T, EngineError> {
        let saved = self.save(&[name]);
        let mut reader =
            tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(Box::pin(saved)));
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let task = tokio::task::spawn_blocking(move || {
            let mut writer = ChannelWriter(tx.clone());
            let result = transform(&mut reader, &mut writer);
            if let Err(e) = &result {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
            result
        });
        let loaded = self.load(step, tokio_stream_of(rx), limit).await;
        let result = task.await.map_err(|e| EngineError::Rewrite {
            step: step.to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let out = result.map_err(|source| EngineError::Rewrite {
            step: step.to_string(),
            source,
        })?;
        loaded?;
        Ok(out)
    }
}

/// The receiving end of a channel as a body stream.
pub fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A writer into a channel (the blocking side of a body stream).
pub struct ChannelWriter(pub tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(bytes::Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::other("the load was abandoned"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
