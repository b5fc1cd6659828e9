//! One `docker save` stream read once: every layer gzip'd into a content-addressed blob as it streams by (in fixed-size blocks, so the same layer is always the same blob), the small entries (manifest.json, configs) kept.

use super::hashing::{HashingReader, HashingWriter};
use oci_spec::image::DescriptorBuilder;
use oci_spec::image::{Descriptor, MediaType};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

/// Entries of an export up to this size are held in memory (manifests,
/// configs, tiny layers); larger ones are layers, gzip'd as they stream by.
pub(super) const SMALL: u64 = 1 << 20;

/// Why an export could not be read.
pub(super) enum Failure {
    Io(PathBuf, std::io::Error),
    Bad(String),
}

pub(super) fn at(path: &Path) -> impl FnOnce(std::io::Error) -> Failure + '_ {
    move |e| Failure::Io(path.to_path_buf(), e)
}

/// One image of a docker-archive's manifest.json.
#[derive(Debug, Clone, serde::Deserialize)]
pub(super) struct ArchiveEntry {
    #[serde(rename = "Config")]
    pub(super) config: String,
    #[serde(rename = "RepoTags", default)]
    pub(super) repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    pub(super) layers: Vec<String>,
}

/// A layer gzip'd into the blobs: its descriptor and its diff_id.
#[derive(Debug, Clone)]
pub(super) struct Layer {
    pub(super) diff_id: String,
    pub(super) blob: Descriptor,
}

/// What one pass over a `docker save` stream left: its manifest.json, the
/// small entries, and the layers already gzip'd into blobs, by path.
#[derive(Debug, Clone)]
pub(super) struct Export {
    pub(super) manifest: Vec<ArchiveEntry>,
    pub(super) small: HashMap<String, Vec<u8>>,
    pub(super) layers: HashMap<String, Layer>,
    links: HashMap<String, String>,
}

impl Export {
    pub(super) fn resolve<'a>(&'a self, path: &'a str) -> &'a str {
        self.links.get(path).map_or(path, String::as_str)
    }
}

pub(super) fn read_export(reader: impl Read, blobs: &Path) -> Result<Export, Failure> {
    let bad = |e: std::io::Error| Failure::Bad(format!("is not a tar archive: {e}"));
    let mut small = HashMap::new();
    let mut layers = HashMap::new();
    let mut links = HashMap::new();
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = clean(&entry.path().map_err(bad)?);
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            if let Some(target) = entry.link_name().map_err(bad)? {
                let target = if kind.is_symlink() {
                    clean(
                        &Path::new(&path)
                            .parent()
                            .unwrap_or(Path::new(""))
                            .join(target),
                    )
                } else {
                    clean(&target)
                };
                links.insert(path, target);
            }
        } else if kind.is_file() && entry.size() <= SMALL {
            let mut bytes = vec![];
            entry.read_to_end(&mut bytes).map_err(bad)?;
            small.insert(path, bytes);
        } else if kind.is_file() {
            layers.insert(path, gzip_layer(&mut entry, blobs)?);
        }
    }
    let manifest = small
        .get("manifest.json")
        .ok_or_else(|| Failure::Bad("has no manifest.json".into()))?;
    let manifest = serde_json::from_slice(manifest)
        .map_err(|e| Failure::Bad(format!("has a manifest.json that is not docker's: {e}")))?;
    Ok(Export {
        manifest,
        small,
        layers,
        links,
    })
}

/// A path inside an archive without `.` and `..`.
fn clean(path: &Path) -> String {
    let mut parts: Vec<String> = vec![];
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.join("/")
}

/// A layer (a tar, or one already gzip'd) as a gzip'd blob, compressed
/// only if it is not: its descriptor and diff_id.
pub(super) fn gzip_layer(layer: &mut impl Read, blobs: &Path) -> Result<Layer, Failure> {
    let mut head = vec![];
    layer.take(2).read_to_end(&mut head).map_err(at(blobs))?;
    let mut layer = head.as_slice().chain(layer);
    // A name of its own: platforms are staged at the same time.
    let tmp = tempfile::NamedTempFile::new_in(blobs).map_err(at(blobs))?;
    let file = std::io::BufWriter::with_capacity(1 << 20, tmp.reopen().map_err(at(blobs))?);
    let (blob, size, diff_id) = if head == [0x1f, 0x8b] {
        let mut out = HashingWriter::new(file);
        std::io::copy(&mut layer, &mut out).map_err(at(tmp.path()))?;
        out.flush().map_err(at(tmp.path()))?;
        let mut unzipped = HashingWriter::new(std::io::sink());
        let written = std::fs::File::open(tmp.path()).map_err(at(tmp.path()))?;
        std::io::copy(
            &mut flate2::read::MultiGzDecoder::new(std::io::BufReader::new(written)),
            &mut unzipped,
        )
        .map_err(|e| Failure::Bad(format!("has a layer that is not gzip: {e}")))?;
        (out.digest(), out.len, unzipped.digest())
    } else {
        let mut tar = HashingReader::new(layer);
        let out = std::sync::Arc::new(std::sync::Mutex::new(HashingWriter::new(file)));
        let mut gz = parallel_gzip(Shared(out.clone())).map_err(at(tmp.path()))?;
        copy_in_blocks(&mut tar, &mut gz).map_err(at(tmp.path()))?;
        gzp::ZWriter::finish(&mut gz)
            .map_err(|e| std::io::Error::other(e.to_string()))
            .map_err(at(tmp.path()))?;
        let mut out = out.lock().expect("blob writer");
        out.flush().map_err(at(tmp.path()))?;
        (out.digest(), out.len, tar.digest())
    };
    let target = blobs.join(&blob);
    tmp.persist(&target)
        .map_err(|e| Failure::Io(target, e.error))?;
    Ok(Layer {
        diff_id: format!("sha256:{diff_id}"),
        blob: descriptor(MediaType::ImageLayerGzip, &blob, size),
    })
}

