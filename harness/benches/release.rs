//! Figures for shipping: `harness release --push` (export, gzip, OCI layout,
//! push, one index) against the serial docker CLI doing the same
//! (`docker save | gzip` per platform, `docker push`, `docker manifest
//! create/push`), both to a local registry; and each tarball's size against
//! the image's size in the engine. Not a test:
//!   cargo bench -p harness --bench release
//! Needs the images built and a report that proves them (it runs the smoke
//! check first, untimed). Platforms: GUIX_MATRIX_BENCH_PLATFORMS (comma
//! separated; default all six).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn sh(program: &str, args: &[&str]) -> std::process::Output {
    Command::new(program).args(args).output().expect(program)
}

fn ok(out: std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The registry process, the directory it stores into (kept until drop), its port.
#[path = "../tests/integration/registry.rs"]
mod registry;

fn main() {
    let harness = env!("CARGO_BIN_EXE_harness");
    let platforms: Vec<String> = std::env::var("GUIX_MATRIX_BENCH_PLATFORMS")
        .unwrap_or_else(|_| {
            "linux/amd64,linux/386,linux/arm/v7,linux/arm64/v8,linux/ppc64le,linux/riscv64".into()
        })
        .split(',')
        .map(str::to_string)
        .collect();
    let work = tempfile::tempdir().expect("tempdir");
    let reports = work.path().join("reports");
    let mut args = vec![
        "run".to_string(),
        "--scenario".into(),
        "smoke".into(),
        "--report".into(),
        reports.display().to_string(),
    ];
    for p in &platforms {
        args.extend(["--platform".into(), p.clone()]);
    }
    ok(
        Command::new(harness).args(&args).output().expect("run"),
        "proving run",
    );
    let reg = registry::Registry::start();
    let slug = |p: &str| p.trim_start_matches("linux/").replace('/', "-");

    // The harness: one command.
    let dist = work.path().join("dist");
    let repo = reg.repo();
    let started = Instant::now();
    ok(
        Command::new(harness)
            .args(["release", "--unpulled", "--report"])
            .arg(reports.join("report.json"))
            .arg("--dist")
            .arg(&dist)
            .args(["--tag", "vbench", "--push", &repo])
            .output()
            .expect("release"),
        "harness release",
    );
    let ours = started.elapsed();

    // The docker CLI, serially, the same work (one .tar.gz per platform,
    // push, manifest list), into a registry of its own: into the same one
    // its pushes would find every layer there already.
    let reg = registry::Registry::start();
    let repo = reg.repo();
    let cli = work.path().join("cli");
    std::fs::create_dir_all(&cli).expect("dir");
    let started = Instant::now();
    let mut refs = vec![];
    for p in &platforms {
        let image = format!("guix-matrix:{}", slug(p));
        let out = cli.join(format!("{}.tar.gz", slug(p)));
        ok(
            sh(
                "sh",
                &[
                    "-c",
                    &format!("docker save {image} | gzip -1 > {}", out.display()),
                ],
            ),
            "docker save | gzip",
        );
        let r = format!("{repo}:cli-{}", slug(p));
        ok(sh("docker", &["tag", &image, &r]), "docker tag");
        ok(sh("docker", &["push", "-q", &r]), "docker push");
        refs.push(r);
    }
    let list = format!("{repo}:cli");
    let mut create = vec!["manifest", "create", "--insecure", &list];
    create.extend(refs.iter().map(String::as_str));
    ok(sh("docker", &create), "docker manifest create");
    ok(
        sh("docker", &["manifest", "push", "--insecure", &list]),
        "docker manifest push",
    );
    let theirs = started.elapsed();
    for r in &refs {
        let _ = sh("docker", &["rmi", r]);
    }

    println!("platforms: {}", platforms.join(", "));
    println!(
        "harness release --push (export, gzip -1, OCI layout, push, index): {:>6.1}s",
        ours.as_secs_f64()
    );
    println!(
        "docker CLI, serial (save | gzip -1, push, manifest create/push):    {:>6.1}s  (no OCI layout)",
        theirs.as_secs_f64()
    );
    println!(
        "\n{:16} {:>12} {:>14} {:>7}",
        "platform", "engine MiB", "tarball MiB", "ratio"
    );
    for p in &platforms {
        let image = format!("guix-matrix:{}", slug(p));
        let size: u64 = String::from_utf8_lossy(
            &sh("docker", &["image", "inspect", "-f", "{{.Size}}", &image]).stdout,
        )
        .trim()
        .parse()
        .unwrap_or(0);
        let file = dist.join(format!("guix-matrix-vbench-{}.docker.tar.gz", slug(p)));
        let tar = std::fs::metadata(&file).map_or(0, |m| m.len());
        println!(
            "{:16} {:>12} {:>14} {:>6.0}%",
            p,
            size >> 20,
            tar >> 20,
            100.0 * tar as f64 / size.max(1) as f64
        );
    }
    let oci = dist.join("guix-matrix-vbench-oci.tar");
    println!(
        "OCI layout, all platforms: {} MiB",
        std::fs::metadata(Path::new(&oci)).map_or(0, |m| m.len()) >> 20
    );
}
