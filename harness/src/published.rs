//! Images that were published, as users get them: loaded from a release directory (its checksums verified first) or pulled from a registry for one platform.

use crate::engine::{timeout, Engine, EngineError, LocalImage};
use crate::matrix::Platform;
use crate::source::{Digest, Source};
use crate::trust::{self, Keys, TrustError, Vouched};
use bollard::query_parameters::{
    CreateImageOptionsBuilder, ImportImageOptionsBuilder, TagImageOptionsBuilder,
};
use futures::StreamExt;
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum PublishedError {
    #[error("{dir} has no image for {platform} (no *-{slug}.docker.tar.gz)")]
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
}

/// The annotation on each platform's entry of a registry release's index
/// naming the base that image was built on (vouched for with the index).
pub const BASE_DIGEST: &str = "org.opencontainers.image.base.digest";

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
        // `docker load` names the image as it was saved (guix-matrix:arm-v7), a
        // pull by its digest: that name is given back to what it named
        // before once the image has its own tag, so a fetch never replaces a
        // local image nor leaves a name behind.
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
        if reference != tag {
            match before.get(&reference) {
                Some(old) if *old != img.id => self::tag(engine, old, &reference).await?,
                Some(_) => {}
                None => engine.remove_image(&reference).await,
            }
        }
        Ok(img)
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
            Part::Base => entry
                .annotations()
                .as_ref()
                .and_then(|a| a.get(BASE_DIGEST))
                .cloned()
                .ok_or_else(missing)?,
        };
        Digest::parse(&digest).map_err(|why| PublishedError::Fetch {
            from: self.source.to_string(),
            message: why,
        })
    }
}

/// `docker tag ID TAG`.
pub async fn tag(engine: &Engine, id: &str, tag: &str) -> Result<(), EngineError> {
    let (repo, t) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
    engine
        .docker
        .tag_image(
            id,
            Some(TagImageOptionsBuilder::default().repo(repo).tag(t).build()),
        )
        .await
        .map_err(EngineError::api(format!("tag {tag}")))
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
    let suffix = format!("-{}.docker.tar.gz", platform.slug());
    let is_base = |n: &str| n.starts_with("guix-matrix-base-");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PublishedError::Io { path, source }
    };
    let file = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.ends_with(&suffix) && is_base(&n) == (part == Part::Base)
            })
        })
        .ok_or_else(|| PublishedError::NotInRelease {
            dir: dir.to_path_buf(),
            platform: platform.docker.clone(),
            slug: platform.slug(),
        })?;
    let sums = dir.join(trust::SUMS);
    let name = file
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let want = listed
        .lines()
        .find_map(|l| {
            l.split_once("  ")
                .filter(|(_, n)| *n == name)
                .map(|(s, _)| s.to_string())
        })
        .ok_or_else(|| PublishedError::Unlisted {
            file: file.clone(),
            sums: sums.clone(),
        })?;
    let file2 = file.clone();
    let (opened, have, names) = tokio::task::spawn_blocking(move || inspect(&file2))
        .await
        .expect("hash task")
        .map_err(io(&file))?;
    if have != want {
        return Err(PublishedError::Checksum { file, want, have });
    }
    // What `docker load` would name: one image, one name, this platform's.
    let expected = |n: &str| {
        n.rsplit_once(':').is_some_and(|(repo, slug)| {
            slug == platform.slug()
                && !repo.contains('/')
                && repo.ends_with("-base") == (part == Part::Base)
        })
    };
    match names {
        Err(why) => return Err(PublishedError::Foreign { file, why }),
        Ok(names) if names.len() != 1 || !expected(&names[0]) => {
            return Err(PublishedError::Foreign {
                file,
                why: format!(
                    "it names {} ({}), not one {} image of {}",
                    names.len(),
                    names.join(", "),
                    if part == Part::Base {
                        "base"
                    } else {
                        "guix-matrix"
                    },
                    platform.docker
                ),
            })
        }
        Ok(_) => {}
    }
    // The bytes loaded are the bytes hashed: the file opened once, rewound.
    let body = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(opened));
    let step = format!("{}: load {}", platform.docker, file.display());
    let mut stream = engine.docker.import_image_stream(
        ImportImageOptionsBuilder::default().quiet(false).build(),
        body,
        None,
    );
    let mut loaded = None;
    timeout(&step, Duration::from_secs(900), async {
        while let Some(item) = stream.next().await {
            let info = item.map_err(EngineError::api(step.clone()))?;
            if let Some(s) = info
                .stream
                .as_deref()
                .and_then(|s| s.trim().strip_prefix("Loaded image: ").map(str::to_string))
            {
                loaded = Some(s);
            }
        }
        Ok::<(), EngineError>(())
    })
    .await??;
    loaded.ok_or_else(|| PublishedError::Fetch {
        from: file.display().to_string(),
        message: "the engine loaded no tagged image from it".into(),
    })
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

/// One pass over a gzip'd docker-archive: its sha256, and the names its
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
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&mut hashed));
        archive_names(&mut archive)
    };
    // The rest of the file (after the gzip stream, or after an error) is hashed too.
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
    let step = format!("{}: pull {reference}", platform.docker);
    let opts = CreateImageOptionsBuilder::default()
        .from_image(reference)
        .platform(&platform.docker)
        .build();
    crate::retry::network(
        &step,
        |e: &PublishedError| matches!(e, PublishedError::Engine(_)),
        || async {
            let mut stream = engine.docker.create_image(Some(opts.clone()), None, None);
            timeout(&step, platform.timeout(Duration::from_secs(600)), async {
                while let Some(item) = stream.next().await {
                    item.map_err(|e| PublishedError::Fetch {
                        from: reference.to_string(),
                        message: e.to_string(),
                    })?;
                }
                Ok(())
            })
            .await?
        },
    )
    .await
}
