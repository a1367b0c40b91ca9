//! Steps init runs inside the container on behalf of other modules: the container decides when they run,
//! the module that registers one decides what it does (`gpu` fills one; the container never calls it by name).

use oci_spec::runtime::Spec;

/// A step of init's set-up inside the container, run after pivot_root, the sysctls and the masked and
/// read-only paths, before a read-only root is remounted and the job starts, still as root there.
pub trait InContainerStep: Sync {
    /// Does nothing when `spec` does not ask for it; an error is reported as the start's failure.
    fn run(&self, spec: &Spec) -> Result<(), String>;
}
