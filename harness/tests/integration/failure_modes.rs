//! Known ways this breaks, reproduced on purpose: each must be reported with
//! its cause and fix, never as a raw error or a hang. These tests change the
//! kernel's binfmt_misc handlers for riscv64 and put them back afterwards.

use crate::common::{block_on, harness, prepared};
use harness::emulators::{self, EmulatorError};
use harness::engine::run::{self, Privilege, RunError, RunSpec};

const PLATFORM: &str = "linux/riscv64";

/// Puts qemu-riscv64 back as the harness registers it, whatever happened.
struct Restore;
impl Drop for Restore {
    fn drop(&mut self) {
        let h = harness();
        let helper = block_on(h.helper()).unwrap().clone();
        let names = vec!["qemu-riscv64".to_string()];
        block_on(emulators::helper_run(
            &h.engine,
            &helper,
            "unregister",
            &names,
        ))
        .unwrap();
        let back = block_on(emulators::helper_run(
            &h.engine, &helper, "register", &names,
        ))
        .unwrap();
        assert_eq!(
            back[0].state, "registered",
            "could not restore qemu-riscv64: {back:?}"
        );
    }
}

fn helper_bash(script: &str) -> run::RunOutput {
    let h = harness();
    let helper = block_on(h.helper()).unwrap().clone();
    let spec = RunSpec::new(helper, "binfmt by hand")
        .bash(script)
        .privilege(Privilege::Binfmt);
    block_on(run::run(&h.engine, &spec)).unwrap()
}

fn true_on_riscv64() -> Result<run::RunOutput, RunError> {
    let h = harness();
    let p = prepared(PLATFORM);
    let spec = RunSpec::new(p.image.tag.clone(), "exec check")
        .platform(PLATFORM)
        .cmd(["true"]);
    block_on(run::run(&h.engine, &spec))
}

#[test]
fn no_emulator_registered_is_exec_format_error_with_the_fix() {
    let _serial = crate::common::exclusive();
    prepared(PLATFORM);
    let _restore = Restore;
    let h = harness();
    let helper = block_on(h.helper()).unwrap().clone();
    block_on(emulators::helper_run(
        &h.engine,
        &helper,
        "unregister",
        &["qemu-riscv64".into()],
    ))
    .unwrap();
    let err = true_on_riscv64().expect_err("a riscv64 container must not run without its emulator");
    let msg = err.to_string();
    assert!(matches!(err, RunError::NoEmulator { .. }), "{msg}");
    assert!(
        msg.starts_with("linux/riscv64: the kernel cannot run")
            && msg.contains("exec format error"),
        "{msg}"
    );
    assert!(
        err.fix()
            .unwrap_or_default()
            .starts_with("cargo run -p harness -- emulators"),
        "{msg}"
    );
}

#[test]
fn a_handler_without_the_f_flag_is_named_wrong_with_the_fix() {
    let _serial = crate::common::exclusive();
    prepared(PLATFORM);
    let _restore = Restore;
    // Register qemu-riscv64 as Debian's conf says but without F.
    let out = helper_bash(
        "d=/proc/sys/fs/binfmt_misc; [ -e $d/register ] || mount -t binfmt_misc binfmt_misc $d; \
         [ ! -e $d/qemu-riscv64 ] || echo -1 > $d/qemu-riscv64; \
         line=$(grep -v '^#' /usr/lib/binfmt.d/qemu-riscv64.conf); echo \"${line%:*}:P\" > $d/register && cat $d/qemu-riscv64",
    );
    assert_eq!(out.exit_code, 0, "{}", out.combined);
    assert!(out.stdout.contains("flags: P\n"), "{}", out.stdout);

    let h = harness();
    let helper = block_on(h.helper()).unwrap().clone();
    let placements = block_on(h.placements()).unwrap();
    let err = block_on(emulators::register(&h.engine, &helper, &placements))
        .expect_err("must refuse a handler without F");
    let msg = err.to_string();
    assert!(matches!(err, EmulatorError::Wrong { .. }), "{msg}");
    assert!(
        msg.starts_with("linux/riscv64: emulator qemu-riscv64 is wrong"),
        "{msg}"
    );
    assert!(
        err.fix()
            .unwrap_or_default()
            .contains("echo -1 > /proc/sys/fs/binfmt_misc/qemu-riscv64"),
        "{msg}"
    );

    let err = true_on_riscv64().expect_err("the interpreter is not inside the container");
    assert!(matches!(err, RunError::EmulatorNotVisible { .. }), "{err}");
    assert!(err.to_string().contains("without the F flag"), "{err}");
}

