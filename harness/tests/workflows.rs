//! The GitHub workflows only run harness commands that exist: every
//! `harness …` line in .github/workflows/*.yml must parse with the real CLI.

use std::process::Command;

fn harness_invocations() -> Vec<(String, Vec<String>)> {
    let dir = harness::repo_root().join(".github/workflows");
    let re = regex::Regex::new(
        r"(?:\./target/debug/harness|cargo run(?: -q)? -p harness --)[ \t]+([^|>&)\n]*)",
    )
    .unwrap();
    let mut found = vec![];
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for caps in re.captures_iter(&text) {
            let args = caps[1]
                .replace(
                    "${{ steps.pin.outputs.commit }}",
                    "0123456789abcdef0123456789abcdef01234567",
                )
                .replace("${{ matrix.platform.docker }}", "linux/amd64");
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
        let out = Command::new(env!("CARGO_BIN_EXE_harness"))
            .args(&args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: `harness {}` does not parse:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn matrix_json_lists_every_platform_for_the_ci_matrix() {
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["matrix", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let platforms: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let m = harness::matrix::Matrix::load(harness::matrix::default_path()).unwrap();
    assert_eq!(platforms.len(), m.platforms.len());
    for (json, p) in platforms.iter().zip(&m.platforms) {
        assert_eq!(json["docker"], p.docker.as_str());
        assert_eq!(json["debian_arch"], p.debian_arch.as_str());
    }
}

#[test]
fn a_bad_matrix_file_is_a_clear_error_and_a_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("matrix.toml");
    std::fs::write(&path, "[defaults]\nbase_image = 3\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["--matrix"])
        .arg(&path)
        .args(["matrix"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:2:", path.display())) && err.contains("invalid type"),
        "{err}"
    );
}
