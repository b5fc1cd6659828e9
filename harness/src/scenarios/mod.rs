//! The checks the image exists for, one module each, all returning an `Outcome`.

pub mod chroot;
pub mod defaults;
pub mod faillog;
pub mod pin;
pub mod pulled;
pub mod smoke;
pub mod tmpfs;
pub mod usage;

use crate::engine::run::{self, RunOutput, RunSpec};
use crate::error::Error;
use crate::pipeline::{Pipeline, Prepared};
use std::time::Instant;

pub use crate::record::{Outcome, Scenario, Verdict};

/// The line where qemu-user reports that the emulated program died of a
/// signal, if `text` has one.
pub fn emulator_crash(text: &str) -> Option<String> {
    text.lines()
        .find(|l| {
            l.contains("qemu: uncaught target signal")
                || l.contains("qemu: unhandled CPU exception")
        })
        .map(|l| l.trim().to_string())
}

/// Collects facts and failed expectations while a check runs.
pub struct Check {
    scenario: Scenario,
    platform: String,
    started: Instant,
    facts: Vec<(String, String)>,
    failures: Vec<String>,
    log_tail: String,
    transcript: String,
    kept_container: Option<String>,
    skipped: Option<String>,
    containers: Vec<crate::record::Timed>,
}

impl Check {
    pub fn new(scenario: Scenario, platform: &str) -> Self {
        Check {
            scenario,
            platform: platform.to_string(),
            started: Instant::now(),
            facts: vec![],
            failures: vec![],
            log_tail: String::new(),
            transcript: String::new(),
            kept_container: None,
            skipped: None,
            containers: vec![],
        }
    }

    pub fn fact(&mut self, key: &str, value: impl ToString) {
        self.facts.push((key.to_string(), value.to_string()));
    }

    /// Records that `what` ran on the run's shared platform `on`, not here:
    /// this check then passes only if that one does (`settle_shared`).
    pub fn shared_on(&mut self, what: &str, on: &str) {
        self.fact(SHARED_FACT, on);
        self.fact(what, format!("run on {on} for this run"));
    }

    /// Records a failure unless `ok`.
    pub fn expect(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(what());
        }
    }

    pub fn output(&mut self, out: &RunOutput) {
        self.log_tail = out.tail(40);
        if out.kept_container.is_some() {
            self.kept_container.clone_from(&out.kept_container);
        }
    }

    /// The part of the output snapshot tests compare.
    pub fn transcript(&mut self, text: impl Into<String>) {
        self.transcript = text.into();
    }

    /// Ends the check as skipped (with why) unless something failed.
    pub fn skip_because(&mut self, why: impl Into<String>) {
        self.skipped = Some(why.into());
    }

    pub fn finish(self) -> Outcome {
        let verdict = if !self.failures.is_empty() {
            Verdict::Failed(self.failures.join("; "))
        } else if let Some(why) = self.skipped.clone() {
            Verdict::Skipped(why)
        } else {
            Verdict::Passed
        };
        self.outcome(verdict)
    }

    pub fn error(self, e: &dyn std::fmt::Display) -> Outcome {
        self.outcome(Verdict::Failed(e.to_string()))
    }

    fn outcome(self, verdict: Verdict) -> Outcome {
        Outcome {
            scenario: self.scenario,
            platform: self.platform,
            verdict,
            facts: self.facts,
            log_tail: self.log_tail,
            transcript: self.transcript,
            kept_container: self.kept_container,
            elapsed: self.started.elapsed(),
            containers: self.containers,
        }
    }
}

/// `key=value` lines of a fixture's output.
pub fn kv(text: &str, key: &str) -> Option<String> {
    let prefix = format!("{key}=");
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
}

/// The checkout's fixtures/ files, as a tar to upload to `/` (they land in /fixtures).
pub fn fixtures_tar(h: &Pipeline, names: &[&str]) -> Result<Vec<u8>, Error> {
    fixtures_tar_with(h, names, &[])
}

