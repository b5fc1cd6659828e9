//! Shipping: what a run proved becomes tarballs, SHA256SUMS, an OCI layout
//! and a multi-platform image in a real registry (Debian's docker-registry,
//! started here on 127.0.0.1), and the published image is checked as users
//! get it.

use crate::common::prepared;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use testkit::LocalRegistry as Registry;

use crate::common::{cli as harness, said};

fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().unwrap()
}

/// A run of `platforms` (smoke) whose report the release reads.
fn proving_run(platforms: &[&str], dir: &Path) -> PathBuf {
    proving_run_with(platforms, dir, &[])
}

/// The same with more options (global ones, such as --matrix, work after `run` too).
fn proving_run_with(platforms: &[&str], dir: &Path, more: &[&str]) -> PathBuf {
    let mut args = vec!["run", "--scenario", "smoke", "--report"];
    let report = dir.to_str().unwrap();
    args.push(report);
    for p in platforms {
        args.extend(["--platform", p]);
    }
    args.extend(more);
    let out = harness(&args);
    assert!(out.status.success(), "{}", said(&out));
    dir.join("report.json")
}

/// `harness run --image DIR@sha256:…` on amd64 (smoke), reports in
/// `report`: the directory pinned by the digest of its SHA256SUMS.
fn check_image(dir: &Path, report: &Path) -> Output {
    harness(&[
        "run",
        "--image",
        &crate::common::pinned(dir),
        "--platform",
        "linux/amd64",
        "--scenario",
        "smoke",
        "--report",
        report.to_str().unwrap(),
    ])
}

fn sha256(path: &Path) -> String {
    use sha2::Digest;
    let mut sha = sha2::Sha256::new();
    std::io::copy(&mut std::fs::File::open(path).unwrap(), &mut sha).unwrap();
    hex::encode(sha.finalize())
}

/// What the three release tests share: amd64 and arm/v7 proved (smoke),
/// released once into `dist` and pushed, signed, to a registry of its own.
struct Released {
    registry: Registry,
    /// The fixture's directory (under the target directory, made anew).
    work: PathBuf,
    report: PathBuf,
    dist: PathBuf,
    private: PathBuf,
    public: PathBuf,
    /// What the first `release` said.
    first_push: String,
}

impl Released {
    fn repo(&self) -> String {
        self.registry.repo()
    }

    /// `REPO:v20260101`.
    fn reference(&self) -> String {
        format!("{}:v20260101", self.repo())
    }

    /// The file names of the images and the index, as SHA256SUMS lists them.
    fn names(&self) -> Vec<String> {
        let sums = std::fs::read_to_string(self.dist.join("SHA256SUMS")).unwrap();
        let mut names: Vec<String> = sums
            .lines()
            .map(|l| l.split_once("  ").unwrap().1.to_string())
            .collect();
        names.split_off(4)
    }

    /// The release's index (its bytes, parsed).
    fn index(&self) -> (Vec<u8>, serde_json::Value) {
        let bytes = std::fs::read(self.dist.join(&self.names()[2])).unwrap();
        let json = serde_json::from_slice(&bytes).unwrap();
        (bytes, json)
    }
}

/// The shared release, made by the first test that asks (the others wait).
fn released() -> &'static Released {
    static R: std::sync::OnceLock<Released> = std::sync::OnceLock::new();
    R.get_or_init(|| {
        prepared("linux/amd64");
        prepared("linux/arm/v7");
        let registry = Registry::start();
        let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("release-fixture");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        // The tmpfs check runs the readdir() probes: the run records the
        // probe image it used (and the emulator helper that registered
        // qemu-arm), and the release ships those.
        let report = proving_run_with(
            &["linux/amd64", "linux/arm/v7"],
            &work.join("reports"),
            &["--scenario", "tmpfs"],
        );
        let dist = work.join("dist");
        let (private, public) = harness::release::trust::keygen(&work.join("release")).unwrap();
        let out = harness(&[
            "release",
            "--unpulled",
            "--report",
            report.to_str().unwrap(),
            "--dist",
            dist.to_str().unwrap(),
            "--tag",
            "v20260101",
            "--push",
            &registry.repo(),
            "--sign-key",
            private.to_str().unwrap(),
            "--notes",
            work.join("notes.md").to_str().unwrap(),
        ]);
        let first_push = said(&out);
        assert!(out.status.success(), "{first_push}");
        assert!(
            first_push.contains("not released (did not pass every check): linux/386"),
            "{first_push}"
        );
        Released {
            registry,
            work,
            report,
            dist,
            private,
            public,
            first_push,
        }
    })
}

/// The three release tests, one at a time: they load, tag and push.
pub(crate) fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// `skopeo inspect --raw` of `what`: the manifest bytes.
fn skopeo(what: String) -> Vec<u8> {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(&what)
        .output()
        .unwrap();
    assert!(out.status.success(), "{what}: {}", said(&out));
    out.stdout
}

