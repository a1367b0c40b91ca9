//! The `sbatch` options for a workflow: its resources mapped to Slurm's, and the project's settings.
//! `cpu` -> `--cpus-per-task` (rounded up), `memory` -> `--mem` (MiB, rounded up), `gpu` ->
//! `--gres=gpu[:TYPE]:N`, `interruptible` -> `--requeue` and the preemptible partition or QOS (otherwise
//! `--no-requeue`, whatever the cluster's default). `shm_size` is not Slurm's: the job applies it.

use std::path::Path;

use super::config::SlurmConfig;
use crate::workflow::Resources;

/// Everything `sbatch` is given, in order, before the script's path.
pub fn sbatch_args(
    resources: &Resources,
    config: &SlurmConfig,
    run_name: &str,
    run_dir: &Path,
) -> Vec<String> {
    let mut args = vec![
        "--parsable".to_string(),
        format!("--job-name={run_name}"),
        "--nodes=1".to_string(),
        "--ntasks=1".to_string(),
        // The batch script's own output (dstack's messages in the job); the job's output goes to the run's
        // log. Both are on the shared file system, as the run directory must be.
        format!("--output={}", run_dir.join("slurm.out").display()),
        format!("--chdir={}", run_dir.display()),
    ];
    let preemptible = config
        .preemptible
        .as_ref()
        .filter(|_| resources.interruptible);
    let partition = preemptible
        .and_then(|p| p.partition.as_ref())
        .or(config.partition.as_ref());
    let qos = preemptible
        .and_then(|p| p.qos.as_ref())
        .or(config.qos.as_ref());
    if let Some(partition) = partition {
        args.push(format!("--partition={partition}"));
    }
    if let Some(account) = &config.account {
        args.push(format!("--account={account}"));
    }
    if let Some(qos) = qos {
        args.push(format!("--qos={qos}"));
    }
    if let Some(time) = &config.time {
        args.push(format!("--time={time}"));
    }
    if let Some(cpu) = resources.cpu {
        args.push(format!("--cpus-per-task={}", (cpu.ceil() as u64).max(1)));
    }
    if let Some(bytes) = resources.memory {
        args.push(format!("--mem={}M", bytes.div_ceil(1 << 20).max(1)));
    }
    if let Some(gpu) = resources.gpu.as_ref().filter(|g| g.count > 0) {
        match &gpu.name {
            Some(name) => args.push(format!(
                "--gres=gpu:{}:{}",
                config.gres_type(name),
                gpu.count
            )),
            None => args.push(format!("--gres=gpu:{}", gpu.count)),
        }
    }
    args.push(
        if resources.interruptible {
            "--requeue"
        } else {
            "--no-requeue"
        }
        .to_string(),
    );
    args.extend(config.sbatch_options.iter().cloned());
    args
}

/// What the job asks of Slurm, for messages: `2 CPUs, 512 MiB, gpu:a100:1`.
pub fn describe(args: &[String]) -> String {
    let mut parts = Vec::new();
    for arg in args {
        if let Some(n) = arg.strip_prefix("--cpus-per-task=") {
            parts.push(format!("{n} CPU{}", if n == "1" { "" } else { "s" }));
        } else if let Some(m) = arg.strip_prefix("--mem=") {
            parts.push(format!("{} MiB", m.trim_end_matches('M')));
        } else if let Some(g) = arg.strip_prefix("--gres=") {
            parts.push(g.to_string());
        }
    }
    if parts.is_empty() {
        "the partition's defaults".to_string()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::model::GpuRequest;

    fn find<'a>(args: &'a [String], prefix: &str) -> Vec<&'a str> {
        args.iter()
            .filter(|a| a.starts_with(prefix))
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn resources_map_to_slurm_options() {
        let resources = Resources {
            cpu: Some(1.5),
            memory: Some(1_000_000_000),
            shm_size: Some(1 << 30),
            gpu: Some(GpuRequest {
                count: 2,
                name: Some("A100".into()),
                memory: None,
            }),
            interruptible: false,
        };
        let config = SlurmConfig {
            partition: Some("gpu".into()),
            account: Some("proj".into()),
            time: Some("10".into()),
            gres: [("a100".to_string(), "nvidia_a100".to_string())].into(),
            ..SlurmConfig::default()
        };
        let args = sbatch_args(&resources, &config, "brave-otter-1", Path::new("/s/runs/r"));
        assert_eq!(args[0], "--parsable");
        assert_eq!(find(&args, "--cpus-per-task"), ["--cpus-per-task=2"]);
        assert_eq!(find(&args, "--mem"), ["--mem=954M"]);
        assert_eq!(find(&args, "--gres"), ["--gres=gpu:nvidia_a100:2"]);
        assert_eq!(find(&args, "--partition"), ["--partition=gpu"]);
        assert_eq!(find(&args, "--account"), ["--account=proj"]);
        assert_eq!(find(&args, "--time"), ["--time=10"]);
        assert_eq!(find(&args, "--job-name"), ["--job-name=brave-otter-1"]);
        assert_eq!(find(&args, "--output"), ["--output=/s/runs/r/slurm.out"]);
        assert_eq!(find(&args, "--no-requeue").len(), 1);
        assert!(find(&args, "--qos").is_empty());
        assert_eq!(describe(&args), "2 CPUs, 954 MiB, gpu:nvidia_a100:2");
    }

    #[test]
    fn interruptible_jobs_requeue_and_go_where_preemption_is_allowed() {
        let resources = Resources {
            interruptible: true,
            gpu: Some(GpuRequest {
                count: 1,
                name: None,
                memory: None,
            }),
            ..Resources::default()
        };
        let mut config = SlurmConfig {
            partition: Some("debug".into()),
            qos: Some("normal".into()),
            preemptible: Some(super::super::config::Preemptible {
                partition: Some("preempt".into()),
                qos: None,
            }),
            sbatch_options: vec!["--exclusive".into()],
            ..SlurmConfig::default()
        };
        let args = sbatch_args(&resources, &config, "r", Path::new("/r"));
        assert_eq!(find(&args, "--requeue"), ["--requeue"]);
        assert_eq!(find(&args, "--partition"), ["--partition=preempt"]);
        assert_eq!(find(&args, "--qos"), ["--qos=normal"], "the QOS stays");
        assert_eq!(find(&args, "--gres"), ["--gres=gpu:1"]);
        assert_eq!(args.last().unwrap(), "--exclusive");
        config.preemptible = None;
        let args = sbatch_args(&resources, &config, "r", Path::new("/r"));
        assert_eq!(find(&args, "--partition"), ["--partition=debug"]);
        assert_eq!(describe(&args[..2]), "the partition's defaults");
    }
}
