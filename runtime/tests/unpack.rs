//! Unpacking layers: every escape a malicious layer can try leaves the world outside the layer directory
//! untouched, and overlay's conventions and file metadata come out right.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use runtime::image::unpack::{Privilege, UnpackError, UnpackOptions, unpack};
use test_support::raw_tar::{Layer, Sandbox};

fn options() -> UnpackOptions {
    UnpackOptions::for_this_process()
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid NUL-terminated strings and a writable buffer of the given length.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return None;
    }
    buf.truncate(len as usize);
    Some(buf)
}

/// Unpacks `tar` into the sandbox's layer directory and checks the outside is unchanged.
fn unpack_in_sandbox(
    tar: &[u8],
) -> (
    Sandbox,
    Result<runtime::image::unpack::UnpackStats, UnpackError>,
) {
    let sandbox = Sandbox::new();
    let before = sandbox.outside();
    let result = unpack(tar, &sandbox.layer(), &options());
    assert_eq!(
        before,
        sandbox.outside(),
        "something outside the layer directory changed"
    );
    (sandbox, result)
}

#[test]
fn dotdot_entry_is_refused_and_nothing_outside_changes() {
    for name in [
        "../canary/secret",
        "a/../../canary/evil",
        "./../../../../tmp/evil",
    ] {
        let tar = Layer::new().dir("a/").file(name, b"pwned").tar();
        let (_sandbox, result) = unpack_in_sandbox(&tar);
        assert!(
            matches!(result, Err(UnpackError::Escapes(_))),
            "{name}: {result:?}"
        );
    }
}

#[test]
fn absolute_names_are_made_relative() {
    let path = Sandbox::new().canary().join("secret");
    let tar = Layer::new()
        .file(path.to_str().unwrap(), b"inside")
        .file("/etc/passwd", b"x")
        .tar();
    let (sandbox, result) = unpack_in_sandbox(&tar);
    result.unwrap();
    let inside = sandbox.layer().join(path.strip_prefix("/").unwrap());
    assert_eq!(std::fs::read(inside).unwrap(), b"inside");
    assert_eq!(
        std::fs::read(sandbox.layer().join("etc/passwd")).unwrap(),
        b"x"
    );
}

#[test]
fn writes_through_a_planted_symlink_stay_inside() {
    let sandbox_probe = Sandbox::new();
    let canary = sandbox_probe.canary();
    let tar = Layer::new()
        // Climbing symlink: resolves to the layer root itself.
        .symlink("up", "../../../../../..")
        .file("up/pwned-relative", b"1")
        // Absolute symlink to /: also the layer root.
        .symlink("root", "/")
        .file("root/pwned-absolute", b"2")
        .tar();
    let (sandbox, result) = unpack_in_sandbox(&tar);
    result.unwrap();
    assert_eq!(
        std::fs::read(sandbox.layer().join("pwned-relative")).unwrap(),
        b"1"
    );
    assert_eq!(
        std::fs::read(sandbox.layer().join("pwned-absolute")).unwrap(),
        b"2"
    );
    assert!(!Path::new("/pwned-absolute").exists());
    // A symlink to the host path of a real directory: followed inside the layer, where it does not exist.
    let sandbox = Sandbox::new();
    let canary_here = sandbox.canary();
    let tar = Layer::new()
        .symlink("host", canary_here.to_str().unwrap())
        .file("host/secret", b"overwritten?")
        .tar();
    let before = sandbox.outside();
    let result = unpack(&tar[..], &sandbox.layer(), &options());
    assert_eq!(before, sandbox.outside());
    assert_eq!(
        std::fs::read(canary_here.join("secret")).unwrap(),
        b"do not touch"
    );
    if result.is_ok() {
        let inside = sandbox
            .layer()
            .join(canary_here.strip_prefix("/").unwrap())
            .join("secret");
        assert_eq!(std::fs::read(inside).unwrap(), b"overwritten?");
    }
    drop(canary);
}

#[test]
fn symlink_chains_resolve_inside_the_layer() {
    let tar = Layer::new()
        .symlink("a", "b")
        .symlink("b", "/c")
        .symlink("c", "../../../../d")
        .dir("d/")
        .file("a/x", b"chained")
        .tar();
    let (sandbox, result) = unpack_in_sandbox(&tar);
    result.unwrap();
    assert_eq!(
        std::fs::read(sandbox.layer().join("d/x")).unwrap(),
        b"chained"
    );
    // Symlinks are kept as written, absolute ones included.
    assert_eq!(
        std::fs::read_link(sandbox.layer().join("b")).unwrap(),
        Path::new("/c")
    );
}