#[test]
fn a_release_is_what_the_run_proved_in_tarballs_an_oci_layout_and_a_registry() {
    let _shared = crate::common::shared();
    let _one = one_at_a_time();
    let r = released();
    let (dist, repo, reference) = (&r.dist, r.repo(), r.reference());
    let (index_bytes, index) = r.index();
    let mut names = vec![];
    // Tarballs and checksums.
    let sums = std::fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    for line in sums.lines() {
        let (sum, name) = line.split_once("  ").unwrap();
        assert_eq!(sha256(&dist.join(name)), sum, "{name}");
        names.push(name.to_string());
    }
    // Each image's base rides along (a build from the release starts on it).
    assert_eq!(
        names,
        [
            "guix-matrix-base-v20260101-amd64.tar",
            "guix-matrix-base-v20260101-arm-v7.tar",
            "guix-matrix-binfmt-v20260101-amd64.tar",
            "guix-matrix-probes-v20260101.tar",
            "guix-matrix-v20260101-amd64.tar",
            "guix-matrix-v20260101-arm-v7.tar",
            "guix-matrix-v20260101.index.json"
        ]
    );
    assert_eq!(names.split_off(4), r.names());
    // The notes the GitHub release carries: what it is and how to check it.
    let notes = std::fs::read_to_string(r.work.join("notes.md")).unwrap();
    let pin = harness::pin::read(
        &harness::paths::Checkout::find()
            .unwrap()
            .root
            .join("channels/channels.scm"),
    )
    .unwrap();
    let index_digest = harness::registry::Digest::of(&index_bytes).to_string();
    for line in [
        "# guix-matrix v20260101".to_string(),
        format!("Every check passed on linux/amd64, linux/arm/v7 on GNU Guix pulled to the pinned commit `{pin}`."),
        "Shipped unpulled: the images run Debian's guix until `guix pull`.".into(),
        format!("cosign verify --key trust/release.pub --insecure-ignore-tlog {reference}"),
        format!("cargo run -p harness -- verify {reference}"),
        format!("the image is `{reference}@{index_digest}`"),
    ] {
        assert!(notes.contains(&line), "{line}\n{notes}");
    }
    for p in ["linux/amd64", "linux/arm/v7"] {
        let digest = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["platform"]["architecture"] == p.split('/').nth(1).unwrap())
            .map(|m| m["digest"].as_str().unwrap().to_string());
        let row = notes
            .lines()
            .find(|l| l.starts_with(&format!("| {p} |")))
            .unwrap_or_default();
        assert!(
            digest.is_some_and(|d| row.contains(&d)),
            "{p}: {row}\n{notes}"
        );
    }
    let names = r.names();
    // `docker load` takes a tarball back: the image with the release's
    // labels on its config (so another ID; the proved one is tagged back).
    let proved_id = String::from_utf8_lossy(
        &docker(&["image", "inspect", "-f", "{{.Id}}", "guix-matrix:arm-v7"]).stdout,
    )
    .trim()
    .to_string();
    let load = docker(&["load", "-i", dist.join(&names[1]).to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&load.stdout).contains("guix-matrix:arm-v7"),
        "{}",
        said(&load)
    );
    let loaded = docker(&[
        "image",
        "inspect",
        "-f",
        "{{index .Config.Labels \"org.opencontainers.image.version\"}}",
        "guix-matrix:arm-v7",
    ]);
    assert_eq!(String::from_utf8_lossy(&loaded.stdout).trim(), "v20260101");
    assert!(docker(&["tag", &proved_id, "guix-matrix:arm-v7"])
        .status
        .success());
    // The index: both platforms, our annotations.
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap(),
                m["platform"]["variant"]
                    .as_str()
                    .map(|v| format!("/{v}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm/v7"]);
    assert_eq!(
        index["annotations"]["org.opencontainers.image.version"],
        "v20260101"
    );
    // One set of digests: any OCI tool reads each tarball as an OCI
    // image, whose manifest is the one the index names and the registry
    // holds; the registry's index is the file's bytes.
    for (i, name) in names[..2].iter().enumerate() {
        let manifest = skopeo(format!("oci-archive:{}", dist.join(name).display()));
        let digest = harness::registry::Digest::of(&manifest).to_string();
        assert_eq!(index["manifests"][i]["digest"], digest.as_str(), "{name}");
        assert_eq!(
            skopeo(format!("docker://{repo}@{digest}")),
            manifest,
            "{name}: the registry holds other bytes"
        );
    }
    assert_eq!(
        skopeo(format!("docker://{repo}:v20260101")),
        index_bytes,
        "the registry's index is the release's"
    );

    // The registry: one reference, the right image for each platform.
    let pull = docker(&["pull", "--platform", "linux/arm/v7", &reference]);
    assert!(pull.status.success(), "{}", said(&pull));
    let inspect = |r: &str, f: &str| {
        String::from_utf8_lossy(&docker(&["image", "inspect", "-f", f, r]).stdout)
            .trim()
            .to_string()
    };
    assert_eq!(
        inspect(&reference, "{{.Architecture}}/{{.Variant}}"),
        "arm/v7"
    );
    let label = |name: &str| format!("{{{{index .Config.Labels \"{name}\"}}}}");
    assert_eq!(
        inspect(&reference, &label("io.guix-matrix.inputs")),
        inspect("guix-matrix:arm-v7", &label("io.guix-matrix.inputs")),
        "the registry holds the image the run proved"
    );
    // Labels as the ecosystem reads them, on the image's own config.
    assert_eq!(
        inspect(&reference, &label("org.opencontainers.image.version")),
        "v20260101"
    );
    let base_digest = inspect(&reference, &label("org.opencontainers.image.base.digest"));
    assert_eq!(
        index["manifests"][1]["annotations"]["org.opencontainers.image.base.digest"],
        base_digest.as_str()
    );
    assert_eq!(
        inspect(&reference, &label("org.opencontainers.image.base.name")),
        format!("{repo}@{base_digest}")
    );
    assert!(!inspect(&reference, &label("org.opencontainers.image.created")).is_empty());

    docker(&["rmi", "-f", &r.reference()]);
}

