//! The limits a job asks for, checked before any cgroup file is touched.

use super::{CgroupError, DevicePolicy};

/// CFS period used for CPU limits (100 ms, the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;
/// The kernel rejects quotas below 1 ms per period.
const MIN_QUOTA_US: u64 = 1_000;

/// Resource limits for one job. `None` leaves a resource unlimited.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// CPU cores, fractional (0.5 = half a core).
    pub cpu: Option<f64>,
    /// Memory in bytes; swap beyond it is not allowed.
    pub memory: Option<u64>,
    /// Maximum number of tasks (processes and threads).
    pub pids: Option<u64>,
    /// A tasks limit nobody asked for (dstack's default): applied when `pids` is `None` and the pids controller
    /// is there, never a reason to warn or refuse, nor a controller the job's cgroup requires.
    pub default_pids: Option<u64>,
    /// Devices the job may use (as root); `None` leaves device access as the parent allows.
    pub devices: Option<DevicePolicy>,
    /// Relative CPU weight, as v1 `cpu.shares` (1024 = default); v2 gets the matching `cpu.weight`.
    pub cpu_shares: Option<u64>,
    /// Memory plus swap in bytes (the OCI `memory.swap`); `None` with a memory limit means no swap.
    pub memory_swap: Option<u64>,
    /// CFS period in microseconds for `cpu` (OCI `cpu.period`); `None` is `CPU_PERIOD_US`.
    pub cpu_period: Option<u64>,
    /// Soft memory limit in bytes (OCI `memory.reservation`: v1 soft limit, v2 `memory.low`).
    pub memory_reservation: Option<u64>,
    /// v1 `memory.swappiness` (0..=100); cgroup v2 has none and warns.
    pub memory_swappiness: Option<u64>,
    /// Pause instead of OOM-killing at the limit (v1 `memory.oom_control`); cgroup v2 has none and warns.
    pub oom_kill_disable: bool,
    /// v1 cpuset `cpuset.cpus` / `cpuset.mems` (kernel lists, checked by the caller).
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
}

impl Limits {
    /// The limits of an OCI spec's `linux.resources` (cpu quota/period/shares, memory limit/swap, pids,
    /// devices). What has no place here is named by `container::unsupported`.
    pub fn from_oci(r: &oci_spec::runtime::LinuxResources) -> Result<Limits, CgroupError> {
        let positive = |v: Option<i64>| v.filter(|v| *v > 0).map(|v| v as u64);
        let mut limits = Limits::default();
        if let Some(cpu) = r.cpu() {
            if let Some(quota) = positive(cpu.quota()) {
                let period = cpu.period().filter(|p| *p > 0).unwrap_or(CPU_PERIOD_US);
                limits.cpu = Some(quota as f64 / period as f64);
                limits.cpu_period = Some(period);
            }
            limits.cpuset_cpus = cpu.cpus().clone().filter(|c| !c.is_empty());
            limits.cpuset_mems = cpu.mems().clone().filter(|m| !m.is_empty());
            limits.cpu_shares = cpu.shares().filter(|s| *s > 0);
        }
        if let Some(m) = r.memory() {
            limits.memory = positive(m.limit());
            limits.memory_swap = match m.swap() {
                Some(-1) => Some(u64::MAX),
                other => positive(other),
            };
            limits.memory_reservation = positive(m.reservation());
            limits.memory_swappiness = m.swappiness();
            limits.oom_kill_disable = m.disable_oom_killer() == Some(true);
        }
        if let Some(p) = r.pids() {
            limits.pids = (p.limit() > 0).then_some(p.limit() as u64);
        }
        if let Some(rules) = r.devices().as_ref().filter(|d| !d.is_empty()) {
            limits.devices =
                Some(DevicePolicy::from_oci(rules).map_err(CgroupError::InvalidLimit)?);
        }
        Ok(limits)
    }

