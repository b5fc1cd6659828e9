//! Shipping what the matrix proved: per-platform docker-archives with SHA256SUMS, one OCI image layout holding every platform, and a multi-platform index in a registry under a dated tag.

use crate::base;
use crate::engine::{timeout, Engine, EngineError, LABEL_INPUTS};
use crate::image::BuildError;
use crate::matrix::{Matrix, Platform};
use bollard::query_parameters::{PushImageOptionsBuilder, TagImageOptionsBuilder};
use futures::StreamExt;
use oci_spec::image::{
    Descriptor, DescriptorBuilder, ImageIndexBuilder, ImageManifestBuilder, MediaType,
    PlatformBuilder,
};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the engine pushes: Docker's v2 manifest.
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// One platform's image that passed every check of a run.
#[derive(Debug, Clone)]
pub struct Proved {
    pub platform: Platform,
    /// The local tag (`guix-matrix:arm-v7`).
    pub image: String,
    pub id: String,
    /// The base the image was built on (`guix-matrix-base:arm-v7`), when the
    /// engine still has it: released beside the image, so that a build from
    /// this release reuses the image's layers.
    pub base: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("cannot read the report {path}: {message}")]
    Report { path: PathBuf, message: String },
    #[error("no platform passed every check in {path}: nothing to release")]
    NothingPassed { path: PathBuf },
    #[error("--require-all: {missing} did not pass every check in {path}; nothing was released")]
    NotAll { path: PathBuf, missing: String },
    #[error("{platform}: the report is about image {reported}, but {image} is now {local}: the report is from another build")]
    Foreign {
        platform: String,
        image: String,
        reported: String,
        local: String,
    },
    #[error("{platform}: {image} was built from other inputs ({label}) than the tree has now ({tree}): it is not the image this tree proves")]
    Stale {
        platform: String,
        image: String,
        label: String,
        tree: String,
    },
    #[error("{platform}: {image} is not in the engine")]
    Missing { platform: String, image: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a docker-archive the engine would write: {message}")]
    Archive { path: PathBuf, message: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("registry {registry}: pushing {reference} failed: {message}")]
    Registry {
        registry: String,
        reference: String,
        message: String,
    },
    #[error("{reference} already exists with other content ({have}, this release is {want}); nothing was overwritten")]
    TagTaken {
        reference: String,
        have: String,
        want: String,
    },
}

