//! Starting from a release: the `--from` seed (reuse, or the layers a build starts from), the pulled generation a pull starts from, and `--image`'s published images used as they are.

use super::{Pipeline, Prepared};
use crate::base;
use crate::emulators;
use crate::engine::{build, LocalImage};
use crate::error::Error;
use crate::matrix::Platform;
use crate::names;
use crate::placement::Placement;
use crate::pull::{self, By};
use crate::release::input::Input;
use crate::release::open::{self, Release};
use crate::release::reuse::{self, Seed, Start};
use crate::release::source::Source;
use crate::release::trust::TrustError;
use std::time::Duration;

/// A release's pulled image that a pull can start from (or stand for it).
#[derive(Debug, Clone)]
pub(super) struct Generation {
    /// Its local tag (the release's image, fetched as a build cache).
    pub(super) image: String,
    pub(super) release: String,
    /// Its Guix layer, pin included, is this tree's: no pull is needed.
    pub(super) same_pin: bool,
    pub(super) pulled: pull::Pulled,
}

/// What the `--from` release does for one platform.
pub(super) enum Seeded {
    /// Its image is this tree's: used as it is.
    Reused {
        image: LocalImage,
        inputs: String,
        start: Start,
    },
    /// A build, started as `start`, with these images as its layer cache.
    Build {
        start: Start,
        cache_from: Vec<String>,
    },
}

impl Pipeline {
    /// The release of `--image`/`--from` when one was given and is vouched
    /// for (an unverified `--from` is no release: the run builds).
    pub(super) async fn vouched(&self) -> Result<Option<&Release>, Error> {
        Ok(self.options.release_input().await?.release())
    }

    /// The option that fetches exactly the release this run used, pinned to
    /// the digest that was vouched for (`--image DIR@sha256:…`, `--from
    /// REF@sha256:…`): what a failure bundle's reproduce line carries.
    pub fn reproduce_with(&self) -> Option<String> {
        self.options.opened.opened()?.reproduce_with()
    }

    /// No rollback: a `--from` release older than the one this engine's
    /// images of `platform` came from is refused (exit 4) unless
    /// `--allow-older`; checked before any leg, and again at the seed.
    pub async fn refuse_rollback(&self, platform: &Platform) -> Result<(), Error> {
        if self.options.release.allow_older || self.options.release.from.is_none() {
            return Ok(());
        }
        if let Input::From(release) = self.options.release_input().await? {
            let d = &self.matrix.defaults;
            reuse::check_not_older(&self.engine, d, platform, release).await?;
        }
        Ok(())
    }

    /// What the release image `image` (fetched as a build cache) offers the
    /// pull: its pulled generation by `by`, when its Guix layer is this
    /// tree's but for the pinned channel (a moved pin: the pull starts
    /// there) or entirely (the same pin: no pull at all).
    pub(super) async fn release_generation(
        &self,
        platform: &Platform,
        image: &str,
        release: &str,
        by: By,
    ) -> Result<Option<Generation>, Error> {
        let Some(img) = self.engine.local_image(image).await? else {
            return Ok(None);
        };
        let Ok(Some(pulled)) = pull::Pulled::of(&img.labels) else {
            return Ok(None);
        };
        let Ok(claimed) = build::Inputs::from_labels(&img.labels) else {
            return Ok(None);
        };
        if pulled.by != by {
            return Ok(None);
        }
        let guix = build::inputs(&self.guix_spec(platform))?;
        let changed: Vec<&String> = guix
            .parts
            .iter()
            .filter(|(k, v)| {
                let key = match k.starts_with("file ") {
                    true => (*k).clone(),
                    false => format!("guix {k}"),
                };
                claimed.parts.get(&key) != Some(*v)
            })
            .map(|(k, _)| k)
            .collect();
        let moved = changed.iter().all(|k| *k == "file channels/channels.scm");
        Ok(moved.then(|| Generation {
            image: image.to_string(),
            release: release.to_string(),
            same_pin: changed.is_empty(),
            pulled,
        }))
    }

    /// Where a rebuild's pull of `platform` starts: the earlier release's
    /// generation the release's own pull started from, when it did (an
    /// image that cannot be that start is an error, never a cold pull).
    pub(super) async fn rebuild_generation(
        &self,
        platform: &Platform,
        by: By,
    ) -> Result<Option<Generation>, Error> {
        let Some((image, release)) = self
            .options
            .rebuild
            .as_ref()
            .and_then(|r| r.generation.get(&platform.docker))
        else {
            return Ok(None);
        };
        match self
            .release_generation(platform, image, release, by)
            .await?
        {
            Some(g) => Ok(Some(g)),
            None => Err(reuse::ReuseError::NotAStart {
                platform: platform.docker.clone(),
                release: release.clone(),
                by: by.to_string(),
            }
            .into()),
        }
    }