    /// True when no CPU, memory or pids limit is asked for (devices and `default_pids` aside).
    pub fn is_unlimited(&self) -> bool {
        self.cpu.is_none()
            && self.memory.is_none()
            && self.pids.is_none()
            && self.cpu_shares.is_none()
            && self.memory_reservation.is_none()
            && self.memory_swappiness.is_none()
            && !self.oom_kill_disable
    }

    /// The CFS period the quota is written with.
    pub(crate) fn cpu_period_us(&self) -> u64 {
        self.cpu_period.unwrap_or(CPU_PERIOD_US)
    }

    /// The tasks limit to write where the pids controller is: the one asked for, else the default.
    pub(crate) fn pids_max(&self) -> Option<u64> {
        self.pids.or(self.default_pids)
    }

    /// The CFS quota per `cpu_period_us` for the CPU limit.
    pub(crate) fn cpu_quota_us(&self) -> Option<u64> {
        self.cpu
            .map(|cores| (cores * self.cpu_period_us() as f64).round() as u64)
    }

    pub(crate) fn validate(&self) -> Result<(), CgroupError> {
        if let Some(cores) = self.cpu {
            if !cores.is_finite() || cores <= 0.0 {
                return Err(CgroupError::InvalidLimit(format!(
                    "cpu limit {cores} must be a positive number of cores"
                )));
            }
            if self.cpu_quota_us().unwrap_or(0) < MIN_QUOTA_US {
                return Err(CgroupError::InvalidLimit(format!(
                    "cpu limit {cores} is below the kernel's minimum of {} cores",
                    MIN_QUOTA_US as f64 / self.cpu_period_us() as f64
                )));
            }
        }
        if let Some(period) = self.cpu_period
            && !(1_000..=1_000_000).contains(&period)
        {
            return Err(CgroupError::InvalidLimit(format!(
                "cpu period {period} must be between 1000 and 1000000 microseconds"
            )));
        }
        if let Some(s) = self.memory_swappiness.filter(|s| *s > 100) {
            return Err(CgroupError::InvalidLimit(format!(
                "memory swappiness {s} must be between 0 and 100"
            )));
        }
        if self.memory == Some(0) {
            return Err(CgroupError::InvalidLimit(
                "memory limit must be more than 0 bytes".into(),
            ));
        }
        if self.pids == Some(0) || self.default_pids == Some(0) {
            return Err(CgroupError::InvalidLimit(
                "pids limit must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractional_cores_become_a_quota() {
        let limits = Limits {
            cpu: Some(0.5),
            ..Limits::default()
        };
        assert_eq!(limits.cpu_quota_us(), Some(50_000));
        let exact = Limits {
            cpu: Some(200_000.0 / 500_000.0),
            cpu_period: Some(500_000),
            ..Limits::default()
        };
        assert_eq!(exact.cpu_quota_us(), Some(200_000), "the period is kept");
        assert_eq!(
            Limits {
                cpu: Some(2.25),
                ..Limits::default()
            }
            .cpu_quota_us(),
            Some(225_000)
        );
        assert!(limits.validate().is_ok());
    }

    #[test]
    fn nonsense_limits_are_refused_before_the_kernel_sees_them() {
        for cpu in [0.0, -1.0, f64::NAN, 0.001] {
            assert!(
                Limits {
                    cpu: Some(cpu),
                    ..Limits::default()
                }
                .validate()
                .is_err(),
                "{cpu}"
            );
        }
        assert!(
            Limits {
                memory: Some(0),
                ..Limits::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            Limits {
                pids: Some(0),
                ..Limits::default()
            }
            .validate()
            .is_err()
        );
        assert!(Limits::default().is_unlimited());
        let default_only = Limits {
            default_pids: Some(2048),
            ..Limits::default()
        };
        assert!(default_only.is_unlimited(), "a default is not a request");
        assert_eq!(default_only.pids_max(), Some(2048));
        let asked = Limits {
            pids: Some(10),
            ..default_only
        };
        assert_eq!(asked.pids_max(), Some(10));
    }
}
