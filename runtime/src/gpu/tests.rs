//! `apply` end to end on a spec. There is no GPU on the test machines: a fake driver tree stands in for one.

use std::path::Path;

use oci_spec::runtime::{LinuxDeviceType, Spec};

use super::testing::{BuiltFake, FakeDriver};
use super::*;
use crate::cgroup::DeviceKind;

fn machine(char_devices: bool) -> BuiltFake {
    let fake = FakeDriver::new("550.54.15")
        .gpu("0000:19:00.0", "NVIDIA H100 80GB HBM3", "GPU-aaaa", 0)
        .gpu("0000:3b:00.0", "NVIDIA A100-SXM4-80GB", "GPU-bbbb", 1)
        .nvidia_smi_stub();
    if char_devices {
        fake.char_devices()
    } else {
        fake
    }
    .build()
}

fn host(fake: &BuiltFake, leases: &Path, rootless: bool) -> Host {
    Host {
        root: fake.root().to_path_buf(),
        lease_dir: leases.to_path_buf(),
        cdi_dirs: cdi::spec_dirs(fake.root())[..2].to_vec(),
        rootless,
        allocation: None,
    }
}

fn spec() -> Spec {
    let mut spec = crate::container::default_spec(vec!["nvidia-smi".into()], 64 << 20);
    let process = spec.process_mut().as_mut().unwrap();
    let mut env = process.env().clone().unwrap();
    env.push("NVIDIA_VISIBLE_DEVICES=all".into());
    process.set_env(Some(env));
    spec
}

fn env(spec: &Spec) -> Vec<String> {
    spec.process().as_ref().unwrap().env().clone().unwrap()
}

fn mount_dests(spec: &Spec) -> Vec<String> {
    spec.mounts()
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.destination().display().to_string())
        .collect()
}

/// As root: device nodes are made with mknod (the fake tree has real 195:N character devices) and allowed in
/// the device cgroup, for the selected GPU only.
#[test]
fn as_root_the_named_gpu_gets_nodes_cgroup_rules_libraries_and_env() {
    let fake = machine(true);
    let leases = tempfile::tempdir().unwrap();
    let mut spec = spec();
    let request = GpuRequest {
        count: 1,
        name: Some("a100".into()),
        owner: "run brave-fox-1".into(),
        ..Default::default()
    };
    let lease = apply_on(&host(&fake, leases.path(), false), &mut spec, &request).unwrap();
    assert_eq!(
        lease
            .gpus()
            .iter()
            .map(|g| g.uuid.as_str())
            .collect::<Vec<_>>(),
        ["GPU-bbbb"]
    );
    let linux = spec.linux().as_ref().unwrap();
    let nodes: Vec<_> = linux
        .devices()
        .as_ref()
        .unwrap()
        .iter()
        .map(|d| (d.path().display().to_string(), d.major(), d.minor()))
        .collect();
    assert!(nodes.contains(&("/dev/nvidia1".into(), 195, 1)));
    assert!(nodes.contains(&("/dev/nvidiactl".into(), 195, 255)));
    assert!(!nodes.iter().any(|n| n.0 == "/dev/nvidia0"));
    let allowed = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .as_ref()
        .unwrap();
    assert!(allowed.iter().any(|r| r.allow()
        && r.typ() == Some(LinuxDeviceType::C)
        && r.major() == Some(195)
        && r.minor() == Some(1)));
    assert!(
        !allowed
            .iter()
            .any(|r| r.minor() == Some(0) && r.major() == Some(195))
    );
    assert!(
        lease
            .device_rules()
            .iter()
            .any(|r| r.kind == DeviceKind::Char && r.major == Some(195) && r.minor == Some(1))
    );
    let env = env(&spec);
    assert!(env.contains(&"NVIDIA_VISIBLE_DEVICES=GPU-bbbb".to_string()));
    assert!(!env.contains(&"NVIDIA_VISIBLE_DEVICES=all".to_string()));
    assert!(env.contains(&"NVIDIA_DRIVER_CAPABILITIES=utility,compute".to_string()));
    let dests = mount_dests(&spec);
    assert!(dests.contains(&"/usr/local/nvidia/lib64/libcuda.so.550.54.15".to_string()));
    assert!(dests.contains(&"/usr/bin/nvidia-smi".to_string()));
    let setup = &spec.annotations().as_ref().unwrap()[ANNOTATION];
    assert!(setup.contains("libcuda.so.1"), "{setup}");
    // The GPU is now taken: a second job asking for an A100 is refused, naming the holder.
    let err = apply_on(
        &host(&fake, leases.path(), false),
        &mut crate::container::default_spec(vec![], 1),
        &request,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("1: NVIDIA A100-SXM4-80GB (81559 MiB) [in use by run brave-fox-1]"),
        "{err}"
    );
}

