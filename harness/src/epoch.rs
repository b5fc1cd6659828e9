//! Same inputs, same bits: an image archive with the times of its build taken out — every layer entry's time clamped to the image's epoch (in place: each layer keeps its size) and the config's build times, build container and intermediate image IDs and engine version replaced.
//!
//! The classic builder and `docker commit` stamp a layer's new files and
//! every directory they touch with the time of the build, and the config
//! with its time and the build containers' IDs. As BuildKit's
//! `rewrite-timestamp` and debuerreotype do, times later than the epoch
//! become the epoch; earlier ones (a Debian package's files) are content.
//! Hand-written rather than the `tar` crate's writer: rewriting the headers
//! in place keeps every byte but the times, so the layer keeps its size,
//! its order, its PAX records (xattrs, long names) and whatever header
//! format the engine chose, and streams through without a copy on disk.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};

const BLOCK: usize = 512;

/// The time of a tar header (`mtime`, octal or base-256) at its offset.
const MTIME: std::ops::Range<usize> = 136..148;
const CHECKSUM: std::ops::Range<usize> = 148..156;
const SIZE: std::ops::Range<usize> = 124..136;
const TYPEFLAG: usize = 156;

/// What clamping changed in one layer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Clamped {
    /// `sha256:…` of the layer as written (its new diff ID).
    pub diff_id: String,
    /// Entries whose time was later than the epoch.
    pub entries: u64,
}

/// A reader of a layer tar that yields it with every time later than
/// `epoch` set to `epoch`, byte for byte the same length.
pub struct ClampReader<R> {
    inner: R,
    epoch: u64,
    /// Bytes of the current entry's data still to pass through untouched.
    data_left: u64,
    /// A PAX header's records still to read (rewritten before they go out).
    pax_left: Option<u64>,
    out: Vec<u8>,
    pos: usize,
    hash: Sha256,
    clamped: u64,
    done: bool,
}

impl<R: Read> ClampReader<R> {
    /// Clamps the layer `inner` to `epoch` (seconds since 1970).
    pub fn new(inner: R, epoch: u64) -> Self {
        ClampReader {
            inner,
            epoch,
            data_left: 0,
            pax_left: None,
            out: Vec::with_capacity(1 << 16),
            pos: 0,
            hash: Sha256::new(),
            clamped: 0,
            done: false,
        }
    }

    /// The diff ID of what was read and how many entries changed.
    pub fn finish(self) -> Clamped {
        Clamped {
            diff_id: format!("sha256:{}", hex::encode(self.hash.finalize())),
            entries: self.clamped,
        }
    }

    /// Reads the next piece of the layer into `out`, rewritten.
    fn refill(&mut self) -> std::io::Result<()> {
        self.out.clear();
        self.pos = 0;
        if self.data_left > 0 {
            let n = self.data_left.min(1 << 16) as usize;
            self.out.resize(n, 0);
            self.inner.read_exact(&mut self.out)?;
            self.data_left -= n as u64;
        } else if let Some(len) = self.pax_left.take() {
            let padded = len.div_ceil(BLOCK as u64) * BLOCK as u64;
            self.out.resize(padded as usize, 0);
            self.inner.read_exact(&mut self.out)?;
            let records = &mut self.out[..len as usize];
            if clamp_pax(records, self.epoch) {
                self.clamped += 1;
            }
        } else {
            let mut block = [0u8; BLOCK];
            let n = read_full(&mut self.inner, &mut block)?;
            if n == 0 {
                self.done = true;
                return Ok(());
            }
            if n < BLOCK || block.iter().all(|&b| b == 0) {
                // The end-of-archive blocks (and any padding after them).
                self.out.extend_from_slice(&block[..n]);
                self.hash.update(&self.out);
                return Ok(());
            }
            let size = octal(&block[SIZE]).ok_or_else(|| bad("a header with no size"))?;
            let padded = size.div_ceil(BLOCK as u64) * BLOCK as u64;
            match block[TYPEFLAG] {
                b'x' | b'g' => self.pax_left = Some(size),
                _ => self.data_left = padded,
            }
            if clamp_header(&mut block, self.epoch) {
                self.clamped += 1;
            }
            self.out.extend_from_slice(&block);
        }
        self.hash.update(&self.out);
        Ok(())
    }
}

