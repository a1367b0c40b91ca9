//! The BPF of one seccomp filter: a binary search over syscall-number ranges, then the argument checks of
//! the syscalls that have them. seccompiler's own backend compares the number with each syscall in turn:
//! Docker's profile became ~1,600 instructions that every syscall walked, and the kernel, which runs the
//! filter for every syscall number when it is installed (to find those it can always allow), took ~1 ms to
//! install it. Ranges of consecutive numbers with the same outcome are one leaf here, so the same profile
//! is a few hundred instructions and any syscall is decided in about ten.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, sock_filter};

/// A comparison of one 64-bit argument, as libseccomp's `SCMP_CMP_*` (unsigned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `(arg & mask) == value`
    MaskedEq(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cond {
    pub index: u32,
    pub op: Op,
    pub value: u64,
}

/// Syscall number -> alternatives, each a list of conditions that must all hold (an empty one always
/// does).
pub(super) type Rules = BTreeMap<u32, Vec<Vec<Cond>>>;

const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGT: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
/// `struct seccomp_data`: nr, arch, instruction pointer, args[6].
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARGS: u32 = 16;

fn op(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// A jump target inside one alternative's code, resolved once its length is known.
#[derive(Clone, Copy)]
enum To {
    Next,
    /// The end of this condition: it holds.
    Holds,
    /// The end of this alternative: it does not hold.
    Fails,
}

struct Insn {
    code: u16,
    jt: To,
    jf: To,
    k: u32,
}

fn ins(code: u16, jt: To, jf: To, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

/// One condition; little-endian words (x86_64, aarch64, riscv64: the architectures compiled for).
fn condition(c: &Cond) -> Vec<Insn> {
    use To::{Fails, Holds, Next};
    let lo_at = ARGS + 8 * c.index;
    let hi_at = lo_at + 4;
    let (hi, lo) = ((c.value >> 32) as u32, c.value as u32);
    let load = |at| ins(LD_ABS, Next, Next, at);
    match c.op {
        Op::Eq => vec![
            load(hi_at),
            ins(JEQ, Next, Fails, hi),
            load(lo_at),
            ins(JEQ, Next, Fails, lo),
        ],
        Op::Ne => vec![
            load(hi_at),
            ins(JEQ, Next, Holds, hi),
            load(lo_at),
            ins(JEQ, Fails, Next, lo),
        ],
        Op::MaskedEq(mask) => vec![
            load(hi_at),
            ins(AND_K, Next, Next, (mask >> 32) as u32),
            ins(JEQ, Next, Fails, hi),
            load(lo_at),
            ins(AND_K, Next, Next, mask as u32),
            ins(JEQ, Next, Fails, lo),
        ],
        // Greater in the high word decides; equal high words leave it to the low word.
        Op::Gt | Op::Ge => vec![
            load(hi_at),
            ins(JGT, Holds, Next, hi),
            ins(JEQ, Next, Fails, hi),
            load(lo_at),
            ins(if c.op == Op::Gt { JGT } else { JGE }, Next, Fails, lo),
        ],
        Op::Lt | Op::Le => vec![
            load(hi_at),
            ins(JGT, Fails, Next, hi),
            ins(JEQ, Next, Holds, hi),
            load(lo_at),
            ins(if c.op == Op::Lt { JGE } else { JGT }, Fails, Next, lo),
        ],
    }
}

fn offset(from: usize, to: usize) -> Result<u8, String> {
    u8::try_from(to - from - 1)
        .map_err(|_| "a syscall has too many argument conditions".to_string())
}

/// Code that returns `on_match` when any alternative holds, else `on_mismatch`.
fn alternatives(alts: &[Vec<Cond>], on_match: u32, on_mismatch: u32) -> Result<BpfProgram, String> {
    let mut out = Vec::new();
    for alt in alts {
        let mut code: Vec<(Insn, usize)> = Vec::new();
        for c in alt {
            let insns = condition(c);
            let end = code.len() + insns.len();
            code.extend(insns.into_iter().map(|i| (i, end)));
        }
        // The alternative ends with its return; `Fails` goes past it.
        let fails = code.len() + 1;
        let mut resolved = Vec::with_capacity(fails);
        for (at, (i, holds)) in code.iter().enumerate() {
            let target = |to: To| match to {
                To::Next => Ok(0),
                To::Holds => offset(at, *holds),
                To::Fails => offset(at, fails),
            };
            resolved.push(op(i.code, target(i.jt)?, target(i.jf)?, i.k));
        }
        resolved.push(op(RET, 0, 0, on_match));
        out.extend(resolved);
    }
    out.push(op(RET, 0, 0, on_mismatch));
    Ok(out)
}

/// Code deciding the syscall numbers from `segments[0].0` on, the number in the accumulator.
fn search(
    segments: &[(u32, Option<&Vec<Vec<Cond>>>)],
    on_match: u32,
    on_mismatch: u32,
) -> Result<BpfProgram, String> {
    if let [(_, outcome)] = segments {
        return match outcome {
            None => Ok(vec![op(RET, 0, 0, on_mismatch)]),
            Some(alts) if alts.iter().any(Vec::is_empty) => Ok(vec![op(RET, 0, 0, on_match)]),
            Some(alts) => alternatives(alts, on_match, on_mismatch),
        };
    }
    let mid = segments.len() / 2;
    let below = search(&segments[..mid], on_match, on_mismatch)?;
    let above = search(&segments[mid..], on_match, on_mismatch)?;
    // nr >= boundary: the jump over the lower half; else fall into it.
    let mut out = vec![
        op(JGE, 0, 1, segments[mid].0),
        op(JA, 0, 0, below.len() as u32),
    ];
    out.extend(below);
    out.extend(above);
    Ok(out)
}

/// A filter for `audit_arch` returning `on_match` for the syscalls (and arguments) of `rules` and
/// `on_mismatch` for the rest; other architectures kill the process.
pub(super) fn filter(
    audit_arch: u32,
    rules: &Rules,
    on_match: u32,
    on_mismatch: u32,
) -> Result<BpfProgram, String> {
    // Ranges of numbers: each starts where the outcome changes (no rule, unconditional, conditions).
    let mut segments: Vec<(u32, Option<&Vec<Vec<Cond>>>)> = Vec::new();
    let unconditional = |alts: &Vec<Vec<Cond>>| alts.iter().any(Vec::is_empty);
    // The first number no segment covers yet.
    let mut next: u64 = 0;
    for (&nr, alts) in rules {
        if u64::from(nr) > next {
            segments.push((next as u32, None));
        }
        let extends = u64::from(nr) == next
            && unconditional(alts)
            && matches!(segments.last(), Some((_, Some(last))) if unconditional(last));
        if !extends {
            segments.push((nr, Some(alts)));
        }
        next = u64::from(nr) + 1;
    }
    if next <= u64::from(u32::MAX) {
        segments.push((next as u32, None));
    }
    let mut out = vec![
        op(LD_ABS, 0, 0, ARCH),
        op(JEQ, 1, 0, audit_arch),
        op(RET, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        op(LD_ABS, 0, 0, NR),
    ];
    out.extend(search(&segments, on_match, on_mismatch)?);
    if out.len() > 4096 {
        return Err(format!(
            "the filter has {} instructions, more than the kernel's 4096",
            out.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs classic BPF on a `seccomp_data` (the subset the filters use).
    fn run(prog: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = &prog[pc];
            pc += 1;
            match i.code {
                LD_ABS => {
                    let at = i.k as usize;
                    acc = u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
                }
                AND_K => acc &= i.k,
                JA => pc += i.k as usize,
                JEQ | JGT | JGE => {
                    let taken = match i.code {
                        JEQ => acc == i.k,
                        JGT => acc > i.k,
                        _ => acc >= i.k,
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                RET => return i.k,
                other => panic!("unexpected code {other:#x}"),
            }
        }
    }

    const ARCH_X: u32 = 0xc000_003e;
    const YES: u32 = 7;
    const NO: u32 = 9;

    fn conds(list: &[(u32, Op, u64)]) -> Vec<Cond> {
        list.iter()
            .map(|&(index, op, value)| Cond { index, op, value })
            .collect()
    }

    #[test]
    fn numbers_ranges_and_arguments_decide_as_the_rules_say() {
        let mut rules = Rules::new();
        for nr in [0, 1, 2, 3, 10, 11, 400, 401] {
            rules.insert(nr, vec![vec![]]);
        }
        rules.insert(5, vec![conds(&[(0, Op::Ne, 40)])]);
        rules.insert(
            6,
            vec![conds(&[(0, Op::Eq, 0)]), conds(&[(0, Op::Eq, 0xffff_ffff)])],
        );
        rules.insert(7, vec![conds(&[(0, Op::MaskedEq(0x7e02_0000), 0)])]);
        rules.insert(8, vec![conds(&[(1, Op::Gt, 1 << 32), (2, Op::Le, 5)])]);
        rules.insert(9, vec![conds(&[(3, Op::Lt, 10)]), vec![]]);
        let prog = filter(ARCH_X, &rules, YES, NO).unwrap();
        let call = |nr, args| run(&prog, ARCH_X, nr, args);
        let none = [0; 6];
        for nr in [0, 1, 2, 3, 9, 10, 11, 400, 401] {
            assert_eq!(call(nr, none), YES, "{nr}");
        }
        for nr in [4, 12, 399, 402, 0x4000_0000, u32::MAX] {
            assert_eq!(call(nr, none), NO, "{nr}");
        }
        assert_eq!(call(5, [40, 0, 0, 0, 0, 0]), NO);
        assert_eq!(call(5, [40 | 1 << 32, 0, 0, 0, 0, 0]), YES);
        assert_eq!(call(6, [0xffff_ffff, 0, 0, 0, 0, 0]), YES);
        assert_eq!(call(6, [8, 0, 0, 0, 0, 0]), NO);
        assert_eq!(call(7, [0x11, 0, 0, 0, 0, 0]), YES);
        assert_eq!(call(7, [0x1000_0011, 0, 0, 0, 0, 0]), NO);
        assert_eq!(call(8, [0, (1 << 32) + 1, 5, 0, 0, 0]), YES);
        assert_eq!(call(8, [0, 1 << 32, 5, 0, 0, 0]), NO);
        assert_eq!(call(8, [0, 2 << 32, 6, 0, 0, 0]), NO);
        assert_eq!(call(8, [0, 2 << 32, 1 << 33, 0, 0, 0]), NO);
        // Another architecture is killed.
        assert_eq!(
            run(&prog, 0x4000_0003, 0, none),
            libc::SECCOMP_RET_KILL_PROCESS
        );
    }

    #[test]
    fn empty_rules_and_rules_from_zero_work() {
        let prog = filter(ARCH_X, &Rules::new(), YES, NO).unwrap();
        assert_eq!(run(&prog, ARCH_X, 0, [0; 6]), NO);
        let mut rules = Rules::new();
        rules.insert(0, vec![conds(&[(0, Op::Ge, 3)])]);
        let prog = filter(ARCH_X, &rules, YES, NO).unwrap();
        assert_eq!(run(&prog, ARCH_X, 0, [3, 0, 0, 0, 0, 0]), YES);
        assert_eq!(run(&prog, ARCH_X, 0, [2, 0, 0, 0, 0, 0]), NO);
        assert_eq!(run(&prog, ARCH_X, 1, [3, 0, 0, 0, 0, 0]), NO);
    }
}
