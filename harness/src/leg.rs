//! One leg (prepare a platform, run its checks, within a budget) and the scheduler that runs many, on one engine or several.

use crate::fleet::Fleet;
use crate::matrix::Platform;
use crate::pipeline::Pipeline;
use crate::placement::{self, Placement};
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
/// many step timeouts (each scaled by the slowdown where the leg runs).
pub fn budget(h: &Pipeline, placement: &Placement, checks: usize) -> (Duration, u32) {
    let steps = 4 + checks as u32;
    (h.step_timeout(placement) * steps, steps)
}

/// A leg that ended without its checks (not placed, not prepared, or out of time), on `h`'s engine.
fn failed(h: &Pipeline, platform: &Platform, error: String, elapsed: Duration) -> Leg {
    let mut leg = Leg::new(&platform.docker, h.image_tag(platform), elapsed);
    leg.checkout = h.options.checkout.root.display().to_string();
    leg.engine = h.engine.url.clone();
    // Which engine, when there may be several: the first thing to look at.
    leg.error = Some(format!("engine {}: {error}", h.engine.url));
    leg.release = h.reproduce_with();
    leg
}

/// Prepares one platform and runs `scenarios` on it within the platform's leg
/// budget; never fails, the leg says what broke (and in which step).
pub async fn leg(
    h: &Pipeline,
    platform: &Platform,
    scenarios: &[Scenario],
    watch: &dyn Watch,
) -> Leg {
    leg_in(h, platform, scenarios, watch, None).await
}

/// A leg whose checks wait for one of the engine's check lanes, when it
/// shares them (the leg after them prepares meanwhile).
async fn leg_in(
    h: &Pipeline,
    platform: &Platform,
    scenarios: &[Scenario],
    watch: &dyn Watch,
    lanes: Option<&tokio::sync::Semaphore>,
) -> Leg {
    let started = Instant::now();
    let step = Mutex::new(String::from("start"));
    let steps: Mutex<Vec<(String, Instant)>> = Mutex::default();
    let track = |s: &str| {
        *step.lock().expect("step lock") = s.to_string();
        steps
            .lock()
            .expect("steps lock")
            .push((s.to_string(), Instant::now()));
        watch.step(platform, s);
    };
    track("place");
    let leg = match h.placement(platform).await {
        Err(e) => failed(h, platform, e.report(), started.elapsed()),
        Ok(placement) => {
            let (limit, steps) = budget(h, &placement, scenarios.len());
            let body = body(h, platform, scenarios, &track, lanes);
            match tokio::time::timeout(limit, body).await {
                Ok(leg) => leg,
                Err(_) => {
                    let removed = h.engine.remove_tracked_for(&platform.docker).await;
                    let step = step.lock().expect("step lock").clone();
                    let error = format!(
                        "{}: the leg timed out after {}s during `{step}` (budget: step_timeout_secs × slowdown {} ({}) × {steps} steps); removed {removed} container(s)",
                        platform.docker,
                        started.elapsed().as_secs(),
                        placement.slowdown,
                        placement.summary(),
                    );
                    failed(h, platform, error, started.elapsed())
                }
            }
        }
    };
    let mut leg = leg;
    leg.prepare_steps = prepare_steps(&steps.lock().expect("steps lock"));
    watch.finished(&leg);
    leg
}

/// The steps before the first check, each lasting until the next began.
fn prepare_steps(steps: &[(String, Instant)]) -> Vec<crate::record::Timed> {
    let end = steps
        .iter()
        .position(|(s, _)| s.starts_with("check "))
        .unwrap_or(steps.len());
    let until = steps.get(end).map_or_else(Instant::now, |(_, t)| *t);
    steps[..end]
        .iter()
        .enumerate()
        .map(|(i, (step, t))| crate::record::Timed {
            step: step.clone(),
            elapsed: steps[..end]
                .get(i + 1)
                .map_or(until, |(_, next)| *next)
                .saturating_duration_since(*t),
        })
        .collect()
}

async fn body(
    h: &Pipeline,
    platform: &Platform,
    scenarios: &[Scenario],
    progress: &(dyn Fn(&str) + Sync),
    lanes: Option<&tokio::sync::Semaphore>,
) -> Leg {
    let started = Instant::now();
    let prepared = h.prepare_with(platform, progress).await;
    let p = match prepared {
        Ok(p) => p,
        Err(e) => return failed(h, platform, e.report(), started.elapsed()),
    };
    let mut leg = Leg::new(&platform.docker, h.image_tag(platform), started.elapsed());
    leg.checkout = h.options.checkout.root.display().to_string();
    leg.engine = h.engine.url.clone();
    leg.placement = p.placement.summary();
    leg.emulator = p
        .emulator
        .as_ref()
        .map_or_else(|| "native".into(), |hd| hd.fingerprint());
    leg.base = format!(
        "{} ({}; {})",
        p.base.reference, p.base.origin, p.base.provenance
    );
    leg.image = p.image.tag.clone();
    leg.image_id = p.image.id.clone();
    leg.rebuilt = p.image.rebuilt;
    leg.start = p.start.to_string();
    leg.release = h.reproduce_with();
    leg.pull = Some(p.pull.clone());
    // The wait is shown as a step, and is no part of the leg's time.
    let waiting = Instant::now();
    let _lane = match lanes {
        Some(lanes) => {
            progress("wait for a check lane");
            Some(
                lanes
                    .acquire()
                    .await
                    .expect("the check lanes are never closed"),
            )
        }
        None => None,
    };
    let waited = waiting.elapsed();
    for s in scenarios {
        progress(&format!("check {}", s.name()));
        leg.outcomes.push(scenarios::run_one(h, &p, *s).await);
    }
    leg.elapsed = started.elapsed().saturating_sub(waited);
    leg
}

