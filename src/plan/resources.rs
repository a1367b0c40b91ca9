//! The job's resource limits: memory (no swap beyond it), CPU quota, tasks, and `/dev/shm`.

use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPids, LinuxResourcesBuilder, Spec,
};

use super::{Host, JobRequest, PlanError};

/// The default `/dev/shm` size: the request's, else half the memory limit, else half of RAM.
pub fn shm_size(req: &JobRequest, host: &Host) -> u64 {
    req.shm_size
        .or(req.memory.map(|m| m / 2))
        .unwrap_or(host.memory / 2)
}

/// Sets the memory, CPU and tasks limits the request asks for.
pub(super) fn set_limits(spec: &mut Spec, req: &JobRequest) -> Result<(), PlanError> {
    let mut resources = LinuxResourcesBuilder::default();
    if let Some(memory) = req.memory {
        let limit = i64::try_from(memory)
            .map_err(|_| PlanError::Invalid("memory limit too large".into()))?;
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(limit)
                .swap(limit)
                .build()
                .map_err(|e| PlanError::Invalid(e.to_string()))?,
        );
    }
    if let Some(cpu) = req.cpu {
        if !(cpu.is_finite() && cpu > 0.0) {
            return Err(PlanError::Invalid(format!(
                "cpu {cpu} must be a positive number of cores"
            )));
        }
        let period = runtime::cgroup::CPU_PERIOD_US;
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .period(period)
                .quota((cpu * period as f64).round() as i64)
                .build()
                .map_err(|e| PlanError::Invalid(e.to_string()))?,
        );
    }
    let linux = spec
        .linux_mut()
        .as_mut()
        .expect("the default spec has linux settings");
    linux.set_resources(Some(
        resources
            .build()
            .map_err(|e| PlanError::Invalid(e.to_string()))?,
    ));
    if let Some(limit) = req.pids_limit {
        limit_pids(spec, limit);
    }
    Ok(())
}

/// The tasks limit of a job that asks for none (podman's default): enough for any sane job, and a fork bomb
/// stops there instead of taking the machine. Applied where the pids controller is available; `-1` (or
/// `0`) asks for no limit.
pub const DEFAULT_PIDS_LIMIT: u64 = 2048;

/// Caps the tasks (processes and threads) the job may have at once; `limit <= 0` asks for no cap, kept as
/// -1 (OCI's "max") so that no default replaces it. A spec without a pids limit gets the launcher's default.
pub fn limit_pids(spec: &mut Spec, limit: i64) {
    let mut pids = LinuxPids::default();
    pids.set_limit(if limit > 0 { limit } else { -1 });
    if let Some(linux) = spec.linux_mut().as_mut() {
        let mut resources = linux.resources().clone().unwrap_or_default();
        resources.set_pids(Some(pids));
        linux.set_resources(Some(resources));
    }
}
