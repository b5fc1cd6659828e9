//! The one reading of the archives a release carries: a docker-archive inspected (names, one image) and hashed as it is read, streamed to the engine without its names, and the probes archive.

use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::io::Read as _;
use std::path::Path;

/// The readdir() probes, by file name.
pub type Probes = HashMap<String, Vec<u8>>;

/// The plain files of a probes archive, by file name: directories are
/// passed over; links, devices, names that climb out or that two readers
/// could read otherwise, and a file name given twice are refused.
pub fn probes_of(tar: impl std::io::Read) -> std::io::Result<Probes> {
    let refuse = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
    let mut probes = HashMap::new();
    for entry in tar::Archive::new(tar).entries()? {
        let mut entry = entry?;
        let Some(e) = entry_of(&mut entry, true).map_err(refuse)? else {
            continue;
        };
        let name = e.name.rsplit('/').next().unwrap_or_default().to_string();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut (&mut entry).take(64 << 20), &mut bytes)?;
        if probes.insert(name.clone(), bytes).is_some() {
            return Err(refuse(refused(
                &e.name,
                "gives a file name the archive already gave",
            )));
        }
    }
    Ok(probes)
}

/// Why one entry of an archive is refused: the entry as it was written, and why.
fn refused(raw: &str, why: &str) -> String {
    format!("entry `{raw}` {why}")
}

/// An entry's name as every reader sees it: `./` and repeated `/` dropped,
/// never absolute, never `..` or `.` inside, UTF-8 only; a name that two
/// readers could take for two files is refused.
pub(super) fn normalized(raw: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(raw)
        .map_err(|_| refused(&String::from_utf8_lossy(raw), "is not UTF-8"))?;
    if text.starts_with('/') {
        return Err(refused(text, "is an absolute path"));
    }
    if text.contains('\0') || text.contains('\\') {
        return Err(refused(text, "has a NUL or a backslash in its name"));
    }
    let mut parts = vec![];
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(refused(text, "climbs out of the archive (`..`)")),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(refused(text, "has no name"));
    }
    Ok(parts.join("/"))
}

/// One entry of an archive, read once: its normalized name and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) name: String,
    pub(super) size: u64,
}

/// Reads one entry's header: a plain file (or, where `dirs`, a directory)
/// under a name that every reader takes alike; links, devices, pipes and
/// names another reader could read otherwise (PAX or GNU long names) are refused.
fn entry_of<R: std::io::Read>(
    entry: &mut tar::Entry<R>,
    dirs: bool,
) -> Result<Option<Entry>, String> {
    let raw = entry.path_bytes().into_owned();
    let shown = String::from_utf8_lossy(&raw).into_owned();
    if raw != entry.header().path_bytes().as_ref() {
        return Err(refused(
            &shown,
            "has a long-name extension (a reader may see another name)",
        ));
    }
    if entry.pax_extensions().map_err(|e| e.to_string())?.is_some() {
        return Err(refused(
            &shown,
            "carries PAX extensions (a reader may see another name)",
        ));
    }
    let name = normalized(&raw)?;
    match entry.header().entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous => Ok(Some(Entry {
            name,
            size: entry.size(),
        })),
        tar::EntryType::Directory if dirs => Ok(None),
        tar::EntryType::Symlink | tar::EntryType::Link => Err(refused(
            &shown,
            "is a link; a release archive holds plain files only",
        )),
        other => Err(refused(
            &shown,
            &format!("is a {other:?} entry; a release archive holds plain files only"),
        )),
    }
}

/// Whether `name` belongs to an image tarball's layout (an OCI image
/// layout with docker's manifest.json beside it, as `release` writes it).
fn in_layout(name: &str) -> bool {
    if matches!(name, "manifest.json" | "index.json" | "oci-layout") {
        return true;
    }
    name.strip_prefix("blobs/sha256/").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

/// What one pass over an image tarball found: every entry in order, the
/// manifest.json it holds, and the names that manifest gives.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    pub(super) entries: Vec<Entry>,
    /// manifest.json's bytes, as inspected (what the engine is given,
    /// without names, is made from these).
    manifest: Vec<u8>,
    /// The names its images carry (RepoTags), one entry per image.
    pub(super) names: Vec<String>,
}

