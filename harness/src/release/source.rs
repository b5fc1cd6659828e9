//! Where a published image comes from, parsed once for `--image`, `--from` and `verify`: a release directory or a registry reference, each optionally pinned by a digest.

use crate::registry::{Digest, Reference};
use std::fmt;
use std::path::{Path, PathBuf};

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
