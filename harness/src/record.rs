//! The run's records, shared by the writer (`run`) and every reader (`release`, the tests, the benchmarks): a check's scenario, verdict and outcome, one leg, and report.json (versioned).

use crate::pull;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The scenarios, in the order a leg runs them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// uname -m, guix --version, daemon answers, current system, no daemon left.
    Smoke,
    /// guix pull stays on the pinned commit (offline, with a fixture channel).
    Pin,
    /// The image is the pinned Guix: `guix describe` names the pin, every
    /// usage form runs the pulled guix and guix-daemon, a second `guix pull`
    /// stays on the pin (skipped when the pull stage was).
    Pulled,
    /// armhf readdir EOVERFLOW on overlay, fixed by Guix's cache on tmpfs.
    Tmpfs,
    /// Failed derivations' logs copied, unpacked and printed; the exit code kept.
    Faillog,
    /// Chroot builds work natively and are off under an emulator, as the image chooses.
    Chroot,
    /// The usage forms users type: pulled guix preferred (also after commit),
    /// nested entry points, own exit codes, failures that say why.
    Usage,
    /// The image with nothing passed in: baked daemon flags build a real
    /// builder, commands traced, the trusted keys, `docker run IMAGE` a shell.
    Defaults,
}

impl Scenario {
    pub const ALL: &'static [Scenario] = &[
        Scenario::Smoke,
        Scenario::Pin,
        Scenario::Pulled,
        Scenario::Tmpfs,
        Scenario::Faillog,
        Scenario::Chroot,
        Scenario::Usage,
        Scenario::Defaults,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Smoke => "smoke",
            Scenario::Pin => "pin",
            Scenario::Pulled => "pulled",
            Scenario::Tmpfs => "tmpfs",
            Scenario::Faillog => "faillog",
            Scenario::Chroot => "chroot",
            Scenario::Usage => "usage",
            Scenario::Defaults => "defaults",
        }
    }

    /// Whether it runs the readdir() probe (built once per engine, on the
    /// native base, with the cross compilers).
    pub fn needs_probe(self) -> bool {
        matches!(
            self,
            Scenario::Tmpfs | Scenario::Chroot | Scenario::Defaults
        )
    }
}

/// How a check ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "result", content = "why", rename_all = "kebab-case")]
pub enum Verdict {
    Passed,
    Failed(String),
    Skipped(String),
    /// The emulator itself went down (qemu's "uncaught target signal"), twice:
    /// not a verdict on the image, but no pass either.
    EmulatorCrash(String),
}

impl Verdict {
    /// "passed", "failed", "skipped" or "crashed".
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Failed(_) => "failed",
            Verdict::Skipped(_) => "skipped",
            Verdict::EmulatorCrash(_) => "crashed",
        }
    }

    /// Failed or crashed: the leg does not pass.
    pub fn is_failure(&self) -> bool {
        matches!(self, Verdict::Failed(_) | Verdict::EmulatorCrash(_))
    }
}

/// A check's verdict plus what a person needs to see it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    pub scenario: Scenario,
    pub platform: String,
    pub verdict: Verdict,
    /// Facts observed (key, value), in order.
    pub facts: Vec<(String, String)>,
    /// The tail of the container output.
    pub log_tail: String,
    /// The part of the output that snapshot tests compare (may be empty).
    pub transcript: String,
    /// A container kept for inspection (`harness repro`), if any.
    pub kept_container: Option<String>,

    #[serde(with = "crate::text::secs")]
    pub elapsed: Duration,
    /// The containers the check ran, in order, each with its time (none in
    /// a report before version 5).
    #[serde(default)]
    pub containers: Vec<Timed>,
}

/// A step and how long it took: a container a check ran (start to
/// removal), or a step of a leg's preparation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Timed {
    pub step: String,
    #[serde(with = "crate::text::secs")]
    pub elapsed: Duration,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Passed
    }
}

/// The version of report.json this harness writes and reads (5: each
/// check's `containers`; 4: the run's `tools`; 3: a leg's `runs` became
/// `placement`).
pub const VERSION: u32 = 5;
/// The older versions it still reads (no containers; no tools; version 2's
/// `runs` read as `placement`).
const READS_ALSO: [u32; 3] = [2, 3, 4];
/// The largest report.json a reader accepts.
const MAX_REPORT: u64 = 64 << 20;

