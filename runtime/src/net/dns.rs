//! `/etc/resolv.conf` and `/etc/hosts` for the job. In its own network namespace the host's loopback
//! stub resolvers (systemd-resolved's 127.0.0.53, dnsmasq on 127.0.0.1) are out of reach, so, as Docker
//! does, they are replaced by the upstream servers (`/run/systemd/resolve/resolv.conf`).

use std::net::{IpAddr, Ipv4Addr};

const HOST_RESOLV: &str = "/etc/resolv.conf";
const SYSTEMD_UPSTREAM: &str = "/run/systemd/resolve/resolv.conf";
/// Used only when the host names no server the job can reach.
const FALLBACK: [&str; 2] = ["8.8.8.8", "1.1.1.1"];

fn nameserver(line: &str) -> Option<IpAddr> {
    let mut words = line.split_whitespace();
    (words.next() == Some("nameserver"))
        .then(|| words.next()?.parse().ok())
        .flatten()
}

fn reachable(addr: IpAddr) -> bool {
    // No IPv6 in the job's namespace either: its veth has only an IPv4 address.
    matches!(addr, IpAddr::V4(a) if !a.is_loopback())
}

/// The resolv.conf for a job in its own namespace, from the host's file and systemd-resolved's upstream
/// file; the bool says the public fallback had to be used.
pub(super) fn private_resolv_conf(host: &str, upstream: Option<&str>) -> (String, bool) {
    let stub = host.lines().filter_map(nameserver).any(|a| a.is_loopback());
    let base = match upstream {
        Some(u) if stub && u.lines().filter_map(nameserver).any(reachable) => u,
        _ => host,
    };
    let mut out = String::new();
    let mut servers = 0;
    for line in base.lines() {
        match nameserver(line) {
            Some(a) if reachable(a) => {
                servers += 1;
                out.push_str(&format!("nameserver {a}\n"));
            }
            Some(_) => {}
            None if line.starts_with("search")
                || line.starts_with("domain")
                || line.starts_with("options") =>
            {
                out.push_str(line.trim_end());
                out.push('\n');
            }
            None => {}
        }
    }
    if servers == 0 {
        for s in FALLBACK {
            out.push_str(&format!("nameserver {s}\n"));
        }
    }
    (out, servers == 0)
}

/// The resolv.conf of a job in its own network namespace.
pub(super) fn resolv_conf_private() -> String {
    let host = std::fs::read_to_string(HOST_RESOLV).unwrap_or_default();
    let upstream = std::fs::read_to_string(SYSTEMD_UPSTREAM).ok();
    let (text, fallback) = private_resolv_conf(&host, upstream.as_deref());
    if fallback {
        tracing::warn!(
            "the host names no DNS server a job can reach from its own network ({HOST_RESOLV}): using {} and {}",
            FALLBACK[0],
            FALLBACK[1]
        );
    }
    text
}

/// The host's resolv.conf as it is (the job shares the host's network).
pub(super) fn resolv_conf_host() -> String {
    std::fs::read_to_string(HOST_RESOLV).unwrap_or_default()
}

/// `/etc/hosts`: localhost, the job's own name on its address, and `host.dstack.internal` for the host.
pub(super) fn hosts(hostname: &str, own: Option<Ipv4Addr>, host: Option<Ipv4Addr>) -> String {
    let own = own.unwrap_or(Ipv4Addr::new(127, 0, 1, 1));
    let mut text = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{own}\t{hostname}\n"
    );
    if let Some(h) = host {
        text.push_str(&format!("{h}\thost.dstack.internal\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stub_resolver_is_replaced_by_its_upstreams() {
        let host = "# managed\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch corp\n";
        let upstream = "nameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch corp lan\n";
        let (text, fallback) = private_resolv_conf(host, Some(upstream));
        assert_eq!(text, "nameserver 192.0.2.53\nsearch corp lan\n");
        assert!(!fallback);
    }

    #[test]
    fn real_servers_are_kept_and_nothing_reachable_falls_back_to_public_ones() {
        let (text, fallback) = private_resolv_conf("nameserver 10.255.255.53\nsearch x\n", None);
        assert_eq!(text, "nameserver 10.255.255.53\nsearch x\n");
        assert!(!fallback);
        let (text, fallback) = private_resolv_conf("nameserver 127.0.0.1\n", None);
        assert!(fallback);
        assert_eq!(text, "nameserver 8.8.8.8\nnameserver 1.1.1.1\n");
    }

    #[test]
    fn hosts_names_the_job_and_the_host() {
        let h = hosts(
            "job",
            Some(Ipv4Addr::new(10, 89, 0, 2)),
            Some(Ipv4Addr::new(10, 89, 0, 1)),
        );
        assert!(h.contains("10.89.0.2\tjob\n"));
        assert!(h.contains("10.89.0.1\thost.dstack.internal\n"));
    }
}
