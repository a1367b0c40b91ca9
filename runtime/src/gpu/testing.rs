//! Test support: there is no GPU on the test machines, so a fake driver tree stands in for one — `/proc` files,
//! device nodes (plain files, or real character devices made with mknod as root), libraries named like a real
//! driver's (minimal ELF files with a SONAME, so the real `ldconfig` indexes them), binaries, firmware.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::edits::Edits;

/// A minimal 64-bit ELF shared library for this machine (the fixture both crates' tests share).
pub(crate) use test_support::gpu::elf_library;

/// The device node paths an edit gives the job, in order.
pub(crate) fn device_paths(edits: &Edits) -> Vec<&str> {
    edits
        .devices
        .iter()
        .map(|d| d.path.to_str().unwrap())
        .collect()
}

/// The same for 32-bit x86 (`ELFCLASS32`, `EM_386`): what ldconfig indexes as a compat32 library.
pub(crate) fn elf32_library(soname: &str) -> Vec<u8> {
    let mut strtab = b"\0libc.so.6\0".to_vec();
    let soname_at = strtab.len() as u32;
    strtab.extend_from_slice(soname.as_bytes());
    strtab.push(0);
    let (phoff, dyn_at) = (52u32, 52u32 + 2 * 32);
    let str_at = dyn_at + 5 * 8;
    let total = str_at + strtab.len() as u32;
    let mut f = b"\x7fELF\x01\x01\x01\0\0\0\0\0\0\0\0\0".to_vec();
    for v in [3u16, 3] {
        f.extend_from_slice(&v.to_le_bytes()); // ET_DYN, EM_386
    }
    for v in [1u32, 0, phoff, 0, 0] {
        f.extend_from_slice(&v.to_le_bytes()); // version, entry, phoff, shoff, flags
    }
    for v in [52u16, 32, 2, 40, 0, 0] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    for (kind, offset, size, flags, align) in [
        (1u32, 0u32, total, 4u32, 0x1000u32),
        (2, dyn_at, 5 * 8, 6, 4),
    ] {
        for v in [kind, offset, offset, offset, size, size, flags, align] {
            f.extend_from_slice(&v.to_le_bytes());
        }
    }
    for (tag, value) in [
        (1u32, 1u32),
        (14, soname_at),
        (5, str_at),
        (10, strtab.len() as u32),
        (0, 0),
    ] {
        f.extend_from_slice(&tag.to_le_bytes());
        f.extend_from_slice(&value.to_le_bytes());
    }
    f.extend_from_slice(&strtab);
    f
}

/// Where the fake driver's 32-bit copies are (with `compat32`).
pub(crate) const LIB32_DIR: &str = "usr/lib/i386-linux-gnu";

/// Libraries of the fake driver: (file name base, soname suffix).
const LIBS: [(&str, &str); 9] = [
    ("libcuda", "1"),
    ("libcudadebugger", "1"),
    ("libnvidia-ml", "1"),
    ("libnvidia-cfg", "1"),
    ("libnvidia-ptxjitcompiler", "1"),
    ("libnvidia-nvvm", "4"),
    ("libnvidia-tileiras", "1"),
    ("libnvidia-encode", "1"),
    ("libnvidia-glcore", ""),
];

pub(crate) const LIB_DIR: &str = "usr/lib/x86_64-linux-gnu";

pub(crate) struct FakeDriver {
    version: String,
    gpus: Vec<(String, String, String, u32)>,
    smi: bool,
    cache: bool,
    char_devices: bool,
    lib_dir: String,
    compat32: bool,
}

impl FakeDriver {
    pub fn new(version: &str) -> FakeDriver {
        FakeDriver {
            version: version.into(),
            gpus: Vec::new(),
            smi: false,
            cache: true,
            char_devices: false,
            lib_dir: LIB_DIR.into(),
            compat32: false,
        }
    }

    /// 32-bit copies of libcuda and libnvidia-ml in `usr/lib/i386-linux-gnu`, in the cache.
    pub fn compat32(mut self) -> FakeDriver {
        self.compat32 = true;
        self
    }

    pub fn gpu(mut self, bus: &str, name: &str, uuid: &str, minor: u32) -> FakeDriver {
        self.gpus
            .push((bus.into(), name.into(), uuid.into(), minor));
        self
    }

    /// `usr/bin/nvidia-smi` answering `--query-gpu` with the fake GPUs (81559 MiB each).
    pub fn nvidia_smi_stub(mut self) -> FakeDriver {
        self.smi = true;
        self
    }

    /// No `etc/ld.so.cache`: libraries are found by scanning directories.
    pub fn without_ld_cache(mut self) -> FakeDriver {
        self.cache = false;
        self
    }

    /// Where the libraries are (relative to the root; listed in `etc/ld.so.conf`).
    pub fn lib_dir(mut self, dir: &str) -> FakeDriver {
        self.lib_dir = dir.into();
        self
    }

