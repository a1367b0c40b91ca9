//! NVML (`libnvidia-ml.so.1`), loaded with dlopen in a forked child that reports back over a pipe: NVML may
//! start threads, and this process must stay single-threaded until it clones the container.

use std::ffi::{CStr, c_char, c_int, c_uint, c_ulonglong, c_void};
use std::io::{Read, Write};

use super::inventory::normalize_bus_id;

/// One GPU as NVML describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NvmlGpu {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub memory_mib: Option<u64>,
    pub pci_bus_id: String,
    pub minor: Option<u32>,
}

/// The GPUs and driver version NVML reports, or `None` when NVML is absent or fails (callers fall back to
/// nvidia-smi), or when this process already has threads (forking it would not be safe).
pub(crate) fn query() -> Option<(Vec<NvmlGpu>, Option<String>)> {
    if !single_threaded() {
        return None;
    }
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok()?;
    // SAFETY: this process is single-threaded (checked above), so the child may allocate and call dlopen; it
    // ends with _exit without returning into the caller.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return None;
    }
    if pid == 0 {
        drop(read_end);
        // SAFETY: the child calls NVML's C functions with the signatures of nvml.h.
        let report = unsafe { child_report() };
        let code = match report {
            Some(text) => i32::from(
                std::fs::File::from(write_end)
                    .write_all(text.as_bytes())
                    .is_err(),
            ),
            None => 1,
        };
        // SAFETY: end the child without running the parent's exit handlers.
        unsafe { libc::_exit(code) }
    }
    drop(write_end);
    let mut text = String::new();
    let read = std::fs::File::from(read_end).read_to_string(&mut text);
    let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).ok()?;
    match (read, status) {
        (Ok(_), nix::sys::wait::WaitStatus::Exited(_, 0)) => Some(parse_report(&text)),
        _ => None,
    }
}

fn single_threaded() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:").map(|n| n.trim() == "1"))
        })
        .unwrap_or(false)
}

/// `driver\tVERSION` then `gpu\tINDEX\tUUID\tNAME\tMEMORY_MIB\tBUS\tMINOR` lines.
fn parse_report(text: &str) -> (Vec<NvmlGpu>, Option<String>) {
    let mut gpus = Vec::new();
    let mut driver = None;
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["driver", v] if !v.is_empty() => driver = Some(v.to_string()),
            ["gpu", index, uuid, name, mem, bus, minor] => {
                let Ok(index) = index.parse() else { continue };
                gpus.push(NvmlGpu {
                    index,
                    uuid: uuid.to_string(),
                    name: name.to_string(),
                    memory_mib: mem.parse().ok(),
                    pci_bus_id: normalize_bus_id(bus),
                    minor: minor.parse().ok(),
                });
            }
            _ => {}
        }
    }
    (gpus, driver)
}

#[repr(C)]
struct PciInfo {
    bus_id_legacy: [c_char; 16],
    domain: c_uint,
    bus: c_uint,
    device: c_uint,
    pci_device_id: c_uint,
    pci_sub_system_id: c_uint,
    bus_id: [c_char; 32],
}

#[repr(C)]
struct Memory {
    total: c_ulonglong,
    free: c_ulonglong,
    used: c_ulonglong,
}

type Device = *mut c_void;

