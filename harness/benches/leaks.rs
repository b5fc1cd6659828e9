//! Leaks, measured: interrupts `harness run` with SIGINT and SIGTERM at many
//! points (base build, image build, scenario container, report write) and
//! prints what the harness left labelled afterwards, then checks that the
//! next run works. Figures, not a pass/fail test:
//!   cargo bench -p harness --bench leaks
//! Uses its own image name (guix-matrix-leaks), so the first trials meet a
//! cold base and image; removes all of it at the end.

mod shared;

use harness::engine::Engine;
use nix::sys::signal::Signal;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const IMAGE: &str = "guix-matrix-leaks";

/// When to interrupt: the first stderr line that contains this, plus a delay.
struct Point {
    name: &'static str,
    line: &'static str,
    delay: Duration,
}

const POINTS: &[Point] = &[
    Point {
        name: "base build (mmdebstrap)",
        line: "linux/amd64: base image",
        delay: Duration::from_secs(3),
    },
    Point {
        name: "image build",
        line: "linux/amd64: image",
        delay: Duration::from_secs(8),
    },
    Point {
        name: "scenario container",
        line: "linux/amd64: check smoke",
        delay: Duration::from_millis(300),
    },
    Point {
        name: "report write",
        line: "linux/amd64: passed in",
        delay: Duration::ZERO,
    },
];

fn matrix_file(dir: &Path) -> PathBuf {
    let root = harness::paths::Checkout::find().expect("checkout").root;
    let text = std::fs::read_to_string(root.join("matrix.toml")).expect("matrix.toml");
    let text = text.replace("image = \"guix-matrix\"", &format!("image = \"{IMAGE}\""));
    let path = dir.join("matrix.toml");
    std::fs::write(&path, text).expect("write matrix");
    path
}

fn harness_run(matrix: &Path, report: &Path) -> Command {
    let mut cmd = shared::cli().command();
    cmd.args(["run", "--matrix"])
        .arg(matrix)
        .args([
            "--build-base",
            "--platform",
            "linux/amd64",
            "--scenario",
            "smoke",
            "--report",
        ])
        .arg(report);
    cmd
}

/// What stayed labelled (containers, volumes, tags of this image, dangling
/// images); an engine that cannot be asked stops the bench.
async fn census(engine: &Engine) -> (usize, usize, Vec<String>, usize) {
    let l = engine.leftovers(IMAGE).await.expect("count leftovers");
    (l.containers.len(), l.volumes, l.tags, l.dangling)
}

/// Runs until `point` is reached, sends `signal`, and returns (where it was, exit code, seconds).
fn trial(matrix: &Path, point: &Point, signal: Signal) -> (String, Option<i32>, f64) {
    let report = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let mut child = harness_run(matrix, report.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn harness");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut last = String::from("(start)");
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                if line.contains("linux/amd64:") {
                    last = line.clone();
                }
                if line.contains(point.line) {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
            _ => break,
        }
    }
    std::thread::sleep(point.delay);
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal);
    let status = child.wait().expect("wait");
    while let Ok(line) = rx.try_recv() {
        if line.contains("linux/amd64:") {
            last = line;
        }
    }
    (last, status.code(), started.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let matrix = matrix_file(dir.path());
    let engine = Engine::connect().await.expect("engine");
    let before = census(&engine).await;
    println!(
        "before: {} container(s), {} volume(s), {} untagged image(s) labelled",
        before.0, before.1, before.3
    );
    println!(
        "{:26} {:7} {:>5} {:>7}  {:>10} {:>7} {:>8}  last step seen / tags now",
        "interrupted during", "signal", "exit", "secs", "containers", "volumes", "dangling",
    );
    let mut leaked = 0;
    for point in POINTS {
        for signal in [Signal::SIGINT, Signal::SIGTERM] {
            let (last, code, secs) = tokio::task::spawn_blocking({
                let matrix = matrix.clone();
                move || trial(&matrix, point, signal)
            })
            .await
            .expect("trial");
            let (containers, volumes, tags, untagged) = census(&engine).await;
            leaked += containers + volumes;
            println!(
                "{:26} {:7} {:>5} {:>7.1}  {:>10} {:>7} {:>8}  {} / {}",
                point.name,
                format!("{signal:?}").trim_start_matches("SIG"),
                code.map_or("-".into(), |c| c.to_string()),
                secs,
                containers,
                volumes,
                untagged.saturating_sub(before.3),
                last.trim(),
                tags.join(" ")
            );
        }
    }
    let next = harness_run(&matrix, dir.path()).output().expect("next run");
    println!("next run after all trials: exit {:?}", next.status.code());
    let clean = shared::cli()
        .command()
        .arg("clean")
        .arg("--matrix")
        .arg(&matrix)
        .output()
        .expect("clean");
    println!("cleanup: {}", String::from_utf8_lossy(&clean.stdout).trim());
    println!(
        "labelled containers + volumes left after interrupts, summed over all trials: {leaked}"
    );
}
