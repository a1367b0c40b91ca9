//! `runtime::net` against the real kernel, as root: jobs are processes in network namespaces made with
//! `unshare -n`, serving with busybox (`nc -ll -e cat` is a concurrent echo server that honours
//! half-close). Covers addresses and routes, forwarded ports under load, outbound NAT to a separate
//! "outside" namespace that has no route back, isolation between runs, distinct concurrent leases, pool
//! exhaustion, cleanup at drop and by the sweep after a SIGKILLed holder, loopback-only runs, the
//! user-mode helper path, a client reset under SIGPIPE's default action, and forwarding rootless.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use runtime::net::{NetError, Network, NetworkConfig, NetworkMode, USERMODE_ENV};

/// Tests that set `DSTACK_USERMODE_NET` take it for writing; the others (whose `prepare` reads it) for
/// reading.
static ENV: RwLock<()> = RwLock::new(());

fn read_env() -> std::sync::RwLockReadGuard<'static, ()> {
    ENV.read().unwrap_or_else(|e| e.into_inner())
}

/// A process in a new network namespace, in a process group of its own (dies with the test process).
struct Job {
    child: Child,
}

impl Job {
    fn start(script: &str) -> Job {
        let mut cmd = Command::new("unshare");
        cmd.args([
            "-n",
            "--",
            "sh",
            "-c",
            &format!("ip link set lo up; {script}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
        // SAFETY: only prctl between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                Ok(())
            })
        };
        let job = Job {
            child: cmd.spawn().expect("unshare runs"),
        };
        // Wait until unshare has exec'd into its own namespace.
        let own = std::fs::read_link("/proc/self/ns/net").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_link(format!("/proc/{}/ns/net", job.pid())).is_ok_and(|ns| ns == own) {
            assert!(Instant::now() < deadline, "the job never got its namespace");
            std::thread::sleep(Duration::from_millis(5));
        }
        // The script brings lo up too, but maybe not yet: as init does before the job starts.
        assert!(job.exec("ip link set lo up").status.success());
        job
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Runs `script` inside the job's network namespace.
    fn exec(&self, script: &str) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.pid().to_string(), "-n", "sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        // The whole group: a script's background children too.
        // SAFETY: kill with the process group of our own unreaped child.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn echo_once(addr: (Ipv4Addr, u16), payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(payload)?;
    s.shutdown(Shutdown::Write)?;
    let mut back = Vec::new();
    s.read_to_end(&mut back)?;
    Ok(back)
}

/// Retries until the job's server answers through the forwarder.
fn wait_echo(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if echo_once((Ipv4Addr::LOCALHOST, port), b"ping").is_ok_and(|b| b == b"ping") {
            return;
        }
        assert!(Instant::now() < deadline, "port {port} never echoed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn host_links() -> String {
    stdout(&Command::new("ip").args(["-o", "link"]).output().unwrap())
}

fn nft_tables() -> String {
    stdout(
        &Command::new("nft")
            .args(["list", "tables"])
            .output()
            .unwrap(),
    )
}

/// A robust echo server (busybox nc drops connections under load) on `0.0.0.0:port` inside the job's
/// namespace. Reads to end of stream, then answers.
fn echo_server_in(job: &Job, port: u16) {
    serve_in(job, port, |mut conn| {
        let mut data = Vec::new();
        if conn.read_to_end(&mut data).is_ok() {
            let _ = conn.write_all(&data);
        }
    });
}

/// A server on `0.0.0.0:port` inside the job's namespace (a thread of this test that `setns`es there),
/// `handle` on a thread of its own for each connection. Returns once it listens.
fn serve_in(job: &Job, port: u16, handle: fn(TcpStream)) {
    let ns = std::fs::File::open(format!("/proc/{}/ns/net", job.pid())).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        // SAFETY: moves only this thread into the job's network namespace.
        let entered = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(entered, 0);
        let listener = TcpListener::bind(("0.0.0.0", port)).unwrap();
        tx.send(()).unwrap();
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || handle(conn));
        }
    });
    rx.recv().unwrap();
}

