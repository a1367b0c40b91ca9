//! `dstack run docker IMAGE --gpu ...` through the real binary, as root and rootless.
//!
//! There is no GPU on the test machines: `test_support::gpu::FakeDriver`, a fake NVIDIA driver tree with an
//! H100 and an A100, stands in for one, and `DSTACK_GPU_ROOT` points dstack at it. A real GPU is checked by
//! `scripts/gpu-check`.

use std::os::unix::fs::PermissionsExt;

use nix::sys::signal::Signal;
use test_support::gpu::{A100, FakeDriver, H100, elf_library};
use test_support::*;

const MODES: [RunAs; 2] = [RunAs::Root, RunAs::Rootless];

/// An image pulled by a dstack environment that sees the fake driver (`DSTACK_GPU_ROOT`).
struct Setup {
    pulled: PulledImage,
    driver: FakeDriver,
}

impl std::ops::Deref for Setup {
    type Target = PulledImage;
    fn deref(&self) -> &PulledImage {
        &self.pulled
    }
}

fn setup_with(mode: RunAs, image: &Image) -> Setup {
    let driver = FakeDriver::new();
    let dstack = Dstack::new(mode).env("DSTACK_GPU_ROOT", driver.root());
    Setup {
        pulled: PulledImage::new(dstack, "test/gpu:1", image),
        driver,
    }
}

fn setup(mode: RunAs) -> Setup {
    setup_with(mode, &busybox_image().build())
}

const PROBE: &str = "nvidia-smi -L; echo visible=$NVIDIA_VISIBLE_DEVICES caps=$NVIDIA_DRIVER_CAPABILITIES; \
    echo dev: $(ls /dev | grep nvidia | sort); stat -c '%F %t:%T' /dev/nvidia*[0-9]; \
    echo libs: $(ls /usr/local/nvidia/lib64 | sort); \
    cmp /usr/local/nvidia/lib64/libcuda.so.1 /usr/lib/libcuda.so.1 && echo loadable; \
    (echo x > /usr/local/nvidia/lib64/libcuda.so.550.54.15) 2>/dev/null || echo read-only";

#[test]
fn a_named_gpu_brings_exactly_its_node_the_driver_libraries_and_nvidia_smi() {
    for mode in MODES {
        let s = setup(mode);
        let out = s.sh_with(&["--gpu-name", "a100"], PROBE);
        out.assert_success();
        let expected = format!(
            "GPU 0: NVIDIA A100-SXM4-80GB (UUID: {A100})\n\
             visible={A100} caps=utility,compute\n\
             dev: nvidia-modeset nvidia-uvm nvidia-uvm-tools nvidia1 nvidiactl\n\
             character special file c3:1\n\
             libs: libcuda.so libcuda.so.1 libcuda.so.550.54.15 libnvidia-ml.so libnvidia-ml.so.1 \
             libnvidia-ml.so.550.54.15 libnvidia-ptxjitcompiler.so libnvidia-ptxjitcompiler.so.1 \
             libnvidia-ptxjitcompiler.so.550.54.15\n\
             loadable\nread-only\n"
        );
        assert_eq!(out.stdout, expected, "{mode:?}: {}", out.stderr);
    }
}

#[test]
fn gpu_n_takes_the_first_free_gpus_and_a_busy_gpu_is_refused_until_its_job_ends() {
    for mode in MODES {
        let s = setup(mode);
        let holder = s.dstack.spawn(&[
            "run",
            "docker",
            &s.image,
            "--gpu",
            "1",
            "-c",
            "nvidia-smi -L; exec sleep 60",
        ]);
        holder.wait_for_output("the H100", |out, _| out.contains("H100"));
        let holder_run = holder
            .stderr_so_far()
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("run "))
            .expect("the run's name first")
            .to_string();
        // The other job gets the A100; asking for both, or for the H100 by name, is refused with the holder named.
        let out = s.sh_with(&["--gpu", "1"], "nvidia-smi -L");
        out.assert_success();
        assert_eq!(
            out.stdout,
            format!("GPU 0: NVIDIA A100-SXM4-80GB (UUID: {A100})\n"),
            "{mode:?}"
        );
        let out = s.sh_with(&["--gpu", "2"], "true");
        out.assert_failure();
        assert!(
            out.stderr.contains(&format!("requested 2 GPUs; this machine has: 0: NVIDIA H100 80GB HBM3 (81559 MiB) [in use by run {holder_run}]")),
            "{mode:?}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("1: NVIDIA A100-SXM4-80GB (81920 MiB)"),
            "{mode:?}: {}",
            out.stderr
        );
        s.sh_with(&["--gpu-name", "H100"], "true").assert_failure();
        holder.signal(Signal::SIGTERM);
        holder.wait();
        let out = s.sh_with(&["--gpu", "2"], "nvidia-smi -L");
        out.assert_success();
        assert_eq!(out.stdout.lines().count(), 2, "{mode:?}: {}", out.stdout);
    }
}