/// Nothing beyond the job's GPUs: no MIG capability node, the other GPU's `/proc/driver/nvidia` entry and the
/// MIG capabilities masked, and `params` replaced by one with `ModifyDeviceFiles: 0`, kept as long as the lease.
/// That the driver and CUDA honour these inside a container only real hardware shows (`scripts/gpu-check`).
#[test]
fn the_job_sees_only_its_gpu_in_dev_and_proc_and_may_not_change_device_files() {
    let fake = machine(true);
    let leases = tempfile::tempdir().unwrap();
    let mut spec = spec();
    let request = GpuRequest {
        count: 1,
        name: Some("H100".into()),
        ..Default::default()
    };
    let lease = apply_on(&host(&fake, leases.path(), false), &mut spec, &request).unwrap();
    let linux = spec.linux().as_ref().unwrap();
    let nodes: Vec<_> = linux
        .devices()
        .as_ref()
        .unwrap()
        .iter()
        .map(|d| d.path().display().to_string())
        .collect();
    assert!(
        !nodes.iter().any(|n| n.starts_with("/dev/nvidia-caps")),
        "{nodes:?}"
    );
    let masked = linux.masked_paths().as_ref().unwrap();
    assert!(masked.contains(&"/proc/driver/nvidia/gpus/0000:3b:00.0".to_string()));
    assert!(masked.contains(&"/proc/driver/nvidia/capabilities".to_string()));
    assert!(!masked.contains(&"/proc/driver/nvidia/gpus/0000:19:00.0".to_string()));
    assert!(
        masked.contains(&"/proc/kcore".to_string()),
        "the defaults stay"
    );
    let params = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new("/proc/driver/nvidia/params"))
        .expect("params bound");
    let source = params.source().clone().unwrap();
    let text = std::fs::read_to_string(&source).unwrap();
    assert!(text.contains("ModifyDeviceFiles: 0\n"), "{text}");
    assert!(text.contains("DeviceFileMode: 438\n"), "{text}");
    assert!(
        params
            .options()
            .as_ref()
            .unwrap()
            .contains(&"ro".to_string())
    );
    drop(lease);
    assert!(!source.exists(), "removed with the lease");
}