/// Loads NVML and describes every device; `None` when the library or a required symbol is missing or init fails.
///
/// # Safety
/// Only for the forked child of `query`: it loads a foreign library and calls into it.
unsafe fn child_report() -> Option<String> {
    // SAFETY: dlopen/dlsym with NUL-terminated names; each symbol is transmuted to its nvml.h signature.
    unsafe {
        let lib = libc::dlopen(c"libnvidia-ml.so.1".as_ptr(), libc::RTLD_NOW);
        if lib.is_null() {
            return None;
        }
        let sym = |name: &CStr| {
            let p = libc::dlsym(lib, name.as_ptr());
            (!p.is_null()).then_some(p)
        };
        let init: extern "C" fn() -> c_int = std::mem::transmute(sym(c"nvmlInit_v2")?);
        let count: extern "C" fn(*mut c_uint) -> c_int =
            std::mem::transmute(sym(c"nvmlDeviceGetCount_v2")?);
        let handle: extern "C" fn(c_uint, *mut Device) -> c_int =
            std::mem::transmute(sym(c"nvmlDeviceGetHandleByIndex_v2")?);
        let string_fn =
            |name: &CStr| -> Option<extern "C" fn(Device, *mut c_char, c_uint) -> c_int> {
                sym(name).map(|p| std::mem::transmute(p))
            };
        let get_name = string_fn(c"nvmlDeviceGetName")?;
        let get_uuid = string_fn(c"nvmlDeviceGetUUID")?;
        let memory: Option<extern "C" fn(Device, *mut Memory) -> c_int> =
            sym(c"nvmlDeviceGetMemoryInfo").map(|p| std::mem::transmute(p));
        let pci: Option<extern "C" fn(Device, *mut PciInfo) -> c_int> =
            sym(c"nvmlDeviceGetPciInfo_v3")
                .or_else(|| sym(c"nvmlDeviceGetPciInfo_v2"))
                .map(|p| std::mem::transmute(p));
        let minor: Option<extern "C" fn(Device, *mut c_uint) -> c_int> =
            sym(c"nvmlDeviceGetMinorNumber").map(|p| std::mem::transmute(p));
        let driver: Option<extern "C" fn(*mut c_char, c_uint) -> c_int> =
            sym(c"nvmlSystemGetDriverVersion").map(|p| std::mem::transmute(p));
        if init() != 0 {
            return None;
        }
        let text_of = |buf: &[c_char]| {
            CStr::from_ptr(buf.as_ptr())
                .to_string_lossy()
                .replace('\t', " ")
        };
        let mut out = String::new();
        let mut buf = [0 as c_char; 96];
        if let Some(driver) = driver
            && driver(buf.as_mut_ptr(), buf.len() as c_uint) == 0
        {
            out.push_str(&format!("driver\t{}\n", text_of(&buf)));
        }
        let mut n: c_uint = 0;
        if count(&mut n) != 0 {
            return None;
        }
        for i in 0..n {
            let mut dev: Device = std::ptr::null_mut();
            if handle(i, &mut dev) != 0 {
                continue;
            }
            let mut name = [0 as c_char; 96];
            let mut uuid = [0 as c_char; 96];
            if get_name(dev, name.as_mut_ptr(), 96) != 0
                || get_uuid(dev, uuid.as_mut_ptr(), 96) != 0
            {
                continue;
            }
            let mut mem = Memory {
                total: 0,
                free: 0,
                used: 0,
            };
            let mem_mib = match memory {
                Some(f) if f(dev, &mut mem) == 0 => (mem.total >> 20).to_string(),
                _ => String::new(),
            };
            let mut info: PciInfo = std::mem::zeroed();
            let bus = match pci {
                Some(f) if f(dev, &mut info) == 0 => text_of(&info.bus_id),
                _ => String::new(),
            };
            let mut m: c_uint = 0;
            let minor = match minor {
                Some(f) if f(dev, &mut m) == 0 => m.to_string(),
                _ => String::new(),
            };
            out.push_str(&format!(
                "gpu\t{i}\t{}\t{}\t{mem_mib}\t{bus}\t{minor}\n",
                text_of(&uuid),
                text_of(&name)
            ));
        }
        if let Some(shutdown) = sym(c"nvmlShutdown") {
            let shutdown: extern "C" fn() -> c_int = std::mem::transmute(shutdown);
            shutdown();
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_childs_report_is_parsed() {
        let (gpus, driver) = parse_report(
            "driver\t550.54.15\ngpu\t0\tGPU-a\tNVIDIA H100 80GB HBM3\t81559\t00000000:19:00.0\t2\ngpu\t1\tGPU-b\tX\t\t\t\n",
        );
        assert_eq!(driver.as_deref(), Some("550.54.15"));
        assert_eq!(gpus[0].minor, Some(2));
        assert_eq!(gpus[0].pci_bus_id, "0000:19:00.0");
        assert_eq!(gpus[1].memory_mib, None);
    }
}
