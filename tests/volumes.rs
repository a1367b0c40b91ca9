//! Volumes: host paths bound into the job (`-v HOST:CONTAINER[:ro]`, a workflow's `volumes:`). What the
//! job writes lands on the host; `:ro` holds against root in the job, submounts included; an image whose
//! target is a symlink out of its root leaves the host alone; a missing host path or a target over
//! `/proc` or a relative one is refused naming the entry, with nothing made on the host. Root and rootless.

use std::path::{Path, PathBuf};

use test_support::*;

/// A host directory in the user's home, owned by the user dstack runs as, holding `files`.
fn host_dir(d: &Dstack, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = d.home().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for (file, text) in files {
        std::fs::write(dir.join(file), text).unwrap();
    }
    d.give_to_user(&dir);
    dir
}

/// busybox from a registry, pulled by `d`; the registry lives as long as the returned value.
fn pulled_busybox(d: &Dstack) -> (TestRegistry, String) {
    let registry = busybox_registry();
    let image = registry.image("demo/busybox:latest");
    d.run(&["pull", "-q", &image]).assert_success();
    (registry, image)
}

fn entries(dir: &Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name())
        .collect()
}

/// The job reads what the host put in the volume and what it writes there is on the host; the run
/// records the volume.
fn a_file_written_through_a_volume_lands_on_the_host(d: Dstack) {
    let (_registry, image) = pulled_busybox(&d);
    let data = host_dir(&d, "data", &[("in.txt", "from the host\n")]);
    let volume = format!("{}:/data", data.display());
    let out = d.run(&[
        "run",
        "docker",
        "-v",
        &volume,
        &image,
        "-c",
        "cat /data/in.txt && echo from the job > /data/out.txt",
    ]);
    out.assert_success().assert_stdout_contains("from the host");
    assert_eq!(
        std::fs::read_to_string(data.join("out.txt")).unwrap(),
        "from the job\n"
    );
    let record = d.run_record(&out.run_name());
    assert_eq!(record["volumes"], serde_json::json!([volume]));
}
as_root_and_rootless!(a_file_written_through_a_volume_lands_on_the_host);

/// `:ro` refuses writes to the job's root, who cannot remount it read-write either.
fn a_read_only_volume_refuses_writes_also_to_root(d: Dstack) {
    let (_registry, image) = pulled_busybox(&d);
    let data = host_dir(&d, "data", &[("in.txt", "kept\n")]);
    let volume = format!("{}:/data:ro", data.display());
    let out = d.run(&[
        "run",
        "docker",
        &image,
        "--volume",
        &volume,
        "-c",
        "id -u; cat /data/in.txt; echo x > /data/new || echo refused; \
         mount -o remount,rw /data 2>/dev/null && echo x > /data/new2; rm /data/in.txt || echo kept",
    ]);
    out.assert_success();
    assert!(
        out.stdout.starts_with("0\nkept\n") && out.stdout.contains("refused"),
        "{out}"
    );
    assert_eq!(entries(&data), ["in.txt"], "{out}");
}
as_root_and_rootless!(a_read_only_volume_refuses_writes_also_to_root);

/// A mount below a read-only volume's host path is read-only in the job too (a remount of the top mount
/// alone would leave it writable).
#[test]
fn a_read_only_volume_is_read_only_below_too() {
    let d = Dstack::root();
    let (_registry, image) = pulled_busybox(&d);
    let data = host_dir(&d, "data", &[]);
    let sub = data.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&sub)
        .status()
        .unwrap();
    assert!(mounted.success());
    let volume = format!("{}:/data:ro", data.display());
    let out = d.run(&[
        "run",
        "docker",
        &image,
        "-v",
        &volume,
        "-c",
        "echo x > /data/sub/f || echo refused",
    ]);
    let left = entries(&sub);
    let _ = std::process::Command::new("umount").arg(&sub).status();
    out.assert_success().assert_stdout_contains("refused");
    assert!(left.is_empty(), "{left:?}\n{out}");
}

