//! Credentials: the ones given on the command line, else the files users already have (podman's
//! `auth.json`, Docker's `config.json`) and the credential helpers those files name.
//!
//! Nothing here ever formats a password or token: [`Credentials`] has a redacted `Debug`, and errors name
//! files and hosts, never contents.

use std::ffi::OsString;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;

use super::RegistryError;
use crate::image::reference::DOCKER_HUB;

/// How Docker keys Docker Hub in `config.json` and what it passes to credential helpers.
const DOCKER_HUB_LEGACY_KEY: &str = "https://index.docker.io/v1/";
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// A user name and password (or token used as one), or an identity token. `Debug` shows the user name
/// only.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    username: String,
    password: String,
    /// `password` is an identity token (Docker's name for an OAuth2 refresh token, as `docker login`
    /// stores for Azure's and other registries): it is exchanged at the token server, never sent as a
    /// password.
    identity_token: bool,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            username: username.into(),
            password: password.into(),
            identity_token: false,
        }
    }

    /// An identity token, and the user name stored beside it (often a placeholder, or empty).
    pub(crate) fn identity_token(
        username: impl Into<String>,
        token: impl Into<String>,
    ) -> Credentials {
        Credentials {
            username: username.into(),
            password: token.into(),
            identity_token: true,
        }
    }

    pub(crate) fn is_identity_token(&self) -> bool {
        self.identity_token
    }

    /// `USER:PASS` as given to `--creds` (the password may itself contain colons).
    pub fn parse(user_colon_pass: &str) -> Result<Credentials, RegistryError> {
        match user_colon_pass.split_once(':') {
            Some((user, pass)) if !user.is_empty() && !pass.is_empty() => {
                Ok(Credentials::new(user, pass))
            }
            _ => Err(RegistryError::BadCredentials),
        }
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    pub(crate) fn password(&self) -> &str {
        &self.password
    }

    /// The value of an `Authorization: Basic ...` header.
    pub(crate) fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("identity_token", &self.identity_token)
            .finish()
    }
}

/// What a lookup found for one registry and repository.
#[derive(Debug, Clone)]
pub(crate) enum Found {
    /// Credentials, and where they came from (for messages: a file path or `docker-credential-NAME`).
    Credentials(Credentials, String),
    None,
}

/// Where credentials are looked up: auth files in order, and the `PATH` for `docker-credential-*` helpers.
#[derive(Debug, Clone, Default)]
pub(crate) struct CredentialStore {
    pub files: Vec<PathBuf>,
    /// `PATH` for helpers; `None` inherits the process's.
    pub helper_path: Option<OsString>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct AuthFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperAnswer {
    #[serde(default)]
    username: String,
    #[serde(default)]
    secret: String,
}

impl CredentialStore {
    /// The files podman and Docker use, in the order podman reads them.
    pub fn from_env() -> CredentialStore {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let home = env("HOME");
        let mut files = Vec::new();
        if let Some(f) = env("REGISTRY_AUTH_FILE") {
            files.push(f);
        }
        if let Some(d) = env("XDG_RUNTIME_DIR") {
            files.push(d.join("containers/auth.json"));
        }
        if let Some(d) = env("XDG_CONFIG_HOME").or_else(|| home.as_ref().map(|h| h.join(".config")))
        {
            files.push(d.join("containers/auth.json"));
        }
        if let Some(d) = env("DOCKER_CONFIG").or_else(|| home.as_ref().map(|h| h.join(".docker"))) {
            files.push(d.join("config.json"));
        }
        CredentialStore {
            files,
            helper_path: None,
        }
    }

