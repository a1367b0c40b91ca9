//! The cgroup v2 device filter: a few raw BPF instructions (as runc and crun write them) that allow the listed
//! devices and deny everything else, loaded and attached with the `bpf(2)` syscall.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{DeviceAccess, DeviceKind, DevicePolicy};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
/// Let programs attached to ancestors run too (systemd attaches its own with the same flag).
const BPF_F_ALLOW_MULTI: u32 = 2;

// From `struct bpf_cgroup_dev_ctx` (access_type = access << 16 | type, major, minor).
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

/// One `struct bpf_insn`: opcode, dst (low nibble) and src (high nibble) registers, offset, immediate.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const LDX_W: u8 = 0x61; // dst = *(u32 *)(src + off)
const MOV64_X: u8 = 0xbf; // dst = src
const MOV64_K: u8 = 0xb7; // dst = imm
const AND32_K: u8 = 0x54; // dst &= imm
const RSH32_K: u8 = 0x74; // dst >>= imm
const JNE_K: u8 = 0x55; // if dst != imm goto +off
const JNE_X: u8 = 0x5d; // if dst != src goto +off
const EXIT: u8 = 0x95;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

/// Assembles the filter. Registers: r2 = type, r3 = requested access, r4 = major, r5 = minor; each rule is a
/// block that jumps to the next block on any mismatch and returns 1 (allow) when all fields match.
pub(crate) fn program(policy: &DevicePolicy) -> Vec<Insn> {
    let mut prog = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(MOV64_X, 3, 2, 0, 0),
        insn(AND32_K, 2, 0, 0, 0xffff),
        insn(RSH32_K, 3, 0, 0, 16),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
    ];
    for rule in policy.rules() {
        // Jump offsets are filled in once the block's length is known (0 marks "to the next block").
        let mut block = Vec::new();
        match rule.kind {
            DeviceKind::Char => block.push(insn(JNE_K, 2, 0, 0, DEV_CHAR)),
            DeviceKind::Block => block.push(insn(JNE_K, 2, 0, 0, DEV_BLOCK)),
            DeviceKind::Any => {}
        }
        if rule.access != DeviceAccess::RWM {
            // Allowed only when the requested bits are a subset of the rule's: (req & allowed) == req.
            block.push(insn(MOV64_X, 1, 3, 0, 0));
            block.push(insn(AND32_K, 1, 0, 0, access_bits(rule.access)));
            block.push(insn(JNE_X, 1, 3, 0, 0));
        }
        if let Some(major) = rule.major {
            block.push(insn(JNE_K, 4, 0, 0, major as i32));
        }
        if let Some(minor) = rule.minor {
            block.push(insn(JNE_K, 5, 0, 0, minor as i32));
        }
        block.push(insn(MOV64_K, 0, 0, 0, 1));
        block.push(insn(EXIT, 0, 0, 0, 0));
        let len = block.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.code == JNE_K || ins.code == JNE_X {
                ins.off = (len - i - 1) as i16;
            }
        }
        prog.extend(block);
    }
    prog.push(insn(MOV64_K, 0, 0, 0, 0));
    prog.push(insn(EXIT, 0, 0, 0, 0));
    prog
}

fn access_bits(access: DeviceAccess) -> i32 {
    (if access.read { ACC_READ } else { 0 })
        | (if access.write { ACC_WRITE } else { 0 })
        | (if access.mknod { ACC_MKNOD } else { 0 })
}

/// The leading fields of `union bpf_attr` for BPF_PROG_LOAD; the kernel accepts a shorter struct.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for BPF_PROG_ATTACH.
#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// Which step failed, for the error message.
pub(crate) type Step = &'static str;

