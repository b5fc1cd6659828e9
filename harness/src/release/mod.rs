//! The release wing, both directions. Making one from what the matrix proved: what may ship (gate), what goes with it (contents), each platform's export read once (export), its images as OCI blobs (oci), the release directory (dist), the push (push), one release of them all (ship), its notes (notes). Reading one: where it is (source), what vouches for it (trust), opening and fetching it (open, archive), the run's release opened once (input), and the reuse decision (reuse).

// Making a release.
pub mod contents;
mod dist;
mod export;
mod gate;
mod hashing;
pub mod notes;
mod oci;
mod push;
mod ship;

// Reading one.
pub mod archive;
pub mod input;
pub mod open;
pub mod rebuild;
pub mod reuse;
pub mod signature;
pub mod source;
pub mod trust;

pub use dist::Dist;
pub use gate::{proved, Gate, Proved, Proving};
pub use push::{PushTarget, Pushed, Uploaded};
pub use ship::{ship, Plan, Shipped};

use crate::engine::build::BuildError;
use crate::engine::EngineError;
use std::path::{Path, PathBuf};
#[cfg(test)]
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(transparent)]
    Report(#[from] crate::record::ReportError),
    #[error("{path} is not a run of this checkout: {why}; nothing was released")]
    OtherRun { path: PathBuf, why: String },
    #[error("{platform} passed in two reports, {first} and {second}: each platform's image comes from its own run's report; nothing was released")]
    TwoReports {
        platform: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("cannot read the checkout's pin: {0}")]
    Pin(String),
    #[error("{platform}: not the pinned Guix: {why}; nothing was released")]
    NotPulled { platform: String, why: String },
    #[error("{platform}: {image} was pulled to {pulled}, but the checkout pins {pin}; nothing was released")]
    OtherPin {
        platform: String,
        image: String,
        pulled: String,
        pin: String,
    },
    #[error("no platform passed every check in {path}: nothing to release")]
    NothingPassed { path: PathBuf },
    #[error("--require-all: {missing} did not pass every check in {path}; nothing was released")]
    NotAll { path: PathBuf, missing: String },
    #[error("{platform}: the report is about image {reported}, but {image} is now {local}: the report is from another build")]
    Foreign {
        platform: String,
        image: String,
        reported: String,
        local: String,
    },
    #[error("{platform}: {image} was built from other inputs ({label}) than the tree has now ({tree}): it is not the image this tree proves")]
    Stale {
        platform: String,
        image: String,
        label: String,
        tree: String,
    },
    #[error("{platform}: {image} is not in the engine")]
    Missing { platform: String, image: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{platform}: the engine's export of {image} {message}; nothing was released")]
    Export {
        platform: String,
        image: String,
        message: String,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Run(#[from] crate::engine::run::RunError),
    #[error("registry {registry}: pushing {reference} failed: {message}")]
    Registry {
        registry: String,
        reference: String,
        message: String,
    },
    #[error("{reference} already exists with other content ({have}, this release is {want}); nothing was overwritten")]
    TagTaken {
        reference: String,
        have: String,
        want: String,
    },
}

impl ReleaseError {
    /// What to do about it.
    pub fn fix(&self) -> Option<String> {
        Some(match self {
            ReleaseError::Report(e) => e.fix(),
            ReleaseError::NothingPassed { .. } => {
                "run the matrix first (`harness run`), then release from its report (--report DIR/report.json)".into()
            }
            ReleaseError::OtherRun { .. } => {
                "run the matrix again on this checkout (`harness run --online`: the pull follows its pin), then release from that report".into()
            }
            ReleaseError::TwoReports { platform, .. } => format!("pass one report per platform: the report of the run (or prove job) that proved {platform}"),
            ReleaseError::Pin(_) => "channels/channels.scm must pin a commit (`harness pin --set COMMIT`)".into(),
            ReleaseError::NotPulled { .. } => "run the matrix with the pull stage (`harness run --online`: guix pull to the pin on every platform), then release from that report; or ship the image as it is with `release --unpulled` (said so in the index)".into(),
            ReleaseError::OtherPin { .. } => "run the matrix again (`harness run --online`) so the pull follows the checkout's pin, then release from that report".into(),
            ReleaseError::NotAll { .. } => {
                "make every platform pass, or release without --require-all".into()
            }
            ReleaseError::Foreign { .. } | ReleaseError::Stale { .. } | ReleaseError::Missing { .. } => {
                "run the matrix again on this tree (`harness run`), then release from that report".into()
            }
            ReleaseError::Io { .. } => "check the path and that the disk has room (a release needs about 1 GiB per platform)".into(),
            ReleaseError::Registry { registry, .. } => format!(
                "check that {registry} answers and accepts pushes (`docker login {registry}`, or GUIX_MATRIX_REGISTRY_USER and GUIX_MATRIX_REGISTRY_TOKEN, for one that needs a login); nothing was tagged: run the same release again when it does, and only what is missing is uploaded"
            ),
            ReleaseError::TagTaken { .. } => {
                "release under another tag (--tag), or pass --force to overwrite it on purpose".into()
            }
            ReleaseError::Engine(e) => return e.fix(),
            ReleaseError::Build(e) => return e.fix(),
            ReleaseError::Run(e) => return e.fix(),
            ReleaseError::Export { .. } => {
                "check the engine (`harness doctor`) and run the release again".into()
            }
        })
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReleaseError + '_ {
    move |source| ReleaseError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Today's release tag, `vYYYYMMDD` (UTC).
pub fn dated_tag(now: std::time::SystemTime) -> String {
    let days = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("v{y:04}{m:02}{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dated_tags_are_utc_calendar_days() {
        let at = |secs: u64| dated_tag(std::time::UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "v19700101");
        assert_eq!(at(1_767_657_600), "v20260106");
        assert_eq!(at(951_782_400), "v20000229");
        assert_eq!(at(1_795_996_799), "v20261129");
        assert_eq!(at(1_795_996_800), "v20261130");
    }
}
