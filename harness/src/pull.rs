//! The pull stage: `guix pull` to the pin (the image's own pull step, or its offline stand-in) run in a container and committed as the layer the image's scripts go on; what was pulled, as a label.

use crate::engine::run::{RunError, RunSpec};
use crate::engine::{Engine, EngineError};
use crate::matrix::Platform;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::names::{LABEL_PULL, LABEL_PULL_KEY};

/// Where the pull step's stand-in goes in the pull container (first on PATH).
const STAND_IN_DIR: &str = "/usr/local/lib/guix-matrix-stand-in";
/// The image's PATH (scripts/Dockerfile): the committed layer keeps it, not the stand-in's.
const IMAGE_PATH: &str =
    "/root/.config/guix/current/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Who ran the pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum By {
    /// The real `guix pull` (codeberg and the substitute servers): what ships.
    GuixPull,
    /// The offline stand-in for its network part (tests): never shipped as pulled.
    StandIn,
}

impl std::fmt::Display for By {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            By::GuixPull => "guix pull",
            By::StandIn => "stand-in",
        })
    }
}

/// What a run asks of the pull stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// No pull in this run (offline), for this reason; an image of the tree
    /// that was already pulled for real is still used as it is.
    Skip(String),
    /// Pull with `By` unless the engine already holds that pull of this tree.
    Pull(By),
}

impl Want {
    /// Offline: the reason the nightly and release workflows run the real pull instead.
    pub fn offline() -> Want {
        Want::Skip("offline: guix pull needs codeberg.org and the substitute servers; the nightly and release workflows run it (harness run --online)".into())
    }

    /// The pulls an image of this tree may carry and be used (None: unpulled), best first.
    pub fn acceptable(&self) -> Vec<Option<By>> {
        match self {
            Want::Skip(_) => vec![Some(By::GuixPull), None],
            Want::Pull(by) => vec![Some(*by)],
        }
    }
}

/// A pull, as the image's label records it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Pulled {
    pub by: By,
    /// The commit the pulled generation's `guix describe` names.
    pub commit: String,
    /// Where the pull started (Debian's guix, or a release's generation).
    pub from: String,
    /// `guix describe` of the pulled generation, one line.
    pub describe: String,
    /// How long the pull took (in the report; never in the label: the same
    /// pull makes the same image however long it took).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seconds: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Where a pull from release `release`'s generation of `commit` started, as its record says.
pub fn from_generation(release: &str, commit: &str) -> String {
    format!(
        "release {release}'s generation {}",
        commit.chars().take(12).collect::<String>()
    )
}

impl Pulled {
    /// The release whose generation this pull started from, if it did
    /// (what `from_generation` wrote).
    pub fn started_from_release(&self) -> Option<&str> {
        self.from
            .strip_prefix("release ")?
            .split_once("'s generation ")
            .map(|(release, _)| release)
    }

    /// The pull an image's labels record, if any (a label that does not parse is an error).
    pub fn of(labels: &HashMap<String, String>) -> Result<Option<Pulled>, String> {
        labels
            .get(LABEL_PULL)
            .filter(|v| !v.is_empty())
            .map(|v| {
                serde_json::from_str(v)
                    .map_err(|e| format!("its {LABEL_PULL} label is not a pull record: {e}"))
            })
            .transpose()
    }

    pub fn label(&self) -> String {
        let record = Pulled {
            seconds: 0,
            ..self.clone()
        };
        serde_json::to_string(&record).expect("pull record json")
    }
}

/// What the stage did for one leg, as the report and the table say it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Stage {
    /// Pulled in this run.
    Pulled(Pulled),
    /// The image already held this pull (up to date, or a release's): 0 pulls.
    Kept(Pulled),
    /// Not pulled, and why.
    Skipped { why: String },
}

impl Stage {
    pub fn pulled(&self) -> Option<&Pulled> {
        match self {
            Stage::Pulled(p) | Stage::Kept(p) => Some(p),
            Stage::Skipped { .. } => None,
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = |c: &str| c.chars().take(12).collect::<String>();
        match self {
            Stage::Pulled(p) => write!(
                f,
                "pulled to {} by {} from {} in {}s",
                short(&p.commit),
                p.by,
                p.from,
                p.seconds
            ),
            Stage::Kept(p) => write!(
                f,
                "kept: pulled to {} by {} from {} (0 pulls)",
                short(&p.commit),
                p.by,
                p.from
            ),
            Stage::Skipped { why } => write!(f, "skipped: {why}"),
        }
    }
}

/// The key a pulled layer carries: the Guix layer it was pulled on (its
/// content hash, which covers the pinned channel), who pulled, what it
/// trusted, and the stand-in program when the stand-in pulled.
pub fn key(guix_inputs: &str, by: By, trust: &Trust, stand_in: Option<&[u8]>) -> String {
    let trust = trust.file();
    // The stand-in is part of what made an offline pull: a change pulls again.
    let stand_in = stand_in.map(|p| hex::encode(Sha256::digest(p)));
    let stand_in = stand_in.unwrap_or_default();
    hex::encode(Sha256::digest(
        format!("{guix_inputs} {by} {trust} {stand_in}").as_bytes(),
    ))
}

/// The substitute servers and keys the pull trusts (matrix.toml's
/// `pull_substitutes` and `pull_keys`): the official build farms, since
/// what the pull makes ships. Empty: the image's own list and keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trust {
    pub urls: Vec<String>,
    /// Key files of the image's /etc/guix-matrix/substitutes/.
    pub keys: Vec<String>,
}

