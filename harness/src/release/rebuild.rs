//! Whether a rebuilt image is a release's image: config and layers compared as the engine holds them, and where they differ, each file that does (path, size, mode, owner, mtime, link, content hash), as `guix build --check` and diffoscope's summary do.

use super::hashing::HashingReader;
use crate::engine::{Engine, EngineError};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;

/// One file of a layer as a comparison sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub size: u64,
    pub mode: u32,
    pub owner: (u64, u64),
    pub mtime: u64,
    /// A link's target, or the content's sha256 (first 16 hex digits).
    pub content: String,
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "size {} mode {:o} owner {}:{} mtime {} {}",
            self.size,
            self.mode,
            self.owner.0,
            self.owner.1,
            crate::base::mirror::rfc3339(self.mtime as i64),
            self.content
        )
    }
}

/// An image as saved by the engine: its config's bytes and each layer's
/// diff ID and files.
#[derive(Debug, Default)]
pub struct Saved {
    pub config: Vec<u8>,
    pub layers: Vec<(String, BTreeMap<String, Entry>)>,
}

/// `docker save` of `name`, read once: its config and each layer's files.
pub async fn saved(engine: &Engine, name: &str) -> Result<Saved, EngineError> {
    let step = format!("read {name}");
    let stream = engine.save(&[name]);
    let mut reader =
        tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(Box::pin(stream)));
    let failed = |source: std::io::Error| EngineError::Rewrite {
        step: step.clone(),
        source,
    };
    tokio::task::spawn_blocking(move || read_saved(&mut reader))
        .await
        .map_err(|e| failed(std::io::Error::other(e.to_string())))?
        .map_err(failed)
}

/// The config and layers of a one-image docker-archive.
fn read_saved(input: impl Read) -> std::io::Result<Saved> {
    let mut small: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut layers: BTreeMap<String, (String, BTreeMap<String, Entry>)> = BTreeMap::new();
    let mut links: BTreeMap<String, String> = BTreeMap::new();
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        if let Some(target) = crate::epoch::link_target(&entry, &path)? {
            links.insert(path, target);
            continue;
        }
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let mut head = vec![];
        (&mut entry).take(512).read_to_end(&mut head)?;
        if matches!(head.first(), Some(b'{' | b'[')) && entry.size() <= 1 << 20 {
            entry.read_to_end(&mut head)?;
            small.insert(path, head);
        } else if path.ends_with("layer.tar") || path.starts_with("blobs/") {
            let mut hashing = HashingReader::new(head.as_slice().chain(&mut entry));
            let files = files(&mut hashing)?;
            std::io::copy(&mut hashing, &mut std::io::sink())?;
            let diff_id = format!("sha256:{}", hashing.digest());
            layers.insert(path, (diff_id, files));
        }
    }
    let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let manifest: serde_json::Value = serde_json::from_slice(
        small
            .get("manifest.json")
            .ok_or_else(|| bad("the engine's archive has no manifest.json".into()))?,
    )?;
    let config = manifest[0]["Config"].as_str().unwrap_or_default();
    let mut saved = Saved {
        config: small
            .remove(config)
            .ok_or_else(|| bad(format!("the engine's archive has no config {config}")))?,
        layers: vec![],
    };
    for path in manifest[0]["Layers"].as_array().into_iter().flatten() {
        let path = path.as_str().unwrap_or_default();
        let path = links.get(path).map_or(path, String::as_str);
        saved.layers.push(
            layers
                .get(path)
                .cloned()
                .ok_or_else(|| bad(format!("the engine's archive has no layer {path}")))?,
        );
    }
    Ok(saved)
}

/// Every entry of a layer tar, by path.
fn files(layer: &mut impl Read) -> std::io::Result<BTreeMap<String, Entry>> {
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(layer);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        let h = entry.header().clone();
        let content = match entry.link_name()? {
            Some(target) => format!("-> {}", target.display()),
            None => {
                let mut sha = Sha256::new();
                std::io::copy(&mut entry, &mut sha)?;
                format!("sha256:{}", &hex::encode(sha.finalize())[..16])
            }
        };
        out.insert(
            path,
            Entry {
                size: h.size().unwrap_or(0),
                mode: h.mode().unwrap_or(0),
                owner: (h.uid().unwrap_or(0), h.gid().unwrap_or(0)),
                mtime: h.mtime().unwrap_or(0),
                content,
            },
        );
    }
    Ok(out)
}

/// How a rebuilt image compares with the release's.
#[derive(Debug, Default)]
pub struct Comparison {
    /// The release's image ID, and the one the rebuild gives once the
    /// release's labels are on its config (as `release` puts them).
    pub ids: (String, String),
    /// Config fields that differ: (field, release, rebuilt).
    pub config: Vec<(String, String, String)>,
    /// Layers that differ: (index, release diff ID, rebuilt diff ID, files).
    pub layers: Vec<(usize, String, String, Vec<String>)>,
    pub layer_count: usize,
}