#[test]
fn a_daemon_that_does_not_start_is_reported_not_waited_for() {
    let _serial = crate::common::exclusive();
    let h = harness();
    let p = prepared("linux/amd64");
    let spec = RunSpec::new(p.image.tag.clone(), "bad daemon flag")
        .platform(&p.platform.docker)
        .env("GUIX_DAEMON_ARGS=--no-such-flag")
        .cmd(["guix", "build", "hello"]);
    let out = block_on(run::run(&h.engine, &spec)).unwrap();
    assert_eq!(out.exit_code, 121, "{}", out.combined);
    assert!(
        out.stderr
            .contains("guix-matrix: guix-daemon exited before it answered"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("+ guix build hello"),
        "the command must not run without a daemon"
    );
}

/// The harness's decision must be what happens: the chroot check fails,
/// saying so, when a leg is placed natively but runs under qemu, or the
/// other way round.
#[test]
fn a_placement_that_disagrees_with_the_engine_fails_the_chroot_check() {
    use harness::placement::{Mode, Placement};
    let _serial = crate::common::exclusive();
    let h = harness();
    let flip = |p: &Placement| Placement {
        mode: match p.mode {
            Mode::Native => Mode::Emulated {
                handler: "qemu-x86_64".into(),
            },
            Mode::Emulated { .. } => Mode::Native,
        },
        why: "flipped by the test".into(),
        ..p.clone()
    };
    let mut native = prepared("linux/amd64");
    native.placement = flip(&native.placement);
    let outcome = block_on(harness::scenarios::run_one(
        h,
        &native,
        harness::scenarios::Scenario::Chroot,
    ));
    match &outcome.verdict {
        harness::scenarios::Verdict::Failed(why) => assert!(
            why.contains("chroot builds work here, but the harness placed linux/amd64 qemu-x86_64 (flipped by the test)"),
            "{why}"
        ),
        other => panic!("not noticed: {other:?}"),
    }
    let mut emulated = prepared("linux/arm64/v8");
    emulated.placement = flip(&emulated.placement);
    let outcome = block_on(harness::scenarios::run_one(
        h,
        &emulated,
        harness::scenarios::Scenario::Chroot,
    ));
    match &outcome.verdict {
        harness::scenarios::Verdict::Failed(why) => assert!(
            why.contains("chroot builds fail here (`clone: Invalid argument`, as under qemu-user), but the harness placed linux/arm64/v8 native"),
            "{why}"
        ),
        other => panic!("not noticed: {other:?}"),
    }
}

/// qemu-user reporting a dead guest ("uncaught target signal") is its own
/// status, retried once; an ordinary failure is not retried.
#[test]
fn emulator_crashes_are_retried_once_then_reported_apart() {
    use harness::scenarios::{retry_on_crash, Check, Scenario, Verdict};
    let _serial = crate::common::exclusive();
    let h = harness();
    let p = prepared("linux/arm/v7");
    let attempts = std::sync::atomic::AtomicUsize::new(0);
    let run_script = |script: &'static str| {
        let spec = RunSpec::new(p.image.tag.clone(), "crash")
            .platform("linux/arm/v7")
            .bash(script);
        let attempts = &attempts;
        async move {
            attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut c = Check::new(Scenario::Smoke, "linux/arm/v7");
            let out = run::run(&h.engine, &spec).await.unwrap();
            c.output(&out);
            c.expect(out.exit_code == 0, || format!("exited {}", out.exit_code));
            c.finish()
        }
    };
    let crashed = block_on(retry_on_crash("linux/arm/v7", "smoke", || {
        run_script("bash -c 'kill -SEGV $$'; exit $?")
    }));
    assert_eq!(
        attempts.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "a crash is retried once"
    );
    match &crashed.verdict {
        Verdict::EmulatorCrash(why) => assert!(
            why.contains(
                "the emulator crashed twice: qemu: uncaught target signal 11 (Segmentation fault)"
            ),
            "{why}"
        ),
        other => panic!("expected an emulator crash, got {other:?}"),
    }
    assert!(crashed.verdict.is_failure());

    attempts.store(0, std::sync::atomic::Ordering::SeqCst);
    let failed = block_on(retry_on_crash("linux/arm/v7", "smoke", || {
        run_script("exit 3")
    }));
    assert_eq!(
        attempts.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "an ordinary failure is not retried"
    );
    assert!(
        matches!(failed.verdict, Verdict::Failed(_)),
        "{:?}",
        failed.verdict
    );
}

