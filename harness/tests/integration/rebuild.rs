//! `rebuild --check` on fixture trees of their own (own image names, the
//! same base): a nondeterministic step is named, and a release whose pull
//! started from the last release's generation is rebuilt from there.

use crate::common::{cli as harness, pinned, prepared, said};
use crate::release::{one_at_a_time, tags_like};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().unwrap()
}

/// A copy of this checkout under `CARGO_TARGET_TMPDIR/NAME`, building
/// `image` on the amd64 base and Guix layer the shared harness prepared
/// (tagged under the fixture's names: no second mmdebstrap or apt run);
/// removes its images when dropped.
struct Fixture {
    work: PathBuf,
    tree: PathBuf,
    image: &'static str,
}

impl Fixture {
    /// The fixture `name` of images `image`, made afresh.
    fn new(name: &str, image: &'static str) -> Fixture {
        let base = prepared("linux/amd64").base.reference;
        let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        let _ = std::fs::remove_dir_all(&work);
        let tree = work.join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        let root = &crate::common::harness().options.checkout.root;
        let parts = [
            &testkit::tree::IMAGE_INPUTS[..],
            &["fixtures", "trust", "emulators"],
        ]
        .concat();
        testkit::tree::copy(root, &tree, &parts);
        let matrix = std::fs::read_to_string(tree.join("matrix.toml")).unwrap();
        let matrix = matrix.replacen(
            "image = \"guix-matrix\"",
            &format!("image = \"{image}\""),
            1,
        );
        std::fs::write(tree.join("matrix.toml"), matrix).unwrap();
        // The shared base and Guix layer (the same inputs): the runs build
        // only what is above them; a rebuild builds everything anew anyway.
        let guix = crate::common::harness()
            .guix_spec(&prepared("linux/amd64").platform)
            .tag;
        for (from, stage) in [(base, "base"), (guix, "guix")] {
            let tag = format!("{image}-{stage}:amd64");
            assert!(docker(&["tag", &from, &tag]).status.success());
        }
        Fixture { work, tree, image }
    }

    /// The tree, as `--root` takes it.
    fn root(&self) -> &str {
        self.tree.to_str().unwrap()
    }

    /// `run --stand-in-pull` of amd64 (smoke, with `more`) then `release
    /// --unpulled` of what it proved as `tag`: the release directory.
    fn prove_and_release(&self, tag: &str, more: &[&str]) -> PathBuf {
        let reports = self.work.join(format!("reports-{tag}"));
        let mut args = vec![
            "run",
            "--root",
            self.root(),
            "--platform",
            "linux/amd64",
            "--scenario",
            "smoke",
            "--stand-in-pull",
            "--report",
            reports.to_str().unwrap(),
        ];
        args.extend_from_slice(more);
        let run = harness(&args);
        assert!(run.status.success(), "{}", said(&run));
        let dist = self.work.join(format!("dist-{tag}"));
        let report = reports.join("report.json");
        let release = harness(&[
            "release",
            "--root",
            self.root(),
            "--unpulled",
            "--report",
            report.to_str().unwrap(),
            "--dist",
            dist.to_str().unwrap(),
            "--tag",
            tag,
        ]);
        assert!(release.status.success(), "{}", said(&release));
        dist
    }

    /// `rebuild --root TREE --check DIST@PIN` with `more`.
    fn rebuild(&self, dist: &Path, more: &[&str]) -> Output {
        let source = pinned(dist);
        let mut args = vec!["rebuild", "--root", self.root(), "--check", &source];
        args.extend_from_slice(more);
        harness(&args)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for tag in tags_like(self.image) {
            let _ = docker(&["rmi", "-f", &tag]);
        }
    }
}

/// A step that writes the time of the build (a fixture tree's scripts
/// Dockerfile, pulled by the stand-in) is found by `rebuild --check`: exit
/// 1, that one layer and its file named with what differs; the stand-in's
/// pull and every other layer are the same bits.
#[test]
fn a_nondeterministic_step_is_named_by_rebuild_check() {
    let _one = one_at_a_time();
    let _shared = crate::common::shared();
    let f = Fixture::new("nondeterministic-fixture", "guix-matrix-nondet");
    let mut dockerfile = std::fs::read_to_string(f.tree.join("scripts/Dockerfile")).unwrap();
    dockerfile.push_str("RUN date +%s%N > /etc/guix-matrix/build-time\n");
    std::fs::write(f.tree.join("scripts/Dockerfile"), dockerfile).unwrap();
    let dist = f.prove_and_release("v20260102", &[]);
    let rebuild = f.rebuild(&dist, &[]);
    let text = said(&rebuild);
    assert_eq!(rebuild.status.code(), Some(1), "{text}");
    assert!(text.contains("linux/amd64: differs"), "{text}");
    let layers: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("layer "))
        .collect();
    assert_eq!(layers.len(), 1, "only the step's layer differs: {text}");
    let file = text
        .lines()
        .find(|l| l.contains("etc/guix-matrix/build-time"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(file.contains("content sha256:"), "{file}");
    assert!(
        text.contains("not in"),
        "platforms the release lacks are named: {text}"
    );
    assert!(text.contains("not the same bits on linux/amd64"), "{text}");
}

/// The weekly release's case: the pin moves and the pull starts from the
/// last release's pulled generation (`--from`). Its rebuild starts there
/// too: without that release it is refused naming it (exit 2), given
/// another release likewise, and given it, it is the same bits; `--notes`
/// writes the finding for the release's notes.
#[test]
fn a_release_pulled_from_the_last_ones_generation_is_rebuilt_from_it() {
    let _one = one_at_a_time();
    let _shared = crate::common::shared();
    let f = Fixture::new("chain-fixture", "guix-matrix-chain");
    let first = f.prove_and_release("v20260101", &[]);
    let channels = f.tree.join("channels/channels.scm");
    let old = harness::pin::read(&channels).unwrap();
    let text = std::fs::read_to_string(&channels).unwrap();
    let moved = "2222222222222222222222222222222222222222";
    std::fs::write(&channels, text.replace(&old, moved)).unwrap();
    let second = f.prove_and_release("v20260108", &["--from", &pinned(&first)]);

    let alone = f.rebuild(&second, &["--platform", "linux/amd64"]);
    let text = said(&alone);
    eprintln!("without --from:\n{text}");
    assert_eq!(alone.status.code(), Some(2), "{text}");
    assert!(
        text.contains(
            "linux/amd64: the release's pull started from release v20260101's generation"
        ) && text.contains("pass release v20260101 with --from"),
        "{text}"
    );
    let other = f.rebuild(
        &second,
        &["--platform", "linux/amd64", "--from", &pinned(&second)],
    );
    let text = said(&other);
    assert_eq!(other.status.code(), Some(2), "{text}");
    assert!(text.contains("and --from is release v20260108"), "{text}");

    let notes = f.work.join("rebuild.md");
    let rebuilt = f.rebuild(
        &second,
        &[
            "--platform",
            "linux/amd64",
            "--from",
            &pinned(&first),
            "--notes",
            notes.to_str().unwrap(),
        ],
    );
    let text = said(&rebuilt);
    assert!(rebuilt.status.success(), "{text}");
    assert!(
        text.contains("linux/amd64: identical: image sha256:"),
        "{text}"
    );
    let notes = std::fs::read_to_string(&notes).unwrap();
    assert!(
        notes.starts_with("## Rebuilt from its tree")
            && notes.contains("the same bits as v20260108")
            && notes.contains("linux/amd64: identical"),
        "{notes}"
    );
    assert!(tags_like(&format!("{}-rebuild", f.image)).is_empty());
}
