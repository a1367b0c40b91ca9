//! A throwaway certificate authority for one test registry, made with the `openssl` command: a CA, a server
//! certificate for `127.0.0.1` and `localhost`, and (for token registries) an RSA key and self-signed
//! certificate that sign tokens. EC P-256 for TLS keeps generation fast; tokens need RSA for RS256.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct TestCa {
    dir: PathBuf,
}

impl TestCa {
    /// Generates the CA and the server certificate into `dir` (which must exist).
    #[rustfmt::skip]
    pub fn generate(dir: &Path) -> TestCa {
        let ca = TestCa { dir: dir.to_path_buf() };
        ca.openssl(&[
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "ca.key", "-out", "ca.crt", "-days", "3", "-subj", "/CN=dstack test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        ca.openssl(&[
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost",
        ]);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write server.ext");
        ca.openssl(&[
            "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "3", "-extfile", "server.ext",
        ]);
        ca
    }

    /// A registry certificate made as Docker's documentation shows: self-signed, so `CA:TRUE`, with the
    /// registry's names in subjectAltName, and no CA above it. `ca_cert()` is that same certificate (what a
    /// user puts in certs.d), `server_cert()`/`server_key()` what the registry serves.
    #[rustfmt::skip]
    pub fn generate_self_signed(dir: &Path) -> TestCa {
        let ca = TestCa { dir: dir.to_path_buf() };
        ca.openssl(&[
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "server.key", "-out", "server.crt", "-days", "3", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ]);
        std::fs::copy(dir.join("server.crt"), dir.join("ca.crt")).expect("copy server.crt to ca.crt");
        ca
    }

    /// Adds the RSA key and certificate that sign registry tokens (`token-signer.{key,crt}`).
    #[rustfmt::skip]
    pub fn generate_token_signer(&self) {
        self.openssl(&[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "token-signer.key", "-out",
            "token-signer.crt", "-days", "3", "-subj", "/CN=dstack test token signer",
        ]);
    }

    /// The CA certificate (PEM): what clients must trust.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    pub fn token_signer_cert(&self) -> PathBuf {
        self.dir.join("token-signer.crt")
    }
    pub fn token_signer_key(&self) -> PathBuf {
        self.dir.join("token-signer.key")
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("run openssl (install it: scripts/setup)");
        assert!(
            out.status.success(),
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