/// Asserts that `text` holds each of `lines`, naming the first one missing.
fn says(text: &str, lines: &[String]) {
    for line in lines {
        assert!(text.contains(line.as_str()), "missing `{line}` in:\n{text}");
    }
}

/// What the fixture printed for `case=NAME`, up to the next case.
fn case<'a>(out: &'a str, name: &str) -> &'a str {
    let start = out
        .find(&format!("case={name}\n"))
        .unwrap_or_else(|| panic!("no case {name} in:\n{out}"));
    let rest = &out[start..];
    let end = rest[1..].find("\ncase=").map_or(rest.len(), |i| i + 1);
    &rest[..end]
}

/// Pins guix pull gets wrong or keeps quiet about: a commit of another
/// branch (checked out without a word), a commit that exists nowhere (a
/// libgit2 "object not found"), and a pull to a commit that is not a
/// descendant of the current generation's. The entry point's pin check names
/// each, with the fix; guix pull's exit code is kept.
#[test]
fn pins_that_guix_pull_gets_wrong_are_named_with_the_fix() {
    let _shared = crate::common::shared();
    use harness::scenarios::{fixtures_tar, kv, spec};
    let h = harness();
    let p = prepared("linux/amd64");
    let run = spec(h, &p, "pin faults")
        .bash("/fixtures/pin-faults.sh")
        .upload(
            fixtures_tar(harness(), &["pin-faults.sh", "channel.sh"]).unwrap(),
            "/",
        );
    let out = block_on(run::run(&h.engine, &run)).unwrap();
    let text = out.stdout.as_str();
    let words = text.split_whitespace().collect::<Vec<_>>();
    let commit = |k: &str| {
        words
            .iter()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k}= in:\n{text}"))
            .to_string()
    };
    let (first, second, side, dropped) = (
        commit("first"),
        commit("second"),
        commit("side"),
        commit("dropped"),
    );
    let kept = "said=guix-matrix: the pin check found a problem (above); the exit code stays guix pull's (1)";

    let other = case(text, "other-branch");
    assert_eq!(kv(other, "pull-rc").as_deref(), Some("1"), "{other}");
    says(other, &[
        format!("pins commit {side}, which is not on branch master of file:///srv/channel (it is on: side)"),
        format!("fix: pin a commit of branch master (its head is {second}) in /tmp/side.scm, or set (branch \"side\")"),
        kept.into(),
    ]);

    let missing = case(text, "missing");
    says(missing, &[
        // guix's raw error, which the pin check explains
        format!("Git error: object not found - no match for id ({dropped})"),
        format!("pins commit {dropped}, which does not exist in file:///srv/channel"),
        format!("fix: pin a commit of branch master of file:///srv/channel (its head is {second}) in /tmp/missing.scm"),
        kept.into(),
    ]);

    let downgrade = case(text, "downgrade");
    says(downgrade, &[
        // guix itself refuses
        format!("aborting update of channel 'guix' to commit {first}, which is not a descendant of {second}"),
        format!("asks for commit {first}, which is not a descendant of {second}, the commit the current generation was pulled from"),
        format!("fix: pin {second} or a newer commit of branch master in /tmp/first.scm; to go back on purpose: guix pull --allow-downgrades"),
        kept.into(),
    ]);

    let forward = case(text, "forward");
    assert!(
        forward.contains("said=guix-matrix: pin check: channel 'guix' at ")
            && forward.contains(", the current generation's commit: ok")
            && !forward.contains("found a problem"),
        "a sound pin must pass: {forward}"
    );

    let said: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("said="))
        .filter(|l| l.starts_with("guix-matrix: pin check") || l.starts_with("  fix:"))
        .collect();
    insta::with_settings!({
        filters => vec![(r"checkouts/[0-9a-z]{52}", "checkouts/[CHECKOUT]")],
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, { insta::assert_snapshot!("pin_check_said", said.join("\n")) });
}

