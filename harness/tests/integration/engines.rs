//! More than one engine: a run split over the main engine and a second dockerd
//! the test starts, an engine that goes away failing only its own legs, and
//! the engine arguments that must be refused with a fix; and on one engine,
//! how its legs share its check lanes.

use crate::common::{block_on, harness, prepared};
use harness::fleet::{EngineArg, Fleet};
use harness::scenarios::Scenario;
use std::process::Command;
use testkit::SecondEngine;

fn bin() -> Command {
    crate::common::command()
}

/// `harness run`: linux/amd64 on the second engine `private` (its image
/// copied there first, as a CI cache restore would), `others` on the main one.
fn split_run(
    private: &SecondEngine,
    others: &[&str],
    scenarios: &[&str],
    report: &std::path::Path,
) -> Command {
    private.load_from(&crate::common::harness().engine, "guix-matrix:amd64");
    let mut cmd = bin();
    cmd.args(["run", "--platform", "linux/amd64"]);
    for p in others {
        cmd.args(["--platform", p]);
    }
    for s in scenarios {
        cmd.args(["--scenario", s]);
    }
    cmd.arg("--report").arg(report).arg("--engine");
    cmd.arg(format!("linux/amd64={}", private.url()));
    cmd
}

/// Labelled containers left on the engine at `host`.
fn left_on(host: &str) -> usize {
    let engine = block_on(harness::engine::Engine::connect_to(host)).unwrap();
    crate::common::leftovers(&engine, "guix-matrix")
        .containers
        .len()
}

/// linux/amd64 on a second engine (its image copied there, as a CI cache
/// restore would), linux/386 and linux/arm/v7 on the main one: one run,
/// every leg passes, the report names each leg's engine and how it ran,
/// and neither engine keeps a container.
#[test]
fn a_run_split_over_two_engines_passes_and_names_each_legs_engine() {
    let _serial = crate::common::exclusive();
    for p in ["linux/amd64", "linux/386", "linux/arm/v7"] {
        prepared(p);
    }
    let private = SecondEngine::start("second", None);
    let dir = tempfile::tempdir().unwrap();
    let reports = dir.path().join("reports");
    let out = split_run(
        &private,
        &["linux/386", "linux/arm/v7"],
        &["smoke", "pin"],
        &reports,
    )
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}\n{err}");
    assert!(text.contains("on 2 engine(s)"), "{text}");
    let report = harness::report::RunReport::read(&reports.join("report.json")).unwrap();
    let leg = |p: &str| {
        report
            .leg(p)
            .unwrap_or_else(|| panic!("{p} not in {report:?}"))
            .clone()
    };
    let main = harness().engine.url.clone();
    assert_eq!(leg("linux/amd64").engine, private.url().as_str());
    assert_eq!(leg("linux/386").engine, main.as_str());
    assert_eq!(leg("linux/arm/v7").engine, main.as_str());
    assert!(
        leg("linux/amd64")
            .placement
            .starts_with("native (the engine's own architecture)"),
        "{:?}",
        leg("linux/amd64")
    );
    assert!(
        leg("linux/386")
            .placement
            .starts_with("native (an amd64 CPU runs its 32-bit programs)"),
        "{:?}",
        leg("linux/386")
    );
    assert!(
        leg("linux/arm/v7")
            .placement
            .starts_with("qemu-arm (on an amd64 engine)"),
        "{:?}",
        leg("linux/arm/v7")
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("linux/amd64") && l.contains(&private.url())),
        "the table names the engine:\n{text}"
    );
    assert_eq!(left_on(&private.url()), 0);
    assert_eq!(left_on(&main), 0);
}

