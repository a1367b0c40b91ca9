//! A run's NAT table through nf_tables netlink directly: one batch creates it, one deletes it. Running
//! the `nft` tool costs about 10 ms per call (start-up, cache dump), twice per run; a batch costs well
//! under one. The table is what `nft -f` would make of:
//!
//! ```text
//! table ip dstack_<short> {
//!     chain postrouting { type nat hook postrouting priority 100; policy accept;
//!         ip saddr <job> oifname != "<host_if>" masquerade
//!         # with published ports: local clients (127.0.0.1) and the job itself (hairpin) reach the job
//!         # from the host end's address
//!         ip saddr 127.0.0.0/8 oifname "<host_if>" masquerade
//!         ip saddr <job> ip daddr <job> masquerade }
//!     chain forward { type filter hook forward priority 0; policy accept;
//!         iifname "<host_if>" oifname "dst*" ct status & dnat == 0 drop }
//!     # with published ports only:
//!     chain prerouting { type nat hook prerouting priority -100; policy accept;
//!         fib daddr type local tcp dport <port> dnat to <job>:<port> ... }
//!     chain output { type nat hook output priority -100; policy accept;
//!         fib daddr type local tcp dport <port> dnat to <job>:<port> ... }
//!     chain input { type filter hook input priority 0; policy accept;
//!         iifname "<host_if>" ip daddr 127.0.0.0/8 ct direction original drop }
//! }
//! ```
//!
//! Published IPv4 ports are thus forwarded by the kernel (DNAT), as fast as the veth itself; the
//! supervisor's forwarder still listens for what DNAT does not catch (IPv6 clients). DNAT of
//! `127.0.0.1` needs `route_localnet` on the host end, which would also let the job reach the host's
//! loopback services by sending to 127/8 through its veth: the input rule drops exactly that (as
//! kube-proxy does since CVE-2020-8558).

use std::io;
use std::net::Ipv4Addr;

use super::nfbatch::*;

/// One run's table: its interfaces, its address, and the ports the kernel forwards to it.
#[derive(Debug, Clone)]
pub(super) struct RunTable {
    pub name: String,
    /// The veth's host end.
    pub host_if: String,
    /// What every run's host end starts with.
    pub prefix: &'static str,
    pub job_ip: Ipv4Addr,
    /// Published TCP ports, the same number on the host and in the job.
    pub ports: Vec<u16>,
    /// With the expressions beyond the basic ones (ct, fib, nat: modules a kernel may lack): DNAT of the
    /// ports, and other runs' published ports exempt from isolation.
    pub full: bool,
}

impl RunTable {
    /// The table without the `full` expressions: outbound NAT and isolation only.
    pub fn basic(&self) -> RunTable {
        RunTable {
            ports: Vec::new(),
            full: false,
            ..self.clone()
        }
    }

    /// Whether the kernel forwards the published ports itself.
    pub fn forwards_ports(&self) -> bool {
        self.full && !self.ports.is_empty()
    }
}

