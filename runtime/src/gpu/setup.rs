//! The step inside the container, after pivot_root and before the job starts, that makes the injected driver
//! libraries loadable by the image's own dynamic linker:
//! - create the links the edits ask for (`libcuda.so.1 -> libcuda.so.550.54.15`, `libcuda.so -> libcuda.so.1`);
//! - glibc image with `ldconfig`: list the library directories in `/etc/ld.so.conf.d/000-dstack-nvidia.conf`
//!   (so the image's own later `ldconfig` runs keep them) and run `ldconfig DIR...` to rebuild its cache;
//! - otherwise (busybox, distroless, hand-made images): link each soname into the directory holding the
//!   image's libc, which the linker searches by default.
//!
//! The spec carries what to do as JSON in the [`ANNOTATION`] annotation.

use std::path::{Path, PathBuf};
use std::process::Command;

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::container::InContainerStep;

/// The spec annotation holding the [`Setup`].
pub const ANNOTATION: &str = "dev.dstack.gpu.setup";

/// The conf file written into glibc images.
pub(crate) const LD_CONF: &str = "/etc/ld.so.conf.d/000-dstack-nvidia.conf";

const LDCONFIGS: [&str; 4] = [
    "/sbin/ldconfig.real",
    "/usr/sbin/ldconfig.real",
    "/sbin/ldconfig",
    "/usr/sbin/ldconfig",
];

/// Where images keep libc: the first of these holding `libc.so.6` is on the linker's default path.
const LIBC_DIRS: [&str; 8] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/usr/lib",
    "/lib",
];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Setup {
    /// Symbolic links to create: (link path, what it points to).
    #[serde(default)]
    pub links: Vec<(PathBuf, PathBuf)>,
    /// Directories holding injected libraries.
    #[serde(default)]
    pub ld_dirs: Vec<PathBuf>,
    /// Injected libraries as (soname, path in the container), for images without ldconfig.
    #[serde(default)]
    pub libraries: Vec<(String, PathBuf)>,
    /// The host driver's version, to compare with the image's CUDA compat libraries (`gpu::compat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
}

impl Setup {
    pub fn is_empty(&self) -> bool {
        self.links.is_empty() && self.ld_dirs.is_empty() && self.libraries.is_empty()
    }

    pub fn extend(&mut self, other: Setup) {
        for l in other.links {
            if !self.links.iter().any(|x| x.0 == l.0) {
                self.links.push(l);
            }
        }
        for d in other.ld_dirs {
            if !self.ld_dirs.contains(&d) {
                self.ld_dirs.push(d);
            }
        }
        for l in other.libraries {
            if !self.libraries.iter().any(|x| x.0 == l.0) {
                self.libraries.push(l);
            }
        }
        if self.driver_version.is_none() {
            self.driver_version = other.driver_version;
        }
    }

    /// Performs the set-up on the tree at `root` (`/` inside the container; a directory in tests).
    pub(crate) fn run_in(&self, root: &Path) -> Result<(), String> {
        let with_compat;
        let this = if self.driver_version.is_some() {
            with_compat = super::compat::prefer_newer_compat(self, root)?;
            &with_compat
        } else {
            self
        };
        this.make_loadable(root)
    }

    fn make_loadable(&self, root: &Path) -> Result<(), String> {
        for (link, target) in &self.links {
            make_link(&under(root, link), target)?;
        }
        if self.ld_dirs.is_empty() && self.libraries.is_empty() {
            return Ok(());
        }
        let libc_dir = LIBC_DIRS
            .iter()
            .find(|d| under(root, Path::new(d)).join("libc.so.6").exists());
        let ldconfig = LDCONFIGS
            .iter()
            .map(|p| under(root, Path::new(p)))
            .find(|p| is_executable(p));
        match (ldconfig, libc_dir) {
            (Some(ldconfig), Some(_)) => self.run_ldconfig(root, &ldconfig),
            (_, libc_dir) => {
                let dir = libc_dir.copied().unwrap_or("/usr/lib");
                for (soname, path) in &self.libraries {
                    make_link(&under(root, Path::new(dir)).join(soname), path)?;
                }
                Ok(())
            }
        }
    }

    fn run_ldconfig(&self, root: &Path, ldconfig: &Path) -> Result<(), String> {
        let conf = under(root, Path::new(LD_CONF));
        let text: String = self
            .ld_dirs
            .iter()
            .map(|d| format!("{}\n", d.display()))
            .collect();
        std::fs::create_dir_all(conf.parent().unwrap_or(root))
            .and_then(|()| std::fs::write(&conf, text))
            .map_err(|e| format!("writing {LD_CONF} for the NVIDIA libraries: {e}"))?;
        // Output is kept for the error: the job's output should not start with ldconfig's warnings.
        let mut tries = 0;
        let out = loop {
            let out = Command::new(ldconfig)
                .args(&self.ld_dirs)
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .output();
            match out {
                // Only in tests: a script just written may be open in a child another thread forked.
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => {
                    break other.map_err(|e| {
                        format!(
                            "running {} for the NVIDIA libraries: {e}",
                            ldconfig.display()
                        )
                    })?;
                }
            }
        };
        if !out.status.success() {
            let said = String::from_utf8_lossy(&out.stderr);
            return Err(format!(
                "{} failed ({}) while making the NVIDIA libraries loadable: {}",
                ldconfig.display(),
                out.status,
                said.trim()
            ));
        }
        Ok(())
    }
}

