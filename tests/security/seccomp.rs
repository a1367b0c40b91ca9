//! Issue 15 item 3: a job gets Docker's default seccomp profile, as root and rootless. A crafted image
//! carries a static probe (`seccomp_probe.c`, built here with the host's C compiler) for what busybox has
//! no applet for: the kernel keyring, `clone` with namespace flags, `clone3`, and the i386 and x32 ABIs.
//! Each denial is checked next to a control run (`--security-opt seccomp=unconfined`) where the same call
//! succeeds, so a probe that cannot make the call never passes for a filter that blocks it.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use test_support::*;

const MODES: [RunAs; 2] = [RunAs::Root, RunAs::Rootless];
const UNCONFINED: &str = "--security-opt=seccomp=unconfined";

/// The probe, compiled once per test binary.
fn probe_binary() -> &'static [u8] {
    static PROBE: OnceLock<Vec<u8>> = OnceLock::new();
    PROBE.get_or_init(|| {
        let source = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/security/seccomp_probe.c"
        );
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("probe");
        let status = Command::new("cc")
            .args(["-static", "-no-pie", "-O1", "-o"])
            .arg(&out)
            .arg(source)
            .status()
            .expect("run cc: install gcc and libc6-dev (scripts/setup.d/seccomp.packages)");
        assert!(status.success(), "cc {source} failed");
        std::fs::read(&out).unwrap()
    })
}

/// Busybox with the probe at /bin/probe, pulled by `run_as`.
fn setup(run_as: RunAs) -> PulledImage {
    let layer = LayerBuilder::new()
        .dir("mnt")
        .executable("bin/probe", probe_binary())
        .build(Compression::Gzip);
    let image = busybox_image().layer(layer).build();
    PulledImage::new(Dstack::new(run_as), "test/probe:1", &image)
}

/// A key description no other test or run uses.
fn key_name(what: &str) -> String {
    format!(
        "dstack-seccomp-{what}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// The serial number of `description` in this (root) process's user keyring: the host's view.
fn host_key(description: &str) -> Option<i64> {
    let ty = c"user";
    let desc = std::ffi::CString::new(description).unwrap();
    // SAFETY: keyctl(KEYCTL_SEARCH) reads two NUL-terminated strings.
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            libc::KEYCTL_SEARCH,
            libc::KEY_SPEC_USER_KEYRING,
            ty.as_ptr(),
            desc.as_ptr(),
            0,
        )
    };
    (r >= 0).then_some(r)
}

fn drop_host_key(id: i64) {
    // SAFETY: KEYCTL_INVALIDATE takes a key serial number.
    unsafe { libc::syscall(libc::SYS_keyctl, libc::KEYCTL_INVALIDATE, id) };
}

/// `Seccomp:` of /proc/self/status in the job: 2 (filtered), 0 (none).
fn seccomp_mode(out: &Output) -> &str {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no Seccomp line:\n{out}"))
}

#[test]
fn a_job_is_filtered_and_cannot_make_namespaces_or_mount() {
    for mode in MODES {
        let s = setup(mode);
        let script = "grep Seccomp: /proc/self/status; \
            unshare -U true; echo unshare-U=$?; unshare -m true; echo unshare-m=$?; \
            mount -t tmpfs none /mnt; echo mount=$?; probe clone-newuser; probe clone3; echo end";
        let out = s.sh_with(&[], script);
        out.assert_success();
        assert_eq!(seccomp_mode(&out), "2", "{mode:?}: {out}");
        for ok in ["unshare-U=0", "unshare-m=0", "mount=0"] {
            assert!(!out.stdout.contains(ok), "{mode:?}: {ok}:\n{out}");
        }
        // busybox's mount words EPERM as "permission denied (are you root?)".
        assert_eq!(
            out.stderr.matches("Operation not permitted").count(),
            2,
            "{mode:?}: unshare -U and unshare -m each fail with EPERM:\n{out}"
        );
        assert!(
            out.stderr.contains("mount: permission denied"),
            "{mode:?}: {out}"
        );
        assert!(
            out.stdout
                .contains("clone(CLONE_NEWUSER): Operation not permitted"),
            "{mode:?}: {out}"
        );
        // ENOSYS, so that libc falls back to clone, whose flags the filter can read.
        assert!(
            out.stdout.contains("clone3: Function not implemented"),
            "{mode:?}: {out}"
        );
        // Control: the same image unconfined makes a user namespace.
        let control = s.sh_with(
            &[UNCONFINED],
            "grep Seccomp: /proc/self/status; unshare -U true && echo made; probe clone-newuser",
        );
        control.assert_success();
        assert_eq!(seccomp_mode(&control), "0", "{mode:?}: {control}");
        if mode == RunAs::Root {
            assert!(control.stdout.contains("made"), "{mode:?}: {control}");
            assert!(
                control.stdout.contains("clone(CLONE_NEWUSER): ok"),
                "{mode:?}: {control}"
            );
        }
    }
}

