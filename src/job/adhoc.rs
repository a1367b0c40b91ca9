//! An ad hoc job (`dstack run docker IMAGE ...`): no project copy, artifacts or cache; the image, its
//! network and the whole plan, started through [`super::launch`].

use runtime::container::ExitStatus;
use runtime::gpu::GpuRequest;
use runtime::image::registry::RegistryOptions;
use runtime::image::store::{Image, ImageName, Store};
use runtime::net::{Network, NetworkConfig};

use super::image::{self, PullPolicy};
use super::launch::{self, Launch};
use super::{Planned, UNNAMED};

use crate::error::{CliResult, Context as _};
use crate::plan::{Host, JobRequest, UserFiles};
use crate::runs::supervised::{Failure, Masker, START_FAILED};
use crate::runs::{ActiveRun, Status};

/// What an ad hoc run starts, once its run exists.
pub struct AdHocJob {
    /// The request; its `container_id` is also the hostname.
    pub req: JobRequest,
    /// The image reference, parsed once.
    pub image: ImageName,
    pub gpu: Option<GpuRequest>,
    /// Mode and ports; the id is the container's.
    pub network: NetworkConfig,
    pub pull: PullPolicy,
}

impl AdHocJob {
    /// Pulls when needed, networks, plans and runs the job to its end.
    pub fn execute(mut self, run: &mut ActiveRun, mask: &Masker) -> Result<ExitStatus, Failure> {
        let images = Store::open_default()
            .map_err(|e| mask.failure("opening the image store", &e, START_FAILED))?;
        let image = image::acquire(
            &images,
            &self.image,
            self.pull,
            &RegistryOptions::default(),
            || {
                let _ = run.set_status(Status::Pulling);
            },
        )
        .map_err(|e| Failure {
            message: mask.text(&format!("pulling {}: {}", self.req.image, e)),
            code: START_FAILED,
        })?;
        self.network.id = self.req.container_id.clone();
        let mut network = Network::prepare(&self.network)
            .map_err(|e| mask.failure("setting up the job's network", &e, START_FAILED))?;
        let ports = network.ports().to_vec();
        inject_env(&mut self.req, &ports, run.name());
        let users = UserFiles::read(&image.layer_dirs);
        let planned = super::plan(
            &self.req,
            &image,
            &users,
            &Host::current(),
            self.gpu.as_ref(),
            Some(&mut network),
        )
        .map_err(|e| mask.failure(&e.what(&image.reference), &e, START_FAILED))?;
        let launch = Launch {
            id: self.req.container_id.clone(),
            strict_limits: self.req.strict_limits,
            log_file: Some(run.log_path()),
            network: Some(network),
            gpus: planned.gpus,
            in_current_cgroup: false,
        };
        launch::start_and_wait(run, &images, &image, planned.spec, launch, &ports, mask)
    }
}

/// The variables dstack gives an ad hoc job, before the user's `-e` so that those win: its published
/// ports and its run's name.
pub fn inject_env(req: &mut JobRequest, ports: &[u16], run_name: &str) {
    let mut env = crate::plan::network::port_env(ports);
    env.push(("RUN_NAME".into(), run_name.to_string()));
    env.append(&mut req.env);
    req.env = env;
}

/// `--dry-run`: the image (pulled if needed) and the whole plan, GPUs included; nothing is started. The
/// run's name reads [`UNNAMED`] and each of its `ports` 0: they are chosen when a run starts.
pub fn dry_run(
    req: &JobRequest,
    ports: u16,
    name: &ImageName,
    pull: PullPolicy,
    gpu: Option<&GpuRequest>,
) -> CliResult<(Image, Planned)> {
    let store = Store::open_default()?;
    let image = image::acquire(&store, name, pull, &RegistryOptions::default(), || {})
        .context(format!("pulling {}", req.image))?;
    let mut req = req.clone();
    inject_env(&mut req, &vec![0; ports.into()], UNNAMED);
    let users = UserFiles::read(&image.layer_dirs);
    let planned = match super::plan(&req, &image, &users, &Host::current(), gpu, None) {
        Ok(planned) => planned,
        Err(super::PlanJobError::Gpu(e)) => return Err(e.into()),
        Err(e) => return Err(e).context(format!("planning {}", image.reference)),
    };
    Ok((image, planned))
}
