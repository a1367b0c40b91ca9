//! Manifests and indexes as a registry or an OCI layout sends them, through the real resolver: no panic,
//! errors stay short. The input is the top manifest or index, then optionally a NUL byte and the manifest
//! an index entry leads to (the fake source vouches for its digest, as a registry client that checked it
//! would); its first byte picks the Content-Type the top one is declared with.

use std::io::Read;
use std::process::ExitCode;

use dstack_fuzz::{Target, run, short_message};
use runtime::image::Digest;
use runtime::image::manifest::{self, media_type};
use runtime::image::platform::Platform;
use runtime::image::source::{FetchedManifest, Source, SourceError};

const DECLARED: &[&str] = &[
    media_type::OCI_MANIFEST,
    media_type::OCI_INDEX,
    media_type::DOCKER_MANIFEST,
    media_type::DOCKER_MANIFEST_LIST,
    "",
    "application/json; charset=utf-8",
    media_type::DOCKER_SCHEMA1,
];

struct FakeRegistry<'a> {
    declared: &'a str,
    top: &'a [u8],
    child: &'a [u8],
}

impl Source for FakeRegistry<'_> {
    fn describe(&self) -> String {
        "fuzz.test/image".into()
    }

    fn manifest(&self, reference: &str) -> Result<FetchedManifest, SourceError> {
        match reference.parse::<Digest>() {
            Ok(digest) => Ok(FetchedManifest {
                bytes: self.child.to_vec(),
                media_type: String::new(),
                digest,
            }),
            Err(_) => Ok(FetchedManifest {
                bytes: self.top.to_vec(),
                media_type: self.declared.to_string(),
                digest: Digest::of(self.top),
            }),
        }
    }

    fn blob(&self, digest: &Digest, _offset: u64) -> Result<Box<dyn Read + Send>, SourceError> {
        Err(SourceError::NotFound {
            what: format!("blob {digest}"),
            location: self.describe(),
        })
    }
}

fn check(input: &[u8]) -> Result<String, String> {
    let (declared, rest) = match input.split_first() {
        Some((first, rest)) => (DECLARED[usize::from(*first) % DECLARED.len()], rest),
        None => ("", input),
    };
    let (top, child) = match rest.iter().position(|&b| b == 0) {
        Some(nul) => (&rest[..nul], &rest[nul + 1..]),
        None => (rest, &[][..]),
    };
    let source = FakeRegistry {
        declared,
        top,
        child,
    };
    let platform = Platform::new("linux", "amd64", None);
    match manifest::resolve(&source, "latest", &platform) {
        Ok(_) => Ok("ok".into()),
        Err(e) => short_message(&e.to_string()),
    }
}

fn main() -> ExitCode {
    run(
        Target {
            name: "manifest",
            dictionary: &[
                b"{",
                b"}",
                b"[",
                b"]",
                b",",
                b":",
                b"\"",
                b"null",
                b"1",
                b"-1",
                b"1e999",
                b"\"schemaVersion\":2,",
                b"\"mediaType\":",
                b"\"manifests\":[",
                b"\"layers\":[",
                b"\"config\":",
                b"\"digest\":",
                b"\"size\":",
                b"\"platform\":",
                b"\"os\":\"linux\"",
                b"\"architecture\":\"amd64\"",
                b"\"variant\":",
                b"\"urls\":[",
                b"\"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"",
                b"\"application/vnd.oci.image.manifest.v1+json\"",
                b"\"application/vnd.oci.image.index.v1+json\"",
                b"\"application/vnd.oci.image.config.v1+json\"",
                b"\"application/vnd.oci.image.layer.v1.tar+gzip\"",
                b"\\u0000",
                b"\0",
            ],
            align: 0,
            max_len: 64 << 10,
        },
        check,
    )
}