#[test]
fn unmet_requests_fail_before_the_job_starts_and_list_the_machines_gpus() {
    for mode in MODES {
        let s = setup(mode);
        let listing = "this machine has: 0: NVIDIA H100 80GB HBM3 (81559 MiB), 1: NVIDIA A100-SXM4-80GB (81920 MiB)";
        let out = s.sh_with(&["--gpu", "3"], "echo started");
        out.assert_failure();
        assert!(
            out.stderr.contains(&format!("requested 3 GPUs; {listing}")),
            "{mode:?}: {}",
            out.stderr
        );
        assert!(!out.stdout.contains("started"), "{mode:?}");
        let runs = s.dstack.run(&["ps", "-a", "--json"]);
        assert_eq!(runs.stdout.trim(), "[]", "{mode:?}: a run was recorded");
        let out = s.sh_with(&["--gpu-name", "V100"], "echo started");
        assert!(
            out.stderr
                .contains(&format!("requested 1 GPU named V100; {listing}")),
            "{mode:?}: {}",
            out.stderr
        );
        let out = s.sh_with(&["--gpu-memory", "90GB"], "echo started");
        assert!(
            out.stderr.contains(&format!(
                "requested 1 GPU with at least 90 GB of memory; {listing}"
            )),
            "{mode:?}: {}",
            out.stderr
        );
        s.sh_with(&["--gpu-memory", "80GB"], "true")
            .assert_success();
        let empty = tempfile::tempdir().unwrap();
        std::fs::set_permissions(empty.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let no_driver = format!("DSTACK_GPU_ROOT={}", empty.path().display());
        let args = [
            no_driver.as_str(),
            test_support::dstack::dstack_bin(),
            "run",
            "docker",
            &s.image,
            "--gpu",
            "1",
            "-c",
            "true",
        ];
        let out = s.dstack.run_program("/usr/bin/env", &args);
        out.assert_failure();
        assert!(
            out.stderr
                .contains("requested 1 GPU; this machine has no NVIDIA GPU"),
            "{mode:?}: {}",
            out.stderr
        );
    }
}

/// One machine, three dstacks: root, root with another state root (`DSTACK_HOME`), and the unprivileged user.
/// A GPU one of them holds is refused to the others, naming the holder, and free again once its job ends.
/// Only the leases are shown here: real hardware is needed to show two jobs could otherwise share a GPU.
#[test]
fn a_gpu_is_never_handed_out_twice_across_state_roots_and_users() {
    let s = setup(RunAs::Root);
    let other = |mode| {
        let dstack = Dstack::new(mode).env("DSTACK_GPU_ROOT", s.driver.root());
        dstack.run(&["pull", "-q", &s.image]).assert_success();
        dstack
    };
    let (second_root, user) = (other(RunAs::Root), other(RunAs::Rootless));
    let run = |dstack: &Dstack, flags: &[&str]| {
        let mut args = vec!["run", "docker", s.image.as_str()];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["-c", "nvidia-smi -L"]);
        dstack.run(&args)
    };
    for (holder, others) in [
        (&s.dstack, [&second_root, &user]),
        (&user, [&s.dstack, &second_root]),
    ] {
        let job = holder.spawn(&[
            "run",
            "docker",
            &s.image,
            "--gpu-name",
            "H100",
            "-c",
            "nvidia-smi -L; exec sleep 60",
        ]);
        job.wait_for_output("the H100", |out, _| out.contains("H100"));
        let name = job
            .stderr_so_far()
            .lines()
            .find_map(|l| l.strip_prefix("run "))
            .expect("the run's name first")
            .to_string();
        for dstack in others {
            let who = dstack.run_as();
            let out = run(dstack, &["--gpu-name", "H100"]);
            out.assert_failure();
            assert!(
                out.stderr.contains(&format!(
                    "0: NVIDIA H100 80GB HBM3 (81559 MiB) [in use by run {name}]"
                )),
                "{who:?}: {}",
                out.stderr
            );
            let out = run(dstack, &["--gpu", "1"]);
            out.assert_success();
            assert_eq!(
                out.stdout,
                format!("GPU 0: NVIDIA A100-SXM4-80GB (UUID: {A100})\n"),
                "{who:?}: {}",
                out.stderr
            );
        }
        job.signal(Signal::SIGTERM);
        job.wait();
        for dstack in others {
            run(dstack, &["--gpu", "2"]).assert_success();
        }
    }
}