    /// What the `--from` release does for `platform`: the image reused, or
    /// how the build starts. Nothing of an unverified release is fetched.
    pub(super) async fn seed(
        &self,
        platform: &Platform,
        from: &Source,
        wants: &[build::Inputs],
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Seeded, Error> {
        let tag = self.image_tag(platform);
        progress(&format!("verify release {}", from.release_name()));
        let release = match self.options.release_input().await? {
            Input::From(r) | Input::Image(r) => r,
            Input::Unusable { why, .. } => {
                return Ok(Seeded::Build {
                    start: Start::BuiltCold { why: why.clone() },
                    cache_from: vec![],
                })
            }
            Input::None => {
                return Ok(Seeded::Build {
                    start: Start::Built,
                    cache_from: vec![],
                })
            }
        };
        let name = release.name();
        let d = &self.matrix.defaults;
        self.refuse_rollback(platform).await?;
        let seed = reuse::seed(&reuse::Seeding {
            engine: &self.engine,
            release,
            platform,
            wants,
            defaults: d,
            root: &self.options.checkout.root,
            progress,
        })
        .await?;
        Ok(match seed {
            Seed::Reuse(img, hash) => {
                let released = names::from_release(d, platform);
                self.engine.tag(&img.id, &tag).await?;
                self.engine.remove_image(&released).await;
                // Its base too, so that this engine holds the image with the
                // base it was built on (what a release made here ships).
                // Fetched under a name of its own, and made the local base
                // only once it is the bottom of the verified image.
                let base_tag = names::base(d, platform);
                let fetched = names::from_release_base(d, platform);
                let part = crate::release::open::Part::Base;
                match release.fetch(&self.engine, platform, &fetched, part).await {
                    Ok(b) if img.layers.starts_with(&b.layers) => {
                        self.engine.tag(&b.id, &base_tag).await?;
                    }
                    Ok(_) => tracing::warn!("{}: the base of release {name} is not the bottom of its image; a release made here will not carry it", platform.docker),
                    Err(e) => tracing::warn!("{}: release {name} has no base ({e}); a release made here will not carry one", platform.docker),
                }
                self.engine.remove_image(&fetched).await;
                Seeded::Reused {
                    image: img,
                    inputs: hash,
                    start: Start::Reused {
                        release: format!("{name} ({})", release.vouched.by),
                    },
                }
            }
            Seed::Layers { image, changed } => Seeded::Build {
                start: Start::RebuiltFrom {
                    release: name,
                    changed,
                },
                cache_from: vec![image],
            },
            Seed::Cold(why) => Seeded::Build {
                start: Start::BuiltCold { why },
                cache_from: vec![],
            },
        })
    }

    /// What the pull stage is for an image used as it is: the pull its label records, if any.
    pub(super) fn stage_of(&self, img: &LocalImage) -> pull::Stage {
        match pull::Pulled::of(&img.labels) {
            Ok(Some(p)) => pull::Stage::Kept(p),
            Ok(None) => pull::Stage::Skipped {
                why: match &self.options.pull {
                    pull::Want::Skip(why) => why.clone(),
                    pull::Want::Pull(by) => {
                        format!("the image carries no pull ({by} was asked for)")
                    }
                },
            },
            Err(why) => pull::Stage::Skipped { why },
        }
    }

    /// `platform`'s image `img` (of inputs `inputs`), used as it is.
    pub(super) fn as_is(
        &self,
        platform: &Platform,
        img: LocalImage,
        inputs: String,
        start: Start,
        (emulator, placement): (Option<emulators::Handler>, Placement),
    ) -> Result<Prepared, Error> {
        let provenance = img
            .labels
            .get("io.guix-matrix.base")
            .cloned()
            .unwrap_or_default();
        let pull = self.stage_of(&img);
        Ok(Prepared {
            platform: platform.clone(),
            base: base::Base {
                reference: names::base(&self.matrix.defaults, platform),
                id: String::new(),
                origin: base::Origin::Local,
                provenance,
                date: base::date(&img),
            },
            image: build::Built {
                tag: self.image_tag(platform),
                id: img.id,
                inputs,
                rebuilt: false,
                elapsed: Duration::ZERO,
            },
            emulator,
            placement,
            start,
            pull,
        })
    }

    /// A published image of `platform`, as users get it, in place of a build.
    pub(super) async fn published(
        &self,
        platform: &Platform,
        source: &Source,
        (emulator, placement): (Option<emulators::Handler>, Placement),
    ) -> Result<Prepared, Error> {
        let started = std::time::Instant::now();
        let tag = names::published(&self.matrix.defaults, platform);
        let Some(release) = self.vouched().await? else {
            return Err(TrustError::Unverified {
                source_: source.to_string(),
                why: "no release was opened for --image".into(),
            }
            .into());
        };
        let img = release
            .fetch(&self.engine, platform, &tag, open::Part::Image)
            .await?;
        let label = |k: &str| img.labels.get(k).cloned().unwrap_or_default();
        let pull = match pull::Pulled::of(&img.labels) {
            Ok(Some(p)) => pull::Stage::Kept(p),
            Ok(None) => pull::Stage::Skipped {
                why: "the published image carries no pull: it runs Debian's guix until `guix pull`"
                    .into(),
            },
            Err(why) => pull::Stage::Skipped { why },
        };
        Ok(Prepared {
            platform: platform.clone(),
            base: base::Base {
                reference: source.to_string(),
                id: String::new(),
                origin: base::Origin::Pulled,
                provenance: label("io.guix-matrix.base"),
                date: base::date(&img),
            },
            image: build::Built {
                tag,
                id: img.id.clone(),
                inputs: label(crate::names::LABEL_INPUTS),
                rebuilt: false,
                elapsed: started.elapsed(),
            },
            emulator,
            placement,
            start: Start::Published {
                source: format!("{source} ({})", release.vouched.by),
            },
            pull,
        })
    }
}
