//! The seam between run records and a batch scheduler (Slurm, in `crate::slurm`): a run whose job was
//! submitted elsewhere has no supervisor here, so its liveness and its stop go through the scheduler that
//! holds its job. `runs` knows only this trait; the scheduler module implements it.

use std::error::Error as StdError;
use std::fmt;

use super::{SlurmRecord, Status, StopRequest};

/// The scheduler's word on a submitted job whose supervisor does not hold the run's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Pending, requeued, or started and not yet holding the lock.
    Active,
    /// It ended without recording its end: how the run ended, why, and the scheduler's state name.
    Ended {
        status: Status,
        message: String,
        state: Option<String>,
    },
    /// The scheduler cannot be asked (no commands here, controller down): end nothing on a guess.
    Unknown,
}

/// A scheduler's failure, boxed so that `runs` names no scheduler's error type.
pub type SchedulerError = Box<dyn StdError + Send + Sync>;

/// What the run store asks of the scheduler that holds a run's job.
pub trait Scheduler: fmt::Debug + Send + Sync {
    /// Whether the job is still going, and if not how the run ended (`stop`: what `dstack stop` asked).
    fn state(&self, job: &SlurmRecord, stop: Option<StopRequest>) -> JobState;
    /// Delivers `dstack stop`'s request to the job (`submitted`: it has not started yet).
    fn stop(
        &self,
        job: &SlurmRecord,
        how: StopRequest,
        submitted: bool,
    ) -> Result<(), SchedulerError>;
    /// Ends a job that did not end on `stop`'s signal.
    fn kill(&self, job: &SlurmRecord) -> Result<(), SchedulerError>;
}
