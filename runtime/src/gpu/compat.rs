//! CUDA forward compatibility inside the container: an image built for a newer CUDA than the host's driver
//! carries the newer user-space driver in `/usr/local/cuda/compat` (`libcuda.so.<version>` and friends), which
//! works on the older kernel module of a data-centre branch. When that version is newer than the host driver's,
//! the job must load those libraries, not the host's, as the NVIDIA toolkit's `enable-cuda-compat` hook arranges.
//!
//! Our host libraries are bound into `/usr/local/nvidia/lib64`, which CUDA images put first on `LD_LIBRARY_PATH`,
//! so ordering the linker's configuration is not enough: the soname links there (`libcuda.so.1`, ...) are pointed
//! at the compat libraries and the host files they replace are taken away (so ldconfig does not point the links
//! back at them), and the compat directory is listed first for the image's ldconfig.

use std::path::{Path, PathBuf};

use super::procfs::is_version;
use super::require::compare;
use super::setup::Setup;

/// Where CUDA images keep the forward-compatibility libraries.
pub(crate) const COMPAT_DIR: &str = "/usr/local/cuda/compat";

/// The version of the image's compat `libcuda` under `root`, if it has one.
fn compat_version(root: &Path) -> Option<String> {
    let dir = root.join(COMPAT_DIR.trim_start_matches('/'));
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("libcuda.so.")
                .filter(|v| is_version(v))
                .map(String::from)
        })
        .max_by(|a, b| compare(a, b))
}

/// `setup` changed to prefer the image's compat libraries when they are newer than the host driver; the host
/// files they replace are removed from the tree at `root` (unmounted first inside the container).
pub(crate) fn prefer_newer_compat(setup: &Setup, root: &Path) -> Result<Setup, String> {
    let mut setup = setup.clone();
    let (Some(host), Some(compat)) = (setup.driver_version.clone(), compat_version(root)) else {
        return Ok(setup);
    };
    if compare(&compat, &host) != std::cmp::Ordering::Greater {
        tracing::debug!(
            "the image's CUDA compat libraries ({compat}) are not newer than the driver ({host})"
        );
        return Ok(setup);
    }
    let compat_dir = root.join(COMPAT_DIR.trim_start_matches('/'));
    let provided = |soname: &str| compat_dir.join(soname).exists();
    for (link, target) in &mut setup.links {
        let Some(soname) = link.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        // Only the soname links that lead to a host file (`libcuda.so.1 -> libcuda.so.550.54.15`).
        if !provided(&soname) || target.components().count() != 1 || !is_host_file(target) {
            continue;
        }
        let replaced = link.parent().unwrap_or(Path::new("/")).join(&*target);
        take_away(&root.join(replaced.strip_prefix("/").unwrap_or(&replaced)))?;
        *target = Path::new(COMPAT_DIR).join(&soname);
    }
    for (soname, path) in &mut setup.libraries {
        if provided(soname) {
            *path = Path::new(COMPAT_DIR).join(&*soname);
        }
    }
    setup.ld_dirs.insert(0, PathBuf::from(COMPAT_DIR));
    Ok(setup)
}

/// `libcuda.so.550.54.15`: a versioned file name, as the driver's files are bound.
fn is_host_file(target: &Path) -> bool {
    let name = target.to_string_lossy();
    name.split_once(".so.").is_some_and(|(_, v)| is_version(v))
}

