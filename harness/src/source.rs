//! Where a published image comes from, parsed once for `--image`, `--from` and `verify`: a release directory or a registry reference, each optionally pinned by a digest.

use std::fmt;
use std::path::{Path, PathBuf};

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
        let name = self
            .host
            .rsplit_once(':')
            .map_or(self.host.as_str(), |(h, _)| h);
        name == "localhost" || name.starts_with("127.") || name == "[::1]"
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

/// Where a published image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A release directory (`harness release --dist`); `pin` is the sha256
    /// of its SHA256SUMS, which names every file's checksum.
    Dir { path: PathBuf, pin: Option<Digest> },
    /// A registry release; `pin` is its multi-platform index's digest.
    Registry {
        reference: Reference,
        pin: Option<Digest>,
    },
}

impl Source {
    /// `DIR`, `DIR@sha256:…`, `REF` or `REF@sha256:…`. A directory is what
    /// exists as one, or what is spelled as a path (`/`, `./`, `../`, `~`).
    pub fn parse(s: &str) -> Result<Source, String> {
        let (what, pin) = match s.rsplit_once('@') {
            Some((w, d)) => (w, Some(Digest::parse(d)?)),
            None => (s, None),
        };
        if what.is_empty() {
            return Err("an empty source: give a release directory or REGISTRY/REPO:TAG".into());
        }
        let path = Path::new(what);
        let spelled_as_path = what.starts_with(['/', '.', '~']);
        if path.is_dir() || spelled_as_path {
            return Ok(Source::Dir {
                path: path.to_path_buf(),
                pin,
            });
        }
        Ok(Source::Registry {
            reference: Reference::parse(what)?,
            pin,
        })
    }

    /// The same source pinned to `digest`.
    pub fn pinned(&self, digest: &Digest) -> Source {
        match self {
            Source::Dir { path, .. } => Source::Dir {
                path: path.clone(),
                pin: Some(digest.clone()),
            },
            Source::Registry { reference, .. } => Source::Registry {
                reference: reference.clone(),
                pin: Some(digest.clone()),
            },
        }
    }

    pub fn pin(&self) -> Option<&Digest> {
        match self {
            Source::Dir { pin, .. } | Source::Registry { pin, .. } => pin.as_ref(),
        }
    }

    /// The release's name (its dated tag): from a directory's file names, or
    /// the reference's tag.
    pub fn release_name(&self) -> String {
        match self {
            Source::Dir { path, .. } => {
                let sums = std::fs::read_dir(path)
                    .into_iter()
                    .flatten()
                    .filter_map(Result::ok)
                    .filter_map(|e| e.file_name().into_string().ok())
                    .find_map(|n| crate::names::tag_of_index_file(&n).map(str::to_string));
                sums.unwrap_or_else(|| path.display().to_string())
            }
            Source::Registry { reference, pin } => match (&reference.tag, pin) {
                (Some(t), _) => t.clone(),
                (None, Some(d)) => reference.at(d),
                (None, None) => reference.to_string(),
            },
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Dir { path, .. } => write!(f, "{}", path.display())?,
            Source::Registry { reference, .. } => write!(f, "{reference}")?,
        }
        if let Some(d) = self.pin() {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// clap's parser for `--image`/`--from`.
pub fn parse_arg(s: &str) -> Result<Source, String> {
    Source::parse(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn sources_parse_once() {
        let reg = |s: &str| match Source::parse(s).unwrap() {
            Source::Registry { reference, pin } => (
                reference.host,
                reference.repo,
                reference.tag,
                pin.map(|d| d.to_string()),
            ),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            reg("127.0.0.1:5000/guix-matrix:v20261202"),
            (
                "127.0.0.1:5000".into(),
                "guix-matrix".into(),
                Some("v20261202".into()),
                None
            )
        );
        assert_eq!(
            reg(&format!("ghcr.io/metacall/guix:v1@{D}")),
            (
                "ghcr.io".into(),
                "metacall/guix".into(),
                Some("v1".into()),
                Some(D.into())
            )
        );
        assert_eq!(reg("metacall/guix").0, "registry-1.docker.io");
        assert_eq!(reg("debian:sid").1, "library/debian");
        assert_eq!(reg("docker.io/metacall/guix:x").1, "metacall/guix");
        assert!(matches!(
            Source::parse("./dist").unwrap(),
            Source::Dir { pin: None, .. }
        ));
        assert!(matches!(
            Source::parse(&format!("/tmp@{D}")).unwrap(),
            Source::Dir { pin: Some(_), .. }
        ));
        assert_eq!(
            Source::parse(&format!("./dist@{D}")).unwrap().to_string(),
            format!("./dist@{D}")
        );
    }

    #[test]
    fn bad_sources_say_why() {
        for (s, says) in [
            ("ghcr.io/x@sha256:abc", "not a sha256 digest"),
            ("ghcr.io/X/y:v1", "lowercase"),
            ("ghcr.io/x:v 1", "a tag is"),
            ("", "empty"),
        ] {
            let e = Source::parse(s).unwrap_err();
            assert!(e.contains(says), "{s}: {e}");
        }
    }
}
