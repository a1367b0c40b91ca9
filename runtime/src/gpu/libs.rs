//! Which driver files a job gets for the capabilities in `NVIDIA_DRIVER_CAPABILITIES` (the lists
//! libnvidia-container uses), and where they are on the host: libraries through the host's `ld.so.cache`, matched
//! to the loaded driver's version, else by scanning the usual library directories; binaries in the usual bin
//! directories.

use std::path::{Path, PathBuf};

use super::{GpuError, elf, ldcache, procfs};

/// The capabilities when neither the request nor the image names any.
pub const DEFAULT_CAPABILITIES: &str = "utility,compute";

/// Every word `NVIDIA_DRIVER_CAPABILITIES` may hold besides `all` and `none`; `all` means these.
const CAPABILITIES: [&str; 7] = [
    "utility", "compute", "video", "graphics", "display", "ngx", "compat32",
];

fn libraries_for(capability: &str) -> &'static [&'static str] {
    match capability {
        "utility" => &["libnvidia-ml", "libnvidia-cfg", "libnvidia-nscq"],
        "compute" => &[
            "libcuda",
            "libcudadebugger",
            "libnvidia-opencl",
            "libnvidia-ptxjitcompiler",
            "libnvidia-fatbinaryloader",
            "libnvidia-allocator",
            "libnvidia-compiler",
            "libnvidia-nvvm",
            "libnvidia-gpucomp",
            "libnvidia-pkcs11",
            "libnvidia-pkcs11-openssl3",
            "libnvidia-tileiras",
        ],
        "video" => &[
            "libvdpau_nvidia",
            "libnvidia-encode",
            "libnvidia-opticalflow",
            "libnvcuvid",
        ],
        "graphics" => &[
            "libnvidia-eglcore",
            "libnvidia-glcore",
            "libnvidia-tls",
            "libnvidia-glsi",
            "libnvidia-fbc",
            "libnvidia-ifr",
            "libnvidia-rtcore",
            "libnvoptix",
            "libGLX_nvidia",
            "libEGL_nvidia",
            "libGLESv2_nvidia",
            "libGLESv1_CM_nvidia",
            "libnvidia-glvkspirv",
            "libnvidia-cbl",
        ],
        "ngx" => &["libnvidia-ngx"],
        _ => &[],
    }
}

fn binaries_for(capability: &str) -> &'static [&'static str] {
    match capability {
        "utility" => &[
            "nvidia-smi",
            "nvidia-debugdump",
            "nvidia-persistenced",
            "nv-fabricmanager",
        ],
        "compute" => &["nvidia-cuda-mps-control", "nvidia-cuda-mps-server"],
        _ => &[],
    }
}

/// Without these the capability is useless: their absence is an error, not a skip.
fn required(base: &str) -> bool {
    base == "libcuda" || base == "libnvidia-ml"
}

/// `utility,compute` → those two; `all` → every capability; `none` → none (the devices alone); unknown words are
/// ignored with a warning.
pub(crate) fn parse_capabilities(text: &str) -> Vec<&'static str> {
    let mut caps = Vec::new();
    for word in text
        .split(',')
        .map(|w| w.trim().to_ascii_lowercase())
        .filter(|w| !w.is_empty())
    {
        if word == "all" {
            return CAPABILITIES.to_vec();
        }
        if word == "none" {
            continue;
        }
        match CAPABILITIES.iter().find(|c| **c == word) {
            Some(c) if !caps.contains(c) => caps.push(*c),
            Some(_) => {}
            None => tracing::warn!("unknown NVIDIA driver capability {word:?} ignored"),
        }
    }
    caps
}

/// A driver library on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Library {
    /// Where it is, under the driver root.
    pub host_path: PathBuf,
    /// `libcuda.so.550.54.15`.
    pub file_name: String,
    /// `libcuda.so.1`.
    pub soname: String,
    /// `libcuda`.
    pub base: &'static str,
}

/// Directories scanned when the cache does not know a library (relative to the driver root).
const LIB_DIRS: [&str; 8] = [
    "usr/lib/x86_64-linux-gnu",
    "lib/x86_64-linux-gnu",
    "usr/lib/aarch64-linux-gnu",
    "lib/aarch64-linux-gnu",
    "usr/lib64",
    "lib64",
    "usr/lib",
    "lib",
];

