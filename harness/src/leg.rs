//! One leg (prepare a platform, run its checks, within a budget) and the scheduler that runs many.

use crate::harness::Harness;
use crate::matrix::Platform;
use crate::report::Leg;
use crate::scenarios::{self, Scenario};
use futures::StreamExt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a caller sees of the legs as they go (progress bars, log lines, a report).
pub trait Watch: Sync {
    /// A leg of `platform` entered `step`.
    fn step(&self, platform: &Platform, step: &str);
    /// A leg ended (passed, failed or timed out).
    fn finished(&self, _leg: &Leg) {}
}

/// A watch that sees nothing.
pub struct Quiet;

impl Watch for Quiet {
    fn step(&self, _: &Platform, _: &str) {}
}

/// Preparing takes a few steps and each check one: the leg's budget is that
/// many step timeouts (each already scaled by the platform's slowdown).
pub fn budget(h: &Harness, platform: &Platform, checks: usize) -> (Duration, u32) {
    let steps = 4 + checks as u32;
    (h.step_timeout(platform) * steps, steps)
}

/// Prepares one platform and runs `scenarios` on it within the platform's leg
/// budget; never fails, the leg says what broke (and in which step).
pub async fn leg(
    h: &Harness,
    platform: &Platform,
    scenarios: &[Scenario],
    watch: &dyn Watch,
) -> Leg {
    let started = Instant::now();
    let step = Mutex::new(String::from("start"));
    let track = |s: &str| {
        *step.lock().expect("step lock") = s.to_string();
        watch.step(platform, s);
    };
    let (limit, steps) = budget(h, platform, scenarios.len());
    let leg = match tokio::time::timeout(limit, body(h, platform, scenarios, &track)).await {
        Ok(leg) => leg,
        Err(_) => {
            let removed = h.engine.remove_tracked_for(&platform.docker).await;
            let step = step.lock().expect("step lock").clone();
            let mut leg = Leg::new(&platform.docker, h.image_tag(platform), started.elapsed());
            leg.error = Some(format!(
                "{}: the leg timed out after {}s during `{step}` (budget: step_timeout_secs × slowdown {} × {steps} steps); removed {removed} container(s)",
                platform.docker,
                started.elapsed().as_secs(),
                platform.slowdown,
            ));
            leg
        }
    };
    watch.finished(&leg);
    leg
}

async fn body(
    h: &Harness,
    platform: &Platform,
    scenarios: &[Scenario],
    progress: &(dyn Fn(&str) + Sync),
) -> Leg {
    let started = Instant::now();
    let prepared = h.prepare_with(platform, progress).await;
    let mut leg = Leg::new(&platform.docker, h.image_tag(platform), started.elapsed());
    leg.emulator = "native".into();
    let p = match prepared {
        Ok(p) => p,
        Err(e) => {
            leg.error = Some(e.report());
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
    leg.image = p.image.tag.clone();
    leg.image_id = p.image.id.clone();
    leg.rebuilt = p.image.rebuilt;
    for s in scenarios {
        progress(&format!("check {}", s.name()));
        leg.outcomes.push(scenarios::run_one(h, &p, *s).await);
    }
    leg.elapsed = started.elapsed();
    leg
}

/// Runs the legs of `platforms`, `jobs` at a time, and returns them in the
/// matrix's order; one failing leg never stops the others.
pub async fn run_legs(
    h: &Harness,
    platforms: &[Platform],
    scenarios: &[Scenario],
    jobs: usize,
    watch: &dyn Watch,
) -> Vec<Leg> {
    let mut legs: Vec<Leg> = futures::stream::iter(platforms.iter())
        .map(|p| leg(h, p, scenarios, watch))
        .buffer_unordered(jobs.max(1))
        .collect()
        .await;
    legs.sort_by_key(|l| platforms.iter().position(|p| p.docker == l.platform));
    legs
}
