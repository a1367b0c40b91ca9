//! The project's bearer-token server (`scripts/test-registry/token-server.py`), started for one registry.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::process::{ChildGuard, wait_until};
use super::tls::TestCa;
use super::{REGISTRY_IDENTITY_TOKEN, REGISTRY_PASSWORD, REGISTRY_USER};

pub const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../scripts/test-registry/token-server.py"
);
pub const ISSUER: &str = "dstack-test-token-issuer";
pub const SERVICE: &str = "dstack-test-registry";

/// How the token server issues tokens.
#[derive(Debug, Clone)]
pub struct TokenOptions {
    /// Token lifetime in seconds (`expires_in` in the response and the JWT's `exp`).
    pub expires_in: u64,
    /// docker-registry accepts a token until 60 s past its `exp`; with this set, `exp` is moved 60 s earlier
    /// so the registry refuses the token `expires_in` seconds after issue. Token renewal tests need it.
    pub registry_refuses_at_expiry: bool,
    /// Name the signing key with an `x5c` chain instead of a `kid` (both work with docker-registry 2.8).
    pub x5c_header: bool,
}

impl Default for TokenOptions {
    fn default() -> Self {
        TokenOptions {
            expires_in: 300,
            registry_refuses_at_expiry: false,
            x5c_header: false,
        }
    }
}

impl TokenOptions {
    /// Tokens the registry refuses after `seconds`: for renewal tests.
    pub fn short_lived(seconds: u64) -> TokenOptions {
        TokenOptions {
            expires_in: seconds,
            registry_refuses_at_expiry: true,
            x5c_header: false,
        }
    }
}

pub struct TokenServer {
    _child: ChildGuard,
    port: u16,
    log: PathBuf,
}

impl TokenServer {
    /// Starts the server with `ca`'s server certificate and token signer, logging to `dir/token-server.log`.
    pub fn start(dir: &Path, ca: &TestCa, options: &TokenOptions) -> TokenServer {
        let port_file = dir.join("token-server.port");
        let log = dir.join("token-server.log");
        let stderr = std::fs::File::create(dir.join("token-server.stderr"))
            .expect("create token server stderr");
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(SCRIPT)
            .arg("--cert")
            .arg(ca.server_cert())
            .arg("--key")
            .arg(ca.server_key())
            .arg("--signing-key")
            .arg(ca.token_signer_key())
            .arg("--signing-cert")
            .arg(ca.token_signer_cert())
            .args(["--issuer", ISSUER, "--service", SERVICE])
            .arg("--user")
            .arg(format!("{REGISTRY_USER}:{REGISTRY_PASSWORD}"))
            .args(["--refresh-token", REGISTRY_IDENTITY_TOKEN])
            .arg("--expires-in")
            .arg(options.expires_in.to_string())
            .args(["--header", if options.x5c_header { "x5c" } else { "kid" }])
            .arg("--port-file")
            .arg(&port_file)
            .arg("--log")
            .arg(&log)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdout(Stdio::null())
            .stderr(stderr);
        if options.registry_refuses_at_expiry {
            cmd.arg("--compensate-leeway");
        }
        let mut child =
            ChildGuard::spawn(cmd, "the token server (/usr/bin/python3 with python3-jwt)");
        let port = wait_until(Duration::from_secs(20), || {
            if let Some(status) = child.exited() {
                let err = std::fs::read_to_string(dir.join("token-server.stderr")).unwrap_or_default();
                panic!("token server exited ({status}): {err}\n(missing python3-jwt? run scripts/setup first)");
            }
            std::fs::read_to_string(&port_file).ok()?.trim().parse::<u16>().ok()
        })
        .expect("token server did not start within 20 s");
        TokenServer {
            _child: child,
            port,
            log,
        }
    }

    pub fn realm(&self) -> String {
        format!("https://127.0.0.1:{}/token", self.port)
    }

    /// Every request so far, one JSON object each (method, path, scope, user, status, granted, ...).
    pub fn requests(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).expect("token log line is JSON"))
            .collect()
    }
}
