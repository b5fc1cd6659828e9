//! The build stages: base, Guix layer, pull stage and the scripts on top, each skipped when the engine already has it; the recipes they build.

use super::from_release::Generation;
use super::Pipeline;

/// One platform's build as prepare decided it: where it runs, what it
/// starts from, whom it tells.
#[derive(Clone, Copy)]
pub(super) struct Job<'a> {
    pub(super) platform: &'a Platform,
    pub(super) placement: &'a Placement,
    /// Images whose layers the build may reuse (a release's).
    pub(super) cache_from: &'a [String],
    /// The release's pulled generation the pull starts from, if any.
    pub(super) generation: Option<&'a Generation>,
    pub(super) progress: &'a (dyn Fn(&str) + Sync),
}

use crate::base;
use crate::engine::build;
use crate::error::Error;
use crate::matrix::Platform;
use crate::placement::Placement;
use crate::pull::{self, By};
use crate::recipe;
use std::time::Duration;

impl Pipeline {
    /// Base, Guix layer, pull stage and the scripts on top, each skipped
    /// when the engine already has it.
    pub(super) async fn build(
        &self,
        job: &Job<'_>,
    ) -> Result<(base::Base, build::Built, pull::Stage), Error> {
        let Job {
            platform,
            cache_from,
            generation,
            progress,
            ..
        } = *job;
        progress("base image");
        let base = base::ensure(
            &self.engine,
            &self.matrix.defaults,
            platform,
            self.options.allow_pull,
        )
        .await?;
        let mut guix_spec = self.guix_spec(platform);
        guix_spec.cache_from = cache_from.to_vec();
        guix_spec.no_cache = self.options.rebuild.is_some();
        // What the build's own records date (not an input: the base's recipe is).
        guix_spec.unhashed_args.insert(
            "SOURCE_DATE_EPOCH".into(),
            base.date.unwrap_or(0).max(0).to_string(),
        );
        let guix = build::inputs(&guix_spec)?;
        if generation.is_none() {
            progress("Guix layer");
            let mut layer = build::build(&self.engine, &guix_spec, &|s| progress(s)).await?;
            // Settled as soon as built: the stages above share its layers.
            self.settle(job, &mut layer, &base, "settle the Guix layer")
                .await?;
        }
        let (layer, stage, by) = match (&self.options.pull, generation) {
            (pull::Want::Skip(why), _) => (
                guix_spec.tag.clone(),
                pull::Stage::Skipped { why: why.clone() },
                None,
            ),
            // The release's Guix layer and pin are this tree's: its pulled
            // image is the layer the new scripts go on (0 pulls).
            (pull::Want::Pull(by), Some(g)) if g.same_pin => {
                progress(&format!("pulled layer of release {}", g.release));
                (
                    g.image.clone(),
                    pull::Stage::Kept(g.pulled.clone()),
                    Some(*by),
                )
            }
            (pull::Want::Pull(by), _) => {
                let (tag, stage) = self.pull_stage(job, &guix, *by, &base).await?;
                (tag, stage, Some(*by))
            }
        };
        progress("image");
        let mut spec = self.top_spec(platform, &guix, by, &layer, &base);
        spec.cache_from = cache_from.to_vec();
        spec.no_cache = self.options.rebuild.is_some();
        if let Some(p) = stage.pulled() {
            spec.labels
                .insert(crate::names::LABEL_PULL.into(), p.label());
        }
        spec.labels.insert(
            crate::names::LABEL_PULLED.into(),
            stage
                .pulled()
                .map_or_else(|| "no".into(), |p| format!("{} {}", p.by, p.commit)),
        );
        let mut image = build::build(&self.engine, &spec, &|s| progress(s)).await?;
        self.settle(job, &mut image, &base, "settle").await?;
        Ok((base, image, stage))
    }

    /// The time an image on `base` is settled to: the base's date, or its
    /// newest file when that is later (a base made by hand), so settling
    /// never changes the base's own layers. The base is read once per
    /// process (each stage of a build settles to the same epoch).
    async fn epoch(&self, job: &Job<'_>, base: &base::Base) -> Result<i64, Error> {
        let key = format!("{} {}", base.reference, base.id);
        if let Some(known) = self.epochs.lock().expect("epochs lock").get(&key) {
            return Ok(*known);
        }
        let date = base.date.unwrap_or(0).max(0);
        let newest = self
            .engine
            .read_saved(
                &format!("{}: read the base {}", job.platform.docker, base.reference),
                &base.reference,
                self.step_timeout(job.placement),
                |archive| crate::epoch::newest_time(archive),
            )
            .await?;
        let epoch = date.max(newest as i64);
        if !base.id.is_empty() {
            self.epochs.lock().expect("epochs lock").insert(key, epoch);
        }
        Ok(epoch)
    }

