//! `harness` as a shell user meets it without an engine: completions and man pages.

use crate::common::command as bin;

/// Completions and man pages come from the CLI definition, anywhere (no
/// checkout needed), and know every command and option.
#[test]
fn completions_and_man_pages_are_generated_from_the_cli() {
    let nowhere = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = bin()
            .current_dir(nowhere.path())
            .env_remove("GUIX_MATRIX_ROOT")
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        for word in ["verify", "release", "trust-key", "require-verified"] {
            assert!(text.contains(word), "{shell} completions lack {word}");
        }
    }
    let man = nowhere.path().join("man1");
    let out = bin()
        .current_dir(nowhere.path())
        .env_remove("GUIX_MATRIX_ROOT")
        .args(["man", "--out"])
        .arg(&man)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = std::fs::read_to_string(man.join("harness-run.1")).unwrap();
    assert!(
        run.contains("accept\\-skipped") && run.contains("from"),
        "{run}"
    );
    let top = std::fs::read_to_string(man.join("harness.1")).unwrap();
    assert!(
        top.contains("unverified"),
        "the exit codes are in the man page"
    );
}

/// A path the user gave that is wrong is the user's to fix: exit 2 with the
/// fix, not 3 ("the machine is not ready").
#[test]
fn a_wrong_path_given_is_a_usage_error_with_its_fix() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-release");
    let out = bin().arg("verify").arg(&missing).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("fix: check the path"), "{err}");
    let prefix = dir.path().join("release");
    assert!(bin()
        .arg("keygen")
        .arg(&prefix)
        .output()
        .unwrap()
        .status
        .success());
    let out = bin().arg("keygen").arg(&prefix).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("is never overwritten"), "{err}");
}

/// `doctor` exits 0 when the machine is ready and 3 when it is not (here:
/// no engine), its findings as JSON with `--json`, the engine's fix the
/// words every other command gives.
#[test]
fn doctor_says_json_and_exits_3_when_the_machine_is_not_ready() {
    let out = bin()
        .args(["doctor", "--json"])
        .env("DOCKER_HOST", "unix:///nonexistent.sock")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["version"], 1);
    assert_eq!(json["ready"], false);
    let engine = &json["findings"][0];
    assert_eq!(
        (engine["check"].as_str(), engine["level"].as_str()),
        (Some("engine"), Some("problem"))
    );
    assert_eq!(engine["fix"], harness::engine::ENGINE_FIX);
}

#[test]
fn an_option_given_before_its_command_still_works_for_one_release_and_says_where_it_goes() {
    let root = env!("CARGO_MANIFEST_DIR").to_string() + "/..";
    let old = crate::common::command()
        .args(["--root", &root, "matrix"])
        .output()
        .unwrap();
    let new = crate::common::command()
        .args(["matrix", "--root", &root])
        .output()
        .unwrap();
    assert!(old.status.success() && new.status.success());
    assert_eq!(old.stdout, new.stdout);
    let err = String::from_utf8_lossy(&old.stderr);
    assert!(
        err.contains("`--root` before the command is deprecated: put it after the command"),
        "{err}"
    );
    assert!(
        new.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&new.stderr)
    );
    // An option a command does not take is refused, not ignored.
    let out = crate::common::command()
        .args(["keygen", "--engine", "tcp://e:2376", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