const BIN_DIRS: [&str; 6] = [
    "usr/local/sbin",
    "usr/local/bin",
    "usr/sbin",
    "usr/bin",
    "sbin",
    "bin",
];

/// The driver's libraries for `capabilities` under `root`; `version` is the loaded kernel module's.
pub(crate) fn libraries(
    root: &Path,
    version: Option<&str>,
    capabilities: &[&str],
) -> Result<Vec<Library>, GpuError> {
    let cache = read_cache(root, ldcache::Entry::is_native);
    let mut found = Vec::new();
    for cap in capabilities {
        for &base in libraries_for(cap) {
            match find_library(root, &cache, &LIB_DIRS, base, version)? {
                Some(lib) => found.push(lib),
                None if required(base) => {
                    return Err(GpuError::MissingDriverFile {
                        what: format!("{base}.so.{}", version.unwrap_or("<version>")),
                        looked: "in the ld.so cache and the library directories".into(),
                        version: version.unwrap_or("(unknown)").into(),
                    });
                }
                None => tracing::debug!("{base} not found: not injected"),
            }
        }
    }
    Ok(found)
}

/// With `compat32`: the 32-bit copies of the libraries for the other capabilities, as the host's cache lists
/// them (32-bit x86 programs on x86_64; none is required, a host without them gets a warning).
pub(crate) fn compat32_libraries(
    root: &Path,
    version: Option<&str>,
    capabilities: &[&str],
) -> Result<Vec<Library>, GpuError> {
    let cache = read_cache(root, ldcache::Entry::is_compat32);
    let mut found = Vec::new();
    for cap in capabilities {
        for &base in libraries_for(cap) {
            if let Some(lib) = find_library(root, &cache, &[], base, version)? {
                found.push(lib);
            }
        }
    }
    if found.is_empty() && capabilities.iter().any(|c| !libraries_for(c).is_empty()) {
        tracing::warn!(
            "compat32 asked for, but the host's ld.so.cache lists no 32-bit NVIDIA library"
        );
    }
    Ok(found)
}

/// The entries of the host's `ld.so.cache` that `keep` accepts; none without a usable cache.
fn read_cache(root: &Path, keep: fn(&ldcache::Entry) -> bool) -> Vec<ldcache::Entry> {
    match ldcache::read(&root.join("etc/ld.so.cache")) {
        Ok(entries) => entries.into_iter().filter(keep).collect(),
        Err(e) => {
            tracing::debug!(
                "no usable ld.so.cache under {}: {e}; scanning library directories",
                root.display()
            );
            Vec::new()
        }
    }
}

/// The version part of `file` if it is `base.so.VERSION`.
fn version_of<'a>(file: &'a str, base: &str) -> Option<&'a str> {
    file.strip_prefix(base)?
        .strip_prefix(".so.")
        .filter(|v| procfs::is_version(v))
}

fn find_library(
    root: &Path,
    cache: &[ldcache::Entry],
    scan_dirs: &[&str],
    base: &'static str,
    version: Option<&str>,
) -> Result<Option<Library>, GpuError> {
    let mut stale = None;
    // The cache names the soname link (`.../libcuda.so.1`); the file it leads to carries the driver version.
    for e in cache
        .iter()
        .filter(|e| e.soname.starts_with(&format!("{base}.so")))
    {
        let Some(host_path) = resolve_under(root, &e.path) else {
            continue;
        };
        let Some(file) = host_path
            .file_name()
            .and_then(|f| f.to_str())
            .map(String::from)
        else {
            continue;
        };
        let Some(v) = version_of(&file, base) else {
            continue;
        };
        if version.is_some_and(|want| want != v) {
            stale = Some((file.clone(), v.to_string()));
            continue;
        }
        let soname = if e.soname == format!("{base}.so") {
            elf::soname(&host_path).unwrap_or_else(|| file.clone())
        } else {
            e.soname.clone()
        };
        return Ok(Some(Library {
            host_path,
            file_name: file,
            soname,
            base,
        }));
    }
    // A directory scan, for hosts whose cache does not list the driver.
    for dir in scan_dirs.iter().map(|d| root.join(d)) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some(v) = version_of(&file, base) else {
                continue;
            };
            if version.is_some_and(|want| want != v) {
                stale.get_or_insert((file.clone(), v.to_string()));
                continue;
            }
            let host_path = entry.path();
            let soname = elf::soname(&host_path).unwrap_or_else(|| file.clone());
            return Ok(Some(Library {
                host_path,
                file_name: file,
                soname,
                base,
            }));
        }
    }
    match (stale, version) {
        (Some((file, found)), Some(version)) if required(base) => Err(GpuError::DriverMismatch {
            library: file,
            found,
            version: version.into(),
        }),
        _ => Ok(None),
    }
}

