//! The spine on the native platform: the image builds, the entry point runs
//! Guix with a daemon that answers and is gone afterwards, exit codes survive.

use crate::common::{block_on, harness, prepared};
use harness::engine::run::{self, RunSpec};
use harness::scenarios::{self, Scenario};

fn entry_point(args: &[&str]) -> run::RunOutput {
    let h = harness();
    let p = prepared("linux/amd64");
    let spec = RunSpec::new(p.image.tag.clone(), "amd64 test")
        .platform(&p.platform.docker)
        .cmd(args.iter().copied())
        .timeout(h.step_timeout(&p.placement));
    block_on(run::run(&h.engine, &spec)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn image_carries_platform_and_inputs_labels() {
    let _shared = crate::common::shared();
    let h = harness();
    let p = prepared("linux/amd64");
    let img = block_on(h.engine.local_image(&p.image.tag))
        .unwrap()
        .expect("image is in the engine");
    assert_eq!(img.architecture, "amd64");
    assert_eq!(
        img.labels.get(harness::names::LABEL_INPUTS),
        Some(&p.image.inputs)
    );
    assert_eq!(
        img.labels
            .get(harness::names::LABEL_MANAGED)
            .map(String::as_str),
        Some("true")
    );
    // Where the base came from, to trace and rebuild it.
    let base = img
        .labels
        .get("io.guix-matrix.base")
        .cloned()
        .unwrap_or_default();
    assert_eq!(base, p.base.provenance);
    assert!(
        base.starts_with("mmdebstrap minbase of ") && base.contains("(rootfs sha256:")
            || base.contains("@sha256:"),
        "{base}"
    );
    assert!(img.labels.contains_key("org.opencontainers.image.title"));
    // What it is distributed under: Guix's GPL, the scripts' Apache, and
    // the Debian packages' own licenses, as the release's index says too.
    assert_eq!(
        img.labels
            .get("org.opencontainers.image.licenses")
            .map(String::as_str),
        Some(harness::names::LICENSES)
    );
    // How old its Debian packages are (max_base_age_days), when known.
    if let Some(date) = p.base.date {
        assert_eq!(
            img.labels.get(harness::names::LABEL_BASE_DATE),
            Some(&harness::base::mirror::rfc3339(date))
        );
    }
}

#[test]
fn guix_version_through_the_entry_point() {
    let _shared = crate::common::shared();
    let out = entry_point(&["guix", "--version"]);
    assert_eq!(out.exit_code, 0, "{}", out.combined);
    assert!(
        out.stdout.starts_with("guix (GNU Guix) 1.5.0\n"),
        "{}",
        out.stdout
    );
    // Every command is traced (set -x) on stderr.
    assert!(out.stderr.contains("+ guix --version"), "{}", out.stderr);
}

#[test]
fn exit_code_of_the_command_comes_back_unchanged() {
    let _shared = crate::common::shared();
    for code in [3, 1, 42] {
        let out = entry_point(&["sh", "-c", &format!("exit {code}")]);
        assert_eq!(out.exit_code, code, "{}", out.combined);
        assert!(
            out.stdout.contains("no derivation build log was written"),
            "{}",
            out.stdout
        );
    }
}

#[test]
fn daemon_answers_during_the_command_and_is_gone_after() {
    let _shared = crate::common::shared();
    let h = harness();
    let p = prepared("linux/amd64");
    let outcome = block_on(scenarios::run_one(h, &p, Scenario::Smoke));
    assert!(
        outcome.passed(),
        "{:?}\n{}",
        outcome.verdict,
        outcome.log_tail
    );
    let fact = |k: &str| {
        outcome
            .facts
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert!(fact("store-path").starts_with("/gnu/store/"));
    assert_eq!(fact("daemons-left"), "0");
}

#[test]
fn substitute_urls_are_overridable_without_rebuilding() {
    let _shared = crate::common::shared();
    let h = harness();
    let p = prepared("linux/amd64");
    let spec = RunSpec::new(p.image.tag.clone(), "substitutes override")
        .platform(&p.platform.docker)
        .env("GUIX_SUBSTITUTE_URLS=https://example.invalid")
        .cmd(["true"]);
    let out = block_on(run::run(&h.engine, &spec)).unwrap();
    assert_eq!(out.exit_code, 0);
    assert!(
        out.stderr
            .contains("--substitute-urls=https://example.invalid"),
        "{}",
        out.stderr
    );
    let default = entry_point(&["true"]);
    assert!(
        default
            .stderr
            .contains("https://ci.guix.gnu.org https://bordeaux.guix.gnu.org"),
        "{}",
        default.stderr
    );
}

#[test]
fn second_prepare_rebuilds_nothing() {
    let _shared = crate::common::shared();
    let h = harness();
    let first = prepared("linux/amd64");
    let spec = h.image_spec(&first.platform, &first.base).unwrap();
    let again = block_on(harness::engine::build::build(&h.engine, &spec, &|_| {})).unwrap();
    assert!(!again.rebuilt, "unchanged inputs must not rebuild");
    assert_eq!(again.id, first.image.id);
}

/// The entry point takes no code from its environment: a setting whose
/// value would be evaluated (arithmetic on GUIX_DAEMON_TIMEOUT ran the
/// command substitution in it before this check), a GUIX_MATRIX_CURRENT
/// that is no profile of Guix's own, or daemon flags that open it to the
/// network stop with 123, name the variable and the fix, and run nothing.
#[test]
fn settings_are_checked_and_never_evaluated() {
    let _shared = crate::common::shared();
    let h = harness();
    let p = prepared("linux/amd64");
    let script = r#"
        for setting in 'GUIX_DAEMON_TIMEOUT=BASH_VERSINFO[$(touch /tmp/pwned)0]' \
            'GUIX_DAEMON_TIMEOUT=0' 'GUIX_DAEMON_TIMEOUT=99999' \
            'GUIX_MATRIX_DAEMON_PID=1;touch /tmp/pwned' 'GUIX_MATRIX_CHROOT=$(touch /tmp/pwned)' \
            'GUIX_MATRIX_CURRENT=/tmp' 'GUIX_DAEMON_ARGS=--listen=0.0.0.0:44146' \
            'GUIX_DAEMON_ARGS=--max-jobs=2 --listen 127.0.0.1:1'; do
            env "$setting" /entry-point.sh touch /tmp/ran >/tmp/out 2>&1
            echo "rc=$?"
            grep -v '^+' /tmp/out | grep -m1 'the command did not run'
        done
        [ -e /tmp/pwned ] && echo pwned=yes || echo pwned=no
        [ -e /tmp/ran ] && echo ran=yes || echo ran=no
    "#;
    let mut spec = RunSpec::new(p.image.tag.clone(), "amd64: settings")
        .platform(&p.platform.docker)
        .cmd(["-c", script])
        .timeout(h.step_timeout(&p.placement));
    spec.entrypoint = Some(vec!["bash".into()]);
    let out = block_on(run::run(&h.engine, &spec)).unwrap_or_else(|e| panic!("{e}"));
    let said = out.stdout.clone();
    assert_eq!(said.matches("rc=123").count(), 8, "{said}");
    assert!(
        said.contains("pwned=no") && said.contains("ran=no"),
        "{said}"
    );
    for line in [
        r"guix-matrix: GUIX_DAEMON_TIMEOUT=BASH_VERSINFO\[\$\(touch\ /tmp/pwned\)0\]: not a number of seconds from 1 to 3600; the command did not run",
        "guix-matrix: GUIX_DAEMON_TIMEOUT=99999: not a number of seconds",
        r"guix-matrix: GUIX_MATRIX_DAEMON_PID=1\;touch\ /tmp/pwned: not a process id",
        "guix-matrix: GUIX_MATRIX_CHROOT=",
        "guix-matrix: GUIX_MATRIX_CURRENT=/tmp: not a profile of Guix's own",
        "guix-matrix: GUIX_DAEMON_ARGS=--listen=0.0.0.0:44146: --listen 0.0.0.0:44146 opens the daemon to the network",
        r"guix-matrix: GUIX_DAEMON_ARGS=--max-jobs=2\ --listen\ 127.0.0.1:1: --listen 127.0.0.1:1 opens",
    ] {
        assert!(said.contains(line), "`{line}` not in:\n{said}");
    }
}

/// `docker stop` (SIGTERM to the entry point, PID 1) reaches the command:
/// it cleans up and its own exit code is the container's, within seconds,
/// and the daemon is stopped after it. (Before, the entry point died of the
/// signal itself: exit 143, the command killed without its cleanup.)
#[test]
fn docker_stop_reaches_the_command_and_keeps_its_exit_code() {
    let _shared = crate::common::shared();
    let p = prepared("linux/amd64");
    let docker = |args: &[&str]| {
        let out = std::process::Command::new("docker")
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
            + &String::from_utf8_lossy(&out.stderr)
    };
    let id = docker(&[
        "run",
        "-d",
        "--label",
        "io.guix-matrix.managed=true",
        "--network",
        "none",
        "--cap-add",
        "SYS_ADMIN",
        "--cap-add",
        "NET_ADMIN",
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "apparmor=unconfined",
        &p.image.tag,
        "sh",
        "-c",
        "trap 'echo cleaning up; exit 3' TERM; echo ready; sleep 300 & wait",
    ]);
    let id = id.lines().next().unwrap_or_default().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !docker(&["logs", &id]).contains("\nready") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let started = std::time::Instant::now();
    docker(&["stop", "-t", "20", &id]);
    let took = started.elapsed();
    let code = docker(&["inspect", "-f", "{{.State.ExitCode}}", &id]);
    let logs = docker(&["logs", &id]);
    docker(&["rm", "-f", &id]);
    assert!(
        took < std::time::Duration::from_secs(5),
        "docker stop took {took:?}"
    );
    assert_eq!(code, "3", "the command's own exit code:\n{logs}");
    assert!(logs.contains("cleaning up"), "{logs}");
    assert!(
        logs.contains("guix-matrix: SIGTERM: passing it on to the command"),
        "{logs}"
    );
}

/// A failed build's logs are written as new files in the working
/// directory: a symlink planted there under a log's name is replaced, never
/// written through.
#[test]
fn failure_logs_are_never_written_through_a_symlink() {
    let _shared = crate::common::shared();
    let h = harness();
    let p = prepared("linux/amd64");
    let script = r#"
        mkdir -p /work && cd /work || exit 1
        /entry-point.sh guix build -f /fixtures/failing.scm >/dev/null 2>&1
        for f in *.drv.gz *.drv.log; do
            rm -f "$f"; echo kept >"/tmp/victim-$f"; ln -s "/tmp/victim-$f" "$f"
        done
        /entry-point.sh guix build -f /fixtures/failing.scm >/dev/null 2>&1
        echo "rc=$?"
        for f in *.drv.gz *.drv.log; do
            if [ -L "$f" ]; then echo "symlink=$f"; else echo "regular=$f"; fi
        done
        cat /tmp/victim-* | sort | uniq -c | sed 's/^ */victims=/'
    "#;
    let tar = harness::scenarios::fixtures_tar(h, &["failing.scm"]).unwrap();
    let mut spec = RunSpec::new(p.image.tag.clone(), "amd64: planted symlinks")
        .platform(&p.platform.docker)
        .cmd(["-c", script])
        .upload(tar, "/")
        .timeout(h.step_timeout(&p.placement));
    spec.entrypoint = Some(vec!["bash".into()]);
    let out = block_on(run::run(&h.engine, &spec)).unwrap_or_else(|e| panic!("{e}"));
    let said = out.stdout.clone();
    assert!(said.contains("rc=1"), "{said}\n{}", out.tail(20));
    assert!(!said.contains("symlink="), "{said}");
    assert_eq!(said.matches("regular=").count(), 2, "{said}");
    assert!(
        said.contains("victims=2 kept"),
        "the planted targets are untouched: {said}"
    );
}
