//! The image users' CI examples (examples/ci/), run as written against the
//! local image: each workflow parsed, its matrix expanded, its steps executed
//! the way GitHub Actions and GitLab's Docker executor execute them, with the
//! release reference `ghcr.io/OWNER/guix-matrix:v20260106` standing for the
//! platform's local image (as a user puts their registry's there). What needs
//! the internet (`guix time-machine`) says "skipped: offline" here and runs
//! with GUIX_MATRIX_ONLINE=1.

use crate::common::{harness, prepared, shared};
use serde_norway::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The release reference every example names.
const RELEASE: &str = "ghcr.io/OWNER/guix-matrix:v20260106";
/// The label on the containers this test starts itself (a container job's).
const LABEL: &str = "io.guix-matrix.test=examples";

/// One job of one example, for one matrix entry: where it runs and what it runs.
#[derive(Debug, Clone)]
struct Instance {
    file: String,
    job: String,
    platform: String,
    matrix: BTreeMap<String, String>,
    spec: Value,
}

/// How a step ended: its output, or skipped because it needs the internet.
enum Ran {
    Done(Output),
    Offline(String),
}

fn examples() -> PathBuf {
    harness().options.checkout.root.join("examples/ci")
}

fn load(name: &str) -> Value {
    let path = examples().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// `${{ matrix.KEY }}` as GitHub expands it (a missing key is empty); any
/// other expression is one this test cannot honour, so it fails.
fn expand(s: &str, matrix: &BTreeMap<String, String>) -> String {
    let re = regex::Regex::new(r"\$\{\{\s*([^}]*?)\s*\}\}").unwrap();
    re.replace_all(s, |c: &regex::Captures| {
        let expr = &c[1];
        let key = expr
            .strip_prefix("matrix.")
            .unwrap_or_else(|| panic!("an expression the examples test cannot run: {expr}"));
        matrix.get(key).cloned().unwrap_or_default()
    })
    .into_owned()
}

/// A GitHub workflow's jobs, one per matrix entry, each with its platform:
/// the matrix's `platform`, else the runner's architecture.
fn github_instances(file: &str) -> Vec<Instance> {
    let doc = load(file);
    let mut out = vec![];
    for (job, spec) in doc["jobs"].as_mapping().expect("jobs").iter() {
        let entries: Vec<BTreeMap<String, String>> =
            match spec["strategy"]["matrix"]["include"].as_sequence() {
                Some(list) => list
                    .iter()
                    .map(|e| {
                        e.as_mapping()
                            .unwrap()
                            .iter()
                            .map(|(k, v)| (text(k), text(v)))
                            .collect()
                    })
                    .collect(),
                None => vec![BTreeMap::new()],
            };
        for matrix in entries {
            let runner = expand(&text(&spec["runs-on"]), &matrix);
            let platform = matrix.get("platform").cloned().unwrap_or_else(|| {
                if runner.ends_with("-arm") {
                    "linux/arm64"
                } else {
                    "linux/amd64"
                }
                .into()
            });
            out.push(Instance {
                file: file.into(),
                job: text(job),
                platform,
                matrix,
                spec: spec.clone(),
            });
        }
    }
    out
}

/// The user's checkout: the test project and its builder for the platform.
fn checkout(platform: &str) -> tempfile::TempDir {
    let h = harness();
    let p = h.matrix.find(platform).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        h.options.checkout.root.join("fixtures/ci-project/guix.scm"),
        dir.path().join("guix.scm"),
    )
    .unwrap();
    let cc = p.probe_cc.as_deref().expect("probe_cc");
    let probes = testkit::block_on(h.probes()).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("builder"), &probes[cc]).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.path().join("builder"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::copy(
        examples().join("channels.scm"),
        dir.path().join("channels.scm"),
    )
    .unwrap();
    dir
}

/// The release reference as the platform's local image.
fn local(s: &str, platform: &str) -> String {
    s.replace(RELEASE, &prepared(platform).image.tag)
}

/// What needs the internet: here, a skip that says so; with GUIX_MATRIX_ONLINE=1, run.
fn needs_network(script: &str) -> bool {
    script.contains("guix time-machine") || script.contains("guix pull")
}

