//! Streaming SHA-256 helpers: count and hash bytes as they pass through; no I/O of their own.

use sha2::{Digest as _, Sha256};
use std::io::{self, Read, Write};

/// Formats a finished hasher as an OCI digest string (`sha256:<hex>`).
pub(crate) fn digest_string(hasher: Sha256) -> String {
    let bytes = hasher.finalize();
    let mut out = String::with_capacity(7 + bytes.len() * 2);
    out.push_str("sha256:");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// `sha256:<hex>` of an in-memory blob.
pub(crate) fn sha256_of(bytes: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(bytes);
    digest_string(hasher)
}

/// A writer that hashes and counts everything written through it.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// Returns the inner writer, the digest of what passed through, and its length.
    pub(crate) fn finish(self) -> (W, String, u64) {
        (self.inner, digest_string(self.hasher), self.len)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads `reader` to the end, returning its digest and length.
pub(crate) fn hash_reader(mut reader: impl Read) -> io::Result<(String, u64)> {
    let mut sink = HashingWriter::new(io::sink());
    io::copy(&mut reader, &mut sink)?;
    let (_, digest, len) = sink.finish();
    Ok((digest, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input_has_the_well_known_sha256() {
        assert_eq!(
            sha256_of(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn hashing_writer_matches_one_shot_digest_and_counts_bytes() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ")
            .and_then(|()| w.write_all(b"world"))
            .expect("write to Vec");
        let (inner, digest, len) = w.finish();
        assert_eq!(inner, b"hello world");
        assert_eq!(len, 11);
        assert_eq!(digest, sha256_of(b"hello world"));
        assert_eq!(
            hash_reader(&b"hello world"[..]).expect("read slice"),
            (sha256_of(b"hello world"), 11)
        );
    }
}
