//! Opening a release (vouched for once) and fetching its parts as users get them: loaded from a release directory (its checksums verified first) or pulled from a registry for one platform.

use super::archive::{inspect, probes_of, without_names, Probes};
use crate::engine::{tokio_stream_of, ChannelWriter};
use crate::engine::{Engine, EngineError, LocalImage};
use crate::matrix::Platform;
use crate::names::{BASE_DIGEST, HELPER_DIGEST};
use crate::registry::Digest;
use crate::release::source::Source;
use crate::release::trust::{self, Keys, TrustError, Vouched};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{dir} has no image for {platform} (no guix-matrix-*-{slug}.tar in its SHA256SUMS)")]
    NotInRelease {
        dir: PathBuf,
        platform: String,
        slug: String,
    },
    #[error("{file}: its sha256 is {have}, SHA256SUMS says {want}: the file is damaged or not this release's; it was not loaded")]
    Checksum {
        file: PathBuf,
        want: String,
        have: String,
    },
    #[error("{file}: not listed in {sums}; it was not loaded")]
    Unlisted { file: PathBuf, sums: PathBuf },
    #[error("{file}: {why}; a release tarball holds one image under one name: it was not loaded")]
    Foreign { file: PathBuf, why: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{from}: {message}")]
    Fetch { from: String, message: String },
    #[error("{from} gave a {found} image for {platform}")]
    WrongPlatform {
        from: String,
        platform: String,
        found: String,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl OpenError {
    pub fn fix(&self) -> Option<String> {
        match self {
            OpenError::NotInRelease { .. } | OpenError::WrongPlatform { .. } => {
                Some("check a release that has this platform, or leave it out (--platform)".into())
            }
            OpenError::Checksum { .. } | OpenError::Unlisted { .. } | OpenError::Foreign { .. } => {
                Some(
                    "download the release again; never use a tarball whose checksum does not match"
                        .into(),
                )
            }
            OpenError::Fetch { .. } => Some(
                "check the reference and that the registry answers (`docker pull` it by hand)"
                    .into(),
            ),
            OpenError::Engine(e) => e.fix(),
            OpenError::Io { .. } => None,
        }
    }
}

/// Which image of a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The Guix image users run.
    Image,
    /// The base it was built on (seeds a build from the release).
    Base,
    /// The emulator helper, shipped for the platform the release was made on.
    Helper,
}

impl Part {
    /// What `docker load` of its tarball may name for `platform`.
    fn names_ok(self, name: &str, platform: &Platform) -> bool {
        let Some((repo, tag)) = name.rsplit_once(':') else {
            return false;
        };
        !repo.contains('/')
            && match self {
                Part::Image => {
                    tag == platform.slug() && !repo.ends_with("-base") && !repo.ends_with("-binfmt")
                }
                Part::Base => tag == platform.slug() && repo.ends_with("-base"),
                Part::Helper => tag == platform.slug() && repo.ends_with("-binfmt"),
            }
    }

    fn what(self) -> &'static str {
        match self {
            Part::Image => "guix-matrix",
            Part::Base => "base",
            Part::Helper => "emulator helper",
        }
    }
}

/// A release whose root document (a directory's SHA256SUMS, a registry's
/// index) was vouched for: everything fetched from it is checked against
/// those bytes, never against what sits beside the files.
#[derive(Debug, Clone)]
pub struct Release {
    pub source: Source,
    pub vouched: Vouched,
}

/// Checks what vouches for `source` (its pin, or a signature by one of
/// `keys`); nothing is fetched into the engine before.
pub async fn open(source: &Source, keys: &Keys) -> Result<Release, TrustError> {
    let (source2, keys) = (source.clone(), keys.clone());
    let vouched = tokio::task::spawn_blocking(move || trust::verify(&source2, &keys))
        .await
        .expect("verify task")?;
    Ok(Release {
        source: source.clone(),
        vouched,
    })
}

impl Release {
    /// Its name (the dated tag) and what vouches for it.
    pub fn name(&self) -> String {
        // What the vouched-for bytes name (`latest` resolves to its version).
        self.vouched
            .version()
            .unwrap_or_else(|| self.source.release_name())
    }

