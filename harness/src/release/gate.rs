//! What may ship: the platforms a run's report proved, each checked against the engine (the image the report is about), the tree (its content hash) and the pin (its pull).

use super::ReleaseError;
use crate::engine::Engine;
use crate::matrix::{Matrix, Platform};
use crate::names;
use crate::names::LABEL_INPUTS;
use crate::pull::{By, Pulled};
use crate::record::{RunReport, Scenario, Tool};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One platform's image that passed every check of a run.
#[derive(Debug, Clone)]
pub struct Proved {
    pub platform: Platform,
    /// The local tag (`guix-matrix:arm-v7`).
    pub image: String,
    pub id: String,
    /// The base the image was built on (`guix-matrix-base:arm-v7`), when the
    /// engine still has it: released beside the image, so that a build from
    /// this release reuses the image's layers.
    pub base: Option<String>,
    /// The emulator helper of this tree (`guix-matrix-binfmt:amd64`), on
    /// the platform the release is made on: shipped beside its image.
    pub helper: Option<String>,
    /// Its real `guix pull` of the pin (None: shipped unpulled, as asked).
    pub pulled: Option<Pulled>,
    /// The image ID each of those tags had when checked: the export ships
    /// these images or nothing, whatever a tag points to by then.
    pub ids: HashMap<String, String>,
    /// When its Debian base's packages were current (the image's label).
    pub base_date: Option<i64>,
}

impl Proved {
    /// `image` (and `base`) as the engine has them now, taken as proved
    /// without a report: for callers that vouch for them themselves (tests).
    pub async fn inspect(
        engine: &Engine,
        platform: &Platform,
        image: &str,
        base: Option<&str>,
    ) -> Result<Proved, ReleaseError> {
        let mut ids = HashMap::new();
        for name in std::iter::once(image).chain(base) {
            let local = engine
                .local_image(name)
                .await?
                .ok_or_else(|| ReleaseError::Missing {
                    platform: platform.docker.clone(),
                    image: name.to_string(),
                })?;
            ids.insert(name.to_string(), local.id);
        }
        Ok(Proved {
            platform: platform.clone(),
            image: image.to_string(),
            id: ids[image].clone(),
            base: base.map(str::to_string),
            helper: None,
            pulled: None,
            base_date: None,
            ids,
        })
    }
}

/// What the reports prove: the platforms that passed, and the tools
/// (emulator helpers, readdir() probes) their runs used.
#[derive(Debug, Clone, Default)]
pub struct Proving {
    pub platforms: Vec<Proved>,
    /// Each tool with the report that names it.
    pub tools: Vec<(PathBuf, Tool)>,
}

/// What the release asks of the report and the images.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gate {
    /// Release nothing unless every platform of the matrix passed.
    pub require_all: bool,
    /// Ship images without a real `guix pull` of the pin (Debian's guix, or
    /// the offline stand-in's), said so in the index's annotations.
    pub unpulled: bool,
}

