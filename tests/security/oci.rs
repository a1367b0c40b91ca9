//! Hostile OCI bundles against `dstack-oci` (issue 15 item 7): a bundle is anyone's, so its config.json
//! must not reach the host. Each test writes a busybox root filesystem and a config.json an attacker
//! would write, runs `dstack-oci run` as root and as an unprivileged user, and checks what the victim
//! would check: the host's value or directory is unchanged, and the bundle is refused with a message
//! naming the field, before any container state exists.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use test_support::oci::unpack_busybox;
use test_support::*;

const OCI_BIN: &str = env!("CARGO_BIN_EXE_dstack-oci");
const MODES: [RunAs; 2] = [RunAs::Root, RunAs::Rootless];

/// A bundle directory (`rootfs/` from the static busybox, and an empty `tmp/` beside it: where a path that
/// climbs out of the root filesystem with `..` lands) and the user's `--root`.
struct Bundle {
    dstack: Dstack,
    dir: PathBuf,
    root: PathBuf,
}

impl Bundle {
    fn new(run_as: RunAs) -> Bundle {
        let dstack = Dstack::new(run_as);
        let dir = dstack.home().join("bundle");
        unpack_busybox(&dir.join("rootfs"));
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        dstack.give_to_user(&dir);
        let root = dstack.state_root().join("oci");
        Bundle { dstack, dir, root }
    }

    /// `dstack-oci --root ROOT ARGS` as the bundle's user, in the bundle.
    fn oci(&self, args: &[&str]) -> Output {
        let root = self.root.to_string_lossy().into_owned();
        let mut full = vec!["--root", root.as_str()];
        full.extend_from_slice(args);
        let mut cmd = self.dstack.program_command(OCI_BIN, &full);
        cmd.current_dir(&self.dir);
        Output::of(cmd)
    }

    /// The runtime's own default config (`spec`, `--rootless spec` for the unprivileged user), running
    /// `script`: the bundle an attacker starts from.
    fn config(&self, script: &str) -> Value {
        let rootless = self.dstack.run_as() != RunAs::Root;
        let args: &[&str] = if rootless {
            &["--rootless", "spec"]
        } else {
            &["spec"]
        };
        self.oci(args).assert_success();
        let path = self.dir.join("config.json");
        let mut config: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        std::fs::remove_file(&path).unwrap();
        config["process"]["args"] = json!(["sh", "-c", script]);
        config["process"]["terminal"] = json!(false);
        config["root"]["readonly"] = json!(false);
        config
    }

    fn write(&self, config: &Value) {
        let path = self.dir.join("config.json");
        std::fs::write(&path, config.to_string()).unwrap();
        self.dstack.give_to_user(&path);
    }

    /// Runs the bundle and expects it refused with a message naming `field`, no container left.
    #[track_caller]
    fn assert_refused(&self, config: &Value, field: &str) -> Output {
        self.assert_refused_and(config, field, || {})
    }

    /// As `assert_refused`, with `host_unchanged` checked first (it fails the test, after putting the
    /// host back, if the bundle reached it).
    #[track_caller]
    fn assert_refused_and(
        &self,
        config: &Value,
        field: &str,
        host_unchanged: impl FnOnce(),
    ) -> Output {
        self.write(config);
        let out = self.oci(&["run", "victim"]);
        host_unchanged();
        out.assert_failure();
        out.assert_stderr_contains(field);
        assert!(
            !self.root.join("victim").exists(),
            "a refused bundle left container state behind"
        );
        out
    }
}

fn add_namespace(config: &mut Value, typ: &str) {
    let list = config["linux"]["namespaces"].as_array_mut().unwrap();
    if !list.iter().any(|n| n["type"] == typ) {
        list.push(json!({ "type": typ }));
    }
}

fn remove_namespace(config: &mut Value, typ: &str) {
    let list = config["linux"]["namespaces"].as_array_mut().unwrap();
    list.retain(|n| n["type"] != typ);
}

fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

