//! Shared by the engine tier's tests: one pipeline on the real engine (so
//! each platform's image is prepared once however many tests use it), one
//! lock, and the test kit's CLI driver and leftover count.

use harness::matrix::Matrix;
use harness::paths::Checkout;
use harness::pipeline::{Options, Pipeline, Prepared};
use std::sync::OnceLock;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use testkit::{block_on, said};

/// The harness, connected to the real engine (a clear panic if none answers).
pub fn harness() -> &'static Pipeline {
    static H: OnceLock<Pipeline> = OnceLock::new();
    H.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("harness=info")
            .try_init();
        let checkout = Checkout::find().unwrap_or_else(|e| panic!("{e}"));
        let matrix = Matrix::load(checkout.matrix()).unwrap_or_else(|e| panic!("{e}"));
        let mut options = Options::new(checkout);
        // What the nightly sets; the tests themselves read no other variable.
        if std::env::var("GUIX_MATRIX_ONLINE").is_ok_and(|v| v == "1") {
            options.pull = harness::pull::Want::Pull(harness::pull::By::GuixPull);
        }
        options.allow_pull = std::env::var_os("GUIX_MATRIX_BUILD_BASE").is_none();
        block_on(Pipeline::new(matrix, options)).unwrap_or_else(|e| {
            panic!(
                "the engine tier needs a Docker engine: {}\n\
                 without one, run the engine-free tier: cargo test -p harness --lib --test offline",
                e.report()
            )
        })
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

static LOCK: RwLock<()> = RwLock::new(());

/// Held by every test that uses the engine: many at a time.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    LOCK.read().unwrap_or_else(|e| e.into_inner())
}

/// Held by the tests that look at or remove everything the harness labelled,
/// unregister an emulator, or start their own engine: alone.
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    LOCK.write().unwrap_or_else(|e| e.into_inner())
}

/// `DIR@sha256:…`: a release directory pinned by the digest of its
/// SHA256SUMS, as the user who was given that digest types it.
pub fn pinned(dir: &std::path::Path) -> String {
    let sums = std::fs::read(dir.join("SHA256SUMS")).unwrap();
    format!("{}@{}", dir.display(), harness::registry::Digest::of(&sums))
}

/// The same as a parsed source.
pub fn pinned_source(dir: &std::path::Path) -> harness::release::source::Source {
    harness::release::source::Source::parse(&pinned(dir)).unwrap()
}

/// A key pair of the test's own: (its directory, PREFIX.key, PREFIX.pub).
pub fn keys(name: &str) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = harness::release::trust::keygen(&dir.path().join(name)).unwrap();
    (dir, private, public)
}

/// The release `source` vouched for by `keys`, then `part` of it for
/// `platform` fetched under `tag`.
pub fn fetch(
    h: &Pipeline,
    source: &harness::release::source::Source,
    keys: &harness::release::trust::Keys,
    platform: &harness::matrix::Platform,
    tag: &str,
) -> harness::engine::LocalImage {
    let release = block_on(harness::release::open::open(source, keys)).unwrap();
    block_on(release.fetch(
        &h.engine,
        platform,
        tag,
        harness::release::open::Part::Image,
    ))
    .unwrap()
}

/// The `harness` binary of this build: the one way the tests drive the CLI.
pub fn harness_cli() -> testkit::Cli {
    testkit::Cli::new(env!("CARGO_BIN_EXE_harness"))
}

/// `harness` as a command to add arguments, variables or pipes to.
pub fn command() -> std::process::Command {
    harness_cli().command()
}

/// `harness ARGS` as a user types it, run to its end.
pub fn cli(args: &[&str]) -> std::process::Output {
    harness_cli().output(args)
}

/// What the harness left labelled in `engine` (tags under `prefix`): fails
/// loudly when the engine cannot be asked.
pub fn leftovers(
    engine: &harness::engine::Engine,
    prefix: &str,
) -> harness::engine::containers::Leftovers {
    testkit::leftovers(engine, prefix)
}

/// `docker build -t tag -` of `dockerfile` with the classic builder (a
/// look-alike or a labelled copy of an image a test needs): its image ID.
pub fn docker_build(tag: &str, dockerfile: &str) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut build = Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "-t", tag, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    build
        .stdin
        .take()
        .unwrap()
        .write_all(dockerfile.as_bytes())
        .unwrap();
    let out = build.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "docker build {tag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
