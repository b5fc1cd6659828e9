//! References (`host/repo:tag@sha256:…`) and sha256 digests, parsed once.

use std::fmt;

/// A sha256 digest: 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Digest {
    /// `sha256:<64 hex>`, or the hex alone.
    pub fn parse(s: &str) -> Result<Digest, String> {
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        if hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Digest(hex.to_string()))
        } else {
            Err(format!(
                "`{s}` is not a sha256 digest (sha256: and 64 lowercase hex digits)"
            ))
        }
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest(hex::encode(sha2::Sha256::digest(bytes)))
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

/// A registry reference: `[HOST/]REPO[:TAG]`, Docker Hub when HOST is left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Where the registry's API answers (Docker Hub's is registry-1.docker.io).
    pub host: String,
    /// The repository, `library/` added for Docker Hub's official images.
    pub repo: String,
    pub tag: Option<String>,
}

/// Docker Hub's names and the host its API answers on.
const DOCKER_HUB: [&str; 2] = ["docker.io", "index.docker.io"];
const DOCKER_HUB_API: &str = "registry-1.docker.io";

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, String> {
        let bad = |why: &str| format!("`{s}` is not an image reference: {why}");
        let (name, tag) = match s.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, Some(t.to_string())),
            _ => (s, None),
        };
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                && !t.starts_with(['.', '-']);
            if !ok {
                return Err(bad(
                    "a tag is letters, digits, `.`, `_` and `-` (at most 128)",
                ));
            }
        }
        let (host, repo) = match name.split_once('/') {
            Some((h, r)) if h.contains(['.', ':']) || h == "localhost" => {
                (h.to_string(), r.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        let ok_repo = !repo.is_empty()
            && repo.split('/').all(|part| {
                !part.is_empty()
                    && part.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            });
        if !ok_repo {
            return Err(bad(
                "a repository is lowercase letters, digits, `.`, `_`, `-` and `/`",
            ));
        }
        let (host, repo) = if DOCKER_HUB.contains(&host.as_str()) {
            let repo = if repo.contains('/') {
                repo
            } else {
                format!("library/{repo}")
            };
            (DOCKER_HUB_API.to_string(), repo)
        } else {
            (host, repo)
        };
        Ok(Reference { host, repo, tag })
    }

    /// `HOST/REPO`, as signatures name it.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.host, self.repo)
    }

    /// `HOST/REPO@sha256:…`: what the engine pulls once the digest is vouched for.
    pub fn at(&self, digest: &Digest) -> String {
        format!("{}@{digest}", self.repository())
    }

    /// Whether the registry is spoken to over plain http (the loopback only).
    pub fn loopback(&self) -> bool {
        is_loopback(&self.host)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repository())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        Ok(())
    }
}

/// Whether `authority` (`host`, `host:port`, `[v6]:port`) names this
/// machine: `localhost`, or an address that *is* a loopback address
/// (127.0.0.0/8, ::1) — parsed, never compared as text.
pub fn is_loopback(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or("", |(h, _)| h),
        None => authority.rsplit_once(':').map_or(authority, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                authority
            }
        }),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