/// Loads the filter and attaches it to the cgroup open at `cgroup`. The cgroup keeps the program alive, so
/// our program fd is closed on return.
pub(crate) fn attach(
    cgroup: BorrowedFd<'_>,
    policy: &DevicePolicy,
) -> Result<(), (Step, io::Error)> {
    let prog = program(policy);
    let license = c"GPL";
    let mut name = [0u8; 16];
    name[..10].copy_from_slice(b"dstack_dev");
    let mut log = vec![0u8; 4096];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name: name,
        expected_attach_type: BPF_CGROUP_DEVICE,
        ..ProgLoadAttr::default()
    };
    // SAFETY: `attr` is a valid, fully initialised prefix of `union bpf_attr`; the pointers in it (instructions,
    // license, log buffer) outlive the call and their lengths are given in the struct.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &mut attr as *mut ProgLoadAttr,
            size_of::<ProgLoadAttr>(),
        )
    };
    if fd < 0 {
        let err = io::Error::last_os_error();
        let verifier =
            String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(0)])
                .into_owned();
        let detail = if verifier.trim().is_empty() {
            err
        } else {
            io::Error::new(err.kind(), format!("{err}: {}", verifier.trim()))
        };
        return Err(("loading the BPF program", detail));
    }
    // SAFETY: the kernel just returned this new file descriptor to us; nothing else owns it.
    let prog_fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attach = ProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog_fd.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    // SAFETY: `attach` is a valid BPF_PROG_ATTACH attribute holding two open fds borrowed for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attach as *const ProgAttachAttr,
            size_of::<ProgAttachAttr>(),
        )
    };
    if rc < 0 {
        return Err(("attaching it to the cgroup", io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::DeviceRule;

    /// Interprets the program the way the kernel would, for one device access.
    fn run(prog: &[Insn], kind: i32, access: i32, major: u32, minor: u32) -> i64 {
        let ctx = [((access << 16) | kind) as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_W => r[dst] = ctx[i.off as usize / 4] as u64,
                MOV64_X => r[dst] = r[src],
                MOV64_K => r[dst] = i.imm as i64 as u64,
                AND32_K => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
                RSH32_K => r[dst] = ((r[dst] as u32) >> i.imm) as u64,
                JNE_K if r[dst] != i.imm as i64 as u64 => pc += i.off as usize,
                JNE_X if r[dst] != r[src] => pc += i.off as usize,
                JNE_K | JNE_X => {}
                EXIT => return r[0] as i64,
                other => panic!("unknown opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn docker_default_allows_null_and_pts_and_denies_the_rest() {
        let prog = program(&DevicePolicy::docker_default());
        assert_eq!(
            run(&prog, DEV_CHAR, ACC_READ | ACC_WRITE, 1, 3),
            1,
            "/dev/null"
        );
        assert_eq!(run(&prog, DEV_CHAR, ACC_MKNOD, 1, 3), 1, "mknod /dev/null");
        assert_eq!(run(&prog, DEV_CHAR, ACC_READ, 136, 7), 1, "/dev/pts/7");
        assert_eq!(run(&prog, DEV_CHAR, ACC_READ, 1, 1), 0, "/dev/mem");
        assert_eq!(run(&prog, DEV_CHAR, ACC_MKNOD, 1, 1), 0, "mknod /dev/mem");
        assert_eq!(run(&prog, DEV_BLOCK, ACC_READ, 1, 3), 0, "block 1:3");
        assert_eq!(run(&prog, DEV_BLOCK, ACC_READ, 8, 0), 0, "/dev/sda");
    }

    #[test]
    fn partial_access_and_wildcards() {
        let mut policy = DevicePolicy::deny_all();
        policy.allow(DeviceRule {
            kind: DeviceKind::Char,
            major: Some(195),
            minor: None,
            access: DeviceAccess::RW,
        });
        policy.allow(DeviceRule {
            kind: DeviceKind::Any,
            major: Some(7),
            minor: Some(0),
            access: DeviceAccess::RWM,
        });
        let prog = program(&policy);
        assert_eq!(run(&prog, DEV_CHAR, ACC_READ | ACC_WRITE, 195, 4), 1);
        assert_eq!(
            run(&prog, DEV_CHAR, ACC_MKNOD, 195, 4),
            0,
            "rw rule does not allow mknod"
        );
        assert_eq!(run(&prog, DEV_BLOCK, ACC_READ, 7, 0), 1);
        assert_eq!(run(&prog, DEV_BLOCK, ACC_READ, 7, 1), 0);
        assert_eq!(
            run(
                &program(&DevicePolicy::deny_all()),
                DEV_CHAR,
                ACC_READ,
                1,
                3
            ),
            0
        );
    }
}
