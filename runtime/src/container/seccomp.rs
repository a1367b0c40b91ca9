//! The spec's seccomp profile as BPF, compiled by `seccompiler` (pure Rust, with its own syscall tables)
//! before the clone and installed by the job just before exec.
//!
//! seccompiler's filters have one action for matches and one for the rest, while a profile gives each
//! syscall its own action. The kernel runs every installed filter and keeps the strictest result, so a
//! profile becomes a stack: one filter returning the default action for every syscall no rule names, and
//! one filter per other action returning it for the syscalls of that action (allow for the rest). Syscall
//! names this architecture lacks are skipped, as libseccomp does; only the native architecture is allowed
//! (syscalls of other ABIs, such as 32-bit x86, are killed). On x86_64 the x32 ABI shares the native
//! audit architecture and sets bit 30 of the syscall number, which no rule names: a filter of its own kills
//! those too, so a profile that allows by default cannot be bypassed through x32.

use std::collections::{BTreeMap, HashSet};

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use seccompiler::{BpfProgram, TargetArch};
use serde_json::{Value, json};

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

/// An action as seccompiler's JSON names it (`None` for allow).
fn action(
    a: LinuxSeccompAction,
    errno: Option<u32>,
    default_errno: u32,
) -> Result<Value, SeccompError> {
    use LinuxSeccompAction as A;
    Ok(match a {
        A::ScmpActAllow => json!("allow"),
        A::ScmpActKill | A::ScmpActKillThread => json!("kill_thread"),
        A::ScmpActKillProcess => json!("kill_process"),
        A::ScmpActTrap => json!("trap"),
        A::ScmpActLog => json!("log"),
        A::ScmpActErrno => json!({ "errno": errno.unwrap_or(default_errno) }),
        A::ScmpActTrace => json!({ "trace": errno.unwrap_or(default_errno) }),
        A::ScmpActNotify => {
            return Err(SeccompError::Unsupported(
                "the SCMP_ACT_NOTIFY action (seccomp user notification)".into(),
            ));
        }
    })
}

fn condition(arg: &LinuxSeccompArg) -> Value {
    use LinuxSeccompOperator as O;
    let (op, val) = match arg.op() {
        O::ScmpCmpNe => (json!("ne"), arg.value()),
        O::ScmpCmpLt => (json!("lt"), arg.value()),
        O::ScmpCmpLe => (json!("le"), arg.value()),
        O::ScmpCmpEq => (json!("eq"), arg.value()),
        O::ScmpCmpGe => (json!("ge"), arg.value()),
        O::ScmpCmpGt => (json!("gt"), arg.value()),
        // libseccomp: (arg & value) == valueTwo.
        O::ScmpCmpMaskedEq => (
            json!({ "masked_eq": arg.value() }),
            arg.value_two().unwrap_or(0),
        ),
    };
    json!({ "index": arg.index(), "type": "qword", "op": op, "val": val })
}

fn target() -> Result<TargetArch, SeccompError> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| SeccompError::Arch(std::env::consts::ARCH))
}

fn compile_one(
    arch: TargetArch,
    mismatch: &Value,
    matched: &Value,
    rules: &[Value],
) -> Result<BpfProgram, String> {
    let doc =
        json!({ "f": { "mismatch_action": mismatch, "match_action": matched, "filter": rules } });
    let mut map = seccompiler::compile_from_json(doc.to_string().as_bytes(), arch)
        .map_err(|e| e.to_string())?;
    map.remove("f")
        .ok_or_else(|| "no filter compiled".to_string())
}

/// Whether seccompiler knows `name` on `arch`.
fn known(arch: TargetArch, name: &str) -> bool {
    compile_one(
        arch,
        &json!("allow"),
        &json!("trap"),
        &[json!({ "syscall": name })],
    )
    .is_ok()
}

/// Rules of one action: syscall -> argument conditions (an empty list matches any arguments).
type Group = BTreeMap<String, Vec<Vec<Value>>>;

fn add(group: &mut Group, name: &str, conds: Vec<Value>) {
    let entry = group.entry(name.to_string()).or_default();
    let unconditional = entry.iter().any(|c| c.is_empty());
    if unconditional {
        return;
    }
    if conds.is_empty() {
        entry.clear();
    }
    entry.push(conds);
}

fn rules(group: &Group) -> Vec<Value> {
    let mut out = Vec::new();
    for (name, alternatives) in group {
        for conds in alternatives {
            if conds.is_empty() {
                out.push(json!({ "syscall": name }));
            } else {
                out.push(json!({ "syscall": name, "args": conds }));
            }
        }
    }
    out
}

pub(crate) fn compile(profile: &LinuxSeccomp) -> Result<SeccompProgram, SeccompError> {
    if profile.listener_path().is_some() {
        return Err(SeccompError::Unsupported(
            "listenerPath (seccomp user notification)".into(),
        ));
    }
    let arch = target()?;
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
    let mut named = Group::new();
    let mut by_action: BTreeMap<String, (Value, Group)> = BTreeMap::new();
    let mut checked: HashSet<String> = HashSet::new();
    let mut missing: HashSet<String> = HashSet::new();
    for sc in profile.syscalls().as_deref().unwrap_or_default() {
        let act = action(sc.action(), sc.errno_ret(), default_errno)?;
        let conds: Vec<Value> = sc
            .args()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(condition)
            .collect();
        for name in sc.names() {
            if !checked.contains(name) {
                checked.insert(name.clone());
                if !known(arch, name) {
                    missing.insert(name.clone());
                }
            }
            if missing.contains(name) {
                continue;
            }
            add(&mut named, name, conds.clone());
            if act != json!("allow") {
                let (_, group) = by_action
                    .entry(act.to_string())
                    .or_insert_with(|| (act.clone(), Group::new()));
                add(group, name, conds.clone());
            }
        }
    }
    if !missing.is_empty() {
        let mut list: Vec<_> = missing.into_iter().collect();
        list.sort();
        tracing::debug!(
            "seccomp: syscalls unknown on {}: {}",
            std::env::consts::ARCH,
            list.join(" ")
        );
    }
    let mut filters = Vec::new();
    if default != json!("allow") {
        filters.push(
            compile_one(arch, &default, &json!("allow"), &rules(&named))
                .map_err(SeccompError::Compile)?,
        );
    }
    for (act, group) in by_action.values() {
        filters.push(
            compile_one(arch, &json!("allow"), act, &rules(group))
                .map_err(SeccompError::Compile)?,
        );
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
