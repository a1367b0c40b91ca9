//! Networking end to end, through the binary, as root and rootless: a job serving on `$PORT_0` answers
//! `curl` on the host; `ports: 3` gives three working ports; two runs at once get their own; a job reaches
//! a server the test starts on the host (root: through its veth; rootless on this machine: the host
//! network, since `/dev/net/tun` is root-only); jobs are isolated from each other unless they publish
//! ports (root); the job cannot reach the host's loopback through the veth that carries its published
//! ports (root); and nothing of ours stays in `ip link` or the NAT table after the runs (a thousand of
//! them too), nor after a SIGKILLed supervisor once the next command has swept.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use test_support::*;

fn project(d: &Dstack, files: &[(&str, String)]) -> PathBuf {
    for (name, text) in files {
        d.write_home_file(&format!("project/.dstack/workflows/{name}"), text);
    }
    d.home().join("project")
}

fn ports_of(d: &Dstack, run: &str) -> Vec<u16> {
    d.run_record(run)["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap() as u16)
        .collect()
}

/// `curl -s URL` on the host: the body, or None.
fn curl(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-s", "-m", "5", url])
        .output()
        .expect("curl is installed");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts `name` detached and waits until its log says `ready`; returns the run name.
fn start_detached(d: &Dstack, dir: &Path, name: &str) -> String {
    let out = d.run_in(dir, &["run", "-d", name]);
    out.assert_success();
    let run = out.stdout.trim().to_string();
    wait_for(
        &format!("{run} to be ready"),
        Duration::from_secs(60),
        || d.run_in(dir, &["logs", &run]).stdout.contains("ready"),
    );
    run
}

/// Serves a page on each published port: `index.html` says which run and port.
const SERVE: &str = "    commands:\n      - for p in $(env | sed -n 's/^PORT_[0-9]*=//p'); do mkdir -p /tmp/www$p; echo \"page of ${{ run.name }} on $p\" > /tmp/www$p/index.html; httpd -p 0.0.0.0:$p -h /tmp/www$p; done\n      - echo ready\n      - sleep 600\n";

/// The host interface name of a run: `dst` + 12 hex digits of sha256(container id).
fn host_interface(d: &Dstack, run: &str) -> String {
    use sha2::Digest as _;
    let id = d.run_record(run)["container_id"]
        .as_str()
        .unwrap()
        .to_string();
    format!(
        "dst{}",
        &hex::encode(sha2::Sha256::digest(id.as_bytes()))[..12]
    )
}

fn links() -> String {
    String::from_utf8_lossy(
        &Command::new("ip")
            .args(["-o", "link"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned()
}

fn nat_rules() -> String {
    let nft = Command::new("nft").args(["list", "ruleset"]).output();
    let ipt = Command::new("iptables")
        .args(["-w", "-t", "nat", "-S"])
        .output();
    let text = |o: std::io::Result<std::process::Output>| {
        o.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    text(nft) + &text(ipt)
}

#[track_caller]
fn assert_nothing_left(name: &str) {
    let short = &name[3..];
    // The veth goes with the job's namespace and the NAT table in the background: moments later.
    wait_for(
        &format!("{name} and its NAT rules to go"),
        Duration::from_secs(10),
        || {
            let rules = nat_rules();
            !links().contains(&format!(": {name}@"))
                && !rules.contains(&format!("dstack_{short}"))
                && !rules.contains(&format!("DSTACK-{short}"))
        },
    );
}

/// A job serving on `$PORT_0` (and `$PORT_1`, `$PORT_2`) answers `curl 127.0.0.1:PORT`; the URLs are printed.
fn three_ports_answer_curl(d: Dstack) {
    let registry = busybox_registry();
    let dir = project(
        &d,
        &[(
            "web.yaml",
            busybox_workflow(&registry, "web", &format!("    ports: 3\n{SERVE}")),
        )],
    );
    let out = d.run_in(&dir, &["run", "-d", "web"]);
    out.assert_success();
    let run = out.stdout.trim().to_string();
    wait_for("the servers", Duration::from_secs(60), || {
        d.run_in(&dir, &["logs", &run]).stdout.contains("ready")
    });
    let ports = ports_of(&d, &run);
    assert_eq!(ports.len(), 3);
    for p in &ports {
        let mut body = None;
        wait_for(&format!("port {p}"), Duration::from_secs(20), || {
            body = curl(&format!("http://127.0.0.1:{p}/"));
            body.is_some()
        });
        assert_eq!(body.unwrap().trim(), format!("page of {run} on {p}"));
    }
    // The host's other addresses too: as root the kernel forwards IPv4, the supervisor IPv6. (Rootless
    // on this machine the job shares the host's network, where its httpd listens on IPv4 only.)
    let p = ports[0];
    let root = d.run_as() == RunAs::Root;
    let mut urls: Vec<String> = host_addresses()
        .iter()
        .filter_map(|a| match a {
            std::net::IpAddr::V4(a) => Some(format!("http://{a}:{p}/")),
            std::net::IpAddr::V6(a) => root.then(|| format!("http://[{a}]:{p}/")),
        })
        .collect();
    if root && ipv6_loopback() {
        urls.push(format!("http://[::1]:{p}/"));
    }
    for url in urls {
        assert_eq!(
            curl(&url).as_deref().map(str::trim),
            Some(format!("page of {run} on {p}").as_str()),
            "{url}"
        );
    }
    d.run_in(&dir, &["stop", &run]).assert_success();
}

/// The host's global addresses, but those of our runs' veths (which come and go with other tests).
fn host_addresses() -> Vec<std::net::IpAddr> {
    let out = Command::new("ip")
        .args(["-o", "addr", "show", "scope", "global"])
        .output()
        .unwrap();
    // "2: eth0    inet 192.0.2.2/24 brd ..."
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().skip(1);
            let (ifname, _family, cidr) = (f.next()?, f.next()?, f.next()?);
            (!ifname.starts_with("dst")).then(|| cidr.split('/').next()?.parse().ok())?
        })
        .collect()
}

fn ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

/// Two runs at once each get their own ports and answer on them.
fn two_runs_at_once_get_their_own_ports(d: Dstack) {
    let registry = busybox_registry();
    let dir = project(
        &d,
        &[(
            "one.yaml",
            busybox_workflow(&registry, "one", &format!("    ports: 1\n{SERVE}")),
        )],
    );
    d.run_in(&dir, &["pull", &registry.image("demo/busybox:latest")]);
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| start_detached(&d, &dir, "one"));
        let b = s.spawn(|| start_detached(&d, &dir, "one"));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (pa, pb) = (ports_of(&d, &a)[0], ports_of(&d, &b)[0]);
    assert_ne!(pa, pb);
    for (run, p) in [(&a, pa), (&b, pb)] {
        let mut body = None;
        wait_for(&format!("port {p}"), Duration::from_secs(20), || {
            body = curl(&format!("http://127.0.0.1:{p}/"));
            body.is_some()
        });
        assert_eq!(body.unwrap().trim(), format!("page of {run} on {p}"));
    }
    d.run_in(&dir, &["stop", &a]).assert_success();
    d.run_in(&dir, &["stop", &b]).assert_success();
}

/// The job reaches a server the test runs on the host, by the name `host.dstack.internal`.
fn a_job_reaches_a_server_on_the_host(d: Dstack) {
    let registry = busybox_registry();
    let server = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let served = std::thread::spawn(move || {
        let (mut conn, peer) = server.accept().unwrap();
        let mut req = [0u8; 1024];
        let _ = conn.read(&mut req);
        conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\nhello-from-host")
            .unwrap();
        peer
    });
    let body = format!(
        "    commands:\n      - cat /etc/resolv.conf\n      - wget -q -O - http://host.dstack.internal:{port}/ && echo\n"
    );
    let dir = project(
        &d,
        &[("out.yaml", busybox_workflow(&registry, "out", &body))],
    );
    let out = d.run_in(&dir, &["run", "out"]);
    out.assert_success().assert_stdout_contains("hello-from-h");
    assert!(
        out.stdout.lines().any(|l| l.starts_with("nameserver ")),
        "{out}"
    );
    let peer = served.join().unwrap();
    if d.run_as() == RunAs::Root {
        assert!(
            peer.ip().to_string().starts_with("10."),
            "the job came from {peer}, not its own address"
        );
    }
}

/// `network: host` puts the job in the host's network (it sees the host's interfaces and reaches a server
/// bound to the host's loopback); `network: none` leaves it only its own loopback.
fn host_and_none_networks(d: Dstack) {
    let registry = busybox_registry();
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let served = std::thread::spawn(move || {
        let (mut conn, _) = server.accept().unwrap();
        let mut req = [0u8; 1024];
        let _ = conn.read(&mut req);
        conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 13\r\n\r\nhost-loopback")
            .unwrap();
    });
    let host_body = format!(
        "    network: host\n    commands:\n      - ls /sys/class/net\n      - wget -q -O - http://127.0.0.1:{port}/ && echo\n"
    );
    let none_body = "    network: none\n    commands:\n      - ls /sys/class/net\n".to_string();
    let dir = project(
        &d,
        &[
            (
                "host.yaml",
                busybox_workflow(&registry, "on-host", &host_body),
            ),
            (
                "none.yaml",
                busybox_workflow(&registry, "isolated", &none_body),
            ),
        ],
    );
    let out = d.run_in(&dir, &["run", "on-host"]);
    out.assert_success().assert_stdout_contains("host-loopback");
    served.join().unwrap();
    // Other tests' runs add and remove their veths (`dst...`) meanwhile: the host's own links only.
    let host_links: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with("dst"))
        .collect();
    for link in &host_links {
        assert!(
            out.stdout.split_whitespace().any(|w| w == link),
            "{link} missing in {out}"
        );
    }
    let out = d.run_in(&dir, &["run", "isolated"]);
    out.assert_success();
    assert_eq!(
        out.stdout.split_whitespace().collect::<Vec<_>>(),
        ["lo"],
        "{out}"
    );
}

/// Jobs cannot reach each other's addresses, only what they publish (root: rootless runs share the host
/// network where no user-mode network is usable).
fn jobs_are_isolated_unless_they_publish_ports(d: Dstack) {
    let registry = busybox_registry();
    let server = format!(
        "    ports: 1\n    commands:\n      - echo \"addr $(hostname -i)\"\n{}",
        &SERVE["    commands:\n".len()..]
    );
    let client = "    commands:\n      - echo ready\n      - sleep 600\n";
    let dir = project(
        &d,
        &[
            ("srv.yaml", busybox_workflow(&registry, "srv", &server)),
            ("cli.yaml", busybox_workflow(&registry, "cli", client)),
        ],
    );
    let srv = start_detached(&d, &dir, "srv");
    let port = ports_of(&d, &srv)[0];
    let log = d.run_in(&dir, &["logs", &srv]).stdout;
    let addr = log
        .lines()
        .find_map(|l| l.strip_prefix("addr "))
        .unwrap()
        .trim()
        .to_string();
    assert!(addr.starts_with("10."), "{log}");
    // The client: a second run; its namespace is entered through its init's pid.
    let cli = start_detached(&d, &dir, "cli");
    let pid = d.run_record(&cli)["container_pid"]
        .as_i64()
        .expect("the run records its init's pid");
    let inside = |cmd: &str| {
        let o = Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-n", "sh", "-c", cmd])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let direct = inside(&format!("curl -s -m 3 http://{addr}:{port}/"));
    assert!(
        !direct.contains("page of"),
        "the client reached the server's address directly"
    );
    let gw = inside("ip route show default | cut -d' ' -f3")
        .trim()
        .to_string();
    let published = inside(&format!("curl -s -m 5 http://{gw}:{port}/"));
    assert!(
        published.contains(&format!("page of {srv}")),
        "the published port is out of reach: {published:?}"
    );
    d.run_in(&dir, &["stop", &srv]).assert_success();
    d.run_in(&dir, &["stop", &cli]).assert_success();
}

/// After a run, and after a SIGKILLed supervisor once the next command has swept, `ip link` and the NAT
/// table hold nothing of ours.
fn nothing_is_left_after_runs_or_a_sigkill(d: Dstack) {
    let registry = busybox_registry();
    let body = "    ports: 1\n    commands:\n      - echo ready\n      - sleep 600\n";
    let dir = project(
        &d,
        &[
            ("long.yaml", busybox_workflow(&registry, "long", body)),
            (
                "short.yaml",
                busybox_workflow(&registry, "short", "    commands:\n      - echo short\n"),
            ),
        ],
    );
    let out = d.run_in(&dir, &["run", "short"]);
    out.assert_success();
    let short_run = out.run_name();
    assert_nothing_left(&host_interface(&d, &short_run));

    let run = start_detached(&d, &dir, "long");
    let name = host_interface(&d, &run);
    assert!(links().contains(&format!(": {name}@")), "no veth {name}");
    let port = ports_of(&d, &run)[0];
    let supervisor = d.run_record(&run)["supervisor_pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(supervisor), Signal::SIGKILL).unwrap();
    // The job's namespace dies with init (PDEATHSIG) and takes the veth; the NAT table waits for a sweep.
    d.run_in(&dir, &["run", "short"]).assert_success();
    assert_nothing_left(&name);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still open"
    );
}

as_root_and_rootless!(three_ports_answer_curl);
as_root_and_rootless!(two_runs_at_once_get_their_own_ports);
as_root_and_rootless!(a_job_reaches_a_server_on_the_host);
as_root_and_rootless!(host_and_none_networks);

#[test]
fn jobs_are_isolated_unless_they_publish_ports_as_root() {
    jobs_are_isolated_unless_they_publish_ports(Dstack::root());
}

#[test]
fn nothing_is_left_after_runs_or_a_sigkill_as_root() {
    nothing_is_left_after_runs_or_a_sigkill(Dstack::root());
}

/// With published ports the host end of a run's veth carries connections to the host's 127.0.0.1
/// (`route_localnet`, for the kernel's DNAT); the job still cannot use it the other way, to reach a service
/// bound to the host's loopback (kube-proxy's CVE-2020-8558), here a UDP one. The job is played by root
/// in its namespace, routing 127/8 out of eth0, as a job with CAP_NET_RAW could forge such packets.
#[test]
fn the_hosts_loopback_stays_out_of_reach_as_root() {
    let d = Dstack::root();
    let registry = busybox_registry();
    let service = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    service
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let port = service.local_addr().unwrap().port();
    let waits = "    ports: 1\n    commands:\n      - echo ready\n      - sleep 600\n";
    let dir = project(
        &d,
        &[("pub.yaml", busybox_workflow(&registry, "pub", waits))],
    );
    let run = start_detached(&d, &dir, "pub");
    let pid = d.run_record(&run)["container_pid"].as_i64().unwrap();
    let host_if = host_interface(&d, &run);
    let localnet = format!("/proc/sys/net/ipv4/conf/{host_if}/route_localnet");
    assert_eq!(std::fs::read_to_string(&localnet).unwrap().trim(), "1");
    // The script below rewires loopback routing: never in the host's namespace.
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    assert_ne!(ns(&pid.to_string()), ns("self"));
    let script = format!(
        "set -e; ip route del local 127.0.0.1 dev lo table local; \
         ip route del local 127.0.0.0/8 dev lo table local; \
         sysctl -qw net.ipv4.conf.eth0.route_localnet=1; \
         ip route add 127.0.0.0/8 via $(ip route show default | cut -d' ' -f3) dev eth0; \
         for i in 1 2 3; do echo forged > /dev/udp/127.0.0.1/{port}; done; echo sent"
    );
    let out = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "bash", "-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("sent"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut buf = [0u8; 64];
    let got = service.recv_from(&mut buf);
    assert!(
        got.is_err(),
        "the job reached a service on the host's loopback: {got:?}"
    );
    d.run_in(&dir, &["stop", &run]).assert_success();
}

/// The spare network namespaces a run's clean-up makes for the next (`/run/dstack/netns`): each run
/// still gets a namespace of its own, never one another job was in, with only `lo`, up; the spares are
/// bind mounts of network namespaces, at most two, and nothing else is left there.
///
/// A namespace is known by its inode number, which the kernel hands out again once the namespace is
/// freed (the lowest free one: CI saw a new namespace numbered as the previous run's). So the test holds
/// each run's namespace open to the end: while held, its number is its own.
#[test]
fn network_namespaces_from_the_spares_are_fresh_as_root() {
    let d = Dstack::root();
    let registry = busybox_registry();
    let body = "    network: none\n    commands:\n      - echo ready\n      - sleep 600\n";
    let dir = project(
        &d,
        &[("alone.yaml", busybox_workflow(&registry, "alone", body))],
    );
    let mut held = Vec::new();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let run = start_detached(&d, &dir, "alone");
        let pid = d.run_record(&run)["container_pid"]
            .as_i64()
            .unwrap()
            .to_string();
        let file = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
        let ns = std::fs::read_link(format!("/proc/{pid}/ns/net"))
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let out = Command::new("nsenter")
            .args(["-t", &pid, "-n", "ip", "-o", "link"])
            .output()
            .unwrap();
        let links = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(links.lines().count(), 1, "{links}");
        assert!(links.contains(": lo:") && links.contains(",UP"), "{links}");
        assert!(!seen.contains(&ns), "a namespace served two jobs: {ns}");
        d.run_in(&dir, &["stop", &run]).assert_success();
        seen.push(ns);
        held.push(file);
        let _ = d.scratch_left();
    }
    // Spares are made once the previous run's init is gone, under the lock taken here so that none is
    // half made (a file not yet mounted on); the other tests' runs take them meanwhile.
    let lock = std::fs::File::create("/run/dstack/netns.lock").unwrap();
    // SAFETY: flock on a descriptor we hold; released when `lock` closes.
    let locked = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    assert_eq!(locked, 0);
    let spares: Vec<std::path::PathBuf> = std::fs::read_dir("/run/dstack/netns")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(spares.len() <= 2, "{spares:?}");
    for spare in &spares {
        // Gone already: taken.
        let Ok(opened) = std::fs::File::open(spare) else {
            continue;
        };
        let ns = std::fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&opened)
        ))
        .unwrap()
        .to_string_lossy()
        .into_owned();
        if !ns.starts_with("net:[") {
            // A run taking it has unmounted it and unlinks it next; anything else is a leftover.
            wait_for(
                &format!("{} (not a namespace) to go", spare.display()),
                Duration::from_secs(1),
                || !spare.exists(),
            );
            continue;
        }
        assert!(
            !seen.contains(&ns),
            "{} is a namespace a job was in",
            spare.display()
        );
    }
    // The runs' namespaces were held open to here, so none of their numbers was handed out again.
    drop(held);
}

