//! Paths inside a root filesystem are resolved inside it: an image whose `/dev`, `/proc`, `/etc`,
//! `/workflow`... is a symlink (absolute, `../..`, or a chain longer than the kernel's 40 links) never
//! makes dstack create or mount anything in a host directory, and `artifacts download` never writes
//! through a symlink a former download left. Root and rootless.

use std::path::{Path, PathBuf};

use test_support::oci::{id_mapping, make_rootless, unpack_busybox};
use test_support::*;

/// The host directory an attacker aims at: empty, owned by the user dstack runs as (so that a rootless
/// dstack could write there too).
fn victim(d: &Dstack, name: &str) -> PathBuf {
    let dir = d.home().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    d.give_to_user(&dir);
    dir
}

#[track_caller]
fn assert_untouched(dir: &Path, out: &Output) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty(),
        "the host directory {} got {left:?}\n{out}",
        dir.display()
    );
}

/// The run either worked (with the thing inside the root) or failed naming `path`.
#[track_caller]
fn assert_worked_or_named(out: &Output, path: &str) {
    assert!(
        out.success() || out.stderr.contains(path),
        "neither ran nor named {path}:\n{out}"
    );
}

/// A registry holding busybox with `extra` on top, and `d` having pulled it.
fn pushed(d: &Dstack, extra: LayerBuilder) -> (TestRegistry, String) {
    let registry = TestRegistry::plain();
    let image = busybox_image()
        .layer(extra.build(Compression::Gzip))
        .build();
    registry.push("evil/img:1", &image);
    let name = registry.image("evil/img:1");
    d.run(&["pull", "-q", &name]).assert_success();
    (registry, name)
}

/// `/dev` is a symlink to a host directory: an absolute one, one climbing out with `..`, and one
/// through `/proc/self/root`.
fn dev_symlink_to_a_host_directory_gets_nothing(d: Dstack) {
    let host = victim(&d, "host-dev");
    let climb = format!(
        "../../../../../../../../../../../../../../..{}",
        host.display()
    );
    // And through the container's own /proc (mounted before /dev): a magic link to the host's root.
    let magic = format!("/proc/self/root{}", host.display());
    for target in [host.display().to_string(), climb, magic] {
        let (_registry, image) = pushed(&d, LayerBuilder::new().symlink("dev", &target));
        let out = d.run(&[
            "run",
            "docker",
            &image,
            "-c",
            "echo hi > /dev/null && echo ran",
        ]);
        assert_untouched(&host, &out);
        assert_worked_or_named(&out, "/dev");
    }
}
as_root_and_rootless!(dev_symlink_to_a_host_directory_gets_nothing);

/// A chain of 45 relative links under `/chain`, ending at `aim` (absolute, on the host). Images point
/// at `/chain/l0/made`: a resolver that gives up after 40 links returns a path with the rest of the
/// chain in it, and the kernel follows that from the host's `/` when the path is created.
fn chain_to(aim: &Path) -> LayerBuilder {
    let mut layer = LayerBuilder::new().dir("chain");
    for i in 0..45 {
        layer = layer.symlink(&format!("chain/l{i}"), &format!("l{}", i + 1));
    }
    layer.symlink("chain/l45", &aim.display().to_string())
}

/// `/proc`, `/etc`, `/etc/hostname` and `/dev/shm` of the image are such chains.
fn long_symlink_chains_in_the_image_reach_no_host_path(d: Dstack) {
    let host = victim(&d, "host-chain");
    let aim = host.join("made");
    let cases: [(&str, LayerBuilder); 4] = [
        ("/proc", chain_to(&host).symlink("proc", "/chain/l0/made")),
        ("/etc", chain_to(&host).symlink("etc", "/chain/l0/made")),
        (
            "/etc/hostname",
            chain_to(&host).symlink("etc/hostname", "/chain/l0/made"),
        ),
        (
            "/dev/shm",
            chain_to(&host).symlink("dev/shm", "/chain/l0/made"),
        ),
    ];
    for (path, layer) in cases {
        let (_registry, image) = pushed(&d, layer);
        let out = d.run(&["run", "docker", &image, "-c", "echo ran"]);
        assert!(
            !aim.exists(),
            "{path}: {} was created\n{out}",
            aim.display()
        );
        assert_untouched(&host, &out);
        assert_worked_or_named(&out, path);
    }
}
as_root_and_rootless!(long_symlink_chains_in_the_image_reach_no_host_path);