/// report.json: what a run did, written by `run` and read by `release`,
/// the tests and the benchmarks through this one type.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunReport {
    pub version: u32,
    /// The guix channel commit channels/channels.scm pinned for the run.
    pub pin: String,
    /// The git commit of the checkout the run used, when it is a git work tree.
    #[serde(default)]
    pub commit: Option<String>,
    /// The scenarios the run was asked for.
    pub scenarios: Vec<Scenario>,
    pub legs: Vec<Leg>,
    /// The emulator helpers and readdir() probes the run used (none in a
    /// report before version 4): a release ships these and no others.
    #[serde(default)]
    pub tools: Vec<Tool>,
}

/// What a tool image is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ToolRole {
    /// The emulator helper that registered the run's binfmt handlers.
    Helper,
    /// The readdir() probes the tmpfs and chroot checks ran.
    Probes,
}

/// An image a run used besides its legs' own, as the run found it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tool {
    pub role: ToolRole,
    /// The engine it was used on (its address).
    pub engine: String,
    /// Its local tag (`guix-matrix-binfmt:amd64`).
    pub image: String,
    /// Its image ID when the engine held it; none when it came from a release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The release it came from instead of an image of the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

impl Tool {
    /// "emulator helper" or "readdir() probes".
    pub fn what(&self) -> &'static str {
        match self.role {
            ToolRole::Helper => "emulator helper",
            ToolRole::Probes => "readdir() probes",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read the report {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path} is not a report of this harness: {message}")]
    Format { path: PathBuf, message: String },
}

impl ReportError {
    pub fn fix(&self) -> String {
        "run the matrix (`harness run --report DIR`), then use DIR/report.json".into()
    }
}

impl RunReport {
    pub fn new(
        pin: &str,
        commit: Option<String>,
        scenarios: &[Scenario],
        legs: &[Leg],
        tools: Vec<Tool>,
    ) -> Self {
        RunReport {
            version: VERSION,
            pin: pin.to_string(),
            commit,
            scenarios: scenarios.to_vec(),
            legs: legs.to_vec(),
            tools,
        }
    }

    /// Reads report.json: a regular file of at most 64 MiB, of this version.
    pub fn read(path: &Path) -> Result<Self, ReportError> {
        use std::io::Read;
        let read = |message: String| ReportError::Read {
            path: path.to_path_buf(),
            message,
        };
        // Opened without blocking (a pipe waits for no writer), refused
        // unless a regular file within the limit.
        let file = crate::paths::regular(path, MAX_REPORT).map_err(|e| read(e.to_string()))?;
        let mut bytes = vec![];
        file.take(MAX_REPORT + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| read(e.to_string()))?;
        if bytes.len() as u64 > MAX_REPORT {
            return Err(read(format!("larger than {} MiB", MAX_REPORT >> 20)));
        }
        let format = |message: String| ReportError::Format {
            path: path.to_path_buf(),
            message,
        };
        let version: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| format(e.to_string()))?;
        match version.get("version").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(VERSION) || READS_ALSO.iter().any(|&r| v == u64::from(r)) => {
            }
            Some(v) => {
                return Err(format(format!(
                    "version {v}, this harness reads version {VERSION}"
                )))
            }
            None => return Err(format("no version (a report of an older harness)".into())),
        }
        let mut report: RunReport =
            serde_json::from_value(version).map_err(|e| format(e.to_string()))?;
        report.version = VERSION;
        Ok(report)
    }

    /// The leg of `platform`, if the run had one.
    pub fn leg(&self, platform: &str) -> Option<&Leg> {
        self.legs.iter().find(|l| l.platform == platform)
    }
}

/// Everything one platform's leg produced.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Leg {
    pub platform: String,
    /// The checkout whose matrix.toml, Dockerfile and scripts the leg used.
    pub checkout: String,
    /// The engine the leg ran on (its address).
    pub engine: String,
    /// How that engine ran the platform, and why: `native (…)`, `qemu-arm (…)`.
    #[serde(alias = "runs")]
    pub placement: String,
    /// "native" or the emulator's fingerprint.
    pub emulator: String,
    pub base: String,
    pub image: String,
    pub image_id: String,
    /// Whether the image was built in this run (false: up to date).
    pub rebuilt: bool,
    /// Where the image came from: "built", "up to date", "reused v…",
    /// "rebuilt from v… (changed: …)", "built cold (…)", "published …".
    pub start: String,
    /// The release the leg's image came from, as the option that fetches
    /// it again pinned (`--from REF@sha256:…`), when it came from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// What the pull stage did (none when the leg failed before it).
    pub pull: Option<pull::Stage>,
    /// Set when the leg failed before its checks could run.
    pub error: Option<String>,
    pub outcomes: Vec<Outcome>,
    #[serde(with = "crate::text::secs")]
    pub prepare_time: Duration,
    /// The preparation's steps as they came (place, base image, Guix layer
    /// and each of its Dockerfile steps, pull, image), each with its time
    /// (none in a report before version 5).
    #[serde(default)]
    pub prepare_steps: Vec<Timed>,
    #[serde(with = "crate::text::secs")]
    pub elapsed: Duration,
}

