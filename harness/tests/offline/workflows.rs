//! The GitHub workflows only run harness commands that exist: every
//! `harness …` line in .github/workflows/*.yml must parse with the real CLI.

use clap::Parser;

fn harness_invocations() -> Vec<(String, Vec<String>)> {
    let dir = harness::paths::Checkout::find()
        .unwrap()
        .root
        .join(".github/workflows");
    let re = regex::Regex::new(
        r"(?:\./target/debug/harness|cargo run(?: -q)? -p harness --)[ \t]+([^|>&)\n]*)",
    )
    .unwrap();
    let mut found = vec![];
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for caps in re.captures_iter(&text) {
            // Values reach the commands through env:, never through ${{ }}.
            let args = caps[1]
                .replace("$COMMIT", "0123456789abcdef0123456789abcdef01234567")
                .replace("$PLATFORM", "linux/amd64")
                .replace("$TARGET", "ghcr.io/o/guix-matrix")
                .replace("$TAG", "v20260101")
                .replace("${FROM:+--from \"$FROM\"}", "--from image-cache")
                .replace("$FROM", "ghcr.io/o/guix-matrix:latest")
                .replace("$SLUG", "amd64")
                .replace("\"${args[@]}\"", "--report reports-amd64/report.json");
            let args: Vec<String> = args
                .split_whitespace()
                .map(|a| a.trim_matches('"').to_string())
                .collect();
            found.push((
                path.file_name().unwrap().to_string_lossy().into_owned(),
                args,
            ));
        }
    }
    found
}

#[test]
fn every_harness_command_in_the_workflows_parses() {
    let found = harness_invocations();
    assert!(
        found.len() >= 8,
        "expected the workflows to run the harness, found {found:?}"
    );
    for (file, args) in found {
        assert!(
            !args.iter().any(|a| a.contains("${{")),
            "{file}: unreplaced expression in {args:?}"
        );
        let parsed = harness::cli::Cli::try_parse_from(
            std::iter::once("harness".to_string()).chain(args.iter().cloned()),
        );
        assert!(
            parsed.is_ok(),
            "{file}: `harness {}` does not parse:\n{}",
            args.join(" "),
            parsed.err().map(|e| e.to_string()).unwrap_or_default()
        );
    }
}

/// Every workflow file, parsed.
fn workflows() -> Vec<(String, serde_norway::Value)> {
    let dir = harness::paths::Checkout::find()
        .unwrap()
        .root
        .join(".github/workflows");
    let mut found: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let yaml =
                serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                yaml,
            )
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

fn jobs(wf: &serde_norway::Value) -> Vec<(String, &serde_norway::Value)> {
    wf["jobs"]
        .as_mapping()
        .expect("jobs")
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_string(), v))
        .collect()
}

fn steps(job: &serde_norway::Value) -> &[serde_norway::Value] {
    job["steps"].as_sequence().map_or(&[], Vec::as_slice)
}

/// The rules zizmor and actionlint check in .ci/run, held here too so that a
/// workflow edit that breaks one fails `cargo test` with the rule named.
#[test]
fn workflows_are_least_privilege_pinned_and_free_of_template_injection() {
    let all = workflows();
    assert_eq!(
        all.len(),
        4,
        "{:?}",
        all.iter().map(|w| &w.0).collect::<Vec<_>>()
    );
    let sha = regex::Regex::new(r"^[^@]+@[0-9a-f]{40}$").unwrap();
    for (file, wf) in &all {
        assert!(
            wf["concurrency"]["group"].is_string(),
            "{file}: no concurrency group (a new run must not race or pile up)"
        );
        let top = &wf["permissions"];
        assert!(
            top.as_mapping()
                .is_some_and(|m| m.values().all(|v| v.as_str() == Some("read"))),
            "{file}: top-level permissions must be read-only or empty: {top:?}"
        );
        // A leg's runner comes from matrix.toml's [[runner]] rows: they must be pinned too.
        let m = harness::matrix::Matrix::load(harness::paths::Checkout::find().unwrap().matrix())
            .unwrap();
        for (name, job) in jobs(wf) {
            let runner = job["runs-on"].as_str().unwrap_or_default();
            let labels: Vec<&str> = if runner == "${{ matrix.platform.runner }}" {
                m.runners.iter().map(|r| r.label.as_str()).collect()
            } else {
                vec![runner]
            };
            for runner in labels {
                assert!(
                    runner.starts_with("ubuntu-") && !runner.contains("-latest"),
                    "{file}/{name}: runs-on `{runner}` is not a pinned runner image"
                );
            }
            assert!(job["timeout-minutes"].is_u64(), "{file}/{name}: no timeout");
            let writes = job["permissions"]
                .as_mapping()
                .is_some_and(|m| m.values().any(|v| v.as_str() == Some("write")));
            assert!(
                !writes || job["needs"].is_string() || job["needs"].is_sequence(),
                "{file}/{name}: a job that may write must come after the job that proved the result"
            );
            for step in steps(job) {
                if let Some(run) = step["run"].as_str() {
                    assert!(
                        !run.contains("${{"),
                        "{file}/{name}: `${{{{ }}}}` inside run: (pass it through env:): {run}"
                    );
                    assert!(
                        !writes || !run.contains("harness run"),
                        "{file}/{name}: a job that may write runs the matrix: {run}"
                    );
                }
                let Some(uses) = step["uses"].as_str() else {
                    continue;
                };
                assert!(
                    sha.is_match(uses),
                    "{file}/{name}: `{uses}` is not pinned by full commit SHA"
                );
                if uses.starts_with("actions/checkout@") {
                    assert_eq!(
                        step["with"]["persist-credentials"].as_bool(),
                        Some(false),
                        "{file}/{name}: checkout keeps the token on disk"
                    );
                }
            }
        }
    }
    let text = std::fs::read_to_string(
        harness::paths::Checkout::find()
            .unwrap()
            .root
            .join(".github/dependabot.yml"),
    )
    .expect(".github/dependabot.yml");
    for ecosystem in ["github-actions", "cargo"] {
        assert!(
            text.contains(ecosystem),
            "dependabot does not update {ecosystem}"
        );
    }
}

