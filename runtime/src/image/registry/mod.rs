//! The registry client: the Docker registry HTTP API v2 / OCI distribution protocol over `ureq`, as a
//! [`Source`](crate::image::source::Source) the store pulls through.
//!
//! It does what podman users expect without configuration of its own: TLS with the system roots plus the
//! CAs in `certs.d/HOST:PORT/`; plain HTTP only for loopback registries and those registries.conf marks
//! insecure; mirrors from registries.conf tried first; the bearer-token and Basic challenges; credentials
//! from `--creds`, else podman's and Docker's files and credential helpers.
//!
//! Building a client for a reference, as the CLI and the puller do:
//!
//! ```no_run
//! use runtime::image::manifest::resolve;
//! use runtime::image::platform::Platform;
//! use runtime::image::reference::Reference;
//! use runtime::image::registry::{Credentials, RegistryClient, RegistryOptions};
//!
//! let reference: Reference = "ghcr.io/org/app:1.0".parse()?;
//! let options = RegistryOptions {
//!     // From `--creds USER:PASS` or the workflow's `registry_auth`; `None` reads the usual files.
//!     credentials: Some(Credentials::parse("user:password")?),
//!     ..RegistryOptions::default()
//! };
//! let client = RegistryClient::new(&reference, &options)?;
//! let image = resolve(&client, &reference.tag_or_digest(), &Platform::host())?;
//! for layer in &image.layers {
//!     let _stream = runtime::image::source::Source::blob(&client, &layer.digest, 0)?;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod auth;
mod challenge;
mod client;
mod config;
mod credentials;
mod endpoint;
mod errors;
#[cfg(test)]
mod fake_server;
mod tls;

use std::path::PathBuf;

pub use client::RegistryClient;
pub use credentials::Credentials;

use super::source::SourceError;

/// How to reach registries. The defaults read the user's and the system's files; tests point the fields at
/// temporary ones.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Credentials from `--creds USER:PASS` or a workflow's `registry_auth`: used for the image's registry
    /// and its mirrors, before any credentials file.
    pub credentials: Option<Credentials>,
    /// A registries.conf to read instead of `$CONTAINERS_REGISTRIES_CONF`,
    /// `~/.config/containers/registries.conf` and `/etc/containers/registries.conf` (a missing file means
    /// no configuration).
    pub registries_conf: Option<PathBuf>,
    /// Directories holding `HOST:PORT/` certificate directories, instead of
    /// `~/.config/containers/certs.d`, `/etc/containers/certs.d` and `/etc/docker/certs.d`.
    pub cert_dirs: Option<Vec<PathBuf>>,
    /// Credential files to read, in order, instead of `$REGISTRY_AUTH_FILE`,
    /// `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.config/containers/auth.json` and
    /// `$DOCKER_CONFIG/config.json` (`~/.docker/config.json`).
    pub auth_files: Option<Vec<PathBuf>>,
}

/// Errors setting a client up. Errors while talking to a registry are [`SourceError`]s.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("pulling from {registry} is blocked by the registries.conf entry {prefix:?}")]
    Blocked { registry: String, prefix: String },
    #[error("cannot use {path}: {reason} (see containers-registries.conf(5))")]
    Config { path: PathBuf, reason: String },
    #[error("cannot read credentials from {path}: {reason}; fix or remove the file")]
    AuthFile { path: PathBuf, reason: String },
    #[error("credential helper {helper} failed: {reason}")]
    Helper { helper: String, reason: String },
    #[error("credentials must be given as USER:PASSWORD")]
    BadCredentials,
    #[error("cannot use the certificate file {path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

impl From<RegistryError> for SourceError {
    fn from(e: RegistryError) -> SourceError {
        SourceError::Other(e.to_string())
    }
}
