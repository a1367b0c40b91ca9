//! Private state (issue 15, items 2, 5, 6): what one user pulls and runs is out of every other local user's
//! reach, the store holds no device node, and a job never runs as root by naming the id 4294967295.
//!
//! The attacker is a second local user: after the victim (root, or `dstack-test` rootless) pulled an image
//! with a setuid-root shell and device nodes into a state root under a world-traversable directory, and
//! ran a job, the attacker tries to list the store, run the setuid file by its full path and read the run's
//! output and record. Every attempt must end in EACCES.

use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use test_support::dstack::{TEST_USER, TEST_USER_NOSUBID};
use test_support::*;

const PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs `program args` as the local user `user`, with a clean environment (what any account on the
/// machine can do). Through a shell: setpriv's own exec still has root's effective capabilities, so a
/// program it names by path would be found through directories the user cannot search.
fn as_user(user: &str, program: &str, args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid", user, "--regid", user, "--init-groups", "--"])
        .args(["/bin/sh", "-c", "exec \"$0\" \"$@\""])
        .arg(program)
        .args(args)
        .env_clear()
        .env("PATH", PATH_ENV)
        .current_dir("/")
        .output()
        .expect("run setpriv")
}

/// Checks that `user` running `program args` is refused with EACCES and gets nothing out.
#[track_caller]
fn assert_denied(user: &str, program: &str, args: &[&str]) {
    let out = as_user(user, program, args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("Permission denied") && stdout.is_empty(),
        "{user} ran {program} {args:?}: expected EACCES\n--- stdout\n{stdout}--- stderr\n{stderr}"
    );
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o7777
}

/// Every path under `dir` (not following links).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            walk(&path, out);
        }
        out.push(path);
    }
}

/// An image whose extra layer holds a setuid-root busybox (`/opt/sh`) and the host's disk and memory as
/// device nodes.
fn hostile_image(registry: &TestRegistry, name: &str) -> String {
    let busybox = std::fs::read(busybox::BUSYBOX_BIN).expect("read busybox");
    let layer = LayerBuilder::new()
        .dir("opt")
        .file_with("opt/sh", &busybox, Meta::mode(0o4755).owner(0, 0))
        .block_device("dev/sda", 8, 0)
        .char_device("dev/mem", 1, 1)
        .char_device("dev/kmsg", 1, 11)
        .build(Compression::Gzip);
    registry.push(name, &busybox_image().layer(layer).build());
    registry.image(name)
}

/// The victim's state root under a directory every user may traverse, as /var/lib or a home is.
fn world_traversable(dstack: &Dstack) -> PathBuf {
    let base = dstack.state_root().parent().unwrap().to_path_buf();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
    dstack.state_root()
}

/// The setuid copy of busybox in the store (found as root, as an attacker would guess the public diff_id).
fn setuid_file_in_store(state: &Path) -> PathBuf {
    let mut all = Vec::new();
    walk(&state.join("store"), &mut all);
    all.into_iter()
        .find(|p| p.ends_with("fs/opt/sh"))
        .expect("the setuid file is in the store")
}

#[track_caller]
fn assert_no_device_nodes(state: &Path) {
    let mut all = Vec::new();
    walk(&state.join("store"), &mut all);
    for path in all {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let ft = meta.file_type();
        let whiteout = ft.is_char_device() && meta.rdev() == 0;
        let device = ft.is_block_device() || (ft.is_char_device() && !whiteout);
        assert!(
            !device,
            "a device node is in the store: {} (rdev {:#x})",
            path.display(),
            meta.rdev()
        );
    }
}

/// The victim pulls and runs; `attacker` then tries every way in.
fn attack_the_store(victim: Dstack, attacker: &str) {
    let registry = TestRegistry::plain();
    let image = hostile_image(&registry, "sec/suid:1");
    victim.trust(&registry);
    let state = world_traversable(&victim);
    victim.run(&["pull", &image]).assert_success();
    let run = victim.run(&["run", "docker", &image, "-c", "echo victim-output-7f3a"]);
    run.assert_success()
        .assert_stdout_contains("victim-output-7f3a");
    let name = run.run_name();
    let workflow = format!(
        "workflows:\n  - name: w\n    provider: docker\n    image: {image}\n    commands: [\"true\"]\n"
    );
    let project = victim.write_home_file("proj/.dstack/workflows/w.yaml", workflow);
    let project = project.ancestors().nth(3).unwrap();
    victim
        .run_in(project, &["secrets", "add", "TOKEN", "victim-secret-7f3a"])
        .assert_success();
    let setuid = setuid_file_in_store(&state);
    assert_eq!(mode(&setuid), 0o4755, "the layer keeps its setuid bit");
    assert_no_device_nodes(&state);

    for dir in ["", "store", "runs", "containers"] {
        assert_eq!(mode(&state.join(dir)), 0o700, "state root/{dir}");
    }
    let run_dir = state.join("runs").join(&name);
    assert_eq!(mode(&run_dir), 0o700);
    for file in ["output.log", "state.json"] {
        assert_eq!(mode(&run_dir.join(file)), 0o600, "{file}");
    }

    let s = |p: &Path| p.to_string_lossy().into_owned();
    assert_denied(attacker, "ls", &[&s(&state)]);
    assert_denied(attacker, "ls", &[&s(&state.join("store/layers"))]);
    assert_denied(attacker, &s(&setuid), &["-c", "id -u"]);
    assert_denied(attacker, "ls", &[&s(&state.join("runs"))]);
    assert_denied(attacker, "cat", &[&s(&run_dir.join("output.log"))]);
    assert_denied(attacker, "cat", &[&s(&run_dir.join("state.json"))]);
    let mut secrets = Vec::new();
    walk(&state.join("secrets"), &mut secrets);
    assert!(!secrets.is_empty(), "the secret was stored");
    for file in secrets {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
        assert_denied(attacker, "cat", &[&s(&file)]);
    }
}

