//! Images that were published, as users get them: loaded from a release directory (its checksums verified first) or pulled from a registry for one platform.

use crate::engine::{Engine, EngineError, LocalImage};
use crate::matrix::Platform;
use crate::registry::Digest;
use crate::release::source::Source;
use crate::release::trust::{self, Keys, TrustError, Vouched};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum PublishedError {
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

impl PublishedError {
    pub fn fix(&self) -> Option<String> {
        match self {
            PublishedError::NotInRelease { .. } | PublishedError::WrongPlatform { .. } => {
                Some("check a release that has this platform, or leave it out (--platform)".into())
            }
            PublishedError::Checksum { .. }
            | PublishedError::Unlisted { .. }
            | PublishedError::Foreign { .. } => Some(
                "download the release again; never use a tarball whose checksum does not match"
                    .into(),
            ),
            PublishedError::Fetch { .. } => Some(
                "check the reference and that the registry answers (`docker pull` it by hand)"
                    .into(),
            ),
            PublishedError::Engine(e) => e.fix(),
            PublishedError::Io { .. } => None,
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

pub use crate::names::{BASE_DIGEST, HELPER_DIGEST};

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
        self.source.release_name()
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
    ) -> Result<LocalImage, PublishedError> {
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
            .ok_or_else(|| PublishedError::Fetch {
                from: source.clone(),
                message: format!("{reference} is not in the engine after fetching it"),
            })?;
        let oci = platform.oci();
        if img.architecture != oci.architecture {
            return Err(PublishedError::WrongPlatform {
                from: source,
                platform: platform.docker.clone(),
                found: img.architecture,
            });
        }
        self::tag(engine, &img.id, tag).await?;
        // A pull by digest leaves `REPO@sha256:…` behind: given back to what
        // it named before, or removed. A load names nothing.
        if matches!(self.source, Source::Registry { .. }) && reference != tag {
            match before.get(&reference) {
                Some(old) if *old != img.id => self::tag(engine, old, &reference).await?,
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
    pub fn probes(&self) -> Result<Option<(String, Probes)>, PublishedError> {
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
        let io = |source| PublishedError::Io {
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
            return Err(PublishedError::Checksum {
                file,
                want: want.to_string(),
                have,
            });
        }
        let mut probes = probes_of(bytes.as_slice()).map_err(io)?;
        let inputs = probes
            .remove("inputs")
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_default();
        Ok(Some((inputs, probes)))
    }

    /// The manifest digest of `part` for `platform` in the vouched index.
    fn digest_of(&self, platform: &Platform, part: Part) -> Result<Digest, PublishedError> {
        let missing = || PublishedError::NotInRelease {
            dir: self.source.to_string().into(),
            platform: platform.docker.clone(),
            slug: platform.slug(),
        };
        let index: oci_spec::image::ImageIndex = serde_json::from_slice(&self.vouched.content)
            .map_err(|e| PublishedError::Fetch {
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
        Digest::parse(&digest).map_err(|why| PublishedError::Fetch {
            from: self.source.to_string(),
            message: why,
        })
    }
}

/// The readdir() probes, by file name.
pub type Probes = HashMap<String, Vec<u8>>;

/// The regular files of a tar archive, by file name (the probes).
pub fn probes_of(tar: impl std::io::Read) -> std::io::Result<Probes> {
    let mut probes = HashMap::new();
    for entry in tar::Archive::new(tar).entries()? {
        let mut entry = entry?;
        let name = entry
            .path()?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if entry.header().entry_type().is_file() {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes)?;
            probes.insert(name, bytes);
        }
    }
    Ok(probes)
}

/// `docker tag ID TAG`.
pub async fn tag(engine: &Engine, id: &str, tag: &str) -> Result<(), EngineError> {
    engine.tag(id, tag).await
}

/// Verifies the platform's tarball against SHA256SUMS and loads it; returns
/// the reference it loaded as.
async fn load(
    engine: &Engine,
    dir: &Path,
    listed: &str,
    platform: &Platform,
    part: Part,
) -> Result<String, PublishedError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PublishedError::Io { path, source }
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
        .ok_or_else(|| PublishedError::NotInRelease {
            dir: dir.to_path_buf(),
            platform: platform.docker.clone(),
            slug: platform.slug(),
        })?;
    let file = dir.join(&name);
    if !file.exists() {
        return Err(PublishedError::Unlisted { file, sums });
    }
    let file2 = file.clone();
    let (opened, have, names) = tokio::task::spawn_blocking(move || inspect(&file2))
        .await
        .expect("hash task")
        .map_err(io(&file))?;
    if have != want {
        return Err(PublishedError::Checksum { file, want, have });
    }
    // What `docker load` would name: one image, one name, this platform's.
    match names {
        Err(why) => return Err(PublishedError::Foreign { file, why }),
        Ok(names) if names.len() != 1 || !part.names_ok(&names[0], platform) => {
            return Err(PublishedError::Foreign {
                file,
                why: format!(
                    "it names {} ({}), not one {} image of {}",
                    names.len(),
                    names.join(", "),
                    part.what(),
                    platform.docker
                ),
            })
        }
        Ok(_) => {}
    }
    // The bytes loaded are the bytes hashed: the file opened once, rewound,
    // and loaded without its names (RepoTags dropped, no `repositories`),
    // so that the load itself names nothing — whatever happens next, the
    // only name it gets is the one the caller asks for.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(16);
    let writer = tokio::task::spawn_blocking(move || {
        let failed = tx.clone();
        if let Err(e) = without_names(opened, ChannelWriter(tx)) {
            let _ = failed.blocking_send(Err(e));
        }
    });
    let body = tokio_stream_of(rx);
    let step = format!("{}: load {}", platform.docker, file.display());
    let result = engine.load(&step, body, Duration::from_secs(900)).await;
    let _ = writer.await;
    let loaded = result?;
    loaded.ok_or_else(|| PublishedError::Fetch {
        from: file.display().to_string(),
        message: "the engine loaded no image from it".into(),
    })
}

/// The receiving end of a channel as a body stream.
fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A writer into a channel (the blocking side of a body stream).
struct ChannelWriter(tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(bytes::Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::other("the load was abandoned"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The release tarball `file` as a docker-archive whose images carry no
/// name: RepoTags emptied in manifest.json; `repositories` and the OCI
/// layout's `index.json` (which names it too) left out, so that every
/// engine loads it through manifest.json.
fn without_names(file: std::fs::File, out: impl std::io::Write) -> std::io::Result<()> {
    use std::io::Read;
    let mut archive = tar::Archive::new(std::io::BufReader::with_capacity(1 << 20, file));
    let mut builder = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, out));
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let name = path.to_string_lossy().trim_start_matches("./").to_string();
        let mut header = entry.header().clone();
        match name.as_str() {
            "repositories" | "index.json" | "oci-layout" => continue,
            "manifest.json" => {
                let mut bytes = vec![];
                (&mut entry).take(1 << 20).read_to_end(&mut bytes)?;
                let mut images: Vec<serde_json::Value> =
                    serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
                for image in &mut images {
                    image["RepoTags"] = serde_json::Value::Null;
                }
                let bytes = serde_json::to_vec(&images).map_err(std::io::Error::other)?;
                header.set_size(bytes.len() as u64);
                builder.append_data(&mut header, &path, bytes.as_slice())?;
            }
            _ => match entry.link_name()? {
                Some(target) => {
                    let target = target.into_owned();
                    builder.append_link(&mut header, &path, target)?;
                }
                None => builder.append_data(&mut header, &path, &mut entry)?,
            },
        }
    }
    builder
        .into_inner()?
        .into_inner()
        .map_err(|e| e.into_error())?;
    Ok(())
}

/// A reader that hashes what passes through it.
struct Hashed<R> {
    inner: R,
    sha: Sha256,
}

impl<R: std::io::Read> std::io::Read for Hashed<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }
}

/// One pass over a release tarball: its sha256, and the names its
/// manifest.json (and a legacy `repositories` file) would give the images
/// it holds — or why it is not a docker-archive of images with names.
type Inspected = (std::fs::File, String, Result<Vec<String>, String>);

fn inspect(file: &Path) -> std::io::Result<Inspected> {
    use std::io::Seek;
    let opened = trust::regular(file, MAX_TARBALL)?;
    let mut hashed = Hashed {
        inner: std::io::BufReader::new(opened.try_clone()?),
        sha: Sha256::new(),
    };
    let names = {
        let mut archive = tar::Archive::new(&mut hashed);
        archive_names(&mut archive)
    };
    // The rest of the file (after the archive's end, or an error) is hashed too.
    std::io::copy(&mut hashed, &mut std::io::sink())?;
    let mut opened = opened;
    opened.rewind()?;
    Ok((opened, hex::encode(hashed.sha.finalize()), names))
}

/// The largest release tarball read (an image is about 1 GiB uncompressed).
const MAX_TARBALL: u64 = 8 << 30;

fn archive_names<R: std::io::Read>(archive: &mut tar::Archive<R>) -> Result<Vec<String>, String> {
    use std::io::Read;
    let mut names: Option<Vec<String>> = None;
    let mut legacy: Vec<String> = vec![];
    let entries = archive
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("not a tar archive: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| e.to_string())?
            .to_string_lossy()
            .into_owned();
        let small = |entry: &mut tar::Entry<R>| -> Result<Vec<u8>, String> {
            if entry.size() > 1 << 20 {
                return Err(format!("its {path} is larger than 1 MiB"));
            }
            let mut bytes = vec![];
            entry.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
            Ok(bytes)
        };
        match path.trim_start_matches("./") {
            "manifest.json" => {
                let manifest: Vec<serde_json::Value> = serde_json::from_slice(&small(&mut entry)?)
                    .map_err(|e| format!("its manifest.json is not a docker-archive's: {e}"))?;
                let mut all = vec![];
                for image in &manifest {
                    let tags = image["RepoTags"].as_array().cloned().unwrap_or_default();
                    if tags.is_empty() {
                        all.push("(an image without a name)".into());
                    }
                    all.extend(tags.iter().map(|t| t.as_str().unwrap_or("?").to_string()));
                }
                names = Some(all);
            }
            "repositories" => {
                let repos: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(&small(&mut entry)?)
                        .map_err(|e| format!("its repositories file does not parse: {e}"))?;
                for (repo, tags) in &repos {
                    for tag in tags
                        .as_object()
                        .map(|t| t.keys().cloned().collect::<Vec<_>>())
                        .unwrap_or_default()
                    {
                        legacy.push(format!("{repo}:{tag}"));
                    }
                }
            }
            _ => {}
        }
    }
    let names = names.ok_or("it has no manifest.json")?;
    if let Some(extra) = legacy.iter().find(|n| !names.contains(n)) {
        return Err(format!("its repositories file also names {extra}"));
    }
    Ok(names)
}

async fn pull(engine: &Engine, reference: &str, platform: &Platform) -> Result<(), PublishedError> {
    let limit = platform.timeout(Duration::from_secs(600));
    engine
        .pull(reference, &platform.docker, limit)
        .await
        .map_err(|e| PublishedError::Fetch {
            from: reference.to_string(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A release tarball of `entries`.
    fn archive(entries: &[(&str, &[u8])]) -> std::fs::File {
        let mut tar = tar::Builder::new(tempfile::tempfile().unwrap());
        for (path, bytes) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            tar.append_data(&mut h, path, *bytes).unwrap();
        }
        let mut file = tar.into_inner().unwrap();
        std::io::Seek::rewind(&mut file).unwrap();
        file
    }

    #[test]
    fn a_load_names_nothing() {
        let manifest = br#"[{"Config":"c.json","RepoTags":["guix-matrix:amd64","debian:sid"],"Layers":["l/layer.tar"]}]"#;
        let file = archive(&[
            ("manifest.json", manifest),
            ("repositories", br#"{"debian":{"sid":"abc"}}"#),
            ("index.json", br#"{"manifests":[]}"#),
            ("c.json", b"{}"),
            ("l/layer.tar", b"layer bytes"),
        ]);
        let mut out = vec![];
        without_names(file, &mut out).unwrap();
        let mut seen = std::collections::BTreeMap::new();
        let mut tar = tar::Archive::new(out.as_slice());
        for e in tar.entries().unwrap() {
            let mut e = e.unwrap();
            let mut bytes = vec![];
            std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
            seen.insert(e.path().unwrap().display().to_string(), bytes);
        }
        assert_eq!(
            seen.keys().collect::<Vec<_>>(),
            ["c.json", "l/layer.tar", "manifest.json"]
        );
        assert_eq!(seen["l/layer.tar"], b"layer bytes");
        let m: serde_json::Value = serde_json::from_slice(&seen["manifest.json"]).unwrap();
        assert_eq!(m[0]["RepoTags"], serde_json::Value::Null);
        assert_eq!(m[0]["Layers"][0], "l/layer.tar");
    }
}
