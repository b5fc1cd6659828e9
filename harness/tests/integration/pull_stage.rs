//! The pull stage, offline with the stand-in for `guix pull`'s network part:
//! the image is the pinned Guix (committed pull, labels, `guix describe`),
//! the scripts sit above the pulled store (a script change pulls nothing and
//! keeps the store layer), and a pull that fails, runs over its limit or
//! misses the pin is named and leaves no container. Its images have their
//! own name (`guix-matrix-t22`) and start from the tests' amd64 base.

use crate::common::{block_on, exclusive, harness, prepared};
use harness::names::{LABEL_PULL, LABEL_PULLED};
use harness::pipeline::{Options, Pipeline, Prepared};
use harness::pull::{By, Stage, Want};
use harness::scenarios::{self, Scenario, Verdict};
use std::path::Path;

const IMAGE: &str = "guix-matrix-t22";

/// Removes every image this file made, whatever happened.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let engine = &harness().engine;
        for part in [
            "",
            "-guix",
            "-unpulled",
            "-pulled",
            "-base",
            "-broken",
            "-lying",
        ] {
            block_on(engine.remove_image(&format!("{IMAGE}{part}:amd64")));
        }
    }
}

/// A copy of the checkout's image inputs, matrix.toml and fixtures.
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let parts = [&testkit::tree::IMAGE_INPUTS[..], &["fixtures"]].concat();
    testkit::tree::copy(&harness().options.checkout.root, dir.path(), &parts);
    dir
}

/// A harness for `checkout` whose images are `guix-matrix-t22…`, pulling
/// with the stand-in; `pull_timeout_secs` for amd64 when given.
fn pulling(checkout: &Path, pull_timeout: Option<u64>) -> Pipeline {
    let mut matrix = harness().matrix.clone();
    matrix.defaults.image = IMAGE.into();
    if let Some(secs) = pull_timeout {
        for p in &mut matrix.platforms {
            p.pull_timeout_secs = secs;
        }
    }
    let mut options = Options::new(harness::paths::Checkout::at(checkout).unwrap());
    options.allow_pull = false;
    options.pull = Want::Pull(By::StandIn);
    let h = block_on(Pipeline::new(matrix, options)).unwrap();
    // The tests' amd64 base, under this file's name: no mmdebstrap here.
    let base = prepared("linux/amd64").base.reference;
    let id = block_on(h.engine.local_image(&base)).unwrap().unwrap().id;
    block_on(h.engine.tag(&id, &format!("{IMAGE}-base:amd64"))).unwrap();
    h
}

fn prepare(h: &Pipeline) -> Result<Prepared, String> {
    let p = h.matrix.find("linux/amd64").unwrap().clone();
    block_on(h.prepare(&p)).map_err(|e| e.report())
}

fn layers(h: &Pipeline, image: &str) -> Vec<String> {
    block_on(h.engine.local_image(image))
        .unwrap()
        .unwrap_or_else(|| panic!("{image} is not in the engine"))
        .layers
}