/// Like `fixtures_tar`, plus generated files (name, bytes) under /fixtures.
pub fn fixtures_tar_with(
    h: &Pipeline,
    names: &[&str],
    extra: &[(&str, &[u8])],
) -> Result<Vec<u8>, Error> {
    let dir = h.options.checkout.fixtures();
    let files: Vec<(String, Vec<u8>)> = names
        .iter()
        .map(|n| {
            std::fs::read(dir.join(n))
                .map(|b| (format!("fixtures/{n}"), b))
                .map_err(|source| Error::Fixture {
                    path: dir.join(n),
                    source,
                })
        })
        .collect::<Result<_, _>>()?;
    let mut files = files;
    files.extend(
        extra
            .iter()
            .map(|(n, b)| (format!("fixtures/{n}"), b.to_vec())),
    );
    let entries: Vec<(&str, u32, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), 0o755, b.as_slice()))
        .collect();
    Ok(run::tar_of(&entries))
}

/// The static readdir() probe built for this platform (matrix.toml `probe_cc`).
pub async fn probe_for(h: &Pipeline, p: &Prepared) -> Result<Vec<u8>, Error> {
    let cc = p
        .platform
        .probe_cc
        .as_deref()
        .ok_or_else(|| Error::NoProbeCc {
            platform: p.platform.docker.clone(),
        })?;
    h.probes()
        .await?
        .get(cc)
        .cloned()
        .ok_or_else(|| Error::NoProbe { cc: cc.to_string() })
}

/// A run of the platform's image with the scenario's defaults: guix-daemon's
/// privileges, no network, the platform's timeout.
/// What `guix --version` says in the image: the pulled commit, else Debian's version.
pub fn guix_version_line(h: &Pipeline, p: &Prepared) -> String {
    match p.pull.pulled() {
        Some(pulled) => format!("guix (GNU Guix) {}", pulled.commit),
        None => format!("guix (GNU Guix) {}", h.matrix.defaults.guix_version),
    }
}

/// The platform that ran this run's platform-independent steps when it is
/// not `p`'s (then `p`'s leg skips them and names it).
pub fn shared_elsewhere<'a>(h: &'a Pipeline, p: &Prepared) -> Option<&'a str> {
    h.options
        .shared_steps
        .as_deref()
        .filter(|on| *on != p.platform.docker)
}

/// The fact naming the platform that ran a check's platform-independent steps.
pub const SHARED_FACT: &str = "shared-on";

/// A check whose platform-independent steps ran on another leg passes only
/// when that leg's same check passed: otherwise it fails, saying so.
pub fn settle_shared(legs: &mut [crate::record::Leg]) {
    let passed: std::collections::HashSet<(String, Scenario)> = legs
        .iter()
        .flat_map(|l| {
            l.outcomes
                .iter()
                .filter(|o| o.passed())
                .map(|o| (l.platform.clone(), o.scenario))
        })
        .collect();
    for o in legs.iter_mut().flat_map(|l| l.outcomes.iter_mut()) {
        let Some((_, on)) = o.facts.iter().find(|(k, _)| k == SHARED_FACT) else {
            continue;
        };
        if o.passed() && !passed.contains(&(on.clone(), o.scenario)) {
            o.verdict = Verdict::Failed(format!(
                "its platform-independent steps ran on {on} for this run, where {} did not pass (see that leg; --no-shared-steps runs them on each)",
                o.scenario.name()
            ));
        }
    }
}

/// The variable that tells a fixture which platform ran its
/// platform-independent steps (unset: run them here).
pub const SHARED_ON: &str = "GUIX_MATRIX_FIXTURE_SHARED_ON";

pub fn spec(h: &Pipeline, p: &Prepared, step: &str) -> RunSpec {
    let spec = spec_here(h, p, step);
    match shared_elsewhere(h, p) {
        Some(on) => spec.env(format!("{SHARED_ON}={on}")),
        None => spec,
    }
}

fn spec_here(h: &Pipeline, p: &Prepared, step: &str) -> RunSpec {
    RunSpec::new(
        p.image.tag.clone(),
        format!("{}: {step}", p.platform.docker),
    )
    .platform(&p.platform.docker)
    .timeout(h.step_timeout(&p.placement))
    .with_options(
        h.options.echo.then(|| format!("[{}]", p.platform.slug())),
        h.options.keep,
    )
}

/// Runs one scenario on a prepared platform; an error ends it as failed. A
/// failure that shows an emulator crash is retried once (only those are); a
/// second crash is reported as `EmulatorCrash`, not as a failed check.
pub async fn run_one(h: &Pipeline, p: &Prepared, scenario: Scenario) -> Outcome {
    retry_on_crash(&p.platform.docker, scenario.name(), || {
        attempt(h, p, scenario)
    })
    .await
}

