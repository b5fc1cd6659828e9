//! Starting from a release: an unchanged tree reuses the released image with
//! no build, a changed tree builds on the release's base and layers, and
//! nothing unverified is used (altered content, a damaged tarball); an
//! unreachable release means a build, said so.
//!
//! The release is made here, on amd64, from a base of its own (so no local
//! build cache can stand in for the release's layers), written with
//! `harness release`'s writer, and then every local trace of it is removed:
//! what follows sees the engine as a new machine would.

use crate::common::{block_on, harness, prepared, shared};
use harness::pipeline::{Options, Pipeline, Prepared};
use harness::release::reuse::Start;
use std::path::Path;

const IMAGE: &str = "guix-matrix-t15";
const TAG: &str = "v20990101";

/// Removes every image this file made, whatever happened.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let engine = &harness().engine;
        for tag in [
            format!("{IMAGE}:amd64"),
            format!("{IMAGE}-base:amd64"),
            format!("{IMAGE}-release:amd64"),
            format!("{IMAGE}-spoiled:amd64"),
            format!("{IMAGE}-guix:amd64"),
        ] {
            block_on(engine.remove_image(&tag));
        }
    }
}

/// A harness like the tests' one, for `checkout`, whose images are named
/// `guix-matrix-t15`, starting from `from`.
fn fresh(checkout: &Path, from: Option<&Path>) -> Pipeline {
    let mut matrix = harness().matrix.clone();
    matrix.defaults.image = IMAGE.into();
    let mut options = Options::new(harness::paths::Checkout::at(checkout).unwrap());
    options.allow_pull = false;
    options.release.from = from.map(crate::common::pinned_source);
    block_on(Pipeline::new(matrix, options)).unwrap()
}

/// The amd64 image, or the error as the harness reports it.
fn prepare(h: &Pipeline) -> Result<Prepared, String> {
    let p = h.matrix.find("linux/amd64").unwrap().clone();
    block_on(h.prepare(&p)).map_err(|e| e.report())
}

/// Copies the image's inputs (and matrix.toml) of the checkout to `to`.
fn copy_tree(to: &Path) {
    let root = &harness().options.checkout.root;
    testkit::tree::copy(root, to, &testkit::tree::IMAGE_INPUTS);
}

/// The release `TAG` of the amd64 image, written to `dist`, built on a base
/// of its own; returns its image id. The engine keeps nothing of it.
fn release_into(dist: &Path) -> String {
    let h0 = harness();
    let native = prepared("linux/amd64");
    // A base no other image is built on: the commit of the native base.
    let c = harness::engine::run::RunSpec::new(native.base.reference.clone(), "t15 base")
        .platform("linux/amd64")
        .bash("echo t15 > /etc/guix-matrix-t15")
        .with_options(None, true);
    let out = block_on(harness::engine::run::run(&h0.engine, &c)).unwrap();
    let id = out.kept_container.expect("kept");
    block_on(h0.engine.commit_with(
        &id,
        &format!("{IMAGE}-base:amd64"),
        "ENTRYPOINT []\nCMD [\"bash\"]",
    ))
    .unwrap();
    block_on(h0.engine.remove_container(&id));

    let h = fresh(&h0.options.checkout.root, None);
    let built = prepare(&h).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(built.start, Start::Built);
    let proved = block_on(harness::release::Proved::inspect(
        &h.engine,
        &built.platform,
        &built.image.tag,
        Some(&format!("{IMAGE}-base:amd64")),
    ))
    .unwrap();
    block_on(harness::release::ship(
        &h.engine,
        &[proved],
        &harness::release::Plan {
            dist,
            tag: TAG,
            annotations: &Default::default(),
            signer: None,
            probes: None,
            push: None,
            force: false,
            mount_from: None,
        },
    ))
    .unwrap();
    // A new machine: neither the image, its Guix layer, its base, nor their build cache.
    block_on(h.engine.remove_image(&format!("{IMAGE}:amd64")));
    block_on(h.engine.remove_image(&format!("{IMAGE}-guix:amd64")));
    block_on(h.engine.remove_image(&format!("{IMAGE}-base:amd64")));
    built.image.id
}

