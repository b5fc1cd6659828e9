//! Docker-archives: an image exported from the engine, written gzip'd and hashed in one pass.

use super::{io, ReleaseError};
use crate::engine::{timeout, Engine, EngineError};
use futures::StreamExt;
use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// A writer that hashes what passes through it.
pub(super) struct Hashing<W> {
    inner: W,
    sha: Sha256,
    pub(super) len: u64,
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
    pub(super) fn new(inner: W) -> Self {
        Hashing {
            inner,
            sha: Sha256::new(),
            len: 0,
        }
    }
    pub(super) fn digest(&self) -> String {
        hex::encode(self.sha.clone().finalize())
    }
}

/// `docker save` of `image`: the raw archive to `raw` (when given), gzip'd
/// to `gz`; returns the sha256 and size of the gzip'd file.
pub(super) async fn export(
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
