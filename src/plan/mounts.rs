//! The job's mounts: Docker's defaults (from the runtime's default spec), the request's host paths, and the
//! bind mounts of the `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` the runtime writes at start.

use std::path::Path;

use oci_spec::runtime::{MountBuilder, Spec};

use super::{Host, JobRequest, PlanError};

/// Adds the request's bind mounts, then the `/etc` files' (unless the request mounts something there).
pub(super) fn set_mounts(spec: &mut Spec, req: &JobRequest, host: &Host) -> Result<(), PlanError> {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for m in &req.mounts {
        if !m.source.is_absolute() {
            return Err(PlanError::RelativeMount(m.source.clone()));
        }
        let mut options = vec!["rbind".to_string(), "rprivate".to_string()];
        if m.readonly {
            options.push("ro".into());
        }
        mounts.push(
            MountBuilder::default()
                .destination(Path::new("/").join(&m.destination))
                .typ("bind")
                .source(m.source.clone())
                .options(options)
                .build()
                .map_err(|e| PlanError::Invalid(e.to_string()))?,
        );
    }
    spec.set_mounts(Some(mounts));
    let staged = runtime::container::staged_etc_dir(&host.state_root, &req.container_id);
    runtime::container::add_etc_file_mounts(spec, &staged)
        .map_err(|e| PlanError::Invalid(e.to_string()))
}
