//! The OCI image layout: each platform's manifest and blobs from its docker-archive, and one multi-platform index.

use super::archive::Hashing;
use super::{io, ReleaseError};
use crate::matrix::Platform;
use oci_spec::image::{
    Descriptor, DescriptorBuilder, ImageIndexBuilder, ImageManifestBuilder, MediaType,
    PlatformBuilder,
};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::Path;

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

/// Turns one docker-archive into OCI blobs (config, gzip'd layers, manifest)
/// under `blobs`; returns the manifest's descriptor with its platform.
pub(super) fn oci_manifest(
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
            // A name of its own: platforms are converted at the same time.
            let tmp = tempfile::NamedTempFile::new_in(blobs).map_err(io(blobs))?;
            let mut gz = flate2::write::GzEncoder::new(
                Hashing::new(std::io::BufWriter::new(
                    tmp.reopen().map_err(io(tmp.path()))?,
                )),
                flate2::Compression::fast(),
            );
            std::io::copy(&mut entry, &mut gz).map_err(io(tmp.path()))?;
            let mut hashed = gz.finish().map_err(io(tmp.path()))?;
            hashed.flush().map_err(io(tmp.path()))?;
            let (digest, size) = (hashed.digest(), hashed.len);
            drop(hashed);
            let target = blobs.join(&digest);
            tmp.persist(&target).map_err(|e| io(&target)(e.error))?;
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

pub(super) fn blob(
    blobs: &Path,
    bytes: &[u8],
    media_type: MediaType,
) -> Result<Descriptor, ReleaseError> {
    let digest = hex::encode(Sha256::digest(bytes));
    let path = blobs.join(&digest);
    // Written whole, then named: another platform may write the same blob.
    let mut tmp = tempfile::NamedTempFile::new_in(blobs).map_err(io(blobs))?;
    tmp.write_all(bytes).map_err(io(&path))?;
    tmp.persist(&path).map_err(|e| io(&path)(e.error))?;
    Ok(descriptor(media_type, &digest, bytes.len() as u64))
}

pub(super) fn descriptor(media_type: MediaType, sha256: &str, size: u64) -> Descriptor {
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
    #[test]
    fn an_index_is_the_same_bytes_for_the_same_content() {
        let annotations: std::collections::BTreeMap<String, String> = (0..20)
            .map(|i| (format!("key.{i}"), format!("value {i}")))
            .collect();
        let first = super::multi_platform_index(vec![], &annotations);
        for _ in 0..10 {
            assert_eq!(super::multi_platform_index(vec![], &annotations), first);
        }
        assert!(first.find("key.0").unwrap() < first.find("key.19").unwrap());
    }
}