    /// Makes `part` of the release for `platform` local under `tag`: from a
    /// directory (checksum from the vouched SHA256SUMS, then loaded) or a
    /// registry (pulled by the digest the vouched index names).
    pub async fn fetch(
        &self,
        engine: &Engine,
        platform: &Platform,
        tag: &str,
        part: Part,
    ) -> Result<LocalImage, OpenError> {
        let source = self.source.to_string();
        // A pull by digest names the image `REPO@sha256:…`: that name is
        // given back to what it named before once the image has its own
        // tag, so a fetch never replaces a local image nor leaves a name.
        let before = engine.tags().await?;
        let reference = match &self.source {
            Source::Dir { path, .. } => {
                let sums = String::from_utf8_lossy(&self.vouched.content).into_owned();
                load(engine, path, &sums, platform, part).await?
            }
            Source::Registry { reference, .. } => {
                let digest = self.digest_of(platform, part)?;
                let at = reference.at(&digest);
                pull(engine, &at, platform).await?;
                at
            }
        };
        let img = engine
            .local_image(&reference)
            .await?
            .ok_or_else(|| OpenError::Fetch {
                from: source.clone(),
                message: format!("{reference} is not in the engine after fetching it"),
            })?;
        let oci = platform.oci();
        if img.architecture != oci.architecture {
            return Err(OpenError::WrongPlatform {
                from: source,
                platform: platform.docker.clone(),
                found: img.architecture,
            });
        }
        engine.tag(&img.id, tag).await?;
        // A pull by digest leaves `REPO@sha256:…` behind: given back to what
        // it named before, or removed. A load names nothing.
        if matches!(self.source, Source::Registry { .. }) && reference != tag {
            match before.get(&reference) {
                Some(old) if *old != img.id => engine.tag(old, &reference).await?,
                Some(_) => {}
                None => engine.remove_image(&reference).await,
            }
        }
        Ok(img)
    }

    /// The readdir() probes a release directory carries, with the content
    /// hash of their recipe: read once from a bounded regular file, checked
    /// against the vouched SHA256SUMS. None: it carries none (or is a
    /// registry release).
    pub fn probes(&self) -> Result<Option<(String, Probes)>, OpenError> {
        let Source::Dir { path, .. } = &self.source else {
            return Ok(None);
        };
        let sums = String::from_utf8_lossy(&self.vouched.content).into_owned();
        let Some((want, name)) = sums.lines().find_map(|l| {
            l.split_once("  ")
                .filter(|(_, n)| crate::names::is_probes_archive(n))
        }) else {
            return Ok(None);
        };
        let file = path.join(name);
        let io = |source| OpenError::Io {
            path: file.clone(),
            source,
        };
        let mut bytes = vec![];
        std::io::Read::read_to_end(
            &mut trust::regular(&file, 64 << 20).map_err(io)?,
            &mut bytes,
        )
        .map_err(io)?;
        let have = hex::encode(Sha256::digest(&bytes));
        if have != want {
            return Err(OpenError::Checksum {
                file,
                want: want.to_string(),
                have,
            });
        }
        let mut probes = probes_of(bytes.as_slice()).map_err(|e| OpenError::Foreign {
            file: file.clone(),
            why: e.to_string(),
        })?;
        let inputs = probes
            .remove("inputs")
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_default();
        Ok(Some((inputs, probes)))
    }