/// Removes a bound host library: unmount it (inside the container it is a bind mount; elsewhere this fails
/// harmlessly) and delete the file left under it.
fn take_away(path: &Path) -> Result<(), String> {
    let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!(
            "removing {} in favour of the image's CUDA compat library: {e}",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The image side of a CUDA 12.8 image on a 550 (CUDA 12.4) host: `/usr/local/cuda/compat` holds the
    /// 570 libraries. Whether CUDA then runs on the old kernel module only hardware shows (`scripts/gpu-check`).
    fn image(compat: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("usr/local/cuda/compat");
        std::fs::create_dir_all(&dir).unwrap();
        for base in ["libcuda", "libnvidia-ptxjitcompiler"] {
            std::fs::write(dir.join(format!("{base}.so.{compat}")), b"").unwrap();
            std::os::unix::fs::symlink(
                format!("{base}.so.{compat}"),
                dir.join(format!("{base}.so.1")),
            )
            .unwrap();
        }
        let lib = root.path().join("usr/local/nvidia/lib64");
        std::fs::create_dir_all(&lib).unwrap();
        for base in ["libcuda", "libnvidia-ptxjitcompiler", "libnvidia-ml"] {
            std::fs::write(lib.join(format!("{base}.so.550.54.15")), b"").unwrap();
        }
        root
    }

    fn setup() -> Setup {
        let dir = Path::new("/usr/local/nvidia/lib64");
        let mut setup = Setup {
            ld_dirs: vec![dir.into()],
            driver_version: Some("550.54.15".into()),
            ..Setup::default()
        };
        for base in ["libcuda", "libnvidia-ptxjitcompiler", "libnvidia-ml"] {
            let file = format!("{base}.so.550.54.15");
            setup
                .links
                .push((dir.join(format!("{base}.so.1")), file.clone().into()));
            setup.links.push((
                dir.join(format!("{base}.so")),
                format!("{base}.so.1").into(),
            ));
            setup
                .libraries
                .push((format!("{base}.so.1"), dir.join(file)));
        }
        setup
    }

    #[test]
    fn newer_compat_libraries_replace_the_hosts_and_come_first() {
        let root = image("570.124.06");
        let r = root.path();
        let chosen = prefer_newer_compat(&setup(), r).unwrap();
        let target = |name: &str| {
            chosen
                .links
                .iter()
                .find(|(l, _)| l.ends_with(name))
                .map(|(_, t)| t.display().to_string())
                .unwrap()
        };
        assert_eq!(
            target("libcuda.so.1"),
            "/usr/local/cuda/compat/libcuda.so.1"
        );
        assert_eq!(
            target("libnvidia-ptxjitcompiler.so.1"),
            "/usr/local/cuda/compat/libnvidia-ptxjitcompiler.so.1"
        );
        assert_eq!(
            target("libcuda.so"),
            "libcuda.so.1",
            "the development link follows"
        );
        assert_eq!(
            target("libnvidia-ml.so.1"),
            "libnvidia-ml.so.550.54.15",
            "NVML stays the host's"
        );
        assert_eq!(chosen.ld_dirs[0], Path::new(COMPAT_DIR));
        assert!(
            !r.join("usr/local/nvidia/lib64/libcuda.so.550.54.15")
                .exists()
        );
        assert!(
            r.join("usr/local/nvidia/lib64/libnvidia-ml.so.550.54.15")
                .exists()
        );
        assert!(chosen.libraries.contains(&(
            "libcuda.so.1".into(),
            "/usr/local/cuda/compat/libcuda.so.1".into()
        )));
        // Then the usual set-up makes the links: the job's libcuda.so.1 is the compat one.
        chosen.run_in(r).unwrap();
        let lib = r.join("usr/local/nvidia/lib64");
        assert_eq!(
            std::fs::read_link(lib.join("libcuda.so.1")).unwrap(),
            Path::new("/usr/local/cuda/compat/libcuda.so.1")
        );
    }

    #[test]
    fn older_or_absent_compat_libraries_change_nothing() {
        let older = image("535.104.05");
        assert_eq!(
            prefer_newer_compat(&setup(), older.path()).unwrap(),
            setup()
        );
        assert!(
            older
                .path()
                .join("usr/local/nvidia/lib64/libcuda.so.550.54.15")
                .exists()
        );
        let none = tempfile::tempdir().unwrap();
        assert_eq!(prefer_newer_compat(&setup(), none.path()).unwrap(), setup());
    }
}