impl ReleaseError {
    /// What to do about it.
    pub fn fix(&self) -> Option<String> {
        Some(match self {
            ReleaseError::Report { .. } | ReleaseError::NothingPassed { .. } => {
                "run the matrix first (`harness run`), then release from its report (--report DIR/report.json)".into()
            }
            ReleaseError::NotAll { .. } => {
                "make every platform pass, or release without --require-all".into()
            }
            ReleaseError::Foreign { .. } | ReleaseError::Stale { .. } | ReleaseError::Missing { .. } => {
                "run the matrix again on this tree (`harness run`), then release from that report".into()
            }
            ReleaseError::Io { .. } => "check the path and that the disk has room (a release needs about 1 GiB per platform)".into(),
            ReleaseError::Registry { registry, .. } => format!(
                "check that {registry} answers and accepts pushes (GUIX_MATRIX_REGISTRY_USER / GUIX_MATRIX_REGISTRY_TOKEN for one that needs a login); nothing was tagged, rerun when it does"
            ),
            ReleaseError::TagTaken { .. } => {
                "release under another tag (--tag), or pass --force to overwrite it on purpose".into()
            }
            ReleaseError::Engine(e) => return e.fix(),
            ReleaseError::Build(e) => return e.fix(),
            ReleaseError::Archive { .. } => return None,
        })
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReleaseError + '_ {
    move |source| ReleaseError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Today's release tag, `vYYYYMMDD` (UTC).
pub fn dated_tag(now: std::time::SystemTime) -> String {
    let days = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("v{y:04}{m:02}{d:02}")
}

/// The platforms of `report` (a `harness run` report.json) whose legs all
/// passed, each checked against the engine and the tree: the image is the
/// one the report is about, and it is what this tree builds.
pub async fn proved(
    engine: &Engine,
    matrix: &Matrix,
    root: &Path,
    report: &Path,
    require_all: bool,
) -> Result<Vec<Proved>, ReleaseError> {
    let text = std::fs::read_to_string(report).map_err(|e| ReleaseError::Report {
        path: report.to_path_buf(),
        message: e.to_string(),
    })?;
    let legs: Vec<serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| ReleaseError::Report {
            path: report.to_path_buf(),
            message: format!("not a harness report: {e}"),
        })?;
    let passed: HashMap<String, String> = legs
        .iter()
        .filter(|l| l["error"].is_null() && leg_passed(l))
        .filter_map(|l| {
            Some((
                l["platform"].as_str()?.to_string(),
                l["image_id"].as_str()?.to_string(),
            ))
        })
        .collect();
    let missing: Vec<&str> = matrix
        .platforms
        .iter()
        .filter(|p| !passed.contains_key(&p.docker))
        .map(|p| p.docker.as_str())
        .collect();
    if require_all && !missing.is_empty() {
        return Err(ReleaseError::NotAll {
            path: report.to_path_buf(),
            missing: missing.join(", "),
        });
    }
    let mut out = vec![];
    for p in matrix
        .platforms
        .iter()
        .filter(|p| passed.contains_key(&p.docker))
    {
        out.push(check(engine, matrix, root, p, &passed[&p.docker]).await?);
    }
    if out.is_empty() {
        return Err(ReleaseError::NothingPassed {
            path: report.to_path_buf(),
        });
    }
    for p in missing {
        tracing::warn!(
            "{p}: not released (it did not pass every check in {})",
            report.display()
        );
    }
    Ok(out)
}

/// Every check of the leg passed or was skipped (offline), and there was one.
fn leg_passed(leg: &serde_json::Value) -> bool {
    leg["outcomes"].as_array().is_some_and(|o| {
        o.iter().any(|o| o["verdict"]["result"] == "passed")
            && o.iter()
                .all(|o| matches!(o["verdict"]["result"].as_str(), Some("passed" | "skipped")))
    })
}

async fn check(
    engine: &Engine,
    matrix: &Matrix,
    root: &Path,
    p: &Platform,
    reported: &str,
) -> Result<Proved, ReleaseError> {
    let image = crate::recipe::image_tag(matrix, p);
    let local = engine
        .local_image(&image)
        .await?
        .ok_or_else(|| ReleaseError::Missing {
            platform: p.docker.clone(),
            image: image.clone(),
        })?;
    if local.id != reported {
        return Err(ReleaseError::Foreign {
            platform: p.docker.clone(),
            image,
            reported: short(reported),
            local: short(&local.id),
        });
    }
    // The base is released only if it is this image's own base (its layers
    // are the bottom of the image's): another base seeds no build cache.
    let base_tag = base::base_tag(&matrix.defaults, p);
    let base = engine
        .local_image(&base_tag)
        .await?
        .filter(|b| !b.layers.is_empty() && local.layers.starts_with(&b.layers))
        .map(|_| base_tag);
    if base.is_none() {
        tracing::warn!("{}: the engine no longer has the base {image} was built on; released without it (a build from this release rebuilds every layer)", p.docker);
    }
    let tree = crate::recipe::inputs(matrix, root, p)?.hash;
    let label = local.labels.get(LABEL_INPUTS).cloned().unwrap_or_default();
    if label != tree {
        return Err(ReleaseError::Stale {
            platform: p.docker.clone(),
            image,
            label: short(&label),
            tree: short(&tree),
        });
    }
    Ok(Proved {
        platform: p.clone(),
        image,
        id: local.id,
        base,
    })
}

fn short(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    sha: Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<W> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            sha: Sha256::new(),
            len: 0,
        }
    }
    fn digest(&self) -> String {
        hex::encode(self.sha.clone().finalize())
    }
}