#[test]
fn a_release_is_reused_as_is_or_seeds_the_build_and_nothing_unverified_is_used() {
    let _shared = shared();
    let _cleanup = Cleanup;
    let dist = tempfile::tempdir().unwrap();
    let built = release_into(dist.path());
    // The release's image is the built one with the release's labels on its
    // config: its ID is the config digest the tarball's manifest names.
    let released = released_id(dist.path());
    assert_ne!(released, built);
    let root = harness().options.checkout.root.clone();

    // Unchanged tree: the release's image, verified, no build.
    let h = fresh(&root, Some(dist.path()));
    let t = std::time::Instant::now();
    let p = prepare(&h).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("reused in {:.1?}", t.elapsed());
    let sums = std::fs::read(dist.path().join("SHA256SUMS")).unwrap();
    let pin = harness::registry::Digest::of(&sums).to_string();
    assert_eq!(
        p.start,
        Start::Reused {
            release: format!("{TAG} (pinned {})", &pin[..19])
        }
    );
    assert_eq!(p.image.id, released);
    assert!(!p.image.rebuilt);
    let local = block_on(h.engine.local_image(&format!("{IMAGE}:amd64")))
        .unwrap()
        .expect("tagged");
    assert_eq!(local.id, released);
    assert!(
        block_on(h.engine.local_image(&format!("{IMAGE}-release:amd64")))
            .unwrap()
            .is_none(),
        "the fetch tag is left behind"
    );
    // A second run finds it up to date (no fetch, no build).
    let again = prepare(&fresh(&root, Some(dist.path()))).unwrap();
    assert_eq!(again.start, Start::UpToDate);
    block_on(h.engine.remove_image(&format!("{IMAGE}:amd64")));

    // A changed script: built on the release's base, its layers reused up
    // to the first COPY that changed (apt's layer is not rebuilt: it would
    // differ, apt's files carry the time they were unpacked).
    let changed = tempfile::tempdir().unwrap();
    copy_tree(changed.path());
    let ep = changed.path().join("scripts/entry-point.sh");
    let mut text = std::fs::read_to_string(&ep).unwrap();
    text.push_str("# changed by the incremental test\n");
    std::fs::write(&ep, text).unwrap();
    let h = fresh(changed.path(), Some(dist.path()));
    let t = std::time::Instant::now();
    let p = prepare(&h).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("rebuilt from the release in {:.1?}", t.elapsed());
    assert_eq!(
        p.start,
        Start::RebuiltFrom {
            release: TAG.into(),
            changed: vec!["scripts/entry-point.sh".into()]
        }
    );
    assert!(p.image.rebuilt);
    let new = block_on(h.engine.local_image(&p.image.tag))
        .unwrap()
        .unwrap();
    let old_layers = {
        let h0 = fresh(&root, Some(dist.path()));
        crate::common::fetch(
            &h0,
            &crate::common::pinned_source(dist.path()),
            &Default::default(),
            &p.platform,
            &format!("{IMAGE}-release:amd64"),
        )
        .layers
    };
    let common = new
        .layers
        .iter()
        .zip(&old_layers)
        .take_while(|(a, b)| a == b)
        .count();
    assert!(
        common >= old_layers.len() - 2 && common < old_layers.len().max(new.layers.len()),
        "{common} of {} layers shared with the release: its cache was not used",
        old_layers.len()
    );
    block_on(h.engine.remove_image(&format!("{IMAGE}:amd64")));
    block_on(h.engine.remove_image(&format!("{IMAGE}-release:amd64")));

    // Nothing unverified: a release whose entry point is not what its labels
    // say, and a damaged tarball, are refused.
    spoiled_release_is_refused(dist.path(), &root);
    damaged_tarball_is_refused(dist.path(), &root);

    // A release that cannot be reached: build, and say why.
    let h = fresh(&root, None);
    let mut h = h;
    h.options.release.from = Some(
        harness::release::source::Source::parse(&format!("127.0.0.1:9/{IMAGE}:{TAG}")).unwrap(),
    );
    let p = prepare(&h).unwrap_or_else(|e| panic!("{e}"));
    match &p.start {
        Start::BuiltCold { why } => assert!(why.contains("unreachable"), "{why}"),
        other => panic!("an unreachable release gave {other:?}"),
    }
    nothing_unverified_seeds_a_build(dist.path(), &root);
}