impl<R: Read> Read for ClampReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.out.len() {
            if self.done {
                return Ok(0);
            }
            self.refill()?;
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("the layer is not a tar archive: {what}"),
    )
}

/// Reads until `buf` is full or the reader ends: how much it read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A numeric header field: octal text, or base-256 when its first bit is set.
fn octal(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        return Some(
            field[1..]
                .iter()
                .fold(u64::from(field[0] & 0x7f), |n, &b| (n << 8) | u64::from(b)),
        );
    }
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

/// Sets the header's time to `epoch` when later, with a new checksum:
/// whether it changed.
fn clamp_header(block: &mut [u8; BLOCK], epoch: u64) -> bool {
    match octal(&block[MTIME]) {
        Some(t) if t > epoch => {
            block[MTIME].copy_from_slice(format!("{epoch:011o}\0").as_bytes());
            block[CHECKSUM].fill(b' ');
            let sum: u64 = block.iter().map(|&b| u64::from(b)).sum();
            block[CHECKSUM].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
            true
        }
        _ => false,
    }
}

/// Rewrites the `mtime`, `atime` and `ctime` records of PAX extended
/// header `records` later than `epoch` to `epoch`, each record keeping its
/// length (the value padded with a zero fraction): whether one changed.
fn clamp_pax(records: &mut [u8], epoch: u64) -> bool {
    let mut changed = false;
    let mut at = 0;
    while at < records.len() {
        let Some(space) = records[at..].iter().position(|&b| b == b' ') else {
            break;
        };
        let Some(len) = std::str::from_utf8(&records[at..at + space])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        else {
            break;
        };
        if len == 0 || at + len > records.len() {
            break;
        }
        let record = &mut records[at + space + 1..at + len - 1];
        if let Some(eq) = record.iter().position(|&b| b == b'=') {
            let (key, value) = record.split_at_mut(eq);
            let value = &mut value[1..];
            if matches!(&*key, b"mtime" | b"atime" | b"ctime") && later(value, epoch) {
                let whole = epoch.to_string();
                if whole.len() <= value.len() {
                    let mut text = whole.into_bytes();
                    if value.len() > text.len() {
                        text.push(b'.');
                        text.resize(value.len(), b'0');
                    }
                    value.copy_from_slice(&text);
                    changed = true;
                }
            }
        }
        at += len;
    }
    changed
}

/// Whether a PAX time (`seconds[.fraction]`) is later than `epoch`.
fn later(value: &[u8], epoch: u64) -> bool {
    let text = std::str::from_utf8(value).unwrap_or("");
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    match whole.parse::<i64>() {
        Ok(s) if s > epoch as i64 => true,
        Ok(s) if s == epoch as i64 => fraction.bytes().any(|b| b != b'0'),
        _ => false,
    }
}

/// An image's config with its build times set to `epoch` (RFC 3339
/// `created`), the build containers' IDs, host names and the engine
/// version taken out, `diff_ids` as its layers now are, the labels `drop`
/// (a build's own facts) taken out and the label `mark` saying it was settled.
pub fn settle_config(
    config: &serde_json::Value,
    diff_ids: &[String],
    created: &str,
    (mark, drop): ((&str, &str), &[&str]),
) -> serde_json::Value {
    let mut c = config.clone();
    if !c["config"].is_object() {
        c["config"] = serde_json::json!({});
    }
    if !c["config"]["Labels"].is_object() {
        c["config"]["Labels"] = serde_json::json!({});
    }
    if let Some(labels) = c["config"]["Labels"].as_object_mut() {
        for label in drop {
            labels.remove(*label);
        }
    }
    c["config"]["Labels"][mark.0] = mark.1.into();
    c["created"] = created.into();
    if let Some(history) = c["history"].as_array_mut() {
        for h in history {
            if h.get("created").is_some() {
                h["created"] = created.into();
            }
        }
    }
    if let Some(obj) = c.as_object_mut() {
        obj.remove("container");
        obj.remove("docker_version");
        obj.remove("container_config");
    }
    // The host name is the build container's; `Image`, the builder's
    // intermediate image the last step ran on.
    for field in ["Hostname", "Image"] {
        if c["config"][field].is_string() {
            c["config"][field] = "".into();
        }
    }
    c["rootfs"]["diff_ids"] = diff_ids.to_vec().into();
    c
}

