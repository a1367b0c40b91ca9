//! The job's seccomp filter: Docker's default profile, none, or a Docker profile file.

use oci_spec::runtime::{LinuxSeccomp, Spec};
use runtime::container::seccomp_profile;

use super::{PlanError, SeccompChoice};

/// Reads a profile file once before a run exists, so that a bad one stops the run before it starts.
pub fn check_seccomp(choice: &SeccompChoice) -> Result<(), PlanError> {
    match choice {
        SeccompChoice::File(path) => seccomp_profile::load(path, &Default::default())
            .map(drop)
            .map_err(|e| PlanError::Seccomp(runtime::report::chain(&e))),
        _ => Ok(()),
    }
}

/// The seccomp profile `choice` gives a job of `spec`'s bounding capabilities (Docker decides by them).
pub(super) fn seccomp_profile(
    choice: &SeccompChoice,
    spec: &Spec,
) -> Result<Option<LinuxSeccomp>, PlanError> {
    let bounding = spec
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
        .and_then(|c| c.bounding().clone())
        .unwrap_or_default();
    match choice {
        SeccompChoice::Default => Ok(Some(seccomp_profile::docker_default(&bounding))),
        SeccompChoice::Unconfined => Ok(None),
        SeccompChoice::File(path) => seccomp_profile::load(path, &bounding)
            .map(Some)
            .map_err(|e| PlanError::Seccomp(runtime::report::chain(&e))),
    }
}
