//! The spec's seccomp profile as BPF, compiled before the clone and installed by the job just before exec.
//! Syscall names are resolved with `seccompiler`'s tables (pure Rust); the BPF is `seccomp_bpf`'s.
//!
//! A filter has one action for matches and one for the rest, while a profile gives each
//! syscall its own action. The kernel runs every installed filter and keeps the strictest result, so a
//! profile becomes a stack: one filter returning the default action for every syscall no rule names, and
//! one filter per other action returning it for the syscalls of that action (allow for the rest). Syscall
//! names this architecture lacks are skipped, as libseccomp does; only the native architecture is allowed
//! (syscalls of other ABIs, such as 32-bit x86, are killed). On x86_64 the x32 ABI shares the native
//! audit architecture and sets bit 30 of the syscall number, which no rule names: a filter of its own kills
//! those too, so a profile that allows by default cannot be bypassed through x32.

use std::collections::{BTreeMap, HashMap};

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use seccompiler::{BpfProgram, TargetArch};
use serde_json::json;

use super::seccomp_bpf::{self, Cond, Op, Rules};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp: {0} is not supported")]
    Unsupported(String),
    #[error("seccomp: this architecture ({0}) has no syscall table")]
    Arch(&'static str),
    #[error("seccomp: cannot compile the profile: {0}")]
    Compile(String),
}

/// Compiled filters, installed in order.
#[derive(Debug, Clone, Default)]
pub struct SeccompProgram {
    filters: Vec<BpfProgram>,
    flags: libc::c_ulong,
}

/// An action as the filter returns it.
fn action(
    a: LinuxSeccompAction,
    errno: Option<u32>,
    default_errno: u32,
) -> Result<u32, SeccompError> {
    use LinuxSeccompAction as A;
    let data = |v: u32| v & libc::SECCOMP_RET_DATA;
    Ok(match a {
        A::ScmpActAllow => libc::SECCOMP_RET_ALLOW,
        A::ScmpActKill | A::ScmpActKillThread => libc::SECCOMP_RET_KILL_THREAD,
        A::ScmpActKillProcess => libc::SECCOMP_RET_KILL_PROCESS,
        A::ScmpActTrap => libc::SECCOMP_RET_TRAP,
        A::ScmpActLog => libc::SECCOMP_RET_LOG,
        A::ScmpActErrno => libc::SECCOMP_RET_ERRNO | data(errno.unwrap_or(default_errno)),
        A::ScmpActTrace => libc::SECCOMP_RET_TRACE | data(errno.unwrap_or(default_errno)),
        A::ScmpActNotify => {
            return Err(SeccompError::Unsupported(
                "the SCMP_ACT_NOTIFY action (seccomp user notification)".into(),
            ));
        }
    })
}

fn condition(arg: &LinuxSeccompArg) -> Result<Cond, SeccompError> {
    use LinuxSeccompOperator as O;
    let index = u32::try_from(arg.index())
        .ok()
        .filter(|i| *i < 6)
        .ok_or_else(|| {
            SeccompError::Compile(format!("argument index {} is not 0 to 5", arg.index()))
        })?;
    let (op, value) = match arg.op() {
        O::ScmpCmpNe => (Op::Ne, arg.value()),
        O::ScmpCmpLt => (Op::Lt, arg.value()),
        O::ScmpCmpLe => (Op::Le, arg.value()),
        O::ScmpCmpEq => (Op::Eq, arg.value()),
        O::ScmpCmpGe => (Op::Ge, arg.value()),
        O::ScmpCmpGt => (Op::Gt, arg.value()),
        // libseccomp: (arg & value) == valueTwo.
        O::ScmpCmpMaskedEq => (Op::MaskedEq(arg.value()), arg.value_two().unwrap_or(0)),
    };
    Ok(Cond { index, op, value })
}

/// The machine's seccompiler target and audit architecture.
fn target() -> Result<(TargetArch, u32), SeccompError> {
    let unsupported = || SeccompError::Arch(std::env::consts::ARCH);
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|_| unsupported())?;
    let audit = match std::env::consts::ARCH {
        "x86_64" => 0xc000_003e,
        "aarch64" => 0xc000_00b7,
        "riscv64" => 0xc000_00f3,
        _ => return Err(unsupported()),
    };
    Ok((arch, audit))
}

