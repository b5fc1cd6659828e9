//! Figures for the pull stage, with the offline stand-in for `guix pull`'s
//! network part (the real pull's figures are in the nightly's log): per
//! platform the image's size unpulled and pulled and the stage's time; then
//! a run `--from` a release of those pulled images on an engine that lost
//! them (expect 0 pulls), and a run after a script changed (expect 0 pulls,
//! the pulled layer shared). Every command is the CLI a user types, on
//! images of its own name (`guix-matrix-b22`). Not a test:
//!   cargo bench -p harness --bench pull
//! Platforms: GUIX_MATRIX_BENCH_PLATFORMS (comma separated; default all six).

use harness::pull::Stage;
use harness::report::RunReport;
use std::path::Path;
use std::process::Command;

const IMAGE: &str = "guix-matrix-b22";

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn size_mib(image: &str) -> u64 {
    docker(&["image", "inspect", "--format", "{{.Size}}", image])
        .parse::<u64>()
        .unwrap_or(0)
        >> 20
}

fn layers(image: &str) -> String {
    docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .RootFS.Layers}}",
        image,
    ])
}

/// How many legs of a run pulled, and each leg's pull stage.
fn pulls(report: &Path) -> (usize, Vec<(String, Stage)>) {
    let run = RunReport::read(&report.join("report.json")).unwrap();
    let stages: Vec<(String, Stage)> = run
        .legs
        .iter()
        .map(|l| (l.platform.clone(), l.pull.clone().expect("a pull stage")))
        .collect();
    let n = stages
        .iter()
        .filter(|(_, s)| matches!(s, Stage::Pulled(_)))
        .count();
    (n, stages)
}

/// Removes every image of this benchmark's name.
fn forget(slugs: &[String], parts: &[&str]) {
    for s in slugs {
        for part in parts {
            docker(&["rmi", "-f", &format!("{IMAGE}{part}:{s}")]);
        }
    }
}

/// A copy of the checkout's image inputs, fixtures and matrix.toml (with
/// this benchmark's image name) at `to`.
fn copy_checkout(root: &Path, to: &Path) {
    let parts = [
        "Dockerfile",
        "substitutes",
        "channels",
        "scripts",
        "fixtures",
        "emulators",
    ];
    testkit::tree::copy(root, to, &parts);
    let matrix = std::fs::read_to_string(root.join("matrix.toml")).unwrap();
    std::fs::write(
        to.join("matrix.toml"),
        matrix.replace("image = \"guix-matrix\"", &format!("image = \"{IMAGE}\"")),
    )
    .unwrap();
}

mod shared;
use shared::harness;

fn main() {
    let root = harness::paths::Checkout::find().unwrap().root;
    let (platforms, slugs) = shared::platforms(&[]);
    let work = tempfile::tempdir().unwrap();
    shared::own_release_key(work.path());
    let tree = work.path().join("tree");
    copy_checkout(&root, &tree);
    let t = tree.display().to_string();
    let d = |n: &str| work.path().join(n).display().to_string();
    // The bases of the repository's images (made by `harness run`), under
    // this benchmark's name: no mmdebstrap in the figures.
    for s in &slugs {
        docker(&[
            "tag",
            &format!("guix-matrix-base:{s}"),
            &format!("{IMAGE}-base:{s}"),
        ]);
    }
    let all = ["", "-guix", "-unpulled", "-pulled", "-release", "-base"];
    let run = |report: &str, more: &[&str]| {
        let mut args = vec!["run", "--root", &t, "--build-base", "--report", report];
        for p in &platforms {
            args.extend(["--platform", p.as_str()]);
        }
        args.extend(more);
        harness(&args).0
    };

    println!("platforms: {}", platforms.join(", "));
    forget(&slugs, &["", "-unpulled", "-pulled"]);
    let unpulled = run(&d("unpulled"), &["--scenario", "smoke"]);
    let sizes: Vec<u64> = slugs
        .iter()
        .map(|s| size_mib(&format!("{IMAGE}:{s}")))
        .collect();
    let pulled_run = run(&d("pulled"), &["--stand-in-pull", "--scenario", "pulled"]);
    let (n, stages) = pulls(&work.path().join("pulled"));
    println!("\n| platform | unpulled | pulled (stand-in) | pull stage |\n|---|---:|---:|---:|");
    for ((s, size), (_, stage)) in slugs.iter().zip(&sizes).zip(&stages) {
        let secs = stage.pulled().map_or(0, |p| p.seconds);
        println!(
            "| {s} | {size} MiB | {} MiB | {secs} s |",
            size_mib(&format!("{IMAGE}:{s}"))
        );
    }
    println!(
        "\nunpulled run (build + smoke): {:.1}s; pull stage run ({n} pulls + pulled check): {:.1}s",
        unpulled.as_secs_f64(),
        pulled_run.as_secs_f64()
    );

    // A release of the pulled images, then an engine without them.
    harness(&[
        "release",
        "--root",
        &t,
        "--unpulled",
        "--report",
        &d("pulled/report.json"),
        "--dist",
        &d("dist"),
        "--tag",
        "v20990202",
    ]);
    forget(&slugs, &["", "-unpulled", "-pulled"]);
    let from = run(
        &d("from"),
        &[
            "--stand-in-pull",
            "--from",
            &d("dist"),
            "--scenario",
            "pulled",
        ],
    );
    let (n, stages) = pulls(&work.path().join("from"));
    println!(
        "--from the release, pin and tree unchanged: {n} pulls in {:.1}s ({})",
        from.as_secs_f64(),
        stages
            .iter()
            .map(|(p, s)| format!(
                "{p}: {}",
                s.to_string().split(" (").next().unwrap_or_default()
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );

    // A script changes: the pull is kept, its layer shared.
    run(&d("before"), &["--stand-in-pull", "--scenario", "smoke"]);
    // The image as it is: its layers hold the pull (the release's, reused).
    let before: Vec<String> = slugs
        .iter()
        .map(|s| layers(&format!("{IMAGE}:{s}")))
        .collect();
    let entry = tree.join("scripts/entry-point.sh");
    let mut text = std::fs::read_to_string(&entry).unwrap();
    text.push_str("# a change of a script\n");
    std::fs::write(&entry, text).unwrap();
    let changed = run(&d("changed"), &["--stand-in-pull", "--scenario", "smoke"]);
    let (n, _) = pulls(&work.path().join("changed"));
    let after: Vec<String> = slugs
        .iter()
        .map(|s| layers(&format!("{IMAGE}:{s}")))
        .collect();
    // Every layer of the image before (its pulled store among them) is
    // still the bottom of the image after: only the scripts were added.
    let shared = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b.len() > 2 && a.starts_with(b.trim_end_matches(']')))
        .count();
    println!(
        "a script changed: {n} pulls in {:.1}s; the image before (pulled store included) is the bottom of the image after on {shared} of {} platforms",
        changed.as_secs_f64(),
        slugs.len()
    );
    forget(&slugs, &all);
}