/// A root job added keys to host root's keyring, where the next job (and root on the host) found them.
#[test]
fn a_job_cannot_reach_the_kernel_keyring() {
    for mode in MODES {
        let s = setup(mode);
        let name = key_name("default");
        let add = s.sh_with(
            &[],
            &format!("probe add {name}; probe i386-add {name}; echo $?"),
        );
        assert!(
            add.stdout.contains("add_key: Operation not permitted"),
            "{mode:?}: {add}"
        );
        // The i386 ABI is no way around it: the process is killed (SIGSYS, 128 + 31).
        assert!(
            add.stdout.ends_with("159\n"),
            "{mode:?}: i386 add_key not killed: {add}"
        );
        let find = s.sh_with(&[], &format!("probe find {name}"));
        assert!(
            find.stdout
                .contains("keyctl search: Operation not permitted"),
            "{mode:?}: {find}"
        );
        if mode == RunAs::Root {
            assert_eq!(host_key(&name), None, "the job's key reached the host");
        }

        // Control: unconfined, the same probe reaches the keyring (root: host root's own).
        let name = key_name("control");
        let add = s.sh_with(&[UNCONFINED], &format!("probe add {name}"));
        assert!(add.stdout.contains("add_key: ok"), "{mode:?}: {add}");
        if mode == RunAs::Root {
            let id = host_key(&name).expect("unconfined, the key is in host root's keyring");
            drop_host_key(id);
        }
    }
}

/// A profile that allows everything but `mkdir` cannot be bypassed through the i386 or x32 ABIs.
#[test]
fn a_profile_file_applies_and_other_abis_cannot_bypass_it() {
    let profile = r#"{
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["reboot"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_BOOT"]}}
        ]
    }"#;
    for mode in MODES {
        let s = setup(mode);
        let file = s.dstack.write_home_file("profiles/no-mkdir.json", profile);
        let flag = format!("--security-opt=seccomp={}", file.display());
        let script = "mkdir /x; echo mkdir=$?; touch /y && echo touched; \
            probe i386-mkdir /i386; echo i386=$?; probe x32-mkdir /x32; echo x32=$?; \
            ls -d /x /i386 /x32 2>&1; true";
        let out = s.sh_with(&[&flag], script);
        out.assert_success();
        assert!(
            out.stderr.contains("Operation not permitted") && out.stdout.contains("mkdir=1"),
            "{mode:?}: {out}"
        );
        assert!(out.stdout.contains("touched"), "{mode:?}: {out}");
        assert!(out.stdout.contains("i386=159"), "{mode:?}: {out}");
        assert!(out.stdout.contains("x32=159"), "{mode:?}: {out}");
        assert_eq!(
            out.stdout.matches("No such file or directory").count(),
            3,
            "{mode:?}: a directory was made: {out}"
        );
        // Relative to the current directory, as Docker has it.
        let relative = s.dstack.run_in(
            &s.dstack.home().join("profiles"),
            &[
                "run",
                "docker",
                &s.image,
                "--security-opt",
                "seccomp=no-mkdir.json",
                "-c",
                "mkdir /x",
            ],
        );
        relative.assert_failure();
        assert!(
            relative.stderr.contains("Operation not permitted"),
            "{mode:?}: {relative}"
        );
    }
}

/// Profiles that are not what they claim are refused before anything runs, naming the file and where.
#[test]
fn a_hostile_profile_file_is_refused_with_its_name_and_place() {
    let long_action = "X".repeat(100_000);
    let cases: [(&str, String, &[&str]); 4] = [
        ("not-json.json", "this is not json".into(), &["expected", "line 1 column"]),
        (
            "bad-action.json",
            "{\"defaultAction\": \"SCMP_ACT_ALLOW\",\n \"syscalls\": [{\"names\": [\"mkdir\"], \"action\": \"SCMP_ACT_BOGUS\"}]}".into(),
            &["SCMP_ACT_BOGUS", "line 2"],
        ),
        (
            "long-action.json",
            format!("{{\"defaultAction\": \"{long_action}\"}}"),
            &["unknown variant", "line 1"],
        ),
        (
            "huge.json",
            format!("{{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"x\": \"{}\"}}", "a".repeat(2 << 20)),
            &["larger than"],
        ),
    ];
    let s = setup(RunAs::Rootless);
    for (name, text, needles) in &cases {
        let file = s.dstack.write_home_file(&format!("profiles/{name}"), text);
        let flag = format!("--security-opt=seccomp={}", file.display());
        let out = s.sh_with(&[&flag], "echo started");
        out.assert_failure();
        assert!(!out.stdout.contains("started"), "{name}: {out}");
        assert!(
            !out.stderr.starts_with("run "),
            "{name}: refused after a run began: {out}"
        );
        assert!(
            out.stderr.contains(&*file.to_string_lossy()),
            "{name}: {out}"
        );
        for needle in *needles {
            assert!(out.stderr.contains(needle), "{name}: no {needle:?}: {out}");
        }
        assert!(
            out.stderr.len() < 1000,
            "{name}: the message echoes the file: {} bytes",
            out.stderr.len()
        );
    }
    let missing = s.sh_with(&["--security-opt=seccomp=/nonexistent/p.json"], "true");
    missing.assert_failure();
    assert!(missing.stderr.contains("/nonexistent/p.json"), "{missing}");
    let other = s.sh_with(&["--security-opt=apparmor=unconfined"], "true");
    other.assert_failure();
    assert!(
        other.stderr.contains("apparmor=unconfined") && other.stderr.contains("seccomp=unconfined"),
        "{other}"
    );
}