/// The number of syscall `name` on `arch` from seccompiler's tables (`None` when it has none): it compiles
/// a filter for that one name and reads the number its first comparison tests.
fn syscall_number(arch: TargetArch, name: &str) -> Option<u32> {
    let doc = json!({ "f": {
        "mismatch_action": "allow", "match_action": "trap", "filter": [{ "syscall": name }]
    } });
    let mut map = seccompiler::compile_from_json(doc.to_string().as_bytes(), arch).ok()?;
    let program = map.remove("f")?;
    const LD_NR: (u16, u32) = ((libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16, 0);
    const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    let load = program.iter().position(|i| (i.code, i.k) == LD_NR)?;
    program[load..].iter().find(|i| i.code == JEQ).map(|i| i.k)
}

/// Rules of one action: syscall -> argument conditions (an empty list matches any arguments).
fn add(group: &mut Rules, nr: u32, conds: Vec<Cond>) {
    let entry = group.entry(nr).or_default();
    let unconditional = entry.iter().any(|c| c.is_empty());
    if unconditional {
        return;
    }
    if conds.is_empty() {
        entry.clear();
    }
    entry.push(conds);
}

pub(crate) fn compile(profile: &LinuxSeccomp) -> Result<SeccompProgram, SeccompError> {
    if profile.listener_path().is_some() {
        return Err(SeccompError::Unsupported(
            "listenerPath (seccomp user notification)".into(),
        ));
    }
    let (arch, audit) = target()?;
    let default_errno = profile.default_errno_ret().unwrap_or(libc::EPERM as u32);
    let default = action(profile.default_action(), None, default_errno)?;
    let mut flags: libc::c_ulong = 0;
    for f in profile.flags().as_deref().unwrap_or_default() {
        flags |= match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => 0,
            other => return Err(SeccompError::Unsupported(format!("the flag {other}"))),
        };
    }
    let mut named = Rules::new();
    let mut by_action: BTreeMap<u32, Rules> = BTreeMap::new();
    let mut numbers: HashMap<&str, Option<u32>> = HashMap::new();
    for sc in profile.syscalls().as_deref().unwrap_or_default() {
        let act = action(sc.action(), sc.errno_ret(), default_errno)?;
        let conds = sc
            .args()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(condition)
            .collect::<Result<Vec<_>, _>>()?;
        for name in sc.names() {
            let nr = *numbers
                .entry(name.as_str())
                .or_insert_with(|| syscall_number(arch, name));
            let Some(nr) = nr else { continue };
            add(&mut named, nr, conds.clone());
            if act != libc::SECCOMP_RET_ALLOW {
                add(by_action.entry(act).or_default(), nr, conds.clone());
            }
        }
    }
    let mut missing: Vec<&str> = numbers
        .iter()
        .filter(|(_, nr)| nr.is_none())
        .map(|(name, _)| *name)
        .collect();
    if !missing.is_empty() {
        missing.sort();
        tracing::debug!(
            "seccomp: syscalls unknown on {}: {}",
            std::env::consts::ARCH,
            missing.join(" ")
        );
    }
    let build = |rules: &Rules, on_match, on_mismatch| {
        seccomp_bpf::filter(audit, rules, on_match, on_mismatch).map_err(SeccompError::Compile)
    };
    let mut filters = Vec::new();
    if default != libc::SECCOMP_RET_ALLOW {
        filters.push(build(&named, libc::SECCOMP_RET_ALLOW, default)?);
    }
    for (act, rules) in &by_action {
        filters.push(build(rules, *act, libc::SECCOMP_RET_ALLOW)?);
    }
    if !filters.is_empty() && cfg!(target_arch = "x86_64") {
        filters.push(x32_killer());
    }
    Ok(SeccompProgram { filters, flags })
}