/// The published release checked as users get it: from the registry and
/// the tarballs, pinned or signed (a tag alone vouches for nothing), a
/// repro and a shell from it, a first repro on an empty engine, and a
/// damaged tarball refused.
#[test]
fn a_published_release_is_checked_and_reproduced_as_users_get_it() {
    let _shared = crate::common::shared();
    let _one = one_at_a_time();
    let r = released();
    let (dist, repo, reference) = (&r.dist, r.repo(), r.reference());
    let names = r.names();
    let (_, index) = r.index();
    // The published image, checked as users get it: from the registry and from the tarballs.
    let check_registry = |more: &[&str]| {
        let mut args = vec![
            "run",
            "--image",
            &reference,
            "--platform",
            "linux/arm/v7",
            "--scenario",
            "smoke",
            "--report",
        ];
        let r1 = r.work.join("r1");
        args.push(r1.to_str().unwrap());
        args.extend(more);
        harness(&args)
    };
    // A tag alone vouches for nothing: refused before any leg.
    let unverified = check_registry(&[]);
    assert_eq!(unverified.status.code(), Some(5), "{}", said(&unverified));
    assert!(
        said(&unverified).contains("unverified"),
        "{}",
        said(&unverified)
    );
    let from_registry = check_registry(&["--trust-key", r.public.to_str().unwrap()]);
    assert!(from_registry.status.success(), "{}", said(&from_registry));
    assert!(
        said(&from_registry).contains("signed by release.pub"),
        "{}",
        said(&from_registry)
    );
    let from_dist = check_image(dist, &r.work.join("r2"));
    assert!(from_dist.status.success(), "{}", said(&from_dist));
    // The same release, one leg with full output, and a shell on its image:
    // from the release, no build.
    let pinned = crate::common::pinned(dist);
    let repro = harness(&[
        "repro",
        "--platform",
        "linux/amd64",
        "--scenario",
        "tmpfs",
        "--image",
        &pinned,
        "--report",
        r.work.join("repro").to_str().unwrap(),
    ]);
    assert!(repro.status.success(), "{}", said(&repro));
    assert!(said(&repro).contains("published "), "{}", said(&repro));
    // The readdir probes came with the release: no probe image needed.
    assert!(
        said(&repro).contains("readdir probes: from release v20260101"),
        "{}",
        said(&repro)
    );
    // A first repro on an engine holding nothing, with no network (so
    // nothing can come from the mirror): the emulator helper and the probes
    // come with the release, the arm/v7 image is loaded while the helper
    // registers qemu-arm; nothing is built.
    assert!(
        index["manifests"][0]["annotations"][harness::names::HELPER_DIGEST]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "the helper is vouched for with the index: {index}"
    );
    // ... and the registry holds it under that digest (a repro from the
    // registry pulls it from there).
    let helper_digest = index["manifests"][0]["annotations"][harness::names::HELPER_DIGEST]
        .as_str()
        .unwrap();
    let helper_manifest = skopeo(format!("docker://{repo}@{helper_digest}"));
    assert_eq!(
        harness::registry::Digest::of(&helper_manifest).to_string(),
        helper_digest
    );
    let empty = testkit::SecondEngine::start("empty", None);
    let repro = harness(&[
        "repro",
        "--engine",
        &empty.url(),
        "--platform",
        "linux/arm/v7",
        "--scenario",
        "tmpfs",
        "--no-keep",
        "--image",
        &pinned,
        "--report",
        r.work.join("repro-empty").to_str().unwrap(),
    ]);
    let text = said(&repro);
    assert!(repro.status.success(), "{text}\n{}", empty.log());
    for line in [
        "emulator helper: from release v20260101",
        "readdir probes: from release v20260101",
    ] {
        assert!(text.contains(line), "{line}:\n{text}");
    }
    assert!(!text.contains("built "), "nothing is built:\n{text}");
    drop(empty);
    let shell = harness(&[
        "shell",
        "--platform",
        "linux/amd64",
        "--image",
        &pinned,
        "--",
        "sh",
        "-c",
        "exit 7",
    ]);
    assert_eq!(shell.status.code(), Some(7), "{}", said(&shell));
    assert!(
        said(&shell).contains("guix-matrix-published:amd64"),
        "{}",
        said(&shell)
    );

    // A damaged tarball is refused, never loaded.
    let broken = r.work.join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::copy(dist.join("SHA256SUMS"), broken.join("SHA256SUMS")).unwrap();
    let bytes = std::fs::read(dist.join(&names[0])).unwrap();
    std::fs::write(broken.join(&names[0]), &bytes[..bytes.len() / 2]).unwrap();
    let out = check_image(&broken, &r.work.join("r3"));
    let text = said(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let bundle = std::fs::read_to_string(r.work.join("r3/failures/amd64.txt")).unwrap_or_default();
    assert!(
        bundle.contains("SHA256SUMS says") && bundle.contains("it was not loaded"),
        "{text}\n{bundle}"
    );
    // Its reproduce line fetches the same release, pinned.
    assert!(
        bundle.contains(&format!(
            "reproduce: cargo run -p harness -- repro --platform linux/amd64 --image {}",
            crate::common::pinned(&broken)
        )),
        "{bundle}"
    );

    for tag in [
        reference.as_str(),
        "guix-matrix-published:arm-v7",
        "guix-matrix-published:amd64",
    ] {
        docker(&["rmi", "-f", tag]);
    }
}

/// The same release pushed again uploads nothing and keeps its digests; a
/// dated tag is never overwritten with other content unless asked; another
/// repository of the registry mounts what the first holds.
#[test]
fn a_release_pushed_again_uploads_nothing_and_never_overwrites_its_tag() {
    let _shared = crate::common::shared();
    let _one = one_at_a_time();
    let r = released();
    let (repo, reference) = (r.repo(), r.reference());
    // The same release pushed again is a no-op: the same index, no refusal;
    // --json says what was written and pushed, $GITHUB_OUTPUT the digests.
    let github_output = r.work.join("github-output");
    let out = crate::common::command()
        .args(["release", "--unpulled", "--json", "--report"])
        .arg(&r.report)
        .arg("--dist")
        .arg(r.work.join("dist-again"))
        .args(["--tag", "v20260101", "--push", &repo, "--sign-key"])
        .arg(&r.private)
        .env("GITHUB_OUTPUT", &github_output)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", said(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: release --json printed {}", said(&out)));
    let index = json["pushed"]["index"].as_str().unwrap().to_string();
    assert!(
        r.first_push.contains(&format!(
            "pushed {reference} and {repo}:latest ({index}, signed)"
        )),
        "not the same index digest: {index}\n{}",
        r.first_push
    );
    assert!(json["pushed"]["signed"].as_bool().unwrap());
    for p in ["linux/amd64", "linux/arm/v7"] {
        assert!(
            json["pushed"]["platforms"][p]
                .as_str()
                .unwrap()
                .starts_with("sha256:"),
            "{json}"
        );
    }
    let files = json["files"].as_array().unwrap();
    assert_eq!(files.len(), 7, "{json}");
    // The same digests in the directory and the registry.
    assert_eq!(json["index"], json["pushed"]["index"], "{json}");
    assert_eq!(json["platforms"], json["pushed"]["platforms"], "{json}");
    // Pushed again, nothing is uploaded again.
    assert_eq!(json["pushed"]["uploaded"]["blobs"], 0, "{json}");
    assert!(files
        .iter()
        .all(|f| f["size"].as_u64().unwrap() > 0 && f["sha256"].as_str().unwrap().len() == 64));
    let sums = std::fs::read(r.work.join("dist-again/SHA256SUMS")).unwrap();
    let sums_digest = harness::registry::Digest::of(&sums).to_string();
    assert_eq!(json["sums_digest"], sums_digest.as_str());
    let outputs = std::fs::read_to_string(&github_output).unwrap();
    for line in [
        "tag=v20260101".to_string(),
        format!("sums-digest={sums_digest}"),
        format!("index-digest={index}"),
        format!("reference={reference}"),
    ] {
        assert!(
            outputs.lines().any(|l| l == line),
            "{line} not in {outputs}"
        );
    }
    // The pins it printed are what the user types.
    let out = harness(&["verify", &format!("{reference}@{index}")]);
    assert!(said(&out).contains("verified, pinned"), "{}", said(&out));
    assert!(said(&out).contains("version v20260101"), "{}", said(&out));

    // The dated tag is never overwritten with other content, unless asked
    // (on a tag of its own: the other tests read v20260101).
    let dated = format!("{repo}:v20260102");
    let first = harness(&[
        "release",
        "--unpulled",
        "--report",
        r.report.to_str().unwrap(),
        "--dist",
        r.work.join("dist-0102").to_str().unwrap(),
        "--tag",
        "v20260102",
        "--push",
        &repo,
    ]);
    assert!(first.status.success(), "{}", said(&first));
    let amd64_only = proving_run(&["linux/amd64"], &r.work.join("reports2"));
    let dist2 = r.work.join("dist2");
    let again = |force: bool| {
        let mut args = vec![
            "release",
            "--unpulled",
            "--report",
            amd64_only.to_str().unwrap(),
            "--dist",
            dist2.to_str().unwrap(),
            "--tag",
            "v20260102",
            "--push",
            &repo,
        ];
        if force {
            args.push("--force");
        }
        harness(&args)
    };
    let out = again(false);
    let text = said(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains(&format!("{dated} already exists with other content")),
        "{text}"
    );
    assert!(text.contains("--force"), "{text}");
    assert!(again(true).status.success());

    // Another repository of the same registry mounts what the first holds:
    // only the image's config is uploaded (its base.name label names the
    // new repository).
    let (host, first) = repo.split_once('/').unwrap();
    let out = harness(&[
        "release",
        "--unpulled",
        "--json",
        "--report",
        amd64_only.to_str().unwrap(),
        "--dist",
        r.work.join("dist3").to_str().unwrap(),
        "--tag",
        "v20260101",
        "--push",
        &format!("{host}/moved"),
        "--mount-from",
        first,
    ]);
    assert!(out.status.success(), "{}", said(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let uploaded = &json["pushed"]["uploaded"];
    assert_eq!(uploaded["blobs"], 1, "{json}");
    assert!(uploaded["bytes"].as_u64().unwrap() < 64 << 10, "{json}");
    assert!(uploaded["mounted"].as_u64().unwrap() > 0, "{json}");
}

/// A registry that is not there, or answers garbage: the error names the
/// registry, the platform and the fix; nothing is tagged, and `dist/` holds
/// no file (the release's files are named only once all are complete).
#[test]
fn a_registry_that_does_not_answer_or_answers_garbage_is_named_with_the_fix() {
    let _shared = crate::common::shared();
    prepared("linux/amd64");
    let work = tempfile::tempdir().unwrap();
    let report = proving_run(&["linux/amd64"], &work.path().join("reports"));
    // A "registry" that answers every request with garbage.
    let garbage = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = garbage.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in garbage.incoming().flatten() {
            use std::io::{Read, Write};
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"SSH-2.0-OpenSSH_9.2 not a registry\r\n\r\n");
        }
    });
    for (i, host) in ["127.0.0.1:1".to_string(), format!("127.0.0.1:{port}")]
        .iter()
        .enumerate()
    {
        let dist = work.path().join(format!("dist{i}"));
        let out = harness(&[
            "release",
            "--unpulled",
            "--report",
            report.to_str().unwrap(),
            "--dist",
            dist.to_str().unwrap(),
            "--tag",
            "v20260102",
            "--push",
            &format!("{host}/guix-matrix"),
        ]);
        let text = said(&out);
        assert_eq!(out.status.code(), Some(3), "{host}: {text}");
        assert!(
            text.contains(&format!(
                "registry {host}: pushing {host}/guix-matrix:v20260102 (linux/amd64) failed"
            )) && text.contains(&format!("fix: check that {host} answers"))
                && text.contains("only what is missing is uploaded"),
            "{host}: {text}"
        );
        let tags = docker(&["images", "-q", &format!("{host}/guix-matrix")]);
        assert!(tags.stdout.is_empty(), "{host}: a push tag was left behind");
        // No work left behind, and a file under a final name is complete
        // (the directory may have finished before the push failed).
        let left: Vec<String> = std::fs::read_dir(&dist)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            !left.iter().any(|n| n.starts_with(".guix-matrix-release-")),
            "{host}: {left:?}"
        );
        if let Ok(sums) = std::fs::read_to_string(dist.join("SHA256SUMS")) {
            for line in sums.lines() {
                let (sum, name) = line.split_once("  ").unwrap();
                assert_eq!(sha256(&dist.join(name)), sum, "{host}: {name}");
            }
        } else {
            assert!(left.is_empty(), "{host}: {left:?}");
        }
    }
}

