//! Address leases of host-root runs: one record per run, `<dir>/<short>.lease`, whose flock the run
//! holds for as long as it (or its container's init) lives. Allocation and the sweep both run under
//! `<dir>/lock`. The directory is machine-wide (`/run/dstack/net`), not per state root: addresses and
//! interface names are machine-wide, and test runs use a state root each. It is a tmpfs, so records go
//! at reboot together with the interfaces they describe.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::NetError;
use super::netlink::{Netlink, link_name};
use super::pool::Pool;
use super::{HOST_IF_PREFIX, nat};
use crate::fsops::{FileLock, LockMode};

/// Where host-root runs keep their leases.
pub fn lease_dir() -> PathBuf {
    PathBuf::from("/run/dstack/net")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Record {
    pub short: String,
    pub host_if: String,
    pub subnet: Ipv4Addr,
    pub pid: u32,
    /// The tool that holds the run's NAT rules, once installed ("nft" or "iptables").
    #[serde(default)]
    pub nat: Option<String>,
}

/// A held lease; dropping it deletes the record (the caller removes the resources first).
pub(super) struct Lease {
    pub record: Record,
    path: PathBuf,
    lock: FileLock,
    /// Someone else (the detached NAT cleanup) removes the record.
    disowned: bool,
}

impl Lease {
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.record.subnet) + 1)
    }

    pub fn job_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.record.subnet) + 2)
    }
}

impl Lease {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The descriptor holding the lease's lock.
    pub fn lock_fd(&self) -> i32 {
        self.lock.as_raw_fd()
    }

    /// Leaves the record for another process to remove (one that holds the lock).
    pub fn disown(&mut self) {
        self.disowned = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.disowned {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Holds `<dir>/lock` until dropped.
struct DirLock(#[allow(dead_code)] FileLock);

impl DirLock {
    fn take(dir: &Path) -> Result<DirLock, NetError> {
        let err = |source| NetError::Lock {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let lock = FileLock::acquire(&dir.join("lock"), LockMode::Exclusive).map_err(err)?;
        Ok(DirLock(lock))
    }
}

/// Reads every record; removes the resources and records of dead holders; returns the live ones.
fn scan(dir: &Path, nl: &mut Netlink) -> (Vec<Record>, usize) {
    let mut live = Vec::new();
    let mut swept = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (live, swept);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "lease") {
            continue;
        }
        let Ok(file) = File::open(&path) else {
            continue;
        };
        let record: Option<Record> = serde_json::from_reader(&file).ok();
        let Ok(Ok(_dead_holders)) = FileLock::try_on(file, LockMode::Exclusive) else {
            if let Some(r) = record {
                live.push(r);
            }
            continue;
        };
        if let Some(r) = &record {
            release_resources(r, nl);
            tracing::info!(
                "removed the network leftovers of a killed run ({}, {})",
                r.host_if,
                r.subnet
            );
        }
        let _ = std::fs::remove_file(&path);
        swept += 1;
    }
    (live, swept)
}

/// Deletes a run's veth (its peer goes with it) and NAT rules; each step tolerates "already gone".
pub(super) fn release_resources(r: &Record, nl: &mut Netlink) {
    if let Err(e) = nl.delete_link(&r.host_if) {
        tracing::warn!("cannot delete interface {}: {e}", r.host_if);
    }
    // The tool noted is the one tried first: nf_tables, then iptables where that failed.
    nat::remove_any(&r.short);
}

/// Takes a free /30 of the pool for `short`/`host_if` (after sweeping dead holders' leftovers).
pub(super) fn allocate(
    dir: &Path,
    nl: &mut Netlink,
    configured: Option<Pool>,
    short: &str,
    host_if: &str,
) -> Result<Lease, NetError> {
    let _guard = DirLock::take(dir)?;
    let (live, _) = scan(dir, nl);
    if live.iter().any(|r| r.host_if == host_if) {
        return Err(NetError::NameTaken(host_if.to_string()));
    }
    let routes = nl
        .routes()
        .map_err(NetError::netlink("reading the host's routes"))?;
    let ours = |oif: Option<u32>| {
        oif.and_then(link_name)
            .is_some_and(|n| n.starts_with(HOST_IF_PREFIX))
    };
    let pool = Pool::choose(configured, &routes, |r| ours(r.oif))?;
    let mut used = vec![false; pool.len() as usize];
    for r in &live {
        if let Some(i) = pool.index_of(r.subnet) {
            used[i as usize] = true;
        }
    }
    // Any other route in the pool (a leftover of ours, another tool's) also takes its subnets.
    for r in routes
        .iter()
        .filter(|r| r.len > 0 && pool.overlaps(r.dst, r.len))
    {
        let first = pool.index_of(r.dst).unwrap_or(0);
        let count = if r.len >= 30 {
            1
        } else {
            1u32 << (30 - r.len as u32)
        };
        for i in first..(first + count).min(pool.len()) {
            used[i as usize] = true;
        }
    }
    let Some(index) = used.iter().position(|u| !u) else {
        return Err(NetError::PoolExhausted {
            pool: pool.to_string(),
            count: live.len(),
        });
    };
    let record = Record {
        short: short.to_string(),
        host_if: host_if.to_string(),
        subnet: pool.subnet(index as u32),
        pid: std::process::id(),
        // Written once, here, under the lock: readers never see it half-written.
        nat: Some(nat::NatTool::Nft.name().to_string()),
    };
    let path = dir.join(format!("{short}.lease"));
    let err = |source| NetError::Lock {
        path: path.display().to_string(),
        source,
    };
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(err)?;
    let lock = FileLock::try_on(file, LockMode::Exclusive)
        .map_err(err)?
        .map_err(|_held| err(std::io::Error::from_raw_os_error(libc::EWOULDBLOCK)))?;
    let mut lease = Lease {
        record,
        path: path.clone(),
        lock,
        disowned: false,
    };
    let json = serde_json::to_vec(&lease.record).expect("plain data");
    lease.lock.write_all(&json).map_err(err)?;
    Ok(lease)
}

/// Removes the leases, veths and NAT rules of runs whose supervisor died; returns how many.
pub(super) fn sweep(dir: &Path) -> usize {
    if !dir.exists() {
        return 0;
    }
    let Ok(mut nl) = Netlink::open() else {
        return 0;
    };
    let Ok(_guard) = DirLock::take(dir) else {
        return 0;
    };
    scan(dir, &mut nl).1
}