    /// Real character devices (195:N ...) instead of plain files; needs root.
    pub fn char_devices(mut self) -> FakeDriver {
        self.char_devices = true;
        self
    }

    pub fn build(self) -> BuiltFake {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let write = |rel: &str, data: &[u8]| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, data).unwrap();
            p
        };
        write(
            "proc/driver/nvidia/version",
            format!(
                "NVRM version: NVIDIA UNIX x86_64 Kernel Module  {}  Tue Mar  5 2024\n",
                self.version
            )
            .as_bytes(),
        );
        write(
            "proc/driver/nvidia/params",
            b"ResmanDebugLevel: 4294967295\nModifyDeviceFiles: 1\nDeviceFileUID: 0\nDeviceFileGID: 0\nDeviceFileMode: 438\n",
        );
        write(
            "proc/driver/nvidia/capabilities/mig/config",
            b"DeviceFileMinor: 1\nDeviceFileMode: 256\nDeviceFileModify: 1\n",
        );
        let mut smi = String::from("#!/bin/sh\n");
        for (i, (bus, name, uuid, minor)) in self.gpus.iter().enumerate() {
            write(
                &format!("proc/driver/nvidia/gpus/{bus}/information"),
                format!("Model: \t\t {name}\nGPU UUID: \t {uuid}\nBus Location: \t {bus}\nDevice Minor: \t {minor}\n")
                    .as_bytes(),
            );
            self.device(root, &format!("dev/nvidia{minor}"), 195, *minor);
            smi.push_str(&format!("echo '{i}, {uuid}, {name}, 81559, 0000{bus}'\n"));
        }
        self.device(root, "dev/nvidiactl", 195, 255);
        self.device(root, "dev/nvidia-modeset", 195, 254);
        self.device(root, "dev/nvidia-uvm", 511, 0);
        self.device(root, "dev/nvidia-uvm-tools", 511, 1);
        self.device(root, "dev/nvidia-caps/nvidia-cap1", 236, 1);
        for (base, major) in LIBS {
            let file = format!("{base}.so.{}", self.version);
            let soname = if major.is_empty() {
                file.clone()
            } else {
                format!("{base}.so.{major}")
            };
            write(&format!("{}/{file}", self.lib_dir), &elf_library(&soname));
        }
        write(
            &format!("{}/libfoo.so.1", self.lib_dir),
            &elf_library("libfoo.so.1"),
        );
        let mut conf = format!("/{}\n", self.lib_dir);
        if self.compat32 {
            for base in ["libcuda", "libnvidia-ml"] {
                write(
                    &format!("{LIB32_DIR}/{base}.so.{}", self.version),
                    &elf32_library(&format!("{base}.so.1")),
                );
            }
            conf.push_str(&format!("/{LIB32_DIR}\n"));
        }
        write("etc/ld.so.conf", conf.as_bytes());
        if self.cache {
            // As on a real host: the soname links are made and the cache names them.
            let status = std::process::Command::new("ldconfig")
                .arg("-r")
                .arg(root)
                .status()
                .unwrap();
            assert!(status.success(), "ldconfig -r needs root");
        }
        let exe = |p: PathBuf| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap()
        };
        if self.smi {
            exe(write("usr/bin/nvidia-smi", smi.as_bytes()));
        }
        exe(write("usr/bin/nvidia-debugdump", b"#!/bin/sh\n"));
        exe(write("usr/bin/nvidia-cuda-mps-control", b"#!/bin/sh\n"));
        write(
            &format!("lib/firmware/nvidia/{}/gsp_ga10x.bin", self.version),
            b"firmware",
        );
        write("run/nvidia-persistenced/socket", b"");
        write("run/nvidia-fabricmanager/socket", b"");
        write("tmp/nvidia-mps/control", b"");
        write("var/mps/control", b"");
        write("usr/share/vulkan/icd.d/nvidia_icd.json", b"{}");
        write("usr/share/glvnd/egl_vendor.d/10_nvidia.json", b"{}");
        self.device(root, "dev/gdrdrv", 508, 0);
        self.device(root, "dev/nvidia-caps-imex-channels/channel0", 234, 0);
        self.device(root, "dev/nvidia-caps-imex-channels/channel1", 234, 1);
        BuiltFake { dir }
    }

    fn device(&self, root: &Path, rel: &str, major: u64, minor: u32) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        if self.char_devices {
            let mode = nix::sys::stat::Mode::from_bits_truncate(0o666);
            let dev = nix::sys::stat::makedev(major, minor.into());
            nix::sys::stat::mknod(&p, nix::sys::stat::SFlag::S_IFCHR, mode, dev)
                .expect("mknod needs root");
        } else {
            std::fs::write(&p, b"").unwrap();
        }
    }
}

pub(crate) struct BuiltFake {
    dir: tempfile::TempDir,
}

impl BuiltFake {
    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}