/// Reads an image tarball entry by entry: every name in the layout, once;
/// manifest.json small and naming only blobs the archive holds.
pub(super) fn read_layout<R: std::io::Read>(
    archive: &mut tar::Archive<R>,
) -> Result<Layout, String> {
    use std::io::Read;
    let mut entries: Vec<Entry> = vec![];
    let mut manifest = None;
    let not_tar = |e: std::io::Error| format!("not a tar archive: {e}");
    for entry in archive.entries().map_err(not_tar)? {
        let mut entry = entry.map_err(not_tar)?;
        let Some(e) = entry_of(&mut entry, false)? else {
            continue;
        };
        if !in_layout(&e.name) {
            return Err(refused(&e.name, "is outside the image layout (manifest.json, index.json, oci-layout, blobs/sha256/…)"));
        }
        if entries.iter().any(|seen| seen.name == e.name) {
            return Err(refused(
                &e.name,
                "appears twice (once its name is normalized)",
            ));
        }
        if e.name == "manifest.json" {
            if e.size > 1 << 20 {
                return Err(refused(&e.name, "is larger than 1 MiB"));
            }
            let mut bytes = vec![];
            entry.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
            manifest = Some(bytes);
        }
        entries.push(e);
    }
    let manifest = manifest.ok_or("it has no manifest.json")?;
    let images: Vec<serde_json::Value> = serde_json::from_slice(&manifest)
        .map_err(|e| format!("its manifest.json is not a docker-archive's: {e}"))?;
    let mut names = vec![];
    for image in &images {
        let files = std::iter::once(&image["Config"])
            .chain(image["Layers"].as_array().into_iter().flatten());
        for file in files {
            let file = file
                .as_str()
                .ok_or("its manifest.json names a file that is not a string")?;
            let file = normalized(file.as_bytes())?;
            if !file.starts_with("blobs/sha256/") || !entries.iter().any(|e| e.name == file) {
                return Err(format!(
                    "its manifest.json names `{file}`, which is not a blob of the archive"
                ));
            }
        }
        let tags = image["RepoTags"].as_array().cloned().unwrap_or_default();
        if tags.is_empty() {
            names.push("(an image without a name)".into());
        }
        names.extend(tags.iter().map(|t| t.as_str().unwrap_or("?").to_string()));
    }
    Ok(Layout {
        entries,
        manifest,
        names,
    })
}