fn table_batch(t: &RunTable) -> (Vec<u8>, usize) {
    let (table, host_if, job_ip) = (t.name.as_str(), t.host_if.as_str(), t.job_ip);
    let loopback_net = [127u8];
    let mut b = Batch::new();
    b.nft(NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_EXCL);
    b.str(NFTA_TABLE_NAME, table);
    b.chain(table, "postrouting", "nat", NF_INET_POST_ROUTING, 100);
    b.rule(table, "postrouting", |b| {
        b.payload(NFT_PAYLOAD_NETWORK_HEADER, 12, 4);
        b.cmp(NFT_CMP_EQ, &job_ip.octets());
        b.meta(NFT_META_OIFNAME);
        b.cmp(NFT_CMP_NEQ, &ifname(host_if));
        b.expr("masq", |_| {});
    });
    if t.forwards_ports() {
        b.rule(table, "postrouting", |b| {
            b.payload(NFT_PAYLOAD_NETWORK_HEADER, 12, 1);
            b.cmp(NFT_CMP_EQ, &loopback_net);
            b.interface_is(NFT_META_OIFNAME, host_if);
            b.expr("masq", |_| {});
        });
        b.rule(table, "postrouting", |b| {
            b.payload(NFT_PAYLOAD_NETWORK_HEADER, 12, 4);
            b.cmp(NFT_CMP_EQ, &job_ip.octets());
            b.payload(NFT_PAYLOAD_NETWORK_HEADER, 16, 4);
            b.cmp(NFT_CMP_EQ, &job_ip.octets());
            b.expr("masq", |_| {});
        });
    }
    b.chain(table, "forward", "filter", NF_INET_FORWARD, 0);
    b.rule(table, "forward", |b| {
        b.interface_is(NFT_META_IIFNAME, host_if);
        b.meta(NFT_META_OIFNAME);
        // A prefix: the first bytes only, as nft compiles `oifname "dst*"`.
        b.cmp(NFT_CMP_EQ, t.prefix.as_bytes());
        if !t.full {
            b.drop_packet();
            return;
        }
        // Another run's published port, reached through the host's address, is not isolation's business.
        b.ct(NFT_CT_STATUS);
        b.expr("bitwise", |b| {
            b.u32(NFTA_BITWISE_SREG, NFT_REG_1);
            b.u32(NFTA_BITWISE_DREG, NFT_REG_1);
            b.u32(NFTA_BITWISE_LEN, 4);
            b.begin(NFTA_BITWISE_MASK);
            b.attr(NFTA_DATA_VALUE, &IPS_DST_NAT.to_ne_bytes());
            b.end();
            b.begin(NFTA_BITWISE_XOR);
            b.attr(NFTA_DATA_VALUE, &0u32.to_ne_bytes());
            b.end();
        });
        b.cmp(NFT_CMP_EQ, &0u32.to_ne_bytes());
        b.drop_packet();
    });
    if !t.forwards_ports() {
        return b.finish();
    }
    for (chain, hook) in [
        ("prerouting", NF_INET_PRE_ROUTING),
        ("output", NF_INET_LOCAL_OUT),
    ] {
        b.chain(table, chain, "nat", hook, -100);
        for port in &t.ports {
            b.rule(table, chain, |b| {
                b.expr("fib", |b| {
                    b.u32(NFTA_FIB_DREG, NFT_REG_1);
                    b.u32(NFTA_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE);
                    b.u32(NFTA_FIB_FLAGS, NFTA_FIB_F_DADDR);
                });
                b.cmp(NFT_CMP_EQ, &RTN_LOCAL.to_ne_bytes());
                b.meta(NFT_META_L4PROTO);
                b.cmp(NFT_CMP_EQ, &[libc::IPPROTO_TCP as u8]);
                b.payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
                b.cmp(NFT_CMP_EQ, &port.to_be_bytes());
                b.immediate(NFT_REG_1, &job_ip.octets());
                b.immediate(NFT_REG_2, &port.to_be_bytes());
                b.expr("nat", |b| {
                    b.u32(NFTA_NAT_TYPE, NFT_NAT_DNAT);
                    b.u32(NFTA_NAT_FAMILY, NFPROTO_IPV4 as u32);
                    b.u32(NFTA_NAT_REG_ADDR_MIN, NFT_REG_1);
                    b.u32(NFTA_NAT_REG_PROTO_MIN, NFT_REG_2);
                    b.u32(NFTA_NAT_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED);
                });
            });
        }
    }
    b.chain(table, "input", "filter", NF_INET_LOCAL_IN, 0);
    b.rule(table, "input", |b| {
        b.interface_is(NFT_META_IIFNAME, host_if);
        b.payload(NFT_PAYLOAD_NETWORK_HEADER, 16, 1);
        b.cmp(NFT_CMP_EQ, &loopback_net);
        b.ct(NFT_CT_DIRECTION);
        b.cmp(NFT_CMP_EQ, &[IP_CT_DIR_ORIGINAL]);
        b.drop_packet();
    });
    b.finish()
}

fn delete_batch(table: &str) -> (Vec<u8>, usize) {
    let mut b = Batch::new();
    b.nft(NFT_MSG_DELTABLE, 0);
    b.str(NFTA_TABLE_NAME, table);
    b.finish()
}

/// Creates the run's table, replacing a leftover of the same name.
pub(super) fn create(table: &RunTable) -> io::Result<()> {
    match send(table_batch(table)) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            delete(&table.name)?;
            send(table_batch(table))
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
    table: RunTable,
}

/// Forks a child that creates the table; `PendingCreate::wait` collects the result. Call it while the
/// process is single-threaded (before the container's clone).
pub(super) fn create_in_background(table: &RunTable) -> io::Result<PendingCreate> {
    let (bytes, acks) = table_batch(table);
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
        table: table.clone(),
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
            libc::EEXIST => create(&self.table),
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
    fn the_basic_table_needs_no_ct_fib_or_nat_expression() {
        let table = RunTable {
            name: "dstack_x".into(),
            host_if: "dstx".into(),
            prefix: "dst",
            job_ip: Ipv4Addr::new(10, 89, 0, 2),
            ports: vec![8080],
            full: true,
        };
        let has = has_expression;
        let (full, full_acks) = table_batch(&table);
        let (basic, basic_acks) = table_batch(&table.basic());
        for expr in ["ct", "fib", "nat"] {
            assert!(has(&full, expr), "{expr}");
            assert!(!has(&basic, expr), "{expr}");
        }
        assert!(has(&basic, "masq"));
        // Table, postrouting and forward chains and rules; the full one adds two postrouting rules, two
        // nat chains with a rule per port, and the input chain and rule.
        assert_eq!(basic_acks, 5);
        assert_eq!(full_acks, 5 + 2 + 2 * 2 + 2);
    }

    #[test]
    fn a_batch_is_framed_and_counts_its_acks() {
        let table = RunTable {
            name: "dstack_x".into(),
            host_if: "dstx".into(),
            prefix: "dst",
            job_ip: Ipv4Addr::new(10, 89, 0, 2),
            ports: Vec::new(),
            full: true,
        };
        let (bytes, acks) = table_batch(&table);
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
