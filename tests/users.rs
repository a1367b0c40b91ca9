//! Whose identity a job runs with, through the binary, as root and as unprivileged users: Docker's
//! `-u/--user` (an id, or a name from the image's `/etc/passwd`), and `--userns keep-id` / a workflow's
//! `user: host`, which run the job as the invoking user, so that what it writes on the host is theirs.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use test_support::*;

/// Root, rootless with a subordinate range, rootless without one.
const EVERY_USER: [RunAs; 3] = [RunAs::Root, RunAs::Rootless, RunAs::RootlessNoSubid];

fn pulled(run_as: RunAs) -> PulledImage {
    PulledImage::new(Dstack::new(run_as), "test/img:1", &busybox_image().build())
}

/// `id -u` and `id -g` of the job, as one line.
const IDS: &str = "echo ids=$(id -u):$(id -g)";

/// `-u UID:GID` runs the job as those ids (mapped: root, or a subordinate range).
#[test]
fn a_numeric_user_runs_the_job_as_that_id() {
    for mode in [RunAs::Root, RunAs::Rootless] {
        let s = pulled(mode);
        s.sh_with(&["-u", "1234:1234"], IDS)
            .assert_success()
            .assert_stdout_contains("ids=1234:1234\n");
        s.sh_with(&["--user", "1234"], "id -u")
            .assert_success()
            .assert_stdout_contains("1234\n");
    }
}

/// `-u NAME` is looked up in the image's own `/etc/passwd` (busybox's `app` is 1000:1000, in `staff`).
#[test]
fn a_user_name_comes_from_the_images_passwd() {
    for mode in [RunAs::Root, RunAs::Rootless] {
        let s = pulled(mode);
        s.sh_with(
            &["-u", "app"],
            "echo $(id -un):$(id -u):$(id -g):$(id -G) home=$HOME",
        )
        .assert_success()
        .assert_stdout_contains("app:1000:1000:1000 50 home=/home/app\n");
        s.sh_with(&["-u", "app:staff"], IDS)
            .assert_success()
            .assert_stdout_contains("ids=1000:50\n");
    }
}

/// A name the image does not have is refused before anything runs, with a message that says so.
#[test]
fn an_unknown_user_name_is_refused() {
    let s = pulled(RunAs::Root);
    let out = s.sh_with(&["-u", "no-such-user"], "echo ran");
    out.assert_failure()
        .assert_stderr_contains("user \"no-such-user\" (asked for with --user or `user:`) is not in the image's /etc/passwd");
    assert!(!out.stdout.contains("ran"), "{out}");
    s.sh_with(&["-u", "app:no-such-group"], "echo ran")
        .assert_failure()
        .assert_stderr_contains("group \"no-such-group\"");
    s.sh_with(&["-u", "app:"], "echo ran")
        .assert_failure()
        .assert_stderr_contains("--user");
}

/// `--userns keep-id`: the job's uid and gid are the invoking user's, whoever runs dstack.
#[test]
fn keep_id_runs_the_job_as_the_invoking_user() {
    for mode in EVERY_USER {
        let s = pulled(mode);
        let (uid, gid) = mode.ids();
        let out = s.sh_with(&["--userns", "keep-id"], IDS);
        out.assert_success();
        assert!(
            out.stdout.contains(&format!("ids={uid}:{gid}\n")),
            "{mode:?}: {out}"
        );
    }
}

/// A project whose one workflow is `body` (after `image:`), in `d`'s home.
fn project(d: &Dstack, registry: &TestRegistry, body: &str) -> PathBuf {
    let text = format!(
        "workflows:\n  - name: mine\n    image: {}\n{body}",
        registry.image("test/img:1")
    );
    d.write_home_file("project/.dstack/workflows/mine.yaml", text);
    d.home().join("project")
}

