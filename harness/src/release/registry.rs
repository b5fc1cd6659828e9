//! Pushing a release to a registry: each platform's image, then one multi-platform index under the tag and `latest`.

use super::gate::Proved;
use super::oci::{descriptor, multi_platform_index, oci_platform};
use super::ReleaseError;
use crate::engine::{timeout, Engine, EngineError};
use crate::registry::Client;
use crate::source::{Digest, Reference};
use crate::trust::Signer;
use bollard::query_parameters::{PushImageOptionsBuilder, TagImageOptionsBuilder};
use futures::{StreamExt, TryStreamExt};
use oci_spec::image::MediaType;
use std::collections::BTreeMap;
use std::time::Duration;

/// What the engine pushes: Docker's v2 manifest.
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// `REGISTRY/REPO` split, and whether to speak plain HTTP (loopback).
pub struct Registry {
    pub host: String,
    pub repo: String,
}

impl Registry {
    pub fn parse(target: &str) -> Option<Registry> {
        let (host, repo) = target.split_once('/')?;
        (host.contains('.') || host.contains(':') || host == "localhost")
            .then(|| Registry {
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

/// Pushes each platform's image (`REPO:TAG-<slug>`, and the base it was
/// built on as `REPO:TAG-base-<slug>`) through the engine, then
/// one index of them all under `tag` and `latest` — last, so a release that
/// fails half-way leaves no tag pointing at an incomplete set. A `tag` that
/// already holds other content is refused unless `force`.
pub async fn push(
    engine: &Engine,
    proved: &[Proved],
    registry: &Registry,
    tag: &str,
    annotations: &BTreeMap<String, String>,
    force: bool,
    signer: Option<&Signer>,
) -> Result<Pushed, ReleaseError> {
    // Platforms at once (the engine pushes their layers in parallel too);
    // in the matrix's order in the index.
    let lanes = std::thread::available_parallelism().map_or(2, |n| n.get().min(3));
    let pushed: Vec<_> = futures::stream::iter(proved)
        .map(|p| push_platform(engine, p, registry, tag))
        .buffered(lanes)
        .try_collect()
        .await?;
    let (manifests, platforms): (Vec<_>, Vec<_>) = pushed.into_iter().unzip();
    let body = multi_platform_index(manifests, annotations);
    let want = Digest::of(body.as_bytes());
    let client = registry.client();
    let reference = registry.parsed(tag);
    let signer_given = signer.is_some();
    let signer = signer.cloned();
    let want2 = want.clone();
    tokio::task::spawn_blocking(move || {
        let shown = reference.to_string();
        let fail = |e: crate::registry::RegistryError| ReleaseError::Registry {
            registry: reference.host.clone(),
            reference: shown.clone(),
            message: e.to_string(),
        };
        let tag = reference.tag.as_deref().unwrap_or("latest");
        if let Some((_, have)) = client.manifest(tag).map_err(fail)? {
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
            crate::trust::sign_recursive(&client, &reference, &want2, body.as_bytes(), signer)
                .map_err(fail)?;
        }
        for t in [tag, "latest"] {
            client
                .put_manifest(t, OCI_INDEX, body.as_bytes())
                .map_err(fail)?;
        }
        Ok(())
    })
    .await
    .expect("registry task")?;
    Ok(Pushed {
        index: want,
        platforms,
        signed: signer_given,
    })
}

/// What a push put in the registry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pushed {
    /// The multi-platform index under the tag and `latest`.
    pub index: Digest,
    /// Each platform's image manifest, by Docker platform.
    pub platforms: Vec<(String, Digest)>,
    /// Whether the index and its images carry a signature.
    pub signed: bool,
}

/// One platform's base (when it has one) and image, pushed; the index
/// entry of the image, with its platform and its base's digest.
async fn push_platform(
    engine: &Engine,
    p: &Proved,
    registry: &Registry,
    tag: &str,
) -> Result<(oci_spec::image::Descriptor, (String, Digest)), ReleaseError> {
    let base = match &p.base {
        Some(base) => Some(
            push_one(
                engine,
                base,
                registry,
                &crate::names::registry_base_tag(tag, &p.platform),
            )
            .await?
            .0,
        ),
        None => None,
    };
    let (digest, size) = push_one(
        engine,
        &p.id,
        registry,
        &format!("{tag}-{}", p.platform.slug()),
    )
    .await?;
    let mut d = descriptor(
        MediaType::Other(DOCKER_MANIFEST.into()),
        digest.trim_start_matches("sha256:"),
        size,
    );
    d.set_platform(Some(oci_platform(&p.platform)));
    let parsed = Digest::parse(&digest).map_err(|why| ReleaseError::Registry {
        registry: registry.host.clone(),
        reference: registry.reference(tag),
        message: format!("the engine reported a digest that is not one: {why}"),
    })?;
    // The base it was built on, vouched for with the index (what a build
    // from this release starts from).
    if let Some(base) = base {
        d.set_annotations(Some(std::collections::HashMap::from([(
            crate::published::BASE_DIGEST.to_string(),
            base,
        )])));
    }
    Ok((d, (p.platform.docker.clone(), parsed)))
}

async fn push_one(
    engine: &Engine,
    image: &str,
    registry: &Registry,
    tag: &str,
) -> Result<(String, u64), ReleaseError> {
    let repo = format!("{}/{}", registry.host, registry.repo);
    let reference = format!("{repo}:{tag}");
    let opts = TagImageOptionsBuilder::default()
        .repo(&repo)
        .tag(tag)
        .build();
    engine
        .docker
        .tag_image(image, Some(opts))
        .await
        .map_err(EngineError::api(format!("tag {reference}")))?;
    let result = push_stream(engine, registry, &repo, tag, &reference).await;
    // The push tag was only a name for the push: leave no trace.
    engine.remove_image(&reference).await;
    result
}

async fn push_stream(
    engine: &Engine,
    registry: &Registry,
    repo: &str,
    tag: &str,
    reference: &str,
) -> Result<(String, u64), ReleaseError> {
    let failed = |message: String| ReleaseError::Registry {
        registry: registry.host.clone(),
        reference: reference.to_string(),
        message,
    };
    let credentials = credentials(registry);
    if credentials.is_some() && in_clear(&engine.host) {
        return Err(failed(format!(
            "the login would travel unencrypted to the engine at {} (plain tcp); nothing was pushed — use a unix socket or TLS (DOCKER_TLS_VERIFY, DOCKER_CERT_PATH)",
            engine.host
        )));
    }
    let step = format!("push {reference}");
    let re = regex::Regex::new(r"digest: (sha256:[0-9a-f]{64}) size: ([0-9]+)").expect("regex");
    crate::retry::network(&step, |e: &ReleaseError| matches!(e, ReleaseError::Registry { message, .. } if message.contains("connection reset") || message.contains("EOF")), || async {
        let opts = PushImageOptionsBuilder::default().tag(tag).build();
        let mut stream = engine.docker.push_image(repo, Some(opts), credentials.clone());
        let mut found = None;
        timeout(&step, Duration::from_secs(3600), async {
            while let Some(item) = stream.next().await {
                let info = item.map_err(|e| failed(e.to_string()))?;
                if let Some(err) = info.error_detail.and_then(|d| d.message) {
                    return Err(failed(err));
                }
                if let Some(c) = info.status.as_deref().and_then(|s| re.captures(s)) {
                    found = Some((c[1].to_string(), c[2].parse().unwrap_or(0)));
                }
            }
            Ok(())
        })
        .await??;
        found.ok_or_else(|| failed("the engine reported no digest for the pushed image".into()))
    })
    .await
}

/// Whether what is sent to the engine at `host` travels unencrypted
/// (plain tcp; a unix socket stays on the machine, https is TLS).
fn in_clear(host: &str) -> bool {
    matches!(
        crate::engine::Address::parse(host),
        Ok(crate::engine::Address::Tcp(_))
    )
}

/// The login for the engine's push: the harness's variables, else what
/// `docker login` left (a credential helper, or the config's `auths`).
fn credentials(registry: &Registry) -> Option<bollard::auth::DockerCredentials> {
    use base64::Engine as _;
    let basic = crate::registry::basic_login(&registry.host)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic)
        .ok()?;
    let (user, token) = String::from_utf8(decoded)
        .ok()?
        .split_once(':')
        .map(|(u, t)| (u.to_string(), t.to_string()))?;
    Some(bollard::auth::DockerCredentials {
        username: Some(user),
        password: Some(token),
        serveraddress: Some(registry.host.clone()),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_is_never_handed_to_an_engine_over_plain_tcp() {
        assert!(in_clear("tcp://10.0.0.5:2375"));
        assert!(!in_clear("unix:///var/run/docker.sock"));
        assert!(!in_clear("https://10.0.0.5:2376"));
    }

    #[test]
    fn registry_targets() {
        let r = Registry::parse("127.0.0.1:5000/guix/matrix").unwrap();
        assert_eq!(
            (r.host.as_str(), r.repo.as_str(), r.parsed("t").loopback()),
            ("127.0.0.1:5000", "guix/matrix", true)
        );
        assert!(!Registry::parse("ghcr.io/o/guix-matrix")
            .unwrap()
            .parsed("t")
            .loopback());
        assert!(Registry::parse("guix-matrix").is_none());
        assert!(Registry::parse("ghcr.io/o/guix:tag").is_none());
    }
}
