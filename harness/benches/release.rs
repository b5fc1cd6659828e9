//! Figures for shipping: `harness release --push` (export, gzip once, the
//! tarballs and the push from the same blobs, one index) against the serial
//! docker CLI doing the same (`docker save | gzip` per platform, `docker
//! push`, `docker manifest create/push`), each into a local registry of its
//! own, step by step; each tarball's size against the image's size in the
//! engine; and what a second release uploads when one script changed
//! (amd64; its image is rebuilt from a copy of the tree). Not a test:
//!   cargo bench -p harness --bench release
//! Needs the images built and a report that proves them (it runs the smoke
//! check first, untimed). Platforms: GUIX_MATRIX_BENCH_PLATFORMS (comma
//! separated; default all six).

mod shared;

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

fn main() {
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
        shared::cli().command().args(&args).output().expect("run"),
        "proving run",
    );
    let reg = testkit::LocalRegistry::start();
    let slug = |p: &str| p.trim_start_matches("linux/").replace('/', "-");

    // The harness: one command.
    let dist = work.path().join("dist");
    let repo = reg.repo();
    let repo_ours = repo.clone();
    let started = Instant::now();
    let out = shared::cli()
        .command()
        .args(["release", "--unpulled", "--json", "--report"])
        .arg(reports.join("report.json"))
        .arg("--dist")
        .arg(&dist)
        .args(["--tag", "vbench", "--push", &repo])
        .output()
        .expect("release");
    let ours = started.elapsed();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "harness release: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let step = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let (export, tarballs, push) = (
        step(&json["seconds"]["export"]),
        step(&json["seconds"]["dist"]),
        step(&json["pushed"]["seconds"]),
    );

    // The docker CLI, serially, the same work (one .tar.gz per platform,
    // push, manifest list), into a registry of its own: into the same one
    // its pushes would find every layer there already.
    let reg_cli = testkit::LocalRegistry::start();
    let repo = reg_cli.repo();
    let cli = work.path().join("cli");
    std::fs::create_dir_all(&cli).expect("dir");
    let started = Instant::now();
    let mut refs = vec![];
    let (mut save, mut pushing) = (0.0, 0.0);
    for p in &platforms {
        let image = format!("guix-matrix:{}", slug(p));
        let out = cli.join(format!("{}.tar.gz", slug(p)));
        let t = Instant::now();
        ok(
            sh(
                "sh",
                &[
                    "-c",
                    &format!("docker save {image} | gzip -6 > {}", out.display()),
                ],
            ),
            "docker save | gzip",
        );
        save += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let r = format!("{repo}:cli-{}", slug(p));
        ok(sh("docker", &["tag", &image, &r]), "docker tag");
        ok(sh("docker", &["push", "-q", &r]), "docker push");
        pushing += t.elapsed().as_secs_f64();
        refs.push(r);
    }
    let t = Instant::now();
    let list = format!("{repo}:cli");
    let mut create = vec!["manifest", "create", "--insecure", &list];
    create.extend(refs.iter().map(String::as_str));
    ok(sh("docker", &create), "docker manifest create");
    ok(
        sh("docker", &["manifest", "push", "--insecure", &list]),
        "docker manifest push",
    );
    let manifest = t.elapsed().as_secs_f64();
    let theirs = started.elapsed();
    for r in &refs {
        let _ = sh("docker", &["rmi", r]);
    }

    println!("platforms: {}", platforms.join(", "));
    println!(
        "\n{:44} {:>9} {:>11} {:>7}",
        "step", "harness", "docker CLI", "ratio"
    );
    let row = |what: &str, ours: f64, theirs: f64| {
        println!(
            "{what:44} {ours:>8.1}s {theirs:>10.1}s {:>6.2}x",
            ours / theirs.max(0.001)
        )
    };
    row(
        "tarballs (harness: libdeflate 7 on every core; CLI: gzip -6)",
        export + tarballs,
        save,
    );
    row(
        "push (harness: blobs by HTTP, with tarballs)",
        push,
        pushing,
    );
    row("multi-platform index", 0.0, manifest);
    row(
        "total, wall clock",
        ours.as_secs_f64(),
        theirs.as_secs_f64(),
    );
    println!(
        "(harness steps: export and compress {export:.1}s, then tarballs {tarballs:.1}s and push {push:.1}s at the same time)"
    );
    println!(
        "\n{:16} {:>10} {:>12} {:>12} {:>10}",
        "platform", "engine MiB", "tarball MiB", "gzip -6 MiB", "vs gzip -6"
    );
    for p in &platforms {
        let image = format!("guix-matrix:{}", slug(p));
        let size: u64 = String::from_utf8_lossy(
            &sh("docker", &["image", "inspect", "-f", "{{.Size}}", &image]).stdout,
        )
        .trim()
        .parse()
        .unwrap_or(0);
        let file = dist.join(format!("guix-matrix-vbench-{}.tar", slug(p)));
        let tar = std::fs::metadata(&file).map_or(0, |m| m.len());
        let gzip =
            std::fs::metadata(cli.join(format!("{}.tar.gz", slug(p)))).map_or(0, |m| m.len());
        let mib = |n: u64| n as f64 / f64::from(1 << 20);
        println!(
            "{:16} {:>10.0} {:>12.1} {:>12.1} {:>9.1}%",
            p,
            mib(size),
            mib(tar),
            mib(gzip),
            100.0 * tar as f64 / gzip.max(1) as f64
        );
    }
    second_release(&work.path().join("changed"), &repo_ours);
}

/// A copy of the tree with one script changed, its amd64 image built and
/// proved, released to the registry that holds the first release: what it
/// uploads (only the changed layers should go).
fn second_release(work: &Path, repo: &str) {
    if std::env::var_os("GUIX_MATRIX_BENCH_SECOND").is_none() {
        println!("\nsecond release: skipped (GUIX_MATRIX_BENCH_SECOND=1 to measure it)");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tree = work.join("tree");
    std::fs::create_dir_all(&tree).expect("dir");
    ok(
        sh(
            "sh",
            &[
                "-c",
                &format!(
                    "git -C {} archive HEAD | tar -x -C {}",
                    root.display(),
                    tree.display()
                ),
            ],
        ),
        "copy of the tree",
    );
    let script = tree.join("scripts/entry-point.sh");
    let mut text = std::fs::read_to_string(&script).expect("entry point");
    text.push_str("\n# changed for the second-release benchmark\n");
    std::fs::write(&script, text).expect("entry point");
    let reports = work.join("reports");
    let root_arg = tree.display().to_string();
    ok(
        shared::cli()
            .command()
            .args([
                "run",
                "--root",
                &root_arg,
                "--scenario",
                "smoke",
                "--platform",
                "linux/amd64",
                "--report",
            ])
            .arg(&reports)
            .output()
            .expect("run"),
        "proving run of the changed tree",
    );
    let out = shared::cli()
        .command()
        .args([
            "release",
            "--root",
            &root_arg,
            "--unpulled",
            "--json",
            "--report",
        ])
        .arg(reports.join("report.json"))
        .arg("--dist")
        .arg(work.join("dist"))
        .args(["--tag", "vbench2", "--push", repo])
        .output()
        .expect("release");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "second release: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let up = &json["pushed"]["uploaded"];
    println!(
        "\nsecond release, one script changed (amd64): uploaded {} blobs, {} KiB; {} blobs already in the registry",
        up["blobs"],
        up["bytes"].as_u64().unwrap_or(0) >> 10,
        up["present"]
    );
}
