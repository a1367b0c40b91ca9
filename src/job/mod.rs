//! The job stage: from a request to a running container. It gets the image (`image`: one pull policy,
//! one parse of the reference), plans the whole Spec with the GPUs leased ([`plan`]), and launches it
//! (`launch`), recording the container into its run and waiting for its end. `request` turns a workflow
//! into a request with its mounts, `workflow` and `adhoc` are the two kinds of job, `machine` checks the
//! host's resources before anything starts.

pub mod adhoc;
pub mod image;
pub mod launch;
pub mod machine;
pub mod request;
pub mod workflow;

use oci_spec::runtime::Spec;
use runtime::gpu::{GpuLease, GpuRequest};
use runtime::image::store::Image;
use runtime::net::Network;

use crate::plan::{self, Host, JobRequest, PlanError, UserFiles};

/// What a run's name (`${{ run.name }}`, `RUN_NAME`) reads as before the run exists (checks, `--dry-run`).
pub const UNNAMED: &str = "<run-name>";

/// The Spec the container receives, and the lease of the GPUs it names (held until the job ends).
pub struct Planned {
    pub spec: Spec,
    pub gpus: Option<GpuLease>,
}

/// Why a job could not be planned: the plan itself, or its GPUs.
#[derive(Debug, thiserror::Error)]
pub enum PlanJobError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Network(runtime::net::NetError),
    #[error(transparent)]
    Gpu(#[from] runtime::gpu::GpuError),
}

impl PlanJobError {
    /// What was being done, for the run's failure message.
    pub fn what(&self, image: &impl std::fmt::Display) -> String {
        match self {
            PlanJobError::Plan(_) => format!("planning {image}"),
            PlanJobError::Network(_) => "setting up the job's network".to_string(),
            PlanJobError::Gpu(_) => "giving the job its GPUs".to_string(),
        }
    }
}

/// The whole plan of a job: [`plan::plan`], then its GPUs leased and added. `network` is collected first
/// when GPUs are asked for: GPU discovery asks NVML from a forked child, which wants a single-threaded
/// process.
pub fn plan(
    req: &JobRequest,
    image: &Image,
    users: &UserFiles,
    host: &Host,
    gpu: Option<&GpuRequest>,
    network: Option<&mut Network>,
) -> Result<Planned, PlanJobError> {
    let mut spec = plan::plan(req, &image.config, users, host)?;
    let gpus = match gpu {
        Some(request) => {
            if let Some(net) = network {
                net.ready().map_err(PlanJobError::Network)?;
            }
            Some(runtime::gpu::apply(&mut spec, request)?)
        }
        None => None,
    };
    Ok(Planned { spec, gpus })
}
