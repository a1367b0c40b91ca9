//! Outbound NAT and isolation for one run, in a table (nft) or chains (iptables) of its own, so removing
//! them is exact: `table ip dstack_<short>` / chains `DSTACK-<short>`. Masquerade what the job sends out
//! of any interface but its own veth; drop what it sends to other runs' veths.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use super::{HOST_IF_PREFIX, NetError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NatTool {
    Nft,
    Iptables,
}

impl NatTool {
    pub fn name(self) -> &'static str {
        match self {
            NatTool::Nft => "nft",
            NatTool::Iptables => "iptables",
        }
    }
}

fn nft_table(short: &str) -> String {
    format!("dstack_{short}")
}

fn ipt_chain(short: &str) -> String {
    format!("DSTACK-{short}")
}

/// Runs `program args [SCRIPT-FILE]`, the script written to a temporary file (not a pipe: writing into
/// a pipe that a failing tool closed raises SIGPIPE, which dstack does not ignore). Err(None) when the
/// program does not exist.
fn run(program: &str, args: &[&str], script: Option<&str>) -> Result<(), Option<String>> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let file = match script {
        Some(text) => {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("dstack-nat-{}-{n}", std::process::id()));
            std::fs::write(&path, text).map_err(|e| Some(format!("{}: {e}", path.display())))?;
            Some(path)
        }
        None => None,
    };
    let out = Command::new(program)
        .args(args)
        .args(file.iter())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    if let Some(path) = &file {
        let _ = std::fs::remove_file(path);
    }
    let out = match out {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(None),
        Err(e) => return Err(Some(e.to_string())),
    };
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("failed");
    Err(Some(line.trim().to_string()))
}

/// What the netlink batch creates, as an `nft -f` script (the tests compare the two).
#[cfg(test)]
fn nft_script(short: &str, host_if: &str, job_ip: Ipv4Addr, ports: &[u16]) -> String {
    let table = nft_table(short);
    let published = !ports.is_empty();
    let mut s = format!(
        "table ip {table} {{\n\
         \tchain postrouting {{ type nat hook postrouting priority 100; policy accept;\n\
         \t\tip saddr {job_ip} oifname != \"{host_if}\" masquerade\n"
    );
    if published {
        s += &format!(
            "\t\tip saddr 127.0.0.0/8 oifname \"{host_if}\" masquerade\n\
             \t\tip saddr {job_ip} ip daddr {job_ip} masquerade\n"
        );
    }
    s += &format!(
        "\t}}\n\tchain forward {{ type filter hook forward priority 0; policy accept;\n\
         \t\tiifname \"{host_if}\" oifname \"{HOST_IF_PREFIX}*\" ct status & dnat == 0 drop\n\t}}\n"
    );
    if published {
        for (chain, hook) in [("prerouting", "prerouting"), ("output", "output")] {
            s +=
                &format!("\tchain {chain} {{ type nat hook {hook} priority -100; policy accept;\n");
            for p in ports {
                s += &format!("\t\tfib daddr type local tcp dport {p} dnat to {job_ip}:{p}\n");
            }
            s += "\t}\n";
        }
        s += &format!(
            "\tchain input {{ type filter hook input priority 0; policy accept;\n\
             \t\tiifname \"{host_if}\" ip daddr 127.0.0.0/8 ct direction original drop\n\t}}\n"
        );
    }
    s + "}\n"
}

fn iptables_rules(short: &str, host_if: &str, job_ip: Ipv4Addr) -> String {
    let chain = ipt_chain(short);
    format!(
        "*nat\n:{chain} - [0:0]\n-A {chain} -s {job_ip}/32 ! -o {host_if} -j MASQUERADE\n-A POSTROUTING -j {chain}\nCOMMIT\n\
         *filter\n:{chain} - [0:0]\n-A {chain} -i {host_if} -o {HOST_IF_PREFIX}+ -j DROP\n\
         -A {chain} -i {host_if} -j ACCEPT\n-A {chain} -o {host_if} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         -I FORWARD -j {chain}\nCOMMIT\n"
    )
}