#[test]
fn a_sysctl_that_is_not_namespaced_is_refused_and_the_host_keeps_its_value() {
    let host = Path::new("/proc/sys/kernel/panic");
    let before = read_trimmed(host);
    let hostile: i64 = before.parse::<i64>().unwrap_or(0) + 7;
    for mode in MODES {
        let bundle = Bundle::new(mode);
        let mut config = bundle.config("true");
        config["linux"]["sysctl"] = json!({ "kernel.panic": hostile.to_string() });
        bundle.write(&config);
        let out = bundle.oci(&["run", "victim"]);
        // The host first: put it back before failing.
        let after = read_trimmed(host);
        if after != before {
            let _ = std::fs::write(host, &before);
        }
        assert_eq!(
            after, before,
            "{mode:?}: the bundle changed the host's kernel.panic"
        );
        out.assert_failure();
        out.assert_stderr_contains(r#"linux.sysctl["kernel.panic"]: not namespaced"#);
    }
}

#[test]
fn a_network_sysctl_needs_a_network_namespace_of_the_containers_own() {
    // ip_forward is what an attacker wants; the host check reads tcp_keepalive_time, which the bundle
    // sets too and nothing else on a test machine changes (dstack's own networking turns ip_forward on).
    let host = Path::new("/proc/sys/net/ipv4/tcp_keepalive_time");
    let before = read_trimmed(host);
    let hostile = (before.parse::<u64>().unwrap_or(7200) + 13).to_string();
    let unchanged = |mode: RunAs| {
        let after = read_trimmed(host);
        if after != before {
            let _ = std::fs::write(host, &before);
        }
        assert_eq!(
            after, before,
            "{mode:?}: the host's tcp_keepalive_time changed"
        );
    };
    for mode in MODES {
        let bundle = Bundle::new(mode);
        // In the host's network namespace: refused.
        let mut config = bundle
            .config("cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/tcp_keepalive_time");
        config["linux"]["sysctl"] = json!({
            "net.ipv4.ip_forward": "1",
            "net.ipv4.tcp_keepalive_time": hostile,
        });
        remove_namespace(&mut config, "network");
        bundle
            .assert_refused_and(&config, r#"linux.sysctl["net.ipv4.ip_forward"]"#, || {
                unchanged(mode)
            })
            .assert_stderr_contains("host's network namespace");

        // In a network namespace of its own: allowed, and seen inside only.
        add_namespace(&mut config, "network");
        bundle.write(&config);
        let out = bundle.oci(&["run", "own-net"]);
        unchanged(mode);
        out.assert_success();
        assert_eq!(
            out.stdout.split_whitespace().collect::<Vec<_>>(),
            ["1", hostile.as_str()],
            "{mode:?}: {}",
            out.stderr
        );
    }
}

#[test]
fn a_device_path_that_climbs_out_of_the_root_is_refused_and_nothing_is_created() {
    for mode in MODES {
        let bundle = Bundle::new(mode);
        let mut config = bundle.config("true");
        // rootfs/dev/../../tmp/HOSTFILE is the bundle's tmp/, outside the root filesystem.
        config["linux"]["devices"] = json!([{
            "path": "/dev/../../tmp/HOSTFILE", "type": "c", "major": 1, "minor": 3, "fileMode": 438
        }]);
        let planted = bundle.dir.join("tmp/HOSTFILE");
        let nothing_created = || {
            assert!(
                std::fs::symlink_metadata(&planted).is_err(),
                "{mode:?}: {} was created outside the root filesystem",
                planted.display()
            )
        };
        bundle
            .assert_refused_and(&config, "linux.devices[0].path", nothing_created)
            .assert_stderr_contains("climbs out of the root filesystem");
    }
}

#[test]
fn a_mount_destination_that_is_relative_or_climbs_out_is_refused_and_nothing_is_mounted() {
    for mode in MODES {
        let bundle = Bundle::new(mode);
        let mut config = bundle.config("true");
        let base = config["mounts"].as_array().unwrap().len();
        let tmpfs = |dest: &str| json!({ "destination": dest, "type": "tmpfs", "source": "tmpfs" });

        config["mounts"]
            .as_array_mut()
            .unwrap()
            .push(tmpfs("/../../tmp/MOUNTED"));
        let planted = bundle.dir.join("tmp/MOUNTED");
        let nothing_created = || {
            assert!(
                std::fs::symlink_metadata(&planted).is_err(),
                "{mode:?}: {} was created outside the root filesystem",
                planted.display()
            )
        };
        bundle
            .assert_refused_and(
                &config,
                &format!("mounts[{base}].destination"),
                nothing_created,
            )
            .assert_stderr_contains("climbs out of the root filesystem");

        config["mounts"][base] = tmpfs("tmp/relative");
        bundle
            .assert_refused(&config, &format!("mounts[{base}].destination"))
            .assert_stderr_contains("not an absolute path");
    }
}

#[test]
fn a_relative_working_directory_is_refused_naming_process_cwd() {
    for mode in MODES {
        let bundle = Bundle::new(mode);
        let mut config = bundle.config("true");
        config["process"]["cwd"] = json!("tmp");
        bundle
            .assert_refused(&config, "process.cwd")
            .assert_stderr_contains("not an absolute path");
        config["process"]["cwd"] = json!("/../../tmp");
        bundle.assert_refused(&config, "process.cwd");
    }
}

#[test]
fn a_negative_memory_limit_is_refused_naming_the_field() {
    for mode in MODES {
        let bundle = Bundle::new(mode);
        let mut config = bundle.config("true");
        config["linux"]["resources"] = json!({ "memory": { "limit": -5 } });
        bundle
            .assert_refused(&config, "linux.resources.memory.limit")
            .assert_stderr_contains("-5");
        config["linux"]["resources"] = json!({ "pids": { "limit": -7 } });
        bundle.assert_refused(&config, "linux.resources.pids.limit");
    }
}

