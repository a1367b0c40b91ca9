//! Networking for a run: its own network namespace joined to the host, outbound access, DNS, and
//! `ports: N` forwarded from the host. The container start path makes a few calls:
//!
//! ```no_run
//! # use runtime::net::*;
//! # fn f(init_pid: i32) -> Result<(), NetError> {
//! let mut net = Network::prepare(&NetworkConfig::new("run-1").ports(2))?; // before planning: ports, env
//! let env = net.env();                       // PORT_i / JOB_PORT_i for the job
//! let (resolv, hosts) = (net.resolv_conf(), net.hosts("job")); // files bound into the container
//! net.ready()?;                             // before the clone: collects a namespace made `ahead`
//! let clone_with_newnet = net.needs_netns() && net.joined_netns().is_none();
//! net.attach(init_pid)?;                    // after the clone, before init goes on
//! net.start_forwarding()?;                  // once the job has started (threads from here on)
//! drop(net);                                // after init is reaped: removes veth, NAT, lease
//! # Ok(()) }
//! ```
//!
//! As host root a run gets a veth pair (`dst<12 hex>` on the host, `eth0` inside) with a /30 of the
//! pool, a default route via the host end, and masquerading for outbound (`nat`). Rootless, pasta or
//! slirp4netns give outbound access when usable; otherwise the job shares the host's network (said
//! once). Published ports: as root with nf_tables the kernel DNATs IPv4 connections to the job (the
//! run's table, `nftables`); the supervisor forwards the rest (`forward`: IPv6, and everything rootless
//! or with iptables). One concern per file: `netlink`, `netns`, `pool`, `lease`, `nat`, `nftables` (its
//! netlink messages: `nfbatch`), `dns`, `ports`, `forward`, `usermode`.

mod dns;
mod error;
mod forward;
mod lease;
mod nat;
mod netlink;
mod netns;
mod nfbatch;
mod nftables;
mod nlmsg;
mod pool;
mod ports;
pub(crate) mod spare;
mod usermode;

use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};

pub use error::NetError;
pub use lease::lease_dir;
pub use pool::{POOL_ENV, Pool};
pub use usermode::USERMODE_ENV;

/// Whether the kernel answers nf_tables requests (root's runs need it for their table), for `dstack info`:
/// it asks to delete a table no one makes, which nf_tables refuses with ENOENT and changes nothing.
pub fn nf_tables_available() -> Result<(), std::io::Error> {
    nftables::delete("dstack-info-probe").map(drop)
}

/// Host-side veth names start with this; nothing else of ours does.
pub const HOST_IF_PREFIX: &str = "dst";
/// The job's end of the veth.
const JOB_IF: &str = "eth0";
/// The veth's MTU, as pasta's: traffic between the host and the job (published ports) moves in 64 KiB
/// segments, as over loopback (a 1500-byte veth halves the throughput). What leaves the host is cut to
/// its own interfaces' MTU by the usual path MTU discovery and segmentation.
const MTU: u32 = 65520;

/// How a run is networked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// Its own namespace with outbound access (veth and NAT as root; pasta/slirp4netns rootless, or the
    /// host network when neither is usable).
    #[default]
    Private,
    /// The host's network namespace (`network: host`, `--network host`): for MPI/NCCL.
    Host,
    /// Its own namespace with loopback only; published ports still reach it.
    None,
}

#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// The container id; names the host interface and NAT table (hashed to 12 hex digits).
    pub id: String,
    pub mode: NetworkMode,
    /// Host ports to publish: 0 picks a free one; the job listens on the same number inside.
    pub ports: Vec<u16>,
    /// The address pool; `DSTACK_NETWORK_POOL`, else the first free of 10.89.0.0/16, 10.90.0.0/16, ...
    pub pool: Option<Pool>,
    /// As root with a private network: makes the namespace (loopback up, veth, address and route) on a
    /// helper thread from `prepare` on, while the caller gets on with the rest of the start;
    /// [`Network::ready`] collects it and init joins it. As root with a loopback-only network: a spare
    /// namespace when there is one (`net::spare`), for init to join. Otherwise init gets a new namespace
    /// at its clone and `attach` connects it.
    pub ahead: bool,
}

impl NetworkConfig {
    pub fn new(id: impl Into<String>) -> NetworkConfig {
        NetworkConfig {
            id: id.into(),
            mode: NetworkMode::Private,
            ports: Vec::new(),
            pool: None,
            ahead: false,
        }
    }

    /// See [`NetworkConfig::ahead`].
    pub fn ahead(mut self) -> Self {
        self.ahead = true;
        self
    }