    /// The manifest digest of `part` for `platform` in the vouched index.
    fn digest_of(&self, platform: &Platform, part: Part) -> Result<Digest, OpenError> {
        let missing = || OpenError::NotInRelease {
            dir: self.source.to_string().into(),
            platform: platform.docker.clone(),
            slug: platform.slug(),
        };
        let index: oci_spec::image::ImageIndex = serde_json::from_slice(&self.vouched.content)
            .map_err(|e| OpenError::Fetch {
                from: self.source.to_string(),
                message: format!("its index does not parse: {e}"),
            })?;
        let want = platform.oci();
        let entry = index
            .manifests()
            .iter()
            .find(|m| {
                m.platform().as_ref().is_some_and(|p| {
                    p.architecture().to_string() == want.architecture
                        && p.variant().as_deref() == want.variant.as_deref()
                })
            })
            .ok_or_else(missing)?;
        let digest = match part {
            Part::Image => entry.digest().to_string(),
            Part::Base | Part::Helper => entry
                .annotations()
                .as_ref()
                .and_then(|a| {
                    a.get(if part == Part::Base {
                        BASE_DIGEST
                    } else {
                        HELPER_DIGEST
                    })
                })
                .cloned()
                .ok_or_else(missing)?,
        };
        Digest::parse(&digest).map_err(|why| OpenError::Fetch {
            from: self.source.to_string(),
            message: why,
        })
    }
}

/// Verifies the platform's tarball against SHA256SUMS and loads it; returns
/// the reference it loaded as.
async fn load(
    engine: &Engine,
    dir: &Path,
    listed: &str,
    platform: &Platform,
    part: Part,
) -> Result<String, OpenError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| OpenError::Io { path, source }
    };
    let sums = dir.join(trust::SUMS);
    // The file is the one the vouched SHA256SUMS names for this platform.
    let (want, name) = listed
        .lines()
        .filter_map(|l| l.split_once("  "))
        .find_map(|(_, n)| crate::names::tag_of_index_file(n))
        .and_then(|tag| {
            let name = match part {
                Part::Image => crate::names::tarball(tag, platform),
                Part::Base => crate::names::base_tarball(tag, platform),
                Part::Helper => crate::names::helper_tarball(tag, platform),
            };
            listed.lines().find_map(|l| {
                l.split_once("  ")
                    .filter(|(_, n)| *n == name)
                    .map(|(s, n)| (s.to_string(), n.to_string()))
            })
        })
        .ok_or_else(|| OpenError::NotInRelease {
            dir: dir.to_path_buf(),
            platform: platform.docker.clone(),
            slug: platform.slug(),
        })?;
    let file = dir.join(&name);
    if !file.exists() {
        return Err(OpenError::Unlisted { file, sums });
    }
    let file2 = file.clone();
    let (opened, have, layout) = tokio::task::spawn_blocking(move || inspect(&file2))
        .await
        .expect("hash task")
        .map_err(io(&file))?;
    if have != want {
        return Err(OpenError::Checksum { file, want, have });
    }
    // What `docker load` would name: one image, one name, this platform's.
    let layout = match layout {
        Err(why) => return Err(OpenError::Foreign { file, why }),
        Ok(l) if l.names.len() != 1 || !part.names_ok(&l.names[0], platform) => {
            return Err(OpenError::Foreign {
                file,
                why: format!(
                    "it names {} ({}), not one {} image of {}",
                    l.names.len(),
                    l.names.join(", "),
                    part.what(),
                    platform.docker
                ),
            })
        }
        Ok(l) => l,
    };
    // The bytes loaded are the bytes hashed: the file opened once, rewound,
    // and loaded without its names (RepoTags dropped, no `repositories`),
    // so that the load itself names nothing — whatever happens next, the
    // only name it gets is the one the caller asks for.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(16);
    let writer = tokio::task::spawn_blocking(move || {
        let failed = tx.clone();
        if let Err(e) = without_names(opened, &layout, ChannelWriter(tx)) {
            let _ = failed.blocking_send(Err(e));
        }
    });
    let body = tokio_stream_of(rx);
    let step = format!("{}: load {}", platform.docker, file.display());
    let result = engine.load(&step, body, Duration::from_secs(900)).await;
    let _ = writer.await;
    let loaded = result?;
    loaded.ok_or_else(|| OpenError::Fetch {
        from: file.display().to_string(),
        message: "the engine loaded no image from it".into(),
    })
}

async fn pull(engine: &Engine, reference: &str, platform: &Platform) -> Result<(), OpenError> {
    let limit = platform.timeout(Duration::from_secs(600));
    engine
        .pull(reference, &platform.docker, limit)
        .await
        .map_err(|e| OpenError::Fetch {
            from: reference.to_string(),
            message: e.to_string(),
        })
}