impl Comparison {
    pub fn identical(&self) -> bool {
        self.ids.0 == self.ids.1 && self.layers.is_empty()
    }
}

/// Compares the release's saved image with the rebuilt one.
pub fn compare(release: &Saved, rebuilt: &Saved) -> Comparison {
    let id = |bytes: &[u8]| format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
    let release_config: serde_json::Value =
        serde_json::from_slice(&release.config).unwrap_or_default();
    let mut rebuilt_config: serde_json::Value =
        serde_json::from_slice(&rebuilt.config).unwrap_or_default();
    // What `release` adds to the image's config: its org.opencontainers labels.
    if let Some(labels) = release_config["config"]["Labels"].as_object() {
        for (k, v) in labels {
            if k.starts_with("org.opencontainers.image.") {
                rebuilt_config["config"]["Labels"][k] = v.clone();
            }
        }
    }
    let relabelled = serde_json::to_vec(&rebuilt_config).expect("config json");
    let mut c = Comparison {
        ids: (id(&release.config), id(&relabelled)),
        layer_count: release.layers.len().max(rebuilt.layers.len()),
        ..Comparison::default()
    };
    c.config = json_differences("", &release_config, &rebuilt_config);
    let none = (String::from("(none)"), BTreeMap::new());
    for i in 0..c.layer_count {
        let a = release.layers.get(i).unwrap_or(&none);
        let b = rebuilt.layers.get(i).unwrap_or(&none);
        if a.0 != b.0 {
            c.layers.push((
                i + 1,
                a.0.clone(),
                b.0.clone(),
                file_differences(&a.1, &b.1),
            ));
        }
    }
    c
}

/// The leaves of two JSON documents that differ, by dotted path.
fn json_differences(
    at: &str,
    a: &serde_json::Value,
    b: &serde_json::Value,
) -> Vec<(String, String, String)> {
    use serde_json::Value::Object;
    match (a, b) {
        (Object(x), Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter()
                .flat_map(|k| {
                    let null = serde_json::Value::Null;
                    json_differences(
                        &format!("{at}{}{k}", if at.is_empty() { "" } else { "." }),
                        x.get(k).unwrap_or(&null),
                        y.get(k).unwrap_or(&null),
                    )
                })
                .collect()
        }
        _ if a == b => vec![],
        _ => vec![(at.to_string(), a.to_string(), b.to_string())],
    }
}

/// Each path whose entry differs between two layers, one line each.
fn file_differences(a: &BTreeMap<String, Entry>, b: &BTreeMap<String, Entry>) -> Vec<String> {
    let paths: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    paths
        .into_iter()
        .filter_map(|p| match (a.get(p), b.get(p)) {
            (Some(x), Some(y)) if x == y => None,
            (Some(x), Some(y)) => Some(format!("{p}: {}", entry_change(x, y))),
            (Some(x), None) => Some(format!("{p}: only in the release ({x})")),
            (None, Some(y)) => Some(format!("{p}: only in the rebuild ({y})")),
            (None, None) => None,
        })
        .collect()
}

/// What differs between two entries of one path.
fn entry_change(x: &Entry, y: &Entry) -> String {
    let mut parts = vec![];
    if x.size != y.size {
        parts.push(format!("size {} -> {}", x.size, y.size));
    }
    if x.mode != y.mode {
        parts.push(format!("mode {:o} -> {:o}", x.mode, y.mode));
    }
    if x.owner != y.owner {
        parts.push(format!(
            "owner {}:{} -> {}:{}",
            x.owner.0, x.owner.1, y.owner.0, y.owner.1
        ));
    }
    if x.mtime != y.mtime {
        parts.push(format!(
            "mtime {} -> {}",
            crate::base::mirror::rfc3339(x.mtime as i64),
            crate::base::mirror::rfc3339(y.mtime as i64)
        ));
    }
    if x.content != y.content {
        parts.push(format!("content {} -> {}", x.content, y.content));
    }
    parts.join(", ")
}

impl std::fmt::Display for Comparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.identical() {
            return write!(
                f,
                "identical: image {} ({} layers and the config)",
                self.ids.0, self.layer_count
            );
        }
        writeln!(
            f,
            "differs: the release's image is {}, the rebuild's {}",
            self.ids.0, self.ids.1
        )?;
        for (field, a, b) in &self.config {
            writeln!(f, "  config {field}: {a} -> {b}")?;
        }
        for (i, a, b, files) in &self.layers {
            writeln!(f, "  layer {i} of {}: {a} -> {b}", self.layer_count)?;
            if files.is_empty() {
                writeln!(f, "    the same files: the tar differs in order or headers")?;
            }
            for line in files.iter().take(50) {
                writeln!(f, "    {line}")?;
            }
            if files.len() > 50 {
                writeln!(f, "    … and {} more files", files.len() - 50)?;
            }
        }
        Ok(())
    }
}
