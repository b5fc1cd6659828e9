//! Releases are taken only when vouched for: a pinned digest, or a
//! cosign-compatible signature by a trusted key — checked against forged,
//! re-signed and replayed releases, in directories and in a real registry
//! (Debian's docker-registry on 127.0.0.1), with OpenSSL as a second
//! verifier of the same signature bytes.

use crate::common::keys;
use harness::registry::Client;
use harness::registry::{Digest, Reference};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use testkit::LocalRegistry as Registry;

use crate::common::{cli as harness, said};

fn verify(source: &str, keys: &[&Path]) -> Output {
    let mut args = vec!["verify".to_string(), source.to_string()];
    for k in keys {
        args.extend(["--trust-key".into(), k.display().to_string()]);
    }
    harness(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

/// A release directory of one (small) file, SHA256SUMS, signed by `key`.
fn signed_dir(key: Option<&Path>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let file = "guix-matrix-v1-amd64.tar";
    std::fs::write(dir.path().join(file), b"an image").unwrap();
    let sums = format!("{}  {file}\n", Digest::of(b"an image").hex());
    std::fs::write(dir.path().join("SHA256SUMS"), &sums).unwrap();
    if let Some(key) = key {
        let signer = harness::release::trust::Signer::load(key).unwrap();
        std::fs::write(
            dir.path().join("SHA256SUMS.sig"),
            signer.sign(sums.as_bytes()),
        )
        .unwrap();
    }
    dir
}

#[test]
fn a_release_directory_is_taken_signed_by_a_trusted_key_or_pinned_and_never_forged() {
    let (_o, ours, ours_pub) = keys("ours");
    let (_t, theirs, theirs_pub) = keys("theirs");
    let d = signed_dir(Some(&ours));
    let dir = d.path().to_str().unwrap();

    let out = verify(dir, &[&ours_pub]);
    assert_eq!(code(&out), Some(0), "{}", said(&out));
    assert!(
        said(&out).contains("verified, signed by ours.pub"),
        "{}",
        said(&out)
    );
    // The signature is what `cosign sign-blob` writes: OpenSSL agrees.
    let sums = std::fs::read(d.path().join("SHA256SUMS")).unwrap();
    let sig = std::fs::read_to_string(d.path().join("SHA256SUMS.sig")).unwrap();
    assert!(openssl_verifies(&sums, &sig, &ours_pub));
    assert!(!openssl_verifies(&sums, &sig, &theirs_pub));

    // Trusting nobody, or only another key: unverified (exit 5), with the fix.
    for keys in [vec![], vec![theirs_pub.as_path()]] {
        let out = verify(dir, &keys);
        assert_eq!(code(&out), Some(5), "{}", said(&out));
        assert!(
            said(&out).contains("fix: pin the release's digest"),
            "{}",
            said(&out)
        );
    }
    // Re-signed by another key: not ours.
    let forged = signed_dir(Some(&theirs));
    let out = verify(forged.path().to_str().unwrap(), &[&ours_pub]);
    assert_eq!(code(&out), Some(5), "{}", said(&out));
    assert!(
        said(&out).contains("signed by another key, or changed since"),
        "{}",
        said(&out)
    );

    // Changed after signing: a line of SHA256SUMS now names other bytes.
    let sums = d.path().join("SHA256SUMS");
    let text = std::fs::read_to_string(&sums).unwrap();
    std::fs::write(
        &sums,
        text.replace(&Digest::of(b"an image").hex()[..4], "0000"),
    )
    .unwrap();
    let out = verify(dir, &[&ours_pub]);
    assert_eq!(code(&out), Some(5), "{}", said(&out));

    // Unsigned, but pinned by the digest of its SHA256SUMS: taken; a pin of
    // other content is a refusal (exit 4).
    let plain = signed_dir(None);
    let pinned = crate::common::pinned(plain.path());
    let out = verify(&pinned, &[]);
    assert_eq!(code(&out), Some(0), "{}", said(&out));
    assert!(
        said(&out).contains("verified, pinned sha256:"),
        "{}",
        said(&out)
    );
    let wrong = format!("{}@{}", plain.path().display(), Digest::of(b"other"));
    let out = verify(&wrong, &[]);
    assert_eq!(code(&out), Some(4), "{}", said(&out));
    assert!(said(&out).contains("the pin is"), "{}", said(&out));

    // A malformed pin or key is a usage error naming it.
    let out = verify(&format!("{}@sha256:abc", plain.path().display()), &[]);
    assert_eq!(code(&out), Some(2), "{}", said(&out));
    assert!(said(&out).contains("not a sha256 digest"), "{}", said(&out));
    let out = verify(dir, &[&ours]);
    assert_eq!(code(&out), Some(2), "{}", said(&out));
    assert!(
        said(&out).contains("not an ECDSA P-256 public key"),
        "{}",
        said(&out)
    );
}

#[test]
fn checksums_and_signatures_are_read_only_from_bounded_regular_files() {
    let (_o, ours, ours_pub) = keys("ours");
    // A SHA256SUMS that never ends (a pipe; a device) is refused at once.
    for (what, make) in [
        (
            "pipe",
            &(|p: &Path| nix::unistd::mkfifo(p, nix::sys::stat::Mode::S_IRWXU).unwrap())
                as &dyn Fn(&Path),
        ),
        ("device", &|p: &Path| {
            std::os::unix::fs::symlink("/dev/zero", p).unwrap()
        }),
    ] {
        let d = signed_dir(Some(&ours));
        let sums = d.path().join("SHA256SUMS");
        std::fs::remove_file(&sums).unwrap();
        make(&sums);
        let t = std::time::Instant::now();
        let out = verify(d.path().to_str().unwrap(), &[&ours_pub]);
        assert_eq!(code(&out), Some(3), "{what}: {}", said(&out));
        assert!(
            said(&out).contains("not a regular file; refused"),
            "{what}: {}",
            said(&out)
        );
        assert!(t.elapsed() < std::time::Duration::from_secs(10), "{what}");
    }
    // A signature file larger than any signature.
    let d = signed_dir(Some(&ours));
    std::fs::write(d.path().join("SHA256SUMS.sig"), vec![b'A'; 1 << 20]).unwrap();
    let out = verify(d.path().to_str().unwrap(), &[&ours_pub]);
    assert_eq!(code(&out), Some(3), "{}", said(&out));
    assert!(
        said(&out).contains("more than the 4096 it may have"),
        "{}",
        said(&out)
    );
}

/// A real (tiny) single-platform image, pushed blob by blob, under an index
/// tagged `tag`; returns the index digest.
fn push_tiny_image(client: &Client, tag: &str, content: &[u8]) -> Digest {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "hello", content).unwrap();
    let layer_tar = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &layer_tar).unwrap();
    let layer = gz.finish().unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [Digest::of(&layer_tar).to_string()]},
    }))
    .unwrap();
    let layer_digest = client.put_blob(&layer).unwrap();
    let config_digest = client.put_blob(&config).unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest.to_string(), "size": layer.len()}],
    }))
    .unwrap();
    let manifest_digest = client
        .put_manifest(
            &Digest::of(&manifest).to_string(),
            "application/vnd.oci.image.manifest.v1+json",
            &manifest,
        )
        .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest.to_string(), "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
        }],
        // As every release's index: the version it is.
        "annotations": {"org.opencontainers.image.version": tag},
    }))
    .unwrap();
    client
        .put_manifest(tag, "application/vnd.oci.image.index.v1+json", &index)
        .unwrap()
}