fn spec_seccomp(plan: &str) -> serde_json::Value {
    let plan: serde_json::Value = serde_json::from_str(plan).unwrap();
    plan["spec"]["linux"]["seccomp"].clone()
}

#[test]
fn dry_run_shows_the_profile() {
    let s = setup(RunAs::Root);
    let out = s
        .dstack
        .run(&["run", "docker", &s.image, "--dry-run", "-c", "true"]);
    out.assert_success();
    let seccomp = spec_seccomp(&out.stdout);
    assert_eq!(seccomp["defaultAction"], "SCMP_ACT_ERRNO", "{out}");
    let names: Vec<&str> = seccomp["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "SCMP_ACT_ALLOW")
        .flat_map(|r| r["names"].as_array().unwrap())
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(names.contains(&"read") && names.contains(&"chroot"));
    for denied in [
        "add_key",
        "keyctl",
        "unshare",
        "setns",
        "mount",
        "bpf",
        "kexec_load",
    ] {
        assert!(!names.contains(&denied), "{denied} is allowed");
    }
    let out = s.dstack.run(&[
        "run",
        "docker",
        &s.image,
        "--dry-run",
        UNCONFINED,
        "-c",
        "true",
    ]);
    out.assert_success();
    assert!(spec_seccomp(&out.stdout).is_null(), "{out}");
}

/// A workflow's `security_opt`: a project profile applies, `--dry-run` says which, a bad value is refused
/// at its line.
fn workflow_security_opt(d: Dstack) {
    let registry = busybox_registry();
    let probe = |name: &str, opt: &str| {
        busybox_workflow(
            &registry,
            name,
            &format!(
                "    security_opt: {opt}\n    commands:\n      - grep Seccomp /proc/self/status\n      - mkdir /x\n"
            ),
        )
    };
    let text = format!(
        "{}{}{}",
        probe("filtered", "[seccomp=profiles/no-mkdir.json]"),
        probe("free", "[seccomp=unconfined]")
            .split_once("workflows:\n")
            .unwrap()
            .1,
        busybox_workflow(
            &registry,
            "plain",
            "    commands: [grep Seccomp /proc/self/status]\n"
        )
        .split_once("workflows:\n")
        .unwrap()
        .1,
    );
    d.write_home_file("project/.dstack/workflows/w.yaml", &text);
    d.write_home_file(
        "project/profiles/no-mkdir.json",
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
    );
    let dir: PathBuf = d.home().join("project");
    let out = d.run_in(&dir, &["run", "filtered"]);
    out.assert_failure();
    assert!(out.stdout.contains("Seccomp:\t2"), "{out}");
    assert!(out.stderr.contains("Operation not permitted"), "{out}");
    let out = d.run_in(&dir, &["run", "free"]);
    out.assert_success();
    assert!(out.stdout.contains("Seccomp:\t0"), "{out}");
    let out = d.run_in(&dir, &["run", "plain"]);
    out.assert_success();
    assert!(out.stdout.contains("Seccomp:\t2"), "{out}");

    for (workflow, says) in [
        (
            "plain",
            "Docker's default profile: default action SCMP_ACT_ERRNO",
        ),
        ("free", "unconfined"),
        ("filtered", "no-mkdir.json"),
    ] {
        let out = d.run_in(&dir, &["run", "--dry-run", workflow]);
        out.assert_success();
        let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let line = plan["seccomp"].as_str().unwrap_or_default();
        assert!(line.contains(says), "{workflow}: {line}\n{out}");
    }

    d.write_home_file(
        "project/.dstack/workflows/w.yaml",
        busybox_workflow(
            &registry,
            "bad",
            "    commands: [true]\n    security_opt: [apparmor=x]\n",
        ),
    );
    let out = d.run_in(&dir, &["run", "bad"]);
    out.assert_failure();
    assert!(
        out.stderr.contains("w.yaml")
            && out.stderr.contains("security_opt")
            && out.stderr.contains("apparmor=x"),
        "{out}"
    );
}

mod workflow_security_opt {
    #[test]
    fn as_root() {
        super::workflow_security_opt(super::Dstack::root());
    }
    #[test]
    fn rootless() {
        super::workflow_security_opt(super::Dstack::rootless());
    }
}
