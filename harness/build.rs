//! Stamps the binary with the commit and date of the checkout it was built
//! from, for `harness --version` (`unknown` outside a git work tree).

use std::process::Command;

/// `git ARGS` in the crate's directory, trimmed, if git answers.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let date = git(&["log", "-1", "--format=%cs"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=GUIX_MATRIX_COMMIT={commit}");
    println!("cargo:rustc-env=GUIX_MATRIX_COMMIT_DATE={date}");
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={dir}/refs/heads");
    }
}