/// A disk that fills up under `dist/`: the error names the file and the
/// fix, no file is left under a final name, and the work is removed.
#[test]
fn a_full_disk_under_dist_leaves_no_release_file() {
    let _shared = crate::common::shared();
    prepared("linux/amd64");
    let work = tempfile::tempdir().unwrap();
    let report = proving_run(&["linux/amd64"], &work.path().join("reports"));
    let dist = work.path().join("dist");
    std::fs::create_dir(&dist).unwrap();
    let mount = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
        .arg(&dist)
        .output()
        .unwrap();
    assert!(mount.status.success(), "{}", said(&mount));
    let out = harness(&[
        "release",
        "--unpulled",
        "--report",
        report.to_str().unwrap(),
        "--dist",
        dist.to_str().unwrap(),
        "--tag",
        "v20260107",
    ]);
    let left: Vec<_> = std::fs::read_dir(&dist)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let _ = Command::new("umount").arg(&dist).output();
    let text = said(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains("No space left on device")
            && text.contains(dist.to_str().unwrap())
            && text.contains("fix: check the path and that the disk has room"),
        "{text}"
    );
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_report_that_is_missing_foreign_or_empty_releases_nothing() {
    let _shared = crate::common::shared();
    prepared("linux/amd64");
    let work = tempfile::tempdir().unwrap();
    let dist = work.path().join("dist");
    let release = |report: &Path| {
        harness(&[
            "release",
            "--unpulled",
            "--report",
            report.to_str().unwrap(),
            "--dist",
            dist.to_str().unwrap(),
            "--tag",
            "v20260103",
        ])
    };
    let out = release(&work.path().join("nope.json"));
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    assert!(
        said(&out).contains("cannot read the report"),
        "{}",
        said(&out)
    );

    let report = proving_run(&["linux/amd64"], &work.path().join("reports"));
    let text = std::fs::read_to_string(&report).unwrap();
    let foreign = work.path().join("foreign.json");
    let id = harness::report::RunReport::read(&report).unwrap().legs[0]
        .image_id
        .clone();
    std::fs::write(&foreign, text.replace(&id, "sha256:0000")).unwrap();
    let out = release(&foreign);
    assert!(
        said(&out).contains("the report is from another build"),
        "{}",
        said(&out)
    );

    // Two reports that both prove a platform: each platform's image comes
    // from its own run's report, so neither is taken.
    let twice = work.path().join("twice.json");
    std::fs::copy(&report, &twice).unwrap();
    let out = harness(&[
        "release",
        "--unpulled",
        "--report",
        report.to_str().unwrap(),
        "--report",
        twice.to_str().unwrap(),
        "--dist",
        dist.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", said(&out));
    assert!(
        said(&out).contains(&format!(
            "linux/amd64 passed in two reports, {} and {}",
            report.display(),
            twice.display()
        )),
        "{}",
        said(&out)
    );

    let failed = work.path().join("failed.json");
    let mut run = harness::report::RunReport::read(&report).unwrap();
    for o in run.legs.iter_mut().flat_map(|l| l.outcomes.iter_mut()) {
        o.verdict = harness::scenarios::Verdict::Failed("broken".into());
    }
    std::fs::write(&failed, serde_json::to_vec(&run).unwrap()).unwrap();
    let out = release(&failed);
    assert!(said(&out).contains("nothing to release"), "{}", said(&out));
    let out = harness(&[
        "release",
        "--unpulled",
        "--report",
        report.to_str().unwrap(),
        "--dist",
        dist.to_str().unwrap(),
        "--require-all",
    ]);
    // --require-all means every check: a smoke-only run is refused, and so
    // is a run with every scenario where one was skipped (offline).
    assert_eq!(out.status.code(), Some(4), "{}", said(&out));
    assert!(
        said(&out).contains(
            "--require-all needs every check, and it did not run pin, pulled, tmpfs, faillog, chroot, usage, defaults"
        ),
        "{}",
        said(&out)
    );
    let mut run = harness::report::RunReport::read(&report).unwrap();
    run.scenarios = harness::scenarios::Scenario::ALL.to_vec();
    let mut skipped = run.legs[0].outcomes[0].clone();
    skipped.scenario = harness::scenarios::Scenario::Pulled;
    skipped.verdict = harness::scenarios::Verdict::Skipped("offline: …".into());
    run.legs[0].outcomes.push(skipped);
    let partial = work.path().join("partial.json");
    std::fs::write(&partial, serde_json::to_vec(&run).unwrap()).unwrap();
    let out = harness(&[
        "release",
        "--unpulled",
        "--report",
        partial.to_str().unwrap(),
        "--dist",
        dist.to_str().unwrap(),
        "--require-all",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", said(&out));
    assert!(
        said(&out).contains("--require-all: linux/amd64 (pulled skipped), linux/386 (not run)"),
        "{}",
        said(&out)
    );
    assert!(
        !dist.exists() || std::fs::read_dir(&dist).unwrap().next().is_none(),
        "nothing written"
    );
}

/// The release ships the Guix of the checkout's pin, pulled by guix pull:
/// an unpulled image and one pulled by the offline stand-in are refused
/// (exit 4, platform and fix named, nothing written); `--unpulled` ships
/// them and says so in the index and in each image's label. Its images have
/// their own name (a matrix.toml of their own), so no other test's image flips.
#[test]
fn release_ships_only_the_pinned_guix_unless_told_to_ship_it_unpulled() {
    let _shared = crate::common::shared();
    prepared("linux/amd64");
    let work = tempfile::tempdir().unwrap();
    let checkout = harness::paths::Checkout::find().unwrap();
    let pin = harness::pin::read(&checkout.channels()).unwrap();
    const IMAGE: &str = "guix-matrix-t22g";
    let matrix = work.path().join("matrix.toml");
    let text = std::fs::read_to_string(checkout.matrix()).unwrap();
    std::fs::write(
        &matrix,
        text.replace("image = \"guix-matrix\"", &format!("image = \"{IMAGE}\"")),
    )
    .unwrap();
    let _gone = RemoveOnDrop(
        ["", "-guix", "-unpulled", "-pulled", "-base"]
            .map(|part| format!("{IMAGE}{part}:amd64"))
            .to_vec(),
    );
    docker(&[
        "tag",
        "guix-matrix-base:amd64",
        &format!("{IMAGE}-base:amd64"),
    ]);
    let m = matrix.to_str().unwrap();
    for (what, more, why) in [
        (
            "stand-in",
            &["--stand-in-pull"][..],
            "by the offline stand-in, not by guix pull",
        ),
        ("unpulled", &[][..], "carries no pull: it is Debian's guix"),
    ] {
        let reports = work.path().join(what);
        let mut args = vec!["--matrix", m, "--build-base"];
        args.extend(more);
        let report = proving_run_with(&["linux/amd64"], &reports, &args);
        let dist = work.path().join(format!("dist-{what}"));
        let release = |extra: &[&str]| {
            let mut args = vec![
                "release",
                "--matrix",
                m,
                "--report",
                report.to_str().unwrap(),
                "--dist",
                dist.to_str().unwrap(),
                "--tag",
                "v20260104",
            ];
            args.extend(extra);
            harness(&args)
        };
        let out = release(&[]);
        let text = said(&out);
        assert_eq!(out.status.code(), Some(4), "{what}: {text}");
        assert!(
            text.contains("linux/amd64: not the pinned Guix") && text.contains(why),
            "{what}: {text}"
        );
        assert!(
            text.contains("fix: run the matrix with the pull stage (`harness run --online`")
                && text.contains("release --unpulled"),
            "{what}: {text}"
        );
        assert!(!dist.exists(), "{what}: nothing is written when refused");

        let out = release(&["--unpulled"]);
        assert!(out.status.success(), "{what}: {}", said(&out));
        let index = index_annotations(&dist.join("guix-matrix-v20260104.index.json"));
        assert_eq!(
            index["io.guix-matrix.pulled"], "no: linux/amd64 shipped unpulled (release --unpulled)",
            "{what}"
        );
        let label = docker(&[
            "inspect",
            "--format",
            "{{index .Config.Labels \"io.guix-matrix.pulled\"}}",
            &format!("{IMAGE}:amd64"),
        ]);
        let label = String::from_utf8_lossy(&label.stdout).trim().to_string();
        let want = match what {
            "unpulled" => "no".to_string(),
            _ => format!("stand-in {pin}"),
        };
        assert_eq!(label, want, "{what}: the image says what it holds");
    }

    // The checkout's pin moved since the run: refused, even --unpulled.
    let moved = work.path().join("moved");
    std::fs::create_dir_all(&moved).unwrap();
    testkit::tree::copy(
        &checkout.root,
        &moved,
        &[
            "channels",
            "scripts",
            "substitutes",
            "fixtures",
            "Dockerfile",
        ],
    );
    std::fs::copy(&matrix, moved.join("matrix.toml")).unwrap();
    let channels = moved.join("channels/channels.scm");
    let text = std::fs::read_to_string(&channels).unwrap();
    std::fs::write(&channels, text.replace(&pin, &"1".repeat(40))).unwrap();
    let report = work.path().join("stand-in/report.json");
    let out = harness(&[
        "release",
        "--root",
        moved.to_str().unwrap(),
        "--unpulled",
        "--report",
        report.to_str().unwrap(),
        "--dist",
        work.path().join("dist-moved").to_str().unwrap(),
    ]);
    let text = said(&out);
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(
        text.contains(&format!(
            "it ran with pin {}, the checkout pins 111111111111; nothing was released",
            &pin[..12]
        )) && text.contains("fix: run the matrix again on this checkout"),
        "{text}"
    );
}

/// Removes these images when dropped (the test passed or not).
struct RemoveOnDrop(Vec<String>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for image in &self.0 {
            docker(&["rmi", "-f", image]);
        }
    }
}

/// The annotations of a release's multi-platform index.
fn index_annotations(file: &Path) -> serde_json::Value {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    index["annotations"].clone()
}

/// A release tarball that holds more than its one image (here the image and
/// the base, so loading it would move the base's tag) is refused before
/// anything is loaded: exit 4, the names it holds said, no tag in the engine
/// changed.
#[test]
fn a_tarball_with_more_than_its_image_is_refused_before_loading() {
    let _serial = crate::common::exclusive();
    prepared("linux/amd64");
    let work = tempfile::tempdir().unwrap();
    let report = proving_run(&["linux/amd64"], &work.path().join("reports"));
    let dist = work.path().join("dist");
    let out = harness(&[
        "release",
        "--unpulled",
        "--report",
        report.to_str().unwrap(),
        "--dist",
        dist.to_str().unwrap(),
        "--tag",
        "v20260105",
    ]);
    assert!(out.status.success(), "{}", said(&out));
    // Two images in the platform's tarball (its image and its base, in the
    // release's own layout), its checksum made to match.
    let raw = work.path().join("two.tar");
    two_images(
        &dist.join("guix-matrix-v20260105-amd64.tar"),
        &dist.join("guix-matrix-base-v20260105-amd64.tar"),
        &raw,
    );
    let name = "guix-matrix-v20260105-amd64.tar";
    let tarball = dist.join(name);
    std::fs::rename(&raw, &tarball).unwrap();
    let sums = dist.join("SHA256SUMS");
    let listed: String = std::fs::read_to_string(&sums)
        .unwrap()
        .lines()
        .map(|l| match l.ends_with(name) {
            true => format!("{}  {name}\n", sha256(&tarball)),
            false => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&sums, listed).unwrap();
    let tags = || {
        let out = docker(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]);
        let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("guix-matrix"))
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    };
    let before = tags();
    let out = check_image(&dist, &work.path().join("r"));
    let text = said(&out);
    let bundle =
        std::fs::read_to_string(work.path().join("r/failures/amd64.txt")).unwrap_or_default();
    assert_eq!(out.status.code(), Some(1), "{text}");
    // `docker save` lists the two images in either order.
    assert!(
        [
            "guix-matrix:amd64, guix-matrix-base:amd64",
            "guix-matrix-base:amd64, guix-matrix:amd64"
        ]
        .iter()
        .any(|both| bundle.contains(&format!(
            "{name}: it names 2 ({both}), not one guix-matrix image of linux/amd64"
        ))) && bundle.contains("it was not loaded"),
        "{text}\n{bundle}"
    );
    assert_eq!(tags(), before, "no name in the engine changed");

    // A tarball that never ends (a device, a pipe) is refused at once, unread.
    for (what, make) in [
        (
            "device",
            &(|p: &Path| std::os::unix::fs::symlink("/dev/zero", p).unwrap()) as &dyn Fn(&Path),
        ),
        ("pipe", &|p: &Path| {
            nix::unistd::mkfifo(p, nix::sys::stat::Mode::S_IRWXU).unwrap()
        }),
    ] {
        std::fs::remove_file(&tarball).unwrap();
        make(&tarball);
        let started = std::time::Instant::now();
        let out = check_image(&dist, &work.path().join(what));
        let bundle = std::fs::read_to_string(work.path().join(what).join("failures/amd64.txt"))
            .unwrap_or_default();
        assert_eq!(out.status.code(), Some(1), "{what}: {}", said(&out));
        assert!(
            bundle.contains("not a regular file; refused"),
            "{what}: {bundle}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{what}"
        );
    }
}

/// One tarball in the release's layout holding the images of `image` and
/// `base` (each a release tarball): every blob once, both manifest entries.
fn two_images(image: &Path, base: &Path, out: &Path) {
    use std::io::Read;
    let mut blobs = std::collections::BTreeMap::new();
    let mut manifest: Vec<serde_json::Value> = vec![];
    for file in [image, base] {
        let mut archive = tar::Archive::new(std::fs::File::open(file).unwrap());
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            let mut bytes = vec![];
            entry.read_to_end(&mut bytes).unwrap();
            match name.as_str() {
                "manifest.json" => {
                    let images: Vec<serde_json::Value> = serde_json::from_slice(&bytes).unwrap();
                    manifest.extend(images);
                }
                n if n.starts_with("blobs/") => {
                    blobs.insert(name, bytes);
                }
                _ => {}
            }
        }
    }
    let mut tar = tar::Builder::new(std::fs::File::create(out).unwrap());
    let mut add = |name: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, name, bytes).unwrap();
    };
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    for (name, bytes) in &blobs {
        add(name, bytes);
    }
    tar.into_inner().unwrap();
}