/// Kills x86_64's x32 ABI (native audit arch, syscall number with `__X32_SYSCALL_BIT`); other
/// architectures are left to the other filters, which kill them.
fn x32_killer() -> BpfProgram {
    use seccompiler::sock_filter;
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    let op = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        // seccomp_data: nr at offset 0, arch at 4.
        op(LD_W_ABS, 0, 0, 4),
        op(JEQ_K, 0, 3, AUDIT_ARCH_X86_64),
        op(LD_W_ABS, 0, 0, 0),
        op(JGE_K, 0, 1, X32_SYSCALL_BIT),
        op(RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

impl SeccompProgram {
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn filters_for_timing(&self) -> Vec<usize> {
        self.filters.iter().map(Vec::len).collect()
    }

    /// The flags, then each filter's length and instructions, little-endian (`seccomp_cache`'s payload).
    pub(super) fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // c_ulong is u64 here, u32 on 32-bit machines.
        #[allow(clippy::useless_conversion)]
        let flags = u64::from(self.flags);
        out.extend_from_slice(&flags.to_le_bytes());
        for filter in &self.filters {
            out.extend_from_slice(&(filter.len() as u32).to_le_bytes());
            for op in filter {
                out.extend_from_slice(&op.code.to_le_bytes());
                out.extend_from_slice(&[op.jt, op.jf]);
                out.extend_from_slice(&op.k.to_le_bytes());
            }
        }
        out
    }

    /// The inverse of [`Self::to_bytes`]; `None` for anything malformed.
    pub(super) fn from_bytes(bytes: &[u8]) -> Option<SeccompProgram> {
        let (flags, mut rest) = bytes.split_first_chunk::<8>()?;
        let flags = libc::c_ulong::try_from(u64::from_le_bytes(*flags)).ok()?;
        let mut filters = Vec::new();
        while !rest.is_empty() {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let len = u32::from_le_bytes(*len) as usize;
            // The kernel takes at most BPF_MAXINSNS (4096) instructions per filter.
            if len == 0 || len > 4096 || tail.len() < len * 8 {
                return None;
            }
            let (ops, tail) = tail.split_at(len * 8);
            let filter = ops
                .chunks_exact(8)
                .map(|op| seccompiler::sock_filter {
                    code: u16::from_le_bytes([op[0], op[1]]),
                    jt: op[2],
                    jf: op[3],
                    k: u32::from_le_bytes([op[4], op[5], op[6], op[7]]),
                })
                .collect();
            filters.push(filter);
            rest = tail;
        }
        Some(SeccompProgram { filters, flags })
    }

    /// Installs the filters on the calling thread. Without no_new_privs this needs CAP_SYS_ADMIN.
    pub fn install(&self) -> std::io::Result<()> {
        // The kernel runs every filter and keeps the highest-precedence result, whatever the order.
        for filter in &self.filters {
            #[repr(C)]
            struct SockFprog {
                len: libc::c_ushort,
                filter: *const seccompiler::sock_filter,
            }
            let prog = SockFprog {
                len: filter.len() as libc::c_ushort,
                filter: filter.as_ptr(),
            };
            // SAFETY: seccomp(SET_MODE_FILTER) copies the program from a valid sock_fprog pointing into a live Vec.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    self.flags,
                    &prog as *const SockFprog,
                )
            };
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxSeccompBuilder, LinuxSyscallBuilder};

    /// The x32 killer, on x86_64.
    const X32: usize = cfg!(target_arch = "x86_64") as usize;

    #[test]
    fn a_profile_becomes_one_filter_per_action_and_unknown_names_are_skipped() {
        let profile = LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActErrno)
            .syscalls(vec![
                LinuxSyscallBuilder::default()
                    .names(vec![
                        "read".to_string(),
                        "write".into(),
                        "no_such_syscall".into(),
                    ])
                    .action(LinuxSeccompAction::ScmpActAllow)
                    .build()
                    .unwrap(),
                LinuxSyscallBuilder::default()
                    .names(vec!["mkdir".to_string()])
                    .action(LinuxSeccompAction::ScmpActErrno)
                    .errno_ret(122u32)
                    .build()
                    .unwrap(),
            ])
            .build()
            .unwrap();
        let program = compile(&profile).unwrap();
        assert_eq!(program.filters.len(), 2 + X32);
    }

    #[test]
    fn argument_conditions_compile() {
        let profile: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_NE"}]},
                {"names": ["clone"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["personality"], "action": "SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        let program = compile(&profile).unwrap();
        // Default allow: one filter, for the errno action; personality's unconditional rule wins.
        assert_eq!(program.filters.len(), 1 + X32);
    }

    #[test]
    fn syscall_numbers_come_from_seccompilers_tables() {
        let (arch, _) = target().unwrap();
        for (name, nr) in [
            ("read", libc::SYS_read),
            ("write", libc::SYS_write),
            ("add_key", libc::SYS_add_key),
            ("clone3", libc::SYS_clone3),
            ("personality", libc::SYS_personality),
        ] {
            assert_eq!(syscall_number(arch, name), Some(nr as u32), "{name}");
        }
        assert_eq!(syscall_number(arch, "no_such_syscall"), None);
    }

    #[test]
    fn notify_is_refused_by_name() {
        let profile = LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActNotify)
            .build()
            .unwrap();
        assert!(
            compile(&profile)
                .unwrap_err()
                .to_string()
                .contains("SCMP_ACT_NOTIFY")
        );
    }
}
