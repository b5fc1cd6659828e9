//! The containers the harness creates: labels, tracking for Ctrl-C and timeouts, removal, cleanup.

use super::{timeout, Engine, EngineError};
use crate::names::{LABEL_MANAGED, LABEL_PLATFORM};
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListImagesOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
};
use std::collections::HashMap;
use std::time::Duration;

impl Engine {
    /// The labels every object we create carries.
    pub fn labels(platform: Option<&str>) -> HashMap<String, String> {
        let mut labels = HashMap::from([(LABEL_MANAGED.to_string(), "true".to_string())]);
        if let Some(p) = platform {
            labels.insert(LABEL_PLATFORM.to_string(), p.to_string());
        }
        labels
    }

    /// The labels of a container: ours, and the run it belongs to (images
    /// never carry the run: the same inputs make the same image).
    pub fn container_labels(platform: Option<&str>) -> HashMap<String, String> {
        let mut labels = Self::labels(platform);
        labels.insert(
            crate::names::LABEL_RUN.to_string(),
            super::lease::this_run().to_string(),
        );
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
        // Another run's containers on a shared engine are not ours.
        let ours = |c: &bollard::models::ContainerSummary| {
            c.labels
                .as_ref()
                .and_then(|l| l.get(crate::names::LABEL_RUN))
                .map_or(true, |run| run == super::lease::this_run())
        };
        let ids: Vec<String> = list
            .into_iter()
            .filter(|c| c.created.unwrap_or(0) >= since)
            .filter(ours)
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
    /// With `containers_only`, images (the build cache) stay. What a live
    /// run holds (its lease: its containers, the tags of its platforms)
    /// stays unless `force`; dead runs' leases go.
    pub async fn clean(
        &self,
        prefix: &str,
        containers_only: bool,
        force: bool,
    ) -> Result<Cleaned, EngineError> {
        let leases = self.leases().await?;
        let (live, dead): (Vec<_>, Vec<_>) = leases.into_iter().partition(|l| l.live());
        let held: Vec<super::lease::Lease> = if force { vec![] } else { live.clone() };
        let held_by = |run: Option<&String>| run.is_some_and(|r| held.iter().any(|l| l.run == *r));
        let mut out = Cleaned::default();
        let mut ids = vec![];
        for c in self.managed_containers(None).await? {
            let run = c
                .labels
                .as_ref()
                .and_then(|l| l.get(crate::names::LABEL_RUN));
            match (held_by(run), c.id) {
                (true, _) => out.kept_containers += 1,
                (false, Some(id)) => ids.push(id),
                (false, None) => {}
            }
        }
        out.containers = self.remove_containers(&ids).await;
        for lease in dead
            .iter()
            .chain(if force { live.iter() } else { [].iter() })
        {
            self.drop_lease(&lease.volume).await;
            out.dead_leases += 1;
        }
        out.live = held.clone();
        if containers_only {
            return Ok(out);
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
        // A tag's platform is its tag part (`guix-matrix-base:arm-v7`); an
        // image a live run committed (a check's `docker commit`) carries
        // that run's label, whatever its tag.
        let held_tag = |tag: &str| {
            let slug = tag.rsplit_once(':').map_or("", |(_, s)| s);
            out.live.iter().any(|l| l.slugs.iter().any(|s| s == slug))
        };
        let mut removed = 0;
        let mut kept = 0;
        for (image, tag) in images
            .iter()
            .flat_map(|i| i.repo_tags.iter().map(move |t| (i, t)))
            .filter(|(_, t)| ours(t))
        {
            if held_tag(tag) || held_by(image.labels.get(crate::names::LABEL_RUN)) {
                kept += 1;
                continue;
            }
            let opts = RemoveImageOptionsBuilder::default().force(true).build();
            match self.docker.remove_image(tag, Some(opts), None).await {
                Ok(_) => removed += 1,
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(e) => tracing::warn!("could not remove image {tag}: {e}"),
            }
        }
        out.images = removed;
        out.kept_images = kept;
        Ok(out)
    }
}

/// What `clean` removed, and what it left to live runs.
#[derive(Debug, Clone, Default)]
pub struct Cleaned {
    pub containers: usize,
    pub images: usize,
    /// Leases of runs that are gone (or all, with force), removed.
    pub dead_leases: usize,
    /// The live runs whose containers and tags stayed.
    pub live: Vec<super::lease::Lease>,
    pub kept_containers: usize,
    pub kept_images: usize,
}

/// What carries the harness's label in an engine: the one leftover count
/// that tests and benches read (an engine that cannot be asked is an error,
/// never zero).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// Labelled containers, running or not (their ids).
    pub containers: Vec<String>,
    /// Labelled volumes.
    pub volumes: usize,
    /// Tags under the census's prefix.
    pub tags: Vec<String>,
    /// Labelled dangling images (untagged, no child).
    pub dangling: usize,
}

impl Engine {
    /// Counts what carries our label, and the tags under `prefix`.
    pub async fn leftovers(&self, prefix: &str) -> Result<Leftovers, EngineError> {
        let label = format!("{LABEL_MANAGED}=true");
        let ours = HashMap::from([("label".to_string(), vec![label.clone()])]);
        let limit = Duration::from_secs(60);
        let containers = self
            .managed_containers(None)
            .await?
            .into_iter()
            .filter_map(|c| c.id)
            .collect();
        let opts = ListVolumesOptionsBuilder::default().filters(&ours).build();
        let volumes = timeout("list volumes", limit, self.docker.list_volumes(Some(opts)))
            .await?
            .map_err(EngineError::api("list volumes"))?
            .volumes
            .map_or(0, |v| v.len());
        let opts = ListImagesOptionsBuilder::default()
            .all(true)
            .filters(&ours)
            .build();
        let tags = timeout("list images", limit, self.docker.list_images(Some(opts)))
            .await?
            .map_err(EngineError::api("list images"))?
            .into_iter()
            .flat_map(|i| i.repo_tags)
            .filter(|t| t.starts_with(prefix))
            .collect();
        let dangling = HashMap::from([
            ("label".to_string(), vec![label]),
            ("dangling".to_string(), vec!["true".to_string()]),
        ]);
        let opts = ListImagesOptionsBuilder::default()
            .filters(&dangling)
            .build();
        let dangling = timeout(
            "list dangling images",
            limit,
            self.docker.list_images(Some(opts)),
        )
        .await?
        .map_err(EngineError::api("list dangling images"))?
        .len();
        Ok(Leftovers {
            containers,
            volumes,
            tags,
            dangling,
        })
    }
}
