//! The warm matrix, side by side: `harness run` of every platform with the
//! images up to date, as the README's main command runs it (the
//! platform-independent steps once per run), against `--no-shared-steps`
//! (every step on every leg): wall, time in legs, and each check's time and
//! containers over every leg (report.json), median of ROUNDS.
//!
//!   GUIX_MATRIX_ALLOW_EXPIRED_MIRROR=1 cargo bench -p harness --bench warm_matrix
//! Needs an engine; the first (unmeasured) run builds what is missing.

mod shared;

use std::collections::BTreeMap;
use std::time::Duration;

const ROUNDS: usize = 3;

/// One measured run: its wall time, its legs' time and, per check, its time and containers.
struct Measured {
    wall: Duration,
    legs: f64,
    checks: BTreeMap<String, (f64, usize)>,
}

fn run(more: &[&str], dir: &std::path::Path) -> Measured {
    let mut args = vec!["run", "-q", "--report", dir.to_str().expect("utf-8 path")];
    args.extend(more);
    let (wall, _) = shared::harness(&args);
    let report = harness::report::RunReport::read(&dir.join("report.json")).expect("report.json");
    let mut checks: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    let mut legs = 0.0;
    for leg in &report.legs {
        legs += leg.elapsed.as_secs_f64();
        for o in &leg.outcomes {
            let e = checks.entry(o.scenario.name().to_string()).or_default();
            e.0 += o.elapsed.as_secs_f64();
            e.1 += o.containers.len();
        }
    }
    Measured { wall, legs, checks }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(&[], dir.path());
    let sides: [(&str, &[&str]); 2] = [
        ("shared steps (default)", &[]),
        ("--no-shared-steps", &["--no-shared-steps"]),
    ];
    let mut results = vec![];
    for (name, more) in sides {
        let rounds: Vec<Measured> = (0..ROUNDS).map(|_| run(more, dir.path())).collect();
        println!(
            "{name}: wall {:?} s",
            rounds.iter().map(|m| m.wall.as_secs()).collect::<Vec<_>>()
        );
        results.push((name, rounds));
    }
    println!(
        "\n| | {} | {} |\n|---|---:|---:|",
        results[0].0, results[1].0
    );
    let row = |label: &str, f: &dyn Fn(&Measured) -> f64| {
        let a = median(results[0].1.iter().map(f).collect());
        let b = median(results[1].1.iter().map(f).collect());
        println!("| {label} | {a:.0} s | {b:.0} s |");
    };
    row("wall (median of 3)", &|m| m.wall.as_secs_f64());
    row("time in legs", &|m| m.legs);
    let names: Vec<String> = results[0].1[0].checks.keys().cloned().collect();
    for name in names {
        let a = median(results[0].1.iter().map(|m| m.checks[&name].0).collect());
        let b = median(results[1].1.iter().map(|m| m.checks[&name].0).collect());
        let (ca, cb) = (
            results[0].1[0].checks[&name].1,
            results[1].1[0].checks[&name].1,
        );
        println!("| {name} | {a:.0} s, {ca} containers | {b:.0} s, {cb} containers |");
    }
}
