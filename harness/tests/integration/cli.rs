//! The `harness` command as a newcomer uses it, against the real engine.

use crate::common::{block_on, harness, prepared};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    crate::common::command()
}

/// `harness run --platform P --scenario S… --report DIR`.
fn harness_run(platform: &str, scenarios: &[&str], report: &std::path::Path) -> Command {
    let mut cmd = bin();
    cmd.args(["run", "--platform", platform]);
    for s in scenarios {
        cmd.args(["--scenario", s]);
    }
    cmd.arg("--report").arg(report);
    cmd
}

/// Our labelled containers still in the engine (an engine that cannot be
/// asked fails the test).
fn labelled_containers() -> Vec<String> {
    crate::common::leftovers(&harness().engine, "guix-matrix").containers
}

fn containers_with(label: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-a", "-q", "--filter", &format!("label={label}")])
        .output()
        .expect("docker CLI");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn doctor_reports_each_check_and_exits_zero_when_ready() {
    let _serial = crate::common::exclusive();
    let out = bin().arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for check in [
        "engine",
        "binfmt_misc",
        "mmdebstrap",
        "disk",
        "debian mirror",
        "registry",
        "guix infrastructure",
    ] {
        assert!(
            text.contains(check),
            "doctor did not check {check}:\n{text}"
        );
    }
    assert!(out.status.success(), "{text}");
}

#[test]
fn doctor_says_how_to_start_an_engine_when_none_answers() {
    let _serial = crate::common::exclusive();
    let out = bin()
        .arg("doctor")
        .env("DOCKER_HOST", "unix:///nonexistent.sock")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // 3: the machine is not ready, as every command says it.
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains("PROBLEM engine")
            && text.contains("fix: start one: apt-get install -y docker.io"),
        "{text}"
    );
}

#[test]
fn run_without_an_engine_is_a_clear_error_not_a_hang() {
    let _serial = crate::common::exclusive();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["run", "--platform", "linux/amd64", "--report"])
        .arg(dir.path())
        .env("DOCKER_HOST", "unix:///nonexistent.sock")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // 3: the machine is not ready (not 2, which is a usage error).
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("no Docker engine answers at unix:///nonexistent.sock")
            && err.contains("\n  fix: start one: apt-get install -y docker.io"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    // The report is written all the same, naming the step that failed.
    let json = std::fs::read_to_string(dir.path().join("report.json")).unwrap();
    assert!(
        json.contains("setup: connect to the Docker engine"),
        "{json}"
    );
    let junit = std::fs::read_to_string(dir.path().join("junit.xml")).unwrap();
    assert!(junit.contains("no Docker engine answers"), "{junit}");
}

/// The exit-code contract of --help, each code from a real invocation.
#[test]
fn exit_codes_tell_usage_from_setup_from_failed_legs() {
    let _shared = crate::common::shared();
    let code = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = bin();
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap().status.code()
    };
    assert_eq!(
        code(&["run", "--scenario", "nope"], &[]),
        Some(2),
        "bad option"
    );
    assert_eq!(
        code(&["run", "--platform", "linux/s390x"], &[]),
        Some(2),
        "unknown platform"
    );
    assert_eq!(
        code(&["pin", "--set", "master"], &[]),
        Some(2),
        "not a commit"
    );
    assert_eq!(
        code(&["matrix"], &[("GUIX_MATRIX_ROOT", "/")]),
        Some(2),
        "not a checkout"
    );
    assert_eq!(
        code(
            &["emulators"],
            &[("DOCKER_HOST", "unix:///nonexistent.sock")]
        ),
        Some(3),
        "no engine"
    );
    assert_eq!(code(&["matrix"], &[]), Some(0));
    let help = bin().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for line in [
        "1    one or more legs failed",
        "3    setup",
        "130  interrupted",
    ] {
        assert!(help.contains(line), "{help}");
    }
}

