//! The parts of a runtime spec this runtime does not honour, by their config.json names, so that a
//! container is refused with the list rather than run without them.

use oci_spec::runtime::Spec;

/// Every field of `spec` that is set and not supported, as `linux.intelRdt`.
#[allow(deprecated)]
pub fn fields(spec: &Spec) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut check = |set: bool, name: &str| {
        if set {
            out.push(name.to_string());
        }
    };
    check(spec.solaris().is_some(), "solaris");
    check(spec.windows().is_some(), "windows");
    check(spec.vm().is_some(), "vm");
    check(spec.zos().is_some(), "zos");
    check(
        spec.uid_mappings().is_some() || spec.gid_mappings().is_some(),
        "uidMappings/gidMappings at the top level (put them in linux)",
    );
    if let Some(p) = spec.process() {
        check(
            p.apparmor_profile()
                .as_deref()
                .is_some_and(|s| !s.is_empty()),
            "process.apparmorProfile",
        );
        check(
            p.selinux_label().as_deref().is_some_and(|s| !s.is_empty()),
            "process.selinuxLabel",
        );
        check(p.io_priority().is_some(), "process.ioPriority");
        check(p.scheduler().is_some(), "process.scheduler");
        check(p.exec_cpu_affinity().is_some(), "process.execCPUAffinity");
        check(p.command_line().is_some(), "process.commandLine");
    }
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        check(
            m.uid_mappings().is_some() || m.gid_mappings().is_some(),
            &format!("mounts[{i}].uidMappings/gidMappings (id-mapped mounts)"),
        );
        for o in m.options().iter().flatten() {
            check(
                o.starts_with("idmap") || o.starts_with("ridmap"),
                &format!("mounts[{i}] option {o}"),
            );
        }
    }
    let Some(linux) = spec.linux() else {
        return out;
    };
    check(linux.intel_rdt().is_some(), "linux.intelRdt");
    check(linux.personality().is_some(), "linux.personality");
    check(linux.memory_policy().is_some(), "linux.memoryPolicy");
    check(linux.time_offsets().is_some(), "linux.timeOffsets");
    check(linux.net_devices().is_some(), "linux.netDevices");
    check(
        linux
            .mount_label()
            .as_deref()
            .is_some_and(|s| !s.is_empty()),
        "linux.mountLabel",
    );
    if let Some(r) = linux.resources() {
        check(r.block_io().is_some(), "linux.resources.blockIO");
        check(
            r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()),
            "linux.resources.hugepageLimits",
        );
        check(r.network().is_some(), "linux.resources.network");
        check(r.rdma().is_some(), "linux.resources.rdma");
        check(
            r.unified().as_ref().is_some_and(|u| !u.is_empty()),
            "linux.resources.unified",
        );
        if let Some(c) = r.cpu() {
            check(
                c.realtime_runtime().is_some(),
                "linux.resources.cpu.realtimeRuntime",
            );
            check(
                c.realtime_period().is_some(),
                "linux.resources.cpu.realtimePeriod",
            );
            check(c.idle().is_some(), "linux.resources.cpu.idle");
            check(c.burst().is_some(), "linux.resources.cpu.burst");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, LinuxPersonalityBuilder, SpecBuilder};

    #[test]
    fn what_is_refused_is_named_as_config_json_names_it() {
        let spec = SpecBuilder::default()
            .linux(
                LinuxBuilder::default()
                    .personality(LinuxPersonalityBuilder::default().build().unwrap())
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        assert_eq!(fields(&spec), vec!["linux.personality".to_string()]);
        assert!(
            fields(&Spec::default()).is_empty(),
            "{:?}",
            fields(&Spec::default())
        );
    }
}
