//! Signing as cosign stores signatures in a registry: the simple-signing payload (naming the image, its repository and the release's version), attaching one, signing an index and its images. What a payload binds is checked in `trust`.

use super::trust::{
    index_version, signature_tag, Signer, SIGNATURE_ANNOTATION, SIGNATURE_TYPE, SIMPLE_SIGNING,
    VERSION_CLAIM,
};
use crate::registry::{Client, Digest, Reference, RegistryError};

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
    use super::super::trust::{check_payload, check_version};
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
