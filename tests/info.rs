//! `dstack info`: every item the issue lists is reported, as root and rootless, and each value matches what
//! the test reads from the machine itself; the probes leave nothing behind.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde_json::Value;
use test_support::*;

/// The keys of each section of `dstack info --json`.
const KEYS: &[(&str, &[&str])] = &[
    ("version", &["version", "commit", "build"]),
    ("kernel", &["release", "machine"]),
    (
        "cgroup",
        &["version", "controllers", "delegated", "limits_enforced"],
    ),
    (
        "user_namespaces",
        &[
            "allowed",
            "max_user_namespaces",
            "user",
            "subuid",
            "subgid",
            "newuidmap",
            "newgidmap",
        ],
    ),
    (
        "overlay",
        &[
            "kernel_overlay",
            "error",
            "driver",
            "dev_fuse",
            "fuse_overlayfs",
        ],
    ),
    (
        "network",
        &[
            "mode",
            "nf_tables",
            "iptables",
            "dev_net_tun",
            "pasta",
            "slirp4netns",
        ],
    ),
    ("gpu", &["nvidia_driver", "gpus", "cdi_specs"]),
    ("slurm", &["commands", "cluster"]),
    (
        "state_root",
        &[
            "path",
            "exists",
            "mode",
            "owner",
            "blobs_bytes",
            "free_bytes",
        ],
    ),
];

fn info_json(dstack: &Dstack) -> Value {
    let out = dstack.run(&["info", "--json"]);
    out.assert_success();
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("dstack info --json is not JSON ({e}):\n{}", out.stdout))
}

/// The cgroup layout as the test sees it: the file system type of /sys/fs/cgroup (and of `unified/` beside
/// v1 hierarchies).
fn cgroup_layout() -> &'static str {
    let fs_type = |p: &str| nix::sys::statfs::statfs(p).map(|s| s.filesystem_type());
    match fs_type("/sys/fs/cgroup") {
        Ok(t) if t == nix::sys::statfs::CGROUP2_SUPER_MAGIC => "v2",
        Ok(_)
            if fs_type("/sys/fs/cgroup/unified")
                .is_ok_and(|t| t == nix::sys::statfs::CGROUP2_SUPER_MAGIC) =>
        {
            "hybrid"
        }
        Ok(_) => "v1",
        Err(_) => "none",
    }
}

/// The user's first range in a subuid/subgid file, as `{start, count}`.
fn subordinate(file: &str, user: &str, uid: u32) -> Value {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .find_map(|line| {
            let f: Vec<&str> = line.trim().split(':').collect();
            let ours = f.len() == 3 && (f[0] == user || f[0] == uid.to_string());
            let start: u64 = f.get(1)?.parse().ok()?;
            let count: u64 = f.get(2)?.parse().ok()?;
            (ours && count > 0).then(|| serde_json::json!({ "start": start, "count": count }))
        })
        .unwrap_or(Value::Null)
}