/// A thousand runs with a published port, one after another, each succeeding; afterwards none of their
/// interfaces, NAT tables, address leases, scratch directories, cgroups or mounts remains. (Only what
/// belongs to these runs is checked: the other tests run at the same time.)
#[test]
fn a_thousand_runs_leave_nothing_behind_as_root() {
    let d = Dstack::root();
    let registry = busybox_registry();
    let image = registry.image("demo/busybox:latest");
    d.run(&["pull", &image]).assert_success();
    let mut ids = Vec::new();
    for i in 0..1000 {
        let out = d.run(&["run", "docker", &image, "-p", "1", "-c", "true"]);
        assert!(out.status.success(), "run {i} of 1000 failed: {out}");
        let run = out.run_name();
        ids.push(
            d.run_record(&run)["container_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let short = |id: &str| {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(id.as_bytes()))[..12].to_string()
    };
    let shorts: Vec<String> = ids.iter().map(|id| short(id)).collect();
    // The NAT tables go in the background and the veths with the namespaces, moments after each run.
    wait_for(
        "the runs' veths and NAT tables to go",
        Duration::from_secs(20),
        || {
            let (rules, links) = (nat_rules(), links());
            !shorts.iter().any(|s| {
                rules.contains(&format!("dstack_{s}")) || links.contains(&format!(": dst{s}@"))
            })
        },
    );
    let leases: Vec<String> = std::fs::read_dir("/run/dstack/net")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    for s in &shorts {
        assert!(!leases.contains(&format!("{s}.lease")), "lease {s} left");
    }
    // (A run's cgroup goes before its scratch directory.)
    let left = d.scratch_left();
    assert!(left.is_empty(), "scratch directories left: {left:?}");
    for id in &ids {
        for controller in ["memory", "pids", "devices", "cpu"] {
            let cg = std::path::Path::new("/sys/fs/cgroup")
                .join(controller)
                .join("dstack")
                .join(id);
            assert!(!cg.exists(), "cgroup {} left", cg.display());
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&d.state_root().display().to_string()),
        "mounts left under the state root"
    );
}
