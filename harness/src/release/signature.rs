//! Signatures as cosign stores them in a registry: the simple-signing payload (naming the image, its repository and the release's version), attaching one, signing an index and its images, and checking what a payload binds (no other image, no other repository, no rollback).

use super::trust::Signer;
use crate::registry::{Client, Digest, Reference, RegistryError};

/// The sigstore attachment's layer type and the annotation holding the signature.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const SIGNATURE_TYPE: &str = "cosign container image signature";

/// The tag cosign keeps an image's signatures under: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &Digest) -> String {
    format!("sha256-{}.sig", digest.hex())
}

/// The simple-signing payload cosign signs for `digest` in `repository`,
/// naming the release's version in its optional claims when it has one.
pub fn payload(repository: &str, digest: &Digest, version: Option<&str>) -> Vec<u8> {
    let optional = version.map(|v| serde_json::json!({ VERSION_CLAIM: v }));
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": { "docker-reference": repository },
            "image": { "docker-manifest-digest": digest.to_string() },
            "type": SIGNATURE_TYPE,
        },
        "optional": optional,
    }))
    .expect("payload")
}

/// The optional claim of a signature that names the release's version.
pub const VERSION_CLAIM: &str = "io.guix-matrix.version";

/// The release version an index names (its `org.opencontainers.image.version`).
pub fn index_version(index: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(index).ok()?;
    v["annotations"]["org.opencontainers.image.version"]
        .as_str()
        .map(str::to_string)
}

/// No rollback: the version a vouched-for index names (and its signature
/// claims, when it does) must be the tag asked for, unless that tag is
/// `latest` (or none), which resolves to it. Returns the version.
pub fn check_version(
    asked: Option<&str>,
    index: &[u8],
    payload: Option<&[u8]>,
) -> Result<Option<String>, String> {
    let version = index_version(index);
    let claimed = payload
        .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
        .and_then(|p| p["optional"][VERSION_CLAIM].as_str().map(str::to_string));
    if let (Some(claimed), Some(version)) = (&claimed, &version) {
        if claimed != version {
            return Err(format!(
                "its signature names version {claimed}, its index {version}"
            ));
        }
    }
    let named = claimed.or(version);
    match (asked, &named) {
        (None | Some("latest"), _) => Ok(named),
        (Some(tag), Some(v)) if v == tag => Ok(named),
        (Some(tag), Some(v)) => Err(format!(
            "the registry serves version {v} under the tag {tag}: a rollback"
        )),
        (Some(tag), None) => Err(format!(
            "its index names no version, so it cannot be the release {tag}"
        )),
    }
}

/// A signed payload must name this image of this repository.
pub(super) fn check_payload(
    payload: &[u8],
    reference: &Reference,
    digest: &Digest,
) -> Result<(), String> {
    let v: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| format!("a payload that does not parse ({e})"))?;
    let critical = &v["critical"];
    if critical["type"] != SIGNATURE_TYPE {
        return Err(format!("a payload of type {}", critical["type"]));
    }
    let signed = critical["image"]["docker-manifest-digest"]
        .as_str()
        .unwrap_or("(none)");
    if signed != digest.to_string() {
        return Err(format!("another image ({signed}), not {digest}"));
    }
    let identity = critical["identity"]["docker-reference"]
        .as_str()
        .unwrap_or("");
    let same_repo = Reference::parse(identity.split('@').next().unwrap_or(identity))
        .is_ok_and(|r| r.repository() == reference.repository());
    if !same_repo {
        return Err(format!(
            "it for another repository ({identity}), not {}",
            reference.repository()
        ));
    }
    Ok(())
}

/// Signs the image `digest` of `reference`'s repository and stores the
/// signature where cosign and containers/image look for it (the
/// `sha256-<hex>.sig` tag: an OCI manifest with one simple-signing layer).
pub fn attach_signature(
    client: &Client,
    reference: &Reference,
    digest: &Digest,
    signer: &Signer,
    version: Option<&str>,
) -> Result<Digest, RegistryError> {
    let payload = payload(&reference.repository(), digest, version);
    let signature = signer.sign(&payload);
    let layer = client.put_blob(&payload)?;
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "",
        "os": "",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [layer.to_string()] },
    }))
    .expect("config");
    let config_digest = client.put_blob(&config)?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest.to_string(),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": SIMPLE_SIGNING,
            "digest": layer.to_string(),
            "size": payload.len(),
            "annotations": { SIGNATURE_ANNOTATION: signature },
        }],
    }))
    .expect("manifest");
    client.put_manifest(
        &signature_tag(digest),
        "application/vnd.oci.image.manifest.v1+json",
        &manifest,
    )
}

/// Signs the index `digest` (of bytes `index`) and every image it lists,
/// each signature naming the index's version, as `cosign sign --recursive` does: cosign verifies the index a tag
/// names, podman and skopeo the platform's image they pull from it.
pub fn sign_recursive(
    client: &Client,
    reference: &Reference,
    digest: &Digest,
    index: &[u8],
    signer: &Signer,
) -> Result<(), RegistryError> {
    let listed: oci_spec::image::ImageIndex =
        serde_json::from_slice(index).map_err(|e| RegistryError {
            what: format!("sign {}", reference.at(digest)),
            message: format!("not an image index: {e}"),
        })?;
    let version = index_version(index);
    for m in listed.manifests() {
        if let Ok(d) = Digest::parse(m.digest().as_ref()) {
            attach_signature(client, reference, &d, signer, version.as_deref())?;
        }
    }
    attach_signature(client, reference, digest, signer, version.as_deref())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_names_one_image_of_one_repository() {
        let r = Reference::parse("127.0.0.1:5000/guix-matrix:v1").unwrap();
        let d = Digest::of(b"index");
        let p = payload(&r.repository(), &d, Some("v1"));
        assert!(check_payload(&p, &r, &d).is_ok());
        let e = check_payload(&p, &r, &Digest::of(b"other")).unwrap_err();
        assert!(e.contains("another image"), "{e}");
        let elsewhere = Reference::parse("127.0.0.1:5000/other:v1").unwrap();
        let e = check_payload(&p, &elsewhere, &d).unwrap_err();
        assert!(e.contains("another repository"), "{e}");
    }

    #[test]
    fn an_older_release_under_a_newer_tag_is_a_rollback() {
        let index = |v: &str| {
            serde_json::to_vec(&serde_json::json!({
                "annotations": { "org.opencontainers.image.version": v }
            }))
            .unwrap()
        };
        let (old, d) = (index("v20260101"), Digest::of(b"i"));
        let signed = payload("r/guix-matrix", &d, Some("v20260101"));
        // The tag asked for is the version signed: taken, and latest resolves to it.
        assert_eq!(
            check_version(Some("v20260101"), &old, Some(&signed)),
            Ok(Some("v20260101".into()))
        );
        assert_eq!(
            check_version(Some("latest"), &old, Some(&signed)),
            Ok(Some("v20260101".into()))
        );
        // The old index under the new tag: refused.
        let e = check_version(Some("v20260108"), &old, Some(&signed)).unwrap_err();
        assert!(
            e.contains("serves version v20260101 under the tag v20260108"),
            "{e}"
        );
        // A signature of one version over an index of another: refused.
        let e = check_version(None, &index("v20260108"), Some(&signed)).unwrap_err();
        assert!(
            e.contains("names version v20260101, its index v20260108"),
            "{e}"
        );
        // An index that names no version is no dated release.
        let e = check_version(Some("v20260108"), b"{}", None).unwrap_err();
        assert!(e.contains("names no version"), "{e}");
    }
}