/// CUDA forward compatibility: an image for CUDA 12.8 on this 550 (CUDA 12.4) driver. Its `NVIDIA_REQUIRE_CUDA`
/// is checked before the job starts (refused when no alternative matches the host, unless
/// `NVIDIA_DISABLE_REQUIRE`); when it starts, its newer `/usr/local/cuda/compat` libcuda is the one the job loads,
/// through `/usr/local/nvidia/lib64` (first on CUDA images' `LD_LIBRARY_PATH`) and next to libc alike, and the
/// host's libcuda is gone. That CUDA then works on the old kernel module only real hardware shows.
#[test]
fn a_newer_cuda_image_gets_its_compat_libraries_or_a_clear_refusal() {
    let compat = LayerBuilder::new()
        .dir("usr/local/cuda")
        .dir("usr/local/cuda/compat")
        .file(
            "usr/local/cuda/compat/libcuda.so.570.124.06",
            elf_library("libcuda.so.1"),
        )
        .symlink(
            "usr/local/cuda/compat/libcuda.so.1",
            "libcuda.so.570.124.06",
        )
        .build(Compression::Gzip);
    let image = busybox_image()
        .layer(compat)
        .env("NVIDIA_REQUIRE_CUDA=cuda>=12.8 brand=tesla,driver>=535,driver<536 brand=nvidia,driver>=550,driver<551")
        .build();
    let probe = "readlink /usr/local/nvidia/lib64/libcuda.so.1; readlink /usr/lib/libcuda.so.1; \
        ls /usr/local/nvidia/lib64 | grep -c 'libcuda.so.550' || true";
    for mode in MODES {
        let s = setup_with(mode, &image);
        let out = s.sh_with(&["--gpu", "1"], probe);
        out.assert_success();
        assert_eq!(
            out.stdout,
            "/usr/local/cuda/compat/libcuda.so.1\n/usr/local/cuda/compat/libcuda.so.1\n0\n",
            "{mode:?}: {}",
            out.stderr
        );
        // The same image where no alternative matches this driver: refused before the job starts.
        let strict = "NVIDIA_REQUIRE_CUDA=cuda>=12.8 brand=tesla,driver>=535,driver<536";
        let out = s.sh_with(&["--gpu", "1", "-e", strict], "echo started");
        out.assert_failure();
        assert!(
            out.stderr.contains(
                "the image requires cuda>=12.8 but this machine's NVIDIA driver 550.54.15 supports CUDA 12.4"
            ),
            "{mode:?}: {}",
            out.stderr
        );
        assert!(!out.stdout.contains("started"));
        let out = s.sh_with(
            &[
                "--gpu",
                "1",
                "-e",
                strict,
                "-e",
                "NVIDIA_DISABLE_REQUIRE=true",
            ],
            "echo started",
        );
        out.assert_success();
        assert_eq!(out.stdout, "started\n", "{mode:?}: {}", out.stderr);
    }
}

/// Rootless with a CDI spec as toolkit 1.18 writes it at boot: the GPU's entry also lists its DRM node
/// (`/dev/dri/card1`, 0660 root:root here, root:video on a real host). A user who may not open it still gets the GPU,
/// without the DRM node (CUDA never opens it); root gets both. That CUDA then works only real hardware shows.
#[test]
fn a_cdi_spec_with_drm_nodes_the_user_may_not_open_still_gives_the_gpu() {
    for mode in MODES {
        let s = setup(mode);
        let root = s.driver.root();
        let card = root.join("dev/dri/card1");
        std::fs::create_dir_all(card.parent().unwrap()).unwrap();
        nix::sys::stat::mknod(
            &card,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o660),
            nix::sys::stat::makedev(226, 1),
        )
        .unwrap();
        std::fs::set_permissions(&card, std::fs::Permissions::from_mode(0o660)).unwrap();
        let node = |path: &str| {
            format!(
                "    - path: {path}\n      hostPath: {}\n",
                root.join(path.trim_start_matches('/')).display()
            )
        };
        let spec = format!(
            "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: \"1\"\n  containerEdits:\n    deviceNodes:\n{}{}\
             containerEdits:\n  deviceNodes:\n{}",
            node("/dev/nvidia1"),
            node("/dev/dri/card1"),
            node("/dev/nvidiactl").replacen("    ", "  ", 2),
        );
        std::fs::create_dir_all(root.join("etc/cdi")).unwrap();
        std::fs::write(root.join("etc/cdi/nvidia.yaml"), spec).unwrap();
        let out = s.sh_with(
            &["--gpu-name", "A100"],
            "ls /dev/nvidia1 /dev/nvidiactl; ls /dev/dri 2>/dev/null || echo no-dri",
        );
        out.assert_success();
        let dri = if mode == RunAs::Root {
            "card1"
        } else {
            "no-dri"
        };
        assert_eq!(
            out.stdout,
            format!("/dev/nvidia1\n/dev/nvidiactl\n{dri}\n"),
            "{mode:?}: {}",
            out.stderr
        );
    }
}

