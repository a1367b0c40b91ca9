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
    /// Devices the job may use (as root); `None` leaves device access as the parent allows.
    pub devices: Option<DevicePolicy>,
}

impl Limits {
    /// True when no CPU, memory or pids limit is asked for (devices aside).
    pub fn is_unlimited(&self) -> bool {
        self.cpu.is_none() && self.memory.is_none() && self.pids.is_none()
    }

    /// The CFS quota per `CPU_PERIOD_US` for the CPU limit.
    pub(crate) fn cpu_quota_us(&self) -> Option<u64> {
        self.cpu
            .map(|cores| (cores * CPU_PERIOD_US as f64).round() as u64)
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
                    MIN_QUOTA_US as f64 / CPU_PERIOD_US as f64
                )));
            }
        }
        if self.memory == Some(0) {
            return Err(CgroupError::InvalidLimit(
                "memory limit must be more than 0 bytes".into(),
            ));
        }
        if self.pids == Some(0) {
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
    }
}