fn online() -> bool {
    std::env::var("GUIX_MATRIX_ONLINE").is_ok_and(|v| v == "1")
}

/// A `uses:` step: the two actions the examples use, done as they do them.
fn uses(action: &str) {
    if action.starts_with("actions/checkout@") {
        // The checkout is the test project, already in place.
    } else if action.starts_with("docker/setup-qemu-action@") {
        // What the action does: register qemu's handlers, F flag.
        testkit::block_on(harness().emulators()).unwrap_or_else(|e| panic!("{e}"));
    } else {
        panic!("an action the examples test cannot run: {action}");
    }
}

/// Runs one job instance as GitHub does: `run:` steps in bash -e on the
/// runner, or in `sh -e` inside the job's container.
fn run_github(i: &Instance, options_override: Option<&str>) -> Vec<Ran> {
    let dir = checkout(&i.platform);
    let container = i.spec.get("container").map(|c| {
        let image = local(&expand(&text(&c["image"]), &i.matrix), &i.platform);
        let options = options_override
            .map(str::to_string)
            .unwrap_or_else(|| expand(&text(&c["options"]), &i.matrix));
        Container::start(&image, &options, dir.path())
    });
    let mut ran = vec![];
    for step in i.spec["steps"].as_sequence().expect("steps") {
        if let Some(action) = step.get("uses") {
            uses(&text(action));
            continue;
        }
        let script = local(&expand(&text(&step["run"]), &i.matrix), &i.platform);
        if needs_network(&script) && !online() {
            ran.push(Ran::Offline(script));
            continue;
        }
        let out = match &container {
            Some(c) => c.exec(&script),
            None => Command::new("bash")
                .args(["-e", "-c", &script])
                .current_dir(dir.path())
                .output()
                .unwrap(),
        };
        let failed = !out.status.success();
        ran.push(Ran::Done(out));
        if failed {
            break;
        }
    }
    ran
}

/// A container job's container, as the runner starts it (its options, the
/// workspace mounted, kept alive by `tail`), removed when dropped.
struct Container(String);