/// The second engine stops after the run connected to it: its legs fail,
/// naming it and saying how to get it back; the main engine's legs pass.
#[test]
fn an_engine_that_goes_away_fails_only_its_own_legs() {
    let _serial = crate::common::exclusive();
    prepared("linux/386");
    let mut private = SecondEngine::start("away", None);
    let h = harness();
    let selected = h
        .matrix
        .select(&["linux/amd64".into(), "linux/386".into()])
        .unwrap();
    let engines = [EngineArg {
        platform: Some("amd64".into()),
        url: private.url(),
    }];
    let fleet = block_on(Fleet::connect(&h.matrix, &h.options, &engines, &selected)).unwrap();
    assert_eq!(fleet.all().len(), 2);
    private.stop();
    let legs = block_on(harness::leg::run_legs(
        &fleet,
        &selected,
        &[Scenario::Smoke],
        2,
        &harness::leg::Quiet,
    ));
    let (gone, kept) = (&legs[0], &legs[1]);
    let why = gone.error.clone().unwrap_or_default();
    eprintln!("what the user sees:\n{why}");
    assert!(
        why.contains(&format!("engine {}", private.url()))
            && why.contains("the Docker engine went away")
            && why.contains("fix: start it again"),
        "{why}"
    );
    assert!(!kept.failed(), "{kept:?}");
    assert_eq!(kept.engine, h.engine.url);
}