/// Where the pull step finds its trust (scripts/pull.sh removes it).
const TRUST_FILE: &str = "etc/guix-matrix/pull-trust";

impl Trust {
    /// The pull-trust file scripts/pull.sh reads: `urls …` and `keys …`.
    pub fn file(&self) -> String {
        if self.urls.is_empty() {
            return String::new();
        }
        format!(
            "urls {}\nkeys {}\n",
            self.urls.join(" "),
            self.keys.join(" ")
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(
        "{platform}: the pull step ({by}) exited {code}\n  last output (trace left out):\n{tail}"
    )]
    Failed {
        platform: String,
        by: By,
        code: i64,
        tail: String,
    },
    #[error("{platform}: the pull step ({by}) did not finish within {}s (its limit where it runs)", limit.as_secs())]
    Timeout {
        platform: String,
        by: By,
        limit: Duration,
    },
    #[error("{platform}: after the pull, guix describe names {described}, not the pinned commit {pinned}\n  guix describe: {describe}")]
    WrongPin {
        platform: String,
        pinned: String,
        described: String,
        describe: String,
    },
    #[error("matrix.toml: [defaults] pull_keys names {}, which does not exist", path.display())]
    NoKey { path: std::path::PathBuf },
    #[error(transparent)]
    Run(RunError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl PullError {
    pub fn fix(&self) -> Option<String> {
        match self {
            PullError::Failed { by: By::GuixPull, .. } => Some("guix pull needs codeberg.org and the substitute servers: check the network and the pin (`harness pin`), then run again; `harness repro --online --platform P` shows the whole output".into()),
            PullError::Failed { by: By::StandIn, .. } => Some("the stand-in (fixtures/stand-in-guix.sh) or the image's pull step (scripts/pull.sh) broke: run it by hand in `harness shell`".into()),
            PullError::Timeout { .. } => Some("raise the platform's pull_timeout_secs in matrix.toml (the limit natively; under qemu it is multiplied by the platform's slowdown), or run the platform on an engine that runs it natively (--engine)".into()),
            PullError::WrongPin { .. } => Some("channels/channels.scm must pin a commit of the channel's branch (`harness pin --set COMMIT`); the pull step's pin check says more above".into()),
            PullError::NoKey { .. } => Some("name key files of substitutes/ in pull_keys (the official farms': berlin.guix.gnu.org.pub, bordeaux.guix.gnu.org.pub)".into()),
            PullError::Run(e) => e.fix(),
            PullError::Engine(e) => e.fix(),
        }
    }
}

/// One pull to run.
#[derive(Debug, Clone)]
pub struct Job {
    pub platform: Platform,
    /// The image the pull runs in (the scripts on the Guix layer to pull).
    pub image: String,
    /// The tag of the committed result.
    pub tag: String,
    pub by: By,
    /// See [`key`].
    pub key: String,
    /// Where the pull starts, for the record.
    pub from: String,
    /// The servers and keys the pull trusts.
    pub trust: Trust,
    /// The channels file to pull with, put in place first (the image's own
    /// when None): a pull from a release's generation to a moved pin.
    pub channels: Option<Vec<u8>>,
    /// Guix's cache on tmpfs (a 32-bit platform under qemu).
    pub cache_tmpfs: bool,
    pub timeout: Duration,
    /// The stand-in program (bytes), for `By::StandIn`.
    pub stand_in: Option<Vec<u8>>,
    /// Print the pull's output as it comes, with this prefix.
    pub echo: Option<String>,
    /// The image's epoch (its base's date): the store database's
    /// registration times are set to it, so the same pull gives the same bits.
    pub epoch: i64,
}

/// Runs the image's pull step in a container of `job.image` and commits
/// it as `job.tag` (labelled with its key and the pull, its commit and
/// `guix describe` still to be read). A failed or timed-out pull leaves no
/// container behind.
pub async fn run(engine: &Engine, job: &Job) -> Result<Pulled, PullError> {
    let started = Instant::now();
    let mut spec = RunSpec::new(
        &job.image,
        format!("{}: pull ({})", job.platform.docker, job.by),
    )
    .platform(&job.platform.docker)
    .cmd([
        "/usr/local/bin/guix-pull.sh".to_string(),
        "--epoch".to_string(),
        job.epoch.to_string(),
    ])
    .timeout(job.timeout)
    .with_options(job.echo.clone(), true);
    if job.cache_tmpfs {
        spec = spec.tmpfs("/root/.cache/guix", "rw,exec,size=2g");
    }
    let trust = job.trust.file();
    if !trust.is_empty() {
        let tar = crate::engine::run::tar_of(&[(TRUST_FILE, 0o644, trust.as_bytes())]);
        spec = spec.upload(tar, "/");
    }
    if let Some(channels) = &job.channels {
        let tar = crate::engine::run::tar_of(&[(
            "root/.config/guix/channels.scm",
            0o644,
            channels.as_slice(),
        )]);
        spec = spec.upload(tar, "/");
    }
    match (&job.by, &job.stand_in) {
        (By::StandIn, Some(program)) => {
            let path = format!("{}/guix", STAND_IN_DIR.trim_start_matches('/'));
            let tar = crate::engine::run::tar_of(&[(path.as_str(), 0o755, program.as_slice())]);
            spec = spec
                .upload(tar, "/")
                .env(format!("PATH={STAND_IN_DIR}:{IMAGE_PATH}"));
        }
        _ => spec.network_none = false,
    }
    let out = crate::engine::run::run(engine, &spec)
        .await
        .map_err(|e| match e {
            RunError::Timeout { .. } => PullError::Timeout {
                platform: job.platform.docker.clone(),
                by: job.by,
                limit: job.timeout,
            },
            e => PullError::Run(e),
        })?;
    let container = out.kept_container.clone().unwrap_or_default();
    let record = Pulled {
        by: job.by,
        commit: String::new(),
        from: job.from.clone(),
        describe: String::new(),
        seconds: started.elapsed().as_secs(),
    };
    let result = if out.exit_code != 0 {
        Err(PullError::Failed {
            platform: job.platform.docker.clone(),
            by: job.by,
            code: out.exit_code,
            // What the pull said, not the entry point's trace (`harness
            // repro` shows everything).
            tail: crate::text::tail_lines(
                &out.combined
                    .lines()
                    .filter(|l| !l.starts_with('+'))
                    .collect::<Vec<_>>()
                    .join("\n"),
                20,
            ),
        })
    } else {
        commit(engine, &container, job, &record).await
    };
    engine.remove_container(&container).await;
    result.map(|_| record)
}

async fn commit(
    engine: &Engine,
    container: &str,
    job: &Job,
    record: &Pulled,
) -> Result<String, PullError> {
    let mut labels = Engine::labels(Some(&job.platform.docker));
    labels.insert(LABEL_PULL_KEY.into(), job.key.clone());
    labels.insert(LABEL_PULL.into(), record.label());
    let config = crate::engine::Commit {
        labels,
        env: vec![format!("PATH={IMAGE_PATH}")],
        cmd: vec!["sh".into()],
        entrypoint: vec!["/entry-point.sh".into()],
    };
    Ok(engine.commit_config(container, &job.tag, config).await?)
}

/// `guix describe` of the pulled generation in `image`, checked against
/// `pinned`: (the output on one line, the commit it names).
pub async fn describe(
    engine: &Engine,
    platform: &Platform,
    image: &str,
    pinned: &str,
    timeout: Duration,
) -> Result<(String, String), PullError> {
    let mut spec = RunSpec::new(image, format!("{}: guix describe", platform.docker))
        .platform(&platform.docker)
        .timeout(timeout);
    spec.entrypoint = Some(vec![
        "/root/.config/guix/current/bin/guix".into(),
        "describe".into(),
    ]);
    let out = crate::engine::run::run(engine, &spec)
        .await
        .map_err(PullError::Run)?;
    let line = out
        .stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let described = out
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("commit: "))
        .unwrap_or_default()
        .to_string();
    if out.exit_code != 0 || described != pinned {
        return Err(PullError::WrongPin {
            platform: platform.docker.clone(),
            pinned: pinned.to_string(),
            described: if described.is_empty() {
                format!("no commit (exit {})", out.exit_code)
            } else {
                described
            },
            describe: if line.is_empty() { out.tail(5) } else { line },
        });
    }
    Ok((line, described))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_from_a_generation_names_its_release_and_one_from_debian_none() {
        let mut p = Pulled {
            by: By::StandIn,
            commit: "c".repeat(40),
            from: from_generation("v20261129", &"a".repeat(40)),
            describe: String::new(),
            seconds: 0,
        };
        assert_eq!(
            p.from,
            format!("release v20261129's generation {}", "a".repeat(12))
        );
        assert_eq!(p.started_from_release(), Some("v20261129"));
        p.from = "Debian's guix 1.5.0".into();
        assert_eq!(p.started_from_release(), None);
    }
}
