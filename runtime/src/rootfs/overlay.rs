//! Kernel overlay. The new mount API (`fsopen`/`fsconfig`) takes one `lowerdir+` per layer (Linux 6.8+),
//! so no option string limits the number of layers; older kernels get `mount(2)` with the layers named
//! relative to their common parent, which fits about 60 store layers in one page.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::RootfsError;

const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;

/// Mounts `lowers` (top first) with `dir/upper` and `dir/work` at `target`.
pub(super) fn mount(
    lowers: &[PathBuf],
    dir: &Path,
    target: &Path,
    rootless: bool,
) -> Result<(), RootfsError> {
    let upper = dir.join("upper");
    let work = dir.join("work");
    match mount_new_api(lowers, &upper, &work, target, rootless) {
        Ok(()) => Ok(()),
        // ENOSYS: no new mount API; EINVAL from `lowerdir+`: a kernel before 6.8.
        Err(NewApiError::Unsupported) => mount_legacy(lowers, &upper, &work, target, rootless),
        Err(NewApiError::Failed(msg)) => Err(RootfsError::Overlay(msg)),
    }
}

enum NewApiError {
    Unsupported,
    Failed(String),
}

fn cstring(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap_or_default()
}

fn mount_new_api(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    rootless: bool,
) -> Result<(), NewApiError> {
    // SAFETY: fsopen with a NUL-terminated name; the fd it returns is owned below.
    let raw = unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), libc::FSOPEN_CLOEXEC) };
    if raw < 0 {
        return Err(NewApiError::Unsupported);
    }
    // SAFETY: `raw` is a new fd that nothing else owns.
    let fs = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    let config = |cmd: libc::c_uint,
                  key: Option<&std::ffi::CStr>,
                  value: Option<&CString>|
     -> Result<(), i32> {
        let key_ptr = key.map_or(std::ptr::null(), |k| k.as_ptr());
        let value_ptr = value.map_or(std::ptr::null(), |v| v.as_ptr());
        // SAFETY: fsconfig on our fs context fd with NUL-terminated key and value (or NULL for flags).
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                cmd,
                key_ptr,
                value_ptr,
                0,
            )
        };
        if r < 0 {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            Ok(())
        }
    };
    let failed = |what: &str, errno: i32| {
        let log = context_log(&fs);
        NewApiError::Failed(format!(
            "{what}: {}{}",
            std::io::Error::from_raw_os_error(errno),
            if log.is_empty() {
                String::new()
            } else {
                format!(" ({log})")
            }
        ))
    };
    for (i, lower) in lowers.iter().enumerate() {
        if let Err(errno) = config(
            FSCONFIG_SET_STRING,
            Some(c"lowerdir+"),
            Some(&cstring(lower)),
        ) {
            if i == 0 && errno == libc::EINVAL && context_log(&fs).contains("Unknown parameter") {
                return Err(NewApiError::Unsupported);
            }
            return Err(failed(
                &format!("lower directory {}", lower.display()),
                errno,
            ));
        }
    }
    config(
        FSCONFIG_SET_STRING,
        Some(c"upperdir"),
        Some(&cstring(upper)),
    )
    .map_err(|e| failed("upperdir", e))?;
    config(FSCONFIG_SET_STRING, Some(c"workdir"), Some(&cstring(work)))
        .map_err(|e| failed("workdir", e))?;
    if rootless {
        config(FSCONFIG_SET_FLAG, Some(c"userxattr"), None).map_err(|e| failed("userxattr", e))?;
    }
    // The upper directory is thrown away after the run: no syncfs of the whole state root filesystem at
    // unmount (it waits for every other writer's dirty data there, tens of ms on a busy machine).
    // And no uuid xattr written on the fresh upper directory. Kernels without these options (before
    // 5.10 and 6.6) mount without them.
    let _ = config(FSCONFIG_SET_FLAG, Some(c"volatile"), None);
    let _ = config(
        FSCONFIG_SET_STRING,
        Some(c"uuid"),
        Some(&CString::from(c"off")),
    );
    match config(FSCONFIG_CMD_CREATE, None, None) {
        Ok(()) => {}
        // Before 6.5 overlay took the new API through the kernel's legacy wrapper, which accepts any key and
        // only refuses `lowerdir+` when the options are parsed, here.
        Err(libc::EINVAL) if context_log(&fs).is_empty() => return Err(NewApiError::Unsupported),
        Err(e) => return Err(failed("creating the overlay", e)),
    }
    // SAFETY: fsmount of a created context; the returned mount fd is owned below.
    let m = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), libc::FSMOUNT_CLOEXEC, 0) };
    if m < 0 {
        return Err(failed(
            "fsmount",
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ));
    }
    // SAFETY: `m` is a new fd that nothing else owns.
    let mnt = unsafe { OwnedFd::from_raw_fd(m as i32) };
    let target_c = cstring(target);
    // SAFETY: attaches the detached mount `mnt` at `target`; both strings are NUL-terminated.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target_c.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(failed(
            "move_mount",
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ));
    }
    Ok(())
}

/// The messages the kernel left in an fs context ("e overlayfs: ...").
fn context_log(fs: &OwnedFd) -> String {
    let mut lines = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        // SAFETY: reading into a local buffer from our fs context fd.
        let n = unsafe { libc::read(fs.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        lines.push(
            String::from_utf8_lossy(&buf[..n as usize])
                .trim()
                .to_string(),
        );
    }
    lines.join("; ")
}

fn mount_legacy(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    rootless: bool,
) -> Result<(), RootfsError> {
    let (common, rel) = super::common_parent(lowers);
    let lowerdir: Vec<String> = rel
        .iter()
        .map(|p| p.display().to_string().replace(':', "\\:"))
        .collect();
    let mut data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowerdir.join(":"),
        upper.display(),
        work.display()
    );
    if rootless {
        data.push_str(",userxattr");
    }
    data.push_str(",volatile");
    if data.len() >= 4095 {
        return Err(RootfsError::Overlay(format!(
            "{} layers do not fit in one mount option string on this kernel (Linux 6.8+ lifts the limit)",
            lowers.len()
        )));
    }
    let previous = std::env::current_dir().ok();
    std::env::set_current_dir(&common)
        .map_err(|e| RootfsError::Overlay(format!("{}: {e}", common.display())))?;
    let result = nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(data.as_str()),
    );
    if let Some(dir) = previous {
        let _ = std::env::set_current_dir(dir);
    }
    result.map_err(|e| RootfsError::Overlay(e.to_string()))
}