/// The file `path` (absolute, as the driver root sees it) leads to, following symlinks as if `root` were `/`.
fn resolve_under(root: &Path, path: &Path) -> Option<PathBuf> {
    if root == Path::new("/") {
        return std::fs::canonicalize(path).ok();
    }
    let mut current = path.to_path_buf();
    for _ in 0..40 {
        let host = root.join(current.strip_prefix("/").unwrap_or(&current));
        match std::fs::read_link(&host) {
            Ok(target) if target.is_absolute() => current = target,
            Ok(target) => current = current.parent()?.join(target),
            Err(_) => return host.is_file().then_some(host),
        }
    }
    None
}

/// The graphics loaders' vendor files (Vulkan ICD and layers, GLVND EGL vendor, EGL external platforms) and
/// OptiX's data, as (host path, container path): the loaders find the NVIDIA libraries through them.
const GRAPHICS_FILES: [&str; 9] = [
    "etc/vulkan/icd.d/nvidia_icd.json",
    "etc/vulkan/implicit_layer.d/nvidia_layers.json",
    "usr/share/vulkan/icd.d/nvidia_icd.json",
    "usr/share/vulkan/implicit_layer.d/nvidia_layers.json",
    "usr/share/glvnd/egl_vendor.d/10_nvidia.json",
    "usr/share/egl/egl_external_platform.d/10_nvidia_wayland.json",
    "usr/share/egl/egl_external_platform.d/15_nvidia_gbm.json",
    "usr/share/egl/egl_external_platform.d/20_nvidia_xcb.json",
    "usr/share/nvidia/nvoptix.bin",
];

/// The vendor files under `root` for `capabilities` (graphics only), each at its own path in the container.
pub(crate) fn config_files(root: &Path, capabilities: &[&str]) -> Vec<(PathBuf, PathBuf)> {
    if !capabilities.contains(&"graphics") {
        return Vec::new();
    }
    GRAPHICS_FILES
        .iter()
        .map(|rel| (root.join(rel), Path::new("/").join(rel)))
        .filter(|(host, _)| host.is_file())
        .collect()
}

