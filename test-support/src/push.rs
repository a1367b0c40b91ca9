//! Pushes blobs, manifests, images and indexes to a registry over HTTP(S): no auth, Basic, or the bearer
//! token dance, whichever the registry's challenge asks for. Monolithic uploads (POST, then PUT with the
//! digest).
//!
//! docker-registry verifies what it is given: a blob whose bytes do not match the claimed digest is refused
//! (400 DIGEST_INVALID), and so is a manifest pushed under a digest it does not have. `push_blob_claiming` and
//! `push_manifest_raw` return the registry's answer so tests can see that; to make a registry *serve* a wrong
//! blob or manifest, push the right one and then `TestRegistry::overwrite_blob` it.

use std::collections::HashMap;
use std::sync::Mutex;

use super::http::{Challenge, Client, Response, basic_header};
use super::image::{Image, Index, sha256_digest};

pub struct Pusher {
    base: String,
    client: Client,
    creds: Option<(String, String)>,
    /// The last `Authorization` value that worked, per repository.
    auth: Mutex<HashMap<String, String>>,
}

impl Pusher {
    /// Pushes to `base` (`https://127.0.0.1:PORT`) with `client`, logging in with `creds` when challenged.
    pub fn new(base: &str, client: Client, creds: Option<(String, String)>) -> Pusher {
        Pusher {
            base: base.trim_end_matches('/').to_string(),
            client,
            creds,
            auth: Mutex::new(HashMap::new()),
        }
    }

    /// Uploads `bytes` unless the repository has them already; returns their digest.
    pub fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256_digest(bytes);
        let head = self.send(
            repo,
            "HEAD",
            &format!("/v2/{repo}/blobs/{digest}"),
            &[],
            None,
        );
        if head.status == 200 {
            return digest;
        }
        let resp = self.push_blob_claiming(repo, bytes, &digest);
        assert_eq!(
            resp.status,
            201,
            "push blob {digest} to {repo}: {} {}",
            resp.status,
            resp.text()
        );
        digest
    }

    /// Uploads `bytes` claiming they have `digest`; returns the registry's answer to the final PUT.
    pub fn push_blob_claiming(&self, repo: &str, bytes: &[u8], digest: &str) -> Response {
        let start = self.send(
            repo,
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            Some(b""),
        );
        assert_eq!(
            start.status,
            202,
            "start upload to {repo}: {} {}",
            start.status,
            start.text()
        );
        let location = start
            .header("location")
            .expect("upload without Location")
            .to_string();
        let separator = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{separator}digest={digest}");
        let headers = [("Content-Type", "application/octet-stream")];
        self.send(repo, "PUT", &url, &headers, Some(bytes))
    }

    /// Pushes a manifest (or index) as `reference` (a tag or its digest); returns its digest.
    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> String {
        let resp = self.push_manifest_raw(repo, reference, bytes, media_type);
        assert_eq!(
            resp.status,
            201,
            "push manifest {repo}:{reference}: {} {}",
            resp.status,
            resp.text()
        );
        let digest = sha256_digest(bytes);
        if let Some(served) = resp.header("docker-content-digest") {
            assert_eq!(
                served, digest,
                "registry computed another digest for {repo}:{reference}"
            );
        }
        digest
    }

    /// Puts `bytes` at `/v2/REPO/manifests/REFERENCE`; returns the registry's answer.
    pub fn push_manifest_raw(
        &self,
        repo: &str,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Response {
        let headers = [("Content-Type", media_type)];
        self.send(
            repo,
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &headers,
            Some(bytes),
        )
    }

    /// Pushes the image's layers, config and manifest (as `reference`: a tag, or its digest); returns the
    /// manifest digest.
    pub fn push_image(&self, repo: &str, reference: &str, image: &Image) -> String {
        for layer in &image.layers {
            self.push_blob(repo, &layer.blob);
        }
        self.push_blob(repo, &image.config);
        self.push_manifest(repo, reference, &image.manifest, &image.manifest_media_type)
    }

    /// Pushes every image of the index by digest, then the index as `reference`; returns the index digest.
    pub fn push_index(&self, repo: &str, reference: &str, index: &Index) -> String {
        for image in &index.images {
            self.push_image(repo, &image.manifest_digest, image);
        }
        self.push_manifest(repo, reference, &index.bytes, &index.media_type)
    }

    /// One request to `path` (or an absolute URL), authorised as the registry asks: a cached Authorization
    /// first, then on 401 a fresh one from the challenge (scope `repository:REPO:pull,push`).
    fn send(
        &self,
        repo: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else if path.starts_with('/') {
            format!("{}{path}", self.base)
        } else {
            panic!("relative upload location {path:?}")
        };
        let cached = self.auth.lock().unwrap().get(repo).cloned();
        let attempt = |authorization: Option<&str>| {
            let mut all: Vec<(&str, &str)> = headers.to_vec();
            if let Some(a) = authorization {
                all.push(("Authorization", a));
            }
            self.client
                .request(method, &url, &all, body)
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let resp = attempt(cached.as_deref());
        if resp.status != 401 {
            return resp;
        }
        let challenge = resp
            .header("www-authenticate")
            .and_then(Challenge::parse)
            .unwrap_or_else(|| panic!("401 without a challenge from {url}"));
        let creds = self.creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
        let authorization = match challenge.scheme.as_str() {
            "bearer" => {
                let scope = format!("repository:{repo}:pull,push");
                match self.client.fetch_token(&challenge, Some(&scope), creds) {
                    Ok(token) => format!("Bearer {token}"),
                    Err(refused) => panic!(
                        "token server refused a push token for {repo}: {}",
                        refused.text()
                    ),
                }
            }
            "basic" => basic_header(
                creds.expect("registry wants Basic auth and the pusher has no credentials"),
            ),
            other => panic!("unknown auth scheme {other}"),
        };
        let resp = attempt(Some(&authorization));
        if resp.status != 401 {
            self.auth
                .lock()
                .unwrap()
                .insert(repo.to_string(), authorization);
        }
        resp
    }
}