impl Leg {
    /// A leg that has only been prepared (or failed to be) after `elapsed`.
    pub fn new(platform: &str, image: String, elapsed: Duration) -> Self {
        Leg {
            platform: platform.to_string(),
            checkout: String::new(),
            engine: String::new(),
            placement: String::new(),
            emulator: String::new(),
            base: String::new(),
            image,
            image_id: String::new(),
            rebuilt: false,
            start: String::new(),
            release: None,
            pull: None,
            error: None,
            outcomes: vec![],
            prepare_time: elapsed,
            prepare_steps: vec![],
            elapsed,
        }
    }

    pub fn failed(&self) -> bool {
        self.error.is_some() || self.outcomes.iter().any(|o| o.verdict.is_failure())
    }

    /// Every check ran and passed (none skipped, none failed), and there was one.
    pub fn passed_all(&self) -> bool {
        self.error.is_none()
            && !self.outcomes.is_empty()
            && self.outcomes.iter().all(|o| o.verdict == Verdict::Passed)
    }

    /// No check failed and at least one passed (some may be skipped).
    pub fn passed(&self) -> bool {
        !self.failed() && self.outcomes.iter().any(|o| o.verdict == Verdict::Passed)
    }

    /// "passed", "FAILED" or "passed (n skipped)".
    pub fn result(&self) -> String {
        if self.failed() {
            return "FAILED".into();
        }
        let skipped = self
            .outcomes
            .iter()
            .filter(|o| matches!(o.verdict, Verdict::Skipped(_)))
            .count();
        if skipped > 0 {
            format!("passed ({skipped} skipped)")
        } else {
            "passed".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &serde_json::Value) -> Result<RunReport, ReportError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        std::fs::write(&path, json.to_string()).unwrap();
        RunReport::read(&path)
    }

    /// A leg's `runs` of a version-2 report is read as its placement; a
    /// report of another version is refused, naming both versions.
    #[test]
    fn a_version_2_report_is_read_and_another_is_refused() {
        let mut leg =
            serde_json::to_value(Leg::new("linux/arm/v7", "i".into(), Duration::ZERO)).unwrap();
        let placement = leg.as_object_mut().unwrap().remove("placement").unwrap();
        assert_eq!(placement, "");
        leg["runs"] = "qemu-arm (on an amd64 engine)".into();
        let mut report = serde_json::json!({
            "version": 2, "pin": "abc", "scenarios": [], "legs": [leg],
        });
        let read2 = read(&report).unwrap();
        assert_eq!(read2.version, VERSION);
        assert_eq!(read2.legs[0].placement, "qemu-arm (on an amd64 engine)");
        report["version"] = 1.into();
        let err = read(&report).unwrap_err().to_string();
        assert!(
            err.contains("version 1, this harness reads version 5"),
            "{err}"
        );
    }
}

/// The preparation's top steps, each with the Dockerfile steps under it
/// counted in: `base image 2s, Guix layer 310s, image 9s`.
pub fn prepare_summary(steps: &[Timed]) -> String {
    let mut top: Vec<(String, Duration)> = vec![];
    for s in steps {
        match top.last_mut() {
            Some(last) if s.step.starts_with("Step ") => last.1 += s.elapsed,
            _ => top.push((s.step.clone(), s.elapsed)),
        }
    }
    top.iter()
        .filter(|(_, t)| t.as_secs_f64() >= 0.05)
        .map(|(s, t)| format!("{s} {:.1}s", t.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod prepare_tests {
    use super::*;

    #[test]
    fn dockerfile_steps_count_into_the_step_above_them() {
        let t = |step: &str, secs: u64| Timed {
            step: step.into(),
            elapsed: Duration::from_secs(secs),
        };
        let steps = [
            t("place", 0),
            t("base image", 2),
            t("Guix layer", 1),
            t("Step 1/3 : FROM x", 0),
            t("Step 2/3 : RUN apt-get install guix", 300),
            t("Step 3/3 : LABEL a", 9),
            t("image", 9),
        ];
        assert_eq!(
            prepare_summary(&steps),
            "base image 2.0s, Guix layer 310.0s, image 9.0s"
        );
    }
}