/// The newest entry time in the layers of a `docker save` archive (a
/// base's: an image is settled to no earlier time than its base's files,
/// so settling never changes its base's layers).
pub fn newest_time(input: impl Read) -> std::io::Result<u64> {
    let mut newest = 0;
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let mut head = vec![];
        (&mut entry).take(BLOCK as u64).read_to_end(&mut head)?;
        if matches!(head.first(), Some(b'{' | b'[')) || head.starts_with(&[0x1f, 0x8b]) {
            continue;
        }
        if path.ends_with("layer.tar") || path.starts_with("blobs/") {
            let mut layer = tar::Archive::new(head.as_slice().chain(&mut entry));
            for e in layer.entries()? {
                newest = newest.max(e?.header().mtime().unwrap_or(0));
            }
            std::io::copy(&mut entry, &mut std::io::sink())?;
        }
    }
    Ok(newest)
}

/// Where a link entry of an archive points, as a path in the archive
/// (a symlink's target is relative to its own folder); None: no link.
pub fn link_target<R: Read>(entry: &tar::Entry<R>, path: &str) -> std::io::Result<Option<String>> {
    let kind = entry.header().entry_type();
    if !(kind.is_symlink() || kind.is_hard_link()) {
        return Ok(None);
    }
    let Some(target) = entry.link_name()? else {
        return Ok(None);
    };
    let joined = match kind.is_symlink() {
        true => std::path::Path::new(path)
            .parent()
            .unwrap_or(std::path::Path::new(""))
            .join(target),
        false => target.into_owned(),
    };
    let mut parts: Vec<String> = vec![];
    for c in joined.components() {
        match c {
            std::path::Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            std::path::Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    Ok(Some(parts.join("/")))
}

/// What settling an archive of one image made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// `sha256:…` of the new config: the image ID the engine will show.
    pub id: String,
    /// Each layer, bottom first: its new diff ID and entries clamped.
    pub layers: Vec<Clamped>,
}

/// Reads a `docker save` archive of one image and writes the archive of
/// the same image settled to `epoch`, tagged `tag`, labelled `mark` and
/// without the labels `drop`, for `docker load`.
pub fn settle_archive(
    input: impl Read,
    output: impl Write,
    epoch: u64,
    created: &str,
    tag: &str,
    labels: ((&str, &str), &[&str]),
) -> std::io::Result<Settled> {
    let mut out = tar::Builder::new(output);
    let mut small: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    // Each layer by its path in the input: its name in the output, clamped.
    let mut layers: BTreeMap<String, (String, Clamped)> = BTreeMap::new();
    // `docker save` writes a layer that two images' chains share once, and
    // a link to it where it comes again.
    let mut links: BTreeMap<String, String> = BTreeMap::new();
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        if let Some(target) = link_target(&entry, &path)? {
            links.insert(path, target);
            continue;
        }
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let mut head = vec![];
        (&mut entry).take(BLOCK as u64).read_to_end(&mut head)?;
        if matches!(head.first(), Some(b'{' | b'[')) && entry.size() <= 1 << 20 {
            entry.read_to_end(&mut head)?;
            small.insert(path, head);
        } else if path.ends_with("layer.tar") || path.starts_with("blobs/") {
            if head.starts_with(&[0x1f, 0x8b]) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{path} is a compressed layer: this engine's `docker save` does not write tar layers (use the classic image store)"),
                ));
            }
            let mut header = tar::Header::new_ustar();
            header.set_size(entry.size());
            header.set_mode(0o644);
            header.set_mtime(epoch);
            let name = format!("{}/layer.tar", layers.len());
            let mut reader = ClampReader::new(head.as_slice().chain(&mut entry), epoch);
            out.append_data(&mut header, &name, &mut reader)?;
            layers.insert(path, (name, reader.finish()));
        }
    }
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let manifest: Vec<serde_json::Value> = serde_json::from_slice(
        small
            .get("manifest.json")
            .ok_or_else(|| invalid("the archive has no manifest.json".into()))?,
    )?;
    let [image] = manifest.as_slice() else {
        return Err(invalid(format!(
            "the archive holds {} images, not one",
            manifest.len()
        )));
    };
    let config_path = image["Config"].as_str().unwrap_or_default();
    let config: serde_json::Value = serde_json::from_slice(
        small
            .get(config_path)
            .ok_or_else(|| invalid(format!("the archive has no config {config_path}")))?,
    )?;
    let order: Vec<&str> = image["Layers"]
        .as_array()
        .map(|l| l.iter().filter_map(|p| p.as_str()).collect())
        .unwrap_or_default();
    let mut settled = vec![];
    let mut names = vec![];
    for path in order {
        let path = links.get(path).map_or(path, String::as_str);
        let (name, clamped) = layers
            .get(path)
            .ok_or_else(|| invalid(format!("the archive has no layer {path}")))?;
        names.push(name.clone());
        settled.push(clamped.clone());
    }
    let ids: Vec<String> = settled.iter().map(|c| c.diff_id.clone()).collect();
    let config = serde_json::to_vec(&settle_config(&config, &ids, created, labels))?;
    let id = format!("sha256:{}", hex::encode(Sha256::digest(&config)));
    let config_name = format!("{}.json", &id["sha256:".len()..]);
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": config_name,
        "RepoTags": [tag],
        "Layers": names,
    }]))?;
    for (name, bytes) in [
        (config_name.as_str(), &config),
        ("manifest.json", &manifest),
    ] {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(epoch);
        out.append_data(&mut header, name, bytes.as_slice())?;
    }
    out.into_inner()?.flush()?;
    Ok(Settled {
        id,
        layers: settled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPOCH: u64 = 1_700_000_000;

    /// A layer with a file from before the epoch, one from the build, and
    /// one whose PAX records carry a fractional build time and an xattr.
    fn layer() -> Vec<u8> {
        let mut b = tar::Builder::new(vec![]);
        for (name, mtime) in [("etc/old", EPOCH - 5), ("etc/new", EPOCH + 99_999)] {
            let mut h = tar::Header::new_gnu();
            h.set_size(3);
            h.set_mode(0o644);
            h.set_mtime(mtime);
            b.append_data(&mut h, name, b"abc".as_slice()).unwrap();
        }
        b.append_pax_extensions([
            ("mtime", b"1800000000.123456789".as_slice()),
            ("atime", b"1800000001".as_slice()),
            ("SCHILY.xattr.user.k", b"v".as_slice()),
        ])
        .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(1);
        h.set_mode(0o755);
        h.set_mtime(1_800_000_000);
        b.append_data(&mut h, "usr/bin/x", b"x".as_slice()).unwrap();
        b.into_inner().unwrap()
    }

    fn clamp(bytes: &[u8]) -> (Vec<u8>, Clamped) {
        let mut r = ClampReader::new(bytes, EPOCH);
        let mut out = vec![];
        r.read_to_end(&mut out).unwrap();
        (out, r.finish())
    }

    /// Build times become the epoch, earlier ones stay, every other byte
    /// (sizes, PAX records, contents) is kept, and the diff ID is the output's.
    #[test]
    fn times_after_the_epoch_become_the_epoch_and_nothing_else_moves() {
        let input = layer();
        let (out, clamped) = clamp(&input);
        assert_eq!(out.len(), input.len());
        assert_eq!(clamped.entries, 3, "two headers and one PAX record set");
        assert_eq!(
            clamped.diff_id,
            format!("sha256:{}", hex::encode(Sha256::digest(&out)))
        );
        let mut a = tar::Archive::new(out.as_slice());
        let mut seen = vec![];
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let pax: Vec<(String, String)> = e
                .pax_extensions()
                .unwrap()
                .into_iter()
                .flatten()
                .map(|x| x.unwrap())
                .map(|x| (x.key().unwrap().to_string(), x.value().unwrap().to_string()))
                .collect();
            let mut body = String::new();
            e.read_to_string(&mut body).unwrap();
            seen.push((name, e.header().mtime().unwrap(), pax, body));
        }
        assert_eq!(seen[0].1, EPOCH - 5);
        assert_eq!(seen[1].1, EPOCH);
        assert_eq!(seen[2].1, EPOCH);
        assert_eq!(
            seen[2].2,
            [
                ("mtime".to_string(), "1700000000.000000000".to_string()),
                ("atime".to_string(), "1700000000".to_string()),
                ("SCHILY.xattr.user.k".to_string(), "v".to_string())
            ]
        );
        assert_eq!(seen[2].3, "x");
        // Clamped twice is clamped once.
        assert_eq!(clamp(&out).0, out);
    }

    /// The newest time of a saved image is its newest layer entry's.
    #[test]
    fn the_newest_time_of_an_archive_is_its_newest_entrys() {
        let l = layer();
        let mut b = tar::Builder::new(vec![]);
        let mut h = tar::Header::new_ustar();
        h.set_size(l.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, "aa/layer.tar", l.as_slice()).unwrap();
        let archive = b.into_inner().unwrap();
        assert_eq!(newest_time(archive.as_slice()).unwrap(), 1_800_000_000);
    }

    /// A layer already before the epoch comes out as it went in.
    #[test]
    fn a_layer_before_the_epoch_is_unchanged() {
        let mut b = tar::Builder::new(vec![]);
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mtime(1);
        b.append_data(&mut h, "a", std::io::empty()).unwrap();
        let input = b.into_inner().unwrap();
        let (out, clamped) = clamp(&input);
        assert_eq!(out, input);
        assert_eq!(clamped.entries, 0);
    }

    /// A docker-save archive of one image becomes one with its layers
    /// clamped, the config's times and build IDs out and its diff IDs new.
    #[test]
    fn an_archive_is_settled_into_one_the_engine_loads() {
        let l = layer();
        let diff = format!("sha256:{}", hex::encode(Sha256::digest(&l)));
        let config = serde_json::json!({
            "created": "2026-12-05T10:00:00.123Z",
            "container": "abc123",
            "docker_version": "20.10.24",
            "container_config": {"Hostname": "abc123"},
            "config": {"Hostname": "abc123", "Image": "sha256:77", "Labels": {"k": "v", "run": "vm:1:2"}},
            "history": [{"created": "2026-12-05T10:00:00Z", "created_by": "|1 A=b /bin/sh -c x"}],
            "rootfs": {"type": "layers", "diff_ids": [diff, diff]},
        })
        .to_string();
        let manifest =
            r#"[{"Config":"c.json","RepoTags":["x:y"],"Layers":["aa/layer.tar","bb/layer.tar"]}]"#;
        let mut b = tar::Builder::new(vec![]);
        for (name, bytes) in [
            ("aa/layer.tar", l.as_slice()),
            ("c.json", config.as_bytes()),
            ("manifest.json", manifest.as_bytes()),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, bytes).unwrap();
        }
        // The same layer again, as docker save writes it: a link.
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "bb/layer.tar", "../aa/layer.tar")
            .unwrap();
        let input = b.into_inner().unwrap();
        let mut out = vec![];
        let when = "2023-11-14T22:13:20Z";
        let mark = (("epoch", "1700000000"), ["run"].as_slice());
        let s = settle_archive(input.as_slice(), &mut out, EPOCH, when, "x:settled", mark).unwrap();
        let mut again = vec![];
        let t =
            settle_archive(input.as_slice(), &mut again, EPOCH, when, "x:settled", mark).unwrap();
        assert_eq!(
            (&s, &out),
            (&t, &again),
            "the same archive settles the same"
        );
        let mut files = BTreeMap::new();
        for e in tar::Archive::new(out.as_slice()).entries().unwrap() {
            let mut e = e.unwrap();
            let mut bytes = vec![];
            e.read_to_end(&mut bytes).unwrap();
            files.insert(e.path().unwrap().display().to_string(), bytes);
        }
        let config: serde_json::Value =
            serde_json::from_slice(&files[&format!("{}.json", &s.id[7..])]).unwrap();
        assert_eq!(config["created"], when);
        assert_eq!(config["history"][0]["created"], when);
        // What the classic builder's --cache-from matches a step by.
        assert_eq!(config["history"][0]["created_by"], "|1 A=b /bin/sh -c x");
        assert_eq!(config["config"]["Hostname"], "");
        assert_eq!(config["config"]["Image"], "");
        assert_eq!(config["config"]["Labels"]["k"], "v");
        assert_eq!(config["config"]["Labels"]["epoch"], "1700000000");
        assert!(config["config"]["Labels"].get("run").is_none());
        assert!(config.get("container").is_none() && config.get("docker_version").is_none());
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            s.layers[0].diff_id.as_str()
        );
        assert_ne!(s.layers[0].diff_id, diff);
        let m: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        assert_eq!(m[0]["RepoTags"][0], "x:settled");
        assert!(files.contains_key(m[0]["Layers"][0].as_str().unwrap()));
    }
}