/// Whether OpenSSL — another implementation of the same algorithm — finds
/// `signature` (base64 of an ASN.1 ECDSA P-256 signature over SHA-256, as
/// cosign writes it) a signature of `bytes` by `key`: what `cosign
/// verify-blob --key` checks. (Debian builds skopeo with sigstore
/// verification disabled, so it cannot be the second verifier here.)
fn openssl_verifies(bytes: &[u8], signature: &str, key: &Path) -> bool {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let (data, sig) = (dir.path().join("data"), dir.path().join("sig"));
    std::fs::write(&data, bytes).unwrap();
    std::fs::write(
        &sig,
        base64::engine::general_purpose::STANDARD
            .decode(signature.trim())
            .unwrap(),
    )
    .unwrap();
    Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(key)
        .arg("-signature")
        .arg(&sig)
        .arg(&data)
        .output()
        .expect("openssl (apt-get install openssl; .ci/run installs it)")
        .status
        .success()
}

/// The simple-signing payloads and signatures stored for `digest` (cosign's
/// `sha256-<hex>.sig` tag), read with the registry's API alone.
fn stored_signatures(client: &Client, digest: &Digest) -> Vec<(Vec<u8>, String)> {
    let Some((manifest, _)) = client
        .manifest(&harness::release::trust::signature_tag(digest))
        .unwrap()
    else {
        return vec![];
    };
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            assert_eq!(l["mediaType"], harness::release::trust::SIMPLE_SIGNING);
            let d = Digest::parse(l["digest"].as_str().unwrap()).unwrap();
            let sig = l["annotations"][harness::release::trust::SIGNATURE_ANNOTATION]
                .as_str()
                .unwrap()
                .to_string();
            (client.blob(&d, 1 << 16).unwrap(), sig)
        })
        .collect()
}