    /// The image just built made the same bits as any build of the same
    /// inputs: every time after its base's date clamped to it, the config's
    /// build times and IDs out (see [`crate::epoch`]); the build's own image
    /// removed. Layers already settled (the Guix layer's, below the image)
    /// come out as they went in, and the engine keeps them once. An image
    /// already settled to that epoch (its label says so) is left as it is;
    /// one whose build was cut short before its settling is settled now.
    pub(super) async fn settle(
        &self,
        job: &Job<'_>,
        image: &mut build::Built,
        base: &base::Base,
        step: &str,
    ) -> Result<(), Error> {
        let epoch = self.epoch(job, base).await?;
        // The image's own inputs with the epoch: an image inherits the
        // label of the settled stage it is built on, which is not itself.
        let mark = format!("{epoch} {}", image.inputs);
        let settled = self
            .engine
            .local_image(&image.tag)
            .await?
            .is_some_and(|img| img.labels.get(crate::names::LABEL_EPOCH) == Some(&mark));
        if settled {
            return Ok(());
        }
        (job.progress)(step);
        let created = base::mirror::rfc3339(epoch);
        let (tag, built) = (image.tag.clone(), image.id.clone());
        let started = std::time::Instant::now();
        let settled = self
            .engine
            .rewrite(
                &format!("{}: settle {tag}", job.platform.docker),
                &image.tag,
                self.step_timeout(job.placement),
                move |from, to| {
                    // A committed stage keeps its container's run label.
                    let labels = (
                        (crate::names::LABEL_EPOCH, mark.as_str()),
                        [crate::names::LABEL_RUN].as_slice(),
                    );
                    crate::epoch::settle_archive(from, to, epoch as u64, &created, &tag, labels)
                },
            )
            .await?;
        let clamped: u64 = settled.layers.iter().map(|l| l.entries).sum();
        tracing::info!(
            "{}: settled to {} in {:.1?}: {clamped} entries clamped, image {}",
            job.platform.docker,
            base::mirror::rfc3339(epoch),
            started.elapsed(),
            &settled.id[7..19]
        );
        if settled.id != built {
            self.engine.remove_unused_image(&built).await;
        }
        image.id = settled.id;
        Ok(())
    }

    /// The checkout's channels file (the pin).
    pub(super) fn channels_file(&self) -> Result<Vec<u8>, Error> {
        let path = self.options.checkout.channels();
        std::fs::read(&path).map_err(|source| Error::Fixture { path, source })
    }

    /// The offline stand-in for `guix pull`'s network part.
    pub(super) fn stand_in(&self) -> Result<Vec<u8>, Error> {
        let path = self.options.checkout.fixtures().join("stand-in-guix.sh");
        std::fs::read(&path).map_err(|source| Error::Fixture { path, source })
    }

    /// The build of the Guix layer for `platform`.
    pub fn guix_spec(&self, platform: &Platform) -> build::BuildSpec {
        recipe::guix_spec(&self.matrix, &self.options.checkout.root, platform)
    }

    /// The build of the scripts for `platform` on the Guix layer `layer`
    /// (whose inputs are `guix`), pulled by `by`, from `base`.
    pub fn top_spec(
        &self,
        platform: &Platform,
        guix: &build::Inputs,
        by: Option<By>,
        layer: &str,
        base: &base::Base,
    ) -> build::BuildSpec {
        let mut spec = recipe::top_spec(
            &self.matrix,
            &self.options.checkout.root,
            platform,
            guix,
            by,
        );
        spec.unhashed_args
            .insert("GUIX_IMAGE".into(), layer.to_string());
        let provenance = self
            .options
            .rebuild
            .as_ref()
            .and_then(|r| r.base_provenance.get(&platform.docker));
        spec.unhashed_args.insert(
            "BASE_PROVENANCE".into(),
            provenance.unwrap_or(&base.provenance).clone(),
        );
        // The image says how old its Debian packages are (max_base_age_days).
        if let Some(date) = base.date {
            spec.labels.insert(
                crate::names::LABEL_BASE_DATE.into(),
                base::mirror::rfc3339(date),
            );
        }
        spec
    }

    /// The build of the image as an offline run makes it: the scripts on the
    /// unpulled Guix layer for `platform` on `base`.
    pub fn image_spec(
        &self,
        platform: &Platform,
        base: &base::Base,
    ) -> Result<build::BuildSpec, build::BuildError> {
        let guix_spec = self.guix_spec(platform);
        let guix = build::inputs(&guix_spec)?;
        Ok(self.top_spec(platform, &guix, None, &guix_spec.tag, base))
    }

    /// What the tree builds for `platform`, pulled by `by` (see [`recipe::inputs`]).
    pub fn inputs(
        &self,
        platform: &Platform,
        by: Option<By>,
    ) -> Result<build::Inputs, build::BuildError> {
        recipe::inputs(&self.matrix, &self.options.checkout.root, platform, by)
    }

    /// `guix-matrix:arm-v7`.
    pub fn image_tag(&self, platform: &Platform) -> String {
        recipe::image_tag(&self.matrix, platform)
    }

    /// One step's timeout where `placement` says the platform runs.
    pub fn step_timeout(&self, placement: &Placement) -> Duration {
        placement.timeout(Duration::from_secs(self.matrix.defaults.step_timeout_secs))
    }
}
