//! A release directory: per-platform tarballs, the OCI layout archive and SHA256SUMS, each under its final name only when complete.

use super::archive::{export, Hashing};
use super::gate::Proved;
use super::oci::{blob, multi_platform_index, oci_manifest};
use super::{io, ReleaseError};
use crate::engine::Engine;
use crate::names;
use crate::source::Digest;
use crate::trust::{self, Signer};
use futures::{StreamExt, TryStreamExt};
use oci_spec::image::{ImageIndexBuilder, MediaType};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

/// What `write_dist` wrote.
#[derive(Debug)]
pub struct Dist {
    /// file name -> (sha256, bytes)
    pub files: BTreeMap<String, (String, u64)>,
    /// The sha256 of SHA256SUMS: what a user pins (`--from DIR@sha256:…`).
    pub sums_digest: Digest,
}

/// The probes archive: `inputs` (the recipe's content hash) and one file
/// per probe, under its final name only when complete.
fn write_probes(
    dist: &Path,
    work: &Path,
    name: &str,
    inputs: &str,
    probes: &HashMap<String, Vec<u8>>,
) -> Result<(String, u64), ReleaseError> {
    let part = work.join(name);
    let mut out = Hashing::new(std::io::BufWriter::new(
        std::fs::File::create(&part).map_err(io(&part))?,
    ));
    {
        let mut tar = tar::Builder::new(&mut out);
        let mut entries: Vec<(&str, &[u8])> = vec![("inputs", inputs.as_bytes())];
        let mut sorted: Vec<_> = probes.iter().collect();
        sorted.sort();
        entries.extend(sorted.iter().map(|(n, b)| (n.as_str(), b.as_slice())));
        for (n, bytes) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o755);
            tar.append_data(&mut h, n, bytes).map_err(io(&part))?;
        }
        tar.finish().map_err(io(&part))?;
    }
    out.flush().map_err(io(&part))?;
    let (sum, len) = (out.digest(), out.len);
    drop(out);
    let final_path = dist.join(name);
    std::fs::rename(&part, &final_path).map_err(io(&final_path))?;
    Ok((sum, len))
}

/// One platform's tarballs (its image, and its base when it has one) under
/// their final names, and its image's OCI manifest in the layout's blobs.
async fn one_platform(
    engine: &Engine,
    p: &Proved,
    dist: &Path,
    work: &Path,
    blobs: &Path,
    tag: &str,
) -> Result<(Vec<(String, (String, u64))>, oci_spec::image::Descriptor), ReleaseError> {
    let mut files = vec![];
    let archive = work.join(format!("{}.tar", p.platform.slug()));
    let name = names::tarball(tag, &p.platform);
    let part = work.join(&name);
    let (sum, len) = export(engine, &p.platform.docker, &p.image, Some(&archive), &part).await?;
    tracing::info!("{}: {name}: {} MiB", p.platform.docker, len >> 20);
    if let Some(base) = &p.base {
        let base_name = names::base_tarball(tag, &p.platform);
        let base_part = work.join(&base_name);
        let (sum, len) = export(engine, &p.platform.docker, base, None, &base_part).await?;
        let final_path = dist.join(&base_name);
        std::fs::rename(&base_part, &final_path).map_err(io(&final_path))?;
        files.push((base_name, (sum, len)));
    }
    let (archive2, blobs2, platform) = (archive.clone(), blobs.to_path_buf(), p.platform.clone());
    let manifest = tokio::task::spawn_blocking(move || oci_manifest(&archive2, &blobs2, &platform))
        .await
        .expect("oci task")?;
    std::fs::remove_file(&archive).ok();
    let final_path = dist.join(&name);
    std::fs::rename(&part, &final_path).map_err(io(&final_path))?;
    files.push((name, (sum, len)));
    Ok((files, manifest))
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
    signer: Option<&Signer>,
    probes: Option<(&str, &HashMap<String, Vec<u8>>)>,
) -> Result<Dist, ReleaseError> {
    std::fs::create_dir_all(dist).map_err(io(dist))?;
    let work = tempfile::Builder::new()
        .prefix(".guix-matrix-release-")
        .tempdir_in(dist)
        .map_err(io(dist))?;
    let blobs = work.path().join("oci/blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(io(&blobs))?;
    // Platforms at once (each a `docker save`, a gzip and an OCI
    // conversion), as many as there are cores up to three; in the matrix's
    // order in the index.
    let lanes = std::thread::available_parallelism().map_or(2, |n| n.get().min(3));
    let done: Vec<_> = futures::stream::iter(proved)
        .map(|p| one_platform(engine, p, dist, work.path(), &blobs, tag))
        .buffered(lanes)
        .try_collect()
        .await?;
    let mut files = BTreeMap::new();
    if let Some((inputs, probes)) = probes {
        let name = names::probes_archive(tag);
        files.insert(
            name.clone(),
            write_probes(dist, work.path(), &name, inputs, probes)?,
        );
    }
    let mut manifests = vec![];
    for (written, manifest) in done {
        files.extend(written);
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
    let name = names::oci_archive(tag);
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
    // The signature first, then the checksums: SHA256SUMS never stands
    // beside the signature of an earlier release.
    let sums_path = dist.join(trust::SUMS);
    let sig_path = dist.join(trust::SUMS_SIG);
    match signer {
        Some(signer) => {
            let part = work.path().join(trust::SUMS_SIG);
            std::fs::write(&part, signer.sign(sums.as_bytes())).map_err(io(&part))?;
            std::fs::rename(&part, &sig_path).map_err(io(&sig_path))?;
        }
        None => match std::fs::remove_file(&sig_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&sig_path)(e)),
            _ => {}
        },
    }
    let part = work.path().join(trust::SUMS);
    std::fs::write(&part, &sums).map_err(io(&part))?;
    std::fs::rename(&part, &sums_path).map_err(io(&sums_path))?;
    Ok(Dist {
        files,
        sums_digest: Digest::of(sums.as_bytes()),
    })
}
