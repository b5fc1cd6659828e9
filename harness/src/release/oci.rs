//! The OCI images of a release: each platform's export read once, every layer gzip'd once into content-addressed blobs (its image and base share them), the release's labels on the image's config, and the multi-platform index.

use super::export::{descriptor, gzip_layer, read_export, ArchiveEntry, Export, Failure};
use super::gate::Proved;
use super::{io, ReleaseError};
use crate::engine::{timeout, Engine};
use crate::matrix::Platform;
use crate::registry::Digest;
use futures::{StreamExt, TryStreamExt};
use oci_spec::image::{
    Descriptor, ImageIndexBuilder, ImageManifestBuilder, MediaType, PlatformBuilder,
};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The media types a release writes.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// One image as OCI blobs.
#[derive(Debug, Clone)]
pub struct Staged {
    /// Its manifest, with its platform (the index entry).
    pub manifest: Descriptor,
    /// The manifest's bytes.
    pub bytes: Vec<u8>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    /// The name `docker load` of its tarball gives it.
    pub name: String,
}

impl Staged {
    /// Its manifest's digest.
    pub fn digest(&self) -> Digest {
        Digest::parse(self.manifest.digest().as_ref()).expect("a sha256 digest")
    }

    /// Its config and layers.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        std::iter::once(&self.config).chain(&self.layers)
    }
}

/// One platform's image and the base it was built on.
#[derive(Debug, Clone)]
pub struct StagedPlatform {
    pub platform: Platform,
    pub image: Staged,
    pub base: Option<Staged>,
    /// The emulator helper (only on the platform the release is made on).
    pub helper: Option<Staged>,
}

impl StagedPlatform {
    /// Its images, each pushed and written on its own: the base and the
    /// helper before the image.
    pub fn parts(&self) -> impl Iterator<Item = &Staged> {
        self.base.iter().chain(&self.helper).chain([&self.image])
    }
}

/// A release's images as OCI blobs in a work directory beside the release
/// (removed when dropped), and their index: what the tarballs hold and the
/// registry receives, byte for byte.
pub struct Staging {
    work: tempfile::TempDir,
    pub platforms: Vec<StagedPlatform>,
    /// The multi-platform index (pushed under the tag; a file of the release).
    pub index: Vec<u8>,
    /// Seconds spent exporting and compressing.
    pub seconds: f64,
}

impl Staging {
    pub fn work(&self) -> &Path {
        self.work.path()
    }

    /// Where the blobs are.
    pub fn blobs(&self) -> PathBuf {
        self.work.path().join(BLOBS)
    }

    pub fn index_digest(&self) -> Digest {
        Digest::of(&self.index)
    }
}

const BLOBS: &str = "blobs/sha256";

/// Where the blob `d` is among `blobs`.
pub fn blob_path(blobs: &Path, d: &Descriptor) -> PathBuf {
    blobs.join(d.digest().digest())
}

/// What the release says of itself: labels on each image's config (beside
/// its base's name and digest) and the index's annotations.
pub struct Labels<'a> {
    pub annotations: &'a BTreeMap<String, String>,
    /// The name the base of `platform` is published under, given its digest.
    pub base_name: &'a (dyn Fn(&Platform, &Digest) -> String + Sync),
}

/// Exports the proved images (each platform's image and base in one
/// `docker save`, platforms three at a time) into OCI blobs under a work
/// directory in `dist`, and makes their index.
pub async fn stage(
    engine: &Engine,
    proved: &[Proved],
    dist: &Path,
    labels: &Labels<'_>,
) -> Result<Staging, ReleaseError> {
    let started = std::time::Instant::now();
    std::fs::create_dir_all(dist).map_err(io(dist))?;
    forget_interrupted(dist);
    let work = tempfile::Builder::new()
        .prefix(WORK_PREFIX)
        .tempdir_in(dist)
        .map_err(io(dist))?;
    let blobs = work.path().join(BLOBS);
    std::fs::create_dir_all(&blobs).map_err(io(&blobs))?;
    let lanes = std::thread::available_parallelism().map_or(2, |n| n.get().min(3));
    let platforms: Vec<StagedPlatform> = futures::stream::iter(proved)
        .map(|p| stage_platform(engine, p, &blobs, labels))
        .buffered(lanes)
        .try_collect()
        .await?;
    let entries = platforms
        .iter()
        .map(|sp| {
            let mut d = sp.image.manifest.clone();
            // The base it was built on and the helper, vouched for with the index.
            let annotations: HashMap<String, String> = [
                (crate::names::BASE_DIGEST, &sp.base),
                (crate::names::HELPER_DIGEST, &sp.helper),
            ]
            .into_iter()
            .filter_map(|(k, s)| s.as_ref().map(|s| (k.to_string(), s.digest().to_string())))
            .collect();
            if !annotations.is_empty() {
                d.set_annotations(Some(annotations));
            }
            d
        })
        .collect();
    let index = multi_platform_index(entries, labels.annotations).into_bytes();
    Ok(Staging {
        work,
        platforms,
        index,
        seconds: started.elapsed().as_secs_f64(),
    })
}