/// Rootless: no mknod, no cgroup rules; the host's nodes are bound.
#[test]
fn rootless_binds_the_host_nodes_and_makes_no_cgroup_rules() {
    let fake = machine(false);
    let leases = tempfile::tempdir().unwrap();
    let mut spec = spec();
    let lease = apply_on(
        &host(&fake, leases.path(), true),
        &mut spec,
        &GpuRequest {
            count: 2,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(lease.device_rules().is_empty());
    assert!(
        spec.linux()
            .as_ref()
            .unwrap()
            .devices()
            .as_ref()
            .is_none_or(|d| d.is_empty())
    );
    let node = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new("/dev/nvidia1"))
        .unwrap();
    assert_eq!(
        node.source().as_deref(),
        Some(fake.root().join("dev/nvidia1").as_path())
    );
    assert!(env(&spec).contains(&"NVIDIA_VISIBLE_DEVICES=GPU-aaaa,GPU-bbbb".to_string()));
}

#[test]
fn the_jobs_capabilities_choose_the_libraries() {
    let fake = machine(false);
    let leases = tempfile::tempdir().unwrap();
    let mut spec = spec();
    let process = spec.process_mut().as_mut().unwrap();
    let mut env_list = process.env().clone().unwrap();
    env_list.push("NVIDIA_DRIVER_CAPABILITIES=utility,video".into());
    process.set_env(Some(env_list));
    apply_on(
        &host(&fake, leases.path(), true),
        &mut spec,
        &GpuRequest {
            count: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let dests = mount_dests(&spec);
    assert!(
        dests
            .iter()
            .any(|d| d.ends_with("libnvidia-encode.so.550.54.15"))
    );
    assert!(!dests.iter().any(|d| d.ends_with("libcuda.so.550.54.15")));
}

#[test]
fn a_cdi_spec_is_preferred_when_one_exists() {
    let fake = machine(false);
    let leases = tempfile::tempdir().unwrap();
    let cdi = fake.root().join("etc/cdi");
    std::fs::create_dir_all(&cdi).unwrap();
    let node = fake.root().join("dev/nvidia0");
    std::fs::write(
        cdi.join("nvidia.yaml"),
        format!(
            "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: \"0\"\n  containerEdits:\n    deviceNodes:\n    - path: /dev/nvidia0\n      hostPath: {}\ncontainerEdits:\n  env: [FROM_CDI=yes]\n",
            node.display()
        ),
    )
    .unwrap();
    let mut spec = spec();
    apply_on(
        &host(&fake, leases.path(), true),
        &mut spec,
        &GpuRequest {
            count: 1,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(env(&spec).contains(&"FROM_CDI=yes".to_string()));
    assert!(env(&spec).contains(&"NVIDIA_VISIBLE_DEVICES=GPU-aaaa".to_string()));
    assert!(!mount_dests(&spec).iter().any(|d| d.starts_with(LIB_DIR)));
}

#[test]
fn unmet_requests_and_gpu_less_machines_fail_before_anything_starts() {
    let fake = machine(false);
    let leases = tempfile::tempdir().unwrap();
    let mut spec = spec();
    let before = spec.clone();
    let request = GpuRequest {
        count: 1,
        memory: Some(100_000_000_000),
        ..Default::default()
    };
    let err = apply_on(&host(&fake, leases.path(), true), &mut spec, &request).unwrap_err();
    assert_eq!(
        err.to_string(),
        "requested 1 GPU with at least 100 GB of memory; this machine has: 0: NVIDIA H100 80GB HBM3 (81559 MiB), \
         1: NVIDIA A100-SXM4-80GB (81559 MiB)"
    );
    assert_eq!(spec, before);
    let empty = tempfile::tempdir().unwrap();
    let none = Host {
        root: empty.path().into(),
        lease_dir: leases.path().into(),
        cdi_dirs: vec![],
        rootless: true,
        allocation: None,
    };
    let err = apply_on(
        &none,
        &mut spec,
        &GpuRequest {
            count: 1,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "requested 1 GPU; this machine has no NVIDIA GPU (no NVIDIA driver is loaded: /proc/driver/nvidia does not exist)"
    );
    let lease = apply_on(&none, &mut spec, &GpuRequest::default()).unwrap();
    assert!(lease.gpus().is_empty());
}

/// Inside a Slurm job only its GPUs are handed out; the others are neither given nor listed.
#[test]
fn a_slurm_jobs_allocation_limits_the_choice() {
    let fake = machine(false);
    let leases = tempfile::tempdir().unwrap();
    let mut host = host(&fake, leases.path(), true);
    host.allocation = Allocation::from_vars(|k| match k {
        "SLURM_JOB_ID" => Some("42".into()),
        "SLURM_JOB_GPUS" => Some("1".into()),
        _ => None,
    });
    let ask = |count| GpuRequest {
        count,
        owner: "run x".into(),
        ..Default::default()
    };
    let lease = apply_on(&host, &mut spec(), &ask(1)).unwrap();
    assert_eq!(lease.gpus()[0].uuid, "GPU-bbbb", "minor 1 is the A100");
    drop(lease);
    let err = apply_on(&host, &mut spec(), &ask(2)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "requested 2 GPUs (this Slurm job has SLURM_JOB_GPUS=1); this machine has: 1: NVIDIA A100-SXM4-80GB (81559 MiB)"
    );
    host.allocation = Allocation::from_vars(|k| match k {
        "SLURM_JOB_ID" => Some("42".into()),
        "SLURM_JOB_GPUS" => Some("7".into()),
        _ => None,
    });
    let err = apply_on(&host, &mut spec(), &ask(1)).unwrap_err();
    assert!(matches!(err, GpuError::NotAllocated { .. }), "{err}");
    assert!(err.to_string().contains("SLURM_JOB_GPUS=7"), "{err}");
}