/// `path` (absolute, as the container sees it) under `root`.
fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Creates `link -> target`, replacing a file or link already there.
fn make_link(link: &Path, target: &Path) -> Result<(), String> {
    let fail = |e: std::io::Error| {
        format!(
            "creating the link {} -> {}: {e}",
            link.display(),
            target.display()
        )
    };
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    match std::fs::symlink_metadata(link) {
        Ok(m) if m.is_symlink() && std::fs::read_link(link).is_ok_and(|t| t == target) => {
            return Ok(());
        }
        Ok(m) if m.is_dir() => {
            return Err(fail(std::io::Error::other("a directory is in the way")));
        }
        Ok(_) => std::fs::remove_file(link).map_err(fail)?,
        Err(_) => {}
    }
    std::os::unix::fs::symlink(target, link).map_err(fail)
}

/// The GPU set-up's step inside the container (soname links, the linker cache): give it to the container
/// builder (`in_container_step`); it does nothing for a spec without GPUs.
pub struct DriverLinks;

/// The one [`DriverLinks`] step, for `ContainerBuilder::in_container_step(&DRIVER_LINKS)`.
pub static DRIVER_LINKS: DriverLinks = DriverLinks;

impl InContainerStep for DriverLinks {
    fn run(&self, spec: &Spec) -> Result<(), String> {
        finish_in_container(spec)
    }
}

/// Runs the GPU set-up recorded in `spec`, if any: inside the container after pivot_root (and the masked and
/// read-only paths), before the job starts, while it is still root there (see [`DriverLinks`]).
pub fn finish_in_container(spec: &Spec) -> Result<(), String> {
    let Some(text) = spec.annotations().as_ref().and_then(|a| a.get(ANNOTATION)) else {
        return Ok(());
    };
    let setup: Setup =
        serde_json::from_str(text).map_err(|e| format!("the {ANNOTATION} annotation: {e}"))?;
    setup.run_in(Path::new("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn setup() -> Setup {
        Setup {
            links: vec![
                (
                    "/usr/local/nvidia/lib64/libcuda.so.1".into(),
                    "libcuda.so.550.54.15".into(),
                ),
                (
                    "/usr/local/nvidia/lib64/libcuda.so".into(),
                    "libcuda.so.1".into(),
                ),
            ],
            ld_dirs: vec!["/usr/local/nvidia/lib64".into()],
            libraries: vec![(
                "libcuda.so.1".into(),
                "/usr/local/nvidia/lib64/libcuda.so.550.54.15".into(),
            )],
            driver_version: None,
        }
    }

    #[test]
    fn glibc_images_with_ldconfig_get_a_conf_file_and_an_ldconfig_run() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("lib/x86_64-linux-gnu")).unwrap();
        std::fs::write(r.join("lib/x86_64-linux-gnu/libc.so.6"), b"").unwrap();
        std::fs::create_dir_all(r.join("sbin")).unwrap();
        let record = r.join("ldconfig-args");
        let script = format!("#!/bin/sh\necho \"$@\" > {}\n", record.display());
        std::fs::write(r.join("sbin/ldconfig"), script).unwrap();
        std::fs::set_permissions(
            r.join("sbin/ldconfig"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        setup().run_in(r).unwrap();
        assert_eq!(
            std::fs::read_link(r.join("usr/local/nvidia/lib64/libcuda.so")).unwrap(),
            Path::new("libcuda.so.1")
        );
        assert_eq!(
            std::fs::read_link(r.join("usr/local/nvidia/lib64/libcuda.so.1")).unwrap(),
            Path::new("libcuda.so.550.54.15")
        );
        assert_eq!(
            std::fs::read_to_string(under(r, Path::new(LD_CONF))).unwrap(),
            "/usr/local/nvidia/lib64\n"
        );
        assert_eq!(
            std::fs::read_to_string(&record).unwrap(),
            "/usr/local/nvidia/lib64\n"
        );
        assert!(!r.join("lib/x86_64-linux-gnu/libcuda.so.1").exists());
        // Twice is fine: the links are already right.
        setup().run_in(r).unwrap();
    }

    #[test]
    fn images_without_ldconfig_get_links_next_to_libc() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("usr/lib64")).unwrap();
        std::fs::write(r.join("usr/lib64/libc.so.6"), b"").unwrap();
        std::fs::write(r.join("usr/lib64/libcuda.so.1"), b"a stale copy").unwrap();
        setup().run_in(r).unwrap();
        assert_eq!(
            std::fs::read_link(r.join("usr/lib64/libcuda.so.1")).unwrap(),
            Path::new("/usr/local/nvidia/lib64/libcuda.so.550.54.15")
        );
        assert!(!r.join("etc").exists());
    }

    #[test]
    fn a_failing_ldconfig_fails_the_start_with_its_words() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("usr/lib")).unwrap();
        std::fs::write(r.join("usr/lib/libc.so.6"), b"").unwrap();
        std::fs::create_dir_all(r.join("usr/sbin")).unwrap();
        std::fs::write(
            r.join("usr/sbin/ldconfig"),
            "#!/bin/sh\necho 'cannot write cache' >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(
            r.join("usr/sbin/ldconfig"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let err = setup().run_in(r).unwrap_err();
        assert!(err.contains("cannot write cache"), "{err}");
    }

    #[test]
    fn specs_without_the_annotation_need_nothing() {
        let spec = crate::container::default_spec(vec!["true".into()], 1 << 20);
        finish_in_container(&spec).unwrap();
    }
}
