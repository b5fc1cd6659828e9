//! Pushing a staged release to a registry without the engine: the blobs it lacks, each platform's manifests by digest, then the index under the tag and `latest`.

use super::oci::{blob_path, Staging, OCI_INDEX, OCI_MANIFEST};
use super::ReleaseError;
use crate::registry::{Client, Sent};
use crate::registry::{Digest, Reference};
use crate::release::trust::Signer;
use futures::{StreamExt, TryStreamExt};

/// `REGISTRY/REPO` split, and whether to speak plain HTTP (loopback).
pub struct PushTarget {
    pub host: String,
    pub repo: String,
}

impl PushTarget {
    pub fn parse(target: &str) -> Option<PushTarget> {
        let (host, repo) = target.split_once('/')?;
        (host.contains('.') || host.contains(':') || host == "localhost")
            .then(|| PushTarget {
                host: host.to_string(),
                repo: repo.to_string(),
            })
            .filter(|r| !r.repo.is_empty() && !r.repo.contains(':'))
    }

    /// `REGISTRY/REPO:tag` as a reference.
    pub fn parsed(&self, tag: &str) -> Reference {
        Reference {
            host: self.host.clone(),
            repo: self.repo.clone(),
            tag: Some(tag.to_string()),
        }
    }

    pub fn client(&self) -> Client {
        Client::new(&self.parsed("latest"))
    }

    pub fn reference(&self, tag: &str) -> String {
        format!("{}/{}:{tag}", self.host, self.repo)
    }
}

