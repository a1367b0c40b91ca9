//! Paths inside a root filesystem are resolved inside it: an image whose `/dev`, `/proc`, `/etc`,
//! `/workflow`... is a symlink (absolute, `../..`, or a chain longer than the kernel's 40 links) never
//! makes dstack create or mount anything in a host directory, and `artifacts download` never writes
//! through a symlink a former download left. Root and rootless.

use std::path::{Path, PathBuf};

use crate::common::*;

/// Runs a scenario as root and as the unprivileged test user.
macro_rules! as_root_and_rootless {
    ($scenario:ident) => {
        mod $scenario {
            #[test]
            fn as_root() {
                super::$scenario(super::Dstack::root());
            }
            #[test]
            fn rootless() {
                super::$scenario(super::Dstack::rootless());
            }
        }
    };
}

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

/// `/dev` is a symlink to a host directory: an absolute one, and one climbing out with `..`.
fn dev_symlink_to_a_host_directory_gets_nothing(d: Dstack) {
    let host = victim(&d, "host-dev");
    let climb = format!(
        "../../../../../../../../../../../../../../..{}",
        host.display()
    );
    for target in [host.display().to_string(), climb] {
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