    pub fn mode(mut self, mode: NetworkMode) -> Self {
        self.mode = mode;
        self
    }

    /// Publishes `n` ports chosen by the kernel.
    pub fn ports(mut self, n: usize) -> Self {
        self.ports = vec![0; n];
        self
    }
}

/// What `prepare` decided.
#[allow(clippy::large_enum_variant)] // One per run: boxing would buy nothing.
enum Kind {
    /// No namespace of its own.
    Host,
    Loopback,
    Veth {
        lease: lease::Lease,
        nl: netlink::Netlink,
        /// Being installed (from `prepare`), then installed (from `attach`).
        pending: Option<nat::Pending>,
        nat: Option<nat::NatTool>,
    },
    UserMode {
        tools: Vec<usermode::Tool>,
        net: Option<usermode::UserNet>,
    },
}

/// One run's network; dropping it removes everything it created.
pub struct Network {
    kind: Kind,
    ports: Vec<u16>,
    listeners: Vec<(u16, OwnedFd)>,
    netns: Option<OwnedFd>,
    /// The pid `attach` was given and the identity (device, inode) of its network namespace.
    attached: Option<(i32, (u64, u64))>,
    forwarder: Option<forward::Forwarder>,
    /// The namespace being made ahead (`NetworkConfig::ahead`), until `ready` collects it.
    making: Option<std::thread::JoinHandle<Result<OwnedFd, NetError>>>,
    /// Made ahead: init joins `netns` instead of getting a namespace of its own.
    ahead: bool,
}

static FALLBACK_SAID: AtomicBool = AtomicBool::new(false);

fn short_id(id: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(id.as_bytes()))[..12].to_string()
}

fn enable_forwarding() -> Result<(), NetError> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(PATH).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    tracing::info!(
        "enabling IPv4 forwarding (net.ipv4.ip_forward=1) for the jobs' outbound traffic"
    );
    std::fs::write(PATH, "1").map_err(NetError::netlink("enabling net.ipv4.ip_forward"))
}

impl Network {
    /// Before the clone: decides the mode, takes an address (host root), and opens the published ports.
    /// Starts no thread.
    pub fn prepare(config: &NetworkConfig) -> Result<Network, NetError> {
        let root = crate::paths::running_as_host_root();
        // Decided first, with no side effect; ports next; the lease and the NAT child last, so that a
        // refused port leaves nothing behind.
        let veth =
            config.mode == NetworkMode::Private && root && std::env::var_os(USERMODE_ENV).is_none();
        let kind = match config.mode {
            NetworkMode::Host => Kind::Host,
            NetworkMode::None => Kind::Loopback,
            NetworkMode::Private if veth => Kind::Loopback, // Replaced by the veth below.
            NetworkMode::Private => match usermode::candidates() {
                Ok(tools) => Kind::UserMode { tools, net: None },
                Err(why) => {
                    if !FALLBACK_SAID.swap(true, Ordering::SeqCst) {
                        tracing::warn!(
                            "no user-mode network ({why}): the job shares the host's network (install passt or slirp4netns with a usable /dev/net/tun for a private one; see `dstack info`)"
                        );
                    }
                    Kind::Host
                }
            },
        };
        let (ports, listeners) = match kind {
            Kind::Host => (ports::pick_free(&config.ports)?, Vec::new()),
            _ => {
                let l = ports::listen(&config.ports)?;
                (l.iter().map(|(p, _)| *p).collect(), l)
            }
        };
        let kind = if veth {
            let mut nl =
                netlink::Netlink::open().map_err(NetError::netlink("opening a netlink socket"))?;
            let short = short_id(&config.id);
            let host_if = format!("{HOST_IF_PREFIX}{short}");
            let lease = lease::allocate(&lease_dir(), &mut nl, config.pool, &short, &host_if)?;
            // Made ahead, the network is collected before the clone: its NAT can come from a thread.
            let pending = Some(nat::begin(
                &short,
                &host_if,
                lease.job_ip(),
                &ports,
                config.ahead,
            ));
            Kind::Veth {
                lease,
                nl,
                pending,
                nat: None,
            }
        } else {
            kind
        };
        let mut net = Network {
            kind,
            ports,
            listeners,
            netns: None,
            attached: None,
            forwarder: None,
            making: None,
            ahead: false,
        };
        if config.ahead {
            net.make_ahead()?;
        }
        Ok(net)
    }