impl Container {
    fn start(image: &str, options: &str, workspace: &Path) -> Container {
        let mut cmd = Command::new("docker");
        cmd.args(["run", "-d", "--label", LABEL])
            .args(shell_words(options))
            .arg("-v")
            .arg(format!("{}:/__w/project", workspace.display()))
            .args([
                "-w",
                "/__w/project",
                "--entrypoint",
                "tail",
                image,
                "-f",
                "/dev/null",
            ]);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", testkit::said(&out));
        Container(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn exec(&self, script: &str) -> Output {
        Command::new("docker")
            .args(["exec", &self.0, "sh", "-e", "-c", script])
            .output()
            .unwrap()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

/// The words of an options string (the examples use no quotes in them).
fn shell_words(s: &str) -> Vec<String> {
    assert!(!s.contains(['"', '\'']), "quoted options: {s}");
    s.split_whitespace().map(str::to_string).collect()
}

/// Says what ran and fails on the first step that did not pass.
fn check(i: &Instance, ran: &[Ran]) {
    for r in ran {
        match r {
            Ran::Done(out) => {
                assert!(
                    out.status.success(),
                    "{} job {} on {}: a step failed:\n{}",
                    i.file,
                    i.job,
                    i.platform,
                    testkit::said(out)
                );
                println!("{} job {} on {}: passed", i.file, i.job, i.platform);
            }
            Ran::Offline(script) => println!(
                "{} job {} on {}: skipped: offline (`{}`; GUIX_MATRIX_ONLINE=1 runs it)",
                i.file,
                i.job,
                i.platform,
                script.trim()
            ),
        }
    }
}

#[test]
fn the_six_platform_github_example_builds_on_every_platform() {
    let _g = shared();
    let all = github_instances("github-platforms.yml");
    let mut named: Vec<String> = all
        .iter()
        .map(|i| harness().matrix.find(&i.platform).unwrap().docker.clone())
        .collect();
    named.sort();
    let mut rows: Vec<String> = harness()
        .matrix
        .platforms
        .iter()
        .map(|p| p.docker.clone())
        .collect();
    rows.sort();
    assert_eq!(
        named, rows,
        "the example's matrix is every platform of matrix.toml"
    );
    // Every platform whose matrix.toml row puts the cache on tmpfs under an
    // emulator gets it in the example, unless GitHub's runner runs it natively.
    for i in &all {
        let p = harness().matrix.find(&i.platform).unwrap();
        let emulated_on_github = !(i.platform == "linux/386"
            || i.platform == "linux/amd64"
            || i.matrix["runner"].ends_with("-arm"));
        if p.cache_tmpfs && emulated_on_github {
            assert!(
                i.matrix
                    .get("cache")
                    .is_some_and(|c| c.contains("/root/.cache/guix")),
                "{}: no tmpfs for Guix's cache",
                i.platform
            );
        }
    }
    std::thread::scope(|s| {
        for i in &all {
            s.spawn(move || check(i, &run_github(i, None)));
        }
    });
}

#[test]
fn the_container_job_example_builds_and_fails_without_its_capabilities() {
    let _g = shared();
    for i in github_instances("github-container.yml") {
        check(&i, &run_github(&i, None));
        // The capabilities are what makes it work: without them guix-daemon cannot build.
        let ran = run_github(&i, Some(""));
        let failed = ran
            .iter()
            .any(|r| matches!(r, Ran::Done(o) if !o.status.success()));
        assert!(failed, "the container job passed without its options");
    }
}

#[test]
fn the_commit_example_keeps_the_build_in_the_committed_image() {
    let _g = shared();
    struct Cleanup;
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new("docker").args(["rm", "-f", "build"]).output();
            let _ = Command::new("docker")
                .args(["rmi", "-f", "my/guix-build:latest"])
                .output();
        }
    }
    let _c = Cleanup;
    for i in github_instances("github-commit.yml") {
        check(&i, &run_github(&i, None));
    }
}

#[test]
fn the_time_machine_example_says_skipped_offline_or_runs_online() {
    let _g = shared();
    for i in github_instances("github-time-machine.yml") {
        let ran = run_github(&i, None);
        if !online() {
            assert!(ran.iter().any(
                |r| matches!(r, Ran::Offline(s) if s.contains("guix time-machine -C channels.scm"))
            ));
        }
        check(&i, &ran);
    }
}

#[test]
fn the_gitlab_example_builds_on_a_runner_configured_as_shown() {
    let _g = shared();
    let config: toml::Value =
        toml::from_str(&std::fs::read_to_string(examples().join("gitlab-runner.toml")).unwrap())
            .unwrap();
    let docker = &config["runners"][0]["docker"];
    let mut caps = vec![];
    for c in docker["cap_add"].as_array().unwrap() {
        caps.extend(["--cap-add".to_string(), c.as_str().unwrap().to_string()]);
    }
    for o in docker["security_opt"].as_array().unwrap() {
        caps.extend([
            "--security-opt".to_string(),
            o.as_str().unwrap().to_string(),
        ]);
    }
    let doc = load("gitlab-ci.yml");
    for (job, spec) in doc.as_mapping().unwrap() {
        let Some(script) = spec.get("script") else {
            continue;
        };
        let image = local(&text(&spec["image"]), "linux/amd64");
        let lines: Vec<String> = script.as_sequence().unwrap().iter().map(text).collect();
        let dir = checkout("linux/amd64");
        // The Docker executor: the image's entry point, the script to its shell.
        let out = Command::new("docker")
            .args(["run", "--rm"])
            .args(&caps)
            .arg("-v")
            .arg(format!("{}:/builds/project", dir.path().display()))
            .args([
                "-w",
                "/builds/project",
                &image,
                "sh",
                "-e",
                "-c",
                &lines.join("\n"),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gitlab job {}: {}",
            text(job),
            testkit::said(&out)
        );
        println!("gitlab-ci.yml job {} on linux/amd64: passed", text(job));
    }
}
