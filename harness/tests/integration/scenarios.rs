//! Platforms × scenarios, against the real engine and real Guix.
//! One leg:   cargo test --test scenarios -- 'leg::case_3_arm_v7::scenario_3'
//! One check: cargo test --test scenarios -- Tmpfs

use crate::common::{block_on, harness, prepared};
use harness::scenarios::{self, Outcome, Scenario, Verdict};
use rstest::rstest;

fn redacted(f: impl FnOnce()) {
    insta::with_settings!({
        filters => vec![
            (r"/gnu/store/[0-9a-z]{32}-", "/gnu/store/[HASH]-"),
            (r"\b[0-9a-z]{32}-guix-matrix", "[HASH]-guix-matrix"),
            (r"checkouts/[0-9a-z]{52}", "checkouts/[CHECKOUT]"),
        ],
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, { f() });
}

fn facts(outcome: &Outcome) -> String {
    outcome
        .facts
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[rstest]
#[case::amd64("linux/amd64")]
#[case::i386("linux/386")]
#[case::arm_v7("linux/arm/v7")]
#[case::arm64("linux/arm64/v8")]
#[case::ppc64le("linux/ppc64le")]
#[case::riscv64("linux/riscv64")]
fn leg(
    #[case] platform: &str,
    #[values(
        Scenario::Pin,
        Scenario::Tmpfs,
        Scenario::Faillog,
        Scenario::Chroot,
        Scenario::Usage,
        Scenario::Defaults
    )]
    scenario: Scenario,
) {
    let _shared = crate::common::shared();
    let h = harness();
    let p = prepared(platform);
    let outcome = block_on(scenarios::run_one(h, &p, scenario));
    assert_eq!(
        outcome.verdict,
        Verdict::Passed,
        "{platform} {}: facts {:?}\n{}",
        scenario.name(),
        outcome.facts,
        outcome.log_tail
    );
    match scenario {
        // What guix pull said about the fixture channel: the same everywhere,
        // but for the entry point's line saying it runs under an emulator
        // (where it runs is asserted by the chroot and defaults checks).
        Scenario::Pin => {
            let said: Vec<&str> = outcome
                .transcript
                .lines()
                .filter(|l| !l.starts_with("guix-matrix: running under an emulator ("))
                .collect();
            redacted(|| insta::assert_snapshot!("pin_pull_said", said.join("\n")))
        }
        // The printed build log: the same everywhere once store hashes are redacted.
        Scenario::Faillog => {
            redacted(|| insta::assert_snapshot!("faillog_printed", outcome.transcript))
        }
        // What readdir() saw: one snapshot for the platforms whose cache
        // needs no tmpfs, one for those that do (armhf under qemu: its
        // overlay readdir fails, on purpose).
        Scenario::Tmpfs => {
            let mut settings = insta::Settings::clone_current();
            if p.placement.cache_tmpfs {
                settings.set_snapshot_suffix("cache-tmpfs");
            }
            settings.set_prepend_module_to_snapshot(false);
            settings.set_omit_expression(true);
            settings.bind(|| insta::assert_snapshot!("tmpfs_facts", facts(&outcome)));
        }
        // Facts differ per platform by design (builder isolated, or clone refused): asserted above.
        Scenario::Chroot => {}
        // What the usage forms said: the same on every platform.
        Scenario::Usage => redacted(|| insta::assert_snapshot!("usage_facts", facts(&outcome))),
        // The image with nothing passed in: the same on every platform, but
        // for the daemon flags it chose where it runs (asserted by the check
        // against the placement: --disable-chroot exactly under qemu).
        Scenario::Defaults => {
            let mut same = outcome.clone();
            same.facts.retain(|(k, _)| k != "daemon-flags");
            redacted(|| insta::assert_snapshot!("defaults_facts", facts(&same)))
        }
        _ => unreachable!("not in #[values]"),
    }
}

/// The tmpfs check must see the bug where the workaround is missing: on
/// armhf under qemu, with Guix's cache NOT on tmpfs, the probe fails with
/// EOVERFLOW.
#[test]
fn tmpfs_check_fails_when_matrix_drops_the_workaround_on_armhf() {
    let _shared = crate::common::shared();
    let h = harness();
    let mut p = prepared("linux/arm/v7");
    p.platform.cache_tmpfs = false;
    p.placement.cache_tmpfs = false;
    let outcome = block_on(scenarios::run_one(h, &p, Scenario::Tmpfs));
    match &outcome.verdict {
        Verdict::Failed(why) => assert!(
            why.contains("matrix.toml says cache_tmpfs = false (so the workaround is not needed)")
                && why.contains("Value too large for defined data type"),
            "{why}"
        ),
        other => panic!("the tmpfs check did not notice: {other:?}"),
    }
}

/// matrix.toml is the only platform table: a row that describes another
/// machine passes its form check, and the smoke check sees what it got
/// wrong on the real container.
#[test]
fn smoke_fails_when_a_matrix_row_describes_another_machine() {
    let _shared = crate::common::shared();
    let h = harness();
    let mut p = prepared("linux/amd64");
    p.platform.guix_system = "i686-linux".into();
    p.platform.debian_arch = "i386".into();
    p.placement.uname_m = "i686".into();
    let outcome = block_on(scenarios::run_one(h, &p, Scenario::Smoke));
    match &outcome.verdict {
        Verdict::Failed(why) => {
            for want in [
                "uname-m: expected `i686`, got `x86_64`",
                "dpkg-arch: expected `i386`, got `amd64`",
                "current-system: expected `i686-linux`, got `x86_64-linux`",
            ] {
                assert!(why.contains(want), "{want}: {why}");
            }
        }
        other => panic!("the smoke check did not notice: {other:?}"),
    }
}

#[test]
fn online_pull_says_skipped_offline_when_offline() {
    let _shared = crate::common::shared();
    // A pipeline of its own that is offline whatever the shared one is
    // (the nightly's is online): the check must say so, never pass.
    let shared = harness();
    let mut options = shared.options.clone();
    options.pull = harness::pull::Want::offline();
    let h = harness::pipeline::Pipeline::on(shared.engine.clone(), shared.matrix.clone(), options);
    let platform = h.matrix.find("linux/amd64").unwrap().clone();
    let p = block_on(h.prepare(&platform)).unwrap_or_else(|e| panic!("{}", e.report()));
    let outcome = block_on(scenarios::run_one(&h, &p, Scenario::Pulled));
    match outcome.verdict {
        Verdict::Skipped(why) => assert!(why.starts_with("offline:"), "{why}"),
        other => panic!("expected skipped: offline, got {other:?}"),
    }
}

#[test]
#[ignore = "skipped: offline (needs codeberg.org and the substitute servers); the nightly runs it with GUIX_MATRIX_ONLINE=1 -- --ignored"]
fn online_pull_to_the_pin() {
    let _shared = crate::common::shared();
    let h = harness();
    assert!(
        h.options.pull == harness::pull::Want::Pull(harness::pull::By::GuixPull),
        "set GUIX_MATRIX_ONLINE=1 to run the online leg"
    );
    for p in &h.matrix.platforms {
        let prepared = prepared(&p.docker);
        let outcome = block_on(scenarios::run_one(h, &prepared, Scenario::Pulled));
        assert_eq!(
            outcome.verdict,
            Verdict::Passed,
            "{}: {}",
            p.docker,
            outcome.log_tail
        );
    }
}