/// The run's NAT being installed in the background, collected by `finish`.
pub(super) struct Pending {
    short: String,
    table: super::nftables::RunTable,
    work: Work,
}

enum Work {
    /// A forked child: for a caller that must stay single-threaded until `finish`.
    Child(super::nftables::PendingCreate),
    /// A thread: cheaper than a fork, for a caller that collects it before its next clone or fork.
    Thread(std::thread::JoinHandle<std::io::Result<()>>),
    /// Neither could start: `finish` creates the table.
    InPlace,
}

/// Starts installing the run's NAT (nf_tables through netlink) on a thread, or in a child process when
/// `threads` is false; call it before the container's clone, and `finish` before the clone too when on
/// a thread.
pub(super) fn begin(
    short: &str,
    host_if: &str,
    job_ip: Ipv4Addr,
    ports: &[u16],
    threads: bool,
) -> Pending {
    let table = super::nftables::RunTable {
        name: nft_table(short),
        host_if: host_if.into(),
        prefix: HOST_IF_PREFIX,
        job_ip,
        ports: ports.to_vec(),
        full: true,
    };
    let work = if threads {
        let table = table.clone();
        std::thread::Builder::new()
            .name("dstack-nat".into())
            .spawn(move || super::nftables::create(&table))
            .map(Work::Thread)
            .unwrap_or_else(|e| {
                tracing::debug!("cannot start a thread for the NAT table ({e}): creating it later");
                Work::InPlace
            })
    } else {
        super::nftables::create_in_background(&table)
            .map(Work::Child)
            .unwrap_or_else(|e| {
                tracing::debug!("cannot fork for the NAT table ({e}): creating it later");
                Work::InPlace
            })
    };
    Pending {
        short: short.into(),
        table,
        work,
    }
}

impl Pending {
    /// Waits for the table; without the modules its `full` rules need, installs the basic one (ports
    /// then go through the supervisor's forwarder); falls back to iptables where nf_tables is missing;
    /// says what to install when neither is there.
    pub(super) fn finish(self) -> Result<Installed, NetError> {
        let (short, host_if, job_ip) = (&self.short, &self.table.host_if, self.table.job_ip);
        let created = match self.work {
            Work::Child(child) => child.wait(),
            Work::Thread(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the NAT thread panicked"))),
            Work::InPlace => super::nftables::create(&self.table),
        };
        // An unknown expression (nft_ct, nft_fib, nft_nat not built): ENOENT.
        let created = match created {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                tracing::debug!("nf_tables without DNAT ({e}): ports go through the supervisor");
                super::nftables::create(&self.table.basic()).map(|()| false)
            }
            other => other.map(|()| self.table.forwards_ports()),
        };
        let nft_err = match created {
            Ok(kernel_ports) => {
                return Ok(Installed {
                    tool: NatTool::Nft,
                    kernel_ports,
                });
            }
            Err(e) => e,
        };
        // No nf_tables in this kernel (or not allowed): iptables (legacy) may still be.
        let no_nftables = matches!(
            nft_err.raw_os_error(),
            Some(libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT | libc::EOPNOTSUPP | libc::ENOENT)
        );
        let tool = match run(
            "iptables-restore",
            &["-w", "--noflush"],
            Some(&iptables_rules(short, host_if, job_ip)),
        ) {
            Ok(()) => NatTool::Iptables,
            Err(None) if no_nftables => return Err(NetError::NatToolMissing),
            Err(None) => {
                return Err(NetError::Nat {
                    tool: "nf_tables",
                    message: nft_err.to_string(),
                });
            }
            Err(Some(message)) => {
                return Err(NetError::Nat {
                    tool: "iptables",
                    message: format!("{message} (nf_tables: {nft_err})"),
                });
            }
        };
        Ok(Installed {
            tool,
            kernel_ports: false,
        })
    }
}

/// What `Pending::finish` installed.
pub(super) struct Installed {
    pub tool: NatTool,
    /// The kernel forwards the published ports (DNAT): the host end needs `route_localnet`.
    pub kernel_ports: bool,
}

