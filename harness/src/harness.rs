//! The orchestrator: one engine, one matrix, options, and each expensive step (native base, probes, emulators, images) done once.

use crate::base;
use crate::emulators;
use crate::engine::build;
use crate::engine::run;
use crate::engine::{Engine, LocalImage};
use crate::error::Error;
use crate::matrix::{Matrix, Platform};
use crate::names;
use crate::paths::Checkout;
use crate::placement::{self, Host, Placement};
use crate::pull::{self, By};
use crate::recipe;
use crate::release::open;
use crate::release::reuse::{self, Seed, Start};
use crate::release::source::Source;
use crate::release::trust::{Keys, TrustError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;

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

/// How a run goes, as the command line (or a test) says: one struct, no
/// environment reads inside the library.
#[derive(Debug, Clone)]
pub struct Options {
    /// The checkout whose Dockerfile, scripts and fixtures are used.
    pub checkout: Checkout,
    /// Try to pull `base_image` before building it offline.
    pub allow_pull: bool,
    /// Print every container's output as it comes (`harness repro`).
    pub echo: bool,
    /// Keep scenario containers for inspection (`harness repro`).
    pub keep: bool,
    /// Check this published image (a registry reference, or a release
    /// directory) instead of building one; only when vouched for (a pinned
    /// digest, or a signature by one of `keys`).
    pub image: Option<Source>,
    /// Start from this release (a registry reference, or a release
    /// directory): reuse its image where the tree is unchanged, else build on
    /// its base and layers. Unverified, it is not used: the run builds.
    pub from: Option<Source>,
    /// The keys a release may be signed with (trust/*.pub, --trust-key).
    pub keys: Keys,
    /// An unverified `from` is an error instead of a build.
    pub require_verified: bool,
    /// The pull stage: skipped (offline), the real `guix pull`, or its stand-in.
    pub pull: pull::Want,
    /// The engine of every command (and of the legs no `--engine P=URL`
    /// places elsewhere): `--engine URL`, else DOCKER_HOST, else the docker
    /// CLI's context, else the local socket.
    pub engine: String,
}

impl Options {
    /// Defaults for `checkout`: pull allowed, offline, quiet, nothing kept.
    pub fn new(checkout: Checkout) -> Self {
        Options {
            checkout,
            allow_pull: true,
            echo: false,
            keep: false,
            image: None,
            from: None,
            keys: Keys::default(),
            require_verified: false,
            pull: pull::Want::offline(),
            engine: Engine::default_host(),
        }
    }
}

/// A release's pulled image that a pull can start from (or stand for it).
#[derive(Debug, Clone)]
struct Generation {
    /// Its local tag (the release's image, fetched as a build cache).
    image: String,
    release: String,
    /// Its Guix layer, pin included, is this tree's: no pull is needed.
    same_pin: bool,
    pulled: pull::Pulled,
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
pub struct Harness {
    pub engine: Engine,
    pub matrix: Matrix,
    pub options: Options,
    probes: OnceCell<HashMap<String, Vec<u8>>>,
    arch: OnceCell<String>,
    compat: OnceCell<(bool, Vec<String>)>,
    native: OnceCell<(Platform, base::Base)>,
    helper: OnceCell<String>,
    handlers: OnceCell<Vec<emulators::Handler>>,
    /// The release of `--image`/`--from`, vouched for once (or why not).
    release: OnceCell<Result<open::Release, String>>,
    prepared: Mutex<HashMap<String, Arc<OnceCell<Prepared>>>>,
}

impl Harness {
    /// Connects to the options' engine.
    pub async fn new(matrix: Matrix, options: Options) -> Result<Self, Error> {
        let engine = Engine::connect_to(&options.engine).await?;
        Ok(Self::on(engine, matrix, options))
    }

    /// The pipeline on `engine`.
    pub fn on(engine: Engine, matrix: Matrix, options: Options) -> Self {
        Harness {
            engine,
            matrix,
            options,
            probes: OnceCell::new(),
            arch: OnceCell::new(),
            compat: OnceCell::new(),
            native: OnceCell::new(),
            helper: OnceCell::new(),
            handlers: OnceCell::new(),
            release: OnceCell::new(),
            prepared: Mutex::default(),
        }
    }

    /// The checkout around the current directory, its matrix.toml, default options.
    pub async fn discover() -> Result<Self, Error> {
        let checkout = Checkout::find()?;
        let matrix = Matrix::load(checkout.matrix())?;
        Self::new(matrix, Options::new(checkout)).await
    }

    /// The engine's architecture, as it reports it (`amd64`, `arm64`).
    pub async fn arch(&self) -> Result<&String, Error> {
        self.arch
            .get_or_try_init(|| async { Ok::<_, Error>(self.engine.arch().await?) })
            .await
    }

    /// What the engine's host can run, as far as `platforms` need to know:
    /// its architecture, and where one of them may run natively in a 32-bit
    /// mode, whether it does (probed once) and which handlers take it first.
    pub async fn host(&self, platforms: &[Platform]) -> Result<Host, Error> {
        let arch = self.arch().await?.clone();
        let compat = platforms.iter().any(|p| placement::needs_probe(p, &arch));
        let (runs_32bit, handlers) = if compat {
            let (yes, handlers) = self.compat_probe().await?;
            (Some(*yes), handlers.clone())
        } else {
            (None, vec![])
        };
        Ok(Host {
            arch,
            runs_32bit,
            handlers,
        })
    }

    /// Whether the kernel takes the 32-bit personality (`setarch linux32`
    /// in the native base), and which of the matrix's compat handlers are
    /// registered and enabled.
    async fn compat_probe(&self) -> Result<&(bool, Vec<String>), Error> {
        self.compat
            .get_or_try_init(|| async {
                let arch = self.arch().await?.clone();
                // The helper is the native base with qemu: its setarch asks.
                let helper = self.helper().await?;
                let native = self.native_platform().await?;
                let probe = run::RunSpec::new(helper, "probe the 32-bit mode")
                    .entrypoint(["setarch"])
                    .platform(&native.docker)
                    .cmd(["linux32", "true"])
                    .timeout(Duration::from_secs(60));
                let yes = run::run(&self.engine, &probe).await?.exit_code == 0;
                let names: Vec<String> = self
                    .matrix
                    .platforms
                    .iter()
                    .filter(|p| placement::needs_probe(p, &arch))
                    .map(|p| p.emulator.clone())
                    .collect();
                let handlers = emulators::helper_run(&self.engine, helper, "status", &names)
                    .await?
                    .into_iter()
                    .filter(|h| h.state == "registered" || h.state == "wrong")
                    .map(|h| h.name)
                    .collect();
                Ok((yes, handlers))
            })
            .await
    }

    /// How this engine runs `platform`.
    pub async fn placement(&self, platform: &Platform) -> Result<Placement, Error> {
        let host = self.host(std::slice::from_ref(platform)).await?;
        Ok(placement::decide(platform, &host))
    }

    /// Every platform of the matrix placed on this engine.
    pub async fn placements(&self) -> Result<Vec<Placement>, Error> {
        let host = self.host(&self.matrix.platforms).await?;
        Ok(self
            .matrix
            .platforms
            .iter()
            .map(|p| placement::decide(p, &host))
            .collect())
    }

    /// The platform this engine runs natively, with its base image.
    pub async fn native(&self) -> Result<&(Platform, base::Base), Error> {
        self.native
            .get_or_try_init(|| async {
                let platform = self.native_platform().await?;
                let base = base::ensure(
                    &self.engine,
                    &self.matrix.defaults,
                    &platform,
                    self.options.allow_pull,
                )
                .await?;
                Ok((platform, base))
            })
            .await
    }

    /// The readdir() probe for every `probe_cc` of the matrix: shipped with
    /// the run's release when it carries this tree's (no base, no cross
    /// compilers to fetch), else built on the native base of the probe suite.
    pub async fn probes(&self) -> Result<&HashMap<String, Vec<u8>>, Error> {
        self.probes
            .get_or_try_init(|| async {
                let native = self.native_platform().await?;
                let root = &self.options.checkout.root;
                let spec = recipe::probe_spec(&self.matrix, root, &native);
                if let Some(release) = self.vouched().await? {
                    if let Some((key, probes)) = release.probes()? {
                        if key == recipe::probes_key(&self.matrix, root, &native)? {
                            tracing::info!("readdir probes: from release {}", release.name());
                            return Ok(probes);
                        }
                        tracing::info!(
                            "readdir probes: release {}'s are of other inputs; building",
                            release.name()
                        );
                    }
                }
                let d = &self.matrix.defaults;
                base::ensure_suite(
                    &self.engine,
                    d,
                    &native,
                    &d.probe_suite,
                    self.options.allow_pull,
                )
                .await?;
                let built = build::build(&self.engine, &spec, &|_| {}).await?;
                let tar = run::copy_out(&self.engine, &built.tag, "/probes").await?;
                crate::release::open::probes_of(tar.as_slice()).map_err(Error::ProbeArchive)
            })
            .await
    }

    /// The release of `--image`/`--from` when one was given and is vouched
    /// for (an unverified `--from` is no release: the run builds).
    async fn vouched(&self) -> Result<Option<&open::Release>, Error> {
        let (source, required) = match (&self.options.image, &self.options.from) {
            (Some(image), _) => (image, true),
            (None, Some(from)) => (from, self.options.require_verified),
            (None, None) => return Ok(None),
        };
        Ok(self.release(source, required).await?.ok())
    }

    /// The platform this engine runs natively (no base needed).
    pub async fn native_platform(&self) -> Result<Platform, Error> {
        let arch = self.arch().await?.clone();
        self.matrix
            .platforms
            .iter()
            .find(|p| p.arch() == arch)
            .cloned()
            .ok_or_else(|| Error::NoNativePlatform {
                path: self.matrix.path.clone(),
                engine: self.engine.host.clone(),
                arch,
            })
    }

    /// The emulator helper image of this tree: the engine's when up to
    /// date, else the one shipped with the run's release (an empty engine
    /// then needs no base and no mirror), else built on the native base.
    pub async fn helper(&self) -> Result<&String, Error> {
        self.helper
            .get_or_try_init(|| async {
                let native = self.native_platform().await?;
                let spec = recipe::helper_spec(&self.matrix, &self.options.checkout.root, &native);
                let want = build::inputs(&spec)?.hash;
                let ours =
                    |img: &LocalImage| img.labels.get(crate::names::LABEL_INPUTS) == Some(&want);
                if self
                    .engine
                    .local_image(&spec.tag)
                    .await?
                    .is_some_and(|i| ours(&i))
                {
                    return Ok(spec.tag);
                }
                if let Some(release) = self.vouched().await? {
                    match release
                        .fetch(&self.engine, &native, &spec.tag, open::Part::Helper)
                        .await
                    {
                        Ok(img) if ours(&img) => {
                            tracing::info!("emulator helper: from release {}", release.name());
                            return Ok(spec.tag);
                        }
                        Ok(_) => tracing::info!(
                            "emulator helper: release {}'s is of other inputs; building",
                            release.name()
                        ),
                        Err(open::PublishedError::NotInRelease { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                self.native().await?;
                Ok(build::build(&self.engine, &spec, &|_| {}).await?.tag)
            })
            .await
    }

    /// Registers every emulator the matrix needs (once), returning the handlers.
    pub async fn emulators(&self) -> Result<&Vec<emulators::Handler>, Error> {
        self.handlers
            .get_or_try_init(|| async {
                let placements = self.placements().await?;
                let helper = self.helper().await?;
                let statuses = emulators::register(&self.engine, helper, &placements).await?;
                Ok(statuses.into_iter().filter_map(|s| s.handler).collect())
            })
            .await
    }

    /// The option that fetches exactly the release this run used, pinned to
    /// the digest that was vouched for (`--image DIR@sha256:…`, `--from
    /// REF@sha256:…`): what a failure bundle's reproduce line carries.
    pub fn reproduce_with(&self) -> Option<String> {
        let release = self.release.get()?.as_ref().ok()?;
        let option = if self.options.image.is_some() {
            "--image"
        } else {
            "--from"
        };
        Some(format!(
            "{option} {}",
            release.source.pinned(&release.vouched.digest)
        ))
    }

    /// The release `source` vouched for (its pin, or a signature by a
    /// trusted key), once per run. Unverified or unreachable, it is Ok(Err(why))
    /// for `--from` (the run builds instead) and an error for `--image` or
    /// with `require_verified`. A release that contradicts its pin or
    /// signature is always an error.
    async fn release(
        &self,
        source: &Source,
        required: bool,
    ) -> Result<Result<&open::Release, &String>, Error> {
        let opened = self
            .release
            .get_or_try_init(|| async {
                match open::open(source, &self.options.keys).await {
                    Ok(r) => {
                        tracing::info!("release {source}: {}", r.vouched.by);
                        Ok(Ok(r))
                    }
                    Err(e @ TrustError::Unverified { .. }) if !required => {
                        tracing::warn!("{e}; building instead");
                        Ok(Err(e.to_string()))
                    }
                    Err(TrustError::Registry(e)) if !required => {
                        tracing::warn!("release {source} unreachable ({e}); building instead");
                        Ok(Err(format!("{source} unreachable: {e}")))
                    }
                    Err(e) => Err(Error::from(e)),
                }
            })
            .await?;
        Ok(opened.as_ref())
    }

    /// Base and image for `platform`, each built at most once per process and
    /// skipped when the engine already has them with the same inputs.
    pub async fn prepare(&self, platform: &Platform) -> Result<Prepared, Error> {
        self.prepare_with(platform, &|_| {}).await
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

    async fn prepare_uncached(
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
        if let Some(source) = &self.options.image {
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
        let local = self.engine.local_image(&self.image_tag(platform)).await?;
        let label = local
            .as_ref()
            .and_then(|img| img.labels.get(crate::names::LABEL_INPUTS));
        if let (Some(img), Some(want)) = (&local, wants.iter().find(|w| Some(&w.hash) == label)) {
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
        let (emulator, seeded) = match &self.options.from {
            Some(from) => {
                let (emulator, seeded) =
                    tokio::try_join!(registering, self.seed(platform, from, &wants, progress))?;
                (emulator, Some(seeded))
            }
            None => (registering.await?, None),
        };
        let placed = (emulator, placement);
        match seeded {
            Some(Ok((img, hash, start))) => return self.as_is(platform, img, hash, start, placed),
            Some(Err((s, cache))) => (start, cache_from) = (s, cache),
            None => {}
        }
        let generation = match (&self.options.pull, cache_from.first(), &start) {
            (pull::Want::Pull(by), Some(image), Start::RebuiltFrom { release, .. }) => {
                self.release_generation(platform, image, release, *by)
                    .await?
            }
            _ => None,
        };
        let built = self
            .build(
                platform,
                &placed.1,
                &cache_from,
                generation.as_ref(),
                progress,
            )
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

    /// Base, Guix layer, pull stage and the scripts on top, each skipped
    /// when the engine already has it.
    async fn build(
        &self,
        platform: &Platform,
        placement: &Placement,
        cache_from: &[String],
        generation: Option<&Generation>,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<(base::Base, build::Built, pull::Stage), Error> {
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
        let guix = build::inputs(&guix_spec)?;
        if generation.is_none() {
            progress("Guix layer");
            build::build(&self.engine, &guix_spec, &|s| progress(s)).await?;
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
            (pull::Want::Pull(by), generation) => {
                let (tag, stage) = self
                    .pull_stage(platform, placement, &guix, *by, &base, generation, progress)
                    .await?;
                (tag, stage, Some(*by))
            }
        };
        progress("image");
        let mut spec = self.top_spec(platform, &guix, by, &layer, &base);
        spec.cache_from = cache_from.to_vec();
        if let Some(p) = stage.pulled() {
            spec.labels.insert(pull::LABEL_PULL.into(), p.label());
        }
        spec.labels.insert(
            pull::LABEL_PULLED.into(),
            stage
                .pulled()
                .map_or_else(|| "no".into(), |p| format!("{} {}", p.by, p.commit)),
        );
        let image = build::build(&self.engine, &spec, &|s| progress(s)).await?;
        Ok((base, image, stage))
    }

    /// The pulled Guix layer of `platform` for `by` (committed after a pull
    /// in this run, or already in the engine), checked with `guix describe`
    /// against the checkout's pin: its tag and what the stage did.
    #[allow(clippy::too_many_arguments)]
    async fn pull_stage(
        &self,
        platform: &Platform,
        placement: &Placement,
        guix: &build::Inputs,
        by: By,
        base: &base::Base,
        generation: Option<&Generation>,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<(String, pull::Stage), Error> {
        let d = &self.matrix.defaults;
        let key = pull::key(&guix.hash, by);
        let tag = names::pulled(d, platform);
        let pin = crate::pin::read(&self.options.checkout.channels())?;
        let keyed = |img: &LocalImage| img.labels.get(pull::LABEL_PULL_KEY) == Some(&key);
        let mut have = self.engine.local_image(&tag).await?.filter(keyed);
        if have.is_none() {
            // The image of an earlier tree (or a release's, reused) pulled on
            // this same Guix layer: its pull is below its scripts, so it can
            // be the pulled layer (no pull; the store layer stays shared).
            let image = self.engine.local_image(&self.image_tag(platform)).await?;
            if let Some(img) = image.filter(keyed) {
                crate::release::open::tag(&self.engine, &img.id, &tag).await?;
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
                        format!(
                            "release {}'s generation {}",
                            g.release,
                            g.pulled.commit.chars().take(12).collect::<String>()
                        ),
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
                let stand_in = match by {
                    By::StandIn => Some(self.stand_in()?),
                    By::GuixPull => None,
                };
                let job = pull::Job {
                    platform: platform.clone(),
                    image: unpulled.tag,
                    tag: tag.clone(),
                    by,
                    key,
                    from,
                    channels,
                    cache_tmpfs: placement.cache_tmpfs,
                    timeout: placement.timeout(Duration::from_secs(platform.pull_timeout_secs)),
                    stand_in,
                    echo: self
                        .options
                        .echo
                        .then(|| format!("[{} pull]", platform.slug())),
                };
                let record = pull::run(&self.engine, &job).await?;
                (Some(record), true)
            }
        };
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

    /// The checkout's channels file (the pin).
    fn channels_file(&self) -> Result<Vec<u8>, Error> {
        let path = self.options.checkout.channels();
        std::fs::read(&path).map_err(|source| Error::Fixture { path, source })
    }

    /// What the release image `image` (fetched as a build cache) offers the
    /// pull: its pulled generation by `by`, when its Guix layer is this
    /// tree's but for the pinned channel (a moved pin: the pull starts
    /// there) or entirely (the same pin: no pull at all).
    async fn release_generation(
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

    /// The offline stand-in for `guix pull`'s network part.
    fn stand_in(&self) -> Result<Vec<u8>, Error> {
        let path = self.options.checkout.fixtures().join("stand-in-guix.sh");
        std::fs::read(&path).map_err(|source| Error::Fixture { path, source })
    }

    /// What the release `from` does for `platform`: Ok(the image reused, its
    /// inputs, how it started), or Err(how the build starts, the images to
    /// use as its layer cache). Nothing of an unverified release is fetched.
    async fn seed(
        &self,
        platform: &Platform,
        from: &Source,
        wants: &[build::Inputs],
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Result<(LocalImage, String, Start), (Start, Vec<String>)>, Error> {
        let tag = self.image_tag(platform);
        progress(&format!("verify release {}", from.release_name()));
        let release = match self.release(from, self.options.require_verified).await? {
            Ok(r) => r,
            Err(why) => return Ok(Err((Start::BuiltCold { why: why.clone() }, vec![]))),
        };
        let name = release.name();
        let d = &self.matrix.defaults;
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
                crate::release::open::tag(&self.engine, &img.id, &tag).await?;
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
                        crate::release::open::tag(&self.engine, &b.id, &base_tag).await?;
                    }
                    Ok(_) => tracing::warn!("{}: the base of release {name} is not the bottom of its image; a release made here will not carry it", platform.docker),
                    Err(e) => tracing::warn!("{}: release {name} has no base ({e}); a release made here will not carry one", platform.docker),
                }
                self.engine.remove_image(&fetched).await;
                Ok((
                    img,
                    hash,
                    Start::Reused {
                        release: format!("{name} ({})", release.vouched.by),
                    },
                ))
            }
            Seed::Layers { image, changed } => Err((
                Start::RebuiltFrom {
                    release: name,
                    changed,
                },
                vec![image],
            )),
            Seed::Cold(why) => Err((Start::BuiltCold { why }, vec![])),
        })
    }

    /// What the pull stage is for an image used as it is: the pull its label records, if any.
    fn stage_of(&self, img: &LocalImage) -> pull::Stage {
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
    fn as_is(
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
    async fn published(
        &self,
        platform: &Platform,
        source: &Source,
        (emulator, placement): (Option<emulators::Handler>, Placement),
    ) -> Result<Prepared, Error> {
        let started = std::time::Instant::now();
        let tag = names::published(&self.matrix.defaults, platform);
        let release = match self.release(source, true).await? {
            Ok(r) => r,
            Err(why) => {
                return Err(TrustError::Unverified {
                    source_: source.to_string(),
                    why: why.clone(),
                }
                .into())
            }
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
        spec.unhashed_args
            .insert("BASE_PROVENANCE".into(), base.provenance.clone());
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