/// A release vouched for by nothing (no pin, no signature) or signed by a
/// key the checkout does not trust is not fetched at all: the run builds
/// and says why, the local base stays, no name of the release appears;
/// with require_verified it is an error of its own (exit 5).
fn nothing_unverified_seeds_a_build(dist: &Path, root: &Path) {
    use harness::release::source::Source;
    let (_k, private, _) = crate::common::keys("theirs");
    let signed = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(dist).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), signed.path().join(e.file_name())).unwrap();
    }
    let sums = std::fs::read(signed.path().join("SHA256SUMS")).unwrap();
    let signer = harness::release::trust::Signer::load(&private).unwrap();
    std::fs::write(signed.path().join("SHA256SUMS.sig"), signer.sign(&sums)).unwrap();
    let engine = &harness().engine;
    let base = || {
        block_on(engine.local_image(&format!("{IMAGE}-base:amd64")))
            .unwrap()
            .map(|i| i.id)
    };
    for (dir, says) in [
        (dist, "it has no SHA256SUMS.sig and no digest was pinned"),
        (
            signed.path(),
            "is not a signature of its SHA256SUMS by a key this checkout trusts",
        ),
    ] {
        block_on(engine.remove_image(&format!("{IMAGE}:amd64")));
        let before = base();
        let mut h = fresh(root, None);
        h.options.release.from = Some(Source::parse(dir.to_str().unwrap()).unwrap());
        let p = prepare(&h).unwrap_or_else(|e| panic!("{e}"));
        match &p.start {
            Start::BuiltCold { why } => assert!(why.contains(says), "{why}"),
            other => panic!("an unverified release gave {other:?}"),
        }
        assert_eq!(
            base(),
            before,
            "the local base was replaced by an unverified release's"
        );
        for name in ["release", "release-base"] {
            assert!(
                block_on(engine.local_image(&format!("{IMAGE}-{name}:amd64")))
                    .unwrap()
                    .is_none(),
                "{IMAGE}-{name}:amd64 is in the engine: an unverified release's image was fetched, or a refused one left behind"
            );
        }
        let mut h = fresh(root, None);
        h.options.release.from = Some(Source::parse(dir.to_str().unwrap()).unwrap());
        h.options.release.require_verified = true;
        block_on(engine.remove_image(&format!("{IMAGE}:amd64")));
        let p = h.matrix.find("linux/amd64").unwrap().clone();
        let e = block_on(h.prepare(&p)).expect_err("require_verified took an unverified release");
        assert_eq!(e.exit().code(), 5, "{}", e.report());
        assert!(
            e.report().contains("fix: pin the release's digest"),
            "{}",
            e.report()
        );
    }
}

fn spoiled_release_is_refused(dist: &Path, root: &Path) {
    let h = fresh(root, Some(dist));
    let engine = &h.engine;
    let p = h.matrix.find("linux/amd64").unwrap().clone();
    let img = crate::common::fetch(
        &h,
        &crate::common::pinned_source(dist),
        &Default::default(),
        &p,
        &format!("{IMAGE}-release:amd64"),
    );
    let c = harness::engine::run::RunSpec::new(img.id.clone(), "spoil the release")
        .platform("linux/amd64")
        .bash("echo 'echo hijacked' >> /entry-point.sh")
        .with_options(None, true);
    let out = block_on(harness::engine::run::run(engine, &c)).unwrap();
    let id = out.kept_container.expect("kept");
    block_on(engine.commit_with(
        &id,
        &format!("{IMAGE}:amd64"),
        "ENTRYPOINT [\"/entry-point.sh\"]\nCMD [\"sh\"]",
    ))
    .unwrap();
    block_on(engine.remove_container(&id));
    let spoiled = tempfile::tempdir().unwrap();
    let proved = block_on(harness::release::Proved::inspect(
        engine,
        &p,
        &format!("{IMAGE}:amd64"),
        None,
    ))
    .unwrap();
    block_on(harness::release::ship(
        engine,
        &[proved],
        &harness::release::Plan {
            dist: spoiled.path(),
            tag: "v20990102",
            annotations: &Default::default(),
            signer: None,
            probes: None,
            push: None,
            force: false,
            mount_from: None,
        },
    ))
    .unwrap();
    block_on(engine.remove_image(&format!("{IMAGE}:amd64")));
    block_on(engine.remove_image(&format!("{IMAGE}-release:amd64")));

    let h = fresh(root, Some(spoiled.path()));
    let err = prepare(&h).expect_err("a release with altered content was used");
    let said = err;
    for want in [
        "release v20990102 claims this tree's content",
        "/entry-point.sh is not the tree's scripts/entry-point.sh: refused",
        "fix: use a release made by `harness release`",
    ] {
        assert!(said.contains(want), "`{want}` not in: {said}");
    }
    assert!(
        block_on(h.engine.local_image(&format!("{IMAGE}:amd64")))
            .unwrap()
            .is_none(),
        "the refused image was tagged for use"
    );
}