    /// The first credentials any file (or helper it names) holds for `registry` (as users write it:
    /// `docker.io`, `host:5000`) and `repository`.
    pub fn lookup(&self, registry: &str, repository: &str) -> Result<Found, RegistryError> {
        for path in &self.files {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(RegistryError::AuthFile {
                        path: path.clone(),
                        reason: e.to_string(),
                    });
                }
            };
            if text.trim().is_empty() {
                continue;
            }
            // Only where and what kind of error: serde's words could quote a password.
            let file: AuthFile = crate::text::parse_json(text.as_bytes()).map_err(|e| {
                RegistryError::AuthFile {
                    path: path.clone(),
                    reason: if e.syntax {
                        format!("line {}, column {}: it is not valid JSON", e.line, e.column)
                    } else {
                        format!(
                            "line {}, column {}: not the shape of a containers auth.json ({{\"auths\": \
                             {{\"REGISTRY\": {{\"auth\": \"BASE64\"}}}}}})",
                            e.line, e.column
                        )
                    },
                }
            })?;
            match self.lookup_in(&file, path, registry, repository)? {
                Found::None => continue,
                found => return Ok(found),
            }
        }
        Ok(Found::None)
    }

    fn lookup_in(
        &self,
        file: &AuthFile,
        path: &Path,
        registry: &str,
        repository: &str,
    ) -> Result<Found, RegistryError> {
        if let Some(helper) = file
            .cred_helpers
            .iter()
            .find(|(key, _)| host_key_matches(key, registry))
            .map(|(_, helper)| helper)
        {
            let found = self.run_helper(helper, registry)?;
            if !matches!(found, Found::None) {
                return Ok(found);
            }
        }
        if let Some((key, entry)) = best_auth_entry(&file.auths, registry, repository)
            && let Some(creds) = decode_entry(entry, path, key)?
        {
            return Ok(Found::Credentials(creds, path.display().to_string()));
        }
        if let Some(store) = file.creds_store.as_deref().filter(|s| !s.is_empty()) {
            return self.run_helper(store, registry);
        }
        Ok(Found::None)
    }

    /// Run `docker-credential-NAME get` with the server URL on stdin. A non-zero exit or "credentials not
    /// found" means none; a missing helper is reported in the log and means none.
    fn run_helper(&self, name: &str, registry: &str) -> Result<Found, RegistryError> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(RegistryError::Helper {
                helper: name.to_string(),
                reason: "the helper name may only hold letters, digits, '-', '_' and '.'"
                    .to_string(),
            });
        }
        let program = format!("docker-credential-{name}");
        let server = if registry == DOCKER_HUB {
            DOCKER_HUB_LEGACY_KEY
        } else {
            registry
        };
        let mut cmd = Command::new(&program);
        cmd.arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(path) = &self.helper_path {
            cmd.env("PATH", path);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(
                    "credential helper {program} is not installed; going on without its credentials"
                );
                return Ok(Found::None);
            }
            Err(e) => {
                return Err(RegistryError::Helper {
                    helper: program,
                    reason: e.to_string(),
                });
            }
        };
        if let Some(mut stdin) = child.stdin.take() {
            // A helper that exits without reading its input is judged by its exit status below.
            let _ = stdin.write_all(server.as_bytes());
        }
        let deadline = Instant::now() + HELPER_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(RegistryError::Helper {
                        helper: program,
                        reason: format!("it did not answer within {} s", HELPER_TIMEOUT.as_secs()),
                    });
                }
                Err(e) => {
                    return Err(RegistryError::Helper {
                        helper: program,
                        reason: e.to_string(),
                    });
                }
            }
        };
        let mut out = String::new();
        if let Some(mut stdout) = child.stdout.take() {
            let _ = stdout.read_to_string(&mut out);
        }
        if !status.success() {
            tracing::debug!("{program} has no credentials for {server} ({status})");
            return Ok(Found::None);
        }
        if out.contains("credentials not found") {
            return Ok(Found::None);
        }
        let answer: HelperAnswer = serde_json::from_str(out.trim()).map_err(|_| RegistryError::Helper {
            helper: program.clone(),
            reason: "its answer is not the JSON object {\"Username\", \"Secret\"} the helper protocol defines"
                .to_string(),
        })?;
        if answer.secret.is_empty() {
            return Ok(Found::None);
        }
        // The helper protocol's way of saying the secret is an identity token.
        if answer.username == "<token>" {
            return Ok(Found::Credentials(
                Credentials::identity_token("", answer.secret),
                program,
            ));
        }
        Ok(Found::Credentials(
            Credentials::new(answer.username, answer.secret),
            program,
        ))
    }
}