/// Runs `attempt`; when it fails with an emulator crash in its log, runs it
/// once more, and reports a second crash as `EmulatorCrash`.
pub async fn retry_on_crash<F, Fut>(platform: &str, name: &str, mut attempt: F) -> Outcome
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    let first = attempt().await;
    let Some(line) = crash_of(&first) else {
        return first;
    };
    tracing::warn!("{platform} {name}: emulator crash ({line}); retrying once");
    let mut second = attempt().await;
    second.facts.push(("retried-after".into(), line));
    if let Some(again) = crash_of(&second) {
        second.verdict = Verdict::EmulatorCrash(format!(
            "{platform}: the emulator crashed twice: {again} (not a failed check; see the log tail and `harness doctor`)"
        ));
    }
    second
}

fn crash_of(o: &Outcome) -> Option<String> {
    if matches!(o.verdict, Verdict::Failed(_)) {
        emulator_crash(&o.log_tail)
    } else {
        None
    }
}

async fn attempt(h: &Pipeline, p: &Prepared, scenario: Scenario) -> Outcome {
    let mut c = Check::new(scenario, &p.platform.docker);
    let result = match scenario {
        Scenario::Smoke => smoke::body(h, p, &mut c).await,
        Scenario::Pin => pin::body(h, p, &mut c).await,
        Scenario::Pulled => pulled::body(h, p, &mut c).await,
        Scenario::Tmpfs => tmpfs::body(h, p, &mut c).await,
        Scenario::Faillog => faillog::body(h, p, &mut c).await,
        Scenario::Chroot => chroot::body(h, p, &mut c).await,
        Scenario::Usage => usage::body(h, p, &mut c).await,
        Scenario::Defaults => defaults::body(h, p, &mut c).await,
    };
    match result {
        Ok(()) => c.finish(),
        Err(e) => c.error(&e.report()),
    }
}

/// Runs `spec` in the engine and records its output in the check. A check
/// keeps one container (its last, which `repro` points at): one it kept
/// before is removed, so a check of several containers leaves no other.
pub async fn run_fixture(h: &Pipeline, c: &mut Check, spec: &RunSpec) -> Result<RunOutput, Error> {
    let started = Instant::now();
    let result = run::run(&h.engine, spec).await;
    c.containers.push(crate::record::Timed {
        step: spec
            .step
            .strip_prefix(&format!("{}: ", c.platform))
            .unwrap_or(&spec.step)
            .to_string(),
        elapsed: started.elapsed(),
    });
    let out = result?;
    let before = c.kept_container.clone();
    c.output(&out);
    if let (Some(before), Some(now)) = (before, &out.kept_container) {
        if before != *now {
            h.engine.remove_container(&before).await;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_whose_shared_steps_failed_elsewhere_fails_too() {
        use crate::record::Leg;
        let leg = |platform: &str, shared: Option<&str>, passed: bool| {
            let mut l = Leg::new(platform, "img".into(), std::time::Duration::ZERO);
            let mut c = Check::new(Scenario::Pin, platform);
            if let Some(on) = shared {
                c.shared_on("url-pull", on);
            }
            c.expect(passed, || "broken".into());
            l.outcomes.push(c.finish());
            l
        };
        let mut legs = vec![
            leg("linux/amd64", None, true),
            leg("linux/riscv64", Some("linux/amd64"), true),
        ];
        settle_shared(&mut legs);
        assert!(
            legs[1].outcomes[0].passed(),
            "{:?}",
            legs[1].outcomes[0].verdict
        );
        let mut legs = vec![
            leg("linux/amd64", None, false),
            leg("linux/riscv64", Some("linux/amd64"), true),
        ];
        settle_shared(&mut legs);
        match &legs[1].outcomes[0].verdict {
            Verdict::Failed(why) => assert!(
                why.contains("ran on linux/amd64 for this run, where pin did not pass"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
        // Its own leg missing (failed before its checks) is no pass either.
        let mut legs = vec![leg("linux/riscv64", Some("linux/amd64"), true)];
        settle_shared(&mut legs);
        assert!(!legs[0].outcomes[0].passed());
    }

    #[test]
    fn qemu_crash_lines_are_recognised() {
        let log = "+ guix repl x.scm\nqemu: uncaught target signal 11 (Segmentation fault) - core dumped\n";
        assert_eq!(
            emulator_crash(log).as_deref(),
            Some("qemu: uncaught target signal 11 (Segmentation fault) - core dumped")
        );
        assert_eq!(emulator_crash("guix build: error: build of x failed"), None);
    }
}
