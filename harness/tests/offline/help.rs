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
