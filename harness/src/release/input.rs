//! The release input of a run (`--image`, `--from`, or none), opened and vouched for once, up front, and shared by every engine as one value.

use super::open::{open, Release};
use super::source::Source;
use super::trust::{Keys, TrustError};
use std::sync::Arc;
use tokio::sync::OnceCell;

/// What the run was asked to start from.
#[derive(Debug, Clone, Default)]
pub struct Asked {
    /// `--image`: check this release's images instead of building.
    pub image: Option<Source>,
    /// `--from`: start from this release.
    pub from: Option<Source>,
    /// The keys a release may be signed with (trust/*.pub, --trust-key).
    pub keys: Keys,
    /// An unverified `--from` is an error instead of a build.
    pub require_verified: bool,
    /// A `--from` release older than the one an engine's images came from
    /// is taken (else refused: no rollback).
    pub allow_older: bool,
}

/// The release a run uses, decided once.
#[derive(Debug, Clone)]
pub enum Input {
    /// Neither `--image` nor `--from`: the run builds.
    None,
    /// `--image`: this vouched-for release's images are checked, nothing is built.
    Image(Release),
    /// `--from`: this vouched-for release seeds the builds.
    From(Release),
    /// `--from` that could not be vouched for or reached: the run builds, and says why.
    Unusable { source: Source, why: String },
}

impl Input {
    /// Opens what `asked` names: an `--image` release, or a `--from` one
    /// with `require_verified`, must be vouched for; a plain `--from` that is
    /// not (or cannot be reached) is `Unusable`. A release that contradicts
    /// its pin or signature is always an error.
    pub async fn open(asked: &Asked) -> Result<Input, TrustError> {
        let (source, required, image) = match (&asked.image, &asked.from) {
            (Some(image), _) => (image, true, true),
            (None, Some(from)) => (from, asked.require_verified, false),
            (None, None) => return Ok(Input::None),
        };
        let unusable = |why: String| Input::Unusable {
            source: source.clone(),
            why,
        };
        match open(source, &asked.keys).await {
            Ok(r) if image => Ok(Input::Image(r)),
            Ok(r) => Ok(Input::From(r)),
            Err(e @ TrustError::Unverified { .. }) if !required => {
                tracing::warn!("{e}; building instead");
                Ok(unusable(e.to_string()))
            }
            Err(TrustError::Registry(e)) if !required => {
                tracing::warn!("release {source} unreachable ({e}); building instead");
                Ok(unusable(format!("{source} unreachable: {e}")))
            }
            Err(e) => Err(e),
        }
    }

    /// The vouched-for release, if the run has one.
    pub fn release(&self) -> Option<&Release> {
        match self {
            Input::Image(r) | Input::From(r) => Some(r),
            Input::None | Input::Unusable { .. } => None,
        }
    }

    /// The option that fetches exactly this release, pinned to the digest
    /// that was vouched for (`--image DIR@sha256:…`, `--from REF@sha256:…`):
    /// what a failure bundle's reproduce line carries.
    pub fn reproduce_with(&self) -> Option<String> {
        let (option, r) = match self {
            Input::Image(r) => ("--image", r),
            Input::From(r) => ("--from", r),
            Input::None | Input::Unusable { .. } => return None,
        };
        Some(format!("{option} {}", r.source.pinned(&r.vouched.digest)))
    }
}

/// One input shared by every engine of a run: opened at most once, by the
/// command up front or by the first pipeline that needs it.
#[derive(Debug, Clone, Default)]
pub struct Shared(Arc<OnceCell<Input>>);

impl Shared {
    /// The input `asked` names, opened now unless it was already.
    pub async fn get(&self, asked: &Asked) -> Result<&Input, TrustError> {
        self.0.get_or_try_init(|| Input::open(asked)).await
    }

    /// The input, if it was opened.
    pub fn opened(&self) -> Option<&Input> {
        self.0.get()
    }
}