/// A step over its time budget names the step and the time it was given, its
/// container is removed, and the budget is step_timeout_secs × the platform's
/// slowdown: the same check on arm/v7 is given 6 s with slowdown 6.0 and 1 s
/// with slowdown 1.0 (step_timeout_secs = 1; the check needs ~10 s there).
#[test]
fn a_step_over_its_budget_names_step_and_time_scaled_by_slowdown() {
    use harness::scenarios::{Scenario, Verdict};
    let _serial = crate::common::exclusive();
    prepared("linux/arm/v7");
    for (slowdown, secs) in [(6.0, 6), (1.0, 1)] {
        let mut matrix = harness().matrix.clone();
        matrix.defaults.step_timeout_secs = 1;
        for p in matrix.platforms.iter_mut() {
            p.slowdown = slowdown;
        }
        let h = block_on(harness::pipeline::Pipeline::new(
            matrix,
            harness().options.clone(),
        ))
        .unwrap();
        let platform = h.matrix.find("linux/arm/v7").unwrap().clone();
        let leg = block_on(harness::leg::leg(
            &h,
            &platform,
            &[Scenario::Faillog],
            &harness::leg::Quiet,
        ));
        assert_eq!(leg.error, None, "prepare is warm and fast");
        match &leg.outcomes[0].verdict {
            Verdict::Failed(why) => assert!(
                why.starts_with(&format!(
                    "linux/arm/v7: faillog: timed out after {secs}s; last output:"
                )),
                "slowdown {slowdown}: {why}"
            ),
            other => panic!("slowdown {slowdown}: the step must time out, got {other:?}"),
        }
        let left = block_on(h.engine.managed_containers(Some("linux/arm/v7"))).unwrap();
        assert!(
            left.is_empty(),
            "containers left after the timeout: {left:?}"
        );
    }
}

/// A daemon socket left by an earlier run (or baked into an image by `docker
/// commit`) is not taken for a live daemon: without the fix the command ran
/// at once and guix said `failed to connect to
/// `/var/guix/daemon-socket/socket': Connection refused`.
#[test]
fn a_stale_daemon_socket_is_not_taken_for_a_live_daemon() {
    let _shared = crate::common::shared();
    let h = harness();
    let p = prepared("linux/amd64");
    let spec = harness::scenarios::spec(h, &p, "stale socket").bash(
        "/entry-point.sh true >/dev/null 2>&1; \
         test -S /var/guix/daemon-socket/socket && echo stale-socket=yes; \
         GUIX_DAEMON_ARGS=--no-such-flag /entry-point.sh guix build hello; echo rc=$?",
    );
    let out = block_on(run::run(&h.engine, &spec)).unwrap();
    let said = &out.combined;
    assert!(said.contains("stale-socket=yes"), "{said}");
    assert!(
        !said.contains("failed to connect to"),
        "the command ran against a dead socket:\n{said}"
    );
    assert!(
        said.contains("guix-matrix: guix-daemon exited before it answered")
            && said.contains("rc=121"),
        "{said}"
    );
}