fn check_info(dstack: Dstack) {
    let info = info_json(&dstack);
    for (section, keys) in KEYS {
        for key in *keys {
            assert!(
                info[section].get(key).is_some(),
                "dstack info --json lacks {section}.{key}:\n{info:#}"
            );
        }
    }
    assert!(info["hints"].is_object(), "no hints object:\n{info:#}");

    let uts = nix::sys::utsname::uname().expect("uname");
    assert_eq!(info["kernel"]["release"], uts.release().to_str().unwrap());
    assert_eq!(info["kernel"]["machine"], uts.machine().to_str().unwrap());
    assert_eq!(info["version"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["version"]["build"], "native");
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    assert_eq!(info["version"]["commit"], commit.as_str());

    let layout = cgroup_layout();
    assert_eq!(info["cgroup"]["version"], layout, "{info:#}");
    let rootless = dstack.run_as() != RunAs::Root;
    if rootless && layout != "v2" {
        // v1 controllers cannot be delegated: the limits are not enforced, and info says what to do.
        assert_eq!(info["cgroup"]["limits_enforced"], false, "{info:#}");
        let hint = info["hints"]["cgroup"].as_str().unwrap_or_default();
        assert!(hint.contains("Delegate=yes"), "cgroup hint: {hint:?}");
    }
    if !rootless {
        let controllers = info["cgroup"]["controllers"].to_string();
        let all = ["cpu", "memory", "pids"]
            .iter()
            .all(|c| controllers.contains(&format!("\"{c}\"")));
        assert_eq!(info["cgroup"]["limits_enforced"], all, "{info:#}");
    }

    let (uid, _) = dstack.run_as().ids();
    let user = dstack.run_as().user_name().unwrap_or("root");
    assert_eq!(info["user_namespaces"]["user"], user);
    assert_eq!(
        info["user_namespaces"]["subuid"],
        subordinate("/etc/subuid", user, uid)
    );
    assert_eq!(
        info["user_namespaces"]["subgid"],
        subordinate("/etc/subgid", user, uid)
    );
    match dstack.run_as() {
        RunAs::Rootless => assert!(info["user_namespaces"]["subuid"].is_object()),
        RunAs::RootlessNoSubid => {
            assert!(info["user_namespaces"]["subuid"].is_null());
            let hint = info["hints"]["user_namespaces"]
                .as_str()
                .unwrap_or_default();
            assert!(hint.contains("/etc/subuid"), "subuid hint: {hint:?}");
        }
        RunAs::Root => {}
    }
    // The machine the tests run on has unprivileged user namespaces and kernel overlay (the rootless tests
    // need them), so the probes must find them.
    assert_eq!(info["user_namespaces"]["allowed"], true, "{info:#}");
    assert_eq!(info["overlay"]["kernel_overlay"], true, "{info:#}");
    assert_eq!(info["overlay"]["driver"], "overlay");
    let mode = info["network"]["mode"].as_str().unwrap_or_default();
    if rootless {
        assert!(["pasta", "slirp4netns", "host"].contains(&mode), "{info:#}");
        if info["network"]["dev_net_tun"] == false {
            assert_eq!(mode, "host", "no usable /dev/net/tun, yet {mode}");
        }
    } else {
        assert_eq!(mode, "bridge");
        assert_eq!(info["network"]["nf_tables"], true, "{info:#}");
    }

    let state = dstack.state_root();
    let meta = std::fs::metadata(&state).expect("state root");
    assert_eq!(info["state_root"]["path"], state.to_str().unwrap());
    assert_eq!(info["state_root"]["exists"], true);
    assert_eq!(
        info["state_root"]["mode"],
        format!("{:04o}", meta.mode() & 0o7777).as_str()
    );
    assert_eq!(info["state_root"]["owner"], meta.uid());
    // The overlay probe's scratch directory is gone, and info made nothing else.
    assert_eq!(
        std::fs::read_dir(&state).unwrap().count(),
        0,
        "dstack info left something in the state root"
    );

    let text = dstack.run(&["info"]);
    text.assert_success();
    for (section, _) in KEYS {
        assert!(
            text.stdout.lines().any(|l| l.starts_with(section)),
            "dstack info has no {section} line:\n{}",
            text.stdout
        );
    }
}

#[test]
fn info_reports_every_item_as_root() {
    check_info(Dstack::root());
}

#[test]
fn info_reports_every_item_rootless() {
    check_info(Dstack::rootless());
}

#[test]
fn info_reports_every_item_rootless_without_subordinate_ids() {
    check_info(Dstack::rootless_nosubid());
}

#[test]
fn info_makes_no_state_root() {
    for dstack in [Dstack::root(), Dstack::rootless()] {
        let missing = dstack.state_root().join("not-yet");
        let dstack = dstack.env("DSTACK_HOME", &missing);
        let info = info_json(&dstack);
        assert_eq!(info["state_root"]["exists"], false);
        assert_eq!(info["state_root"]["path"], missing.to_str().unwrap());
        assert!(
            !Path::new(&missing).exists(),
            "dstack info made the state root {}",
            missing.display()
        );
    }
}

#[test]
fn version_names_the_commit_and_the_build() {
    let out = Dstack::root().run(&["--version"]);
    out.assert_success();
    assert!(
        out.stdout.contains("(commit ") && out.stdout.contains(", native build)"),
        "dstack --version: {}",
        out.stdout
    );
}
