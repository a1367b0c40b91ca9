//! `nvidia-smi --query-gpu`: the fallback when NVML cannot be loaded in this process.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::inventory::normalize_bus_id;

/// A hung driver makes nvidia-smi hang; give up after this.
const TIMEOUT: Duration = Duration::from_secs(30);

/// One GPU as nvidia-smi lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SmiGpu {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub memory_mib: Option<u64>,
    pub pci_bus_id: String,
}

/// nvidia-smi on `PATH` for the real root; under a fake driver root, the tree's own `usr/bin` or `bin`.
pub(crate) fn find(root: &Path) -> Option<PathBuf> {
    if root == Path::new("/") {
        let path = std::env::var_os("PATH")?;
        return std::env::split_paths(&path)
            .map(|d| d.join("nvidia-smi"))
            .find(|p| is_executable(p));
    }
    ["usr/bin", "bin"]
        .iter()
        .map(|d| root.join(d).join("nvidia-smi"))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `program --query-gpu=... --format=csv,noheader,nounits`.
pub(crate) fn query(program: &Path) -> Result<Vec<SmiGpu>, String> {
    let mut child = spawn(program).map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() > TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} did not answer within {}s",
                    program.display(),
                    TIMEOUT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e.to_string()),
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let said = String::from_utf8_lossy(&out.stdout);
        return Err(format!(
            "{} failed ({}): {}",
            program.display(),
            out.status,
            format!("{said}{err}").trim()
        ));
    }
    Ok(parse(&String::from_utf8_lossy(&out.stdout)))
}

fn spawn(program: &Path) -> std::io::Result<std::process::Child> {
    let mut tries = 0;
    loop {
        let spawned = Command::new(program)
            .args([
                "--query-gpu=index,uuid,name,memory.total,pci.bus_id",
                "--format=csv,noheader,nounits",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        match spawned {
            // A script just written may still be open for writing in a child another thread forked.
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// `0, GPU-abc, NVIDIA A100-SXM4-80GB, 81920, 00000000:07:00.0` per line; a name may itself hold commas.
pub(crate) fn parse(text: &str) -> Vec<SmiGpu> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if fields.len() < 5 {
                return None;
            }
            let n = fields.len();
            Some(SmiGpu {
                index: fields[0].parse().ok()?,
                uuid: fields[1].to_string(),
                name: fields[2..n - 2].join(", "),
                memory_mib: fields[n - 2].parse().ok(),
                pci_bus_id: normalize_bus_id(fields[n - 1]),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_lines_become_gpus() {
        let out = "0, GPU-aaa, NVIDIA H100 80GB HBM3, 81559, 00000000:19:00.0\n\
                   1, GPU-bbb, NVIDIA A100-SXM4-80GB, [N/A], 00000000:3B:00.0\nNo devices were found\n";
        let gpus = parse(out);
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].name, "NVIDIA H100 80GB HBM3");
        assert_eq!(gpus[0].memory_mib, Some(81559));
        assert_eq!(gpus[1].memory_mib, None);
        assert_eq!(gpus[1].pci_bus_id, "0000:3b:00.0");
    }

    // No GPU here: a stub script stands in for the real nvidia-smi.
    #[test]
    fn a_stub_on_path_is_run_with_the_query_flags() {
        let dir = tempfile::tempdir().unwrap();
        let stub = dir.path().join("nvidia-smi");
        std::fs::write(
            &stub,
            "#!/bin/sh\n[ \"$1\" = --query-gpu=index,uuid,name,memory.total,pci.bus_id ] || exit 3\n\
             echo '0, GPU-1111, Tesla T4, 15360, 00000000:00:1E.0'\n",
        )
        .unwrap();
        std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let gpus = query(&stub).unwrap();
        assert_eq!(gpus[0].name, "Tesla T4");
        assert_eq!(gpus[0].pci_bus_id, "0000:00:1e.0");
        std::fs::write(
            &stub,
            "#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n",
        )
        .unwrap();
        assert!(query(&stub).unwrap_err().contains("NVIDIA-SMI has failed"));
    }
}
