use std::path::{Path, PathBuf};

use super::*;
use crate::gpu::testing::elf_library;

/// A tree with driver files, and a spec shaped like `nvidia-ctk cdi generate` output pointing into it.
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new(lib_version: &str) -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("lib");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(
            lib.join(format!("libcuda.so.{lib_version}")),
            elf_library("libcuda.so.1"),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("etc/cdi")).unwrap();
        std::fs::create_dir_all(dir.path().join("var/run/cdi")).unwrap();
        Tree { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn dirs(&self) -> Vec<PathBuf> {
        vec![self.path("etc/cdi"), self.path("var/run/cdi")]
    }

    /// nvidia-ctk's YAML, with /dev/null standing in for the GPU device nodes (no GPU here).
    fn nvidia_yaml(&self, lib_version: &str) -> String {
        let lib = self.path("lib").display().to_string();
        format!(
            r#"---
cdiVersion: 0.5.0
kind: nvidia.com/gpu
devices:
- name: "0"
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
      hostPath: /dev/null
- name: GPU-aaaa
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
      hostPath: /dev/null
- name: "1"
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia1
      hostPath: /dev/zero
- name: all
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
      hostPath: /dev/null
    - path: /dev/nvidia1
      hostPath: /dev/zero
containerEdits:
  env:
  - NVIDIA_VISIBLE_DEVICES=void
  deviceNodes:
  - path: /dev/nvidiactl
    hostPath: /dev/full
    permissions: rw
  hooks:
  - hookName: createContainer
    path: /usr/bin/nvidia-ctk
    args: [nvidia-ctk, hook, create-symlinks, --link, "libcuda.so.1::/usr/lib/x86_64-linux-gnu/libcuda.so"]
  - hookName: createContainer
    path: /usr/bin/nvidia-ctk
    args: [nvidia-ctk, hook, update-ldcache, --folder, /usr/lib/x86_64-linux-gnu]
  mounts:
  - hostPath: {lib}/libcuda.so.{lib_version}
    containerPath: /usr/lib/x86_64-linux-gnu/libcuda.so.{lib_version}
    options: [ro, nosuid, nodev, bind]
  additionalGids: [44]
"#
        )
    }
}

fn gpu(index: u32, uuid: &str) -> Gpu {
    Gpu {
        index,
        uuid: uuid.into(),
        name: "NVIDIA A100-SXM4-80GB".into(),
        memory_mib: Some(81920),
        pci_bus_id: format!("0000:0{index}:00.0"),
        minor: index,
    }
}

#[test]
fn an_nvidia_ctk_yaml_spec_gives_nodes_mounts_env_links_and_groups() {
    let tree = Tree::new("550.54.15");
    std::fs::write(
        tree.path("etc/cdi/nvidia.yaml"),
        tree.nvidia_yaml("550.54.15"),
    )
    .unwrap();
    let registry = Registry::load(&tree.dirs());
    assert!(registry.has_kind(NVIDIA_GPU_KIND));
    let edits = registry
        .edits_for_gpus(&[gpu(1, "GPU-bbbb")], Some("550.54.15"))
        .unwrap();
    let nodes: Vec<_> = edits
        .devices
        .iter()
        .map(|d| {
            (
                d.path.to_str().unwrap(),
                d.major,
                d.minor,
                d.access.as_str(),
            )
        })
        .collect();
    // Numbers come from stat-ing the host paths: /dev/full is 1:7, /dev/zero 1:5.
    assert_eq!(
        nodes,
        [
            ("/dev/nvidiactl", 1, 7, "rw"),
            ("/dev/nvidia1", 1, 5, "rwm")
        ]
    );
    assert_eq!(
        edits.env,
        [("NVIDIA_VISIBLE_DEVICES".to_string(), "void".to_string())]
    );
    assert_eq!(
        edits.mounts[0].container,
        Path::new("/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15")
    );
    assert_eq!(
        edits.setup.links[0].0,
        Path::new("/usr/lib/x86_64-linux-gnu/libcuda.so")
    );
    assert_eq!(
        edits.setup.ld_dirs,
        [PathBuf::from("/usr/lib/x86_64-linux-gnu")]
    );
    assert_eq!(
        edits.setup.libraries,
        [(
            "libcuda.so.1".to_string(),
            PathBuf::from("/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15")
        )]
    );
    assert_eq!(edits.additional_gids, [44]);
}

