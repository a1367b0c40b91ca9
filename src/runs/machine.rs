//! What this machine has (memory, CPUs), and whether a workflow's CPU and memory requests fit in it.
//! Checked before anything starts, so an impossible request fails at once and says what is available.
//! GPUs are the runtime's (`runtime::gpu`), which knows the driver and the other jobs' leases.

use crate::workflow::{Resources, size};

#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    /// Bytes of RAM (0 when unknown).
    pub memory: u64,
    /// CPUs this process may use.
    pub cpus: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unmet(String);

impl Machine {
    /// This machine, from `/proc/meminfo` and the CPUs this process may run on.
    pub fn probe() -> Machine {
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| mem_total(&text))
            .unwrap_or(0);
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        Machine { memory, cpus }
    }

    /// "8 CPUs and 16.0 GiB of memory".
    pub fn summary(&self) -> String {
        format!(
            "{} CPU{} and {} of memory",
            self.cpus,
            if self.cpus == 1 { "" } else { "s" },
            size::human(self.memory)
        )
    }

    /// Fails when the CPU or memory `wanted` cannot be met here, naming what there is.
    pub fn check(&self, wanted: &Resources) -> Result<(), Unmet> {
        if let Some(cpu) = wanted.cpu
            && cpu > self.cpus as f64
        {
            return Err(Unmet(format!(
                "the workflow asks for {cpu} CPUs; this machine has {}",
                self.summary()
            )));
        }
        for (what, bytes) in [
            ("memory", wanted.memory),
            ("shared memory (shm_size)", wanted.shm_size),
        ] {
            if let Some(bytes) = bytes
                && self.memory > 0
                && bytes > self.memory
            {
                return Err(Unmet(format!(
                    "the workflow asks for {} of {what}; this machine has {}",
                    size::human(bytes),
                    self.summary()
                )));
            }
        }
        Ok(())
    }
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            memory: 16 << 30,
            cpus: 8,
        }
    }

    #[test]
    fn what_fits_passes() {
        let fits = Resources {
            cpu: Some(7.5),
            memory: Some(8 << 30),
            shm_size: Some(1 << 30),
            ..Resources::default()
        };
        assert_eq!(machine().check(&fits), Ok(()));
    }

    #[test]
    fn too_much_memory_or_cpu_says_what_there_is() {
        let m = machine();
        let memory = Resources {
            memory: Some(64 << 30),
            ..Resources::default()
        };
        assert_eq!(
            m.check(&memory).unwrap_err().to_string(),
            "the workflow asks for 64.0 GiB of memory; this machine has 8 CPUs and 16.0 GiB of memory"
        );
        let shm = Resources {
            shm_size: Some(32 << 30),
            ..Resources::default()
        };
        assert!(
            m.check(&shm)
                .unwrap_err()
                .to_string()
                .contains("of shared memory (shm_size)")
        );
        let cpu = Resources {
            cpu: Some(16.0),
            ..Resources::default()
        };
        assert_eq!(
            m.check(&cpu).unwrap_err().to_string(),
            "the workflow asks for 16 CPUs; this machine has 8 CPUs and 16.0 GiB of memory"
        );
    }

    #[test]
    fn reads_meminfo() {
        assert_eq!(
            mem_total("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            Some(24_576_000 * 1024)
        );
        assert_eq!(mem_total("nothing"), None);
    }
}