/// The ID `docker load` gives the amd64 image of the release in `dist`.
fn released_id(dist: &Path) -> String {
    let tarball = dist.join(format!("guix-matrix-{TAG}-amd64.tar"));
    let mut tar = tar::Archive::new(std::fs::File::open(tarball).unwrap());
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_string_lossy() == "manifest.json" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            let m: serde_json::Value = serde_json::from_str(&text).unwrap();
            let config = m[0]["Config"].as_str().unwrap();
            return format!("sha256:{}", config.trim_start_matches("blobs/sha256/"));
        }
    }
    panic!("no manifest.json")
}

fn damaged_tarball_is_refused(dist: &Path, root: &Path) {
    let damaged = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(dist).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), damaged.path().join(e.file_name())).unwrap();
        }
    }
    let tarball = damaged.path().join(format!("guix-matrix-{TAG}-amd64.tar"));
    let len = std::fs::metadata(&tarball).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&tarball)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let err =
        prepare(&fresh(root, Some(damaged.path()))).expect_err("a truncated tarball was used");
    let said = err;
    assert!(said.contains("SHA256SUMS says"), "{said}");
    assert!(said.contains("it was not loaded"), "{said}");
}

fn cli(args: &[&str]) -> (bool, String) {
    let out = crate::common::cli(args);
    (out.status.success(), crate::common::said(&out))
}

fn start_in(report: &Path) -> String {
    let report = harness::report::RunReport::read(&report.join("report.json")).unwrap();
    report.legs[0].start.clone()
}

/// The CI legs' steps (ci.yml), run twice on an unchanged tree against a
/// local cache directory: the second run builds no image. The image cache
/// is a release directory; the engine is emptied of the image in between,
/// as a new runner's would be.
#[test]
fn the_ci_steps_on_an_unchanged_tree_build_nothing_the_second_time() {
    let _alone = crate::common::exclusive();
    let _image = prepared("linux/amd64");
    let dir = tempfile::tempdir().unwrap();
    let (cache, r1, r2) = (
        dir.path().join("image-cache"),
        dir.path().join("r1"),
        dir.path().join("r2"),
    );
    let s = |p: &Path| p.display().to_string();
    // The workflow signs its cache with a key of its own (a secret) and
    // trusts that key's public half.
    let (_keys, private, public) = crate::common::keys("ci");
    let run = |report: &Path, from: Option<&Path>| {
        let mut args = vec![
            "run".to_string(),
            "--platform".into(),
            "linux/amd64".into(),
            "--scenario".into(),
            "smoke".into(),
            "--report".into(),
            s(report),
        ];
        if let Some(from) = from {
            args.extend(["--from".into(), s(from), "--trust-key".into(), s(&public)]);
        }
        cli(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    // First run: a cache miss; the proved image is kept.
    let (ok, said) = run(&r1, None);
    assert!(ok, "{said}");
    let (ok, said) = cli(&[
        "release",
        "--unpulled",
        "--dist",
        &s(&cache),
        "--report",
        &s(&r1.join("report.json")),
        "--tag",
        "ci",
        "--sign-key",
        &s(&private),
    ]);
    assert!(ok, "{said}");
    // A new runner: the cache restored, no image in the engine.
    block_on(harness().engine.remove_image("guix-matrix:amd64"));
    let t = std::time::Instant::now();
    let (ok, said) = run(&r2, Some(&cache));
    eprintln!("second run (load, verify, check) in {:.1?}", t.elapsed());
    assert!(ok, "{said}");
    assert_eq!(start_in(&r2), "reused ci (signed by ci.pub)", "{said}");
    assert!(said.contains("(reused ci (signed by ci.pub))"), "{said}");

    // The same from a registry (pulled for the platform, then verified).
    let registry = testkit::LocalRegistry::start();
    let (ok, said) = cli(&[
        "release",
        "--unpulled",
        "--dist",
        &s(&dir.path().join("dist2")),
        "--report",
        &s(&r2.join("report.json")),
        "--tag",
        "ci",
        "--push",
        &registry.repo(),
        "--sign-key",
        &s(&private),
    ]);
    assert!(ok, "{said}");
    block_on(harness().engine.remove_image("guix-matrix:amd64"));
    let r3 = dir.path().join("r3");
    let reference = format!("{}:ci", registry.repo());
    let (ok, said) = cli(&[
        "run",
        "--platform",
        "linux/amd64",
        "--scenario",
        "smoke",
        "--report",
        &s(&r3),
        "--from",
        &reference,
        "--trust-key",
        &s(&public),
        "--require-verified",
    ]);
    assert!(ok, "{said}");
    assert_eq!(start_in(&r3), "reused ci (signed by ci.pub)", "{said}");
}