    /// Starts making the veth-connected namespace on a helper thread, or takes a spare loopback-only one
    /// (the other kinds: at the clone, or with init's pid).
    fn make_ahead(&mut self) -> Result<(), NetError> {
        let (host_if, host_ip, job_ip) = match &self.kind {
            Kind::Veth { lease, .. } => (
                lease.record.host_if.clone(),
                lease.host_ip(),
                lease.job_ip(),
            ),
            Kind::Loopback => {
                // Loopback alone is made faster by the clone (measured: a thread's unshare takes longer)
                // than on a thread, and faster still taken from the spares (its lo up): init joins it.
                if let Some(ns) = spare::take() {
                    self.netns = Some(ns);
                    self.ahead = true;
                }
                return Ok(());
            }
            _ => return Ok(()),
        };
        // /proc/sys/net is the namespace's of whoever opens it: the host's, from here.
        enable_forwarding()?;
        let thread = std::thread::Builder::new().name("dstack-netns".into());
        let making = thread
            .spawn(move || {
                // A socket in the host namespace, for the veth's host end, before leaving it.
                let mut host = netlink::Netlink::open()
                    .map_err(NetError::netlink("opening a netlink socket"))?;
                let ns = match spare::take() {
                    Some(ns) => netns::enter(std::os::fd::AsFd::as_fd(&ns)).map(|()| ns),
                    None => netns::new_for_this_thread(),
                }
                .map_err(NetError::netlink("making the job's network namespace"))?;
                let mut inside = netlink::Netlink::open().map_err(NetError::netlink(
                    "opening a netlink socket in the job's namespace",
                ))?;
                inside
                    .link_index("lo")
                    .and_then(|lo| inside.set_up(lo))
                    .map_err(NetError::netlink("bringing up the job's loopback"))?;
                connect_veth(&mut host, &ns, &host_if, host_ip)?;
                configure_job_end(&mut inside, job_ip, host_ip).map_err(NetError::netlink(
                    format!("configuring the job's eth0 ({host_if})"),
                ))?;
                Ok(ns)
            })
            .map_err(NetError::netlink("starting the network thread"))?;
        self.making = Some(making);
        self.ahead = true;
        Ok(())
    }

    /// Before the clone: collects the namespace made ahead (and the NAT table being installed), so that
    /// no thread runs when init is cloned. Nothing to do without [`NetworkConfig::ahead`].
    pub fn ready(&mut self) -> Result<(), NetError> {
        if let Some(making) = self.making.take() {
            let ns = making.join().unwrap_or_else(|_| {
                Err(NetError::netlink("making the job's network namespace")(
                    std::io::Error::other("the network thread panicked"),
                ))
            })?;
            self.netns = Some(ns);
        }
        if let (
            true,
            Kind::Veth {
                pending,
                nat,
                lease,
                ..
            },
        ) = (self.ahead, &mut self.kind)
            && let Some(p) = pending.take()
        {
            *nat = Some(finish_nat(p, &lease.record.host_if)?);
        }
        Ok(())
    }

    /// The namespace made ahead, for init to join (after [`Network::ready`]).
    pub fn joined_netns(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.netns
            .as_ref()
            .filter(|_| self.ahead)
            .map(|ns| ns.as_fd())
    }

    /// Whether init must wait, after its clone, for [`Network::attach`] to connect its namespace.
    pub fn needs_attach(&self) -> bool {
        !self.ahead && self.needs_netns()
    }

    /// Whether the job gets a network namespace of its own (clone with `CLONE_NEWNET`, bring `lo` up).
    pub fn needs_netns(&self) -> bool {
        !matches!(self.kind, Kind::Host)
    }