/// A key in `auths` or `credHelpers` reduced to what it names: `https://host/v1/` is `host`; a key without
/// a scheme is kept whole (`host`, `host:port`, or podman's repository-scoped `host/ns/repo`).
fn normalize_key(key: &str) -> &str {
    let trimmed = key.trim_end_matches('/');
    match trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
    {
        Some(rest) => rest.split('/').next().unwrap_or(rest),
        None => trimmed,
    }
}

fn is_docker_hub_alias(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// Whether a key names the registry host itself.
fn host_key_matches(key: &str, registry: &str) -> bool {
    let key = normalize_key(key);
    key == registry || (registry == DOCKER_HUB && is_docker_hub_alias(key))
}

/// The most specific `auths` entry for `registry/repository`: a repository-scoped key (longest first),
/// else a key for the host (an exact `host` key before URL-style ones).
fn best_auth_entry<'a>(
    auths: &'a std::collections::BTreeMap<String, AuthEntry>,
    registry: &str,
    repository: &str,
) -> Option<(&'a str, &'a AuthEntry)> {
    let name = format!("{registry}/{repository}");
    let mut best: Option<(usize, &str, &AuthEntry)> = None;
    for (key, entry) in auths {
        let norm = normalize_key(key);
        let rank = if norm.contains('/') && !key.contains("://") {
            let scoped = name == norm || name.starts_with(&format!("{norm}/"));
            let scoped = scoped
                || (registry == DOCKER_HUB
                    && norm.split_once('/').is_some_and(|(host, path)| {
                        is_docker_hub_alias(host)
                            && (repository == path || repository.starts_with(&format!("{path}/")))
                    }));
            if !scoped {
                continue;
            }
            2 + norm.len()
        } else if host_key_matches(key, registry) {
            if key == registry { 1 } else { 0 }
        } else {
            continue;
        };
        if best.is_none_or(|(r, _, _)| rank > r) {
            best = Some((rank, key, entry));
        }
    }
    best.map(|(_, k, e)| (k, e))
}

