//! A run's NAT table through nf_tables netlink directly: one batch creates it, one deletes it. Running
//! the `nft` tool costs about 10 ms per call (start-up, cache dump), twice per run; a batch costs well
//! under one. The table is what `nft -f` would make of:
//!
//! ```text
//! table ip dstack_<short> {
//!     chain postrouting { type nat hook postrouting priority 100; policy accept;
//!         ip saddr <job> oifname != "<host_if>" masquerade }
//!     chain forward { type filter hook forward priority 0; policy accept;
//!         iifname "<host_if>" oifname "dst*" drop }
//! }
//! ```

use std::io;
use std::net::Ipv4Addr;

const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFPROTO_IPV4: u8 = 2;

const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;

const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_OIFNAME: u32 = 7;
const NF_INET_FORWARD: u32 = 2;
const NF_INET_POST_ROUTING: u32 = 4;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A batch of nf_tables messages in one buffer.
struct Batch {
    buf: Vec<u8>,
    /// Start of the message being built, and of each open nest.
    start: usize,
    nests: Vec<usize>,
    seq: u32,
    /// Messages that will be acknowledged.
    acked: usize,
}

impl Batch {
    fn new() -> Batch {
        let mut b = Batch {
            buf: Vec::new(),
            start: 0,
            nests: Vec::new(),
            seq: 0,
            acked: 0,
        };
        b.message(NFNL_MSG_BATCH_BEGIN, 0, 0);
        b
    }

    /// Starts a message: header and nfgenmsg (family, version 0, resource id).
    fn message(&mut self, kind: u16, flags: u16, family: u8) {
        self.close();
        self.start = self.buf.len();
        self.seq += 1;
        let res_id: u16 = if kind == NFNL_MSG_BATCH_BEGIN || kind == NFNL_MSG_BATCH_END {
            NFNL_SUBSYS_NFTABLES
        } else {
            0
        };
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf
            .extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&[family, 0]);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        if flags & NLM_F_ACK != 0 {
            self.acked += 1;
        }
    }

    fn nft(&mut self, msg: u16, flags: u16) {
        self.message(
            (NFNL_SUBSYS_NFTABLES << 8) | msg,
            flags | NLM_F_ACK,
            NFPROTO_IPV4,
        );
    }

    /// Writes the length of the message being built.
    fn close(&mut self) {
        if self.buf.len() > self.start {
            let len = (self.buf.len() - self.start) as u32;
            self.buf[self.start..self.start + 4].copy_from_slice(&len.to_ne_bytes());
        }
    }

    fn attr(&mut self, kind: u16, data: &[u8]) {
        self.buf
            .extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    fn str(&mut self, kind: u16, s: &str) {
        let mut data = s.as_bytes().to_vec();
        data.push(0);
        self.attr(kind, &data);
    }

    fn u32(&mut self, kind: u16, v: u32) {
        self.attr(kind, &v.to_be_bytes());
    }

    fn begin(&mut self, kind: u16) {
        self.nests.push(self.buf.len());
        self.attr(kind | NLA_F_NESTED, &[]);
    }

    fn end(&mut self) {
        let at = self.nests.pop().expect("balanced nests");
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// One expression of a rule: `name` with its attributes.
    fn expr(&mut self, name: &str, data: impl FnOnce(&mut Batch)) {
        self.begin(NFTA_LIST_ELEM);
        self.str(NFTA_EXPR_NAME, name);
        self.begin(NFTA_EXPR_DATA);
        data(self);
        self.end();
        self.end();
    }

    fn cmp(&mut self, op: u32, value: &[u8]) {
        self.expr("cmp", |b| {
            b.u32(NFTA_CMP_SREG, NFT_REG_1);
            b.u32(NFTA_CMP_OP, op);
            b.begin(NFTA_CMP_DATA);
            b.attr(NFTA_DATA_VALUE, value);
            b.end();
        });
    }

    fn meta(&mut self, key: u32) {
        self.expr("meta", |b| {
            b.u32(NFTA_META_KEY, key);
            b.u32(NFTA_META_DREG, NFT_REG_1);
        });
    }

    fn chain(&mut self, table: &str, name: &str, kind: &str, hook: u32, priority: i32) {
        self.nft(NFT_MSG_NEWCHAIN, NLM_F_CREATE);
        self.str(NFTA_CHAIN_TABLE, table);
        self.str(NFTA_CHAIN_NAME, name);
        self.begin(NFTA_CHAIN_HOOK);
        self.u32(NFTA_HOOK_HOOKNUM, hook);
        self.u32(NFTA_HOOK_PRIORITY, priority as u32);
        self.end();
        self.u32(NFTA_CHAIN_POLICY, NF_ACCEPT);
        self.str(NFTA_CHAIN_TYPE, kind);
    }

    fn rule(&mut self, table: &str, chain: &str, exprs: impl FnOnce(&mut Batch)) {
        self.nft(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND);
        self.str(NFTA_RULE_TABLE, table);
        self.str(NFTA_RULE_CHAIN, chain);
        self.begin(NFTA_RULE_EXPRESSIONS);
        exprs(self);
        self.end();
    }

    fn finish(mut self) -> (Vec<u8>, usize) {
        self.message(NFNL_MSG_BATCH_END, 0, 0);
        self.close();
        (self.buf, self.acked)
    }
}

/// An interface name as nf_tables compares it: IFNAMSIZ bytes, zero-padded.
fn ifname(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..name.len().min(15)].copy_from_slice(&name.as_bytes()[..name.len().min(15)]);
    out
}

