//! The engine itself failing, on a private dockerd (own socket, data root and
//! exec root, network namespace) so the main engine is untouched: the engine going away while
//! runs are in flight, and a data root that fills up during an image build.

use crate::common::{block_on, harness, prepared};
use harness::engine::run::{self, RunError, RunSpec};
use harness::engine::{Engine, EngineError};
use std::path::Path;
use std::time::{Duration, Instant};
use testkit::SecondEngine;

fn tail(path: &Path) -> String {
    harness::text::tail_lines(&std::fs::read_to_string(path).unwrap_or_default(), 20)
}

#[test]
fn the_engine_going_away_mid_run_is_a_clear_error_and_the_next_run_works() {
    let _serial = crate::common::exclusive();
    let base = prepared("linux/amd64").base.reference;
    let bridge_before = Path::new("/sys/class/net/docker0").exists();
    let mut private = SecondEngine::start("gone", None);
    private.load_from(&crate::common::harness().engine, &base);
    let engine = block_on(Engine::connect_to(&private.url())).unwrap();
    let spec = |name: &str| {
        RunSpec::new(base.clone(), name)
            .platform("linux/amd64")
            .cmd(["sleep", "300"])
            .privilege(run::Privilege::None)
    };
    let started = Instant::now();
    let (spec_a, spec_b) = (spec("leg A"), spec("leg B"));
    let results = block_on(async {
        let a = run::run(&engine, &spec_a);
        let b = run::run(&engine, &spec_b);
        let stop = async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            private.stop();
        };
        let (a, b, ()) = tokio::join!(a, b, stop);
        vec![a, b]
    });
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "runs hung after the engine went away"
    );
    for r in results {
        let err = r.expect_err("a run cannot finish without its engine");
        let lost = matches!(err, RunError::Engine(EngineError::Lost { .. }));
        let msg = harness::error::Error::from(err).report();
        eprintln!("what the user sees:\n{msg}");
        assert!(
            lost,
            "{msg}\ndockerd log:\n{}",
            tail(&private.dir.join("dockerd.log"))
        );
        assert!(
            msg.contains("the Docker engine went away") && msg.contains("fix: start it again"),
            "{msg}"
        );
    }
    // The engine is back: the next run works.
    private.spawn();
    let engine = block_on(Engine::connect_to(&private.url())).unwrap();
    let out = block_on(run::run(&engine, &spec("after").cmd(["true"]))).unwrap();
    assert_eq!(out.exit_code, 0);
    drop(private);
    assert_eq!(
        Path::new("/sys/class/net/docker0").exists(),
        bridge_before,
        "the private engine must leave the host's network alone"
    );
}

#[test]
fn a_full_data_root_during_an_image_build_names_the_cause() {
    let _serial = crate::common::exclusive();
    let h = harness();
    let p = prepared("linux/amd64");
    let private = SecondEngine::start("full", Some("400m"));
    private.load_from(&crate::common::harness().engine, &p.base.reference);
    let engine = block_on(Engine::connect_to(&private.url())).unwrap();
    // The Guix layer: Debian's guix, the heavy part of the image.
    let mut spec = h.guix_spec(&p.platform);
    spec.tag = "guix-matrix-diskfull:amd64".into();
    let started = Instant::now();
    let err = block_on(harness::engine::build::build(&engine, &spec, &|_| {}))
        .expect_err("400 MiB cannot hold the image");
    let msg = err.to_string();
    eprintln!("what the user sees:\n{msg}");
    assert!(
        msg.contains("the engine's data root (") && msg.contains(") is full ("),
        "{msg}"
    );
    assert!(msg.contains("fix: free space"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(600));
    assert!(
        block_on(engine.local_image("guix-matrix-diskfull:amd64"))
            .unwrap()
            .is_none(),
        "nothing half-built is tagged"
    );
}