/// Every pinned action carries its version in a comment, for people and dependabot.
#[test]
fn pinned_actions_name_their_version() {
    let dir = harness::paths::Checkout::find()
        .unwrap()
        .root
        .join(".github/workflows");
    let re = regex::Regex::new(r"uses: [^@\s]+@[0-9a-f]{40}(.*)").unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        for caps in re.captures_iter(&std::fs::read_to_string(&path).unwrap()) {
            assert!(
                caps[1].trim_start().starts_with("# v") || caps[1].contains("# stable"),
                "{}: `{}` has no version comment",
                path.display(),
                &caps[0]
            );
        }
    }
}

#[test]
fn matrix_json_lists_every_platform_for_the_ci_matrix() {
    let out = crate::common::command()
        .args(["matrix", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["version"], 1, "versioned");
    let platforms = json["platforms"].as_array().unwrap();
    // Every workflow takes the platforms out of the versioned object.
    let root = harness::paths::Checkout::find().unwrap().root;
    for wf in ["ci.yml", "release.yml", "nightly.yml"] {
        let text = std::fs::read_to_string(root.join(".github/workflows").join(wf)).unwrap();
        assert!(
            text.contains("matrix --json | jq -c .platforms)"),
            "{wf} reads `matrix --json` as a bare array"
        );
    }
    let m =
        harness::matrix::Matrix::load(harness::paths::Checkout::find().unwrap().matrix()).unwrap();
    assert_eq!(platforms.len(), m.platforms.len());
    for (json, p) in platforms.iter().zip(&m.platforms) {
        assert_eq!(json["docker"], p.docker.as_str());
        assert_eq!(json["debian_arch"], p.debian_arch.as_str());
        assert_eq!(json["slug"], p.slug().as_str());
        // The content hash is the tree's, as the image's label will carry it.
        let content = harness::recipe::inputs(&m, &root, p, None).unwrap().hash;
        assert_eq!(json["content"], content.as_str());
    }
    // The CI legs key their image cache on it.
    let ci = std::fs::read_to_string(root.join(".github/workflows/ci.yml")).unwrap();
    assert!(ci.contains(
        "key: guix-matrix-image-${{ matrix.platform.slug }}-${{ matrix.platform.content }}"
    ));
    // Each leg's runner: arm64 natively on an arm64 runner, the rest on
    // x86_64 (386 natively there, the others under qemu).
    let runner = |docker: &str| {
        let row = platforms.iter().find(|j| j["docker"] == docker).unwrap();
        format!(
            "{} {}",
            row["runner"].as_str().unwrap(),
            row["placement"].as_str().unwrap()
        )
    };
    assert_eq!(runner("linux/arm64/v8"), "ubuntu-24.04-arm native");
    assert_eq!(runner("linux/amd64"), "ubuntu-24.04 native");
    assert_eq!(runner("linux/386"), "ubuntu-24.04 native");
    assert_eq!(runner("linux/arm/v7"), "ubuntu-24.04 qemu-arm");
    assert_eq!(runner("linux/riscv64"), "ubuntu-24.04 qemu-riscv64");
    for wf in ["ci.yml", "nightly.yml"] {
        let text = std::fs::read_to_string(root.join(".github/workflows").join(wf)).unwrap();
        assert!(
            text.contains("runs-on: ${{ matrix.platform.runner }}"),
            "{wf}: the legs must run on the platform's runner"
        );
    }
}

#[test]
fn a_bad_matrix_file_is_a_clear_error_and_a_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("matrix.toml");
    std::fs::write(&path, "[defaults]\nbase_image = 3\n").unwrap();
    let out = crate::common::command()
        .args(["matrix", "--matrix"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:2:", path.display())) && err.contains("invalid type"),
        "{err}"
    );
}

/// The release ships the emulator helpers and the readdir probes only when
/// the publishing engine has this tree's: the prove jobs, which made and
/// used them (each runner its architecture's helper), hand them on with
/// their proved image, and the publish job
/// loads them before `harness release` (it runs no image itself). Without
/// that, a published release would carry neither, and a first repro from
/// it would build both.
#[test]
fn the_prove_jobs_hand_the_helper_and_probes_to_the_release() {
    let (_, release) = workflows()
        .into_iter()
        .find(|(f, _)| f == "release.yml")
        .expect("release.yml");
    let runs = |job: &str| -> Vec<String> {
        steps(&release["jobs"][job])
            .iter()
            .filter_map(|s| s["run"].as_str().map(str::to_string))
            .collect()
    };
    let d = harness::matrix::Matrix::load(harness::paths::Checkout::find().unwrap().matrix())
        .unwrap()
        .defaults;
    let prove = runs("prove");
    let at = |what: &str| prove.iter().position(|r| r.contains(what));
    let save = at("docker save").expect("the prove job saves its proved image");
    // It hands on the tools its run used, as its report names them (the
    // release ships no other), not whatever the engine has under a tag.
    let save = &prove[save];
    assert!(
        save.contains(".tools[]") && save.contains("report.json"),
        "the prove job does not hand on the tools its report names: {save}"
    );
    assert!(
        !prove.iter().any(|r| r.contains("harness emulators")),
        "a helper made outside the run is not one it proved: {prove:?}"
    );
    for repo in [
        format!("{}:$SLUG", d.image),
        format!("{}-base:$SLUG", d.image),
    ] {
        assert!(
            save.contains(&repo),
            "the prove job does not hand on {repo}: {save}"
        );
    }
    let publish = runs("publish");
    let at = |what: &str| {
        publish
            .iter()
            .position(|r| r.contains(what))
            .unwrap_or_else(|| panic!("the publish job has no step running `{what}`: {publish:?}"))
    };
    assert!(at("docker load") < at("harness release"), "{publish:?}");
}

/// Every release is rebuilt on one platform and the finding goes into its
/// notes: the rebuild job (read-only) runs `harness rebuild --check` of the
/// tag just published with `--notes`, after publish; the notes job, which
/// may write the release, runs no image and adds that file to the notes
/// whatever the rebuild's outcome.
#[test]
fn each_release_is_rebuilt_on_one_platform_and_its_notes_say_so() {
    let (_, release) = workflows()
        .into_iter()
        .find(|(f, _)| f == "release.yml")
        .expect("release.yml");
    let job = |name: &str| &release["jobs"][name];
    let runs = |name: &str| -> String {
        steps(job(name))
            .iter()
            .filter_map(|s| s["run"].as_str())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let needs = |name: &str| -> Vec<String> {
        job(name)["needs"]
            .as_sequence()
            .map(|s| {
                s.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let rebuild = runs("rebuild");
    assert!(
        rebuild.contains("harness rebuild --check \"$TARGET:$TAG\" --platform linux/amd64")
            && rebuild.contains("--notes rebuild.md"),
        "the rebuild job does not rebuild the release it published: {rebuild}"
    );
    assert!(needs("rebuild").contains(&"publish".to_string()));
    let perms = job("rebuild")["permissions"]
        .as_mapping()
        .expect("permissions");
    assert!(
        perms.values().all(|v| v.as_str() == Some("read")),
        "the job that runs images holds a write token: {perms:?}"
    );
    let notes = runs("notes");
    assert!(
        notes.contains("cat rebuild.md") && notes.contains("gh release edit \"$TAG\" --notes-file"),
        "{notes}"
    );
    assert!(
        !notes.contains("docker") && !notes.contains("harness"),
        "the job that writes runs an image: {notes}"
    );
    assert!(needs("notes").contains(&"rebuild".to_string()));
    assert!(
        job("notes")["if"]
            .as_str()
            .is_some_and(|c| c.contains("always()")),
        "a rebuild that differs or fails must still reach the notes"
    );
}
