//! guix-matrix harness: builds the Guix image on every platform of matrix.toml
//! through the Docker engine and checks what the image promises.
//!
//! The modules follow the pipeline:
//! matrix → engine → emulators → base → image → run → scenarios → report.

pub mod base;
pub mod doctor;

pub mod emulators;
pub mod engine;
pub mod image;
pub mod matrix;
pub mod pin;

pub mod report;
pub mod retry;
pub mod run;
pub mod scenarios;

use engine::{Engine, EngineError};
use matrix::{Matrix, Platform};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;

/// The repository root (where matrix.toml, Dockerfile and scripts/ live).
pub fn repo_root() -> PathBuf {
    if let Ok(p) = std::env::var("GUIX_MATRIX_ROOT") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("harness/ has a parent")
        .to_path_buf()
}

/// The last `n` lines of `text`, for messages.
pub fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Anything a pipeline step can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Matrix(#[from] matrix::MatrixError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Base(#[from] base::BaseError),
    #[error(transparent)]
    Build(#[from] image::BuildError),
    #[error(transparent)]
    Emulator(#[from] emulators::EmulatorError),
    #[error(transparent)]
    Run(#[from] run::RunError),
    #[error(transparent)]
    Pin(#[from] pin::PinError),
    #[error("no platform in {path} runs natively on this engine's architecture ({arch})\n  fix: add a [[platform]] with emulator = \"none\" for it")]
    NoNativePlatform { path: PathBuf, arch: String },
    #[error("{0}")]
    Other(String),
}

/// An image ready to run for one platform.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub platform: Platform,
    pub base: base::Base,
    pub image: image::Built,
    pub emulator: Option<emulators::Handler>,
}

/// The pipeline's state: one engine, one matrix, and each expensive step done once.
pub struct Harness {
    pub engine: Engine,
    pub matrix: Matrix,
    /// Try to pull `base_image` before building it offline.
    pub allow_pull: bool,
    /// Run the legs that need the internet (a real `guix pull`); else they say "skipped: offline".
    pub online: bool,
    /// Print every container's output as it comes (`harness repro`).
    pub echo: bool,
    /// Keep scenario containers for inspection (`harness repro`).
    pub keep: bool,
    probes: OnceCell<HashMap<String, Vec<u8>>>,

    native: OnceCell<(Platform, base::Base)>,
    helper: OnceCell<String>,
    handlers: OnceCell<Vec<emulators::Handler>>,
    prepared: Mutex<HashMap<String, Arc<OnceCell<Prepared>>>>,
}

impl Harness {
    /// Connects to the engine.
    pub async fn new(matrix: Matrix) -> Result<Self, Error> {
        let engine = Engine::connect().await?;
        Ok(Harness {
            engine,
            matrix,
            allow_pull: std::env::var("GUIX_MATRIX_OFFLINE")
                .map_or(true, |v| v.is_empty() || v == "0"),
            online: std::env::var("GUIX_MATRIX_ONLINE").is_ok_and(|v| v == "1"),
            probes: OnceCell::new(),
            echo: false,
            keep: false,
            native: OnceCell::new(),

            helper: OnceCell::new(),
            handlers: OnceCell::new(),
            prepared: Mutex::default(),
        })
    }

    /// Loads the repository's matrix.toml and connects.
    pub async fn from_repo() -> Result<Self, Error> {
        Self::new(Matrix::load(matrix::default_path())?).await
    }

    /// The platform this engine runs natively, with its base image.
    pub async fn native(&self) -> Result<&(Platform, base::Base), Error> {
        self.native
            .get_or_try_init(|| async {
                let version = self
                    .engine
                    .docker
                    .version()
                    .await
                    .map_err(EngineError::api("engine version"))?;
                let arch = version.arch.unwrap_or_default();
                let platform = self
                    .matrix
                    .platforms
                    .iter()
                    .find(|p| p.is_native() && p.oci().architecture == arch)
                    .cloned()
                    .ok_or_else(|| Error::NoNativePlatform {
                        path: self.matrix.path.clone(),
                        arch,
                    })?;
                let base = base::ensure(
                    &self.engine,
                    &self.matrix.defaults,
                    &platform,
                    self.allow_pull,
                )
                .await?;
                Ok((platform, base))
            })
            .await
    }

    /// The readdir() probe for every `probe_cc` of the matrix, built on the native base.
    pub async fn probes(&self) -> Result<&HashMap<String, Vec<u8>>, Error> {
        self.probes
            .get_or_try_init(|| async {
                let (native, _) = self.native().await?;
                let d = &self.matrix.defaults;
                let base =
                    base::ensure_suite(&self.engine, d, native, &d.probe_suite, self.allow_pull)
                        .await?;
                let mut ccs: Vec<String> = self
                    .matrix
                    .platforms
                    .iter()
                    .filter_map(|p| p.probe_cc.clone())
                    .collect();
                ccs.sort();
                ccs.dedup();
                let spec = image::BuildSpec {
                    tag: format!("{}-probe:latest", self.matrix.defaults.image),
                    platform: native.docker.clone(),
                    dockerfile: "fixtures/probe.Dockerfile".into(),
                    context: vec![
                        "fixtures/probe.Dockerfile".into(),
                        "fixtures/readdir-probe.c".into(),
                    ],
                    build_args: BTreeMap::from([
                        ("BASE_IMAGE".to_string(), base.reference.clone()),
                        ("PROBE_CCS".to_string(), ccs.join(" ")),
                    ]),
                    from_ids: vec![base.id.clone()],
                    timeout: Duration::from_secs(1200),
                    step: format!("{}: readdir probe image", native.docker),
                };
                let built = image::build(&self.engine, &spec, &|_| {}).await?;
                let tar = run::copy_out(&self.engine, &built.tag, "/probes").await?;
                let mut probes = HashMap::new();
                let mut archive = tar::Archive::new(tar.as_slice());
                let entries = archive
                    .entries()
                    .map_err(|e| Error::Other(format!("probe archive: {e}")))?;
                for entry in entries {
                    let mut entry =
                        entry.map_err(|e| Error::Other(format!("probe archive: {e}")))?;
                    let path = entry
                        .path()
                        .map_err(|e| Error::Other(format!("probe archive: {e}")))?
                        .into_owned();
                    let name = path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    if entry.header().entry_type().is_file() {
                        let mut bytes = Vec::new();
                        std::io::Read::read_to_end(&mut entry, &mut bytes)
                            .map_err(|e| Error::Other(format!("probe archive: {e}")))?;
                        probes.insert(name, bytes);
                    }
                }
                Ok(probes)
            })
            .await
    }

    /// The emulator helper image.
    pub async fn helper(&self) -> Result<&String, Error> {
        self.helper
            .get_or_try_init(|| async {
                let (native, base) = self.native().await?;
                Ok(emulators::helper(
                    &self.engine,
                    &self.matrix.defaults.image,
                    native,
                    &base.reference,
                    &base.id,
                )
                .await?)
            })
            .await
    }

    /// Registers every emulator the matrix needs (once), returning the handlers.
    pub async fn emulators(&self) -> Result<&Vec<emulators::Handler>, Error> {
        self.handlers
            .get_or_try_init(|| async {
                let helper = self.helper().await?;
                let statuses =
                    emulators::register(&self.engine, helper, &self.matrix.platforms).await?;
                Ok(statuses.into_iter().filter_map(|s| s.handler).collect())
            })
            .await
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
        let emulator = if platform.is_native() {
            None
        } else {
            progress("registering emulators");
            let handlers = self.emulators().await?;
            handlers
                .iter()
                .find(|h| h.name == platform.emulator)
                .cloned()
        };
        progress("base image");
        let base = base::ensure(
            &self.engine,
            &self.matrix.defaults,
            platform,
            self.allow_pull,
        )
        .await?;
        progress("image");
        let spec = self.image_spec(platform, &base);
        let image = image::build(&self.engine, &spec, &|s| progress(s)).await?;
        Ok(Prepared {
            platform: platform.clone(),
            base,
            image,
            emulator,
        })
    }

    /// The build of the Guix image for `platform` on `base`.
    pub fn image_spec(&self, platform: &Platform, base: &base::Base) -> image::BuildSpec {
        image::BuildSpec {
            tag: self.image_tag(platform),
            platform: platform.docker.clone(),
            dockerfile: "Dockerfile".into(),
            context: ["Dockerfile", "substitutes", "channels", "scripts"]
                .iter()
                .map(PathBuf::from)
                .collect(),
            build_args: BTreeMap::from([
                ("BASE_IMAGE".to_string(), base.reference.clone()),
                (
                    "GUIX_DAEMON_ARGS".to_string(),
                    platform.daemon_args.join(" "),
                ),
                ("BASE_PROVENANCE".to_string(), base.provenance.clone()),
            ]),
            from_ids: vec![base.id.clone()],
            timeout: self.step_timeout(platform) * 2,
            step: format!("{}: build image", platform.docker),
        }
    }

    /// `guix-matrix:arm-v7`.
    pub fn image_tag(&self, platform: &Platform) -> String {
        format!("{}:{}", self.matrix.defaults.image, platform.slug())
    }

    /// One step's timeout on `platform`.
    pub fn step_timeout(&self, platform: &Platform) -> Duration {
        platform.timeout(Duration::from_secs(self.matrix.defaults.step_timeout_secs))
    }
}

/// Prepares one platform and runs `scenarios` on it within the platform's leg
/// budget; never fails, the leg says what broke (and in which step).
pub async fn leg(
    h: &Harness,
    platform: &Platform,
    scenarios: &[scenarios::Scenario],
    progress: &(dyn Fn(&str) + Sync),
) -> report::Leg {
    let started = std::time::Instant::now();
    let step = Mutex::new(String::from("start"));
    let track = |s: &str| {
        *step.lock().expect("step lock") = s.to_string();
        progress(s);
    };
    // Preparing takes a few steps, each check one: budget them all.
    let steps = 4 + scenarios.len() as u32;
    let limit = h.step_timeout(platform) * steps;
    match tokio::time::timeout(limit, leg_within(h, platform, scenarios, &track)).await {
        Ok(leg) => leg,
        Err(_) => {
            let removed = h.engine.remove_tracked_for(&platform.docker).await;
            let step = step.lock().expect("step lock").clone();
            let mut leg =
                report::Leg::new(&platform.docker, h.image_tag(platform), started.elapsed());
            leg.error = Some(format!(
                "{}: the leg timed out after {}s during `{step}` (budget: step_timeout_secs × slowdown {} × {steps} steps); removed {removed} container(s)",
                platform.docker,
                started.elapsed().as_secs(),
                platform.slowdown,
            ));
            leg
        }
    }
}

async fn leg_within(
    h: &Harness,
    platform: &Platform,
    scenarios: &[scenarios::Scenario],
    progress: &(dyn Fn(&str) + Sync),
) -> report::Leg {
    let started = std::time::Instant::now();
    let prepared = h.prepare_with(platform, progress).await;
    let prepare_time = started.elapsed();
    let mut leg = report::Leg::new(&platform.docker, h.image_tag(platform), prepare_time);
    leg.emulator = "native".into();
    let p = match prepared {
        Ok(p) => p,
        Err(e) => {
            leg.error = Some(e.to_string());
            return leg;
        }
    };
    if let Some(hd) = &p.emulator {
        leg.emulator = hd.fingerprint();
    }
    leg.base = format!(
        "{} ({}; {})",
        p.base.reference, p.base.origin, p.base.provenance
    );
    leg.image_id = p.image.id.clone();
    leg.rebuilt = p.image.rebuilt;
    for s in scenarios {
        progress(&format!("check {}", s.name()));
        leg.outcomes.push(scenarios::run_one(h, &p, *s).await);
    }
    leg.elapsed = started.elapsed();
    leg
}
