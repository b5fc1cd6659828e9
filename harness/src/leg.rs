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
            leg.checkout = h.options.checkout.root.display().to_string();
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
    leg.checkout = h.options.checkout.root.display().to_string();
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
    leg.start = p.start.to_string();
    for s in scenarios {
        progress(&format!("check {}", s.name()));
        leg.outcomes.push(scenarios::run_one(h, &p, *s).await);
    }
    leg.elapsed = started.elapsed();
    leg
}

/// Runs the legs of `platforms`, `jobs` at a time, the slowest first (the
/// matrix's `slowdown`: longest legs first packs them best), and returns
/// them in the matrix's order; one failing leg never stops the others.
pub async fn run_legs(
    h: &Harness,
    platforms: &[Platform],
    scenarios: &[Scenario],
    jobs: usize,
    watch: &dyn Watch,
) -> Vec<Leg> {
    let mut order: Vec<&Platform> = platforms.iter().collect();
    order.sort_by(|a, b| b.slowdown.total_cmp(&a.slowdown));
    let mut legs: Vec<Leg> = futures::stream::iter(order)
        .map(|p| leg(h, p, scenarios, watch))
        .buffer_unordered(jobs.max(1))
        .collect()
        .await;
    legs.sort_by_key(|l| platforms.iter().position(|p| p.docker == l.platform));
    legs
}

/// How well `jobs` lanes were used: the legs' own times, and the best
/// wall time any order could reach (the longest leg, or the total shared
/// evenly), to set against the wall time measured.
pub fn packing(legs: &[Leg], jobs: usize) -> (Duration, Duration) {
    let total: Duration = legs.iter().map(|l| l.elapsed).sum();
    let longest = legs.iter().map(|l| l.elapsed).max().unwrap_or_default();
    let even = total / jobs.max(1).min(legs.len().max(1)) as u32;
    (total, longest.max(even))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ideal_packing_is_the_longest_leg_or_the_even_share() {
        let leg = |secs| {
            let mut l = Leg::new("p", String::new(), Duration::ZERO);
            l.elapsed = Duration::from_secs(secs);
            l
        };
        let legs = [leg(10), leg(10), leg(40), leg(20)];
        assert_eq!(
            packing(&legs, 2),
            (Duration::from_secs(80), Duration::from_secs(40))
        );
        assert_eq!(
            packing(&legs[..2], 2),
            (Duration::from_secs(20), Duration::from_secs(10))
        );
        assert_eq!(packing(&legs, 1).1, Duration::from_secs(80));
    }
}