/// A daemon that dies while the command runs is named as the cause of guix's
/// `failed to connect to …/daemon-socket/socket`, and the exit code is kept.
#[test]
fn a_daemon_that_dies_during_the_command_is_named() {
    let _shared = crate::common::shared();
    let h = harness();
    let p = prepared("linux/amd64");
    let spec = harness::scenarios::spec(h, &p, "daemon dies").bash(
        "/entry-point.sh bash -c 'for s in /proc/[0-9]*/comm; do \
           [ \"$(cat $s 2>/dev/null)\" = guix-daemon ] && kill -9 $(basename $(dirname $s)); done; \
           sleep 0.5; guix gc --list-dead'; echo rc=$?",
    );
    let out = block_on(run::run(&h.engine, &spec)).unwrap();
    let said = &out.combined;
    assert!(
        said.contains("failed to connect to"),
        "guix's own error: {said}"
    );
    assert!(
        said.contains("guix-matrix: guix-daemon died while the command ran (killed by signal 9)")
            && said.contains("rc=1"),
        "{said}"
    );
}

/// The image chooses its daemon flags where it runs. An arm64 image whose
/// entry point cannot see qemu (its emulator() spoiled) tries chroot builds
/// under qemu: the chroot and defaults checks fail. An amd64 image baked
/// with GUIX_MATRIX_CHROOT=no loses isolation natively: the defaults check
/// fails.
#[test]
fn an_image_that_chooses_the_wrong_daemon_flags_fails_the_checks() {
    use harness::scenarios::{Scenario, Verdict};
    let _shared = crate::common::shared();
    let h = harness();
    let spoiled = |platform: &str, script: &str, changes: &str, tag: &str| {
        let mut p = prepared(platform);
        let spoil = RunSpec::new(p.image.tag.clone(), "spoil the image")
            .platform(&p.platform.docker)
            .bash(script)
            .with_options(None, true);
        let out = block_on(run::run(&h.engine, &spoil)).unwrap();
        assert_eq!(out.exit_code, 0, "{}", out.combined);
        let id = out.kept_container.expect("kept");
        block_on(h.engine.commit_with(&id, tag, changes)).unwrap();
        block_on(h.engine.remove_container(&id));
        p.image.tag = tag.into();
        p
    };
    let failed = |p: &harness::pipeline::Prepared, s: Scenario| match block_on(
        harness::scenarios::run_one(h, p, s),
    )
    .verdict
    {
        Verdict::Failed(why) => why,
        other => panic!("{} passed a spoiled image: {other:?}", s.name()),
    };
    let tag = "guix-matrix-brokenflags:arm64-v8";
    let blind = spoiled(
        "linux/arm64/v8",
        "sed -i 's|^emulator() {$|emulator() { return 0;|' /entry-point.sh && grep -q 'emulator() { return 0;' /entry-point.sh",
        "ENTRYPOINT [\"/entry-point.sh\"]\nCMD [\"sh\"]",
        tag,
    );
    let chroot = failed(&blind, Scenario::Chroot);
    let defaults = failed(&blind, Scenario::Defaults);
    block_on(h.engine.remove_image(tag));
    assert!(
        chroot
            .contains("the entry point chose daemon flags `` but linux/arm64/v8 runs qemu-aarch64")
            && chroot.contains("(GUIX_MATRIX_CHROOT=auto) the builder did not run"),
        "{chroot}"
    );
    assert!(
        defaults.contains("fails with the daemon flags the image chose")
            && defaults.contains("clone: Invalid argument"),
        "{defaults}"
    );

    let tag = "guix-matrix-brokenflags:amd64";
    let never = spoiled(
        "linux/amd64",
        "true",
        "ENV GUIX_MATRIX_CHROOT=no\nENTRYPOINT [\"/entry-point.sh\"]\nCMD [\"sh\"]",
        tag,
    );
    let defaults = failed(&never, Scenario::Defaults);
    block_on(h.engine.remove_image(tag));
    assert!(
        defaults.contains(
            "the image started guix-daemon with `--disable-chroot`, but linux/amd64 runs native"
        ),
        "{defaults}"
    );
}