/// A helper image that carries the right tag and labels but is not the one
/// the proving run used (anyone can copy a label) is left out of the
/// release, and the release says which image it found and which the run
/// used; the probes the run used still ship.
#[test]
fn a_helper_no_proving_run_used_is_left_out_whatever_its_labels_say() {
    let _all = crate::common::exclusive();
    let r = released();
    let h = crate::common::harness();
    let amd64 = h.matrix.find("linux/amd64").unwrap();
    let tag = harness::recipe::helper_spec(&h.matrix, &h.options.checkout.root, amd64).tag;
    let inspect = |what: &str| {
        let out = docker(&["image", "inspect", "--format", "{{.Id}}", what]);
        assert!(out.status.success(), "{}", said(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let genuine = inspect(&tag);
    // The look-alike: the helper with one more variable, its labels inherited.
    crate::common::docker_build(&tag, &format!("FROM {genuine}\nENV LOOK_ALIKE=1\n"));
    let look_alike = inspect(&tag);
    assert_ne!(look_alike, genuine);
    let dist = tempfile::tempdir().unwrap();
    let out = harness(&[
        "release",
        "--unpulled",
        "--report",
        r.report.to_str().unwrap(),
        "--dist",
        dist.path().to_str().unwrap(),
        "--tag",
        "v20260105",
    ]);
    // The genuine helper back before anything can fail.
    assert!(docker(&["tag", &genuine, &tag]).status.success());
    assert!(docker(&["rmi", &look_alike]).status.success());
    let text = said(&out);
    assert!(out.status.success(), "{text}");
    let short = |id: &str| id.trim_start_matches("sha256:")[..12].to_string();
    let line = format!(
        "left out: {tag}: the engine's emulator helper is image {}, not one the proving run used ({} used image {})",
        short(&look_alike),
        r.report.display(),
        short(&genuine)
    );
    assert!(text.contains(&line), "{line}\n{text}");
    let shipped: Vec<String> = std::fs::read_dir(dist.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !shipped.iter().any(|n| n.contains("binfmt")),
        "no helper shipped: {shipped:?}"
    );
    assert!(
        shipped
            .iter()
            .any(|n| n == "guix-matrix-probes-v20260105.tar"),
        "the probes the run used ship: {shipped:?}"
    );
}

/// No rollback of an engine: `--from` a release older than the one the
/// engine's images came from (the version label of its fetched release
/// image) is refused, exit 4, naming both versions and the fix, before
/// anything is fetched; `--allow-older` takes it.
#[test]
fn a_from_release_older_than_the_engines_images_is_refused_unless_allowed() {
    let _all = crate::common::exclusive();
    let r = released();
    let h = crate::common::harness();
    let amd64 = h.matrix.find("linux/amd64").unwrap();
    let newer = harness::names::from_release(&h.matrix.defaults, amd64);
    let base = harness::names::base(&h.matrix.defaults, amd64);
    // What a `--from v20991231` run leaves on an engine: the fetched
    // release image, labelled with its version.
    let labelled = format!("FROM {base}\nLABEL {}=v20991231\n", harness::names::VERSION);
    crate::common::docker_build(&newer, &labelled);
    let from = crate::common::pinned(&r.dist);
    let run = |more: &[&str]| {
        let mut args = vec![
            "run",
            "--platform",
            "linux/amd64",
            "--scenario",
            "smoke",
            "--from",
            &from,
            "--report",
        ];
        let report = r.work.join("older");
        args.push(report.to_str().unwrap());
        args.extend(more);
        harness(&args)
    };
    let refused = run(&[]);
    let text = said(&refused);
    let _ = docker(&["rmi", &newer]);
    assert_eq!(refused.status.code(), Some(4), "{text}");
    for line in [
        "is version v20260101, older than v20991231, which this engine's images came from",
        "pass --allow-older to go back on purpose",
    ] {
        assert!(text.contains(line), "{line}:\n{text}");
    }
    // Put back, and allowed.
    crate::common::docker_build(&newer, &labelled);
    let allowed = run(&["--allow-older"]);
    let _ = docker(&["rmi", &newer]);
    assert!(allowed.status.success(), "{}", said(&allowed));
}

/// The tags of `docker images` that start with `prefix`.
pub(crate) fn tags_like(prefix: &str) -> Vec<String> {
    let out = docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// The released amd64 and arm/v7 images (arm/v7 built under qemu), rebuilt
/// from this tree and the release's own bases with every stage above the
/// base anew (no layer cache), are the same bits: config and every layer.
/// The rebuild leaves none of its tags behind.
#[test]
fn a_release_rebuilt_from_its_tree_and_its_base_is_the_same_bits() {
    let r = released();
    let _one = one_at_a_time();
    // No `clean` of another test while it builds (its own lease guards it
    // from a user's).
    let _shared = crate::common::shared();
    let out = harness(&[
        "rebuild",
        "--check",
        &crate::common::pinned(&r.dist),
        "--platform",
        "linux/amd64",
        "--platform",
        "linux/arm/v7",
    ]);
    let text = said(&out);
    assert!(out.status.success(), "{text}");
    for p in ["linux/amd64", "linux/arm/v7"] {
        assert!(
            text.contains(&format!("{p}: identical: image sha256:")),
            "{text}"
        );
    }
    assert!(
        tags_like("guix-matrix-rebuild").is_empty(),
        "{:?}",
        tags_like("guix-matrix-rebuild")
    );
}
