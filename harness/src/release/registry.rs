//! Pushing a release to a registry: each platform's image, then one multi-platform index under the tag and `latest`.

use super::gate::Proved;
use super::oci::{descriptor, multi_platform_index, oci_platform};
use super::ReleaseError;
use crate::engine::{timeout, Engine, EngineError};
use bollard::query_parameters::{PushImageOptionsBuilder, TagImageOptionsBuilder};
use futures::StreamExt;
use oci_spec::image::MediaType;
use sha2::{Digest as _, Sha256};
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

    fn scheme(&self) -> &'static str {
        let name = self.host.split(':').next().unwrap_or_default();
        if name == "localhost" || name.starts_with("127.") {
            "http"
        } else {
            "https"
        }
    }

    fn manifest_url(&self, reference: &str) -> String {
        format!(
            "{}://{}/v2/{}/manifests/{reference}",
            self.scheme(),
            self.host,
            self.repo
        )
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
) -> Result<String, ReleaseError> {
    let mut manifests = vec![];
    for p in proved {
        if let Some(base) = &p.base {
            push_one(
                engine,
                base,
                registry,
                &crate::names::registry_base_tag(tag, &p.platform),
            )
            .await?;
        }
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
        manifests.push(d);
    }
    let body = multi_platform_index(manifests, annotations);
    let want = format!("sha256:{}", hex::encode(Sha256::digest(body.as_bytes())));
    let registry2 = Registry {
        host: registry.host.clone(),
        repo: registry.repo.clone(),
    };
    let (tag2, body2, want2) = (tag.to_string(), body.clone(), want.clone());
    tokio::task::spawn_blocking(move || {
        if let Some(have) = existing(&registry2, &tag2)? {
            if have != want2 && !force {
                return Err(ReleaseError::TagTaken {
                    reference: registry2.reference(&tag2),
                    have,
                    want: want2,
                });
            }
        }
        for t in [tag2.as_str(), "latest"] {
            put_index(&registry2, t, &body2)?;
        }
        Ok(())
    })
    .await
    .expect("registry task")?;
    Ok(want)
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
    if credentials.is_some()
        && matches!(
            crate::engine::Address::parse(&engine.host),
            Ok(crate::engine::Address::Tcp(_))
        )
    {
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

fn credentials(registry: &Registry) -> Option<bollard::auth::DockerCredentials> {
    let user = std::env::var("GUIX_MATRIX_REGISTRY_USER").ok()?;
    let token = std::env::var("GUIX_MATRIX_REGISTRY_TOKEN").ok()?;
    Some(bollard::auth::DockerCredentials {
        username: Some(user),
        password: Some(token),
        serveraddress: Some(registry.host.clone()),
        ..Default::default()
    })
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(60)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// The digest the registry holds under `tag`, if any.
fn existing(registry: &Registry, tag: &str) -> Result<Option<String>, ReleaseError> {
    let url = registry.manifest_url(tag);
    let failed = |message: String| ReleaseError::Registry {
        registry: registry.host.clone(),
        reference: registry.reference(tag),
        message,
    };
    let accept = format!(
        "{OCI_INDEX}, application/vnd.docker.distribution.manifest.list.v2+json, {DOCKER_MANIFEST}"
    );
    let mut resp = request(registry, "pull", |auth| {
        let mut req = agent().get(&url).header("Accept", &accept);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        req.call()
    })
    .map_err(failed)?;
    match resp.status().as_u16() {
        404 => Ok(None),
        200 => {
            let body = resp
                .body_mut()
                .read_to_vec()
                .map_err(|e| failed(e.to_string()))?;
            Ok(Some(format!(
                "sha256:{}",
                hex::encode(Sha256::digest(&body))
            )))
        }
        code => Err(failed(format!("GET {url}: HTTP {code}"))),
    }
}

fn put_index(registry: &Registry, tag: &str, body: &str) -> Result<(), ReleaseError> {
    let url = registry.manifest_url(tag);
    let failed = |message: String| ReleaseError::Registry {
        registry: registry.host.clone(),
        reference: registry.reference(tag),
        message,
    };
    let resp = request(registry, "pull,push", |auth| {
        let mut req = agent().put(&url).header("Content-Type", OCI_INDEX);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        req.send(body)
    })
    .map_err(failed)?;
    match resp.status().as_u16() {
        200..=299 => Ok(()),
        code => Err(failed(format!("PUT {url}: HTTP {code}"))),
    }
}

type Response = ureq::http::Response<ureq::Body>;

/// Sends a request anonymously; when the registry answers 401 with a
/// `Bearer` challenge, gets a token for the repository (with the login from
/// GUIX_MATRIX_REGISTRY_USER / _TOKEN when set) and sends it again.
fn request(
    registry: &Registry,
    actions: &str,
    send: impl Fn(Option<&str>) -> Result<Response, ureq::Error>,
) -> Result<Response, String> {
    let resp = send(None).map_err(|e| e.to_string())?;
    if resp.status().as_u16() != 401 {
        return Ok(resp);
    }
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    match auth_for(&challenge)? {
        Auth::Basic => {
            let basic = basic_login().ok_or_else(|| {
                "the registry asks for a login: set GUIX_MATRIX_REGISTRY_USER and GUIX_MATRIX_REGISTRY_TOKEN".to_string()
            })?;
            send(Some(&format!("Basic {basic}"))).map_err(|e| e.to_string())
        }
        Auth::Bearer { realm, service } => {
            let token = token(registry, &realm, service.as_deref(), actions)?;
            send(Some(&format!("Bearer {token}"))).map_err(|e| e.to_string())
        }
    }
}

/// How a registry's 401 challenge asks to be answered.
#[derive(Debug, PartialEq, Eq)]
enum Auth {
    /// The login itself, on the registry's own connection.
    Basic,
    /// A token from `realm` (an https URL, or http on a loopback address).
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// Reads a `WWW-Authenticate` challenge; refuses what would send a login
/// in clear: a token realm that is plain http off the loopback (its host is
/// where the login goes). Basic goes to the registry itself, which is
/// spoken to over https unless it is on the loopback.
fn auth_for(challenge: &str) -> Result<Auth, String> {
    let field = |name: &str| {
        regex::Regex::new(&format!(r#"{name}="([^"]*)""#))
            .expect("regex")
            .captures(challenge)
            .map(|c| c[1].to_string())
    };
    let scheme = challenge.split_whitespace().next().unwrap_or_default();
    if scheme.eq_ignore_ascii_case("basic") {
        return Ok(Auth::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(format!(
            "the registry wants a login it does not describe: `{challenge}`"
        ));
    }
    let realm = field("realm")
        .ok_or_else(|| format!("the registry wants a login it does not describe: `{challenge}`"))?;
    let (realm_scheme, rest) = realm
        .split_once("://")
        .ok_or_else(|| format!("the registry's token realm `{realm}` is not a URL"))?;
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let loopback = name == "localhost" || name.starts_with("127.") || name == "[::1]";
    match realm_scheme {
        "https" => {}
        "http" if loopback => {}
        _ => {
            return Err(format!(
                "the registry sends the login to `{realm}`, which is not https: refused (a login never travels in clear)"
            ))
        }
    }
    Ok(Auth::Bearer {
        realm,
        service: field("service"),
    })
}

/// `user:token` from GUIX_MATRIX_REGISTRY_USER / _TOKEN, base64 (Basic auth).
fn basic_login() -> Option<String> {
    use base64::Engine as _;
    let user = std::env::var("GUIX_MATRIX_REGISTRY_USER").ok()?;
    let pass = std::env::var("GUIX_MATRIX_REGISTRY_TOKEN").ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
}

/// The token `realm` gives for the repository (with the login when set).
fn token(
    registry: &Registry,
    realm: &str,
    service: Option<&str>,
    actions: &str,
) -> Result<String, String> {
    let mut url = format!("{realm}?scope=repository:{}:{actions}", registry.repo);
    if let Some(service) = service {
        url.push_str(&format!("&service={service}"));
    }
    let mut req = agent().get(&url);
    if let Some(basic) = basic_login() {
        req = req.header("Authorization", format!("Basic {basic}"));
    }
    let mut resp = req.call().map_err(|e| e.to_string())?;
    if resp.status().as_u16() != 200 {
        return Err(format!("the registry refused a token (HTTP {}): log in with GUIX_MATRIX_REGISTRY_USER and GUIX_MATRIX_REGISTRY_TOKEN", resp.status().as_u16()));
    }
    let text = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    let body: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    body["token"]
        .as_str()
        .or(body["access_token"].as_str())
        .map(str::to_string)
        .ok_or_else(|| "the registry's token answer has no token".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_never_travels_in_clear() {
        assert_eq!(
            auth_for(r#"Bearer realm="https://ghcr.io/token",service="ghcr.io""#),
            Ok(Auth::Bearer {
                realm: "https://ghcr.io/token".into(),
                service: Some("ghcr.io".into())
            })
        );
        let e = auth_for(r#"Bearer realm="http://evil.example/token""#).unwrap_err();
        assert!(e.contains("not https: refused"), "{e}");
        assert!(auth_for(r#"Bearer service="x""#).is_err());
        assert!(auth_for("Negotiate").is_err());
        // A Basic challenge is answered with Basic auth, never used as a URL.
        assert_eq!(auth_for(r#"Basic realm="Registry Realm""#), Ok(Auth::Basic));
        assert!(matches!(
            auth_for(r#"Bearer realm="http://127.0.0.1:5001/auth""#),
            Ok(Auth::Bearer { .. })
        ));
    }

    #[test]
    fn registry_targets() {
        let r = Registry::parse("127.0.0.1:5000/guix/matrix").unwrap();
        assert_eq!(
            (r.host.as_str(), r.repo.as_str(), r.scheme()),
            ("127.0.0.1:5000", "guix/matrix", "http")
        );
        assert_eq!(
            Registry::parse("ghcr.io/o/guix-matrix").unwrap().scheme(),
            "https"
        );
        assert!(Registry::parse("guix-matrix").is_none());
        assert!(Registry::parse("ghcr.io/o/guix:tag").is_none());
    }
}