/// Runs the legs of `platforms`, each on its engine, `jobs` checking at a
/// time per engine and one more leg preparing meanwhile (a cold build
/// waits on the mirror and the disk for part of its time: the next
/// platform's build fills that) and the readdir probes built from the
/// start when a check needs them, every engine at once, the slowest first
/// on each (emulated legs: longest legs first packs them best), and
/// returns them in the matrix's order; one failing leg, or engine, never
/// stops the others.
pub async fn run_legs(
    fleet: &Fleet,
    platforms: &[Platform],
    scenarios: &[Scenario],
    jobs: usize,
    watch: &dyn Watch,
) -> Vec<Leg> {
    let lanes = fleet.all().iter().map(|h| async move {
        let mut order: Vec<&Platform> = platforms
            .iter()
            .filter(|p| std::ptr::eq(fleet.pipeline(p), h))
            .collect();
        let arch = h.arch().await.cloned().unwrap_or_default();
        let slowdown = |p: &Platform| placement::expected_slowdown(p, &arch);
        order.sort_by(|a, b| slowdown(b).total_cmp(&slowdown(a)));
        let lanes = tokio::sync::Semaphore::new(jobs.max(1));
        let lanes = &lanes;
        let needed = !order.is_empty() && scenarios.iter().any(|s| s.needs_probe());
        let legs = futures::stream::iter(order)
            .map(|p| leg_in(h, p, scenarios, watch, Some(lanes)))
            .buffer_unordered(jobs.max(1) + 1)
            .collect::<Vec<Leg>>();
        // The probes are built while the first legs prepare, not when their
        // first check needs them (a failure is the checks' to report).
        let probes = async {
            if needed {
                if let Err(e) = h.probes().await {
                    tracing::debug!("readdir probes, ahead of the checks: {e}");
                }
            }
        };
        futures::future::join(legs, probes).await.0
    });
    let mut legs: Vec<Leg> = futures::future::join_all(lanes)
        .await
        .into_iter()
        .flatten()
        .collect();
    legs.sort_by_key(|l| platforms.iter().position(|p| p.docker == l.platform));
    legs
}

/// How well the lanes were used (`jobs` per engine): the legs' own times,
/// and the best wall time any order could reach (per engine the longest
/// leg, or its total shared evenly; the slowest engine sets the pace), to
/// set against the wall time measured.
pub fn packing(legs: &[Leg], jobs: usize) -> (Duration, Duration) {
    let mut engines: std::collections::BTreeMap<&str, Vec<Duration>> = Default::default();
    for l in legs {
        engines.entry(&l.engine).or_default().push(l.elapsed);
    }
    let ideal = engines
        .values()
        .map(|times| {
            let total: Duration = times.iter().sum();
            let longest = times.iter().max().copied().unwrap_or_default();
            longest.max(total / jobs.max(1).min(times.len().max(1)) as u32)
        })
        .max()
        .unwrap_or_default();
    (legs.iter().map(|l| l.elapsed).sum(), ideal)
}

/// The exit code of a run of `legs`: a failure is 1; a run in which no
/// check ran (every one skipped, and no leg failed) is 6 unless `accept_skipped`.
pub fn exit(legs: &[Leg], accept_skipped: bool) -> crate::error::Exit {
    use crate::error::Exit;
    let ran = legs.iter().any(|l| {
        l.error.is_some()
            || l.outcomes
                .iter()
                .any(|o| !matches!(o.verdict, crate::record::Verdict::Skipped(_)))
    });
    if legs.iter().any(Leg::failed) {
        Exit::LegsFailed
    } else if !ran && !accept_skipped {
        Exit::NothingRan
    } else {
        Exit::Success
    }
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
        // Two engines: each packs its own legs; the slower one sets the pace.
        let mut two = legs.to_vec();
        two[2].engine = "tcp://other:2375".into();
        assert_eq!(
            packing(&two, 2),
            (Duration::from_secs(80), Duration::from_secs(40))
        );
        two[3].engine = "tcp://other:2375".into();
        assert_eq!(packing(&two, 1).1, Duration::from_secs(60));
    }
}
