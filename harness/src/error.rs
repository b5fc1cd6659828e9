//! The crate's error: every step's failure, typed, with its fix and the exit code it means.

use crate::release::{self, open, reuse, trust};
use crate::{base, emulators, engine, matrix, paths, pin, pull, record};
use std::path::PathBuf;

/// Anything a pipeline step can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Matrix(#[from] matrix::MatrixError),
    #[error(transparent)]
    Checkout(#[from] paths::PathError),
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    #[error(transparent)]
    Base(#[from] base::BaseError),
    #[error(transparent)]
    Build(#[from] engine::build::BuildError),
    #[error(transparent)]
    Emulator(#[from] emulators::EmulatorError),
    #[error(transparent)]
    Run(#[from] engine::run::RunError),
    #[error(transparent)]
    Pin(#[from] pin::PinError),
    #[error(transparent)]
    Release(#[from] release::ReleaseError),
    #[error(transparent)]
    Open(#[from] open::OpenError),
    #[error(transparent)]
    Incremental(#[from] reuse::ReuseError),
    #[error(transparent)]
    Pull(#[from] pull::PullError),
    #[error(transparent)]
    Report(#[from] record::ReportError),
    #[error(transparent)]
    Trust(#[from] trust::TrustError),
    #[error("engine {engine}: no platform in {path} is of its architecture ({arch})")]
    NoNativePlatform {
        path: PathBuf,
        engine: String,
        arch: String,
    },
    #[error("cannot read the readdir probes out of the probe image: {0}")]
    ProbeArchive(std::io::Error),
    #[error("the probe image has no readdir probe built by {cc}")]
    NoProbe { cc: String },
    #[error("matrix.toml: platform {platform}: no `probe_cc`, so the readdir() probe cannot be built for it")]
    NoProbeCc { platform: String },
    #[error("cannot read fixture {path}: {source}")]
    Fixture {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{step}: the engine did not keep the container it was asked to keep")]
    NotKept { step: String },
    #[error("cannot run the docker CLI: {0}")]
    DockerCli(std::io::Error),
    #[error("cannot write {path}: {source}")]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    /// What to do about it, when the harness knows.
    pub fn fix(&self) -> Option<String> {
        match self {
            Error::Checkout(e) => e.fix(),
            Error::Engine(e) => e.fix(),
            Error::Base(e) => e.fix(),
            Error::Build(e) => e.fix(),
            Error::Emulator(e) => e.fix(),
            Error::Run(e) => e.fix(),
            Error::Pin(e) => e.fix(),
            Error::Release(e) => e.fix(),
            Error::Open(e) => e.fix(),
            Error::Incremental(e) => e.fix(),
            Error::Pull(e) => e.fix(),
            Error::Report(e) => Some(e.fix()),
            Error::Trust(e) => e.fix(),
            Error::NoNativePlatform { arch, .. } => Some(format!(
                "add a [[platform]] for linux/{arch} (the helper and probe images are built on it), or run the legs on another engine (--engine PLATFORM=URL)"
            )),
            Error::NoProbeCc { .. } => {
                Some("give the platform a `probe_cc` (Debian's gcc-<triple> cross compiler)".into())
            }
            Error::Fixture { .. } => Some("run from a complete guix-matrix checkout".into()),
            Error::DockerCli(_) => {
                Some("install the docker client (apt-get install -y docker.io)".into())
            }
            Error::Output { .. } => Some("check the path and that it is writable".into()),
            Error::Matrix(_)
            | Error::ProbeArchive(_)
            | Error::NoProbe { .. }
            | Error::NotKept { .. } => None,
        }
    }

    /// The message, and under it the fix when there is one: what a person reads.
    pub fn report(&self) -> String {
        match self.fix() {
            Some(fix) => format!("{self}\n  fix: {fix}"),
            None => self.to_string(),
        }
    }

    /// The exit code this error means for the `harness` process: every
    /// variant named, none by a wildcard, so a new one must choose.
    pub fn exit(&self) -> Exit {
        use Exit::{Refused, Setup, Usage};
        match self {
            Error::Matrix(_) | Error::Checkout(_) | Error::NoProbeCc { .. } => Usage,
            Error::Fixture { .. } | Error::Report(_) => Usage,
            Error::Engine(e) => engine_exit(e),
            Error::Pin(e) => match e {
                pin::PinError::File { .. } | pin::PinError::BadCommit(_) => Usage,
                pin::PinError::BadAnswer { .. } | pin::PinError::Network { .. } => Setup,
            },
            Error::Release(e) => release_exit(e),
            Error::Trust(e) => trust_exit(e),
            Error::Open(e) => open_exit(e),
            Error::Incremental(e) => match e {
                reuse::ReuseError::Altered { .. }
                | reuse::ReuseError::Content { .. }
                | reuse::ReuseError::Older { .. } => Refused,
                reuse::ReuseError::Open(e) => open_exit(e),
                reuse::ReuseError::Engine(e) => engine_exit(e),
                reuse::ReuseError::Tree { .. }
                | reuse::ReuseError::OtherTree { .. }
                | reuse::ReuseError::PulledFrom { .. }
                | reuse::ReuseError::NotAStart { .. } => Usage,
            },
            Error::Pull(pull::PullError::NoKey { .. }) => Usage,
            Error::Base(_)
            | Error::Build(_)
            | Error::Emulator(_)
            | Error::Run(_)
            | Error::Pull(_)
            | Error::NoNativePlatform { .. }
            | Error::ProbeArchive(_)
            | Error::NoProbe { .. }
            | Error::NotKept { .. }
            | Error::DockerCli(_) => Setup,
            Error::Output { .. } => Usage,
        }
    }
}

fn engine_exit(e: &engine::EngineError) -> Exit {
    use engine::EngineError as E;
    match e {
        E::BadUrl { .. } | E::Twice { .. } | E::TlsFiles { .. } | E::Context { .. } => Exit::Usage,
        E::Unavailable { .. }
        | E::Timeout { .. }
        | E::Lost { .. }
        | E::Api { .. }
        | E::Rewrite { .. } => Exit::Setup,
    }
}

/// A release that is not what it says (checksum, listing, platform) is refused.
fn open_exit(e: &open::OpenError) -> Exit {
    use open::OpenError as P;
    match e {
        P::Checksum { .. } | P::Unlisted { .. } | P::Foreign { .. } | P::WrongPlatform { .. } => {
            Exit::Refused
        }
        P::NotInRelease { .. } => Exit::Usage,
        P::Io { .. } | P::Fetch { .. } => Exit::Setup,
        P::Engine(e) => engine_exit(e),
    }
}

/// Unverified has its own code; contradicting a pin or a signature is a refusal.
fn trust_exit(e: &trust::TrustError) -> Exit {
    use trust::TrustError as T;
    match e {
        T::Unverified { .. } => Exit::Unverified,
        T::Tampered { .. } => Exit::Refused,
        T::Key { .. } => Exit::Usage,
        // A path the user gave that is not there, or a key that would be
        // overwritten: the user's to fix (2); the machine's otherwise (3).
        T::Io { source, .. } if trust::TrustError::is_users(source) => Exit::Usage,
        T::Io { .. } | T::Registry(_) => Exit::Setup,
    }
}

fn release_exit(e: &release::ReleaseError) -> Exit {
    use release::ReleaseError as R;
    match e {
        R::NotPulled { .. }
        | R::NotAll { .. }
        | R::OtherPin { .. }
        | R::OtherRun { .. }
        | R::TwoReports { .. } => Exit::Refused,
        R::Report(_)
        | R::Pin(_)
        | R::NothingPassed { .. }
        | R::Foreign { .. }
        | R::Stale { .. }
        | R::Missing { .. }
        | R::TagTaken { .. } => Exit::Usage,
        R::Io { .. } | R::Export { .. } | R::Build(_) | R::Run(_) | R::Registry { .. } => {
            Exit::Setup
        }
        R::Engine(e) => engine_exit(e),
    }
}

/// The `harness` process's exit codes: the contract scripts rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything that ran passed.
    Success,
    /// One or more legs failed (a check, or a platform's preparation).
    LegsFailed,
    /// The command line or an input file is wrong (clap's own code, 2).
    Usage,
    /// The machine is not ready: no engine, no emulator, no disk, no network.
    Setup,
    /// `harness release` refused to ship: an image is not the Guix of the
    /// checkout's pin (not pulled, pulled by the stand-in, or to another pin).
    Refused,
    /// A release given to --image (or to --from with --require-verified, or
    /// to `verify`) is vouched for by no pinned digest and no trusted signature.
    Unverified,
    /// Nothing ran: every check of every leg was skipped (`--accept-skipped` makes it 0).
    NothingRan,
    /// Stopped by a signal (SIGINT: 130, SIGTERM: 143); what it started is removed.
    Interrupted(i32),
    /// `harness shell`: the command's own exit code.
    Command(u8),
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::LegsFailed => 1,
            Exit::Usage => 2,
            Exit::Setup => 3,
            Exit::Refused => 4,
            Exit::Unverified => 5,
            Exit::NothingRan => 6,
            Exit::Interrupted(signal) => (128 + signal).clamp(0, 255) as u8,
            Exit::Command(code) => code,
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_and_documented_values() {
        let codes = [
            Exit::Success,
            Exit::LegsFailed,
            Exit::Usage,
            Exit::Setup,
            Exit::Refused,
            Exit::Unverified,
            Exit::NothingRan,
            Exit::Interrupted(2),
            Exit::Interrupted(15),
        ]
        .map(Exit::code);
        assert_eq!(codes, [0, 1, 2, 3, 4, 5, 6, 130, 143]);
    }

    #[test]
    fn errors_carry_their_fix_and_their_class() {
        let e = Error::from(paths::PathError::NotFound { from: "/".into() });
        assert_eq!(e.exit(), Exit::Usage);
        assert!(
            e.report().contains("\n  fix: run the harness from inside"),
            "{}",
            e.report()
        );
        let e = Error::from(pin::PinError::Network {
            url: "u".into(),
            message: "m".into(),
        });
        assert_eq!(e.exit(), Exit::Setup);
        assert!(e.report().contains("fix: this needs the internet"));
    }
}