#[test]
fn hardlink_outside_is_refused() {
    let tar = Layer::new().hardlink("h", "../canary/secret").tar();
    let (_s, result) = unpack_in_sandbox(&tar);
    assert!(
        matches!(result, Err(UnpackError::LinkEscapes { .. })),
        "{result:?}"
    );

    // Through a symlink to the host path: resolved inside the layer, where there is nothing to link.
    let sandbox = Sandbox::new();
    let secret = sandbox.canary().join("secret");
    let tar = Layer::new()
        .symlink("host", sandbox.canary().to_str().unwrap())
        .hardlink("h", "host/secret")
        .tar();
    let before = sandbox.outside();
    let result = unpack(&tar[..], &sandbox.layer(), &options());
    assert_eq!(before, sandbox.outside());
    assert!(
        matches!(result, Err(UnpackError::LinkTargetMissing { .. })),
        "{result:?}"
    );
    assert_eq!(std::fs::metadata(secret).unwrap().nlink(), 1);

    // A hard link to a symlink links the symlink, never what it points to.
    let tar = Layer::new()
        .symlink("s", "/canary/secret")
        .hardlink("h", "s")
        .tar();
    let (sandbox, result) = unpack_in_sandbox(&tar);
    result.unwrap();
    assert!(
        std::fs::symlink_metadata(sandbox.layer().join("h"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn hardlinks_share_an_inode() {
    let tar = Layer::new()
        .dir("bin/")
        .file_with("bin/busybox", b"#!binary", 0o755, 0, 0, 1_600_000_000)
        .hardlink("bin/sh", "bin/busybox")
        .hardlink("bin/ls", "/bin/busybox")
        .tar();
    let (sandbox, result) = unpack_in_sandbox(&tar);
    result.unwrap();
    let a = std::fs::metadata(sandbox.layer().join("bin/busybox")).unwrap();
    let b = std::fs::metadata(sandbox.layer().join("bin/sh")).unwrap();
    let c = std::fs::metadata(sandbox.layer().join("bin/ls")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.ino(), c.ino());
    assert_eq!(a.nlink(), 3);
}

#[test]
fn whiteouts_and_opaque_directories_become_overlay_markers() {
    let tar = Layer::new()
        .dir("etc/")
        .file("etc/.wh.motd", b"")
        .dir("var/cache/")
        .file("var/cache/.wh..wh..opq", b"")
        .file("var/cache/new", b"kept")
        .file(".wh..wh.plnk", b"")
        .tar();
    let (sandbox, result) = unpack_in_sandbox(&tar);
    result.unwrap();
    let motd = std::fs::symlink_metadata(sandbox.layer().join("etc/motd")).unwrap();
    assert!(motd.file_type().is_char_device());
    assert_eq!(motd.rdev(), 0);
    assert!(!sandbox.layer().join("etc/.wh.motd").exists());
    let opaque = Privilege::detect().opaque_xattr();
    assert_eq!(
        xattr(&sandbox.layer().join("var/cache"), opaque).as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        std::fs::read(sandbox.layer().join("var/cache/new")).unwrap(),
        b"kept"
    );
    assert!(!sandbox.layer().join(".wh..wh.plnk").exists());
    assert!(!sandbox.layer().join("var/cache/.wh..wh..opq").exists());
}

#[test]
fn rootless_rules_use_user_xattrs_and_skip_devices() {
    let tar = Layer::new()
        .dir("d/")
        .file("d/.wh..wh..opq", b"")
        .char_device("null", 1, 3)
        .fifo("pipe")
        .tar();
    let sandbox = Sandbox::new();
    let mut opts = options();
    opts.privilege = opts.privilege.without_host_root();
    unpack(&tar[..], &sandbox.layer(), &opts).unwrap();
    assert_eq!(
        xattr(&sandbox.layer().join("d"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!sandbox.layer().join("null").exists());
    assert!(
        std::fs::symlink_metadata(sandbox.layer().join("pipe"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

/// A device node in the store hands the host's device to whoever reaches the file: only overlay
/// whiteouts (0:0 character devices) are made, as root too.
#[test]
fn device_nodes_other_than_whiteouts_are_never_created() {
    let tar = Layer::new()
        .dir("dev/")
        .block_device("dev/sda", 8, 0)
        .char_device("dev/mem", 1, 1)
        .char_device("dev/null", 1, 3)
        .char_device("gone", 0, 0)
        .tar();
    let (sandbox, result) = unpack_in_sandbox(&tar);
    result.unwrap();
    for name in ["dev/sda", "dev/mem", "dev/null"] {
        assert!(
            std::fs::symlink_metadata(sandbox.layer().join(name)).is_err(),
            "{name} was created"
        );
    }
    let whiteout = std::fs::symlink_metadata(sandbox.layer().join("gone")).unwrap();
    assert!(whiteout.file_type().is_char_device());
    assert_eq!(whiteout.rdev(), 0);
}

#[test]
fn modes_times_owners_and_xattrs_are_kept() {
    let tar = Layer::new()
        .dir_with("ro/", 0o555, 1_500_000_000)
        .file_with("ro/suid", b"x", 0o4755, 0, 0, 1_400_000_000)
        .pax(&[
            ("SCHILY.xattr.user.note", b"hello"),
            ("mtime", b"1300000000.25"),
        ])
        .file_with("owned", b"y", 0o640, 1234, 5678, 1)
        .pax(&[("SCHILY.xattr.trusted.overlay.redirect", b"/etc")])
        .file("sneaky", b"z")
        .symlink("link", "owned")
        .file_with("group-writable", b"g", 0o777, 0, 0, 1)
        .tar();
    let (sandbox, result) = unpack_in_sandbox(&tar);
    result.unwrap();
    let root = sandbox.layer();
    let ro = std::fs::metadata(root.join("ro")).unwrap();
    assert_eq!(ro.permissions().mode() & 0o7777, 0o555);
    assert_eq!(
        ro.mtime(),
        1_500_000_000,
        "directory mtimes are set after their contents"
    );
    let suid = std::fs::metadata(root.join("ro/suid")).unwrap();
    assert_eq!(suid.mtime(), 1_400_000_000);
    let open = std::fs::metadata(root.join("group-writable")).unwrap();
    assert_eq!(
        open.permissions().mode() & 0o7777,
        0o777,
        "modes are kept whatever the umask"
    );
    let owned = std::fs::metadata(root.join("owned")).unwrap();
    assert_eq!(owned.permissions().mode() & 0o7777, 0o640);
    assert_eq!(
        (owned.mtime(), owned.mtime_nsec()),
        (1_300_000_000, 250_000_000)
    );
    assert_eq!(
        xattr(&root.join("owned"), "user.note").as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(
        xattr(&root.join("sneaky"), "trusted.overlay.redirect"),
        None,
        "layers may not set overlay xattrs"
    );
    if Privilege::detect().host_root {
        assert_eq!(suid.permissions().mode() & 0o7777, 0o4755);
        assert_eq!((owned.uid(), owned.gid()), (1234, 5678));
    }
}

#[test]
fn later_entries_replace_earlier_ones() {
    let tar = Layer::new()
        .file("twice", b"first")
        .file("twice", b"second")
        .file("becomes-dir", b"file")
        .dir("becomes-dir/")
        .file("becomes-dir/inside", b"ok")
        .dir("becomes-link/")
        .file("becomes-link/gone", b"gone")
        .symlink("becomes-link", "/elsewhere")
        .tar();
    let (sandbox, result) = unpack_in_sandbox(&tar);
    result.unwrap();
    let root = sandbox.layer();
    assert_eq!(std::fs::read(root.join("twice")).unwrap(), b"second");
    assert_eq!(
        std::fs::read(root.join("becomes-dir/inside")).unwrap(),
        b"ok"
    );
    assert_eq!(
        std::fs::read_link(root.join("becomes-link")).unwrap(),
        Path::new("/elsewhere")
    );
}

#[test]
fn many_files_and_large_files_arrive_intact() {
    let mut layer = Layer::new();
    for d in 0..20 {
        layer.dir(&format!("d{d}/"));
        for f in 0..100 {
            layer.file(&format!("d{d}/f{f}"), format!("{d}-{f}").as_bytes());
        }
    }
    let big: Vec<u8> = (0..(9u32 << 20)).map(|i| (i % 251) as u8).collect();
    layer.file("big", &big);
    // Files in directories the archive never lists are still created.
    layer.file("implicit/parents/file", b"p");
    let tar = layer.gzip();
    let sandbox = Sandbox::new();
    let decoded = flate2::read::GzDecoder::new(&tar[..]);
    let stats = unpack(decoded, &sandbox.layer(), &options()).unwrap();
    assert_eq!(stats.entries, 20 + 2000 + 2);
    for d in [0, 7, 19] {
        for f in [0, 50, 99] {
            let got = std::fs::read(sandbox.layer().join(format!("d{d}/f{f}"))).unwrap();
            assert_eq!(got, format!("{d}-{f}").as_bytes());
        }
    }
    assert_eq!(std::fs::read(sandbox.layer().join("big")).unwrap(), big);
    assert_eq!(
        std::fs::read(sandbox.layer().join("implicit/parents/file")).unwrap(),
        b"p"
    );
}