/// The driver's binaries for `capabilities` under `root`: (name, host path).
pub(crate) fn binaries(root: &Path, capabilities: &[&str]) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    for cap in capabilities {
        for name in binaries_for(cap) {
            if let Some(path) = BIN_DIRS
                .iter()
                .map(|d| root.join(d).join(name))
                .find(|p| p.is_file())
            {
                found.push((name.to_string(), path));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::super::testing::{FakeDriver, LIB_DIR};
    use super::*;

    fn names(libs: &[Library]) -> Vec<(&str, &str)> {
        let mut v: Vec<_> = libs
            .iter()
            .map(|l| (l.file_name.as_str(), l.soname.as_str()))
            .collect();
        v.sort();
        v
    }

    const EXPECTED: [(&str, &str); 7] = [
        ("libcuda.so.550.54.15", "libcuda.so.1"),
        ("libcudadebugger.so.550.54.15", "libcudadebugger.so.1"),
        ("libnvidia-cfg.so.550.54.15", "libnvidia-cfg.so.1"),
        ("libnvidia-ml.so.550.54.15", "libnvidia-ml.so.1"),
        ("libnvidia-nvvm.so.550.54.15", "libnvidia-nvvm.so.4"),
        (
            "libnvidia-ptxjitcompiler.so.550.54.15",
            "libnvidia-ptxjitcompiler.so.1",
        ),
        ("libnvidia-tileiras.so.550.54.15", "libnvidia-tileiras.so.1"),
    ];

    // No GPU here: a fake driver tree (with an ld.so.cache made by the real ldconfig) stands in for one.
    #[test]
    fn utility_and_compute_libraries_come_from_the_cache() {
        let fake = FakeDriver::new("550.54.15").build();
        let caps = parse_capabilities(DEFAULT_CAPABILITIES);
        let libs = libraries(fake.root(), Some("550.54.15"), &caps).unwrap();
        assert_eq!(names(&libs), EXPECTED);
        assert!(
            libs.iter()
                .all(|l| l.host_path.starts_with(fake.root().join(LIB_DIR)))
        );
    }

    #[test]
    fn the_cache_finds_libraries_outside_the_usual_directories() {
        let fake = FakeDriver::new("550.54.15")
            .lib_dir("opt/nvidia/lib")
            .build();
        let libs = libraries(fake.root(), Some("550.54.15"), &["utility", "compute"]).unwrap();
        assert_eq!(names(&libs), EXPECTED);
        assert!(
            libs.iter()
                .all(|l| l.host_path.starts_with(fake.root().join("opt/nvidia/lib")))
        );
        let scanned = FakeDriver::new("550.54.15")
            .lib_dir("opt/nvidia/lib")
            .without_ld_cache()
            .build();
        assert!(libraries(scanned.root(), Some("550.54.15"), &["compute"]).is_err());
    }

    #[test]
    fn without_a_cache_the_library_directories_are_scanned() {
        let fake = FakeDriver::new("550.54.15").without_ld_cache().build();
        let libs = libraries(fake.root(), Some("550.54.15"), &["utility", "compute"]).unwrap();
        assert_eq!(names(&libs), EXPECTED);
    }

    #[test]
    fn video_adds_the_encoder_and_all_means_all() {
        let fake = FakeDriver::new("550.54.15").build();
        let libs = libraries(fake.root(), Some("550.54.15"), &parse_capabilities("video")).unwrap();
        assert_eq!(
            names(&libs),
            [("libnvidia-encode.so.550.54.15", "libnvidia-encode.so.1")]
        );
        let all = libraries(fake.root(), Some("550.54.15"), &parse_capabilities("all")).unwrap();
        assert!(
            all.iter()
                .any(|l| l.file_name == "libnvidia-glcore.so.550.54.15")
        );
        assert!(!all.iter().any(|l| l.file_name.starts_with("libfoo")));
    }

    #[test]
    fn a_library_of_another_driver_version_is_a_mismatch() {
        let fake = FakeDriver::new("535.104.05").build();
        let err = libraries(fake.root(), Some("550.54.15"), &["compute"]).unwrap_err();
        assert!(matches!(err, GpuError::DriverMismatch { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("libcuda.so.535.104.05 is version 535.104.05"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_libcuda_is_an_error_that_says_what_to_install() {
        let empty = tempfile::tempdir().unwrap();
        let err = libraries(empty.path(), Some("550.54.15"), &["compute"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("libcuda.so.550.54.15 was not found"),
            "{err}"
        );
    }

    #[test]
    fn binaries_follow_capabilities() {
        let fake = FakeDriver::new("550.54.15").nvidia_smi_stub().build();
        let bins: Vec<String> = binaries(fake.root(), &["utility"])
            .into_iter()
            .map(|b| b.0)
            .collect();
        assert_eq!(bins, ["nvidia-smi", "nvidia-debugdump"]);
        let bins: Vec<String> = binaries(fake.root(), &["compute"])
            .into_iter()
            .map(|b| b.0)
            .collect();
        assert_eq!(bins, ["nvidia-cuda-mps-control"]);
    }

    #[test]
    fn capability_words() {
        assert_eq!(
            parse_capabilities(" Compute, utility,compute,bogus"),
            ["compute", "utility"]
        );
        assert_eq!(parse_capabilities("all").len(), 7);
        assert!(parse_capabilities("all").contains(&"compat32"));
        assert_eq!(parse_capabilities("none"), Vec::<&str>::new());
        assert_eq!(parse_capabilities("none,utility"), ["utility"]);
    }
}