/// The platforms of `reports` (`harness run` report.json files: one run, or
/// one per platform of a fanned-out release) whose legs all passed, each
/// checked against the engine, the tree and the pin: the image is the one
/// the report is about, it is what this tree builds, and it is the Guix of
/// the checkout's pin, pulled by `guix pull` (unless `gate.unpulled`).
pub async fn proved(
    engine: &Engine,
    matrix: &Matrix,
    root: &Path,
    reports: &[PathBuf],
    gate: Gate,
) -> Result<Proving, ReleaseError> {
    let pin = crate::pin::read(&root.join("channels/channels.scm"))
        .map_err(|e| ReleaseError::Pin(e.to_string()))?;
    let commit = crate::paths::Checkout::at(root)
        .ok()
        .and_then(|c| c.commit());
    let mut proving = vec![];
    for path in reports {
        let run = RunReport::read(path)?;
        if gate.require_all {
            every_check(path, &run, commit.as_deref())?;
        }
        if run.pin != pin {
            return Err(ReleaseError::OtherRun {
                path: path.clone(),
                why: format!(
                    "it ran with pin {}, the checkout pins {}",
                    short(&run.pin),
                    short(&pin)
                ),
            });
        }
        proving.push((path.clone(), run));
    }
    one_report_each(&proving)?;
    let report = reports
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let report = Path::new(&report);
    // --require-all: every check passed (none skipped); else no failure.
    let passed: HashMap<&str, &str> = proving
        .iter()
        .flat_map(|(_, run)| &run.legs)
        .filter(|l| {
            if gate.require_all {
                l.passed_all()
            } else {
                l.passed()
            }
        })
        .map(|l| (l.platform.as_str(), l.image_id.as_str()))
        .collect();
    let missing: Vec<&str> = matrix
        .platforms
        .iter()
        .filter(|p| !passed.contains_key(p.docker.as_str()))
        .map(|p| p.docker.as_str())
        .collect();
    if gate.require_all && !missing.is_empty() {
        let why = |platform: &str| {
            let leg = proving.iter().find_map(|(_, r)| r.leg(platform));
            let not: Vec<String> = leg
                .map(|l| {
                    l.outcomes
                        .iter()
                        .filter(|o| !o.passed())
                        .map(|o| format!("{} {}", o.scenario.name(), o.verdict.word()))
                        .collect()
                })
                .unwrap_or_default();
            match (leg, not.is_empty()) {
                (None, _) => format!("{platform} (not run)"),
                (Some(l), _) if l.error.is_some() => format!("{platform} (failed to prepare)"),
                (Some(_), _) => format!("{platform} ({})", not.join(", ")),
            }
        };
        return Err(ReleaseError::NotAll {
            path: report.to_path_buf(),
            missing: missing
                .iter()
                .map(|p| why(p))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let mut out = vec![];
    for p in &matrix.platforms {
        if let Some(id) = passed.get(p.docker.as_str()) {
            out.push(check(engine, matrix, root, p, id, &pin, gate).await?);
        }
    }
    if out.is_empty() {
        return Err(ReleaseError::NothingPassed {
            path: report.to_path_buf(),
        });
    }
    for p in missing {
        tracing::warn!(
            "{p}: not released (it did not pass every check in {})",
            report.display()
        );
    }
    let tools = proving
        .into_iter()
        .flat_map(|(path, run)| run.tools.into_iter().map(move |t| (path.clone(), t)))
        .collect();
    Ok(Proving {
        platforms: out,
        tools,
    })
}

/// Each platform passed in one report at most: a release of reports from
/// several prove jobs takes each image from its own job's report, and no
/// job's report can stand in for another platform's.
fn one_report_each(proving: &[(PathBuf, RunReport)]) -> Result<(), ReleaseError> {
    let mut seen: HashMap<&str, &Path> = HashMap::new();
    for (path, run) in proving {
        for leg in run.legs.iter().filter(|l| l.passed()) {
            if let Some(first) = seen.insert(leg.platform.as_str(), path) {
                return Err(ReleaseError::TwoReports {
                    platform: leg.platform.clone(),
                    first: first.to_path_buf(),
                    second: path.clone(),
                });
            }
        }
    }
    Ok(())
}

/// `--require-all`: the run was asked for every scenario of the harness,
/// on the checkout's own commit (when both are known).
fn every_check(path: &Path, run: &RunReport, commit: Option<&str>) -> Result<(), ReleaseError> {
    let not_run: Vec<&str> = Scenario::ALL
        .iter()
        .filter(|s| !run.scenarios.contains(s))
        .map(|s| s.name())
        .collect();
    if !not_run.is_empty() {
        return Err(ReleaseError::OtherRun {
            path: path.to_path_buf(),
            why: format!(
                "--require-all needs every check, and it did not run {}",
                not_run.join(", ")
            ),
        });
    }
    match (commit, run.commit.as_deref()) {
        (Some(here), Some(there)) if here != there => Err(ReleaseError::OtherRun {
            path: path.to_path_buf(),
            why: format!(
                "it ran on commit {}, the checkout is at {}",
                short(there),
                short(here)
            ),
        }),
        _ => Ok(()),
    }
}

async fn check(
    engine: &Engine,
    matrix: &Matrix,
    root: &Path,
    p: &Platform,
    reported: &str,
    pin: &str,
    gate: Gate,
) -> Result<Proved, ReleaseError> {
    let image = names::image(&matrix.defaults, p);
    let local = engine
        .local_image(&image)
        .await?
        .ok_or_else(|| ReleaseError::Missing {
            platform: p.docker.clone(),
            image: image.clone(),
        })?;
    if local.id != reported {
        return Err(ReleaseError::Foreign {
            platform: p.docker.clone(),
            image,
            reported: short(reported),
            local: short(&local.id),
        });
    }
    let pulled = Pulled::of(&local.labels).map_err(|why| ReleaseError::NotPulled {
        platform: p.docker.clone(),
        why,
    })?;
    match &pulled {
        Some(got) if got.commit != pin => {
            return Err(ReleaseError::OtherPin {
                platform: p.docker.clone(),
                image: image.clone(),
                pulled: got.commit.clone(),
                pin: pin.to_string(),
            })
        }
        Some(got) if got.by == By::GuixPull => {}
        _ if gate.unpulled => {}
        Some(got) => {
            return Err(ReleaseError::NotPulled {
                platform: p.docker.clone(),
                why: format!(
                    "{image} was pulled to {} by the offline {}, not by guix pull",
                    short(&got.commit),
                    got.by
                ),
            })
        }
        None => {
            return Err(ReleaseError::NotPulled {
                platform: p.docker.clone(),
                why: format!("{image} carries no pull: it is Debian's guix, and every user's CI job would pay for its own `guix pull`"),
            })
        }
    }
    // The base is released only if it is this image's own base (its layers
    // are the bottom of the image's): another base seeds no build cache.
    let base_tag = names::base(&matrix.defaults, p);
    let mut ids = HashMap::from([(image.clone(), local.id.clone())]);
    let base = engine
        .local_image(&base_tag)
        .await?
        .filter(|b| !b.layers.is_empty() && local.layers.starts_with(&b.layers))
        .map(|b| {
            ids.insert(base_tag.clone(), b.id);
            base_tag
        });
    if base.is_none() {
        tracing::warn!("{}: the engine no longer has the base {image} was built on; released without it (a build from this release rebuilds every layer)", p.docker);
    }
    let by = pulled.as_ref().map(|got| got.by);
    let tree = crate::recipe::inputs(matrix, root, p, by)?.hash;
    let label = local.labels.get(LABEL_INPUTS).cloned().unwrap_or_default();
    if label != tree {
        return Err(ReleaseError::Stale {
            platform: p.docker.clone(),
            image,
            label: short(&label),
            tree: short(&tree),
        });
    }
    let base_date = crate::base::date(&local);
    Ok(Proved {
        platform: p.clone(),
        image,
        id: local.id,
        base,
        helper: None,
        pulled: pulled.filter(|got| got.by == By::GuixPull),
        base_date,
        ids,
    })
}

pub(super) fn short(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}