    /// The published host ports, in order; the job listens on the same numbers.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// `PORT_i` and `JOB_PORT_i` for the job's environment.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        for (i, p) in self.ports.iter().enumerate() {
            env.push((format!("PORT_{i}"), p.to_string()));
            env.push((format!("JOB_PORT_{i}"), p.to_string()));
        }
        env
    }

    /// The job's address and its gateway (the host end), where it has a veth.
    pub fn addresses(&self) -> Option<(Ipv4Addr, Ipv4Addr)> {
        match &self.kind {
            Kind::Veth { lease, .. } => Some((lease.job_ip(), lease.host_ip())),
            _ => None,
        }
    }

    /// The host interface (`dst<12 hex>`), where there is one.
    pub fn host_interface(&self) -> Option<&str> {
        match &self.kind {
            Kind::Veth { lease, .. } => Some(&lease.record.host_if),
            _ => None,
        }
    }

    /// Which user-mode network carries the job's outbound traffic, if any.
    pub fn user_mode_tool(&self) -> Option<&'static str> {
        match &self.kind {
            Kind::UserMode { net: Some(n), .. } => Some(n.tool.name()),
            _ => None,
        }
    }

    /// The content for the job's `/etc/resolv.conf`.
    pub fn resolv_conf(&self) -> String {
        match self.kind {
            Kind::Host => dns::resolv_conf_host(),
            _ => dns::resolv_conf_private(),
        }
    }

    /// The content for the job's `/etc/hosts`; `host.dstack.internal` names the host where it is reachable.
    pub fn hosts(&self, hostname: &str) -> String {
        match &self.kind {
            Kind::Host => dns::hosts(hostname, None, Some(Ipv4Addr::LOCALHOST)),
            Kind::Veth { lease, .. } => {
                dns::hosts(hostname, Some(lease.job_ip()), Some(lease.host_ip()))
            }
            _ => dns::hosts(hostname, None, None),
        }
    }

    /// Init is exiting by itself: the kernel deletes the veth pair with its namespace, so dropping this
    /// leaves the pair alone (deleting it here would wait for RCU on the run's clock).
    pub fn init_exiting(&mut self) {
        self.attached = None;
    }

    /// After the clone, while init waits: connects the namespace of `pid` (veth, address, route, NAT; or
    /// the user-mode helper). Nothing to do for the host network.
    pub fn attach(&mut self, pid: i32) -> Result<(), NetError> {
        if !self.needs_netns() {
            return Ok(());
        }
        if self.ahead {
            // Init joins the namespace made ahead (it may not have yet): remember which one.
            self.attached = self
                .netns
                .as_ref()
                .and_then(netns::identity_of)
                .map(|id| (pid, id));
            return Ok(());
        }
        let started = std::time::Instant::now();
        let ns = netns::open(pid).map_err(|source| NetError::Netns { pid, source })?;
        self.attached = netns::identity(pid).map(|id| (pid, id));
        match &mut self.kind {
            Kind::Host | Kind::Loopback => {}
            Kind::Veth {
                lease,
                nl,
                pending,
                nat,
            } => {
                let host_if = lease.record.host_if.clone();
                let (host_ip, job_ip) = (lease.host_ip(), lease.job_ip());
                use std::os::fd::AsFd;
                connect_veth(nl, &ns, &host_if, host_ip)?;
                netns::run_in(ns.as_fd(), || {
                    configure_job_end(&mut netlink::Netlink::open()?, job_ip, host_ip)
                })
                .map_err(NetError::netlink(format!(
                    "configuring the job's eth0 ({host_if})"
                )))?;
                enable_forwarding()?;
                if let Some(p) = pending.take() {
                    *nat = Some(finish_nat(p, &host_if)?);
                }
            }
            Kind::UserMode { tools, net } => {
                let mut last = None;
                for tool in tools.iter() {
                    match usermode::start(*tool, pid, &ns) {
                        Ok(n) => {
                            *net = Some(n);
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                if net.is_none() {
                    return Err(last.expect("at least one tool was tried"));
                }
            }
        }
        self.netns = Some(ns);
        tracing::debug!("network attached in {:?}", started.elapsed());
        Ok(())
    }

    /// Once the job has started: forwards each published port from the host into the job's namespace.
    pub fn start_forwarding(&mut self) -> Result<(), NetError> {
        if self.listeners.is_empty() {
            return Ok(());
        }
        let ns = self.netns.as_ref().ok_or(NetError::NotAttached)?;
        let listeners = std::mem::take(&mut self.listeners);
        self.forwarder =
            Some(forward::Forwarder::start(listeners, ns).map_err(NetError::Forwarder)?);
        Ok(())
    }
}

/// Collects the run's NAT. Where the kernel forwards the published ports (the run's nf_tables table),
/// connections to the host's `127.0.0.1` are DNAT'ed through the veth, which the host end must allow
/// (`route_localnet`; the table's input rule keeps the job from using it the other way). From the
/// host's namespace.
fn finish_nat(pending: nat::Pending, host_if: &str) -> Result<nat::NatTool, NetError> {
    let installed = pending.finish()?;
    if !installed.kernel_ports {
        return Ok(installed.tool);
    }
    let path = format!("/proc/sys/net/ipv4/conf/{host_if}/route_localnet");
    std::fs::write(&path, "1").map_err(NetError::netlink(format!(
        "letting {host_if} carry connections to 127.0.0.1 ({path})"
    )))?;
    Ok(installed.tool)
}

/// Creates the veth pair, its job end moved into `ns`, and addresses the host end.
fn connect_veth(
    nl: &mut netlink::Netlink,
    ns: &OwnedFd,
    host_if: &str,
    host_ip: Ipv4Addr,
) -> Result<(), NetError> {
    use std::os::fd::AsRawFd;
    let op = |what: &str| NetError::netlink(format!("{what} ({host_if})"));
    let mut created = nl.create_veth(host_if, JOB_IF, ns.as_raw_fd(), MTU);
    if created
        .as_ref()
        .is_err_and(|e| e.raw_os_error() == Some(libc::EEXIST))
    {
        // The lease is ours, so a link of that name is a leftover: the namespace of an earlier run of
        // the same id that the kernel has not finished removing.
        let _ = nl.delete_link(host_if);
        created = nl.create_veth(host_if, JOB_IF, ns.as_raw_fd(), MTU);
    }
    created.map_err(op("creating the veth pair"))?;
    let index = nl.link_index(host_if).map_err(op("finding the host end"))?;
    nl.add_address(index, host_ip, 30)
        .map_err(op("addressing the host end"))
}

/// Inside the job's namespace (`inner` is a socket there): eth0 addressed, up, and the default route.
fn configure_job_end(
    inner: &mut netlink::Netlink,
    job_ip: Ipv4Addr,
    host_ip: Ipv4Addr,
) -> std::io::Result<()> {
    let index = inner.link_index(JOB_IF)?;
    inner.add_address(index, job_ip, 30)?;
    inner.set_up(index)?;
    inner.add_default_route(host_ip, index)
}

impl Drop for Network {
    fn drop(&mut self) {
        let started = std::time::Instant::now();
        // A namespace still being made: let the thread finish, and its namespace go with its descriptor.
        if let Some(making) = self.making.take() {
            let _ = making.join();
        }
        self.forwarder.take();
        self.netns.take();
        if let Kind::UserMode { net, .. } = &mut self.kind {
            net.take();
        }
        if let Kind::Veth {
            lease,
            nl,
            pending,
            nat,
        } = &mut self.kind
        {
            if let Some(p) = pending.take() {
                *nat = p.finish().ok().map(|i| i.tool);
            }
            match nat.take() {
                // The table goes in the background (unhooking its chains waits for RCU), by a process
                // that holds the lease until it is done.
                Some(nat::NatTool::Nft)
                    if nat::remove_detached(&lease.record.short, lease.path(), lease.lock_fd()) =>
                {
                    lease.disown();
                }
                Some(tool) => {
                    if let Err(e) = nat::remove(tool, &lease.record.short) {
                        tracing::warn!(
                            "cannot remove the NAT rules of {}: {e}",
                            lease.record.host_if
                        );
                    }
                }
                None => {}
            }
            // Once the job's init is gone its namespace goes too, and the kernel deletes the veth pair
            // with it, off our clock (deleting it here waits ~20 ms for RCU). While init still lives in
            // it (an error path), delete it now.
            let alive = self
                .attached
                .is_some_and(|(pid, id)| netns::identity(pid) == Some(id));
            if let Some(Err(e)) = alive.then(|| nl.delete_link(&lease.record.host_if)) {
                tracing::warn!("cannot delete interface {}: {e}", lease.record.host_if);
            }
        }
        tracing::debug!("network removed in {:?}", started.elapsed());
        // The lease record goes with `kind`.
    }
}

/// Removes the veths, NAT rules and address leases of runs whose supervisor was killed; returns how
/// many runs' leftovers went. Cheap when there are none; rootless runs leave nothing to sweep.
pub fn sweep_leftovers() -> usize {
    if !crate::paths::running_as_host_root() {
        return 0;
    }
    spare::sweep();
    lease::sweep(&lease_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_fit_an_interface_name() {
        let name = format!("{HOST_IF_PREFIX}{}", short_id("brave-otter-12"));
        assert_eq!(name.len(), 15);
        assert_ne!(short_id("a"), short_id("b"));
    }

    #[test]
    fn ports_reach_the_environment_twice() {
        let net = Network::prepare(
            &NetworkConfig::new("env-test")
                .mode(NetworkMode::None)
                .ports(2),
        )
        .unwrap();
        let env = net.env();
        assert_eq!(env.len(), 4);
        assert_eq!(env[0].0, "PORT_0");
        assert_eq!(
            env[1],
            ("JOB_PORT_0".to_string(), net.ports()[0].to_string())
        );
        assert!(net.needs_netns());
    }
}
