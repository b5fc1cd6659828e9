//! What the benchmarks share: the CLI as a user types it, a signing key of their own, the platforms they time.
// Each bench uses what it needs of this.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

/// The `harness` binary of this build: the one way the benches drive the CLI.
pub fn cli() -> testkit::Cli {
    testkit::Cli::new(env!("CARGO_BIN_EXE_harness"))
}

/// Runs `harness ARGS` to success: how long it took and what it said.
pub fn harness(args: &[&str]) -> (Duration, String) {
    let t = Instant::now();
    let out = cli().output(args);
    let said = testkit::said(&out);
    assert!(out.status.success(), "harness {}:\n{said}", args.join(" "));
    (t.elapsed(), said)
}

/// Releases are signed with a key of the bench's own (in `dir`), which its
/// runs trust: an unverified `--from` would build instead.
pub fn own_release_key(dir: &Path) {
    let (private, public) = harness::release::trust::keygen(&dir.join("bench")).unwrap();
    std::env::set_var("GUIX_MATRIX_SIGN_KEY", &private);
    std::env::set_var("GUIX_MATRIX_TRUST_KEY", &public);
}

/// The platforms a bench times (GUIX_MATRIX_BENCH_PLATFORMS, comma
/// separated; else `default`, or every platform of matrix.toml when that is
/// empty), and their slugs as matrix.toml gives them.
pub fn platforms(default: &[&str]) -> (Vec<String>, Vec<String>) {
    let root = harness::paths::Checkout::find().unwrap().root;
    let matrix = harness::matrix::Matrix::load(root.join("matrix.toml")).unwrap();
    let asked: Vec<String> = match std::env::var("GUIX_MATRIX_BENCH_PLATFORMS") {
        Ok(v) => v.split(',').map(str::to_string).collect(),
        Err(_) if default.is_empty() => matrix.platforms.iter().map(|p| p.docker.clone()).collect(),
        Err(_) => default.iter().map(|p| p.to_string()).collect(),
    };
    let slugs = asked
        .iter()
        .map(|d| {
            matrix
                .find(d)
                .unwrap_or_else(|e| panic!("GUIX_MATRIX_BENCH_PLATFORMS: {d}: {e}"))
                .slug()
        })
        .collect();
    (asked, slugs)
}
