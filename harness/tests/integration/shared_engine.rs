//! Runs that share an engine: `clean` during a run leaves what the run
//! holds (its lease: its containers, its platforms' tags) and removes the
//! rest; a run killed with SIGKILL leaves a dead lease that `clean` removes
//! with the run's containers. Under an image name of its own.

use crate::common::{block_on, command, prepared};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const IMAGE: &str = "guix-matrix-t34l";

fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().unwrap()
}

/// The leases (volume names) in the engine, and the runs they name.
fn leases() -> Vec<(String, String)> {
    let out = docker(&[
        "volume",
        "ls",
        "--filter",
        "label=io.guix-matrix.lease",
        "--format",
        "{{.Name}} {{.Label \"io.guix-matrix.run\"}}",
    ]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(v, r)| (v.to_string(), r.to_string()))
        .collect()
}

/// Waits (up to 3 minutes) until some lease names a run of `pid`.
fn lease_of(pid: u32) -> String {
    let started = Instant::now();
    loop {
        if let Some((_, run)) = leases()
            .into_iter()
            .find(|(_, run)| run.split(':').nth(1) == Some(&pid.to_string()))
        {
            return run;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "no lease of {pid}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn tags() -> Vec<String> {
    let out = docker(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|t| t.starts_with(IMAGE))
        .map(str::to_string)
        .collect()
}

#[test]
fn clean_leaves_a_live_runs_objects_and_removes_a_killed_runs() {
    let _all = crate::common::exclusive();
    prepared("linux/amd64");
    let work = tempfile::tempdir().unwrap();
    let checkout = harness::paths::Checkout::find().unwrap();
    let matrix = work.path().join("matrix.toml");
    let text = std::fs::read_to_string(checkout.matrix()).unwrap();
    std::fs::write(
        &matrix,
        text.replace("image = \"guix-matrix\"", &format!("image = \"{IMAGE}\"")),
    )
    .unwrap();
    let m = matrix.to_str().unwrap().to_string();
    // Its base and Guix layer are the shared ones (the same inputs): no
    // apt run of its own, only the image on top is built.
    // The readdir probes and their bookworm base, too: the live run below
    // finds them made, and clean must leave them to it.
    block_on(crate::common::harness().probes()).unwrap_or_else(|e| panic!("{}", e.report()));
    for (from, to) in [
        ("base:amd64", "base:amd64"),
        ("guix:amd64", "guix:amd64"),
        ("base:amd64-bookworm", "base:amd64-bookworm"),
        ("probe:amd64", "probe:amd64"),
    ] {
        docker(&[
            "tag",
            &format!("guix-matrix-{from}"),
            &format!("{IMAGE}-{to}"),
        ]);
    }
    let run = |report: &str, more: &[&str]| {
        let mut cmd = command();
        cmd.args(["run", "--matrix", &m, "--platform", "linux/amd64"])
            .args(["--scenario", "usage"])
            .args(more)
            .arg("--report")
            .arg(work.path().join(report))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd
    };
    let clean = |more: &[&str]| {
        let out = command()
            .args(["clean", "--matrix", &m])
            .args(more)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The images exist first (a run that builds them), so the second run
    // spends its time in its legs.
    let first = run("first", &[]).output().unwrap();
    assert!(
        first.status.success(),
        "{}{}",
        String::from_utf8_lossy(&first.stdout),
        String::from_utf8_lossy(&first.stderr)
    );
    // Another platform's tag no run holds.
    docker(&[
        "tag",
        "guix-matrix-base:amd64",
        &format!("{IMAGE}-base:riscv64"),
    ]);

    // clean during a live run.
    // Legs long enough (tens of seconds) that the clean lands in them: the
    // usage check alone is over within seconds.
    let live = run("live", &["--scenario", "defaults", "--scenario", "chroot"])
        .spawn()
        .unwrap();
    let id = lease_of(live.id());
    std::thread::sleep(Duration::from_secs(2));
    let said = clean(&[]);
    let live = live.wait_with_output().unwrap();
    assert!(
        live.status.success(),
        "the run survives a clean during its legs: {said}\n{}{}",
        String::from_utf8_lossy(&live.stdout),
        String::from_utf8_lossy(&live.stderr)
    );
    assert!(said.contains("left alone: "), "{said}");
    assert!(
        said.contains(&format!("held by live run(s) {id} (amd64, amd64-bookworm)")),
        "{said}"
    );
    let left = tags();
    assert!(left.contains(&format!("{IMAGE}:amd64")), "{left:?}");
    for tool in ["base:amd64-bookworm", "probe:amd64"] {
        assert!(
            left.contains(&format!("{IMAGE}-{tool}")),
            "the live run's probes and their base are held: {left:?}"
        );
    }
    assert!(
        !left.contains(&format!("{IMAGE}-base:riscv64")),
        "not held: {left:?}"
    );
    assert!(
        leases().iter().all(|(_, r)| *r != id),
        "the run gave its lease back"
    );

    // A run killed with SIGKILL: its lease is dead, clean removes it and
    // the run's containers.
    let killed = run(
        "killed",
        &["--scenario", "defaults", "--scenario", "chroot"],
    )
    .spawn()
    .unwrap();
    let pid = killed.id();
    let id = lease_of(pid);
    std::thread::sleep(Duration::from_secs(2));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = killed.wait_with_output();
    let said = clean(&[]);
    assert!(said.contains("1 lease(s) of runs that are gone"), "{said}");
    assert!(leases().iter().all(|(_, r)| *r != id), "{said}");
    let containers = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=io.guix-matrix.run={id}"),
        "-q",
    ]);
    assert!(containers.status.success());
    assert!(
        String::from_utf8_lossy(&containers.stdout)
            .trim()
            .is_empty(),
        "the killed run's containers are gone"
    );
    clean(&["--force"]);
    assert!(tags().is_empty(), "{:?}", tags());
}