/// Credentials from an entry, `None` for an empty placeholder (`{}`, as Docker writes with a `credsStore`).
/// An `identitytoken` wins over the password beside it (Docker writes an empty one), as in Docker.
fn decode_entry(
    entry: &AuthEntry,
    path: &Path,
    key: &str,
) -> Result<Option<Credentials>, RegistryError> {
    let bad = |reason: &str| RegistryError::AuthFile {
        path: path.to_path_buf(),
        reason: format!("the entry {}: {reason}", crate::text::quote(key)),
    };
    let token = entry.identitytoken.as_deref().filter(|t| !t.is_empty());
    if let Some(auth) = entry
        .auth
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        let engine = &base64::engine::general_purpose::STANDARD;
        let raw = engine
            .decode(auth)
            .or_else(|_| {
                base64::engine::general_purpose::STANDARD_NO_PAD.decode(auth.trim_end_matches('='))
            })
            .map_err(|_| bad("\"auth\" is not base64"))?;
        let raw = String::from_utf8(raw).map_err(|_| bad("\"auth\" is not UTF-8 text"))?;
        let (user, pass) = raw
            .split_once(':')
            .ok_or_else(|| bad("\"auth\" is not base64 of USER:PASSWORD"))?;
        return Ok(Some(match token {
            Some(t) => Credentials::identity_token(user, t),
            None => Credentials::new(user, pass.trim_end_matches('\n')),
        }));
    }
    let user = entry.username.as_deref().unwrap_or_default();
    match (token, &entry.password) {
        (Some(t), _) => Ok(Some(Credentials::identity_token(user, t))),
        (None, Some(p)) if !user.is_empty() => Ok(Some(Credentials::new(user, p.clone()))),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn store_with(files: &[(&str, serde_json::Value)]) -> (tempfile::TempDir, CredentialStore) {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for (name, json) in files {
            let p = dir.path().join(name);
            std::fs::write(&p, serde_json::to_vec(json).unwrap()).unwrap();
            paths.push(p);
        }
        paths.push(dir.path().join("missing.json"));
        let store = CredentialStore {
            files: paths,
            helper_path: Some(dir.path().as_os_str().to_owned()),
        };
        (dir, store)
    }

    fn creds(found: Found) -> (String, String) {
        match found {
            Found::Credentials(c, _) => (c.username().to_string(), c.password().to_string()),
            other => panic!("expected credentials, got {other:?}"),
        }
    }

    /// A `docker-credential-NAME` script that answers for `server` and says "not found" otherwise.
    fn write_helper(dir: &Path, name: &str, server: &str, user: &str, secret: &str) {
        let script = format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 3\nread -r url\nif [ \"$url\" = '{server}' ]; then\n  \
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{secret}\"}}' \"$url\"\nelse\n  \
             echo 'credentials not found in native keychain'; exit 1\nfi\n"
        );
        let path = dir.join(format!("docker-credential-{name}"));
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn parse_creds_flag_and_redacted_debug() {
        let c = Credentials::parse("alice:s3cr:et").unwrap();
        assert_eq!((c.username(), c.password()), ("alice", "s3cr:et"));
        let debug = format!("{c:?}");
        assert!(!debug.contains("s3cr"), "{debug}");
        assert!(debug.contains("alice"));
        for bad in ["alice", ":pw", "alice:", ""] {
            let e = Credentials::parse(bad).unwrap_err();
            assert!(!e.to_string().contains("pw"), "{e}");
        }
        assert_eq!(c.basic_header(), format!("Basic {}", b64("alice:s3cr:et")));
    }

    #[test]
    fn auths_match_host_port_and_url_keys() {
        let (_d, store) = store_with(&[(
            "config.json",
            serde_json::json!({"auths": {
                "registry.example:5000": {"auth": b64("u1:p1")},
                "https://other.example/v1/": {"auth": b64("u2:p2")},
                "https://index.docker.io/v1/": {"auth": b64("hub:hubpw")},
                "plain.example": {"username": "u3", "password": "p3"},
            }}),
        )]);
        assert_eq!(
            creds(store.lookup("registry.example:5000", "a/b").unwrap()),
            ("u1".into(), "p1".into())
        );
        assert_eq!(
            creds(store.lookup("other.example", "x").unwrap()),
            ("u2".into(), "p2".into())
        );
        assert_eq!(
            creds(store.lookup("docker.io", "library/ubuntu").unwrap()),
            ("hub".into(), "hubpw".into())
        );
        assert_eq!(
            creds(store.lookup("plain.example", "x").unwrap()),
            ("u3".into(), "p3".into())
        );
        assert!(matches!(
            store.lookup("registry.example", "a").unwrap(),
            Found::None
        ));
        assert!(matches!(
            store.lookup("nowhere.example", "a").unwrap(),
            Found::None
        ));
    }

    #[test]
    fn repository_scoped_keys_longest_match_wins() {
        let (_d, store) = store_with(&[(
            "auth.json",
            serde_json::json!({"auths": {
                "reg.example": {"auth": b64("host:h")},
                "reg.example/team": {"auth": b64("team:t")},
                "reg.example/team/app": {"auth": b64("app:a")},
                "docker.io/org": {"auth": b64("org:o")},
            }}),
        )]);
        assert_eq!(
            creds(store.lookup("reg.example", "team/app").unwrap()).0,
            "app"
        );
        assert_eq!(
            creds(store.lookup("reg.example", "team/app2").unwrap()).0,
            "team"
        );
        assert_eq!(
            creds(store.lookup("reg.example", "team/app/sub").unwrap()).0,
            "app"
        );
        assert_eq!(
            creds(store.lookup("reg.example", "other").unwrap()).0,
            "host"
        );
        assert_eq!(
            creds(store.lookup("docker.io", "org/img").unwrap()).0,
            "org"
        );
        assert!(matches!(
            store.lookup("docker.io", "library/img").unwrap(),
            Found::None
        ));
    }

    #[test]
    fn files_are_read_in_order_and_the_first_hit_wins() {
        let (_d, store) = store_with(&[
            (
                "first.json",
                serde_json::json!({"auths": {"a.example": {"auth": b64("first:1")}}}),
            ),
            (
                "second.json",
                serde_json::json!({"auths": {"a.example": {"auth": b64("second:2")}, "b.example": {"auth": b64("b:2")}}}),
            ),
        ]);
        assert_eq!(creds(store.lookup("a.example", "x").unwrap()).0, "first");
        assert_eq!(creds(store.lookup("b.example", "x").unwrap()).0, "b");
    }

    #[test]
    fn identity_tokens_are_read_as_such() {
        let (_d, store) = store_with(&[(
            "config.json",
            serde_json::json!({"auths": {
                "acr.example": {"auth": b64("00000000-0000:"), "identitytoken": "refresh-xyz"},
                "bare.example": {"identitytoken": "refresh-bare"},
                "plain.example": {"auth": b64("u:p"), "identitytoken": ""},
            }}),
        )]);
        let token = |registry: &str| match store.lookup(registry, "x").unwrap() {
            Found::Credentials(c, _) => {
                assert!(!format!("{c:?}").contains("refresh"), "{c:?}");
                (
                    c.is_identity_token(),
                    c.username().to_string(),
                    c.password().to_string(),
                )
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(
            token("acr.example"),
            (true, "00000000-0000".into(), "refresh-xyz".into())
        );
        assert_eq!(
            token("bare.example"),
            (true, String::new(), "refresh-bare".into())
        );
        assert_eq!(token("plain.example"), (false, "u".into(), "p".into()));
    }

    #[test]
    fn malformed_files_name_the_file_but_not_the_secret() {
        let (_d, store) = store_with(&[(
            "config.json",
            serde_json::json!({"auths": {"a.example": {"auth": "!!not-base64-topsecret!!"}}}),
        )]);
        let e = store.lookup("a.example", "x").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("config.json"), "{msg}");
        assert!(!msg.contains("topsecret"), "{msg}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("broken.json");
        std::fs::write(&p, "{\"auths\": {\"a\": {\"auth\": \"hunter2\"").unwrap();
        let store = CredentialStore {
            files: vec![p],
            helper_path: None,
        };
        let msg = store.lookup("a", "x").unwrap_err().to_string();
        assert!(
            msg.contains("broken.json") && !msg.contains("hunter2"),
            "{msg}"
        );
    }

    #[test]
    fn cred_helpers_and_creds_store_run_the_helper() {
        let (dir, store) = store_with(&[(
            "config.json",
            serde_json::json!({
                "auths": {"https://index.docker.io/v1/": {}, "stored.example": {}},
                "credHelpers": {"helped.example:5000": "special"},
                "credsStore": "desktop",
            }),
        )]);
        write_helper(dir.path(), "special", "helped.example:5000", "hu", "hpw");
        write_helper(
            dir.path(),
            "desktop",
            "https://index.docker.io/v1/",
            "du",
            "dpw",
        );
        let (u, p) = creds(store.lookup("helped.example:5000", "x").unwrap());
        assert_eq!((u.as_str(), p.as_str()), ("hu", "hpw"));
        let (u, p) = creds(store.lookup("docker.io", "library/ubuntu").unwrap());
        assert_eq!((u.as_str(), p.as_str()), ("du", "dpw"));
        // The store's helper says "credentials not found" for this one: none, not an error.
        assert!(matches!(
            store.lookup("stored.example", "x").unwrap(),
            Found::None
        ));
    }

    #[test]
    fn missing_or_token_helpers() {
        let (dir, store) = store_with(&[(
            "config.json",
            serde_json::json!({"credHelpers": {"gone.example": "absent", "tok.example": "tok"}}),
        )]);
        assert!(matches!(
            store.lookup("gone.example", "x").unwrap(),
            Found::None
        ));
        write_helper(dir.path(), "tok", "tok.example", "<token>", "refresh-abc");
        match store.lookup("tok.example", "x").unwrap() {
            Found::Credentials(c, source) => {
                assert!(c.is_identity_token(), "{c:?}");
                assert_eq!((c.username(), c.password()), ("", "refresh-abc"));
                assert_eq!(source, "docker-credential-tok");
            }
            other => panic!("{other:?}"),
        }
        let (_d, bad) = store_with(&[("c.json", serde_json::json!({"credsStore": "../evil"}))]);
        assert!(matches!(
            bad.lookup("x.example", "y"),
            Err(RegistryError::Helper { .. })
        ));
    }
}
