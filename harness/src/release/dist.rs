//! A release directory: each platform's image (and base) as a tarball of its OCI blobs that `docker load` also takes, the multi-platform index, the probes and SHA256SUMS, each under its final name only when complete.

use super::hashing::HashingWriter;
use super::oci::{blob_path, Staged, Staging, OCI_INDEX};
use super::{io, ReleaseError};
use crate::names;
use crate::registry::Digest;
use crate::release::trust::{self, Signer};
use futures::{StreamExt, TryStreamExt};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What `write_dist` wrote.
#[derive(Debug)]
pub struct Dist {
    /// file name -> (sha256, bytes)
    pub files: BTreeMap<String, (String, u64)>,
    /// The sha256 of SHA256SUMS: what a user pins (`--from DIR@sha256:…`).
    pub sums_digest: Digest,
    /// Seconds spent writing.
    pub seconds: f64,
}

/// A tar entry with fixed metadata: the same content is the same bytes.
fn header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h
}

/// The probes archive: `inputs` (the recipe's content hash) and one file
/// per probe.
fn write_probes(
    part: &Path,
    inputs: &str,
    probes: &HashMap<String, Vec<u8>>,
) -> Result<(String, u64), ReleaseError> {
    let mut out = HashingWriter::new(std::io::BufWriter::new(
        std::fs::File::create(part).map_err(io(part))?,
    ));
    {
        let mut tar = tar::Builder::new(&mut out);
        let mut entries: Vec<(&str, &[u8])> = vec![("inputs", inputs.as_bytes())];
        let mut sorted: Vec<_> = probes.iter().collect();
        sorted.sort();
        entries.extend(sorted.iter().map(|(n, b)| (n.as_str(), b.as_slice())));
        for (n, bytes) in entries {
            let mut h = header(bytes.len() as u64);
            h.set_mode(0o755);
            tar.append_data(&mut h, n, bytes).map_err(io(part))?;
        }
        tar.finish().map_err(io(part))?;
    }
    out.flush().map_err(io(part))?;
    Ok((out.digest(), out.len))
}

/// One image's tarball: an OCI image layout (`oci-layout`, `index.json`,
/// `blobs/sha256/…`) with docker's `manifest.json` beside it, so that
/// `docker load` and any OCI tool take it; the blobs are the staged ones,
/// byte for byte.
fn write_image(blobs: &Path, s: &Staged, part: &Path) -> Result<(String, u64), ReleaseError> {
    let mut out = HashingWriter::new(std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(part).map_err(io(part))?,
    ));
    {
        let mut tar = tar::Builder::new(&mut out);
        let mut small = |name: &str, bytes: &[u8]| {
            tar.append_data(&mut header(bytes.len() as u64), name, bytes)
                .map_err(io(part))
        };
        let blob_name =
            |d: &oci_spec::image::Descriptor| format!("blobs/sha256/{}", d.digest().digest());
        small("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [s.manifest],
        });
        small("index.json", index.to_string().as_bytes())?;
        let docker = serde_json::json!([{
            "Config": blob_name(&s.config),
            "RepoTags": [s.name],
            "Layers": s.layers.iter().map(blob_name).collect::<Vec<_>>(),
        }]);
        small("manifest.json", docker.to_string().as_bytes())?;
        small(&blob_name(&s.manifest), &s.bytes)?;
        let mut seen = std::collections::HashSet::new();
        for d in s.blobs().filter(|d| seen.insert(d.digest().to_string())) {
            let path = blob_path(blobs, d);
            let file = std::fs::File::open(&path).map_err(io(&path))?;
            tar.append_data(&mut header(d.size()), blob_name(d), file)
                .map_err(io(part))?;
        }
        tar.finish().map_err(io(part))?;
    }
    out.flush().map_err(io(part))?;
    Ok((out.digest(), out.len))
}

/// Writes into `dist`: each platform's image and base as a tarball of its
/// OCI blobs, the index, the probes and SHA256SUMS (and its signature).
/// Files appear under their names only when complete; a failure leaves no
/// partial release file.
pub async fn write_dist(
    staging: &Staging,
    dist: &Path,
    tag: &str,
    signer: Option<&Signer>,
    probes: Option<(&str, &HashMap<String, Vec<u8>>)>,
) -> Result<Dist, ReleaseError> {
    let started = std::time::Instant::now();
    let mut images: Vec<(String, Staged)> = vec![];
    for sp in &staging.platforms {
        images.push((names::tarball(tag, &sp.platform), sp.image.clone()));
        if let Some(base) = &sp.base {
            images.push((names::base_tarball(tag, &sp.platform), base.clone()));
        }
        if let Some(helper) = &sp.helper {
            images.push((names::helper_tarball(tag, &sp.platform), helper.clone()));
        }
    }
    let lanes = std::thread::available_parallelism().map_or(2, |n| n.get().min(3));
    let written: Vec<(String, (String, u64))> = futures::stream::iter(images)
        .map(|(name, staged)| {
            let (part, blobs) = (staging.work().join(&name), staging.blobs());
            async move {
                let sum = tokio::task::spawn_blocking(move || write_image(&blobs, &staged, &part))
                    .await
                    .expect("tarball task")?;
                Ok::<_, ReleaseError>((name, sum))
            }
        })
        .buffered(lanes)
        .try_collect()
        .await?;
    let mut parts: Vec<(String, (String, u64))> = written;
    let index = names::index_file(tag);
    let part = staging.work().join(&index);
    std::fs::write(&part, &staging.index).map_err(io(&part))?;
    parts.push((
        index,
        (
            staging.index_digest().hex().to_string(),
            staging.index.len() as u64,
        ),
    ));
    if let Some((inputs, probes)) = probes {
        let name = names::probes_archive(tag);
        let part = staging.work().join(&name);
        parts.push((name, write_probes(&part, inputs, probes)?));
    }
    // Every file complete before any is named: a release directory never
    // mixes this release's files with an earlier one's half-way.
    let mut files = BTreeMap::new();
    for (name, sum) in parts {
        let (part, target): (PathBuf, PathBuf) = (staging.work().join(&name), dist.join(&name));
        std::fs::rename(&part, &target).map_err(io(&target))?;
        files.insert(name, sum);
    }
    let sums: String = files
        .iter()
        .map(|(n, (s, _))| format!("{s}  {n}\n"))
        .collect();
    // The signature first, then the checksums: SHA256SUMS never stands
    // beside the signature of an earlier release.
    let sums_path = dist.join(trust::SUMS);
    let sig_path = dist.join(trust::SUMS_SIG);
    match signer {
        Some(signer) => {
            let part = staging.work().join(trust::SUMS_SIG);
            std::fs::write(&part, signer.sign(sums.as_bytes())).map_err(io(&part))?;
            std::fs::rename(&part, &sig_path).map_err(io(&sig_path))?;
        }
        None => match std::fs::remove_file(&sig_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&sig_path)(e)),
            _ => {}
        },
    }
    let part = staging.work().join(trust::SUMS);
    std::fs::write(&part, &sums).map_err(io(&part))?;
    std::fs::rename(&part, &sums_path).map_err(io(&sums_path))?;
    Ok(Dist {
        files,
        sums_digest: Digest::of(sums.as_bytes()),
        seconds: started.elapsed().as_secs_f64(),
    })
}
