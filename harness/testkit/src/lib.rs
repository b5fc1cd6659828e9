//! What the harness's integration tests and benchmarks share, as a crate of
//! its own (no `#[path]` includes): one runtime, one CLI driver, one count
//! of what was left labelled, scratch checkouts, a local registry and a
//! second engine.

pub mod cli;
pub mod engine;
pub mod registry;
pub mod tree;

pub use cli::{said, Cli};
pub use engine::SecondEngine;
pub use registry::LocalRegistry;

use harness::engine::containers::Leftovers;
use harness::engine::Engine;
use std::future::Future;
use std::sync::OnceLock;
use tokio::runtime::Runtime;

/// The one tokio runtime of a test binary.
pub fn rt() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// Runs `f` to completion on the shared runtime.
pub fn block_on<F: Future>(f: F) -> F::Output {
    rt().block_on(f)
}

/// What carries the harness's label in `engine` (tags under `prefix`); an
/// engine that cannot be asked fails the test, it never counts as zero.
pub fn leftovers(engine: &Engine, prefix: &str) -> Leftovers {
    block_on(engine.leftovers(prefix))
        .unwrap_or_else(|e| panic!("cannot count what the harness left in {}: {e}", engine.url))
}