fn table_batch(table: &str, host_if: &str, prefix: &str, job_ip: Ipv4Addr) -> (Vec<u8>, usize) {
    let mut b = Batch::new();
    b.nft(NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_EXCL);
    b.str(NFTA_TABLE_NAME, table);
    b.chain(table, "postrouting", "nat", NF_INET_POST_ROUTING, 100);
    b.rule(table, "postrouting", |b| {
        b.expr("payload", |b| {
            b.u32(NFTA_PAYLOAD_DREG, NFT_REG_1);
            b.u32(NFTA_PAYLOAD_BASE, NFT_PAYLOAD_NETWORK_HEADER);
            b.u32(NFTA_PAYLOAD_OFFSET, 12);
            b.u32(NFTA_PAYLOAD_LEN, 4);
        });
        b.cmp(NFT_CMP_EQ, &job_ip.octets());
        b.meta(NFT_META_OIFNAME);
        b.cmp(NFT_CMP_NEQ, &ifname(host_if));
        b.expr("masq", |_| {});
    });
    b.chain(table, "forward", "filter", NF_INET_FORWARD, 0);
    b.rule(table, "forward", |b| {
        b.meta(NFT_META_IIFNAME);
        b.cmp(NFT_CMP_EQ, &ifname(host_if));
        b.meta(NFT_META_OIFNAME);
        // A prefix: the first bytes only, as nft compiles `oifname "dst*"`.
        b.cmp(NFT_CMP_EQ, prefix.as_bytes());
        b.expr("immediate", |b| {
            b.u32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
            b.begin(NFTA_IMMEDIATE_DATA);
            b.begin(NFTA_DATA_VERDICT);
            b.u32(NFTA_VERDICT_CODE, NF_DROP);
            b.end();
            b.end();
        });
    });
    b.finish()
}

/// Sends a batch and waits for every acknowledgement; the first error (an errno) fails it, and the
/// kernel then applies none of it. Only system calls, no allocation: it also runs in forked children
/// of a multi-threaded process.
fn send_raw(bytes: &[u8], acks: usize, buf: &mut [u8]) -> Result<(), i32> {
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    // SAFETY: creating a socket, closed below on every path.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_NETFILTER,
        )
    };
    if fd < 0 {
        return Err(errno());
    }
    let result = (|| {
        // SAFETY: sockaddr_nl is plain data; zero addresses the kernel.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: sendto reads `bytes` and a valid sockaddr_nl of the given size.
        let n = unsafe {
            libc::sendto(
                fd,
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if n < 0 {
            return Err(errno());
        }
        let mut seen = 0;
        while seen < acks {
            // SAFETY: recv writes at most buf.len() bytes into buf.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                match errno() {
                    libc::EINTR => continue,
                    e => return Err(e),
                }
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= 20 {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                if len < 16 || len > rest.len() {
                    return Err(libc::EPROTO);
                }
                if kind == NLMSG_ERROR {
                    let code = i32::from_ne_bytes([rest[16], rest[17], rest[18], rest[19]]);
                    if code != 0 {
                        return Err(-code);
                    }
                    seen += 1;
                }
                rest = &rest[align4(len).min(rest.len())..];
            }
        }
        Ok(())
    })();
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(fd) };
    result
}

fn send(batch: (Vec<u8>, usize)) -> io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    send_raw(&batch.0, batch.1, &mut buf).map_err(io::Error::from_raw_os_error)
}

fn delete_batch(table: &str) -> (Vec<u8>, usize) {
    let mut b = Batch::new();
    b.nft(NFT_MSG_DELTABLE, 0);
    b.str(NFTA_TABLE_NAME, table);
    b.finish()
}

