//! The pull stage of one platform: the pulled Guix layer (committed after a pull, or already in the engine), checked with `guix describe` against the pin.

use super::stages::Job;
use super::Pipeline;
use crate::base;
use crate::engine::{build, LocalImage};
use crate::error::Error;
use crate::names;
use crate::pull::{self, By};
use std::time::Duration;

impl Pipeline {
    /// The servers and keys the pull stage trusts (matrix.toml), each key a
    /// file of the checkout's substitutes/ (the image holds the same).
    fn pull_trust(&self) -> Result<pull::Trust, Error> {
        let d = &self.matrix.defaults;
        for k in &d.pull_keys {
            let path = self.options.checkout.root.join("substitutes").join(k);
            if !path.is_file() {
                return Err(pull::PullError::NoKey { path }.into());
            }
        }
        Ok(pull::Trust {
            urls: d.pull_substitutes.clone(),
            keys: d.pull_keys.clone(),
        })
    }

    /// The pulled Guix layer of `platform` for `by` (committed after a pull
    /// in this run, or already in the engine), checked with `guix describe`
    /// against the checkout's pin: its tag and what the stage did.
    pub(super) async fn pull_stage(
        &self,
        job: &Job<'_>,
        guix: &build::Inputs,
        by: By,
        base: &base::Base,
    ) -> Result<(String, pull::Stage), Error> {
        let Job {
            platform,
            placement,
            generation,
            progress,
            ..
        } = *job;
        let d = &self.matrix.defaults;
        let trust = self.pull_trust()?;
        let stand_in = match by {
            By::StandIn => Some(self.stand_in()?),
            By::GuixPull => None,
        };
        let key = pull::key(&guix.hash, by, &trust, stand_in.as_deref());
        let tag = names::pulled(d, platform);
        let pin = crate::pin::read(&self.options.checkout.channels())?;
        let keyed = |img: &LocalImage| img.labels.get(crate::names::LABEL_PULL_KEY) == Some(&key);
        let mut have = self.engine.local_image(&tag).await?.filter(keyed);
        if self.options.rebuild.is_some() {
            have = None;
        } else if have.is_none() {
            // The image of an earlier tree (or a release's, reused) pulled on
            // this same Guix layer: its pull is below its scripts, so it can
            // be the pulled layer (no pull; the store layer stays shared).
            let image = self.engine.local_image(&self.image_tag(platform)).await?;
            if let Some(img) = image.filter(keyed) {
                self.engine.tag(&img.id, &tag).await?;
                have = Some(img);
            }
        }
        let (record, ran) = match have {
            Some(img) => {
                progress("pulled layer up to date");
                let record = pull::Pulled::of(&img.labels).ok().flatten();
                (record, false)
            }
            None => {
                progress("image to pull in");
                // From the release's pulled generation when there is one
                // (the tree's channels file goes in), else Debian's guix.
                let (layer, from, channels) = match generation {
                    Some(g) => (
                        g.image.clone(),
                        pull::from_generation(&g.release, &g.pulled.commit),
                        Some(self.channels_file()?),
                    ),
                    None => (
                        names::guix_layer(d, platform),
                        format!("Debian's guix {}", d.guix_version),
                        None,
                    ),
                };
                let mut unpulled = self.top_spec(platform, guix, None, &layer, base);
                unpulled.tag = names::unpulled(d, platform);
                unpulled.step = format!("{}: build the image to pull in", platform.docker);
                build::build(&self.engine, &unpulled, &|s| progress(s)).await?;
                progress(&format!("pull ({by})"));
                let job = pull::Job {
                    platform: platform.clone(),
                    image: unpulled.tag,
                    tag: tag.clone(),
                    by,
                    key: key.clone(),
                    from,
                    trust,
                    channels,
                    cache_tmpfs: placement.cache_tmpfs,
                    timeout: placement.timeout(Duration::from_secs(platform.pull_timeout_secs)),
                    stand_in,
                    echo: self
                        .options
                        .echo
                        .then(|| format!("[{} pull]", platform.slug())),
                    epoch: base.date.unwrap_or(0).max(0),
                };
                let record = pull::run(&self.engine, &job).await?;
                (Some(record), true)
            }
        };
        // Settled as soon as committed: the image's scripts go on these very
        // layers (and the engine keeps the pulled store once).
        let id = self
            .engine
            .local_image(&tag)
            .await?
            .map(|img| img.id)
            .unwrap_or_default();
        let mut pulled = build::Built {
            tag: tag.clone(),
            id,
            inputs: key.clone(),
            rebuilt: ran,
            elapsed: Duration::ZERO,
        };
        self.settle(job, &mut pulled, base, "settle the pulled layer")
            .await?;
        progress("guix describe");
        let (describe, commit) = pull::describe(
            &self.engine,
            platform,
            &tag,
            &pin,
            self.step_timeout(placement),
        )
        .await?;
        let mut record = record.unwrap_or(pull::Pulled {
            by,
            commit: String::new(),
            from: "unknown".into(),
            describe: String::new(),
            seconds: 0,
        });
        (record.commit, record.describe) = (commit, describe);
        Ok((
            tag,
            if ran {
                pull::Stage::Pulled(record)
            } else {
                pull::Stage::Kept(record)
            },
        ))
    }
}