/// libdeflate's level 7: on a 300 MB slice of the amd64 Guix layer it is
/// 70.70 MB against `gzip -6`'s 71.70 MB (what `docker save | gzip` gives),
/// in 3.0 s of one core, where zlib-rs's level 9 took 11.3 s for 71.08 MB
/// (level 6: 71.24 MB in 2.1 s, too close to gzip -6 to promise it).
const LEVEL: u32 = 7;
/// The block each core compresses: the same layer is cut the same way
/// whatever the number of cores, so it is the same blob everywhere.
const BLOCK: usize = 1 << 20;

/// The parallel gzip writer of a layer.
type Gzip = gzp::par::compress::ParCompress<'static, gzp::deflate::Mgzip, Shared>;

/// A gzip writer that compresses `BLOCK`s on every core (gzp's Mgzip on
/// libdeflate, as `pigz -i` and bgzip do: each block a gzip member of its
/// own, which every gzip reader — Go's, containerd's, `gzip -d` — reads as
/// one stream).
fn parallel_gzip(to: Shared) -> std::io::Result<Gzip> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    gzip_on(to, cores)
}

/// The same on `cores` threads.
fn gzip_on(to: Shared, cores: usize) -> std::io::Result<Gzip> {
    let builder = gzp::par::compress::ParCompressBuilder::<gzp::deflate::Mgzip>::new()
        .compression_level(gzp::Compression::new(LEVEL))
        .buffer_size(BLOCK)
        .and_then(|b| b.num_threads(cores))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(builder.from_writer(to))
}

/// The blob file, written by the compressor's writer thread, read after.
struct Shared(std::sync::Arc<std::sync::Mutex<HashingWriter<std::io::BufWriter<std::fs::File>>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("blob writer").write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().expect("blob writer").flush()
    }
}

/// Copies in blocks of one size whatever sizes the reader gives: the
/// compressor's output depends on how its input is cut, and a layer must
/// gzip to the same bytes (the same digest) every time it is released.
fn copy_in_blocks(from: &mut impl Read, to: &mut impl Write) -> std::io::Result<()> {
    let mut block = vec![0u8; 1 << 20];
    loop {
        let mut filled = 0;
        while filled < block.len() {
            match from.read(&mut block[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        to.write_all(&block[..filled])?;
        if filled < block.len() {
            return Ok(());
        }
    }
}

/// A descriptor of `size` bytes whose sha256 is `sha256` (hex).
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that gives at most `cut` bytes a time.
    struct Cut<'a>(&'a [u8], usize);

    impl Read for Cut<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// The layer as gzip members any reader takes back whole, in order,
    /// the same bytes on one core or four.
    #[test]
    fn a_layer_is_one_gzip_stream_of_the_same_bytes_on_any_number_of_cores() {
        let layer: Vec<u8> = (0..5_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8 & 0x3f)
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let gz = |cores: usize| {
            let file = std::fs::File::create(dir.path().join(cores.to_string())).unwrap();
            let out = std::sync::Arc::new(std::sync::Mutex::new(HashingWriter::new(
                std::io::BufWriter::new(file),
            )));
            let mut w = gzip_on(Shared(out.clone()), cores).unwrap();
            copy_in_blocks(&mut layer.as_slice(), &mut w).unwrap();
            gzp::ZWriter::finish(&mut w).unwrap();
            let mut out = out.lock().unwrap();
            out.flush().unwrap();
            std::fs::read(dir.path().join(cores.to_string())).unwrap()
        };
        let (one, four) = (gz(1), gz(4));
        assert_eq!(one, four);
        let mut back = vec![];
        flate2::read::MultiGzDecoder::new(one.as_slice())
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, layer, "the members hold the whole layer, in order");
        let mut fast = vec![];
        let mut enc = flate2::write::GzEncoder::new(&mut fast, flate2::Compression::fast());
        enc.write_all(&layer).unwrap();
        enc.finish().unwrap();
        assert!(one.len() < fast.len(), "level 7 is smaller than level 1");
    }

    /// The same layer, however the export's stream cuts it, is the same blob.
    #[test]
    fn a_layer_gzips_to_the_same_bytes_however_it_arrives() {
        let layer: Vec<u8> = (0..5_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8 & 0x3f)
            .collect();
        let blobs = tempfile::tempdir().unwrap();
        let digests: Vec<String> = [7, 4096, 65_537, 1 << 20, 3 << 20]
            .into_iter()
            .map(|cut| {
                let Ok(l) = gzip_layer(&mut Cut(&layer, cut), blobs.path()) else {
                    panic!("not gzip'd")
                };
                l.blob.digest().to_string()
            })
            .collect();
        assert!(digests.iter().all(|d| *d == digests[0]), "{digests:?}");
    }
}