/// A workflow's `/workflow` (the project's copy is bound there) is such a chain in the image.
fn a_workflow_directory_chain_reaches_no_host_path(d: Dstack) {
    let host = victim(&d, "host-workflow");
    let aim = host.join("made");
    let registry = TestRegistry::plain();
    let image = busybox_image()
        .layer(
            chain_to(&host)
                .symlink("workflow", "/chain/l0/made")
                .build(Compression::Gzip),
        )
        .build();
    registry.push("evil/wf:1", &image);
    let text = format!(
        "workflows:\n  - name: evil\n    provider: docker\n    image: {}\n    commands:\n      - echo ran\n",
        registry.image("evil/wf:1")
    );
    d.write_home_file("project/.dstack/workflows/evil.yaml", text);
    let out = d.run_in(&d.home().join("project"), &["run", "evil"]);
    assert!(!aim.exists(), "{} was created\n{out}", aim.display());
    assert_untouched(&host, &out);
    assert_worked_or_named(&out, "/workflow");
}
as_root_and_rootless!(a_workflow_directory_chain_reaches_no_host_path);

/// Run 1's artifact `res` is a symlink to a host directory; downloading it, then run 2's `res/owned`
/// (and run 3's directory `res` holding `owned`) into the same directory, with and without `-o`,
/// writes nothing there.
fn artifact_downloads_never_write_through_a_planted_symlink(d: Dstack) {
    let host = victim(&d, "host-artifacts");
    let registry = busybox_registry();
    let workflow = |name: &str, script: &str, artifact: &str| {
        busybox_workflow(
            &registry,
            name,
            &format!("    commands:\n      - {script}\n    artifacts:\n      - {artifact}\n"),
        )
    };
    let dir = {
        let files = [
            (
                "plant",
                workflow("plant", &format!("ln -s {} res", host.display()), "res"),
            ),
            (
                "file",
                workflow("file", "mkdir res && echo x > res/owned", "res/owned"),
            ),
            (
                "tree",
                workflow("tree", "mkdir res && echo x > res/owned", "res"),
            ),
        ];
        for (name, text) in &files {
            d.write_home_file(&format!("project/.dstack/workflows/{name}.yaml"), text);
        }
        d.home().join("project")
    };
    let runs: Vec<String> = ["plant", "file", "tree"]
        .iter()
        .map(|w| {
            let out = d.run_in(&dir, &["run", w]);
            out.assert_success();
            out.run_name()
        })
        .collect();
    for with_output in [false, true] {
        let name = if with_output { "out-o" } else { "out-cwd" };
        let out_dir = victim(&d, name);
        let download = |run: &str| {
            let o = out_dir.display().to_string();
            if with_output {
                d.run_in(&dir, &["artifacts", "download", run, "-o", &o])
            } else {
                d.run_in(&out_dir, &["artifacts", "download", run])
            }
        };
        download(&runs[0]).assert_success();
        for run in &runs[1..] {
            let out = download(run);
            out.assert_failure()
                .assert_stderr_contains("res: is a symbolic link");
            assert_untouched(&host, &out);
        }
    }
}
as_root_and_rootless!(artifact_downloads_never_write_through_a_planted_symlink);

/// A bundle `name` for `dstack-oci run` in `d`'s home: busybox unpacked at `rootfs`, `spec`'s config
/// with the job run as the bundle's root (a user namespace mapping the user alone, when rootless).
fn oci_bundle(d: &Dstack, name: &str, mut spec: oci_spec::runtime::Spec) -> PathBuf {
    let bundle = d.home().join(name);
    unpack_busybox(&bundle.join("rootfs"));
    if d.run_as() != RunAs::Root {
        let (uid, gid) = d.run_as().ids();
        make_rootless(
            &mut spec,
            vec![id_mapping(0, uid, 1)],
            vec![id_mapping(0, gid, 1)],
        );
    }
    let mut process = spec.process().clone().unwrap();
    process.set_terminal(Some(false));
    process.set_args(Some(vec!["sh".into(), "-c".into(), "echo ran".into()]));
    spec.set_process(Some(process));
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&spec).unwrap(),
    )
    .unwrap();
    d.give_to_user(&bundle);
    bundle
}