#[test]
fn gpus_are_found_by_index_or_uuid_and_all_means_every_gpu() {
    let tree = Tree::new("550.54.15");
    std::fs::write(
        tree.path("etc/cdi/nvidia.yaml"),
        tree.nvidia_yaml("550.54.15"),
    )
    .unwrap();
    let registry = Registry::load(&tree.dirs());
    let by_uuid = registry
        .edits_for_gpus(&[gpu(5, "GPU-aaaa")], None)
        .unwrap();
    assert!(
        by_uuid
            .devices
            .iter()
            .any(|d| d.path == Path::new("/dev/nvidia0"))
    );
    let all = registry
        .edits(&["nvidia.com/gpu=all".into()], None)
        .unwrap();
    assert_eq!(all.devices.len(), 3);
    let err = registry
        .edits_for_gpus(&[gpu(7, "GPU-zzzz")], None)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("has no device for GPU 7 (GPU-zzzz)"),
        "{err}"
    );
    assert!(matches!(
        registry.edits(&["nvidia.com/gpu=9".into()], None),
        Err(GpuError::CdiUnknownDevice(_))
    ));
    assert!(matches!(
        registry.edits(&["gpu0".into()], None),
        Err(GpuError::CdiBadName(_))
    ));
}

#[test]
fn a_later_directory_wins_and_json_is_read_too() {
    let tree = Tree::new("550.54.15");
    std::fs::write(
        tree.path("etc/cdi/nvidia.yaml"),
        tree.nvidia_yaml("550.54.15"),
    )
    .unwrap();
    let json = r#"{"cdiVersion":"0.6.0","kind":"nvidia.com/gpu","devices":[{"name":"0","containerEdits":
        {"env":["FROM_RUN=1"],"deviceNodes":[{"path":"/dev/nvidia0","hostPath":"/dev/zero"}]}}]}"#;
    std::fs::write(tree.path("var/run/cdi/nvidia.json"), json).unwrap();
    std::fs::write(tree.path("var/run/cdi/broken.yaml"), "kind: [").unwrap();
    let registry = Registry::load(&tree.dirs());
    let edits = registry.edits(&["nvidia.com/gpu=0".into()], None).unwrap();
    assert_eq!(edits.env, [("FROM_RUN".to_string(), "1".to_string())]);
    assert_eq!((edits.devices[0].major, edits.devices[0].minor), (1, 5));
}

#[test]
fn a_spec_naming_libraries_that_are_gone_says_how_to_regenerate_it() {
    let tree = Tree::new("550.54.15");
    // Generated for 535, before the driver was upgraded to 550: its libcuda.so.535 no longer exists.
    std::fs::write(
        tree.path("etc/cdi/nvidia.yaml"),
        tree.nvidia_yaml("535.104.05"),
    )
    .unwrap();
    let registry = Registry::load(&tree.dirs());
    let err = registry
        .edits_for_gpus(&[gpu(0, "GPU-aaaa")], Some("550.54.15"))
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("libcuda.so.535.104.05, which does not exist"),
        "{text}"
    );
    assert!(
        text.contains("nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml"),
        "{text}"
    );
}

#[test]
fn a_spec_of_another_driver_version_is_stale_even_when_its_files_remain() {
    let tree = Tree::new("535.104.05");
    std::fs::write(
        tree.path("etc/cdi/nvidia.yaml"),
        tree.nvidia_yaml("535.104.05"),
    )
    .unwrap();
    let registry = Registry::load(&tree.dirs());
    let err = registry
        .edits_for_gpus(&[gpu(0, "GPU-aaaa")], Some("550.54.15"))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("for driver 535.104.05 while driver 550.54.15 is loaded"),
        "{err}"
    );
}
