//! The pipeline: one engine, one matrix, options, and each expensive step (native base, probes, emulators, images) done once — prepare, in the order its lazy steps ask for each other.

use crate::base;
use crate::emulators;
use crate::engine::build;
use crate::engine::Engine;
use crate::error::Error;
use crate::matrix::{Matrix, Platform};
use crate::names;
use crate::paths::Checkout;
use crate::placement::Placement;
use crate::pull;
use crate::record::Tool;
use crate::release::reuse::Start;
use from_release::Seeded;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

mod from_release;
mod machine;
mod options;
mod pull_stage;
mod stages;

pub use options::{Options, Rebuild};

/// An image ready to run for one platform.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub platform: Platform,
    pub base: base::Base,
    pub image: build::Built,
    pub emulator: Option<emulators::Handler>,
    /// How this engine runs the platform (natively, or through which emulator).
    pub placement: Placement,
    /// Where the image came from (built, up to date, a release …).
    pub start: Start,
    /// What the pull stage did: the image's Guix is the pinned one when pulled.
    pub pull: pull::Stage,
}

/// The pipeline's state: one engine, one matrix, and each expensive step done once.
///
/// The expensive steps are lazy, each a cell filled at most once per
/// process, and each asks only for those before it:
/// 1. `arch`: the engine's architecture (one API call);
/// 2. `release`: the `--image`/`--from` release, vouched for once;
/// 3. `native`: the platform of that architecture and its Debian base
///    (pulled, or built by mmdebstrap) — only when the helper must be
///    built;
/// 4. `helper`: the emulator helper image of this tree: the engine's when
///    up to date, else the release's (loaded: no base, no mirror), else
///    built on `native`;
/// 5. `compat`: whether 32-bit platforms run natively (`setarch linux32`
///    in the helper, and the helper's view of the registered handlers) —
///    only when a platform of the matrix could;
/// 6. `handlers`: the qemu handlers the placements need, registered by the
///    helper — only when some platform is emulated;
/// 7. `probes`: the readdir() probes, shipped with the release or
///    cross-compiled on the native base of the probe suite
///    (`recipe::probe_spec`) — only for the tmpfs and chroot checks;
/// 8. `prepared`: per platform, its base and image (built, up to date, or
///    from the release, fetched while `handlers` registers), with the pull
///    stage.
///
/// So a native leg whose image is up to date builds nothing before its
/// checks; an emulated one needs the helper and its handlers; a repro
/// from a release that ships the helper and the probes builds nothing at
/// all; the probes come only with the checks that use them.
pub struct Pipeline {
    pub engine: Engine,
    pub matrix: Matrix,
    pub options: Options,
    probes: OnceCell<(HashMap<String, Vec<u8>>, Tool)>,
    arch: OnceCell<String>,
    compat: OnceCell<(bool, Vec<String>)>,
    native: OnceCell<(Platform, base::Base)>,
    helper: OnceCell<Tool>,
    handlers: OnceCell<Vec<emulators::Handler>>,
    prepared: Mutex<HashMap<String, Arc<OnceCell<Prepared>>>>,
    /// Each base's settle epoch, by reference and ID, once read.
    epochs: Mutex<HashMap<String, i64>>,
}

/// Whether `img` was settled as the image of its own inputs (see [`crate::epoch`]).
fn settled(img: &crate::engine::LocalImage) -> bool {
    let mark = img.labels.get(names::LABEL_EPOCH);
    match (mark.and_then(|m| m.split_once(' ')), img.inputs()) {
        (Some((_, of)), Some(inputs)) => of == inputs,
        _ => false,
    }
}

impl Pipeline {
    /// Connects to the options' engine.
    pub async fn new(matrix: Matrix, options: Options) -> Result<Self, Error> {
        let engine = Engine::connect_to(&options.engine).await?;
        Ok(Self::on(engine, matrix, options))
    }

    /// The pipeline on `engine`.
    pub fn on(engine: Engine, matrix: Matrix, options: Options) -> Self {
        Pipeline {
            engine,
            matrix,
            options,
            probes: OnceCell::new(),
            arch: OnceCell::new(),
            compat: OnceCell::new(),
            native: OnceCell::new(),
            helper: OnceCell::new(),
            handlers: OnceCell::new(),
            prepared: Mutex::default(),
            epochs: Mutex::default(),
        }
    }

    /// The checkout around the current directory, its matrix.toml, default options.
    pub async fn discover() -> Result<Self, Error> {
        let checkout = Checkout::find()?;
        let matrix = Matrix::load(checkout.matrix())?;
        Self::new(matrix, Options::new(checkout)).await
    }

    /// Base and image for `platform`, each built at most once per process and
    /// skipped when the engine already has them with the same inputs.
    pub async fn prepare(&self, platform: &Platform) -> Result<Prepared, Error> {
        self.prepare_with(platform, &|_| {}).await
    }

