//! Which cgroup layout the host has: pure v2, hybrid (v1 controllers plus an empty cgroup2 mount), or v1,
//! and where this process's own cgroups are, read from /proc/self/mountinfo and /proc/self/cgroup.

use std::path::{Path, PathBuf};

use super::{CgroupError, fs};

/// Controllers whose placement decides between v1 and v2: the ones our limits use.
const LIMIT_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

/// The host's cgroup layout as this process sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// The limit controllers live on cgroup v2 (`mount`, usually /sys/fs/cgroup); `own` is this process's cgroup.
    Unified { mount: PathBuf, own: PathBuf },
    /// The limit controllers live on v1 hierarchies; `hybrid` when a cgroup2 mount exists beside them.
    Legacy {
        hierarchies: Vec<Hierarchy>,
        hybrid: bool,
    },
    /// No cgroup filesystem is mounted.
    Missing,
}

/// One v1 hierarchy: the controllers bound to it, its mount point and this process's cgroup in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub controllers: Vec<String>,
    pub mount: PathBuf,
    pub own: PathBuf,
}

impl Hierarchy {
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// Reads the layout of the running process.
pub fn detect() -> Result<Layout, CgroupError> {
    let mountinfo = fs::read(Path::new("/proc/self/mountinfo"))?;
    let cgroup = fs::read(Path::new("/proc/self/cgroup"))?;
    Ok(parse(&mountinfo, &cgroup))
}

struct Mount {
    fstype: String,
    root: String,
    point: PathBuf,
    options: Vec<String>,
}

/// Builds the layout from the text of /proc/self/mountinfo and /proc/self/cgroup.
pub(crate) fn parse(mountinfo: &str, proc_cgroup: &str) -> Layout {
    let mounts: Vec<Mount> = mountinfo.lines().filter_map(parse_mount).collect();
    let own_paths: Vec<(Vec<String>, String)> = proc_cgroup
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_id, list, path) = (parts.next()?, parts.next()?, parts.next()?);
            let list = list
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            Some((list, path.to_string()))
        })
        .collect();

    let mut hierarchies: Vec<Hierarchy> = Vec::new();
    for mount in mounts.iter().filter(|m| m.fstype == "cgroup") {
        let controllers: Vec<String> = mount
            .options
            .iter()
            .filter(|o| is_controller(o))
            .cloned()
            .collect();
        if controllers.is_empty() || hierarchies.iter().any(|h| h.controllers == controllers) {
            continue; // a named hierarchy (name=systemd) or a second mount of the same one
        }
        let own_path = own_paths
            .iter()
            .find(|(list, _)| same_set(list, &controllers))
            .map(|(_, p)| p.as_str());
        hierarchies.push(Hierarchy {
            own: own_dir(mount, own_path),
            mount: mount.point.clone(),
            controllers,
        });
    }
    let unified = mounts.iter().find(|m| m.fstype == "cgroup2");
    let v1_holds_limits = hierarchies
        .iter()
        .any(|h| LIMIT_CONTROLLERS.iter().any(|c| h.has(c)));
    match unified {
        Some(mount) if !v1_holds_limits => {
            let own_path = own_paths
                .iter()
                .find(|(list, _)| list.is_empty())
                .map(|(_, p)| p.as_str());
            Layout::Unified {
                mount: mount.point.clone(),
                own: own_dir(mount, own_path),
            }
        }
        _ if !hierarchies.is_empty() => Layout::Legacy {
            hierarchies,
            hybrid: unified.is_some(),
        },
        _ => Layout::Missing,
    }
}

fn parse_mount(line: &str) -> Option<Mount> {
    let (before, after) = line.split_once(" - ")?;
    let fields: Vec<&str> = before.split(' ').collect();
    let mut tail = after.split(' ');
    let fstype = tail.next()?.to_string();
    let _source = tail.next()?;
    let options = tail
        .next()
        .unwrap_or("")
        .split(',')
        .map(str::to_string)
        .collect();
    Some(Mount {
        fstype,
        root: unescape(fields.get(3)?),
        point: PathBuf::from(unescape(fields.get(4)?)),
        options,
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\NNN` octal.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_controller(option: &str) -> bool {
    const KNOWN: [&str; 13] = [
        "cpu",
        "cpuacct",
        "cpuset",
        "memory",
        "devices",
        "freezer",
        "net_cls",
        "net_prio",
        "blkio",
        "perf_event",
        "hugetlb",
        "pids",
        "rdma",
    ];
    KNOWN.contains(&option) || option == "misc"
}

fn same_set(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

/// This process's cgroup directory under `mount`: its /proc/self/cgroup path made relative to the mount's root
/// (a bind-mounted or namespaced hierarchy), or the mount itself when the path lies outside it.
fn own_dir(mount: &Mount, own_path: Option<&str>) -> PathBuf {
    let Some(path) = own_path else {
        return mount.point.clone();
    };
    let root = mount.root.trim_end_matches('/');
    match path.strip_prefix(root) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            let rest = rest.trim_start_matches('/');
            if rest.split('/').any(|c| c == "..") {
                mount.point.clone()
            } else {
                mount.point.join(rest)
            }
        }
        _ => mount.point.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn this_machine_is_hybrid_with_memory_on_v1() {
        let cgroup =
            "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/b7\n2:cpuacct:/\n1:cpu:/\n0::/\n";
        let Layout::Legacy {
            hierarchies,
            hybrid,
        } = parse(HYBRID, cgroup)
        else {
            panic!("not legacy")
        };
        assert!(hybrid);
        let memory = hierarchies.iter().find(|h| h.has("memory")).unwrap();
        assert_eq!(
            memory.own,
            PathBuf::from("/sys/fs/cgroup/memory/process_api/b7")
        );
        assert_eq!(
            hierarchies.len(),
            4,
            "name=systemd is not a controller hierarchy"
        );
    }

    #[test]
    fn pure_v2_finds_the_own_cgroup() {
        let mountinfo = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        let cgroup = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/x.scope\n";
        assert_eq!(
            parse(mountinfo, cgroup),
            Layout::Unified {
                mount: PathBuf::from("/sys/fs/cgroup"),
                own: PathBuf::from(
                    "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/x.scope"
                ),
            }
        );
    }

    #[test]
    fn a_bind_mounted_subtree_is_resolved_against_its_root() {
        let mountinfo = "30 23 0:26 /job_7 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let Layout::Unified { own, .. } = parse(mountinfo, "0::/job_7/step_0\n") else {
            panic!()
        };
        assert_eq!(own, PathBuf::from("/sys/fs/cgroup/step_0"));
        let Layout::Unified { own, .. } = parse(mountinfo, "0::/../../elsewhere\n") else {
            panic!()
        };
        assert_eq!(own, PathBuf::from("/sys/fs/cgroup"));
    }

    #[test]
    fn comounted_cpu_and_cpuacct_are_one_hierarchy() {
        let mountinfo =
            "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let Layout::Legacy {
            hierarchies,
            hybrid,
        } = parse(mountinfo, "2:cpuacct,cpu:/a\n")
        else {
            panic!()
        };
        assert!(!hybrid);
        assert_eq!(
            hierarchies[0].own,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/a")
        );
    }

    #[test]
    fn escaped_mount_points_and_no_cgroups() {
        assert_eq!(unescape("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(
            parse("22 1 0:5 / /proc rw - proc proc rw\n", ""),
            Layout::Missing
        );
    }
}
