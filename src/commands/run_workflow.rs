//! `dstack run NAME [ARGS]`: a workflow from the project's `.dstack/workflows/`, run as a container with a
//! run record (or submitted to Slurm: `slurm::submit`). Parses and checks; the job is `job::workflow`'s,
//! the run's lifecycle `runs::supervised`'s.
//!
//! Everything that can be checked is checked before anything starts (the workflow, its secrets, the
//! machine's resources). Then a run is allocated and its name printed, the project is copied for
//! `/workflow`, the image pulled (with `registry_auth`), the job planned and started through the same
//! planner and runtime as `dstack run docker`, supervised to its end, and its artifacts saved however it
//! ends. `dstack` exits with the job's exit code.

use std::path::Path;
use std::process::ExitCode;

use crate::cli::RunArgs;
use crate::error::{CliError, CliResult};
use crate::job::image::PullPolicy;
use crate::job::machine::Machine;
use crate::job::workflow::{self, Checked, Site, UNNAMED};
use crate::plan::{self, SeccompChoice};
use crate::project::Project;
use crate::runs::supervised::{self, Masker};
use crate::runs::{RunRecord, RunStore, cache};
use runtime::container::seccomp_profile;

pub fn run_workflow(args: RunArgs) -> CliResult<ExitCode> {
    let args = own_flags(args);
    // Before the user namespace: sbatch must run as the user the cluster knows.
    if let Some((project, config)) = crate::slurm::submit::wanted(&args)? {
        return crate::slurm::submit::submit(args, project, config);
    }
    runtime::userns::enter_rootless_namespace()?;
    let state_root = runtime::paths::state_root();
    let project = Project::current()?;
    // Everything that can fail before a run exists fails here, with nothing started.
    let checked = Checked::new(&args.target, &args.rest, &project, &state_root)?;
    let pull: PullPolicy = args.pull.parse()?;
    let (secrets, mask) = (&checked.secrets, &checked.mask);
    let preview = checked.resolve(UNNAMED)?;
    plan::check_seccomp(&preview.seccomp.clone().relative_to(project.dir()))?;
    let machine = Machine::probe();
    machine.check(&preview.resources)?;
    if let Some(request) = workflow::gpu_request(&preview, UNNAMED) {
        // Discovery, matching and the other jobs' leases, on a throwaway spec; the lease ends at once.
        runtime::gpu::apply(&mut oci_spec::runtime::Spec::default(), &request).map_err(|e| {
            let also = match e {
                runtime::gpu::GpuError::NoGpu { .. } => format!("; it has {}", machine.summary()),
                _ => String::new(),
            };
            CliError::new(format!("{}{also}", runtime::report::Chain(&e)))
        })?;
    }
    if preview.resources.interruptible {
        eprintln!(
            "note: `interruptible` has no effect on a single machine; the run is not interrupted"
        );
    }
    if args.dry_run {
        return dry_run(&preview, &project, &state_root, secrets, pull, mask);
    }

    // What SIGKILLed supervisors left: scratch directories, cgroups, network interfaces and NAT rules.
    runtime::container::sweep_leftovers(&state_root);
    runtime::net::sweep_leftovers();
    let store = RunStore::new(&state_root);
    let record = RunRecord::new(
        "",
        &preview.name,
        project.dir().to_path_buf(),
        &mask.text(&preview.image),
    );
    let run = store.create(record)?;
    let resolved = match checked.resolve(run.name()) {
        Ok(resolved) => resolved,
        Err(err) => {
            let _ = run.discard();
            return Err(err);
        }
    };
    let Some(mut run) = supervised::begin(&store, run, args.detach)? else {
        return Ok(ExitCode::SUCCESS);
    };
    let site = Site {
        copy_from: Some(project.dir().to_path_buf()),
        cache: cache::workflow_dir(&state_root, &project, &resolved.name),
        slurm_limits: false,
    };
    let ended = workflow::execute(&mut run, &resolved, &site, &state_root, secrets, pull, mask);
    match ended {
        Ok(status) => {
            let code = status.code.clamp(0, 255) as u8;
            supervised::finish(&mut run, &status, mask);
            Ok(ExitCode::from(code))
        }
        Err(failure) => Err(supervised::record_failure(&mut run, failure, mask)),
    }
}

/// `dstack run NAME --slurm -d ARGS`: `--slurm`, `--local` and `-d` right after the name are `dstack`'s
/// (everything from the first other word, or after `--`, is the workflow's).
fn own_flags(mut args: RunArgs) -> RunArgs {
    let mut taken = 0;
    for word in &args.rest {
        match word.as_str() {
            "--slurm" => args.slurm = true,
            "--local" => args.local = true,
            "-d" | "--detach" => args.detach = true,
            "--" => {
                taken += 1;
                break;
            }
            _ => break,
        }
        taken += 1;
    }
    args.rest.drain(..taken);
    args
}

/// `--dry-run`: the plan as JSON, secrets masked; nothing is created.
fn dry_run(
    workflow: &crate::workflow::Workflow,
    project: &Project,
    state_root: &Path,
    secrets: &std::collections::BTreeMap<String, String>,
    pull: PullPolicy,
    mask: &Masker,
) -> CliResult<ExitCode> {
    let planned = workflow::dry_run(workflow, project, state_root, secrets, pull, mask)?;
    let seccomp = planned
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref());
    let seccomp = match &planned.request.seccomp {
        SeccompChoice::Default => format!(
            "Docker's default profile: {}",
            seccomp_profile::summary(seccomp)
        ),
        SeccompChoice::Unconfined => seccomp_profile::summary(None),
        SeccompChoice::File(path) => {
            format!("{}: {}", path.display(), seccomp_profile::summary(seccomp))
        }
    };
    let plan = serde_json::json!({
        "workflow": workflow.name,
        "project": project.dir(),
        "image": planned.image.reference,
        "ports": planned.ports,
        "artifacts": planned.mounts.artifacts,
        "volumes": crate::plan::recorded_volumes(&planned.request, &crate::plan::Host::current()),
        "seccomp": seccomp,
        "spec": planned.spec,
    });
    let text = serde_json::to_string_pretty(&plan).expect("plans serialize");
    println!("{}", mask.text(&text));
    Ok(ExitCode::SUCCESS)
}