fn echo_job(port: u16) -> Job {
    Job::start(&format!("exec busybox nc -ll -p {port} -e cat"))
}

#[test]
fn a_run_gets_its_address_and_route_and_a_forwarded_port_survives_load() {
    let _env = read_env();
    let mut net = Network::prepare(&NetworkConfig::new("net-test-load").ports(1)).unwrap();
    let port = net.ports()[0];
    let job = Job::start("exec sleep 600");
    echo_server_in(&job, port);
    net.attach(job.pid()).unwrap();
    net.start_forwarding().unwrap();
    let (ip, gw) = net.addresses().unwrap();
    let addr = stdout(&job.exec("ip -4 -o addr show dev eth0"));
    assert!(addr.contains(&format!("inet {ip}/30")), "{addr}");
    let route = stdout(&job.exec("ip route show default"));
    assert!(
        route.contains(&format!("default via {gw} dev eth0")),
        "{route}"
    );
    wait_echo(port);

    // 64 clients at once, 12 connect/write/half-close/read/close cycles each, distinct payloads.
    let failures: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..64u32)
            .map(|t| {
                s.spawn(move || {
                    let mut bad = 0;
                    for i in 0..12u32 {
                        let payload: Vec<u8> = (0..(1000 + 4000 * i as usize))
                            .map(|k| (k as u32 * 31 + t * 7 + i) as u8)
                            .collect();
                        match echo_once((Ipv4Addr::LOCALHOST, port), &payload) {
                            Ok(back) if back == payload => {}
                            _ => bad += 1,
                        }
                    }
                    bad
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(failures, 0, "connections lost or corrupted");

    // A big one, through the splice path.
    let big: Vec<u8> = (0..(16usize << 20)).map(|k| (k % 251) as u8).collect();
    assert!(echo_once((Ipv4Addr::LOCALHOST, port), &big).unwrap() == big);
    // The host's other addresses reach it too.
    assert_eq!(
        echo_once((gw, port), b"via the gateway").unwrap(),
        b"via the gateway"
    );
}

#[test]
fn outbound_traffic_is_masqueraded_and_the_host_is_reachable() {
    let _env = read_env();
    // The "outside": a namespace joined to the host by a veth of its own, with no route back to the pool,
    // so only masqueraded traffic can get an answer.
    let outside = Job::start("exec busybox nc -ll -p 8080 -e echo from-outside");
    let ext = "dxtnettest0";
    let _ = Command::new("ip").args(["link", "del", ext]).status();
    let sh = |c: &str| {
        assert!(
            Command::new("sh")
                .args(["-c", c])
                .status()
                .unwrap()
                .success(),
            "{c}"
        )
    };
    sh(&format!(
        "ip link add {ext} type veth peer name ext0 netns {}",
        outside.pid()
    ));
    sh(&format!(
        "ip addr add 198.51.100.1/24 dev {ext} && ip link set {ext} up"
    ));
    let o = outside.exec("ip addr add 198.51.100.2/24 dev ext0 && ip link set ext0 up");
    assert!(o.status.success());

    let host_server = TcpListener::bind("0.0.0.0:0").unwrap();
    let host_port = host_server.local_addr().unwrap().port();
    let accepted = std::thread::spawn(move || {
        let (mut s, peer) = host_server.accept().unwrap();
        s.write_all(b"from-host\n").unwrap();
        peer
    });

    let mut net = Network::prepare(&NetworkConfig::new("net-test-outbound")).unwrap();
    let job = Job::start("exec sleep 600");
    net.attach(job.pid()).unwrap();
    let (ip, gw) = net.addresses().unwrap();
    let out = job.exec("busybox nc -w 5 198.51.100.2 8080 </dev/null");
    assert_eq!(
        stdout(&out).trim(),
        "from-outside",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = job.exec(&format!("busybox nc -w 5 {gw} {host_port} </dev/null"));
    assert_eq!(stdout(&out).trim(), "from-host");
    assert_eq!(
        accepted.join().unwrap().ip(),
        std::net::IpAddr::V4(ip),
        "the host sees the job's own address"
    );
    assert!(
        net.hosts("job")
            .contains(&format!("{gw}\thost.dstack.internal"))
    );
    assert!(
        net.resolv_conf()
            .lines()
            .any(|l| l.starts_with("nameserver ") && !l.contains(" 127."))
    );
    let _ = Command::new("ip").args(["link", "del", ext]).status();
}

#[test]
fn runs_are_isolated_from_each_other_unless_they_publish_ports() {
    let _env = read_env();
    let mut a = Network::prepare(&NetworkConfig::new("net-test-iso-a")).unwrap();
    let mut b = Network::prepare(&NetworkConfig::new("net-test-iso-b").ports(1)).unwrap();
    let pb = b.ports()[0];
    let job_a = Job::start("exec sleep 600");
    let job_b = echo_job(pb);
    a.attach(job_a.pid()).unwrap();
    b.attach(job_b.pid()).unwrap();
    b.start_forwarding().unwrap();
    wait_echo(pb);
    let (b_ip, _) = b.addresses().unwrap();
    let (_, a_gw) = a.addresses().unwrap();
    let direct = job_a.exec(&format!("echo direct | busybox nc -w 2 {b_ip} {pb}"));
    assert!(
        !stdout(&direct).contains("direct"),
        "A reached B's address directly"
    );
    let published = job_a.exec(&format!("echo published | busybox nc -w 5 {a_gw} {pb}"));
    assert_eq!(
        stdout(&published).trim(),
        "published",
        "A cannot reach B's published port"
    );
}

#[test]
fn concurrent_runs_get_distinct_leases_and_leave_nothing_behind() {
    let _env = read_env();
    let nets: Vec<Network> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..6)
            .map(|i| {
                s.spawn(move || {
                    Network::prepare(&NetworkConfig::new(format!("net-test-many-{i}")).ports(1))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    let mut ips: Vec<Ipv4Addr> = nets.iter().map(|n| n.addresses().unwrap().0).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 6, "addresses are shared");
    let mut ports: Vec<u16> = nets.iter().map(|n| n.ports()[0]).collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 6, "ports are shared");
    let jobs: Vec<Job> = nets.iter().map(|_| Job::start("exec sleep 600")).collect();
    let mut nets = nets;
    for (n, j) in nets.iter_mut().zip(&jobs) {
        n.attach(j.pid()).unwrap();
    }
    let names: Vec<String> = nets
        .iter()
        .map(|n| n.host_interface().unwrap().to_string())
        .collect();
    let links = host_links();
    assert!(
        names.iter().all(|n| links.contains(&format!(": {n}@"))),
        "{links}"
    );
    let tables = nft_tables();
    assert!(
        names
            .iter()
            .all(|n| tables.contains(&format!("dstack_{}", &n[3..]))),
        "{tables}"
    );
    drop(nets);
    // The NAT tables and leases go in the background (unhooking waits for RCU): moments later.
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in &names {
        let short = &n[3..];
        let lease = runtime::net::lease_dir().join(format!("{short}.lease"));
        while nft_tables().contains(&format!("dstack_{short}")) || lease.exists() {
            assert!(
                Instant::now() < deadline,
                "the NAT table or lease of {n} is still there"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !host_links().contains(&format!(": {n}@")),
            "{n} is still there"
        );
    }
}

#[test]
fn a_small_pool_runs_out_with_an_error_that_says_what_to_do() {
    let _env = read_env();
    let mut config = NetworkConfig::new("net-test-pool-0");
    config.pool = Some("10.201.0.0/29".parse().unwrap());
    let first = Network::prepare(&config).unwrap();
    config.id = "net-test-pool-1".into();
    let second = Network::prepare(&config).unwrap();
    config.id = "net-test-pool-2".into();
    let err = Network::prepare(&config)
        .err()
        .expect("a /29 holds two runs");
    assert!(matches!(err, NetError::PoolExhausted { .. }));
    assert!(err.to_string().contains("DSTACK_NETWORK_POOL"), "{err}");
    drop(first);
    config.id = "net-test-pool-3".into();
    // The lease is released once its NAT table is gone, in the background: moments later.
    let deadline = Instant::now() + Duration::from_secs(10);
    let third = loop {
        match Network::prepare(&config) {
            Ok(n) => break n,
            Err(NetError::PoolExhausted { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("a released lease is not reused: {e}"),
        }
    };
    drop(third);
    drop(second);
}

/// When `NET_TEST_HOLDER` is set this test is the holder: it sets a network up and waits to be killed.
#[test]
fn a_sigkilled_supervisor_leaves_nothing_after_the_sweep() {
    let _env = read_env();
    if std::env::var_os("NET_TEST_HOLDER").is_some() {
        let mut net = Network::prepare(&NetworkConfig::new("net-test-killed").ports(1)).unwrap();
        let job = echo_job(net.ports()[0]);
        net.attach(job.pid()).unwrap();
        net.start_forwarding().unwrap();
        println!("READY {} {}", net.host_interface().unwrap(), net.ports()[0]);
        std::io::stdout().flush().unwrap();
        std::thread::sleep(Duration::from_secs(600));
        return;
    }
    let mut holder = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_sigkilled_supervisor_leaves_nothing_after_the_sweep",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("NET_TEST_HOLDER", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(holder.stdout.take().unwrap());
    let mut line = String::new();
    // libtest prints "test NAME ... " before the holder's own output, on the same line.
    while !line.contains("READY ") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0,
            "the holder died"
        );
    }
    let words: Vec<&str> = line[line.find("READY ").unwrap()..]
        .split_whitespace()
        .collect();
    let (name, port) = (words[1].to_string(), words[2].parse::<u16>().unwrap());
    wait_echo(port);
    holder.kill().unwrap();
    holder.wait().unwrap();
    let short = &name[3..];
    assert!(
        nft_tables().contains(&format!("dstack_{short}")),
        "the NAT table should outlive a SIGKILL"
    );
    assert!(
        runtime::net::lease_dir()
            .join(format!("{short}.lease"))
            .exists()
    );
    // (A concurrent test's allocation may sweep it first: it scans the leases the same way.)
    runtime::net::sweep_leftovers();
    assert!(!nft_tables().contains(&format!("dstack_{short}")));
    assert!(
        !runtime::net::lease_dir()
            .join(format!("{short}.lease"))
            .exists()
    );
    // The job died with its holder, and its namespace took the veth pair along (asynchronously).
    let deadline = Instant::now() + Duration::from_secs(10);
    while host_links().contains(&format!(": {name}@")) {
        assert!(Instant::now() < deadline, "{name} outlived its namespace");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the port is still open"
    );
}

#[test]
fn a_loopback_only_run_still_gets_its_ports() {
    let _env = read_env();
    let mut net = Network::prepare(
        &NetworkConfig::new("net-test-lo")
            .mode(NetworkMode::None)
            .ports(2),
    )
    .unwrap();
    let ports = net.ports().to_vec();
    let job = Job::start(&format!(
        "busybox nc -ll -p {} -e cat & exec busybox nc -ll -p {} -e cat",
        ports[0], ports[1]
    ));
    net.attach(job.pid()).unwrap();
    net.start_forwarding().unwrap();
    wait_echo(ports[0]);
    wait_echo(ports[1]);
    assert!(net.addresses().is_none());
    let links = stdout(&job.exec("ip -o link"));
    assert_eq!(links.lines().count(), 1, "{links}");
    drop(net);
    assert!(
        TcpStream::connect(("127.0.0.1", ports[0])).is_err(),
        "the port outlived the network"
    );
}

#[test]
fn host_mode_and_the_rootless_fallback_share_the_host_network() {
    let _env = ENV.write().unwrap_or_else(|e| e.into_inner());
    let net = Network::prepare(
        &NetworkConfig::new("net-test-host")
            .mode(NetworkMode::Host)
            .ports(2),
    )
    .unwrap();
    assert!(!net.needs_netns());
    assert_eq!(net.ports().len(), 2);
    assert!(
        TcpListener::bind(("0.0.0.0", net.ports()[0])).is_ok(),
        "the job must be able to bind its port"
    );
    // SAFETY: no other thread reads the environment while the write guard is held.
    unsafe { std::env::set_var(USERMODE_ENV, "none") };
    let fallback = Network::prepare(&NetworkConfig::new("net-test-fallback").ports(1));
    // SAFETY: as above.
    unsafe { std::env::remove_var(USERMODE_ENV) };
    let fallback = fallback.unwrap();
    assert!(!fallback.needs_netns());
    assert!(
        fallback
            .hosts("job")
            .contains("127.0.0.1\thost.dstack.internal")
    );
}

#[test]
fn slirp4netns_gives_outbound_access_and_ports_still_forward() {
    user_mode_network_gives_outbound_access_and_ports_still_forward("slirp4netns");
}

/// Root here, where `/dev/net/tun` is usable (it is root-only on this machine): the rootless path with
/// pasta, as on a machine that lets users open the tun device.
#[test]
fn pasta_gives_outbound_access_and_ports_still_forward() {
    user_mode_network_gives_outbound_access_and_ports_still_forward("pasta");
}

fn user_mode_network_gives_outbound_access_and_ports_still_forward(tool: &str) {
    let _env = ENV.write().unwrap_or_else(|e| e.into_inner());
    // SAFETY: no other thread reads the environment while the write guard is held.
    unsafe { std::env::set_var(USERMODE_ENV, tool) };
    let net = Network::prepare(&NetworkConfig::new(format!("net-test-{tool}")).ports(1));
    // SAFETY: as above.
    unsafe { std::env::remove_var(USERMODE_ENV) };
    let mut net = net.unwrap();
    let port = net.ports()[0];
    let job = echo_job(port);
    net.attach(job.pid()).unwrap();
    net.start_forwarding().unwrap();
    assert_eq!(net.user_mode_tool(), Some(tool));
    wait_echo(port);
    // The "outside": a namespace behind a veth of the host's, its server reached through the helper's
    // own sockets on the host (not the host's default address: pasta gives the job a copy of it).
    let outside = Job::start("exec busybox nc -ll -p 8080 -e echo from-outside");
    let ext = "dxtnettest1";
    let _ = Command::new("ip").args(["link", "del", ext]).status();
    let made = Command::new("sh")
        .args([
            "-c",
            &format!(
                "ip link add {ext} type veth peer name ext0 netns {} && \
                 ip addr add 203.0.113.1/24 dev {ext} && ip link set {ext} up",
                outside.pid()
            ),
        ])
        .status()
        .unwrap();
    assert!(made.success());
    let o = outside.exec("ip addr add 203.0.113.2/24 dev ext0 && ip link set ext0 up");
    assert!(o.status.success());
    // pasta passes the server's data on but not always its close (and may even connect again while the
    // job's end stays open): what counts is the first answer, read within 3 s.
    let out = job.exec("busybox timeout 3 busybox nc 203.0.113.2 8080 </dev/null");
    let _ = Command::new("ip").args(["link", "del", ext]).status();
    let answer = stdout(&out);
    assert_eq!(
        answer.lines().next(),
        Some("from-outside"),
        "{answer:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Traffic both ways on a connection the client resets: the forwarder's error path shuts the other
/// direction's socket mid-splice, whose EPIPE raises SIGPIPE. dstack keeps SIGPIPE's default action
/// (death), so the test does too: the process must survive and the port keep working.
#[test]
fn a_client_reset_mid_stream_does_not_kill_the_supervisor() {
    let _env = read_env();
    let mut net = Network::prepare(
        &NetworkConfig::new("net-test-sigpipe")
            .mode(NetworkMode::None)
            .ports(1),
    )
    .unwrap();
    let port = net.ports()[0];
    let job = Job::start("exec sleep 600");
    // Reads everything and sends without end.
    serve_in(&job, port, |mut conn| {
        let mut reader = conn.try_clone().unwrap();
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let chunk = vec![7u8; 1 << 16];
        while conn.write_all(&chunk).is_ok() {}
    });
    net.attach(job.pid()).unwrap();
    // SAFETY: restoring the default action, as dstack's main does; undone at the end.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    net.start_forwarding().unwrap();
    for _ in 0..30 {
        let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut writer = conn.try_clone().unwrap();
        let w = std::thread::spawn(move || {
            let chunk = vec![1u8; 1 << 16];
            while writer.write_all(&chunk).is_ok() {}
        });
        let mut buf = vec![0u8; 1 << 20];
        conn.read_exact(&mut buf).unwrap();
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        use std::os::fd::AsRawFd;
        // SAFETY: setsockopt reads a valid linger struct; the socket is open.
        unsafe {
            libc::setsockopt(
                conn.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as u32,
            )
        };
        let _ = conn.shutdown(Shutdown::Both);
        drop(conn);
        w.join().unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut buf = vec![0u8; 4096];
    conn.read_exact(&mut buf).unwrap();
    // SAFETY: back to what the test harness had.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Rootless, where `/dev/net/tun` is root-only (as on the test machines): the default network falls back
/// to the host's, and a loopback-only job's ports are still forwarded by the supervisor, which enters the
/// job's namespace through the user namespace it owns. The helper (this test, `NET_TEST_ROOTLESS` set)
/// runs as the unprivileged test user inside `unshare -U -r`, as rootless dstack runs.
#[test]
fn rootless_ports_are_forwarded_without_tun() {
    if std::env::var_os("NET_TEST_ROOTLESS").is_some() {
        assert!(
            runtime::paths::in_child_user_namespace() && !runtime::paths::running_as_host_root()
        );
        let private =
            Network::prepare(&NetworkConfig::new("net-test-rootless-private").ports(1)).unwrap();
        let tun = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .is_ok();
        println!("FALLBACK tun={tun} netns={}", private.needs_netns());
        let mut net = Network::prepare(
            &NetworkConfig::new("net-test-rootless")
                .mode(NetworkMode::None)
                .ports(1),
        )
        .unwrap();
        let job = echo_job(net.ports()[0]);
        net.attach(job.pid()).unwrap();
        net.start_forwarding().unwrap();
        println!("READY {}", net.ports()[0]);
        std::io::stdout().flush().unwrap();
        std::thread::sleep(Duration::from_secs(600));
        return;
    }
    let _env = read_env();
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=dstack-test",
        "--regid=dstack-test",
        "--clear-groups",
        "--",
        "unshare",
        "-U",
        "-r",
        "--",
    ])
    .arg(&exe)
    .args([
        "--exact",
        "rootless_ports_are_forwarded_without_tun",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("NET_TEST_ROOTLESS", "1")
    .env("HOME", "/tmp")
    .stdout(Stdio::piped())
    .process_group(0);
    let mut helper = cmd.spawn().expect("setpriv runs (util-linux)");
    let mut out = std::io::BufReader::new(helper.stdout.take().unwrap());
    let (mut line, mut all) = (String::new(), String::new());
    while !line.contains("READY ") {
        line.clear();
        let n = std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        all.push_str(&line);
        assert!(
            n > 0,
            "the rootless helper died (is the test user there? scripts/setup):\n{all}"
        );
    }
    let port: u16 = line[line.find("READY ").unwrap() + 6..]
        .trim()
        .parse()
        .unwrap();
    let result = std::panic::catch_unwind(|| wait_echo(port));
    // SAFETY: killing the helper's process group (setpriv, unshare and the test binary exec in turn).
    unsafe { libc::kill(-(helper.id() as i32), libc::SIGKILL) };
    let _ = helper.wait();
    result.unwrap();
    if all.contains("FALLBACK tun=false") {
        assert!(
            all.contains("netns=false"),
            "no tun, yet a private network was promised:\n{all}"
        );
    }
}