const WORK_PREFIX: &str = ".guix-matrix-release-";

/// Removes what an interrupted release left in `dist` (its work directory;
/// no release file is ever under its final name before it is complete).
fn forget_interrupted(dist: &Path) {
    for entry in std::fs::read_dir(dist).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(WORK_PREFIX) {
            tracing::info!(
                "removing {} (an interrupted release)",
                entry.path().display()
            );
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

async fn stage_platform(
    engine: &Engine,
    p: &Proved,
    blobs: &Path,
    labels: &Labels<'_>,
) -> Result<StagedPlatform, ReleaseError> {
    let names: Vec<&str> = std::iter::once(p.image.as_str())
        .chain(p.base.as_deref())
        .chain(p.helper.as_deref())
        .collect();
    let step = format!("{}: export {}", p.platform.docker, names.join(" and "));
    let failed = |message: String| ReleaseError::Export {
        platform: p.platform.docker.clone(),
        image: p.image.clone(),
        message,
    };
    let stream = engine.save(&names);
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let dir = blobs.to_path_buf();
    let export = timeout(&step, Duration::from_secs(1800), async {
        tokio::task::spawn_blocking(move || read_export(reader, &dir))
            .await
            .expect("export task")
    })
    .await?
    .map_err(|e| match e {
        Failure::Io(path, source) => ReleaseError::Io { path, source },
        Failure::Bad(message) => failed(message),
    })?;
    // Each image is the one checked (its config's digest is the image ID
    // the gate saw), not whatever its tag points to now.
    let tagged = |name: &str| {
        let entry = export
            .manifest
            .iter()
            .find(|e| e.repo_tags.iter().flatten().any(|t| t == name))
            .ok_or_else(|| failed(format!("its manifest.json has no {name}")))?;
        let config = export.small.get(export.resolve(&entry.config));
        let id = config.map(|c| Digest::of(c).to_string());
        match (id, p.ids.get(name)) {
            (Some(id), Some(want)) if &id == want => Ok(entry),
            (id, want) => Err(failed(format!(
                "{name} was image {} when checked, and the export holds {}: it changed during the release; run it again",
                want.map_or("(unchecked)", String::as_str),
                id.as_deref().unwrap_or("no config")
            ))),
        }
    };
    let (platform, dir) = (p.platform.clone(), blobs.to_path_buf());
    // The base and the helper as they are; the image with the release's labels.
    let plain = |name: &Option<String>| {
        let entry = name.as_deref().map(tagged).transpose();
        let (export, platform, dir, name) =
            (export.clone(), platform.clone(), dir.clone(), name.clone());
        async move {
            let (Some(entry), Some(name)) = (entry?.cloned(), name) else {
                return Ok(None);
            };
            tokio::task::spawn_blocking(move || {
                staged(&export, &entry, &dir, &platform, &name, &BTreeMap::new())
            })
            .await
            .expect("stage task")
            .map(Some)
            .map_err(|e| match e {
                Failure::Io(path, source) => ReleaseError::Io { path, source },
                Failure::Bad(message) => failed(message),
            })
        }
    };
    let base = plain(&p.base).await?;
    let helper = plain(&p.helper).await?;
    let mut image_labels: BTreeMap<String, String> = labels
        .annotations
        .iter()
        .filter(|(k, _)| k.starts_with("org.opencontainers.image."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(base) = &base {
        image_labels.insert(
            "org.opencontainers.image.base.name".into(),
            (labels.base_name)(&platform, &base.digest()),
        );
        image_labels.insert(BASE_DIGEST_LABEL.into(), base.digest().to_string());
    }
    let entry = tagged(&p.image)?.clone();
    let name = p.image.clone();
    let image = tokio::task::spawn_blocking(move || {
        staged(&export, &entry, &dir, &platform, &name, &image_labels)
    })
    .await
    .expect("stage task")
    .map_err(|e| match e {
        Failure::Io(path, source) => ReleaseError::Io { path, source },
        Failure::Bad(message) => failed(message),
    })?;
    tracing::info!(
        "{}: {} layers, {} MiB gzip'd",
        p.platform.docker,
        image.layers.len(),
        image.layers.iter().map(|l| l.size()).sum::<u64>() >> 20
    );
    Ok(StagedPlatform {
        platform: p.platform.clone(),
        image,
        base,
        helper,
    })
}

const BASE_DIGEST_LABEL: &str = "org.opencontainers.image.base.digest";

/// The OCI image of one manifest.json entry: its layers (gzip'd once), its
/// config with `labels` added, and its manifest with its platform.
fn staged(
    export: &Export,
    entry: &ArchiveEntry,
    blobs: &Path,
    platform: &Platform,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Result<Staged, Failure> {
    let config_path = export.resolve(&entry.config);
    let config_bytes = export
        .small
        .get(config_path)
        .ok_or_else(|| Failure::Bad(format!("has no config {config_path}")))?;
    let mut config: serde_json::Value = serde_json::from_slice(config_bytes)
        .map_err(|e| Failure::Bad(format!("has a config that is not JSON: {e}")))?;
    let mut layers = vec![];
    for path in &entry.layers {
        let path = export.resolve(path);
        let layer = match (export.layers.get(path), export.small.get(path)) {
            (Some(layer), _) => layer.clone(),
            (None, Some(bytes)) => gzip_layer(&mut bytes.as_slice(), blobs)?,
            (None, None) => return Err(Failure::Bad(format!("has no layer {path}"))),
        };
        layers.push(layer);
    }
    let diff_ids: Vec<&str> = config["rootfs"]["diff_ids"]
        .as_array()
        .map(|ids| ids.iter().filter_map(|d| d.as_str()).collect())
        .unwrap_or_default();
    if diff_ids
        != layers
            .iter()
            .map(|l| l.diff_id.as_str())
            .collect::<Vec<_>>()
    {
        return Err(Failure::Bad(format!(
            "has layers for {name} that are not the ones its config names"
        )));
    }
    let config_bytes = if labels.is_empty() {
        config_bytes.clone()
    } else {
        let inner = &mut config["config"];
        if !inner.is_object() {
            *inner = serde_json::json!({});
        }
        if !inner["Labels"].is_object() {
            inner["Labels"] = serde_json::json!({});
        }
        for (k, v) in labels {
            inner["Labels"][k] = serde_json::Value::String(v.clone());
        }
        serde_json::to_vec(&config).expect("config json")
    };
    let config = blob(blobs, &config_bytes, MediaType::ImageConfig).map_err(|e| match e {
        ReleaseError::Io { path, source } => Failure::Io(path, source),
        other => Failure::Bad(other.to_string()),
    })?;
    let layers: Vec<Descriptor> = layers.into_iter().map(|l| l.blob).collect();
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config.clone())
        .layers(layers.clone())
        .build()
        .expect("manifest");
    let bytes = canonical(&manifest.to_string().expect("manifest json")).into_bytes();
    let mut d = blob(blobs, &bytes, MediaType::ImageManifest).map_err(|e| match e {
        ReleaseError::Io { path, source } => Failure::Io(path, source),
        other => Failure::Bad(other.to_string()),
    })?;
    d.set_platform(Some(oci_platform(platform)));
    Ok(Staged {
        manifest: d,
        bytes,
        config,
        layers,
        name: name.to_string(),
    })
}

/// The multi-platform image: one index of the platforms' manifests, with
/// the release's annotations (JSON).
pub(super) fn multi_platform_index(
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
        .map(|json| canonical(&json))
        .expect("index json")
}

/// The same JSON with every object's keys in order: the bytes, and so the
/// digest, of a document depend on its content only (maps have no order).
pub(super) fn canonical(json: &str) -> String {
    // serde_json keeps insertion order here (a dependency asks for it).
    fn sorted(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(
                    entries.into_iter().map(|(k, v)| (k, sorted(v))).collect(),
                )
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(sorted).collect())
            }
            other => other,
        }
    }
    serde_json::from_str::<serde_json::Value>(json)
        .map(|v| sorted(v).to_string())
        .unwrap_or_else(|_| json.to_string())
}

pub(super) fn blob(
    blobs: &Path,
    bytes: &[u8],
    media_type: MediaType,
) -> Result<Descriptor, ReleaseError> {
    let digest = Digest::of(bytes);
    let hex = digest.hex().to_string();
    let path = blobs.join(&hex);
    // Written whole, then named: another platform may write the same blob.
    let mut tmp = tempfile::NamedTempFile::new_in(blobs).map_err(io(blobs))?;
    tmp.write_all(bytes).map_err(io(&path))?;
    tmp.persist(&path).map_err(|e| io(&path)(e.error))?;
    Ok(descriptor(media_type, &hex, bytes.len() as u64))
}

pub(super) fn oci_platform(p: &Platform) -> oci_spec::image::Platform {
    let oci = p.oci();
    let mut b = PlatformBuilder::default()
        .architecture(oci.architecture.as_str())
        .os(oci.os.as_str());
    if let Some(v) = oci.variant {
        b = b.variant(v);
    }
    b.build().expect("platform")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn an_index_is_the_same_bytes_for_the_same_content() {
        let annotations: BTreeMap<String, String> = (0..20)
            .map(|i| (format!("key.{i}"), format!("value {i}")))
            .collect();
        let first = multi_platform_index(vec![], &annotations);
        for _ in 0..10 {
            assert_eq!(multi_platform_index(vec![], &annotations), first);
        }
        assert!(first.find("key.0").unwrap() < first.find("key.19").unwrap());
    }

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(vec![]);
        for (path, bytes) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            tar.append_data(&mut h, path, *bytes).unwrap();
        }
        tar.into_inner().unwrap()
    }

    /// A docker-archive of one image whose layer is large enough to stream
    /// and one small enough to be held: both gzip'd once, in the config's
    /// order, the labels on the config, the layers' bytes unchanged.
    #[test]
    fn an_export_becomes_one_oci_image_with_its_labels() {
        let big: Vec<u8> = (0..3 << 20).map(|i| (i * 7 % 251) as u8).collect();
        let layer1 = tar_of(&[("big", &big)]);
        let layer2 = tar_of(&[("small", b"hello")]);
        let sha = |b: &[u8]| Digest::of(b).to_string();
        let config = serde_json::json!({
            "architecture": "arm", "variant": "v7", "os": "linux",
            "config": {"Labels": {"io.guix-matrix.inputs": "abc"}},
            "rootfs": {"type": "layers", "diff_ids": [sha(&layer1), sha(&layer2)]}
        })
        .to_string();
        let manifest = r#"[{"Config":"c.json","RepoTags":["guix-matrix:arm-v7"],"Layers":["l1/layer.tar","l2/layer.tar"]}]"#;
        let archive = tar_of(&[
            ("l2/layer.tar", &layer2),
            ("l1/layer.tar", &layer1),
            ("c.json", config.as_bytes()),
            ("manifest.json", manifest.as_bytes()),
        ]);
        let blobs = tempfile::tempdir().unwrap();
        let Ok(export) = read_export(archive.as_slice(), blobs.path()) else {
            panic!("not read")
        };
        let platform =
            crate::matrix::Matrix::load(crate::paths::Checkout::find().unwrap().matrix())
                .unwrap()
                .platforms
                .into_iter()
                .find(|p| p.docker == "linux/arm/v7")
                .unwrap();
        let labels = BTreeMap::from([("org.opencontainers.image.version".into(), "v1".into())]);
        let Ok(s) = staged(
            &export,
            &export.manifest[0],
            blobs.path(),
            &platform,
            "guix-matrix:arm-v7",
            &labels,
        ) else {
            panic!("not staged")
        };
        assert_eq!(s.layers.len(), 2);
        for (d, want) in s.layers.iter().zip([&layer1, &layer2]) {
            let gz = std::fs::read(blob_path(blobs.path(), d)).unwrap();
            assert_eq!(Digest::of(&gz).to_string(), d.digest().to_string());
            let mut raw = vec![];
            flate2::read::MultiGzDecoder::new(gz.as_slice())
                .read_to_end(&mut raw)
                .unwrap();
            assert_eq!(&raw, want);
        }
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(blob_path(blobs.path(), &s.config)).unwrap())
                .unwrap();
        assert_eq!(
            cfg["config"]["Labels"]["org.opencontainers.image.version"],
            "v1"
        );
        assert_eq!(cfg["config"]["Labels"]["io.guix-matrix.inputs"], "abc");
        let m: serde_json::Value = serde_json::from_slice(&s.bytes).unwrap();
        assert_eq!(m["config"]["digest"], s.config.digest().to_string());
        assert_eq!(
            s.manifest.platform().as_ref().unwrap().variant().as_deref(),
            Some("v7")
        );
        // A layer that is not the config's is refused.
        let wrong = manifest.replace(
            r#""l1/layer.tar","l2/layer.tar""#,
            r#""l2/layer.tar","l1/layer.tar""#,
        );
        let archive = tar_of(&[
            ("l2/layer.tar", &layer2),
            ("l1/layer.tar", &layer1),
            ("c.json", config.as_bytes()),
            ("manifest.json", wrong.as_bytes()),
        ]);
        let export = read_export(archive.as_slice(), blobs.path()).ok().unwrap();
        assert!(matches!(
            staged(&export, &export.manifest[0], blobs.path(), &platform, "x", &labels),
            Err(Failure::Bad(m)) if m.contains("not the ones its config names")
        ));
    }
}
