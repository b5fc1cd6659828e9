//! Figures for the user's first repro of a CI leg: `harness repro --from
//! DIR --platform linux/arm/v7 --scenario tmpfs` on an engine holding
//! nothing (a dockerd of its own, started empty for each round, without
//! network, so nothing can come from the Debian mirror), from a release of
//! this tree: its preparation (image, emulator helper, readdir probes) and
//! its checks. Not a test:
//!   cargo bench -p harness --bench first_repro
//! Needs amd64 and arm/v7 built (it proves them with the smoke check and
//! releases them first, untimed). Rounds: GUIX_MATRIX_BENCH_ROUNDS
//! (default 3).

mod shared;
use shared::harness;

fn main() {
    let rounds: usize = std::env::var("GUIX_MATRIX_BENCH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let work = tempfile::tempdir().unwrap();
    shared::own_release_key(work.path());
    let d = |n: &str| work.path().join(n).display().to_string();
    harness(&[
        "run",
        "--scenario",
        "smoke",
        "--platform",
        "linux/amd64",
        "--platform",
        "linux/arm/v7",
        "--report",
        &d("proved"),
    ]);
    harness(&[
        "release",
        "--unpulled",
        "--report",
        &d("proved/report.json"),
        "--dist",
        &d("dist"),
        "--tag",
        "v20990101",
    ]);
    let files: Vec<String> = std::fs::read_to_string(work.path().join("dist/SHA256SUMS"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once("  ").map(|(_, n)| n.to_string()))
        .collect();
    println!("release: {}", files.join(", "));
    let mut prepared = vec![];
    for round in 1..=rounds {
        let empty = testkit::SecondEngine::start("bench-empty", None);
        let report = d(&format!("repro-{round}"));
        let (total, said) = harness(&[
            "repro",
            "--engine",
            &empty.url(),
            "--platform",
            "linux/arm/v7",
            "--scenario",
            "tmpfs",
            "--no-keep",
            "--report",
            &report,
            "--from",
            &d("dist"),
        ]);
        drop(empty);
        assert!(said.contains("reused v20990101"), "{said}");
        let leg = harness::report::RunReport::read(
            &work.path().join(format!("repro-{round}/report.json")),
        )
        .unwrap()
        .legs
        .remove(0);
        let from = |what: &str| {
            if said.contains(&format!("{what}: from release")) {
                "from the release"
            } else {
                "built"
            }
        };
        println!(
            "round {round}: first repro on an empty engine {:>5.1}s: preparation {:>5.1}s, checks {:>5.1}s (helper {}, probes {})",
            total.as_secs_f64(),
            leg.prepare_time.as_secs_f64(),
            leg.elapsed.saturating_sub(leg.prepare_time).as_secs_f64(),
            from("emulator helper"),
            from("readdir probes"),
        );
        prepared.push(leg.prepare_time.as_secs_f64());
    }
    prepared.sort_by(f64::total_cmp);
    println!(
        "preparation on an empty engine: median {:.1}s, worst {:.1}s of {rounds} (goal: 60 s or less)",
        prepared[prepared.len() / 2],
        prepared[prepared.len() - 1]
    );
}
