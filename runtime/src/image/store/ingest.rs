//! The reading end of a download: bytes come from what an interrupted download left in the ingest file, then
//! from the source, are appended to the ingest file and hashed, and flow on to the decompressor, all in one
//! pass. A broken connection is resumed at the current offset (a Range request) with backoff, invisibly to
//! the reader downstream.

use std::fs::File;
use std::io::{self, Read, Write};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use super::blobs::Ingest;
use crate::image::Digest;
use crate::image::source::SourceError;

/// Opens the blob's stream at an offset.
pub type OpenAt<'a> = dyn Fn(u64) -> Result<Box<dyn Read + Send>, SourceError> + Sync + 'a;

/// Why the download, rather than the data, failed.
#[derive(Debug)]
pub enum IngestFailure {
    /// The source failed and retrying did not help.
    Source(SourceError),
    /// Writing the ingest file failed (a full disk, usually).
    Write(io::Error),
}

/// How many times one blob's stream is reopened after errors, and the first pause.
pub const RETRIES: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

pub struct IngestReader<'a> {
    ingest: Ingest,
    prefix: Option<File>,
    remote: Option<Box<dyn Read + Send>>,
    open: &'a OpenAt<'a>,
    hasher: Sha256,
    count: u64,
    size: u64,
    retries_left: u32,
    backoff: Duration,
    failure: Option<IngestFailure>,
    on_bytes: &'a (dyn Fn(u64) + Sync),
}

impl<'a> IngestReader<'a> {
    /// Reads `size` bytes: first the ones `ingest` already holds, then the source's from that offset.
    pub fn new(
        ingest: Ingest,
        size: u64,
        open: &'a OpenAt<'a>,
        on_bytes: &'a (dyn Fn(u64) + Sync),
    ) -> io::Result<IngestReader<'a>> {
        let prefix = if ingest.resumed_from > 0 {
            Some(File::open(&ingest.path)?)
        } else {
            None
        };
        Ok(IngestReader {
            ingest,
            prefix,
            remote: None,
            open,
            hasher: Sha256::new(),
            count: 0,
            size,
            retries_left: RETRIES,
            backoff: FIRST_BACKOFF,
            failure: None,
            on_bytes,
        })
    }

    /// Why reading failed, when the cause was the download or the disk rather than the data.
    pub fn take_failure(&mut self) -> Option<IngestFailure> {
        self.failure.take()
    }

    /// Reads whatever the consumer left unread (tar padding), so the digest covers the whole blob.
    pub fn drain(&mut self) -> io::Result<()> {
        io::copy(self, &mut io::sink()).map(drop)
    }

    /// The digest and length of everything read, and the ingest file to publish or discard.
    pub fn finish(self) -> (Digest, u64, Ingest) {
        let hex = hex::encode(self.hasher.finalize());
        let digest = format!("sha256:{hex}")
            .parse()
            .expect("a sha256 hex digest is valid");
        (digest, self.count, self.ingest)
    }

    /// Records why reading stopped and hands the consumer an io::Error that still carries the OS error code
    /// (so a full disk stays recognizable through the decompressor and the tar reader).
    fn fail(&mut self, failure: IngestFailure) -> io::Error {
        let err = match &failure {
            IngestFailure::Source(e) => io::Error::other(e.to_string()),
            IngestFailure::Write(e) => match e.raw_os_error() {
                Some(code) => io::Error::from_raw_os_error(code),
                None => io::Error::new(e.kind(), e.to_string()),
            },
        };
        self.failure = Some(failure);
        err
    }

    /// Waits before the next attempt, or gives up when the attempts are spent.
    fn retry(&mut self, why: &str) -> bool {
        if self.retries_left == 0 {
            return false;
        }
        self.retries_left -= 1;
        tracing::info!(
            "download interrupted at byte {} ({why}); retrying in {:?}",
            self.count,
            self.backoff
        );
        std::thread::sleep(self.backoff);
        self.backoff = (self.backoff * 2).min(Duration::from_secs(5));
        true
    }

    fn read_remote(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.remote.is_none() {
                match (self.open)(self.count) {
                    Ok(stream) => self.remote = Some(stream),
                    Err(e) if e.is_transient() && self.retry(&e.to_string()) => continue,
                    Err(e) => return Err(self.fail(IngestFailure::Source(e))),
                }
            }
            let stream = self.remote.as_mut().expect("opened above");
            match stream.read(buf) {
                Ok(0) => {
                    // The connection ended before the blob did.
                    self.remote = None;
                    if !self.retry("the connection closed early") {
                        let msg =
                            format!("the source sent only {} of {} bytes", self.count, self.size);
                        return Err(self.fail(IngestFailure::Source(SourceError::Transient(msg))));
                    }
                }
                Ok(n) => {
                    if let Err(e) = self.ingest.file.write_all(&buf[..n]) {
                        return Err(self.fail(IngestFailure::Write(e)));
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.remote = None;
                    if !self.retry(&e.to_string()) {
                        let what = format!("reading the blob failed after {RETRIES} retries: {e}");
                        return Err(self.fail(IngestFailure::Source(SourceError::Transient(what))));
                    }
                }
            }
        }
    }
}

impl Read for IngestReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let remaining = self.size - self.count;
        if remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(remaining.min(usize::MAX as u64) as usize);
        let buf = &mut buf[..want];
        let n = match self.prefix.as_mut() {
            Some(prefix) => match prefix.read(buf)? {
                0 => {
                    self.prefix = None;
                    // The file may have been shorter than its recorded length; count what was really there.
                    self.ingest.resumed_from = self.count;
                    return self.read(buf);
                }
                n => n,
            },
            None => self.read_remote(buf)?,
        };
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        (self.on_bytes)(n as u64);
        Ok(n)
    }
}