/// `user: host`: a file the job writes into a `mount: true` artifact (a host directory bound into the job) is owned
/// by the invoking user on the host, and the job's `id` says it runs as them.
#[test]
fn a_user_host_job_writes_files_the_user_owns() {
    for mode in EVERY_USER {
        let registry = TestRegistry::plain();
        registry.push("test/img:1", &busybox_image().build());
        let d = Dstack::new(mode);
        let dir = project(
            &d,
            &registry,
            &format!(
                "    user: host\n    artifacts:\n      - path: out\n        mount: true\n    commands:\n      - {IDS}\n      - mkdir -p out && echo x > out/x\n"
            ),
        );
        let out = d.run_in(&dir, &["run", "mine"]);
        out.assert_success();
        let (uid, gid) = mode.ids();
        assert!(
            out.stdout.contains(&format!("ids={uid}:{gid}\n")),
            "{mode:?}: {out}"
        );
        let written = d
            .state_root()
            .join("runs")
            .join(out.run_name())
            .join("artifacts/out/x");
        let meta = std::fs::metadata(&written)
            .unwrap_or_else(|e| panic!("{mode:?}: {}: {e}\n{out}", written.display()));
        assert_eq!(
            (meta.uid(), meta.gid()),
            (uid, gid),
            "{mode:?}: the job's file is not the invoking user's"
        );
    }
}

/// Without `user: host` a rootless job runs as the image's user, mapped as before: its root's files are
/// the user's on the host, its other users' files subordinate ids.
#[test]
fn a_workflow_user_names_the_images_user() {
    let registry = TestRegistry::plain();
    registry.push("test/img:1", &busybox_image().build());
    let d = Dstack::new(RunAs::Rootless);
    let dir = project(
        &d,
        &registry,
        "    user: app\n    artifacts:\n      - path: out\n        mount: true\n    commands:\n      - id -un\n      - mkdir -p out && echo x > out/x\n",
    );
    let out = d.run_in(&dir, &["run", "mine"]);
    out.assert_success().assert_stdout_contains("app\n");
    let written = d
        .state_root()
        .join("runs")
        .join(out.run_name())
        .join("artifacts/out/x");
    let meta = std::fs::metadata(&written).unwrap();
    let (uid, _) = RunAs::Rootless.ids();
    assert_ne!(meta.uid(), uid, "app's file should be a subordinate id's");
}

/// `--dry-run` shows the user the job gets, and for rootless keep-id its own user namespace.
#[test]
fn the_dry_run_shows_the_jobs_user() {
    let s = pulled(RunAs::Rootless);
    let out = s.dstack.run(&[
        "run",
        "docker",
        "--dry-run",
        &s.image,
        "-u",
        "1234:55",
        "-c",
        "id",
    ]);
    out.assert_success();
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(plan["spec"]["process"]["user"]["uid"], 1234, "{out}");
    assert_eq!(plan["spec"]["process"]["user"]["gid"], 55, "{out}");

    let out = s.dstack.run(&[
        "run",
        "docker",
        "--dry-run",
        &s.image,
        "--userns",
        "keep-id",
        "-c",
        "id",
    ]);
    out.assert_success();
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let (uid, _) = RunAs::Rootless.ids();
    assert_eq!(plan["spec"]["process"]["user"]["uid"], uid, "{out}");
    let namespaces = plan["spec"]["linux"]["namespaces"].to_string();
    assert!(namespaces.contains("\"user\""), "{out}");
    assert_eq!(
        plan["spec"]["annotations"]["run.oci.keep_original_groups"], "1",
        "{out}"
    );
}

/// Through a volume (`-v`), the story users care about: with `--userns keep-id` what the job writes into
/// the host directory is the invoking user's there, as root, rootless and rootless without subordinate ids.
/// Without it, an image running as root writes as the user too when rootless (its root is the user), and
/// as root when dstack runs as root.
#[test]
fn a_file_written_through_a_volume_belongs_to_the_invoking_user_with_keep_id() {
    for mode in EVERY_USER {
        let s = pulled(mode);
        let (uid, gid) = mode.ids();
        let dir = s.dstack.home().join("volume");
        std::fs::create_dir_all(&dir).unwrap();
        s.dstack.give_to_user(&dir);
        let volume = format!("{}:/out", dir.display());
        for (flags, file, owner) in [
            (vec!["--userns", "keep-id"], "kept", (uid, gid)),
            (vec![], "plain", (uid, gid)),
        ] {
            let mut args = vec!["-v", volume.as_str()];
            args.extend(flags.iter().copied());
            let out = s.sh_with(&args, &format!("echo x > /out/{file}"));
            out.assert_success();
            let meta = std::fs::metadata(dir.join(file))
                .unwrap_or_else(|e| panic!("{mode:?} {flags:?}: {e}\n{out}"));
            assert_eq!(
                (meta.uid(), meta.gid()),
                owner,
                "{mode:?} {flags:?}: the file the job wrote through the volume"
            );
        }
    }
}
