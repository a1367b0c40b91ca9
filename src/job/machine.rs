//! What this machine has (memory, CPUs), and whether a workflow's CPU and memory requests fit in it.
//! Checked before anything starts, so an impossible request fails at once and says what is available.
//! GPUs are the runtime's (`runtime::gpu`), which knows the driver and the other jobs' leases.

use runtime::container::human_size;

use crate::workflow::Resources;

#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    /// Bytes of RAM.
    pub memory: u64,
    /// CPUs this process may use.
    pub cpus: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unmet(String);

impl Machine {
    /// This machine: its RAM (as the planner reads it) and the CPUs this process may run on.
    pub fn probe() -> Machine {
        let memory = crate::plan::Host::current().memory;
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        Machine { memory, cpus }
    }

    /// "8 CPUs and 16 GiB of memory".
    pub fn summary(&self) -> String {
        format!(
            "{} CPU{} and {} of memory",
            self.cpus,
            if self.cpus == 1 { "" } else { "s" },
            human_size(self.memory)
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
                && bytes > self.memory
            {
                return Err(Unmet(format!(
                    "the workflow asks for {} of {what}; this machine has {}",
                    human_size(bytes),
                    self.summary()
                )));
            }
        }
        Ok(())
    }
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
            "the workflow asks for 64 GiB of memory; this machine has 8 CPUs and 16 GiB of memory"
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
            "the workflow asks for 16 CPUs; this machine has 8 CPUs and 16 GiB of memory"
        );
    }
}
