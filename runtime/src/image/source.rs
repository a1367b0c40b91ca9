//! Where images come from. The store pulls through this trait, so the registry client and an OCI layout
//! directory (used by tests and by `dstack pull oci:DIR`) are interchangeable.

use std::io::Read;

use super::Digest;

/// A manifest or index as fetched, with the media type the source declared and the digest of its bytes.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    /// The digest of `bytes`, already verified against what the source claimed.
    pub digest: Digest,
}

/// Errors any source can report, in terms the user can act on. The registry client maps HTTP statuses
/// and transport failures onto these; `Transient` ones are retried with backoff by the puller.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{what} not found in {location}")]
    NotFound { what: String, location: String },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Tls(String),
    #[error("{what}: digest mismatch (expected {expected}, got {actual})")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{0}")]
    Unsupported(String),
    /// A failure worth retrying: connection reset, timeout, HTTP 5xx, 429.
    #[error("{0}")]
    Transient(String),
    #[error("{0}")]
    Other(String),
}

impl SourceError {
    pub fn is_transient(&self) -> bool {
        matches!(self, SourceError::Transient(_))
    }
}

/// A place manifests and blobs can be read from. Implementations must be usable from several threads at
/// once: the puller downloads layers in parallel.
pub trait Source: Sync {
    /// A human name for messages: `registry.example:5000/team/app`.
    fn describe(&self) -> String;

    /// The manifest or index for `reference`, a tag or a `sha256:` digest. When `reference` is a digest the
    /// implementation verifies the bytes against it.
    fn manifest(&self, reference: &str) -> Result<FetchedManifest, SourceError>;

    /// A stream of the blob's bytes starting at `offset` (to resume an interrupted download). The caller
    /// verifies size and digest; the source only transports.
    fn blob(&self, digest: &Digest, offset: u64) -> Result<Box<dyn Read + Send>, SourceError>;
}