#[test]
fn a_registry_release_is_taken_by_its_cosign_signature_and_never_replayed() {
    let registry = Registry::start();
    let repo = registry.repo();
    let reference = Reference::parse(&format!("{repo}:v1")).unwrap();
    let client = Client::new(&reference);
    let (_o, ours, ours_pub) = keys("ours");
    let (_t, theirs, theirs_pub) = keys("theirs");
    let signer = |k: &PathBuf| harness::release::trust::Signer::load(k).unwrap();

    let first = push_tiny_image(&client, "v1", b"first\n");
    let tagged = format!("{repo}:v1");
    // Unsigned: unverified.
    let out = verify(&tagged, &[&ours_pub]);
    assert_eq!(code(&out), Some(5), "{}", said(&out));
    assert!(
        said(&out).contains("carries no signature"),
        "{}",
        said(&out)
    );
    assert!(stored_signatures(&client, &first).is_empty());

    // Signed by us: both take it; a key they were not told to trust: neither.
    let index = |d: &Digest| client.manifest(&d.to_string()).unwrap().unwrap().0;
    harness::release::signature::sign_recursive(
        &client,
        &reference,
        &first,
        &index(&first),
        &signer(&ours),
    )
    .unwrap();
    let out = verify(&tagged, &[&ours_pub]);
    assert_eq!(code(&out), Some(0), "{}", said(&out));
    assert!(
        said(&out).contains(&format!("signed by ours.pub (its index is {first})")),
        "{}",
        said(&out)
    );
    let out = verify(&tagged, &[&theirs_pub]);
    assert_eq!(code(&out), Some(5), "{}", said(&out));
    // What is stored is what cosign stores: the payload names the index,
    // and OpenSSL finds the signature ours (and not theirs). The platform's
    // image is signed too, as podman and skopeo look for it.
    let stored = stored_signatures(&client, &first);
    assert_eq!(stored.len(), 1);
    let (payload, sig) = &stored[0];
    let payload_json: serde_json::Value = serde_json::from_slice(payload).unwrap();
    assert_eq!(
        payload_json["critical"]["image"]["docker-manifest-digest"],
        first.to_string()
    );
    assert_eq!(
        payload_json["critical"]["identity"]["docker-reference"],
        repo
    );
    assert_eq!(
        payload_json["critical"]["type"],
        "cosign container image signature"
    );
    assert!(openssl_verifies(payload, sig, &ours_pub));
    assert!(!openssl_verifies(payload, sig, &theirs_pub));
    let listed: serde_json::Value = serde_json::from_slice(&index(&first)).unwrap();
    let platform = Digest::parse(listed["manifests"][0]["digest"].as_str().unwrap()).unwrap();
    assert_eq!(stored_signatures(&client, &platform).len(), 1);

    // Pinned by digest: taken without a signature (the digest is the proof).
    let out = verify(&format!("{repo}@{first}"), &[]);
    assert_eq!(code(&out), Some(0), "{}", said(&out));

    // No rollback: the older signed index served under a newer tag is
    // refused (the signature and the index name v1); `latest` resolves to
    // the version it names, said.
    let index_media = "application/vnd.oci.image.index.v1+json";
    client
        .put_manifest("v2", index_media, &index(&first))
        .unwrap();
    let out = verify(&format!("{repo}:v2"), &[&ours_pub]);
    assert_eq!(code(&out), Some(4), "{}", said(&out));
    assert!(
        said(&out).contains("serves version v1 under the tag v2: a rollback"),
        "{}",
        said(&out)
    );
    client
        .put_manifest("latest", index_media, &index(&first))
        .unwrap();
    let out = verify(&format!("{repo}:latest"), &[&ours_pub]);
    assert_eq!(code(&out), Some(0), "{}", said(&out));
    assert!(said(&out).contains("version v1"), "{}", said(&out));
    let payload: serde_json::Value = serde_json::from_slice(&stored[0].0).unwrap();
    assert_eq!(payload["optional"]["io.guix-matrix.version"], "v1");

    // The tag moved to other content, and our signature of the first index
    // replayed as the new one's: refused as not what it was signed for.
    let second = push_tiny_image(&client, "v1", b"second\n");
    let (sig, _) = client
        .manifest(&harness::release::trust::signature_tag(&first))
        .unwrap()
        .unwrap();
    client
        .put_manifest(
            &harness::release::trust::signature_tag(&second),
            "application/vnd.oci.image.manifest.v1+json",
            &sig,
        )
        .unwrap();
    let out = verify(&tagged, &[&ours_pub]);
    assert_eq!(code(&out), Some(4), "{}", said(&out));
    assert!(
        said(&out).contains(&format!(
            "ours.pub signed another image ({first}), not {second}"
        )),
        "{}",
        said(&out)
    );

    // Re-signed by another key: a valid signature, by a key not trusted.
    harness::release::signature::sign_recursive(
        &client,
        &reference,
        &second,
        &index(&second),
        &signer(&theirs),
    )
    .unwrap();
    let out = verify(&tagged, &[&ours_pub]);
    assert_eq!(code(&out), Some(5), "{}", said(&out));
    assert!(
        said(&out).contains("none of its signatures is by a key this checkout trusts"),
        "{}",
        said(&out)
    );
    let out = verify(&tagged, &[&theirs_pub]);
    assert_eq!(code(&out), Some(0), "{}", said(&out));
}