/// Removes the run's nf_tables table from a detached process that then removes the lease `record`
/// (holding the lease's lock `lock_fd` until then); true when handed over.
pub(super) fn remove_detached(short: &str, record: &std::path::Path, lock_fd: i32) -> bool {
    super::nftables::delete_detached(&nft_table(short), record, lock_fd).is_ok()
}

/// Removes what `install` added with `tool`.
pub(super) fn remove(tool: NatTool, short: &str) -> Result<(), String> {
    let result = match tool {
        NatTool::Nft => super::nftables::delete(&nft_table(short))
            .map(drop)
            .map_err(|e| Some(e.to_string())),
        NatTool::Iptables => {
            let chain = ipt_chain(short);
            let rules = format!(
                "*nat\n-D POSTROUTING -j {chain}\n-F {chain}\n-X {chain}\nCOMMIT\n\
                 *filter\n-D FORWARD -j {chain}\n-F {chain}\n-X {chain}\nCOMMIT\n"
            );
            run("iptables-restore", &["-w", "--noflush"], Some(&rules))
        }
    };
    result.map_err(|e| e.unwrap_or_else(|| format!("{} is gone", tool.name())))
}

/// For the sweep: removes the run's table or chains with whichever tool has them.
pub(super) fn remove_any(short: &str) {
    if super::nftables::delete(&nft_table(short)).unwrap_or(false) {
        return;
    }
    let listed = Command::new("iptables")
        .args(["-w", "-t", "nat", "-S"])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| {
            let chain = format!("-N {}", ipt_chain(short));
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == chain)
        });
    if listed {
        let _ = remove(NatTool::Iptables, short);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(table: &str) -> String {
        let out = Command::new("nft")
            .args(["list", "table", "ip", table])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).replace(table, "T")
    }

    /// Needs root and the nft tool: the netlink batch makes exactly what nft makes of the script, with
    /// and without published ports.
    #[test]
    fn the_netlink_table_is_the_one_nft_would_make() {
        let ip = Ipv4Addr::new(10, 89, 250, 2);
        for ports in [&[][..], &[18080, 18081][..]] {
            let table = super::super::nftables::RunTable {
                name: "dstack_ut_netlink".into(),
                host_if: "dstut0".into(),
                prefix: HOST_IF_PREFIX,
                job_ip: ip,
                ports: ports.to_vec(),
                full: true,
            };
            super::super::nftables::create(&table).unwrap();
            // Created twice: a leftover of the same name is replaced, not duplicated.
            super::super::nftables::create(&table).unwrap();
            let script = nft_script("ut_script", "dstut0", ip, ports);
            run("nft", &["-f"], Some(&script)).unwrap();
            let (a, b) = (listed("dstack_ut_netlink"), listed("dstack_ut_script"));
            assert!(super::super::nftables::delete("dstack_ut_netlink").unwrap());
            assert!(!super::super::nftables::delete("dstack_ut_netlink").unwrap());
            remove(NatTool::Nft, "ut_script").unwrap();
            assert_eq!(a, b);
            assert!(a.contains("masquerade") && a.contains("drop"), "{a}");
            assert_eq!(
                a.contains("dnat to 10.89.250.2:18081"),
                !ports.is_empty(),
                "{a}"
            );
        }
    }

    #[test]
    fn the_rules_name_only_this_run() {
        let ip = Ipv4Addr::new(10, 89, 0, 2);
        let nft = nft_script("abc", "dstabc", ip, &[]);
        assert!(nft.contains("table ip dstack_abc"));
        assert!(nft.contains("ip saddr 10.89.0.2 oifname != \"dstabc\" masquerade"));
        assert!(nft.contains("iifname \"dstabc\" oifname \"dst*\" ct status & dnat == 0 drop"));
        let ipt = iptables_rules("abc", "dstabc", ip);
        assert!(ipt.contains("-A DSTACK-abc -s 10.89.0.2/32 ! -o dstabc -j MASQUERADE"));
    }
}