/// The names of a release's files.
pub fn tarball_name(tag: &str, p: &Platform) -> String {
    format!("guix-matrix-{tag}-{}.docker.tar.gz", p.slug())
}
/// The base an image was built on, released beside it (for builds from the
/// release, not for users: `docker load` of it gives the base alone).
pub fn base_tarball_name(tag: &str, p: &Platform) -> String {
    format!("guix-matrix-base-{tag}-{}.docker.tar.gz", p.slug())
}
pub fn oci_name(tag: &str) -> String {
    format!("guix-matrix-{tag}-oci.tar")
}

/// What `write_dist` wrote.
#[derive(Debug)]
pub struct Dist {
    /// file name -> (sha256, bytes)
    pub files: BTreeMap<String, (String, u64)>,
}

/// Writes into `dist`: each image as a gzip'd docker-archive (`docker load`
/// takes it back), one OCI image layout archive with an index of every
/// platform, and SHA256SUMS. Files appear under their names only when
/// complete; a failure leaves no partial release file.
pub async fn write_dist(
    engine: &Engine,
    proved: &[Proved],
    dist: &Path,
    tag: &str,
    annotations: &BTreeMap<String, String>,
) -> Result<Dist, ReleaseError> {
    std::fs::create_dir_all(dist).map_err(io(dist))?;
    let work = tempfile::Builder::new()
        .prefix(".guix-matrix-release-")
        .tempdir_in(dist)
        .map_err(io(dist))?;
    let mut files = BTreeMap::new();
    let mut manifests = vec![];
    let blobs = work.path().join("oci/blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(io(&blobs))?;
    for p in proved {
        let archive = work.path().join(format!("{}.tar", p.platform.slug()));
        let name = tarball_name(tag, &p.platform);
        let part = work.path().join(&name);
        let (sum, len) =
            export(engine, &p.platform.docker, &p.image, Some(&archive), &part).await?;
        tracing::info!("{}: {name}: {} MiB", p.platform.docker, len >> 20);
        if let Some(base) = &p.base {
            let base_name = base_tarball_name(tag, &p.platform);
            let base_part = work.path().join(&base_name);
            let (sum, len) = export(engine, &p.platform.docker, base, None, &base_part).await?;
            let final_path = dist.join(&base_name);
            std::fs::rename(&base_part, &final_path).map_err(io(&final_path))?;
            files.insert(base_name, (sum, len));
        }
        let (archive2, blobs2, platform) = (archive.clone(), blobs.clone(), p.platform.clone());
        let manifest =
            tokio::task::spawn_blocking(move || oci_manifest(&archive2, &blobs2, &platform))
                .await
                .expect("oci task")?;
        std::fs::remove_file(&archive).ok();
        let final_path = dist.join(&name);
        std::fs::rename(&part, &final_path).map_err(io(&final_path))?;
        files.insert(name, (sum, len));
        manifests.push(manifest);
    }
    // The multi-platform image is an index blob; index.json names it by the
    // tag (one image in the layout, as OCI tools expect).
    let multi = multi_platform_index(manifests, annotations);
    let mut image = blob(&blobs, multi.as_bytes(), MediaType::ImageIndex)?;
    image.set_annotations(Some(HashMap::from([(
        "org.opencontainers.image.ref.name".to_string(),
        tag.to_string(),
    )])));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![image])
        .build()
        .expect("index");
    let oci = work.path().join("oci");
    std::fs::write(
        oci.join("index.json"),
        index.to_string().expect("index json"),
    )
    .map_err(io(&oci))?;
    std::fs::write(oci.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(io(&oci))?;
    let name = oci_name(tag);
    let part = work.path().join(&name);
    let (sum, len) = {
        let (oci, part2) = (oci.clone(), part.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<(String, u64)> {
            let mut out = Hashing::new(std::io::BufWriter::new(std::fs::File::create(&part2)?));
            let mut tar = tar::Builder::new(&mut out);
            tar.append_dir_all(".", &oci)?;
            tar.finish()?;
            drop(tar);
            out.flush()?;
            Ok((out.digest(), out.len))
        })
        .await
        .expect("tar task")
        .map_err(io(&part))?
    };
    let final_path = dist.join(&name);
    std::fs::rename(&part, &final_path).map_err(io(&final_path))?;
    files.insert(name, (sum, len));
    let sums: String = files
        .iter()
        .map(|(n, (s, _))| format!("{s}  {n}\n"))
        .collect();
    std::fs::write(dist.join("SHA256SUMS"), sums).map_err(io(dist))?;
    Ok(Dist { files })
}

/// The multi-platform image: one index of the platforms' manifests, with
/// the release's annotations (JSON).
fn multi_platform_index(
    manifests: Vec<Descriptor>,
    annotations: &BTreeMap<String, String>,
) -> String {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .annotations(
            annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        )
        .build()
        .expect("index")
        .to_string()
        .expect("index json")
}

/// `docker save` of `image`: the raw archive to `raw` (when given), gzip'd
/// to `gz`; returns the sha256 and size of the gzip'd file.
async fn export(
    engine: &Engine,
    platform: &str,
    image: &str,
    raw: Option<&Path>,
    gz: &Path,
) -> Result<(String, u64), ReleaseError> {
    let mut raw = match raw {
        Some(path) => Some((
            std::io::BufWriter::new(std::fs::File::create(path).map_err(io(path))?),
            path,
        )),
        None => None,
    };
    let mut zipped = flate2::write::GzEncoder::new(
        Hashing::new(std::io::BufWriter::new(
            std::fs::File::create(gz).map_err(io(gz))?,
        )),
        flate2::Compression::fast(),
    );
    let step = format!("{platform}: export {image}");
    let mut stream = engine.docker.export_image(image);
    timeout(&step, Duration::from_secs(1800), async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(EngineError::api(step.clone()))?;
            if let Some((w, path)) = raw.as_mut() {
                w.write_all(&chunk).map_err(io(path))?;
            }
            zipped.write_all(&chunk).map_err(io(gz))?;
        }
        Ok::<(), ReleaseError>(())
    })
    .await??;
    if let Some((mut w, path)) = raw {
        w.flush().map_err(io(path))?;
    }
    let mut hashed = zipped.finish().map_err(io(gz))?;
    hashed.flush().map_err(io(gz))?;
    Ok((hashed.digest(), hashed.len))
}

