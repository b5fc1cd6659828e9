//! Shared by the integration tests: one runtime and one harness per test binary,
//! so each platform's image is prepared once however many tests use it.
#![allow(dead_code)]

use harness::{Harness, Prepared};
use std::future::Future;
use std::sync::OnceLock;
use tokio::runtime::Runtime;

pub fn rt() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

pub fn block_on<F: Future>(f: F) -> F::Output {
    rt().block_on(f)
}

/// The harness, connected to the real engine (a clear panic if none answers).
pub fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("harness=info")
            .try_init();
        block_on(Harness::from_repo()).unwrap_or_else(|e| panic!("{e}"))
    })
}

/// The platform's image, built (or found up to date).
pub fn prepared(platform: &str) -> Prepared {
    let h = harness();
    let p = h
        .matrix
        .find(platform)
        .unwrap_or_else(|e| panic!("{e}"))
        .clone();
    block_on(h.prepare(&p)).unwrap_or_else(|e| panic!("{platform}: {e}"))
}