/// Engine arguments that cannot work are refused before anything runs,
/// naming the engine or platform and the fix.
#[test]
fn wrong_engine_arguments_are_refused_with_a_fix() {
    let _shared = crate::common::shared();
    // (arguments, environment, exit code, what stderr must say)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], i32, &'a [&'a str]);
    let cases: [Case; 6] = [
        (
            &["--engine", "linux/arm64/v8=arm-box:2376"],
            &[],
            2,
            &[
                "`arm-box:2376` is not an engine address",
                "fix: give unix:///path/to/docker.sock, tcp://HOST:PORT",
            ],
        ),
        (
            &[
                "--engine",
                "linux/386=tcp://a:2375",
                "--engine",
                "i686-linux=tcp://b:2375",
            ],
            &[],
            2,
            &[
                "linux/386 is given to two engines, tcp://a:2375 and tcp://b:2375",
                "fix: give linux/386 one --engine",
            ],
        ),
        (
            &["--engine", "linux/s390x=tcp://a:2375"],
            &[],
            2,
            &["no platform in", "matches `linux/s390x`"],
        ),
        (
            &["--engine", "linux/386"],
            &[],
            2,
            &["is not PLATFORM=URL or URL (e.g. linux/arm64/v8=tcp://arm-box:2376"],
        ),
        (
            &["--engine", "linux/386=tcp://127.0.0.1:2376"],
            &[
                ("DOCKER_TLS_VERIFY", "1"),
                ("DOCKER_CERT_PATH", "/nonexistent/certs"),
            ],
            2,
            &[
                "engine tcp://127.0.0.1:2376: TLS is asked for",
                "/nonexistent/certs/key.pem is missing",
                "fix: put the engine's client key.pem, cert.pem and ca.pem in DOCKER_CERT_PATH",
            ],
        ),
        (
            &["--engine", "linux/386=tcp://127.0.0.1:1"],
            &[],
            3,
            &[
                "no Docker engine answers at tcp://127.0.0.1:1",
                "fix: start one",
            ],
        ),
    ];
    for (args, env, code, wants) in cases {
        let dir = tempfile::tempdir().unwrap();
        let out = bin()
            .args(["run", "--platform", "linux/386", "--scenario", "smoke"])
            .arg("--report")
            .arg(dir.path())
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        for want in wants {
            assert!(err.contains(want), "{args:?}: `{want}` not in:\n{err}");
        }
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// An engine that must emulate a platform its qemu-user-static has no
/// handler for (here: linux/386 placed as if this CPU had no 32-bit mode,
/// with a handler name no qemu-user-static has) says which engine cannot run
/// which platform, and what to do.
#[test]
fn an_engine_without_an_emulator_for_a_platform_says_so() {
    let _shared = crate::common::shared();
    let h = harness();
    let p = h.matrix.find("linux/386").unwrap();
    let host = harness::placement::Machine {
        arch: "amd64".into(),
        runs_32bit: Some(false),
        handlers: vec![],
    };
    let mut placement = harness::placement::decide(p, &host);
    assert_eq!(placement.handler(), Some("qemu-i386"));
    placement.mode = harness::placement::Mode::Emulated {
        handler: "qemu-i386-nonesuch".into(),
    };
    let helper = block_on(h.helper()).unwrap().clone();
    let err = block_on(harness::emulators::register(
        &h.engine,
        &helper,
        &[placement],
    ))
    .expect_err("no qemu-i386 handler here");
    let msg = harness::error::Error::from(err).report();
    assert!(
        msg.contains(&format!(
            "engine {} (amd64) cannot run linux/386: not its architecture, and its qemu-user-static has no handler qemu-i386-nonesuch",
            h.engine.url
        )) && msg.contains("fix: run linux/386 on another engine (--engine linux/386=URL)"),
        "{msg}"
    );
}

/// A qemu-i386 handler registered on this x86_64 host takes linux/386 over
/// (the kernel tries binfmt_misc before its own formats): a new pipeline
/// sees it and places 386 under qemu, and the checks follow what happens
/// then: the emulator runs the shell, `uname -m` says i686, the image
/// chooses --disable-chroot, and the 32-bit readdir() bug appears without
/// the tmpfs workaround. The handler is removed again whatever happens.
#[test]
fn a_registered_qemu_i386_handler_makes_386_an_emulated_leg() {
    use harness::scenarios::{Scenario, Verdict};
    let _serial = crate::common::exclusive();
    prepared("linux/386");
    let main = harness();
    let helper = block_on(main.helper()).unwrap().clone();
    struct Unregister(String);
    impl Drop for Unregister {
        fn drop(&mut self) {
            let h = harness();
            let _ = block_on(harness::emulators::helper_run(
                &h.engine,
                &self.0,
                "unregister",
                &["qemu-i386".into()],
            ));
        }
    }
    let _undo = Unregister(helper.clone());
    let on = block_on(harness::emulators::helper_run(
        &main.engine,
        &helper,
        "register",
        &["qemu-i386".into()],
    ))
    .unwrap();
    assert_eq!(on[0].state, "registered", "{on:?}");

    let h = harness::pipeline::Pipeline::on(
        main.engine.clone(),
        main.matrix.clone(),
        main.options.clone(),
    );
    let p = h.matrix.find("linux/386").unwrap().clone();
    let placement = block_on(h.placement(&p)).unwrap();
    assert_eq!(placement.handler(), Some("qemu-i386"), "{placement:?}");
    assert!(
        placement
            .why
            .contains("qemu-i386 is registered on this amd64 engine"),
        "{}",
        placement.why
    );
    let leg = block_on(harness::leg::leg(
        &h,
        &p,
        &[Scenario::Smoke, Scenario::Chroot, Scenario::Tmpfs],
        &harness::leg::Quiet,
    ));
    let fact = |s: Scenario, k: &str| {
        leg.outcomes
            .iter()
            .find(|o| o.scenario == s)
            .and_then(|o| o.facts.iter().find(|(key, _)| key == k))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    for o in &leg.outcomes {
        assert_eq!(o.verdict, Verdict::Passed, "{}: {:?}", o.scenario.name(), o);
    }
    assert!(leg.error.is_none(), "{:?}", leg.error);
    assert_eq!(fact(Scenario::Smoke, "interpreter"), "qemu-i386");
    assert_eq!(fact(Scenario::Smoke, "uname-m"), "i686");
    assert_eq!(fact(Scenario::Chroot, "chroot"), "clone");
    assert_eq!(fact(Scenario::Chroot, "auto-flags"), "--disable-chroot");
    assert_eq!(
        fact(Scenario::Tmpfs, "writable-layer"),
        "Value too large for defined data type"
    );
    assert!(
        leg.placement.starts_with("qemu-i386 ("),
        "{}",
        leg.placement
    );
}

/// Ctrl-C during a run split over two engines: the run exits 130 and says
/// what it removed on each engine; neither engine keeps a labelled container.
#[test]
fn ctrl_c_cleans_every_engine() {
    use std::time::{Duration, Instant};
    let _serial = crate::common::exclusive();
    prepared("linux/amd64");
    prepared("linux/386");
    let private = SecondEngine::start("sigint", None);
    let dir = tempfile::tempdir().unwrap();
    let mut child = split_run(&private, &["linux/386"], &["usage"], dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once the second engine runs one of the leg's containers.
    let deadline = Instant::now() + Duration::from_secs(300);
    while left_on(&private.url()) == 0 {
        assert!(Instant::now() < deadline, "no container ever started there");
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(Duration::from_millis(100));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    for host in [private.url(), harness().engine.url.clone()] {
        assert!(err.contains(&format!("{host}: removed ")), "{host}:\n{err}");
        assert_eq!(left_on(&host), 0, "{host} kept a container");
    }
}

/// When each leg entered each step, and when it ended.
#[derive(Default)]
struct Times(std::sync::Mutex<Vec<(String, String, std::time::Instant)>>);

impl harness::leg::Watch for Times {
    fn step(&self, platform: &harness::matrix::Platform, step: &str) {
        let now = std::time::Instant::now();
        let mut times = self.0.lock().unwrap();
        times.push((platform.docker.clone(), step.to_string(), now));
    }
    fn finished(&self, leg: &harness::report::Leg) {
        let now = std::time::Instant::now();
        let mut times = self.0.lock().unwrap();
        times.push((leg.platform.clone(), "finished".into(), now));
    }
}

impl Times {
    /// When `platform` first entered a step starting with `step`.
    fn at(&self, platform: &str, step: &str) -> std::time::Instant {
        let times = self.0.lock().unwrap();
        times
            .iter()
            .find(|(p, s, _)| p == platform && s.starts_with(step))
            .map(|t| t.2)
            .unwrap_or_else(|| panic!("{platform} never entered `{step}`"))
    }
}

/// One check lane (`-j1`) and two legs: the second leg prepares while the
/// first checks (one leg more than the lanes is in flight), and its checks
/// wait for the lane, so two legs never check at once.
#[test]
fn the_next_leg_prepares_while_a_leg_checks_and_checks_wait_for_their_lane() {
    let _serial = crate::common::exclusive();
    prepared("linux/amd64");
    prepared("linux/386");
    let h = harness();
    let selected = h
        .matrix
        .select(&["linux/amd64".into(), "linux/386".into()])
        .unwrap();
    let fleet = block_on(Fleet::connect(&h.matrix, &h.options, &[], &selected)).unwrap();
    // Both prepared first on the run's own pipeline (whatever earlier tests
    // left), and the probes fetched: the legs below take both as done, so
    // only the lanes decide when each leg checks.
    for p in &selected {
        block_on(fleet.pipeline(p).prepare(p)).unwrap_or_else(|e| panic!("{}", e.report()));
    }
    block_on(fleet.pipeline(&selected[0]).probes()).unwrap_or_else(|e| panic!("{}", e.report()));
    let times = Times::default();
    let legs = block_on(harness::leg::run_legs(
        &fleet,
        &selected,
        &[Scenario::Smoke, Scenario::Tmpfs],
        1,
        &times,
    ));
    for leg in &legs {
        assert!(!leg.failed(), "{leg:?}");
    }
    // Which leg checked first.
    let (first, second) = match times.at("linux/amd64", "check ") < times.at("linux/386", "check ")
    {
        true => ("linux/amd64", "linux/386"),
        false => ("linux/386", "linux/amd64"),
    };
    let slack = std::time::Duration::from_millis(500);
    let first_done = times.at(first, "finished");
    assert!(
        times.at(second, "wait for a check lane") + slack < first_done,
        "{second} did not prepare while {first} checked"
    );
    assert!(
        times.at(second, "check ") + slack >= first_done,
        "{second} checked while {first} still held the only lane"
    );
    let leg = legs.iter().find(|l| l.platform == second).unwrap();
    let waited = leg
        .prepare_steps
        .iter()
        .find(|s| s.step == "wait for a check lane")
        .map(|s| s.elapsed)
        .unwrap_or_default();
    assert!(waited > slack, "the report shows the wait: {waited:?}");
    // The leg's time is its work: the wait is not counted in.
    let span = times.at(second, "finished") - times.at(second, "place");
    assert!(
        leg.elapsed + waited <= span + slack,
        "{:?} + {waited:?} > {span:?}",
        leg.elapsed
    );
}