/// In CI stderr is a file: one plain line per step, no colour codes, and the
/// results as Markdown in the step summary.
#[test]
fn without_a_terminal_every_step_is_a_plain_line_and_the_summary_is_markdown() {
    let _shared = crate::common::shared();
    prepared("linux/amd64");
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.md");
    let out = harness_run("linux/amd64", &["smoke"], &dir.path().join("reports"))
        .env("GITHUB_STEP_SUMMARY", &summary)
        .env_remove("NO_COLOR")
        .args(["--heartbeat", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        !err.contains('\x1b'),
        "colour codes without a terminal:\n{err}"
    );
    for step in [
        "linux/amd64: image up to date",
        "linux/amd64: check smoke",
        "linux/amd64: passed in",
    ] {
        assert!(err.contains(step), "no `{step}` line:\n{err}");
    }
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(
        md.starts_with("| platform | scenario | result | time | detail |\n|---|")
            && md.contains("| linux/amd64 | smoke | passed |")
            && md.contains("harness: 1 passed, 0 failed, 0 skipped"),
        "{md}"
    );
}

#[test]
fn an_unknown_platform_names_the_known_ones() {
    let _serial = crate::common::exclusive();
    let out = bin()
        .args(["run", "--platform", "linux/s390x"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("linux/s390x") && err.contains("known: linux/amd64"),
        "{err}"
    );
}

#[test]
fn run_one_platform_prints_the_table_and_writes_reports() {
    let _serial = crate::common::exclusive();
    prepared("linux/amd64");
    let dir = tempfile::tempdir().unwrap();
    let out = harness_run("linux/amd64", &["smoke", "pulled"], dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("linux/amd64  smoke") && text.contains("skipped"),
        "{text}"
    );
    assert!(
        text.contains("harness: 1 passed, 0 failed, 1 skipped"),
        "{text}"
    );
    let junit = std::fs::read_to_string(dir.path().join("junit.xml")).unwrap();
    assert!(junit.contains("<skipped message=\"offline:"), "{junit}");
    let report = harness::report::RunReport::read(&dir.path().join("report.json")).unwrap();
    let leg = &report.legs[0];
    assert_eq!(leg.platform, "linux/amd64");
    assert_eq!(leg.outcomes[0].verdict, harness::scenarios::Verdict::Passed);
    // Each check's containers, with their time, in the report and the table.
    let smoke = &leg.outcomes[0].containers;
    assert_eq!(smoke.len(), 1, "{smoke:?}");
    assert_eq!(smoke[0].step, "smoke");
    assert!(!smoke[0].elapsed.is_zero() && smoke[0].elapsed <= leg.outcomes[0].elapsed);
    assert!(text.contains("1 container(s): smoke "), "{text}");
    assert!(text.contains("per check, over every leg: smoke "), "{text}");
    // Which checkout the run used: in its header and its report.
    let root = harness::paths::Checkout::find().unwrap().root;
    assert!(
        text.starts_with(&format!("checkout {} (matrix ", root.display())),
        "{text}"
    );
    assert_eq!(leg.checkout, root.display().to_string());
}

#[test]
fn repro_streams_the_output_and_removes_containers_of_passing_checks() {
    let _serial = crate::common::exclusive();
    prepared("linux/amd64");
    let before = labelled_containers();
    let reports = tempfile::tempdir().unwrap();
    // Checks of one container and of several (tmpfs: two, usage: four).
    let out = bin()
        .args(["repro", "--platform", "amd64"])
        .args([
            "--scenario",
            "smoke",
            "--scenario",
            "tmpfs",
            "--scenario",
            "usage",
        ])
        .arg("--report")
        .arg(reports.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("[amd64] + guix repl /fixtures/smoke.scm"),
        "the trace is streamed:\n{err}"
    );
    assert_eq!(
        labelled_containers(),
        before,
        "a passing check keeps nothing, however many containers it ran"
    );
    assert!(
        reports.path().join("report.json").is_file(),
        "repro writes its report"
    );
}

#[test]
fn clean_removes_labelled_containers_and_only_the_matrix_images() {
    let _serial = crate::common::exclusive();
    let h = harness();
    let p = prepared("linux/amd64");
    // A kept (labelled) container, and an image tag under another matrix's name.
    let spec = harness::engine::run::RunSpec::new(p.image.tag.clone(), "kept for clean")
        .cmd(["true"])
        .with_options(None, true);
    let kept = block_on(harness::engine::run::run(&h.engine, &spec))
        .unwrap()
        .kept_container
        .expect("kept");
    assert!(labelled_containers()
        .iter()
        .any(|id| kept.starts_with(id.as_str())));
    let tag = "guix-matrix-cleantest:amd64";
    assert!(Command::new("docker")
        .args(["tag", &p.image.tag, tag])
        .status()
        .unwrap()
        .success());
    // A dangling labelled image: a tag moved away from it (as an interrupted
    // or replaced build leaves one).
    let build = |n: &str| {
        let mut child = Command::new("docker")
            .args(["build", "-q", "-t", "guix-matrix-cleantest:dangling", "-"])
            .env("DOCKER_BUILDKIT", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        write!(
            child.stdin.take().unwrap(),
            "FROM {}\nRUN echo {n} > /n\n",
            p.base.reference
        )
        .unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let dangling = build("one");
    build("two");
    let dir = tempfile::tempdir().unwrap();
    let matrix = dir.path().join("matrix.toml");
    let text = std::fs::read_to_string(harness::paths::Checkout::find().unwrap().matrix()).unwrap();
    std::fs::write(
        &matrix,
        text.replace(
            "image = \"guix-matrix\"",
            "image = \"guix-matrix-cleantest\"",
        ),
    )
    .unwrap();

    let out = bin()
        .arg("clean")
        .arg("--matrix")
        .arg(&matrix)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("2 image tag(s) under guix-matrix-cleantest"),
        "{text}"
    );
    assert!(text.contains("dangling labelled image(s)"), "{text}");
    let gone = Command::new("docker")
        .args(["image", "inspect", &dangling])
        .output()
        .unwrap();
    assert!(
        !gone.status.success(),
        "the dangling image {dangling} is still there"
    );
    assert!(
        !labelled_containers()
            .iter()
            .any(|id| kept.starts_with(id.as_str())),
        "the kept container is gone"
    );
    assert!(
        block_on(h.engine.local_image(tag)).unwrap().is_none(),
        "the other matrix's tag is gone"
    );
    assert!(
        block_on(h.engine.local_image(&p.image.tag))
            .unwrap()
            .is_some(),
        "this matrix's image stays"
    );
}

/// Ctrl-C while a check's container runs: it is stopped and removed, exit 130,
/// and the next run works.
#[test]
fn ctrl_c_mid_run_leaves_no_container_and_the_next_run_works() {
    let _serial = crate::common::exclusive();
    prepared("linux/arm/v7");
    // SIGINT (Ctrl-C) and SIGTERM (a cancelled CI job, `timeout`, `docker stop`).
    for (signal, code) in [
        (nix::sys::signal::Signal::SIGINT, 130),
        (nix::sys::signal::Signal::SIGTERM, 143),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let child = harness_run("linux/arm/v7", &["smoke"], dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the smoke container exists, then interrupt.
        let deadline = Instant::now() + Duration::from_secs(120);
        while containers_with("io.guix-matrix.platform=linux/arm/v7").is_empty() {
            assert!(Instant::now() < deadline, "no container started");
            std::thread::sleep(Duration::from_millis(200));
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{signal}: {err}");
        assert!(err.contains("interrupted"), "{err}");
        assert!(
            labelled_containers().is_empty(),
            "containers left after {signal}"
        );
        // The report is written as far as the run got.
        let json = std::fs::read_to_string(dir.path().join("report.json")).unwrap();
        assert!(
            json.contains("linux/arm/v7") && json.contains("interrupted (signal"),
            "{json}"
        );
    }
    let again = harness_run(
        "linux/arm/v7",
        &["smoke"],
        tempfile::tempdir().unwrap().path(),
    )
    .output()
    .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
}

/// A matrix.toml that drops the armhf workaround: the tmpfs check fails,
/// `run` exits 1 and writes a failure bundle with the command to reproduce it.
#[test]
fn a_failing_leg_exits_nonzero_and_writes_a_failure_bundle() {
    let _serial = crate::common::exclusive();
    prepared("linux/arm/v7");
    let dir = tempfile::tempdir().unwrap();
    let matrix = dir.path().join("matrix.toml");
    let text = std::fs::read_to_string(harness::paths::Checkout::find().unwrap().matrix()).unwrap();
    let broken = text.replacen(
        "compat = { arm64 = \"armv8l\" }\ncache_tmpfs = true",
        "compat = { arm64 = \"armv8l\" }\ncache_tmpfs = false",
        1,
    );
    assert_ne!(broken, text);
    std::fs::write(&matrix, broken).unwrap();
    let reports = dir.path().join("reports");
    // As a workflow run of a pull request from a fork sees it.
    let event = dir.path().join("event.json");
    std::fs::write(
        &event,
        r#"{"pull_request": {"head": {"repo": {"full_name": "someone/guix-matrix"}}}}"#,
    )
    .unwrap();
    let out = harness_run("linux/arm/v7", &["tmpfs"], &reports)
        .arg("--matrix")
        .arg(&matrix)
        .env("GITHUB_EVENT_PATH", &event)
        .env("GITHUB_REPOSITORY", "owner/guix-matrix")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("linux/arm/v7")
            && l.contains(" tmpfs ")
            && l.contains("FAILED")),
        "{text}"
    );
    let bundle = std::fs::read_to_string(reports.join("failures/arm-v7.txt")).unwrap();
    assert!(
        bundle.starts_with("WARNING: this run is of a pull request from the fork someone/guix-matrix: the reproduce line below and the checkout it runs in are that fork's code, not owner/guix-matrix's"),
        "{bundle}"
    );
    assert!(
        bundle.contains(
            "reproduce: cargo run -p harness -- repro --platform linux/arm/v7 --scenario tmpfs"
        ),
        "{bundle}"
    );
    assert!(
        bundle.contains("matrix.toml says cache_tmpfs = false"),
        "{bundle}"
    );
    assert!(
        bundle.contains("writable-layer=Value too large for defined data type"),
        "{bundle}"
    );
    assert!(
        bundle.contains("emulator: qemu-arm: qemu-arm version"),
        "{bundle}"
    );
}

#[test]
fn shell_runs_a_command_in_the_image_through_the_entry_point() {
    let _serial = crate::common::exclusive();
    prepared("linux/amd64");
    let out = bin()
        .args([
            "shell",
            "--platform",
            "linux/amd64",
            "--",
            "guix",
            "--version",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("guix (GNU Guix) 1.5.0"));
    // The same capabilities as the scenarios, never privileged mode.
    assert!(
        err.contains("--cap-add SYS_ADMIN --cap-add NET_ADMIN --security-opt seccomp=unconfined"),
        "{err}"
    );
    assert!(!err.contains("privileged"), "{err}");
}

/// A run in which every check was skipped is not a pass: exit 6, unless
/// accepted; `-q` prints no progress lines (the table still comes).
#[test]
fn a_run_where_nothing_ran_exits_6_and_quiet_means_no_progress() {
    let _shared = crate::common::shared();
    prepared("linux/amd64");
    let dir = tempfile::tempdir().unwrap();
    let out = harness_run("linux/amd64", &["pulled"], dir.path())
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(6), "{said}");
    assert!(
        said.contains("harness: 0 passed, 0 failed, 1 skipped"),
        "{said}"
    );
    assert!(
        said.contains("linux/amd64: "),
        "progress lines without -q: {said}"
    );
    let out = harness_run("linux/amd64", &["pulled"], dir.path())
        .args(["--accept-skipped", "-q"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("linux/amd64  pulled"), "{stdout}");
    assert!(
        !stderr.contains("linux/amd64: "),
        "-q printed progress lines: {stderr}"
    );
}

/// Every command takes the engine (`--engine URL`) and, as the docker CLI
/// does, the current docker context; a context that does not exist is a
/// usage error naming it.
#[test]
fn every_command_takes_the_engine_option_and_the_docker_context() {
    let out = bin()
        .args(["doctor", "--engine", "unix:///nonexistent/docker.sock"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("no Docker engine answers at unix:///nonexistent/docker.sock"),
        "{said}"
    );
    let out = bin()
        .args([
            "clean",
            "--containers-only",
            "--engine",
            "unix:///nonexistent/docker.sock",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/docker.sock"));

    // A context of the docker CLI's own config, pointing at this engine.
    let config = tempfile::tempdir().unwrap();
    let host = harness().engine.url.clone();
    use sha2::Digest as _;
    let id = hex::encode(sha2::Sha256::digest(b"here"));
    let meta = config.path().join("contexts/meta").join(id);
    std::fs::create_dir_all(&meta).unwrap();
    std::fs::write(
        meta.join("meta.json"),
        serde_json::json!({"Name": "here", "Endpoints": {"docker": {"Host": host}}}).to_string(),
    )
    .unwrap();
    std::fs::write(
        config.path().join("config.json"),
        r#"{"currentContext":"here"}"#,
    )
    .unwrap();
    let out = bin()
        .env_remove("DOCKER_HOST")
        .env("DOCKER_CONFIG", config.path())
        .args(["doctor"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("{host} answers")), "{said}");
    let out = bin()
        .env_remove("DOCKER_HOST")
        .env("DOCKER_CONFIG", config.path())
        .env("DOCKER_CONTEXT", "gone")
        .args(["clean", "--containers-only"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("docker context `gone` (DOCKER_CONTEXT)"),
        "{err}"
    );
}

/// `emulators` shows and changes nothing; `--uninstall` removes the
/// handlers the matrix needs from the host and `--install` puts them back,
/// as /proc/sys/fs/binfmt_misc shows; `--json` is versioned.
#[test]
fn emulators_shows_by_default_and_changes_the_host_only_when_asked() {
    let _serial = crate::common::exclusive();
    let handlers = || {
        let mut names: Vec<String> = std::fs::read_dir("/proc/sys/fs/binfmt_misc")
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("qemu-"))
            .collect();
        names.sort();
        names
    };
    let emulators = |args: &[&str]| {
        let out = bin().arg("emulators").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    emulators(&["--install"]);
    let installed = handlers();
    assert!(
        installed.contains(&"qemu-riscv64".to_string()),
        "{installed:?}"
    );
    let json: serde_json::Value = serde_json::from_str(&emulators(&["--json"])).unwrap();
    assert_eq!(json["version"], 1);
    let riscv = json["engines"][0]["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["platform"] == "linux/riscv64")
        .cloned()
        .unwrap();
    assert_eq!(riscv["state"], "registered", "{riscv}");
    assert_eq!(riscv["handler"]["name"], "qemu-riscv64");
    assert_eq!(handlers(), installed, "showing changes nothing");
    emulators(&["--uninstall"]);
    let after = handlers();
    let shown = emulators(&[]);
    emulators(&["--install"]);
    assert!(!after.contains(&"qemu-riscv64".to_string()), "{after:?}");
    assert!(
        shown
            .lines()
            .any(|l| l.contains("linux/riscv64") && l.contains(" missing ")),
        "{shown}"
    );
    assert!(shown.contains("harness emulators --install"), "{shown}");
    assert_eq!(handlers(), installed, "--install puts them back");
}

/// A run of several platforms runs the platform-independent steps once, on
/// a native leg, and the others name it; --no-shared-steps runs them on each.
#[test]
fn platform_independent_steps_run_once_per_run_unless_asked_on_each() {
    let _serial = crate::common::exclusive();
    prepared("linux/amd64");
    prepared("linux/386");
    let shared_on = |more: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let out = bin()
            .args([
                "run",
                "--platform",
                "linux/386",
                "--platform",
                "linux/amd64",
            ])
            .args([
                "--scenario",
                "pin",
                "--scenario",
                "faillog",
                "--scenario",
                "usage",
                "--report",
            ])
            .arg(dir.path())
            .args(more)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", crate::common::said(&out));
        let report = harness::report::RunReport::read(&dir.path().join("report.json")).unwrap();
        let mut shared = vec![];
        for leg in &report.legs {
            for o in &leg.outcomes {
                for (k, v) in &o.facts {
                    if k == "shared-on" {
                        shared.push(format!("{} {} on {v}", leg.platform, o.scenario.name()));
                    }
                }
            }
        }
        (String::from_utf8_lossy(&out.stdout).into_owned(), shared)
    };
    let (text, shared) = shared_on(&[]);
    // The first native platform as selected.
    assert!(
        text.contains("platform-independent steps: on linux/386"),
        "{text}"
    );
    assert_eq!(
        shared,
        [
            "linux/amd64 pin on linux/386",
            "linux/amd64 faillog on linux/386",
            "linux/amd64 usage on linux/386"
        ]
    );
    let (text, shared) = shared_on(&["--no-shared-steps"]);
    assert!(!text.contains("platform-independent steps"), "{text}");
    assert!(shared.is_empty(), "{shared:?}");
}

/// A leg that builds says how long each preparation step took (its
/// Dockerfile steps counted in), in the table and report.json.
#[test]
fn a_rebuilt_image_says_what_each_preparation_step_cost() {
    let _serial = crate::common::exclusive();
    let p = prepared("linux/amd64");
    // The engine loses the image on top (a new runner's would have none of it).
    block_on(harness().engine.remove_image(&p.image.tag));
    let dir = tempfile::tempdir().unwrap();
    let out = harness_run("linux/amd64", &["smoke"], dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let report = harness::report::RunReport::read(&dir.path().join("report.json")).unwrap();
    let leg = &report.legs[0];
    assert!(leg.rebuilt, "{text}");
    let steps: Vec<&str> = leg.prepare_steps.iter().map(|s| s.step.as_str()).collect();
    assert!(steps.contains(&"image"), "{steps:?}");
    assert!(steps.iter().any(|s| s.starts_with("Step ")), "{steps:?}");
    let total: f64 = leg
        .prepare_steps
        .iter()
        .map(|s| s.elapsed.as_secs_f64())
        .sum();
    assert!(
        total <= leg.prepare_time.as_secs_f64() + 1.0,
        "{total} > {:?}",
        leg.prepare_time
    );
    let row = text
        .lines()
        .find(|l| l.starts_with("linux/amd64") && l.contains("(prepare)"))
        .unwrap_or_default();
    let (_, steps) = row.rsplit_once("; ").unwrap_or_default();
    assert!(row.contains("(built)"), "{row}");
    assert!(
        steps.split(", ").any(|s| s.starts_with("image ")),
        "the row's step list names the image step: {row}"
    );
}