/// A fresh header for a plain file of `size` bytes: nothing of the
/// archive's own header (type, owner, mode, times, extensions) passes on.
fn plain_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// The image tarball `file`, inspected as `layout`, written to `out` from
/// what was inspected: the same entries in the same order under their
/// normalized names and fresh headers, manifest.json from the inspected
/// bytes without names (RepoTags emptied), `index.json` and `oci-layout`
/// left out so that every engine loads it through manifest.json, and each
/// blob checked against its digest as it streams (a file changed since it
/// was inspected ends the stream before the archive does: nothing loads).
pub(super) fn without_names(
    file: std::fs::File,
    layout: &Layout,
    out: impl std::io::Write,
) -> std::io::Result<()> {
    let changed = |why: String| {
        std::io::Error::other(format!("the tarball changed since it was inspected: {why}"))
    };
    let mut archive = tar::Archive::new(std::io::BufReader::with_capacity(1 << 20, file));
    let mut builder = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, out));
    let mut want = layout.entries.iter();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let Some(e) = entry_of(&mut entry, false).map_err(changed)? else {
            continue;
        };
        if want.next() != Some(&e) {
            return Err(changed(format!(
                "entry `{}` is not the one inspected",
                e.name
            )));
        }
        match e.name.as_str() {
            "index.json" | "oci-layout" => continue,
            "manifest.json" => {
                let mut images: Vec<serde_json::Value> =
                    serde_json::from_slice(&layout.manifest).map_err(std::io::Error::other)?;
                for image in &mut images {
                    image["RepoTags"] = serde_json::Value::Null;
                }
                let bytes = serde_json::to_vec(&images).map_err(std::io::Error::other)?;
                builder.append_data(
                    &mut plain_header(bytes.len() as u64),
                    &e.name,
                    bytes.as_slice(),
                )?;
            }
            blob => {
                let mut hashed = Hashed {
                    inner: &mut entry,
                    sha: Sha256::new(),
                };
                builder.append_data(&mut plain_header(e.size), blob, &mut hashed)?;
                let have = hex::encode(hashed.sha.finalize());
                if !blob.ends_with(&have) {
                    return Err(changed(format!("{blob} holds bytes of sha256 {have}")));
                }
            }
        }
    }
    if want.next().is_some() {
        return Err(changed("it ends before the entries inspected".into()));
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

/// One pass over a release tarball: the file (rewound), its sha256, and
/// its layout — or why it is not an image tarball of a release.
pub(super) type Inspected = (std::fs::File, String, Result<Layout, String>);

/// Hashes and reads a release tarball in one pass (see [`Inspected`]).
pub(super) fn inspect(file: &Path) -> std::io::Result<Inspected> {
    use std::io::Seek;
    let opened = crate::paths::regular(file, MAX_TARBALL)?;
    let mut hashed = Hashed {
        inner: std::io::BufReader::new(opened.try_clone()?),
        sha: Sha256::new(),
    };
    let layout = {
        let mut archive = tar::Archive::new(&mut hashed);
        read_layout(&mut archive)
    };
    // The rest of the file (after the archive's end, or an error) is hashed too.
    std::io::copy(&mut hashed, &mut std::io::sink())?;
    let mut opened = opened;
    opened.rewind()?;
    Ok((opened, hex::encode(hashed.sha.finalize()), layout))
}

/// The largest release tarball read (an image is about 1 GiB uncompressed).
pub(super) const MAX_TARBALL: u64 = 8 << 30;

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    /// `blobs/sha256/<sha256 of bytes>`.
    fn blob(bytes: &[u8]) -> String {
        format!("blobs/sha256/{}", hex::encode(Sha256::digest(bytes)))
    }

    /// A tar of `entries`, each written with `kind` (and `link` for links),
    /// the name set raw in the header (no normalization by the writer).
    fn tar_of(entries: &[(&str, &[u8], tar::EntryType)]) -> Vec<u8> {
        let mut tar = tar::Builder::new(vec![]);
        for (path, bytes, kind) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(*kind);
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            if kind.is_symlink() || kind.is_hard_link() {
                h.set_link_name("manifest.json").unwrap();
                h.set_size(0);
            }
            h.set_cksum();
            tar.append(&h, if kind.is_file() { *bytes } else { &[][..] })
                .unwrap();
        }
        tar.into_inner().unwrap()
    }

    /// An image tarball as `release` writes it, plus `extra` entries.
    fn image(extra: &[(&str, &[u8], tar::EntryType)]) -> Vec<u8> {
        let (config, layer) = (b"{}".as_slice(), b"layer bytes".as_slice());
        let manifest = format!(
            r#"[{{"Config":"{}","RepoTags":["guix-matrix:amd64"],"Layers":["{}"]}}]"#,
            blob(config),
            blob(layer)
        );
        let (c, l) = (blob(config), blob(layer));
        let mut entries = vec![
            (
                "oci-layout",
                br#"{"imageLayoutVersion":"1.0.0"}"#.as_slice(),
                tar::EntryType::Regular,
            ),
            (
                "index.json",
                br#"{"manifests":[]}"#.as_slice(),
                tar::EntryType::Regular,
            ),
            (
                "manifest.json",
                manifest.as_bytes(),
                tar::EntryType::Regular,
            ),
            (c.as_str(), config, tar::EntryType::Regular),
            (l.as_str(), layer, tar::EntryType::Regular),
        ];
        entries.extend_from_slice(extra);
        tar_of(&entries)
    }

    fn layout(bytes: &[u8]) -> Result<Layout, String> {
        read_layout(&mut tar::Archive::new(bytes))
    }

    fn file_of(bytes: &[u8]) -> std::fs::File {
        use std::io::{Seek, Write};
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f.rewind().unwrap();
        f
    }

    #[test]
    fn a_load_names_nothing_and_is_written_from_what_was_inspected() {
        let bytes = image(&[]);
        let l = layout(&bytes).unwrap();
        assert_eq!(l.names, ["guix-matrix:amd64"]);
        let mut out = vec![];
        without_names(file_of(&bytes), &l, &mut out).unwrap();
        let mut seen = std::collections::BTreeMap::new();
        for e in tar::Archive::new(out.as_slice()).entries().unwrap() {
            let mut e = e.unwrap();
            assert_eq!(e.header().mode().unwrap(), 0o644);
            let mut b = vec![];
            e.read_to_end(&mut b).unwrap();
            seen.insert(e.path().unwrap().display().to_string(), b);
        }
        let names: Vec<_> = seen.keys().cloned().collect();
        assert_eq!(
            names,
            [blob(b"layer bytes"), blob(b"{}"), "manifest.json".into()]
        );
        let m: serde_json::Value = serde_json::from_slice(&seen["manifest.json"]).unwrap();
        assert_eq!(m[0]["RepoTags"], serde_json::Value::Null);
    }

    #[test]
    fn names_that_two_readers_could_read_apart_are_refused() {
        for (name, says) in [
            ("./manifest.json", "appears twice"),
            ("blobs//sha256/../../manifest.json", "climbs out"),
            ("/manifest.json", "absolute path"),
            ("repositories", "outside the image layout"),
            (
                &format!("blobs/sha256/{A}/x")[..],
                "outside the image layout",
            ),
        ] {
            let e = layout(&image(&[(name, b"[]", tar::EntryType::Regular)])).unwrap_err();
            assert!(e.contains(says), "{name}: {e}");
            assert!(e.contains("entry `"), "{name}: the entry is named: {e}");
        }
    }

    #[test]
    fn links_devices_and_pipes_are_refused() {
        for kind in [
            tar::EntryType::Symlink,
            tar::EntryType::Link,
            tar::EntryType::Char,
            tar::EntryType::Fifo,
            tar::EntryType::Directory,
        ] {
            let name = format!("blobs/sha256/{A}");
            let e = layout(&image(&[(&name, b"", kind)])).unwrap_err();
            assert!(
                e.contains(&name) && e.contains("plain files only"),
                "{kind:?}: {e}"
            );
        }
    }

    #[test]
    fn a_manifest_naming_what_the_archive_lacks_is_refused() {
        let manifest =
            format!(r#"[{{"Config":"blobs/sha256/{A}","RepoTags":["x:y"],"Layers":[]}}]"#);
        let bytes = tar_of(&[(
            "manifest.json",
            manifest.as_bytes(),
            tar::EntryType::Regular,
        )]);
        let e = layout(&bytes).unwrap_err();
        assert!(e.contains("not a blob of the archive"), "{e}");
    }

    #[test]
    fn a_tarball_changed_after_inspection_is_not_loaded() {
        let bytes = image(&[]);
        let l = layout(&bytes).unwrap();
        // The same entries, one blob's bytes swapped for others of its size.
        let changed = String::from_utf8_lossy(&bytes).replace("layer bytes", "LAYER BYTES");
        let mut out = vec![];
        let e = without_names(file_of(changed.as_bytes()), &l, &mut out).unwrap_err();
        assert!(
            e.to_string().contains("changed since it was inspected"),
            "{e}"
        );
    }

    #[test]
    fn a_probes_archive_holds_plain_files_once() {
        let ok = tar_of(&[
            ("probes/", b"", tar::EntryType::Directory),
            ("probes/gcc", b"elf", tar::EntryType::Regular),
        ]);
        assert_eq!(probes_of(ok.as_slice()).unwrap()["gcc"], b"elf");
        for (entries, says) in [
            (
                vec![("probes/gcc", &b""[..], tar::EntryType::Symlink)],
                "is a link",
            ),
            (
                vec![("../gcc", &b"x"[..], tar::EntryType::Regular)],
                "climbs out",
            ),
            (
                vec![
                    ("a/gcc", &b"x"[..], tar::EntryType::Regular),
                    ("b/gcc", &b"y"[..], tar::EntryType::Regular),
                ],
                "already gave",
            ),
        ] {
            let e = probes_of(tar_of(&entries).as_slice())
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{e}");
        }
    }
}