/// Each check of `defaults` sees its own fault: an image whose ACL trusts a
/// key that is not ours, whose entry point no longer traces, whose default
/// URL list is gone and whose default command is not a shell.
#[test]
fn the_defaults_check_sees_a_foreign_key_no_trace_no_urls_and_no_shell() {
    use harness::scenarios::{Scenario, Verdict};
    let _shared = crate::common::shared();
    let h = harness();
    let mut p = prepared("linux/amd64");
    let spoil = harness::engine::run::RunSpec::new(p.image.tag.clone(), "spoil the image")
        .platform(&p.platform.docker)
        .bash(
            "sed -i 's/^set -exuo pipefail$/set -euo pipefail/' /entry-point.sh && \\
             echo '(public-key (ecc (curve Ed25519) (q #00000000000000000000000000000000000000000000000000000000000000AA#)))' > /tmp/k && \\
             guix archive --authorize < /tmp/k && rm -f /etc/guix-matrix/substitute-urls",
        )
        .with_options(None, true);
    let out = block_on(run::run(&h.engine, &spoil)).unwrap();
    assert_eq!(out.exit_code, 0, "{}", out.combined);
    let id = out.kept_container.expect("kept");
    let tag = "guix-matrix-spoiled:amd64";
    block_on(
        h.engine
            .commit_with(&id, tag, "ENTRYPOINT [\"/entry-point.sh\"]\nCMD [\"true\"]"),
    )
    .unwrap();
    block_on(h.engine.remove_container(&id));
    p.image.tag = tag.into();
    let outcome = block_on(harness::scenarios::run_one(h, &p, Scenario::Defaults));
    block_on(h.engine.remove_image(tag));
    let Verdict::Failed(why) = &outcome.verdict else {
        panic!(
            "the defaults check passed a spoiled image: {:?}",
            outcome.verdict
        )
    };
    for fault in [
        "the entry point's trace (set -x) must show the command",
        "not ours [\"00000000000000000000000000000000000000000000000000000000000000AA\"]",
        "the running guix-daemon's substitute servers are not substitutes/urls",
        "must give a shell where guix works",
    ] {
        assert!(why.contains(fault), "`{fault}` not in: {why}");
    }
}

/// The image's online step (guix-pull.sh), run offline: it pulls with
/// --fallback, runs the same pin check as the entry point, keeps guix pull's
/// exit code and leaves no temporary file.
#[test]
fn the_pull_step_falls_back_checks_the_pin_and_cleans_up_even_when_it_fails() {
    let _shared = crate::common::shared();
    let h = harness();
    let p = prepared("linux/amd64");
    let spec = harness::scenarios::spec(h, &p, "pull step offline").bash(
        "before=$(ls /tmp | wc -l); /entry-point.sh /usr/local/bin/guix-pull.sh; echo rc=$?; echo tmp-left=$(( $(ls /tmp | wc -l) - before ))",
    );
    let out = block_on(run::run(&h.engine, &spec)).unwrap();
    let said = &out.combined;
    assert!(
        said.contains("+ guix pull --channels=/root/.config/guix/channels.scm --fallback"),
        "{said}"
    );
    assert!(said.contains("guix-matrix: pin check:"), "{said}");
    let rc = harness::scenarios::kv(&out.stdout, "rc").unwrap_or_default();
    assert!(
        rc != "0" && !rc.is_empty(),
        "offline the pull fails, and says so: rc={rc}\n{said}"
    );
    assert_eq!(
        harness::scenarios::kv(&out.stdout, "tmp-left").as_deref(),
        Some("0"),
        "{said}"
    );
}
