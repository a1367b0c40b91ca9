//! Discovery: NVML when the driver root is the real `/`, else `nvidia-smi --query-gpu`, else
//! `/proc/driver/nvidia/gpus/*/information` (no memory sizes there). Device minors missing from the first two
//! come from `/proc` by PCI bus id.

use std::path::Path;

use super::inventory::{Gpu, Inventory, Source};
use super::{nvml, procfs, smi};

/// The GPUs and driver under `root`; `Err` says why there are none.
pub fn discover(root: &Path) -> Result<Inventory, String> {
    let proc_gpus = procfs::gpus(root);
    let mut driver_version = procfs::driver_version(root);
    let minor_of = |bus: &str, index: u32| {
        proc_gpus
            .iter()
            .find(|p| p.pci_bus_id == bus)
            .and_then(|p| p.minor)
            .unwrap_or_else(|| {
                tracing::debug!("no device minor known for GPU {index} ({bus}); assuming {index}");
                index
            })
    };
    if root == Path::new("/")
        && let Some((gpus, version)) = nvml::query().filter(|(g, _)| !g.is_empty())
    {
        driver_version = driver_version.or(version);
        let gpus = gpus
            .into_iter()
            .map(|g| Gpu {
                minor: g.minor.unwrap_or_else(|| minor_of(&g.pci_bus_id, g.index)),
                index: g.index,
                uuid: g.uuid,
                name: g.name,
                memory_mib: g.memory_mib,
                pci_bus_id: g.pci_bus_id,
            })
            .collect();
        return Ok(Inventory {
            gpus,
            driver_version,
            source: Source::Nvml,
        });
    }
    if let Some(program) = smi::find(root) {
        match smi::query(&program) {
            Ok(found) if !found.is_empty() => {
                let gpus = found
                    .into_iter()
                    .map(|g| Gpu {
                        minor: minor_of(&g.pci_bus_id, g.index),
                        index: g.index,
                        uuid: g.uuid,
                        name: g.name,
                        memory_mib: g.memory_mib,
                        pci_bus_id: g.pci_bus_id,
                    })
                    .collect();
                return Ok(Inventory {
                    gpus,
                    driver_version,
                    source: Source::NvidiaSmi,
                });
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("{e}; reading /proc/driver/nvidia instead"),
        }
    }
    if proc_gpus.is_empty() {
        return Err(procfs::absence_reason(root));
    }
    let gpus = proc_gpus
        .iter()
        .enumerate()
        .map(|(i, p)| Gpu {
            index: i as u32,
            uuid: p.uuid.clone(),
            name: p.name.clone(),
            memory_mib: None,
            pci_bus_id: p.pci_bus_id.clone(),
            minor: p.minor.unwrap_or(i as u32),
        })
        .collect();
    Ok(Inventory {
        gpus,
        driver_version,
        source: Source::Procfs,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::FakeDriver;
    use super::*;

    // There is no GPU on the test machine: a fake driver tree stands in for one.
    #[test]
    fn proc_information_files_describe_the_gpus_in_bus_order() {
        let fake = FakeDriver::new("550.54.15")
            .gpu("0000:3b:00.0", "NVIDIA A100-SXM4-80GB", "GPU-bbbb", 1)
            .gpu("0000:19:00.0", "NVIDIA H100 80GB HBM3", "GPU-aaaa", 0)
            .build();
        let inv = discover(fake.root()).unwrap();
        assert_eq!(inv.source, Source::Procfs);
        assert_eq!(inv.driver_version.as_deref(), Some("550.54.15"));
        let names: Vec<_> = inv
            .gpus
            .iter()
            .map(|g| (g.index, g.name.as_str(), g.minor))
            .collect();
        assert_eq!(
            names,
            [
                (0, "NVIDIA H100 80GB HBM3", 0),
                (1, "NVIDIA A100-SXM4-80GB", 1)
            ]
        );
        assert_eq!(inv.gpus[0].memory_mib, None);
    }

    #[test]
    fn the_trees_nvidia_smi_wins_and_proc_supplies_minors() {
        let fake = FakeDriver::new("550.54.15")
            .gpu("0000:19:00.0", "NVIDIA H100 80GB HBM3", "GPU-aaaa", 4)
            .nvidia_smi_stub()
            .build();
        let inv = discover(fake.root()).unwrap();
        assert_eq!(inv.source, Source::NvidiaSmi);
        assert_eq!(inv.gpus[0].memory_mib, Some(81559));
        assert_eq!(inv.gpus[0].minor, 4);
    }

    #[test]
    fn no_driver_is_said() {
        let empty = tempfile::tempdir().unwrap();
        assert!(
            discover(empty.path())
                .unwrap_err()
                .contains("no NVIDIA driver is loaded")
        );
    }
}
