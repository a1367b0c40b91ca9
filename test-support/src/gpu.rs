//! A fake NVIDIA driver tree: there is no GPU on the test machines, so `DSTACK_GPU_ROOT` points dstack at
//! `/proc/driver/nvidia` files for two GPUs (an H100 and an A100), device nodes made with mknod (195:N, with
//! no driver behind them: the tests check which nodes a job gets, not that they work), the 550.54.15
//! driver's libraries as tiny ELF files with their real sonames (indexed by the real `ldconfig`), and an
//! `nvidia-smi` script that, like the real one, lists only the GPUs whose device nodes it can see.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The driver's version, in `/proc/driver/nvidia/version` and the libraries' names.
pub const VERSION: &str = "550.54.15";
pub const H100: &str = "GPU-11111111-2222-3333-4444-aaaaaaaaaaaa";
pub const A100: &str = "GPU-11111111-2222-3333-4444-bbbbbbbbbbbb";

/// `nvidia-smi`: `--query-gpu` answers for the host; `-L` lists the GPUs whose nodes exist where it runs.
const NVIDIA_SMI: &str = r#"#!/bin/sh
case "$1" in
--query-gpu=*)
  echo "0, GPU-11111111-2222-3333-4444-aaaaaaaaaaaa, NVIDIA H100 80GB HBM3, 81559, 00000000:19:00.0"
  echo "1, GPU-11111111-2222-3333-4444-bbbbbbbbbbbb, NVIDIA A100-SXM4-80GB, 81920, 00000000:3B:00.0" ;;
-L)
  i=0
  for m in 0 1; do
    [ -e /dev/nvidia$m ] || continue
    case $m in
      0) echo "GPU $i: NVIDIA H100 80GB HBM3 (UUID: GPU-11111111-2222-3333-4444-aaaaaaaaaaaa)" ;;
      1) echo "GPU $i: NVIDIA A100-SXM4-80GB (UUID: GPU-11111111-2222-3333-4444-bbbbbbbbbbbb)" ;;
    esac
    i=$((i + 1))
  done ;;
*) exit 2 ;;
esac
"#;

/// A minimal 64-bit ELF shared library for this machine with `DT_NEEDED libc.so.6` and `DT_SONAME soname`.
pub fn elf_library(soname: &str) -> Vec<u8> {
    let mut strtab = b"\0libc.so.6\0".to_vec();
    let soname_at = strtab.len() as u64;
    strtab.extend_from_slice(soname.as_bytes());
    strtab.push(0);
    let (phoff, dyn_at) = (64u64, 64u64 + 2 * 56);
    let str_at = dyn_at + 5 * 16;
    let total = str_at + strtab.len() as u64;
    let machine: u16 = if cfg!(target_arch = "aarch64") {
        183
    } else {
        62
    };
    let mut f = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0".to_vec();
    f.extend_from_slice(&3u16.to_le_bytes());
    f.extend_from_slice(&machine.to_le_bytes());
    f.extend_from_slice(&1u32.to_le_bytes());
    for v in [0u64, phoff, 0] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    f.extend_from_slice(&0u32.to_le_bytes());
    for v in [64u16, 56, 2, 64, 0, 0] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    for (kind, flags, offset, size, align) in
        [(1u32, 4u32, 0u64, total, 0x1000u64), (2, 6, dyn_at, 80, 8)]
    {
        f.extend_from_slice(&kind.to_le_bytes());
        f.extend_from_slice(&flags.to_le_bytes());
        for v in [offset, offset, offset, size, size, align] {
            f.extend_from_slice(&v.to_le_bytes());
        }
    }
    for (tag, value) in [
        (1u64, 1u64),
        (14, soname_at),
        (5, str_at),
        (10, strtab.len() as u64),
        (0, 0),
    ] {
        f.extend_from_slice(&tag.to_le_bytes());
        f.extend_from_slice(&value.to_le_bytes());
    }
    f.extend_from_slice(&strtab);
    f
}

/// The fake driver tree, readable by the rootless test user.
pub struct FakeDriver {
    dir: tempfile::TempDir,
}

impl Default for FakeDriver {
    fn default() -> FakeDriver {
        FakeDriver::new()
    }
}

impl FakeDriver {
    pub fn new() -> FakeDriver {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let write = |rel: &str, data: &[u8], mode: u32| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, data).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write(
            "proc/driver/nvidia/version",
            format!("NVRM version: NVIDIA UNIX x86_64 Kernel Module  {VERSION}  Tue Mar  5 22:23:56 UTC 2024\n").as_bytes(),
            0o644,
        );
        for (bus, name, uuid, minor) in [
            ("0000:19:00.0", "NVIDIA H100 80GB HBM3", H100, 0),
            ("0000:3b:00.0", "NVIDIA A100-SXM4-80GB", A100, 1),
        ] {
            let info = format!(
                "Model: \t\t {name}\nGPU UUID: \t {uuid}\nBus Location: \t {bus}\nDevice Minor: \t {minor}\n"
            );
            write(
                &format!("proc/driver/nvidia/gpus/{bus}/information"),
                info.as_bytes(),
                0o444,
            );
        }
        std::fs::create_dir_all(root.join("dev")).unwrap();
        for (name, major, minor) in [
            ("nvidia0", 195, 0),
            ("nvidia1", 195, 1),
            ("nvidiactl", 195, 255),
            ("nvidia-modeset", 195, 254),
            ("nvidia-uvm", 509, 0),
            ("nvidia-uvm-tools", 509, 1),
        ] {
            let p = root.join("dev").join(name);
            let mode = nix::sys::stat::Mode::from_bits_truncate(0o666);
            nix::sys::stat::mknod(
                &p,
                nix::sys::stat::SFlag::S_IFCHR,
                mode,
                nix::sys::stat::makedev(major, minor),
            )
            .expect("mknod (the GPU tests run as root, as CI does)");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        }
        let libs = "usr/lib/x86_64-linux-gnu";
        for (base, soname) in [
            ("libcuda", "libcuda.so.1"),
            ("libnvidia-ml", "libnvidia-ml.so.1"),
            ("libnvidia-ptxjitcompiler", "libnvidia-ptxjitcompiler.so.1"),
            ("libnvidia-encode", "libnvidia-encode.so.1"),
        ] {
            write(
                &format!("{libs}/{base}.so.{VERSION}"),
                &elf_library(soname),
                0o644,
            );
        }
        write("etc/ld.so.conf", format!("/{libs}\n").as_bytes(), 0o644);
        let ldconfig = std::process::Command::new("ldconfig")
            .arg("-r")
            .arg(root)
            .status()
            .unwrap();
        assert!(ldconfig.success(), "ldconfig -r {}", root.display());
        write("usr/bin/nvidia-smi", NVIDIA_SMI.as_bytes(), 0o755);
        // The machine-wide lease directory, as root's first GPU job (or an installer) leaves it.
        let leases = root.join("run/dstack/gpu");
        std::fs::create_dir_all(&leases).unwrap();
        std::fs::set_permissions(&leases, std::fs::Permissions::from_mode(0o1777)).unwrap();
        FakeDriver { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}
