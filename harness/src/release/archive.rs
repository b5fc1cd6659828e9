//! The one reading of the archives a release carries: a docker-archive inspected (names, one image) and hashed as it is read, streamed to the engine without its names, and the probes archive.

use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::path::Path;

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

/// The receiving end of a channel as a body stream.
pub(super) fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A writer into a channel (the blocking side of a body stream).
pub(super) struct ChannelWriter(
    pub(super) tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
);

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
pub(super) fn without_names(file: std::fs::File, out: impl std::io::Write) -> std::io::Result<()> {
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
pub(super) struct Hashed<R> {
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
pub(super) type Inspected = (std::fs::File, String, Result<Vec<String>, String>);

pub(super) fn inspect(file: &Path) -> std::io::Result<Inspected> {
    use std::io::Seek;
    let opened = crate::paths::regular(file, MAX_TARBALL)?;
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
pub(super) const MAX_TARBALL: u64 = 8 << 30;

pub(super) fn archive_names<R: std::io::Read>(
    archive: &mut tar::Archive<R>,
) -> Result<Vec<String>, String> {
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