#[test]
fn another_user_cannot_reach_roots_store_or_runs() {
    attack_the_store(Dstack::root(), TEST_USER);
}

#[test]
fn another_user_cannot_reach_a_rootless_users_store_or_runs() {
    attack_the_store(Dstack::rootless(), TEST_USER_NOSUBID);
}

/// A state root an older dstack made 0755 is closed by the next command, whatever it is.
#[test]
fn an_open_state_root_is_closed_on_first_use() {
    for dstack in [Dstack::root(), Dstack::rootless()] {
        let state = dstack.state_root();
        for dir in ["store", "store/layers", "runs", "containers"] {
            std::fs::create_dir_all(state.join(dir)).unwrap();
        }
        for dir in ["", "store", "runs", "containers"] {
            std::fs::set_permissions(state.join(dir), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        dstack.give_to_user(&state);
        dstack.run(&["ps"]).assert_success();
        for dir in ["", "store", "runs", "containers"] {
            assert_eq!(
                mode(&state.join(dir)),
                0o700,
                "{:?}: state root/{dir}",
                dstack.run_as()
            );
        }
    }
}

/// A state root someone else owns (planted by them, or shared by mistake) is refused, not used.
#[test]
fn a_state_root_owned_by_another_user_is_refused() {
    let (test_uid, test_gid) = RunAs::Rootless.ids();
    for (dstack, owner) in [
        (Dstack::root(), (test_uid, test_gid)),
        (Dstack::rootless(), (0, 0)),
    ] {
        let state = dstack.state_root();
        std::os::unix::fs::chown(&state, Some(owner.0), Some(owner.1)).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
        let out = dstack.run(&["images"]);
        out.assert_failure()
            .assert_stderr_contains(&format!("belongs to user {}", owner.0))
            .assert_stderr_contains("DSTACK_HOME");
        assert!(
            std::fs::read_dir(&state).unwrap().next().is_none(),
            "{:?}: something was made in someone else's state root",
            dstack.run_as()
        );
    }
}

/// `User: 4294967295` is `(uid_t)-1`: setresuid(-1) leaves the job as root. Refused, root and rootless.
#[test]
fn the_user_id_4294967295_is_refused() {
    let registry = TestRegistry::plain();
    let images: Vec<String> = ["4294967295", "0:4294967295", "4294967295:0"]
        .iter()
        .enumerate()
        .map(|(i, user)| {
            let name = format!("sec/minus-one:{i}");
            registry.push(&name, &busybox_image().user(user).build());
            registry.image(&name)
        })
        .collect();
    for dstack in [Dstack::root(), Dstack::rootless()] {
        dstack.trust(&registry);
        for image in &images {
            let out = dstack.run(&["run", "docker", image, "-c", "id -u; id -g"]);
            out.assert_failure().assert_stderr_contains("4294967295");
            assert!(
                !out.stdout.lines().any(|l| l.trim() == "0"),
                "{:?} {image}: the job ran as root:\n{}",
                dstack.run_as(),
                out.stdout
            );
        }
    }
}

/// Rootless without subordinate ids only the user itself is mapped: another id is refused up front.
#[test]
fn a_user_id_outside_the_rootless_map_is_refused() {
    let registry = TestRegistry::plain();
    registry.push("sec/unmapped:1", &busybox_image().user("200000").build());
    let image = registry.image("sec/unmapped:1");
    let dstack = Dstack::rootless_nosubid();
    dstack.trust(&registry);
    let out = dstack.run(&["run", "docker", &image, "-c", "id -u"]);
    out.assert_failure()
        .assert_stderr_contains("user id 200000")
        .assert_stderr_contains("not mapped");
    assert!(out.stdout.is_empty(), "the job ran:\n{}", out.stdout);
}

const OCI_BIN: &str = env!("CARGO_BIN_EXE_dstack-oci");

/// A dstack-oci bundle whose `process.user.uid` is 4294967295 is refused, root and rootless.
#[test]
fn a_bundle_with_uid_4294967295_is_refused() {
    for dstack in [Dstack::root(), Dstack::rootless()] {
        let bundle = dstack.home().join("bundle");
        test_support::oci::unpack_busybox(&bundle.join("rootfs"));
        let mut config = serde_json::to_value(oci_spec::runtime::Spec::default()).unwrap();
        config["root"] = serde_json::json!({"path": "rootfs", "readonly": false});
        config["process"]["terminal"] = false.into();
        config["process"]["args"] = serde_json::json!(["sh", "-c", "id -u"]);
        config["process"]["user"]["uid"] = u32::MAX.into();
        if dstack.run_as() != RunAs::Root {
            let linux = &mut config["linux"];
            linux["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"type": "user"}));
            linux["resources"] = serde_json::Value::Null;
            config["mounts"]
                .as_array_mut()
                .unwrap()
                .retain(|m| m["type"] != "cgroup");
        }
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(&config).unwrap(),
        )
        .unwrap();
        dstack.give_to_user(&bundle);
        let root = dstack
            .state_root()
            .join("oci")
            .to_string_lossy()
            .into_owned();
        let mut cmd = dstack.program_command(OCI_BIN, &["--root", &root, "run", "minus-one"]);
        cmd.current_dir(&bundle);
        let out = Output::of(cmd);
        out.assert_failure().assert_stderr_contains("4294967295");
        assert!(
            !out.stdout.lines().any(|l| l.trim() == "0"),
            "{:?}: the job ran as root:\n{}",
            dstack.run_as(),
            out.stdout
        );
    }
}
