//! Readers and writers that hash what passes through them (a blob's digest and size, a layer's diff_id).

use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};

/// A writer that hashes what passes through it.
pub(super) struct HashingWriter<W> {
    inner: W,
    sha: Sha256,
    pub(super) len: u64,
}

impl<W: Write> Write for HashingWriter<W> {
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

impl<W> HashingWriter<W> {
    pub(super) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            sha: Sha256::new(),
            len: 0,
        }
    }
    /// The sha256 of what was written, hex.
    pub(super) fn digest(&self) -> String {
        hex::encode(self.sha.clone().finalize())
    }
}

/// A reader that hashes what passes through it.
pub(super) struct HashingReader<R> {
    inner: R,
    sha: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }
}

impl<R> HashingReader<R> {
    pub(super) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            sha: Sha256::new(),
        }
    }
    /// The sha256 of what was read, hex.
    pub(super) fn digest(&self) -> String {
        hex::encode(self.sha.clone().finalize())
    }
}