/// Pushes the staged release: every blob the registry lacks (several at a
/// time, each streamed from its file), each platform's base and image
/// manifest by digest, then the index under `tag` and `latest` — last, so a
/// release that fails half-way leaves no tag pointing at an incomplete set,
/// and a re-run uploads only what is missing. A `tag` that already holds
/// other content is refused unless `force`.
pub async fn push(
    staging: &Staging,
    registry: &PushTarget,
    tag: &str,
    force: bool,
    signer: Option<&Signer>,
    mount_from: Option<&str>,
) -> Result<Pushed, ReleaseError> {
    let started = std::time::Instant::now();
    let client = registry.client();
    let reference = registry.parsed(tag);
    let shown = reference.to_string();
    let fail = |platform: Option<&str>, e: crate::registry::RegistryError| ReleaseError::Registry {
        registry: reference.host.clone(),
        reference: match platform {
            Some(p) => format!("{shown} ({p})"),
            None => shown.clone(),
        },
        message: e.to_string(),
    };
    // Each blob once, with the first platform that needs it (for errors).
    let mut blobs: Vec<(String, Digest, std::path::PathBuf, u64)> = vec![];
    let mut seen = std::collections::HashSet::new();
    for sp in &staging.platforms {
        for staged in sp.parts() {
            for d in staged.blobs() {
                if seen.insert(d.digest().to_string()) {
                    let digest = Digest::parse(d.digest().as_ref()).expect("sha256");
                    blobs.push((
                        sp.platform.docker.clone(),
                        digest,
                        blob_path(&staging.blobs(), d),
                        d.size(),
                    ));
                }
            }
        }
    }
    // Progress: a line each time a blob is done (the layers are hundreds
    // of MiB each; a push of a release is gigabytes).
    let total_blobs = blobs.len();
    let total_bytes: u64 = blobs.iter().map(|b| b.3).sum();
    let done = std::sync::Mutex::new((0usize, 0u64));
    let uploads: Vec<(Sent, u64)> = futures::stream::iter(blobs)
        .map(|(platform, digest, path, size)| {
            let client = client.clone();
            let fail = &fail;
            let done = &done;
            let from = mount_from.map(str::to_string);
            async move {
                let uploaded = tokio::task::spawn_blocking(move || {
                    client.put_blob_file(&path, &digest, from.as_deref())
                })
                .await
                .expect("upload task")
                .map_err(|e| fail(Some(&platform), e))?;
                let mut d = done.lock().expect("progress lock");
                (d.0, d.1) = (d.0 + 1, d.1 + size);
                tracing::info!(
                    "push: {} of {total_blobs} blobs, {} of {} MiB ({:?})",
                    d.0,
                    d.1 >> 20,
                    total_bytes >> 20,
                    uploaded
                );
                Ok::<_, ReleaseError>((uploaded, size))
            }
        })
        .buffer_unordered(UPLOADS)
        .try_collect()
        .await?;
    let count = |how: Sent| uploads.iter().filter(|(s, _)| *s == how).count();
    let uploaded = Uploaded {
        blobs: count(Sent::Uploaded),
        bytes: uploads
            .iter()
            .filter(|(s, _)| *s == Sent::Uploaded)
            .map(|(_, size)| size)
            .sum(),
        present: count(Sent::Present),
        mounted: count(Sent::Mounted),
    };
    let manifests: Vec<(String, Digest, Vec<u8>)> = staging
        .platforms
        .iter()
        .flat_map(|sp| {
            sp.parts()
                .map(|s| (sp.platform.docker.clone(), s.digest(), s.bytes.clone()))
        })
        .collect();
    let body = staging.index.clone();
    let want = staging.index_digest();
    let signer_given = signer.is_some();
    let signer = signer.cloned();
    let platforms: Vec<(String, Digest)> = staging
        .platforms
        .iter()
        .map(|sp| (sp.platform.docker.clone(), sp.image.digest()))
        .collect();
    let (reference, want2) = (reference.clone(), want.clone());
    tokio::task::spawn_blocking(move || {
        let fail =
            |platform: Option<&str>, e: crate::registry::RegistryError| ReleaseError::Registry {
                registry: reference.host.clone(),
                reference: match platform {
                    Some(p) => format!("{shown} ({p})"),
                    None => shown.clone(),
                },
                message: e.to_string(),
            };
        for (platform, digest, bytes) in &manifests {
            client
                .put_manifest(&digest.to_string(), OCI_MANIFEST, bytes)
                .map_err(|e| fail(Some(platform), e))?;
        }
        let tag = reference.tag.as_deref().unwrap_or("latest");
        if let Some((_, have)) = client.manifest(tag).map_err(|e| fail(None, e))? {
            if have != want2 && !force {
                return Err(ReleaseError::TagTaken {
                    reference: shown.clone(),
                    have: have.to_string(),
                    want: want2.to_string(),
                });
            }
        }
        // The signature before the tags: a tag never names an unsigned
        // index of a signed release.
        if let Some(signer) = &signer {
            crate::release::signature::sign_recursive(&client, &reference, &want2, &body, signer)
                .map_err(|e| fail(None, e))?;
        }
        for t in [tag, "latest"] {
            client
                .put_manifest(t, OCI_INDEX, &body)
                .map_err(|e| fail(None, e))?;
        }
        Ok(())
    })
    .await
    .expect("registry task")?;
    Ok(Pushed {
        index: want,
        platforms,
        signed: signer_given,
        uploaded,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// How many blobs are uploaded at once.
const UPLOADS: usize = 4;

/// What a push put in the registry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pushed {
    /// The multi-platform index under the tag and `latest`.
    pub index: Digest,
    /// Each platform's image manifest, by Docker platform.
    pub platforms: Vec<(String, Digest)>,
    /// Whether the index and its images carry a signature.
    pub signed: bool,
    pub uploaded: Uploaded,
    /// Seconds spent pushing.
    pub seconds: f64,
}

/// The blobs a push sent, and those the registry already had.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Uploaded {
    pub blobs: usize,
    pub bytes: u64,
    pub present: usize,
    /// Mounted from `--mount-from`, nothing sent.
    pub mounted: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_targets() {
        let r = PushTarget::parse("127.0.0.1:5000/guix/matrix").unwrap();
        assert_eq!(
            (r.host.as_str(), r.repo.as_str(), r.parsed("t").loopback()),
            ("127.0.0.1:5000", "guix/matrix", true)
        );
        assert!(!PushTarget::parse("ghcr.io/o/guix-matrix")
            .unwrap()
            .parsed("t")
            .loopback());
        assert!(PushTarget::parse("guix-matrix").is_none());
        assert!(PushTarget::parse("ghcr.io/o/guix:tag").is_none());
    }
}