/// `dstack-oci run` of `bundle`, as `d`'s user.
fn oci_run(d: &Dstack, bundle: &Path) -> Output {
    let state = d.home().join("oci-state").display().to_string();
    let id = bundle.file_name().unwrap().to_string_lossy().into_owned();
    let mut cmd = d.program_command(
        env!("CARGO_BIN_EXE_dstack-oci"),
        &["--root", &state, "run", &id],
    );
    cmd.current_dir(bundle);
    Output::of(cmd)
}

/// A bundle's `linux.devices` path climbing out of `/dev` with `..`, and a mount destination reached
/// through a 45-link chain: nothing lands in the host directory they aim at.
fn a_bundles_devices_and_mounts_stay_inside_its_root(d: Dstack) {
    use oci_spec::runtime::{LinuxDeviceBuilder, LinuxDeviceType, MountBuilder, Spec};
    let host = victim(&d, "host-oci");
    let mut spec = Spec::default();
    let mut linux = spec.linux().clone().unwrap();
    let climb = format!(
        "/dev/../../../../../../../../../../..{}/node",
        host.display()
    );
    linux.set_devices(Some(vec![
        LinuxDeviceBuilder::default()
            .path(&climb)
            .typ(LinuxDeviceType::C)
            .major(1)
            .minor(3)
            .build()
            .unwrap(),
    ]));
    spec.set_linux(Some(linux));
    let out = oci_run(&d, &oci_bundle(&d, "devices", spec));
    assert_untouched(&host, &out);
    assert_worked_or_named(&out, &climb);

    let mut spec = Spec::default();
    let mut mounts = spec.mounts().clone().unwrap();
    mounts.push(
        MountBuilder::default()
            .destination("/chained/made")
            .typ("tmpfs")
            .source("tmpfs")
            .build()
            .unwrap(),
    );
    spec.set_mounts(Some(mounts));
    let bundle = oci_bundle(&d, "mounts", spec);
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir(rootfs.join("chain")).unwrap();
    for i in 0..45 {
        std::os::unix::fs::symlink(format!("l{}", i + 1), rootfs.join(format!("chain/l{i}")))
            .unwrap();
    }
    std::os::unix::fs::symlink(&host, rootfs.join("chain/l45")).unwrap();
    std::os::unix::fs::symlink("/chain/l0", rootfs.join("chained")).unwrap();
    d.give_to_user(&rootfs);
    let out = oci_run(&d, &bundle);
    assert_untouched(&host, &out);
    assert!(
        !out.success(),
        "the chained mount point was accepted:\n{out}"
    );
    out.assert_stderr_contains("/chained/made: too many symbolic links");
}
as_root_and_rootless!(a_bundles_devices_and_mounts_stay_inside_its_root);

/// The job owns the project copy its artifacts are saved from: replacing a directory on an artifact's
/// path with a link to a host directory does not have a host file moved into the run.
fn saving_artifacts_follows_no_link_the_job_made(d: Dstack) {
    let host = victim(&d, "host-saved");
    std::fs::create_dir(host.join("output")).unwrap();
    std::fs::write(host.join("output/secret"), "mine").unwrap();
    d.give_to_user(&host);
    let registry = busybox_registry();
    let body = format!(
        "    commands:\n      - rm -rf data && ln -s {} data\n    artifacts:\n      - data/output\n",
        host.display()
    );
    d.write_home_file(
        "project/.dstack/workflows/steal.yaml",
        busybox_workflow(&registry, "steal", &body),
    );
    d.write_home_file("project/data/keep", "x");
    let out = d.run_in(&d.home().join("project"), &["run", "steal"]);
    assert_eq!(
        std::fs::read_to_string(host.join("output/secret")).unwrap_or_default(),
        "mine",
        "the host file was moved away\n{out}"
    );
    out.assert_stderr_contains("data: is a symbolic link");
}
as_root_and_rootless!(saving_artifacts_follows_no_link_the_job_made);
