//! Content digests (`sha256:<hex>`), parsed once and trusted afterwards, plus a hashing writer.

use std::cmp::Ordering;
use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use oci_spec::image::Sha256Digest;
use sha2::{Digest as _, Sha256};

/// A validated `sha256:<64 lowercase hex>` digest: oci-spec's [`Sha256Digest`] behind our own messages.
/// Other algorithms are refused at parse time, so every digest the store holds can be verified.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    sha256: Sha256Digest,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error(
        "invalid digest {}: expected sha256: followed by 64 lowercase hex characters",
        crate::text::quote(.0)
    )]
    Malformed(String),
    #[error("unsupported digest algorithm in {}: only sha256 is supported", crate::text::quote(.0))]
    UnsupportedAlgorithm(String),
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::finished(Sha256::digest(bytes).as_slice())
    }

    /// The digest a hasher computed (32 bytes).
    fn finished(sha256: &[u8]) -> Digest {
        let sha256 = hex::encode(sha256)
            .parse()
            .expect("hex::encode writes lowercase hex");
        Digest { sha256 }
    }

    /// The 64 hex characters, without the algorithm prefix: the file name in the blob store.
    pub fn hex(&self) -> &str {
        self.sha256.digest()
    }

    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Digest, DigestError> {
        let Some((algorithm, hex)) = s.split_once(':') else {
            return Err(DigestError::Malformed(s.to_string()));
        };
        if algorithm != "sha256" {
            return Err(DigestError::UnsupportedAlgorithm(s.to_string()));
        }
        let sha256 = hex
            .parse()
            .map_err(|_| DigestError::Malformed(s.to_string()))?;
        Ok(Digest { sha256 })
    }
}

impl From<Digest> for oci_spec::image::Digest {
    fn from(digest: Digest) -> oci_spec::image::Digest {
        digest.sha256.into()
    }
}

impl Ord for Digest {
    fn cmp(&self, other: &Digest) -> Ordering {
        self.hex().cmp(other.hex())
    }
}

impl PartialOrd for Digest {
    fn partial_cmp(&self, other: &Digest) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest(sha256:{})", self.hex())
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A writer that hashes and counts everything passing through it to the inner writer.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// The digest of all bytes written so far, and the inner writer.
    pub fn finish(self) -> (Digest, W) {
        (
            Digest::finished(self.hasher.finalize().as_slice()),
            self.inner,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: io::Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            read: 0,
        }
    }

    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// The digest of all bytes read so far, and the inner reader.
    pub fn finish(self) -> (Digest, R) {
        (
            Digest::finished(self.hasher.finalize().as_slice()),
            self.inner,
        )
    }
}

impl<R: io::Read> io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_sha256() {
        let s = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let d: Digest = s.parse().unwrap();
        assert_eq!(d.to_string(), s);
        assert_eq!(d, Digest::of(b""));
    }

    #[test]
    fn rejects_bad_digests() {
        assert!(matches!(
            "sha512:abcd".parse::<Digest>(),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
        assert!(matches!(
            "sha256:ABCD".parse::<Digest>(),
            Err(DigestError::Malformed(_))
        ));
        assert!(matches!(
            "nonsense".parse::<Digest>(),
            Err(DigestError::Malformed(_))
        ));
        let upper = format!("sha256:{}", "A".repeat(64));
        assert!(upper.parse::<Digest>().is_err());
        let traversal = format!("sha256:../../{}", "a".repeat(58));
        assert!(traversal.parse::<Digest>().is_err());
        let short = "sha256:abc".parse::<Digest>().unwrap_err();
        assert_eq!(
            short.to_string(),
            "invalid digest \"sha256:abc\": expected sha256: followed by 64 lowercase hex characters"
        );
    }

    #[test]
    fn hashing_writer_matches_of() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        assert_eq!(w.written(), 11);
        let (d, inner) = w.finish();
        assert_eq!(d, Digest::of(b"hello world"));
        assert_eq!(inner, b"hello world");
    }
}
