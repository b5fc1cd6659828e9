//! Figures for incremental builds, side by side in one run: a cold build
//! (no image, no base, no build cache) against starting from a release —
//! its directory of tarballs, and the same release in a local registry —
//! and the CI path on an unchanged tree (cache restore + load + verify +
//! check). (The first repro from a release: `--bench first_repro`.) Every timed
//! command is the CLI a user types, each ending with the smoke check. Not a
//! test:
//!   cargo bench -p harness --bench incremental
//! Platforms: GUIX_MATRIX_BENCH_PLATFORMS (comma separated; default
//! linux/amd64,linux/arm/v7). It removes those platforms' images and bases
//! (the cold build makes them again).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn docker(args: &[&str]) {
    let _ = Command::new("docker").args(args).output();
}

/// What a new machine has of these platforms: nothing but the native base
/// and the emulator helper built on it (every mode needs those alike).
fn forget(slugs: &[String]) {
    for s in slugs {
        docker(&["rmi", "-f", &format!("guix-matrix:{s}")]);
        if s != "amd64" {
            docker(&["rmi", "-f", &format!("guix-matrix-base:{s}")]);
        }
    }
    docker(&[
        "image",
        "prune",
        "-f",
        "--filter",
        "label=io.guix-matrix.managed=true",
    ]);
}

fn starts(report: &Path) -> String {
    let report = harness::report::RunReport::read(&report.join("report.json")).unwrap();
    report
        .legs
        .iter()
        .map(|l| format!("{}: {}", l.platform, l.start))
        .collect::<Vec<_>>()
        .join("; ")
}

mod shared;
use shared::harness;

fn main() {
    let (platforms, slugs) = shared::platforms(&["linux/amd64", "linux/arm/v7"]);
    let work = tempfile::tempdir().unwrap();
    shared::own_release_key(work.path());
    let d = |n: &str| work.path().join(n).display().to_string();
    let mut run = vec!["run".to_string(), "--scenario".into(), "smoke".into()];
    for p in &platforms {
        run.extend(["--platform".into(), p.clone()]);
    }
    let run_to = |report: &str, from: Option<&str>| {
        let mut args: Vec<&str> = run.iter().map(String::as_str).collect();
        args.extend(["--report", report]);
        if let Some(f) = from {
            args.extend(["--from", f]);
        }
        harness(&args)
    };

    println!("platforms: {}", platforms.join(", "));
    forget(&slugs);
    let (cold, _) = run_to(&d("cold"), None);
    println!(
        "cold build + smoke:                  {:>6.1}s  ({})",
        cold.as_secs_f64(),
        starts(&work.path().join("cold"))
    );
    let (rel, _) = harness(&[
        "release",
        "--unpulled",
        "--report",
        &d("cold/report.json"),
        "--dist",
        &d("dist"),
        "--tag",
        "v20990101",
    ]);
    let reg = testkit::LocalRegistry::start();
    let repo = reg.repo();
    let (push, _) = harness(&[
        "release",
        "--unpulled",
        "--report",
        &d("cold/report.json"),
        "--dist",
        &d("dist2"),
        "--tag",
        "v20990101",
        "--push",
        &repo,
    ]);
    println!(
        "  (release --dist {:.1}s, release --push {:.1}s, untimed below)",
        rel.as_secs_f64(),
        push.as_secs_f64()
    );

    forget(&slugs);
    let (from_dir, _) = run_to(&d("dir"), Some(&d("dist")));
    println!(
        "from the release directory + smoke:  {:>6.1}s  ({})",
        from_dir.as_secs_f64(),
        starts(&work.path().join("dir"))
    );

    forget(&slugs);
    let (from_reg, _) = run_to(&d("reg"), Some(&format!("{repo}:v20990101")));
    println!(
        "from the local registry + smoke:     {:>6.1}s  ({})",
        from_reg.as_secs_f64(),
        starts(&work.path().join("reg"))
    );

    // CI on an unchanged tree: the cache restored (a copy of the release
    // directory), then load + verify + check.
    forget(&slugs);
    let t = Instant::now();
    std::fs::create_dir_all(d("restored")).unwrap();
    for e in std::fs::read_dir(d("dist")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), work.path().join("restored").join(e.file_name())).unwrap();
    }
    let restore = t.elapsed();
    let (ci, _) = run_to(&d("ci"), Some(&d("restored")));
    println!(
        "CI, unchanged tree (restore {:.1}s + load, verify, smoke): {:>6.1}s  ({})",
        restore.as_secs_f64(),
        (restore + ci).as_secs_f64(),
        starts(&work.path().join("ci"))
    );
}
