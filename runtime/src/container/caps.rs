//! Capabilities: the bounding set cut to the spec's, then effective/permitted/inheritable set and the
//! ambient ones raised, exactly as the spec says. Raw `prctl`/`capset`, as no capability crate is in the tree.

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

/// The kernel's number for `cap`.
pub fn number(cap: Capability) -> u32 {
    use Capability::*;
    match cap {
        Chown => 0,
        DacOverride => 1,
        DacReadSearch => 2,
        Fowner => 3,
        Fsetid => 4,
        Kill => 5,
        Setgid => 6,
        Setuid => 7,
        Setpcap => 8,
        LinuxImmutable => 9,
        NetBindService => 10,
        NetBroadcast => 11,
        NetAdmin => 12,
        NetRaw => 13,
        IpcLock => 14,
        IpcOwner => 15,
        SysModule => 16,
        SysRawio => 17,
        SysChroot => 18,
        SysPtrace => 19,
        SysPacct => 20,
        SysAdmin => 21,
        SysBoot => 22,
        SysNice => 23,
        SysResource => 24,
        SysTime => 25,
        SysTtyConfig => 26,
        Mknod => 27,
        Lease => 28,
        AuditWrite => 29,
        AuditControl => 30,
        Setfcap => 31,
        MacOverride => 32,
        MacAdmin => 33,
        Syslog => 34,
        WakeAlarm => 35,
        BlockSuspend => 36,
        AuditRead => 37,
        Perfmon => 38,
        Bpf => 39,
        CheckpointRestore => 40,
    }
}

/// A capability set as the kernel's 64-bit mask.
pub fn mask(set: Option<&Capabilities>) -> u64 {
    set.map_or(0, |s| s.iter().fold(0u64, |m, c| m | (1u64 << number(*c))))
}

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Drops every capability outside the spec's bounding set. Call it before switching user (it needs
/// CAP_SETPCAP).
pub fn drop_bounding(caps: &LinuxCapabilities) -> std::io::Result<()> {
    let keep = mask(caps.bounding().as_ref());
    for cap in 0..=last_cap() {
        if keep & (1u64 << cap) == 0 {
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::EINVAL) {
                    return Err(err);
                }
            }
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Sets the effective, permitted and inheritable sets exactly as the spec gives them (after the user
/// switch, which kept the permitted set with `PR_SET_KEEPCAPS`), then raises the ambient ones that are
/// also permitted and inheritable (the others cannot be).
pub fn apply(caps: &LinuxCapabilities) -> std::io::Result<()> {
    let (eff, perm, inh) = (
        mask(caps.effective().as_ref()),
        mask(caps.permitted().as_ref()),
        mask(caps.inheritable().as_ref()),
    );
    let header = CapHeader {
        version: 0x2008_0522,
        pid: 0,
    };
    let data = [
        CapData {
            effective: eff as u32,
            permitted: perm as u32,
            inheritable: inh as u32,
        },
        CapData {
            effective: (eff >> 32) as u32,
            permitted: (perm >> 32) as u32,
            inheritable: (inh >> 32) as u32,
        },
    ];
    // SAFETY: capset with a version-3 header and its two data words.
    if unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    // The kernel raises an ambient capability only if it is permitted and inheritable; runc's default
    // spec lists ambient ones without an inheritable set, and runc then raises none of them: so here.
    let raisable = perm & inh;
    for cap in caps
        .ambient()
        .iter()
        .flatten()
        .filter(|c| raisable & (1u64 << number(**c)) != 0)
    {
        // SAFETY: prctl with integer arguments only.
        let r = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE,
                number(*cap) as libc::c_ulong,
                0,
                0,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockers_default_set_is_the_well_known_mask() {
        let set: Capabilities = super::super::spec::DOCKER_DEFAULT_CAPS
            .into_iter()
            .collect();
        assert_eq!(mask(Some(&set)), 0x0000_0000_a804_25fb);
    }
}
