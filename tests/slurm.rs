//! `dstack run --slurm` against a real one-node Slurm (tests/common/slurm.rs starts it), as root.

mod common;

use std::time::Duration;

use common::slurm::{self, PARTITION};

/// The harness's cluster runs a plain batch job: the base every other test stands on.
#[test]
fn the_test_cluster_runs_a_batch_job() {
    let cluster = slurm::slurm();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("sbatch")
        .args([
            "--parsable",
            "--cpus-per-task=1",
            "--mem=64M",
            "--wrap",
            "echo on $(hostname -s)",
        ])
        .arg(format!("--output={}/out.txt", dir.path().display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sbatch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        cluster.wait_for_end(&id, Duration::from_secs(60)),
        "COMPLETED"
    );
    let job = cluster.job(&id);
    assert_eq!(job["Partition"], PARTITION);
    assert_eq!(job["MinMemoryNode"], "64M");
    let text = std::fs::read_to_string(dir.path().join("out.txt")).unwrap();
    assert_eq!(text.trim(), format!("on {}", cluster.node));
}