#[test]
fn the_pulled_guix_is_committed_below_the_scripts_and_a_script_change_pulls_nothing() {
    let _serial = exclusive();
    let _cleanup = Cleanup;
    let dir = tree();
    let pin = harness::pin::read(&dir.path().join("channels/channels.scm")).unwrap();

    // First run: the pull runs, is committed, and the image says so.
    let h = pulling(dir.path(), None);
    let first = prepare(&h).unwrap_or_else(|e| panic!("{e}"));
    let Stage::Pulled(pulled) = &first.pull else {
        panic!("expected a pull in this run, got {:?}", first.pull)
    };
    assert_eq!(pulled.by, By::StandIn);
    assert_eq!(pulled.commit, pin, "guix describe names the pin");
    assert_eq!(pulled.from, "Debian's guix 1.5.0");
    assert!(
        pulled.describe.contains(&format!("commit: {pin}")),
        "{pulled:?}"
    );
    let img = block_on(h.engine.local_image(&first.image.tag))
        .unwrap()
        .unwrap();
    assert_eq!(img.labels[LABEL_PULLED], format!("stand-in {pin}"));
    let record: harness::pull::Pulled = serde_json::from_str(&img.labels[LABEL_PULL]).unwrap();
    // The label is the pull without how long it took (the report has that).
    let timeless = harness::pull::Pulled {
        seconds: 0,
        ..pulled.clone()
    };
    assert_eq!(record, timeless);
    let store = layers(&h, &format!("{IMAGE}-pulled:amd64"));
    assert!(
        img.layers.starts_with(&store),
        "the scripts sit on the pulled layer"
    );
    // The pull trusted the official farms only (what the daemon's ACL held
    // while it ran, and what it was given), and the image users run keeps
    // every key of substitutes/ and no trace of the pull's trust.
    let cat = |path: &str| {
        let out = std::process::Command::new("docker")
            .args(["run", "--rm", "--entrypoint", "cat", &first.image.tag, path])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let keys_in = |acl: &str| acl.matches("(public-key").count();
    let meta = "/root/.config/guix/current/etc/guix-matrix-stand-in";
    let during = cat(&format!("{meta}/acl"));
    let official = h.matrix.defaults.pull_keys.len();
    assert_eq!(keys_in(&during), official, "the pull's ACL: {during}");
    let args = cat(&format!("{meta}/args"));
    assert!(
        args.contains(&format!(
            "--substitute-urls={}",
            h.matrix.defaults.pull_substitutes.join(" ")
        )),
        "{args}"
    );
    let after = cat("/etc/guix/acl");
    let all = std::fs::read_dir(dir.path().join("substitutes"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "pub")
        })
        .count();
    assert!(all > official);
    assert_eq!(keys_in(&after), all, "the image's ACL: {after}");
    assert_eq!(
        cat("/etc/guix-matrix/pull-trust"),
        "",
        "the pull's trust is gone"
    );
    // Every check of the image as users get it: the pulled scenario and the rest.
    for s in [Scenario::Pulled, Scenario::Smoke, Scenario::Usage] {
        let outcome = block_on(scenarios::run_one(&h, &first, s));
        assert_eq!(
            outcome.verdict,
            Verdict::Passed,
            "{}: {}",
            s.name(),
            outcome.log_tail
        );
    }

    // The pulled scenario sees an image whose pull is gone.
    let broken = format!("{IMAGE}-broken:amd64");
    let out = std::process::Command::new("docker")
        .args(["run", "--name", "t22-broken", "--entrypoint", "rm"])
        .args([&first.image.tag, "-f", "/root/.config/guix/current"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::process::Command::new("docker")
        .args(["commit", "t22-broken", &broken])
        .output()
        .unwrap();
    std::process::Command::new("docker")
        .args(["rm", "-f", "t22-broken"])
        .output()
        .unwrap();
    let mut gone = first.clone();
    gone.image.tag = broken;
    let outcome = block_on(scenarios::run_one(&h, &gone, Scenario::Pulled));
    match &outcome.verdict {
        Verdict::Failed(why) => assert!(
            why.contains("guix describe names ``") && why.contains("not the pulled generation's"),
            "{why}"
        ),
        other => panic!("a pulled image without its generation must fail: {other:?}"),
    }

    // An entry point that says it starts the pulled generation's daemon but
    // starts Debian's: the check looks at the running program, not the line.
    let lying = format!("{IMAGE}-lying:amd64");
    let out = std::process::Command::new("docker")
        .args(["run", "--name", "t34-lying", "--entrypoint", "sed"])
        .args([
            &first.image.tag,
            "-i",
            "s|^\tguix-daemon --build-users-group|\t/usr/bin/guix-daemon --build-users-group|",
            "/entry-point.sh",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::process::Command::new("docker")
        .args(["commit", "t34-lying", &lying])
        .output()
        .unwrap();
    std::process::Command::new("docker")
        .args(["rm", "-f", "t34-lying"])
        .output()
        .unwrap();
    let grep = std::process::Command::new("docker")
        .args(["run", "--rm", "--entrypoint", "grep", &lying])
        .args([
            "-c",
            "/usr/bin/guix-daemon --build-users-group",
            "/entry-point.sh",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&grep.stdout).trim(),
        "1",
        "the mutation took"
    );
    let mut lies = first.clone();
    lies.image.tag = lying;
    let outcome = block_on(scenarios::run_one(&h, &lies, Scenario::Pulled));
    match &outcome.verdict {
        Verdict::Failed(why) => assert!(
            why.contains("the running guix-daemon is `/usr/bin/guix-daemon`")
                && why.contains("not the pulled generation's `/gnu/store/"),
            "{why}"
        ),
        other => panic!("Debian's daemon under the pulled generation's name must fail: {other:?}"),
    }

    // A script changes: no pull, the same pulled layer, new scripts on top.
    let entry = dir.path().join("scripts/entry-point.sh");
    let mut text = std::fs::read_to_string(&entry).unwrap();
    text.push_str("# a change of a script\n");
    std::fs::write(&entry, text).unwrap();
    let h = pulling(dir.path(), None);
    let second = prepare(&h).unwrap_or_else(|e| panic!("{e}"));
    let Stage::Kept(kept) = &second.pull else {
        panic!("a script change must not pull again: {:?}", second.pull)
    };
    assert_eq!(kept.commit, pin);
    assert!(second.image.rebuilt, "the scripts were rebuilt");
    assert_ne!(second.image.id, first.image.id);
    assert_eq!(
        layers(&h, &format!("{IMAGE}-pulled:amd64")),
        store,
        "the pulled layer is the same"
    );
    let img = layers(&h, &second.image.tag);
    assert!(
        img.starts_with(&store),
        "the new scripts sit on the same store"
    );
    eprintln!(
        "pulled layer: {} layers shared; the image adds {} layers of scripts",
        store.len(),
        img.len() - store.len()
    );
}

/// The stand-in, with `body` run for `guix pull` instead of its own.
fn broken_stand_in(dir: &Path, body: &str) {
    let path = dir.join("fixtures/stand-in-guix.sh");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace("pull)\n\tshift\n", &format!("pull)\n\tshift\n\t{body}\n"));
    std::fs::write(&path, text).unwrap();
}

fn labelled_containers(h: &Pipeline) -> usize {
    crate::common::leftovers(&h.engine, IMAGE).containers.len()
}

#[test]
fn a_pull_that_fails_times_out_or_misses_the_pin_is_named_and_leaves_nothing() {
    let _serial = exclusive();
    let _cleanup = Cleanup;
    let cases = [
        (
            "exit 3",
            None,
            vec!["linux/amd64: the pull step (stand-in) exited 3", "fix: the stand-in"],
        ),
        (
            "sleep 600",
            Some(5),
            vec![
                "linux/amd64: the pull step (stand-in) did not finish within 5s",
                "fix: raise the platform's pull_timeout_secs in matrix.toml",
            ],
        ),
        (
            "set -- --channels=/tmp/other.scm; sed 's/(commit \"[0-9a-f]*\")/(commit \"0000000000000000000000000000000000000000\")/' /root/.config/guix/channels.scm >/tmp/other.scm",
            None,
            vec![
                "linux/amd64: the pull step (stand-in) exited 1",
                "guix describe does not show the pinned commit",
            ],
        ),
    ];
    for (body, timeout, said) in cases {
        let dir = tree();
        broken_stand_in(dir.path(), body);
        let h = pulling(dir.path(), timeout);
        block_on(h.engine.remove_image(&format!("{IMAGE}-pulled:amd64")));
        let before = labelled_containers(&h);
        let err = prepare(&h).expect_err(body);
        for s in said {
            assert!(err.contains(s), "{body}: `{s}` not in:\n{err}");
        }
        assert_eq!(
            labelled_containers(&h),
            before,
            "{body}: a container was left"
        );
        assert!(
            block_on(h.engine.local_image(&format!("{IMAGE}-pulled:amd64")))
                .unwrap()
                .is_none(),
            "{body}: nothing pulled is tagged"
        );
    }
}

/// `--from` a release of pulled images: a script change keeps the release's
/// pulled layer (0 pulls); a moved pin pulls starting from the release's
/// generation (its layers stay below), not from Debian's guix.
#[test]
fn from_a_release_the_pull_starts_from_its_generation() {
    let _serial = exclusive();
    let _cleanup = Cleanup;
    let dir = tree();
    let h = pulling(dir.path(), None);
    let first = prepare(&h).unwrap_or_else(|e| panic!("{e}"));
    assert!(first.pull.pulled().is_some(), "{:?}", first.pull);
    let released = layers(&h, &first.image.tag);
    let dist = dir.path().join("dist");
    // Signed with a key of the test's own, which the runs below trust.
    let (_k, private, public) = crate::common::keys("release");
    let signer = harness::release::trust::Signer::load(&private).unwrap();
    let keys = harness::release::trust::Keys::load(Path::new("/nonexistent"), &[public]).unwrap();
    let proved = block_on(harness::release::Proved::inspect(
        &h.engine,
        &first.platform,
        &first.image.tag,
        Some(&format!("{IMAGE}-base:amd64")),
    ))
    .unwrap();
    // The same release in a registry of the test's own.
    let registry = testkit::LocalRegistry::start();
    let repo = registry.repo();
    block_on(harness::release::ship(
        &h.engine,
        std::slice::from_ref(&proved),
        &harness::release::Plan {
            dist: &dist,
            tag: "v20990303",
            annotations: &Default::default(),
            signer: Some(&signer),
            probes: None,
            push: Some(&harness::release::PushTarget::parse(&repo).unwrap()),
            force: false,
            mount_from: None,
        },
    ))
    .unwrap();
    let from_source = |root: &Path, source: String| {
        let mut h = pulling(root, None);
        h.options.release.from = Some(harness::release::source::Source::parse(&source).unwrap());
        h.options.release.keys = keys.clone();
        for part in ["", "-guix", "-unpulled", "-pulled"] {
            block_on(h.engine.remove_image(&format!("{IMAGE}{part}:amd64")));
        }
        h
    };
    let from = |root: &Path| from_source(root, dist.display().to_string());

    // A script changes: the release's pulled image is the layer below.
    let entry = dir.path().join("scripts/entry-point.sh");
    let mut text = std::fs::read_to_string(&entry).unwrap();
    text.push_str("# a change of a script\n");
    std::fs::write(&entry, text).unwrap();
    let h = from(dir.path());
    let second = prepare(&h).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        second
            .start
            .to_string()
            .starts_with("rebuilt from v20990303"),
        "{}",
        second.start
    );
    let Stage::Kept(kept) = &second.pull else {
        panic!("an unchanged pin must not pull: {:?}", second.pull)
    };
    // Kept from the release's label: the pull without its time.
    let first_pull = first.pull.pulled().map(|p| harness::pull::Pulled {
        seconds: 0,
        ..p.clone()
    });
    assert_eq!(Some(kept), first_pull.as_ref());
    assert!(layers(&h, &second.image.tag).starts_with(&released));

    // Without --from, the next script change keeps that pull too: the image
    // reused from the release is pulled on this Guix layer.
    let mut text = std::fs::read_to_string(&entry).unwrap();
    text.push_str("# another change\n");
    std::fs::write(&entry, text).unwrap();
    let h = pulling(dir.path(), None);
    let again = prepare(&h).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(again.pull, Stage::Kept(_)),
        "no pull after a reused release: {:?}",
        again.pull
    );
    assert!(layers(&h, &again.image.tag).starts_with(&released));

    // The pin moves: the pull starts from the release's generation.
    let channels = dir.path().join("channels/channels.scm");
    let old = harness::pin::read(&channels).unwrap();
    let moved = "1111111111111111111111111111111111111111";
    let text = std::fs::read_to_string(&channels).unwrap();
    std::fs::write(&channels, text.replace(&old, moved)).unwrap();
    let h = from(dir.path());
    let third = prepare(&h).unwrap_or_else(|e| panic!("{e}"));
    let Stage::Pulled(pulled) = &third.pull else {
        panic!("a moved pin pulls: {:?}", third.pull)
    };
    assert_eq!(pulled.commit, moved);
    assert_eq!(
        pulled.from,
        format!("release v20990303's generation {}", &old[..12])
    );
    assert!(
        layers(&h, &third.image.tag).starts_with(&released),
        "the release's pulled image is below the new pull"
    );
    let outcome = block_on(scenarios::run_one(&h, &third, Scenario::Pulled));
    assert_eq!(outcome.verdict, Verdict::Passed, "{}", outcome.log_tail);

    // The same from the registry.
    let h = from_source(dir.path(), format!("{repo}:v20990303"));
    let fourth = prepare(&h).unwrap_or_else(|e| panic!("{e}"));
    let Stage::Pulled(pulled) = &fourth.pull else {
        panic!("a moved pin pulls: {:?}", fourth.pull)
    };
    assert_eq!(pulled.commit, moved);
    assert!(
        pulled.from.starts_with("release v20990303's generation"),
        "{pulled:?}"
    );
    assert!(layers(&h, &fourth.image.tag).starts_with(&released));
}

/// `--online` where the network is not: the real pull fails, and says so
/// with its fix, leaving no container and nothing tagged.
#[test]
fn a_real_pull_without_the_network_is_named_with_its_fix() {
    let _serial = exclusive();
    let _cleanup = Cleanup;
    let dir = tree();
    let mut h = pulling(dir.path(), None);
    h.options.pull = Want::Pull(By::GuixPull);
    block_on(h.engine.remove_image(&format!("{IMAGE}-pulled:amd64")));
    let before = labelled_containers(&h);
    let err = prepare(&h).expect_err("offline, guix pull cannot reach codeberg.org");
    eprintln!("what the user sees:\n{err}");
    assert!(
        err.contains("linux/amd64: the pull step (guix pull) exited")
            && err.contains("fix: guix pull needs codeberg.org and the substitute servers"),
        "{err}"
    );
    assert_eq!(labelled_containers(&h), before, "a container was left");
    assert!(
        block_on(h.engine.local_image(&format!("{IMAGE}-pulled:amd64")))
            .unwrap()
            .is_none()
    );
}
