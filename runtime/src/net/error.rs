//! The network module's errors: one line each, saying what to do.

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(
        "host port {port} is already in use: choose another port, or free it (`ss -ltnp 'sport = :{port}'` shows who holds it)"
    )]
    PortInUse { port: u16 },
    #[error(
        "the kernel refuses host port {port} to this user (ports below net.ipv4.ip_unprivileged_port_start need root): choose a port of 1024 or above"
    )]
    PortPrivileged { port: u16 },
    // The system's words sit before the advice, so they are no `source()`.
    #[error(
        "cannot listen on host port {port}: {reason}: choose another port or check `ulimit -n`"
    )]
    Port { port: u16, reason: std::io::Error },
    #[error(
        "the address pool {pool} is exhausted ({count} runs hold an address): stop some runs, or set DSTACK_NETWORK_POOL to a larger free range such as 10.89.0.0/16"
    )]
    PoolExhausted { pool: String, count: usize },
    #[error(
        "the address pool {pool} overlaps the host route {route}: set DSTACK_NETWORK_POOL to a free range"
    )]
    PoolOverlaps { pool: String, route: String },
    #[error(
        "no free /16 for container addresses among 10.89.0.0/16..10.127.0.0/16: set DSTACK_NETWORK_POOL to a free range"
    )]
    NoFreePool,
    #[error(
        "bad address pool {0:?}: write it as ADDRESS/PREFIX with a prefix from 8 to 29, e.g. 10.89.0.0/16"
    )]
    BadPool(String),
    #[error(
        "outbound NAT needs nf_tables or iptables and this host has neither: install nftables or iptables (and load the nf_tables module: modprobe nf_tables), or use --network host"
    )]
    NatToolMissing,
    #[error("setting up outbound NAT with {tool} failed: {message}")]
    Nat { tool: &'static str, message: String },
    #[error("{op}")]
    Netlink { op: String, source: std::io::Error },
    #[error("cannot enter the job's network namespace (/proc/{pid}/ns/net)")]
    Netns { pid: i32, source: std::io::Error },
    #[error("{tool} could not give the job a network: {message}")]
    UserMode { tool: &'static str, message: String },
    #[error("cannot lock the address allocations in {path}")]
    Lock {
        path: String,
        source: std::io::Error,
    },
    #[error("another run already uses the interface name {0}: use a different container id")]
    NameTaken(String),
    #[error(
        "the network must be attached to the job (Network::attach) before its ports are forwarded"
    )]
    NotAttached,
    #[error("starting the port forwarder: {0}")]
    Forwarder(std::io::Error),
}

impl NetError {
    pub(super) fn netlink(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetError {
        let op = op.into();
        move |source| NetError::Netlink { op, source }
    }
}