    /// Untags every stage of `platform` (base, Guix layer, pulled and
    /// unpulled layers, image), so that all of it is built again: its base
    /// is too old (`why`).
    async fn forget_stages(&self, platform: &Platform, why: &str) {
        let d = &self.matrix.defaults;
        tracing::warn!(
            "{}: {} sits on a base whose {why}: base, Guix layer, pull and image are rebuilt",
            platform.docker,
            self.image_tag(platform)
        );
        for tag in [
            names::base(d, platform),
            names::guix_layer(d, platform),
            names::pulled(d, platform),
            names::unpulled(d, platform),
            self.image_tag(platform),
        ] {
            self.engine.remove_image(&tag).await;
        }
    }

    /// Like `prepare`, reporting build steps to `progress`.
    pub async fn prepare_with(
        &self,
        platform: &Platform,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Prepared, Error> {
        let cell = self
            .prepared
            .lock()
            .expect("prepared lock")
            .entry(platform.docker.clone())
            .or_default()
            .clone();
        cell.get_or_try_init(|| self.prepare_uncached(platform, progress))
            .await
            .cloned()
    }

    pub(super) async fn prepare_uncached(
        &self,
        platform: &Platform,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Prepared, Error> {
        let placement = self.placement(platform).await?;
        // The emulator is registered while a release's image is fetched
        // (a build waits for it: its RUN steps need it).
        let registering = async {
            match placement.handler() {
                None => Ok::<_, Error>(None),
                Some(name) => {
                    progress("registering emulators");
                    let handlers = self.emulators().await?;
                    Ok(handlers.iter().find(|h| h.name == name).cloned())
                }
            }
        };
        if let Some(source) = &self.options.release.image {
            progress("fetch the published image");
            let (emulator, mut prepared) = tokio::try_join!(
                registering,
                self.published(platform, source, (None, placement.clone()))
            )?;
            prepared.emulator = emulator;
            return Ok(prepared);
        }
        // An image of this tree (pulled as this run accepts) needs nothing
        // else, not even its base.
        let wants = self
            .options
            .pull
            .acceptable()
            .into_iter()
            .map(|by| self.inputs(platform, by))
            .collect::<Result<Vec<_>, _>>()?;
        let mut local = self.engine.local_image(&self.image_tag(platform)).await?;
        if let Some(img) = &local {
            if let Some(why) = base::stale(&self.matrix.defaults, base::date(img)).await {
                progress("base too old: rebuild");
                self.forget_stages(platform, &why).await;
                local = None;
            }
        }
        // A rebuild builds anew; an image never settled (its build cut short)
        // is settled by the stages first.
        if self.options.rebuild.is_some() || !local.as_ref().is_some_and(settled) {
            local = None;
        }
        let label = local.as_ref().and_then(|img| img.inputs());
        if let (Some(img), Some(want)) = (
            &local,
            wants.iter().find(|w| Some(w.hash.as_str()) == label),
        ) {
            progress("image up to date");
            tracing::info!(
                "{}: {} is up to date (inputs {})",
                platform.docker,
                self.image_tag(platform),
                &want.hash[..12]
            );
            let hash = want.hash.clone();
            let emulator = registering.await?;
            return self.as_is(
                platform,
                img.clone(),
                hash,
                Start::UpToDate,
                (emulator, placement),
            );
        }
        let mut start = Start::Built;
        let mut cache_from = vec![];
        let (emulator, seeded) = match &self.options.release.from {
            Some(from) => {
                let (emulator, seeded) =
                    tokio::try_join!(registering, self.seed(platform, from, &wants, progress))?;
                (emulator, Some(seeded))
            }
            None => (registering.await?, None),
        };
        let placed = (emulator, placement);
        match seeded {
            Some(Seeded::Reused {
                image,
                inputs,
                start,
            }) => return self.as_is(platform, image, inputs, start, placed),
            Some(Seeded::Build {
                start: s,
                cache_from: cache,
            }) => (start, cache_from) = (s, cache),
            None => {}
        }
        let generation = match (&self.options.pull, cache_from.first(), &start) {
            (pull::Want::Pull(by), Some(image), Start::RebuiltFrom { release, .. }) => {
                self.release_generation(platform, image, release, *by)
                    .await?
            }
            (pull::Want::Pull(by), _, _) => self.rebuild_generation(platform, *by).await?,
            _ => None,
        };
        let built = self
            .build(&stages::Job {
                platform,
                placement: &placed.1,
                cache_from: &cache_from,
                generation: generation.as_ref(),
                progress,
            })
            .await;
        // The release's image was only a cache: leave no trace of it.
        for tag in &cache_from {
            self.engine.remove_image(tag).await;
        }
        let (base, image, stage) = built?;
        if !image.rebuilt && start == Start::Built {
            start = Start::UpToDate;
        }
        Ok(Prepared {
            platform: platform.clone(),
            base,
            image,
            emulator: placed.0,
            placement: placed.1,
            start,
            pull: stage,
        })
    }
}