#[test]
fn an_rlimit_with_soft_above_hard_is_refused_naming_the_field() {
    for mode in MODES {
        let bundle = Bundle::new(mode);
        let mut config = bundle.config("true");
        config["process"]["rlimits"] =
            json!([{ "type": "RLIMIT_NOFILE", "soft": 4096, "hard": 1024 }]);
        bundle
            .assert_refused(&config, "process.rlimits[0] (RLIMIT_NOFILE)")
            .assert_stderr_contains("soft limit 4096 is above hard limit 1024");
    }
}

#[test]
fn a_bundle_cannot_set_up_in_the_hosts_mount_namespace() {
    let mounted_in_bundle = |bundle: &Bundle| {
        let dir = bundle.dir.to_string_lossy().into_owned();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&dir)))
    };
    let bundle = Bundle::new(RunAs::Root);
    let mut config = bundle.config("true");
    // No mount namespace: init would mount /proc, /dev... on the host and pivot the host's root.
    remove_namespace(&mut config, "mount");
    let out = bundle.assert_refused_and(&config, "mount namespace", || {
        assert!(
            !mounted_in_bundle(&bundle),
            "the bundle mounted on the host"
        )
    });
    out.assert_stderr_contains("host's mount namespace");
    // The host's mount namespace (this test's) by path: the same, refused by name.
    let host_ns = format!("/proc/{}/ns/mnt", std::process::id());
    let list = config["linux"]["namespaces"].as_array_mut().unwrap();
    list.push(json!({ "type": "mount", "path": host_ns }));
    bundle
        .assert_refused_and(
            &config,
            &format!("linux.namespaces mount path {host_ns}"),
            || {
                assert!(
                    !mounted_in_bundle(&bundle),
                    "the bundle mounted on the host"
                )
            },
        )
        .assert_stderr_contains("the host's mount namespace");
}

/// The host's cgroup directories named `name` for the test to make: the v1 memory and pids hierarchies
/// (hybrid and v1 hosts), else under the cgroup2 root.
fn host_cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("memory/cgroup.procs").exists() {
        vec![root.join("memory").join(name), root.join("pids").join(name)]
    } else {
        vec![root.join(name)]
    }
}

#[test]
fn a_cgroups_path_naming_a_busy_host_cgroup_is_refused_and_the_cgroup_survives_delete() {
    // The host's workload: a cgroup with a process, which the bundle names to join it (and, at delete,
    // to have it killed and removed).
    let name = format!("dstack-sec-host-{}", std::process::id());
    let dirs = host_cgroup_dirs(&name);
    let mut workload = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let pid = workload.id().to_string();
    for dir in &dirs {
        std::fs::create_dir(dir).unwrap();
        std::fs::write(dir.join("cgroup.procs"), &pid).unwrap();
    }
    let limits_before: Vec<String> = dirs
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("memory.limit_in_bytes")).ok())
        .collect();

    let bundle = Bundle::new(RunAs::Root);
    let mut config = bundle.config("sleep 30");
    config["linux"]["cgroupsPath"] = json!(format!("/{name}"));
    config["linux"]["resources"] =
        json!({ "memory": { "limit": 8 << 20 }, "pids": { "limit": 5 } });
    bundle.write(&config);
    let created = bundle.oci(&["create", "victim"]);
    let deleted = bundle.oci(&["delete", "--force", "victim"]);

    let still_running = workload.try_wait().unwrap().is_none();
    let procs: Vec<String> = dirs
        .iter()
        .map(|d| std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default())
        .collect();
    let limits_after: Vec<String> = dirs
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("memory.limit_in_bytes")).ok())
        .collect();
    let _ = workload.kill();
    let _ = workload.wait();
    for dir in &dirs {
        let _ = std::fs::remove_dir(dir);
    }
    created.assert_failure();
    created.assert_stderr_contains("linux.cgroupsPath");
    created.assert_stderr_contains("already exists");
    deleted.assert_success();
    assert!(still_running, "the host's workload was killed");
    for text in &procs {
        assert_eq!(
            text.trim(),
            pid,
            "the host's cgroup lost its process or gained one"
        );
    }
    assert_eq!(
        limits_before, limits_after,
        "the host's memory limit changed"
    );
    assert!(!bundle.root.join("victim").exists());
}

#[test]
fn a_cgroups_path_that_climbs_or_is_odd_is_refused_naming_the_field() {
    for mode in MODES {
        let bundle = Bundle::new(mode);
        let mut config = bundle.config("true");
        for bad in ["/dstack-sec/../..", "../../memory", "/a//b", "/.x", "/"] {
            config["linux"]["cgroupsPath"] = json!(bad);
            bundle
                .assert_refused(&config, "linux.cgroupsPath")
                .assert_stderr_contains(bad);
        }
    }
}