/// An image whose volume target is a symlink to a host directory (absolute, or climbing with `..`) gets
/// the volume inside its own root: the host directory stays empty and is no mount point.
fn a_symlinked_target_stays_inside_the_root(d: Dstack) {
    let victim = host_dir(&d, "victim", &[]);
    let data = host_dir(&d, "data", &[]);
    let climb = format!("../../../../../../../../../../..{}", victim.display());
    for target in [victim.display().to_string(), climb] {
        let registry = TestRegistry::plain();
        let hostile = busybox_image()
            .layer(
                LayerBuilder::new()
                    .symlink("data", &target)
                    .build(Compression::Gzip),
            )
            .build();
        registry.push("evil/img:1", &hostile);
        let image = registry.image("evil/img:1");
        d.run(&["pull", "-q", &image]).assert_success();
        let volume = format!("{}:/data", data.display());
        let out = d.run(&[
            "run",
            "docker",
            &image,
            "-v",
            &volume,
            "-c",
            "echo through > /data/f",
        ]);
        assert!(
            entries(&victim).is_empty(),
            "{target}: the host got it\n{out}"
        );
        out.assert_success();
        assert_eq!(
            std::fs::read_to_string(data.join("f")).unwrap(),
            "through\n"
        );
        std::fs::remove_file(data.join("f")).unwrap();
    }
}
as_root_and_rootless!(a_symlinked_target_stays_inside_the_root);

/// Each refused volume is named with what to do, before a run exists, and nothing is made on the host.
fn refused_volumes_name_their_entry(d: Dstack) {
    let (_registry, image) = pulled_busybox(&d);
    let data = host_dir(&d, "data", &[]);
    let missing = d.home().join("missing");
    let cases = [
        (format!("{}:/data", missing.display()), "does not exist"),
        (format!("{}:/proc/x", data.display()), "/proc"),
        (format!("{}:/sys", data.display()), "/sys"),
        (format!("{}:data", data.display()), "must be absolute"),
        (format!("{}", data.display()), "HOST:CONTAINER"),
    ];
    for (volume, why) in &cases {
        for dry_run in [false, true] {
            let mut args = vec!["run"];
            if dry_run {
                args.push("--dry-run");
            }
            args.extend(["docker", &image, "-v", volume, "-c", "true"]);
            let out = d.run(&args);
            out.assert_failure()
                .assert_stderr_contains(&format!("`{volume}`"))
                .assert_stderr_contains(why);
        }
    }
    assert!(!missing.exists(), "a missing host path was made");
    assert!(entries(&data).is_empty());
    let runs = d.run(&["ps", "-a", "--json"]);
    assert_eq!(runs.stdout.trim(), "[]", "a refused volume made a run");
}
as_root_and_rootless!(refused_volumes_name_their_entry);

/// `--dry-run` shows each volume as the bind it becomes.
fn a_dry_run_shows_the_volumes(d: Dstack) {
    let (_registry, image) = pulled_busybox(&d);
    let data = host_dir(&d, "data", &[]);
    let volume = format!("{}:/data:ro", data.display());
    let out = d.run(&["run", "--dry-run", "docker", &image, "-v", &volume]);
    out.assert_success();
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let mount = plan["spec"]["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/data")
        .unwrap_or_else(|| panic!("no /data in {}", out.stdout))
        .clone();
    assert_eq!(mount["source"], data.display().to_string());
    assert_eq!(
        mount["options"],
        serde_json::json!(["rbind", "rprivate", "nosuid", "nodev", "ro"])
    );
}
as_root_and_rootless!(a_dry_run_shows_the_volumes);

/// A workflow's `volumes:` in both forms: a string relative to the project, and a map, read-only; its
/// record and its `--dry-run` list them.
fn a_workflow_binds_its_volumes_in_both_forms(d: Dstack) {
    let registry = busybox_registry();
    let shared = host_dir(&d, "shared", &[("model.txt", "weights\n")]);
    let body = format!(
        "    volumes:\n      - results:/results\n      - host: {}\n        path: /models\n        read_only: true\n    commands:\n      - cat /models/model.txt\n      - echo done > /results/out.txt\n      - echo x > /models/new || echo refused\n",
        shared.display()
    );
    d.write_home_file(
        "project/.dstack/workflows/train.yaml",
        busybox_workflow(&registry, "train", &body),
    );
    let project = d.home().join("project");
    std::fs::create_dir(project.join("results")).unwrap();
    d.give_to_user(&project);
    let out = d.run_in(&project, &["run", "train"]);
    out.assert_success()
        .assert_stdout_contains("weights")
        .assert_stdout_contains("refused");
    assert_eq!(
        std::fs::read_to_string(project.join("results/out.txt")).unwrap(),
        "done\n"
    );
    assert_eq!(entries(&shared), ["model.txt"]);
    let expected = serde_json::json!([
        format!("{}:/results", project.join("results").display()),
        format!("{}:/models:ro", shared.display()),
    ]);
    assert_eq!(d.run_record(&out.run_name())["volumes"], expected);
    let dry = d.run_in(&project, &["run", "--dry-run", "train"]);
    dry.assert_success();
    let plan: serde_json::Value = serde_json::from_str(&dry.stdout).unwrap();
    assert_eq!(plan["volumes"], expected, "{dry}");
}
as_root_and_rootless!(a_workflow_binds_its_volumes_in_both_forms);
