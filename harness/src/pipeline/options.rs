//! How a run goes, as the command line (or a test) says: one struct, no environment reads inside the library.

use crate::engine::Engine;
use crate::paths::Checkout;
use crate::pull;
use crate::release::input::{Asked, Input, Shared};
use crate::release::trust::TrustError;

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
    /// The release asked for (`--image`: check its images instead of
    /// building, only when vouched for; `--from`: reuse its image where the
    /// tree is unchanged, else build on its base and layers) and the keys
    /// that may vouch for it.
    pub release: Asked,
    /// That release, opened once and shared by every engine of the run.
    pub opened: Shared,
    /// The pull stage: skipped (offline), the real `guix pull`, or its stand-in.
    pub pull: pull::Want,
    /// The engine of every command (and of the legs no `--engine P=URL`
    /// places elsewhere): `--engine URL`, else DOCKER_HOST, else the docker
    /// CLI's context, else the local socket.
    pub engine: String,
    /// The platform that runs the checks' platform-independent steps for
    /// the whole run (the entry point's failure reports, `guix pull --url`
    /// keeping the pin); the other legs name it instead of repeating them
    /// under an emulator. None: every leg runs every step.
    pub shared_steps: Option<String>,
    /// A rebuild that checks a release (`rebuild --check`): every stage
    /// above the base built anew, no layer cache, nothing up to date.
    pub rebuild: Option<Rebuild>,
}

/// What a rebuild takes from the release it checks.
#[derive(Debug, Clone, Default)]
pub struct Rebuild {
    /// Each platform's base as the release's image names it
    /// (`io.guix-matrix.base`), by Docker platform: the release's base is
    /// loaded from the release, not pulled, so the engine cannot say it.
    pub base_provenance: std::collections::BTreeMap<String, String>,
    /// Where each platform's pull started when the release's did not start
    /// from Debian's guix, by Docker platform: the local tag of the earlier
    /// release's image (fetched, vouched for) and that release's name.
    pub generation: std::collections::BTreeMap<String, (String, String)>,
}

impl Options {
    /// Defaults for `checkout`: pull allowed, offline, quiet, nothing kept.
    pub fn new(checkout: Checkout) -> Self {
        Options {
            checkout,
            allow_pull: true,
            echo: false,
            keep: false,
            release: Asked::default(),
            opened: Shared::default(),
            pull: pull::Want::offline(),
            engine: Engine::default_host(),
            shared_steps: None,
            rebuild: None,
        }
    }

    /// The run's release input, opened (and vouched for) at most once.
    pub async fn release_input(&self) -> Result<&Input, TrustError> {
        self.opened.get(&self.release).await
    }
}