#[test]
fn a_published_image_that_nothing_vouches_for_is_refused_before_any_leg() {
    let d = signed_dir(None);
    let report = tempfile::tempdir().unwrap();
    let t = std::time::Instant::now();
    let out = harness(&[
        "run",
        "--image",
        d.path().to_str().unwrap(),
        "--platform",
        "linux/amd64",
        "--report",
        report.path().to_str().unwrap(),
    ]);
    assert_eq!(code(&out), Some(5), "{}", said(&out));
    assert!(
        said(&out).contains("unverified: it has no SHA256SUMS.sig"),
        "{}",
        said(&out)
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(30));
    // And --from with --require-verified, for CI that wants to fail.
    let out = harness(&[
        "run",
        "--from",
        d.path().to_str().unwrap(),
        "--require-verified",
        "--platform",
        "linux/amd64",
        "--report",
        report.path().to_str().unwrap(),
    ]);
    assert_eq!(code(&out), Some(5), "{}", said(&out));
}

/// SIGTERM while a release tarball is being hashed (a long read: a sparse
/// file of 6 GiB) ends the run at once with 143, not when the read ends.
#[test]
fn sigterm_during_a_long_read_ends_the_run_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let name = "guix-matrix-v1-amd64.tar";
    let tarball = dir.path().join(name);
    std::fs::File::create(&tarball)
        .unwrap()
        .set_len(6 << 30)
        .unwrap();
    std::fs::write(
        dir.path().join("SHA256SUMS"),
        format!(
            "{}  {name}\n{}  guix-matrix-v1.index.json\n",
            Digest::of(b"not it").hex(),
            Digest::of(b"{}").hex()
        ),
    )
    .unwrap();
    let report = tempfile::tempdir().unwrap();
    let mut child = crate::common::command()
        .args(["run", "--image", &crate::common::pinned(dir.path())])
        .args([
            "--platform",
            "linux/amd64",
            "--scenario",
            "smoke",
            "--report",
        ])
        .arg(report.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait until the harness has the tarball open (the read is under way).
    let reading = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == tarball))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !reading() {
        assert!(
            std::time::Instant::now() < deadline,
            "the harness never opened the tarball"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the harness ended before reading"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        reading(),
        "the read ended too soon to test a signal during it"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let signalled = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if signalled.elapsed() > std::time::Duration::from_secs(30) {
            let _ = child.kill();
            panic!("SIGTERM did not end the run within 30 s of a long read");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    eprintln!("ended {:.1?} after SIGTERM", signalled.elapsed());
    assert_eq!(status.code(), Some(143));
    assert!(signalled.elapsed() < std::time::Duration::from_secs(10));
}