/// Creates the run's table, replacing a leftover of the same name.
pub(super) fn create(table: &str, host_if: &str, prefix: &str, job_ip: Ipv4Addr) -> io::Result<()> {
    match send(table_batch(table, host_if, prefix, job_ip)) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            delete(table)?;
            send(table_batch(table, host_if, prefix, job_ip))
        }
        other => other,
    }
}

/// Deletes the run's table; `Ok(false)` when there was none.
pub(super) fn delete(table: &str) -> io::Result<bool> {
    match send(delete_batch(table)) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A table being created by a child process (committing a new nat chain takes the kernel ~4 ms, which
/// this overlaps with the rest of the container's start).
pub(super) struct PendingCreate {
    pid: libc::pid_t,
    args: (String, String, String, Ipv4Addr),
}

/// Forks a child that creates the table; `PendingCreate::wait` collects the result. Call it while the
/// process is single-threaded (before the container's clone).
pub(super) fn create_in_background(
    table: &str,
    host_if: &str,
    prefix: &str,
    job_ip: Ipv4Addr,
) -> io::Result<PendingCreate> {
    let (bytes, acks) = table_batch(table, host_if, prefix, job_ip);
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: fork; the child only makes system calls on memory prepared above, then _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let code = match send_raw(&bytes, acks, &mut buf) {
            Ok(()) => 0,
            Err(e) => e.clamp(1, 255),
        };
        // SAFETY: ending the child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    Ok(PendingCreate {
        pid,
        args: (table.into(), host_if.into(), prefix.into(), job_ip),
    })
}

impl PendingCreate {
    pub(super) fn wait(self) -> io::Result<()> {
        let mut status = 0;
        loop {
            // SAFETY: waiting for our own child into a local status word.
            let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if r == self.pid {
                break;
            }
            if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return Err(io::Error::last_os_error());
            }
        }
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            libc::EIO
        };
        match code {
            0 => Ok(()),
            // A leftover table of the same name: replace it, here and now (rare).
            libc::EEXIST => create(&self.args.0, &self.args.1, &self.args.2, self.args.3),
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// Deletes the table from a detached grandchild (unhooking the chains waits ~10 ms for the kernel's
/// RCU grace period, which then does not delay the run's end), which then removes `record` and exits.
/// It keeps `keep_fd` (the lease's lock, so the lease stays held until the table is gone) and closes
/// every other descriptor, so that no one waiting for the run's output waits for it.
pub(super) fn delete_detached(
    table: &str,
    record: &std::path::Path,
    keep_fd: i32,
) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let (bytes, acks) = delete_batch(table);
    let mut buf = vec![0u8; 16 * 1024];
    let record = std::ffi::CString::new(record.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let null = c"/dev/null";
    // SAFETY: fork; child and grandchild only make system calls on memory prepared above, then _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: as above; the child forks the grandchild and ends at once, so init adopts it.
        unsafe {
            if libc::fork() == 0 {
                libc::setsid();
                let fd = libc::open(null.as_ptr(), libc::O_RDWR);
                for std in 0..3 {
                    libc::dup2(fd, std);
                }
                close_all_but(keep_fd);
                let _ = send_raw(&bytes, acks, &mut buf);
                libc::unlink(record.as_ptr());
            }
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: reaping the intermediate child, which exits at once.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    Ok(())
}

/// Closes every descriptor from 3 up but `keep`.
fn close_all_but(keep: i32) {
    // SAFETY: close_range/close on descriptors of this (forked) process only.
    unsafe {
        let ranges = [
            (3u32, (keep as u32).saturating_sub(1)),
            (keep as u32 + 1, u32::MAX),
        ];
        for (lo, hi) in ranges {
            if lo <= hi && libc::syscall(libc::SYS_close_range, lo, hi, 0) != 0 {
                for fd in lo..hi.min(4096) {
                    libc::close(fd as i32);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_framed_and_counts_its_acks() {
        let (bytes, acks) = table_batch("dstack_x", "dstx", "dst", Ipv4Addr::new(10, 89, 0, 2));
        assert_eq!(acks, 5, "table, two chains, two rules");
        // Walk the messages: lengths add up to the buffer, begin and end frame the batch.
        let mut off = 0;
        let mut kinds = Vec::new();
        while off < bytes.len() {
            let len = u32::from_ne_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
            kinds.push(u16::from_ne_bytes(
                bytes[off + 4..off + 6].try_into().unwrap(),
            ));
            off += align4(len);
        }
        assert_eq!(off, bytes.len());
        assert_eq!(kinds.first(), Some(&NFNL_MSG_BATCH_BEGIN));
        assert_eq!(kinds.last(), Some(&NFNL_MSG_BATCH_END));
        assert_eq!(kinds.len(), 7);
    }
}
