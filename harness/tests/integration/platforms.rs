//! Every row of matrix.toml: the image builds and the smoke check passes.

use crate::common::{block_on, harness, prepared};
use harness::scenarios::{self, Scenario};
use rstest::rstest;

/// The cases below, which must be exactly matrix.toml's platforms.
const CASES: [&str; 6] = [
    "linux/amd64",
    "linux/386",
    "linux/arm/v7",
    "linux/arm64/v8",
    "linux/ppc64le",
    "linux/riscv64",
];

#[test]
fn cases_match_matrix_toml() {
    let _shared = crate::common::shared();
    let m =
        harness::matrix::Matrix::load(harness::paths::Checkout::find().unwrap().matrix()).unwrap();
    let docker: Vec<&str> = m.platforms.iter().map(|p| p.docker.as_str()).collect();
    assert_eq!(
        docker, CASES,
        "matrix.toml and the rstest cases in tests/platforms.rs disagree: add or remove a #[case]"
    );
}

#[rstest]
#[case::amd64(CASES[0])]
#[case::i386(CASES[1])]
#[case::arm_v7(CASES[2])]
#[case::arm64(CASES[3])]
#[case::ppc64le(CASES[4])]
#[case::riscv64(CASES[5])]
fn smoke(#[case] platform: &str) {
    let _shared = crate::common::shared();
    let h = harness();
    let p = prepared(platform);
    let img = block_on(h.engine.local_image(&p.image.tag))
        .unwrap()
        .expect("image in the engine");
    let oci = p.platform.oci();
    assert_eq!(
        img.architecture, oci.architecture,
        "{platform}: image metadata"
    );
    let outcome = block_on(scenarios::run_one(h, &p, Scenario::Smoke));
    assert!(
        outcome.passed(),
        "{platform}: {:?}\nfacts: {:?}\n{}",
        outcome.verdict,
        outcome.facts,
        outcome.log_tail
    );
}
