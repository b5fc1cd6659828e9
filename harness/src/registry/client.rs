//! One repository of one registry: manifests and blobs by digest, uploads as `docker push` sends them, retries on the status code.

use super::auth::{auth_for, basic_login, Auth};
use super::{Digest, Reference, RegistryError, Sent, ACCEPT, MAX_MANIFEST};
use std::time::Duration;

/// One repository of one registry.
#[derive(Debug, Clone)]
pub struct Client {
    pub host: String,
    pub repo: String,
    /// The Authorization header that last worked, by the actions asked for
    /// (a release's many requests log in once).
    logins: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
}

type Response = ureq::http::Response<ureq::Body>;

impl Client {
    pub fn new(reference: &Reference) -> Client {
        Client {
            host: reference.host.clone(),
            repo: reference.repo.clone(),
            logins: Default::default(),
        }
    }

    fn scheme(&self) -> &'static str {
        let r = Reference {
            host: self.host.clone(),
            repo: self.repo.clone(),
            tag: None,
        };
        if r.loopback() {
            "http"
        } else {
            "https"
        }
    }

    fn url(&self, kind: &str, reference: &str) -> String {
        format!(
            "{}://{}/v2/{}/{kind}/{reference}",
            self.scheme(),
            self.host,
            self.repo
        )
    }

    fn failed(&self, what: String) -> impl Fn(String) -> RegistryError {
        move |message| RegistryError {
            what: what.clone(),
            message,
        }
    }

    /// The manifest under `reference` (a tag or a digest): its bytes and
    /// their digest, or None when the registry has none. A manifest asked for
    /// by digest must hash to it.
    pub fn manifest(&self, reference: &str) -> Result<Option<(Vec<u8>, Digest)>, RegistryError> {
        let url = self.url("manifests", reference);
        let failed = self.failed(format!(
            "GET {}/{} manifest {reference}",
            self.host, self.repo
        ));
        let mut resp = self
            .send("pull", |auth| {
                authorized(agent().get(&url).header("Accept", ACCEPT), auth).call()
            })
            .map_err(&failed)?;
        match resp.status().as_u16() {
            404 => Ok(None),
            200 => {
                let body = resp
                    .body_mut()
                    .with_config()
                    .limit(MAX_MANIFEST)
                    .read_to_vec()
                    .map_err(|e| failed(e.to_string()))?;
                let digest = Digest::of(&body);
                if let Ok(asked) = Digest::parse(reference) {
                    if asked != digest {
                        return Err(failed(format!(
                            "the registry answered with {digest}, not the manifest asked for"
                        )));
                    }
                }
                Ok(Some((body, digest)))
            }
            code => Err(failed(format!("HTTP {code}"))),
        }
    }

    /// The blob `digest`, at most `max` bytes, checked against its digest.
    pub fn blob(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, RegistryError> {
        let url = self.url("blobs", &digest.to_string());
        let failed = self.failed(format!("GET {}/{} blob {digest}", self.host, self.repo));
        let mut resp = self
            .send("pull", |auth| authorized(agent().get(&url), auth).call())
            .map_err(&failed)?;
        match resp.status().as_u16() {
            200 => {
                let body = resp
                    .body_mut()
                    .with_config()
                    .limit(max)
                    .read_to_vec()
                    .map_err(|e| failed(e.to_string()))?;
                if Digest::of(&body) != *digest {
                    return Err(failed("its content does not hash to its digest".into()));
                }
                Ok(body)
            }
            code => Err(failed(format!("HTTP {code}"))),
        }
    }

    /// Uploads `bytes` as a blob unless the registry has it; its digest.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest, RegistryError> {
        let digest = Digest::of(bytes);
        self.upload(&digest, None, || {
            Ok(Box::new(std::io::Cursor::new(bytes.to_vec())) as Box<dyn std::io::Read + Send>)
        })?;
        Ok(digest)
    }

    /// Puts the file at `path` as the blob `digest` unless the registry
    /// has it: mounted from the repository `mount_from` of the same
    /// registry when it has it there, else streamed (never held in memory).
    pub fn put_blob_file(
        &self,
        path: &std::path::Path,
        digest: &Digest,
        mount_from: Option<&str>,
    ) -> Result<Sent, RegistryError> {
        self.upload(digest, mount_from, || {
            Ok(Box::new(std::fs::File::open(path)?) as Box<dyn std::io::Read + Send>)
        })
    }

    /// HEAD, then (when the registry lacks it) an upload as the docker CLI
    /// makes it: POST — a cross-repository mount when `mount_from` is given,
    /// which the registry may answer with an upload instead — one streamed
    /// PATCH of the body `open` gives (chunked transfer encoding: the way
    /// every registry takes `docker push`, where a body sent with its length
    /// may be capped — GHCR answers 416 over 4 MiB), and an empty PUT naming
    /// the digest. A session that fails is begun again from its POST (its
    /// partial data never reused).
    fn upload(
        &self,
        digest: &Digest,
        mount_from: Option<&str>,
        open: impl Fn() -> std::io::Result<Box<dyn std::io::Read + Send>>,
    ) -> Result<Sent, RegistryError> {
        let failed = self.failed(format!("upload {}/{} blob {digest}", self.host, self.repo));
        let head = self.url("blobs", &digest.to_string());
        let have = self
            .send("pull,push", |auth| {
                authorized(agent().head(&head), auth).call()
            })
            .map_err(&failed)?;
        if have.status().as_u16() == 200 {
            return Ok(Sent::Present);
        }
        let mut start = self.url("blobs", "uploads/");
        let actions = match mount_from {
            Some(from) => {
                start.push_str(&format!("?mount={digest}&from={from}"));
                // The token must also let this repository read the other.
                format!("pull,push {from}:pull")
            }
            None => "pull,push".to_string(),
        };
        let mut delay = Duration::from_secs(1);
        for session in 1..=SESSIONS {
            let resp = self
                .send(&actions, |auth| {
                    authorized(agent().post(&start), auth).send_empty()
                })
                .map_err(&failed)?;
            if resp.status().as_u16() == 201 && mount_from.is_some() {
                return Ok(Sent::Mounted);
            }
            if resp.status().as_u16() != 202 {
                return Err(failed(format!(
                    "starting the upload: HTTP {}",
                    resp.status().as_u16()
                )));
            }
            match self.stream(&resp, digest, &open) {
                Ok(()) => return Ok(Sent::Uploaded),
                Err(why) if session < SESSIONS => {
                    tracing::warn!(
                        "{}: blob {digest}: {why}; a new upload in {delay:?}",
                        self.host
                    );
                    std::thread::sleep(delay);
                    delay *= 2;
                }
                Err(why) => return Err(failed(why)),
            }
        }
        unreachable!("the last session returns")
    }

    /// One upload session begun by `started`: the body streamed in one
    /// PATCH, then the PUT that names `digest` and ends it.
    fn stream(
        &self,
        started: &Response,
        digest: &Digest,
        open: &impl Fn() -> std::io::Result<Box<dyn std::io::Read + Send>>,
    ) -> Result<(), String> {
        let patch = self.location(started)?;
        let resp = self.send("pull,push", |auth| {
            let body = open().map_err(ureq::Error::Io)?;
            authorized(
                upload_agent()
                    .patch(&patch)
                    .header("Content-Type", "application/octet-stream"),
                auth,
            )
            .send(ureq::SendBody::from_owned_reader(body))
        })?;
        if resp.status().as_u16() != 202 {
            return Err(format!("sending the blob: HTTP {}", resp.status().as_u16()));
        }
        let mut put = self.location(&resp)?;
        put.push(if put.contains('?') { '&' } else { '?' });
        put.push_str(&format!("digest={digest}"));
        let resp = self.send("pull,push", |auth| {
            authorized(agent().put(&put), auth).send_empty()
        })?;
        match resp.status().as_u16() {
            201 => Ok(()),
            code => Err(format!("ending the upload: HTTP {code}")),
        }
    }

    /// The upload location a response names, made absolute.
    fn location(&self, resp: &Response) -> Result<String, String> {
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or("the registry gave no upload location")?;
        if location.starts_with('/') && !location.starts_with("//") {
            return Ok(format!("{}://{}{location}", self.scheme(), self.host));
        }
        // An absolute location is followed only on the registry's own
        // scheme and host: the upload carries the registry's login.
        let uri: ureq::http::Uri = location
            .parse()
            .map_err(|_| format!("the registry's upload location `{location}` is not a URL"))?;
        let same = uri.scheme_str() == Some(self.scheme())
            && uri
                .authority()
                .is_some_and(|a| a.as_str().eq_ignore_ascii_case(&self.host));
        if !same {
            return Err(format!(
                "the registry sends the upload to `{location}`, not to {}://{}: refused (its login goes only to the registry)",
                self.scheme(),
                self.host
            ));
        }
        Ok(location.to_string())
    }

    /// Puts `body` (of `media_type`) under `reference` (a tag).
    pub fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<Digest, RegistryError> {
        let url = self.url("manifests", reference);
        let failed = self.failed(format!(
            "PUT {}/{} manifest {reference}",
            self.host, self.repo
        ));
        let resp = self
            .send("pull,push", |auth| {
                authorized(agent().put(&url).header("Content-Type", media_type), auth).send(body)
            })
            .map_err(&failed)?;
        match resp.status().as_u16() {
            200..=299 => Ok(Digest::of(body)),
            code => Err(failed(format!("HTTP {code}"))),
        }
    }

    /// Sends a request with the login that last worked (anonymously at
    /// first); on 401, answers the registry's challenge (Basic with the
    /// login, or a Bearer token for this repository) and sends it again.
    /// 429, 5xx and a connection that failed or broke are retried with
    /// back-off; other answers are the caller's.
    fn send(
        &self,
        actions: &str,
        send: impl Fn(Option<&str>) -> Result<Response, ureq::Error>,
    ) -> Result<Response, String> {
        let logins = || self.logins.lock().unwrap_or_else(|e| e.into_inner());
        let mut auth: Option<String> = logins().get(actions).cloned();
        let mut answered = false;
        let mut delay = Duration::from_millis(500);
        for attempt in 1..=ATTEMPTS {
            let resp = match send(auth.as_deref()) {
                Ok(resp) => resp,
                Err(e) if transient(&e) && attempt < ATTEMPTS => {
                    tracing::warn!("{}: {e}; again in {delay:?}", self.host);
                    std::thread::sleep(delay);
                    delay *= 2;
                    continue;
                }
                Err(e) => return Err(e.to_string()),
            };
            let code = resp.status().as_u16();
            if code == 401 && !answered {
                let challenge = resp
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let login = self.login(&challenge, actions)?;
                logins().insert(actions.to_string(), login.clone());
                auth = Some(login);
                answered = true;
                continue;
            }
            if (code == 429 || code >= 500) && attempt < ATTEMPTS {
                tracing::warn!("{}: HTTP {code}; again in {delay:?}", self.host);
                std::thread::sleep(delay);
                delay *= 2;
                continue;
            }
            return Ok(resp);
        }
        Err(format!("{} kept failing", self.host))
    }

    /// The Authorization header that answers `challenge`.
    fn login(&self, challenge: &str, actions: &str) -> Result<String, String> {
        Ok(match auth_for(challenge)? {
            Auth::Basic => {
                let basic = basic_login(&self.host).ok_or_else(|| {
                    format!("{} asks for a login: `docker login {}`, or set GUIX_MATRIX_REGISTRY_USER and GUIX_MATRIX_REGISTRY_TOKEN", self.host, self.host)
                })?;
                format!("Basic {basic}")
            }
            Auth::Bearer { realm, service } => {
                format!(
                    "Bearer {}",
                    self.token(&realm, service.as_deref(), actions)?
                )
            }
        })
    }

    /// The token `realm` gives for the repository (with the login when set).
    /// `actions` are this repository's (`pull,push`), then, after a space,
    /// another repository's (`other/repo:pull`).
    fn token(&self, realm: &str, service: Option<&str>, actions: &str) -> Result<String, String> {
        let (ours, other) = actions.split_once(' ').unwrap_or((actions, ""));
        let mut url = format!("{realm}?scope=repository:{}:{ours}", self.repo);
        if !other.is_empty() {
            url.push_str(&format!("&scope=repository:{other}"));
        }
        if let Some(service) = service {
            url.push_str(&format!("&service={service}"));
        }
        let mut req = agent().get(&url);
        if let Some(basic) = basic_login(&self.host) {
            req = req.header("Authorization", format!("Basic {basic}"));
        }
        let mut resp = req.call().map_err(|e| e.to_string())?;
        if resp.status().as_u16() != 200 {
            return Err(format!(
                "the registry refused a token (HTTP {}): `docker login {}`, or set GUIX_MATRIX_REGISTRY_USER and GUIX_MATRIX_REGISTRY_TOKEN",
                resp.status().as_u16(),
                self.host
            ));
        }
        let text = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .map_err(|e| e.to_string())?;
        let body: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        body["token"]
            .as_str()
            .or(body["access_token"].as_str())
            .map(str::to_string)
            .ok_or_else(|| "the registry's token answer has no token".into())
    }
}

/// How often a request is sent before its failure is the caller's.
const ATTEMPTS: u32 = 5;
/// Upload sessions a blob gets before its failure is the release's.
const SESSIONS: u32 = 3;

/// Whether a failure is of the connection (worth sending again), not of
/// the request.
fn transient(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::Timeout(_)
    )
}

/// The request with the login, when there is one.
fn authorized<B>(req: ureq::RequestBuilder<B>, auth: Option<&str>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(a) => req.header("Authorization", a),
        None => req,
    }
}

/// An agent for blob uploads: a layer is hundreds of MiB.
fn upload_agent() -> ureq::Agent {
    agent_within(Duration::from_secs(3600))
}

fn agent() -> ureq::Agent {
    agent_within(Duration::from_secs(120))
}

/// An agent whose requests end within `limit`; every answer is the caller's.
fn agent_within(limit: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(limit))
        .http_status_as_error(false)
        .build()
        .into()
}