/// Turns one docker-archive into OCI blobs (config, gzip'd layers, manifest)
/// under `blobs`; returns the manifest's descriptor with its platform.
fn oci_manifest(
    archive: &Path,
    blobs: &Path,
    platform: &Platform,
) -> Result<Descriptor, ReleaseError> {
    let bad = |message: String| ReleaseError::Archive {
        path: archive.to_path_buf(),
        message,
    };
    // Pass 1: manifest.json says which entries are the config and the layers.
    let mut config_path = None;
    let mut layer_paths: Vec<String> = vec![];
    for entry in tar::Archive::new(std::fs::File::open(archive).map_err(io(archive))?)
        .entries()
        .map_err(io(archive))?
    {
        let mut entry = entry.map_err(io(archive))?;
        if entry.path().map_err(io(archive))?.to_string_lossy() == "manifest.json" {
            let mut text = String::new();
            entry.read_to_string(&mut text).map_err(io(archive))?;
            let m: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
            config_path = m[0]["Config"].as_str().map(str::to_string);
            layer_paths = m[0]["Layers"]
                .as_array()
                .map(|l| {
                    l.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
        }
    }
    let config_path = config_path.ok_or_else(|| bad("no manifest.json".into()))?;
    // Pass 2: the blobs.
    let mut config = None;
    let mut layers: HashMap<String, Descriptor> = HashMap::new();
    for entry in tar::Archive::new(std::fs::File::open(archive).map_err(io(archive))?)
        .entries()
        .map_err(io(archive))?
    {
        let mut entry = entry.map_err(io(archive))?;
        let path = entry
            .path()
            .map_err(io(archive))?
            .to_string_lossy()
            .into_owned();
        if path == config_path {
            let mut bytes = vec![];
            entry.read_to_end(&mut bytes).map_err(io(archive))?;
            config = Some(blob(blobs, &bytes, MediaType::ImageConfig)?);
        } else if layer_paths.contains(&path) {
            let tmp = blobs.join(format!(".layer-{}", std::process::id()));
            let mut gz = flate2::write::GzEncoder::new(
                Hashing::new(std::io::BufWriter::new(
                    std::fs::File::create(&tmp).map_err(io(&tmp))?,
                )),
                flate2::Compression::fast(),
            );
            std::io::copy(&mut entry, &mut gz).map_err(io(&tmp))?;
            let mut hashed = gz.finish().map_err(io(&tmp))?;
            hashed.flush().map_err(io(&tmp))?;
            let (digest, size) = (hashed.digest(), hashed.len);
            drop(hashed);
            std::fs::rename(&tmp, blobs.join(&digest)).map_err(io(&tmp))?;
            layers.insert(path, descriptor(MediaType::ImageLayerGzip, &digest, size));
        }
    }
    let config = config.ok_or_else(|| bad(format!("no {config_path}")))?;
    let layers = layer_paths
        .iter()
        .map(|p| {
            layers
                .get(p)
                .cloned()
                .ok_or_else(|| bad(format!("no layer {p}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(layers)
        .build()
        .expect("manifest");
    let bytes = manifest.to_string().expect("manifest json").into_bytes();
    let mut d = blob(blobs, &bytes, MediaType::ImageManifest)?;
    d.set_platform(Some(oci_platform(platform)));
    Ok(d)
}

fn blob(blobs: &Path, bytes: &[u8], media_type: MediaType) -> Result<Descriptor, ReleaseError> {
    let digest = hex::encode(Sha256::digest(bytes));
    let path = blobs.join(&digest);
    std::fs::write(&path, bytes).map_err(io(&path))?;
    Ok(descriptor(media_type, &digest, bytes.len() as u64))
}

fn descriptor(media_type: MediaType, sha256: &str, size: u64) -> Descriptor {
    DescriptorBuilder::default()
        .media_type(media_type)
        .digest(
            format!("sha256:{sha256}")
                .parse::<oci_spec::image::Digest>()
                .expect("sha256 digest"),
        )
        .size(size)
        .build()
        .expect("descriptor")
}

fn oci_platform(p: &Platform) -> oci_spec::image::Platform {
    let oci = p.oci();
    let mut b = PlatformBuilder::default()
        .architecture(oci.architecture.as_str())
        .os(oci.os.as_str());
    if let Some(v) = oci.variant {
        b = b.variant(v);
    }
    b.build().expect("platform")
}

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
                &crate::published::base_tag_of(tag, &p.platform),
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
    let token = token(registry, &challenge, actions)?;
    send(Some(&format!("Bearer {token}"))).map_err(|e| e.to_string())
}

/// The token a `Bearer realm="…",service="…"` challenge asks for.
fn token(registry: &Registry, challenge: &str, actions: &str) -> Result<String, String> {
    let field = |name: &str| {
        regex::Regex::new(&format!(r#"{name}="([^"]*)""#))
            .expect("regex")
            .captures(challenge)
            .map(|c| c[1].to_string())
    };
    let realm = field("realm")
        .ok_or_else(|| format!("the registry wants a login it does not describe: `{challenge}`"))?;
    let mut url = format!("{realm}?scope=repository:{}:{actions}", registry.repo);
    if let Some(service) = field("service") {
        url.push_str(&format!("&service={service}"));
    }
    let mut req = agent().get(&url);
    if let (Ok(user), Ok(pass)) = (
        std::env::var("GUIX_MATRIX_REGISTRY_USER"),
        std::env::var("GUIX_MATRIX_REGISTRY_TOKEN"),
    ) {
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
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
    fn dated_tags_are_utc_calendar_days() {
        let at = |secs: u64| dated_tag(std::time::UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "v19700101");
        assert_eq!(at(1_767_657_600), "v20260106");
        assert_eq!(at(951_782_400), "v20000229");
        assert_eq!(at(1_795_996_799), "v20261129");
        assert_eq!(at(1_795_996_800), "v20261130");
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