/// A glibc image with ldconfig: the library directory is added to its linker configuration and ldconfig runs
/// inside before the job (here a script that records how it was called).
#[test]
fn images_with_ldconfig_get_their_cache_rebuilt_inside() {
    let layer = LayerBuilder::new()
        .dir("lib")
        .dir("lib/x86_64-linux-gnu")
        .file("lib/x86_64-linux-gnu/libc.so.6", "")
        .dir("sbin")
        .executable(
            "sbin/ldconfig",
            "#!/bin/sh\necho \"ldconfig $*\" > /tmp/ldconfig-ran\n",
        )
        .build(Compression::Gzip);
    for mode in MODES {
        let s = setup_with(mode, &busybox_image().layer(layer.clone()).build());
        let out = s.sh_with(
            &["--gpu", "1"],
            "cat /tmp/ldconfig-ran /etc/ld.so.conf.d/000-dstack-nvidia.conf; readlink /usr/local/nvidia/lib64/libcuda.so.1; \
             ls /lib/x86_64-linux-gnu",
        );
        out.assert_success();
        assert_eq!(
            out.stdout,
            "ldconfig /usr/local/nvidia/lib64\n/usr/local/nvidia/lib64\nlibcuda.so.550.54.15\nlibc.so.6\n",
            "{mode:?}: {}",
            out.stderr
        );
    }
}

/// Rootless, the job opens the device with the user's own permissions: a node the user may not open is reported
/// before the job starts. Root is not affected.
#[test]
fn a_rootless_user_without_access_to_the_gpu_is_told_before_the_job_starts() {
    for mode in MODES {
        let s = setup(mode);
        let node = s.driver.root().join("dev/nvidia1");
        std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o600)).unwrap();
        let out = s.sh_with(&["--gpu-name", "A100"], "echo started");
        if mode == RunAs::Root {
            out.assert_success();
            continue;
        }
        out.assert_failure();
        let expected = format!(
            "cannot open {} (mode 600): a rootless job uses the GPU with your own permissions",
            node.display()
        );
        assert!(out.stderr.contains(&expected), "{}", out.stderr);
        assert!(!out.stdout.contains("started"));
        s.sh_with(&["--gpu-name", "H100"], "echo started")
            .assert_success();
    }
}

/// Inside a Slurm job (its variables stand in for one here) only the job's GPUs are handed out, by device minor
/// (`SLURM_JOB_GPUS`, as Slurm writes it with the usual gres.conf) or by UUID.
#[test]
fn inside_a_slurm_job_only_its_allocated_gpus_are_given() {
    for mode in MODES {
        let s = setup(mode);
        let run = |vars: &[&str], flags: &[&str]| {
            let mut args = vars.to_vec();
            args.extend_from_slice(&[
                test_support::dstack::dstack_bin(),
                "run",
                "docker",
                &s.image,
            ]);
            args.extend_from_slice(flags);
            args.extend_from_slice(&["-c", "nvidia-smi -L"]);
            s.dstack.run_program("/usr/bin/env", &args)
        };
        let job = ["SLURM_JOB_ID=42", "SLURM_JOB_GPUS=1"];
        let out = run(&job, &["--gpu", "1"]);
        out.assert_success();
        assert_eq!(
            out.stdout,
            format!("GPU 0: NVIDIA A100-SXM4-80GB (UUID: {A100})\n"),
            "{mode:?}: {}",
            out.stderr
        );
        let out = run(&job, &["--gpu", "2"]);
        out.assert_failure();
        out.assert_stderr_contains(
            "requested 2 GPUs (this Slurm job has SLURM_JOB_GPUS=1); this machine has: 1: NVIDIA A100-SXM4-80GB",
        );
        assert!(!out.stderr.contains("H100"), "{mode:?}: {}", out.stderr);
        run(&job, &["--gpu-name", "H100"]).assert_failure();
        let by_uuid = format!("CUDA_VISIBLE_DEVICES={H100}");
        let out = run(&["SLURM_JOB_ID=42", &by_uuid], &["--gpu", "1"]);
        out.assert_success();
        assert!(out.stdout.contains("H100"), "{mode:?}: {}", out.stdout);
        // Outside a job the variables mean nothing to dstack.
        run(&["SLURM_JOB_GPUS=1"], &["--gpu", "2"]).assert_success();
    }
}
