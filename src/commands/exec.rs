//! `dstack exec RUN [-- CMD ...]`: a command in a running job, as the job runs (its namespaces, cgroup,
//! root, environment, user, working directory, capabilities and seccomp profile), with a terminal when
//! ours is one. The joining is the runtime's (`container::attach`); a Slurm run is reached on its node
//! through `srun --overlap`.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use runtime::container::attach::run_attached;
use runtime::inroot::{Root, Scope};

use crate::cli::ExecArgs;
use crate::error::{CliError, CliResult, Context as _};
use crate::runs::{RunView, SlurmRecord, Status};

/// The command when none is given and the job's user has no login shell in the image.
const FALLBACK_SHELL: &str = "/bin/sh";

pub fn exec(args: ExecArgs) -> CliResult<ExitCode> {
    let store = crate::slurm::visible_runs(&runtime::paths::state_root());
    let view = store.get(&args.run)?;
    let record = &view.record;
    match record.status {
        Status::Running if view.live => {}
        Status::Submitted | Status::Pulling if view.live => {
            return Err(CliError::new(format!(
                "run `{}` is not running yet ({}): try again once `dstack ps` says running",
                record.name, record.status
            )));
        }
        // Its job has ended, even while its artifacts are being saved (`uploading`).
        status => {
            return Err(CliError::new(format!(
                "run `{}` has ended ({status}): there is no job to exec into",
                record.name
            )));
        }
    }
    if let Some(job) = &record.slurm
        && !on_the_jobs_node(job)
    {
        return through_srun(job, &args);
    }
    let terminal = args.tty || (std::io::stdin().is_terminal() && std::io::stdout().is_terminal());
    let code = exec_local(&view, args.command, terminal)?;
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// Joins the job on this machine and runs `command` (the user's shell when empty); its exit code.
fn exec_local(view: &RunView, command: Vec<String>, terminal: bool) -> CliResult<i32> {
    let name = &view.record.name;
    let base = view.exec_base()?.ok_or_else(|| {
        CliError::new(format!(
            "run `{name}` has no job to exec into (it ended, or an older dstack started it)"
        ))
    })?;
    let Some(pid) = view.record.container_pid else {
        return Err(CliError::new(format!(
            "run `{name}` has no container recorded"
        )));
    };
    // Init is the supervisor's child: a pid that is not was freed since (the run ended) and reused.
    if parent_of(pid) != view.record.supervisor_pid {
        return Err(CliError::new(format!(
            "run `{name}` has ended: there is no job to exec into"
        )));
    }
    let mut process = base.process;
    let command = if command.is_empty() {
        vec![login_shell(pid, process.user().uid())]
    } else {
        command
    };
    process.set_args(Some(command));
    process.set_terminal(Some(terminal));
    run_attached(pid, &process, base.seccomp.as_ref()).map_err(|e| {
        let code = e.exit_code().clamp(1, 255) as u8;
        CliError::new(format!("exec in `{name}`: {}", runtime::report::Chain(&e)))
            .with_exit_code(code)
    })
}

/// The parent of `pid`, from `/proc/PID/stat` (after the command's name, which may hold anything).
fn parent_of(pid: i32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// On a Slurm run's node the supervisor is local; Slurm tells a step which job it belongs to.
fn on_the_jobs_node(job: &SlurmRecord) -> bool {
    std::env::var("SLURM_JOB_ID").is_ok_and(|id| id == job.job_id)
}

/// `srun --overlap --jobid=ID [--pty] dstack exec ...`: the same command, on the node that runs the job.
fn through_srun(job: &SlurmRecord, args: &ExecArgs) -> CliResult<ExitCode> {
    let dstack = std::env::current_exe().context("finding the dstack binary to run on the node")?;
    let terminal = args.tty || (std::io::stdin().is_terminal() && std::io::stdout().is_terminal());
    let line = srun_line(&job.job_id, &dstack, args, terminal);
    let status = std::process::Command::new("srun")
        .args(&line)
        .status()
        .context("running srun to reach the run's node")?;
    let code = status
        .code()
        .or_else(|| std::os::unix::process::ExitStatusExt::signal(&status).map(|s| 128 + s))
        .unwrap_or(1);
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// srun's arguments: the job's step with a pty when one is wanted, running this same command there.
fn srun_line(job_id: &str, dstack: &Path, args: &ExecArgs, terminal: bool) -> Vec<String> {
    let mut line = vec![
        "--overlap".to_string(),
        format!("--jobid={job_id}"),
        "--quiet".to_string(),
    ];
    if terminal {
        line.push("--pty".into());
    }
    line.push(dstack.display().to_string());
    line.push("exec".into());
    if terminal {
        line.push("-t".into());
    }
    line.push(args.run.clone());
    if !args.command.is_empty() {
        line.push("--".into());
        line.extend(args.command.iter().cloned());
    }
    line
}

/// The login shell of `uid` in the job's `/etc/passwd`, when the image has it; else `/bin/sh`. Read
/// through the job's root (`/proc/PID/root`), never following a link out of it.
fn login_shell(pid: i32, uid: u32) -> String {
    let root_dir = format!("/proc/{pid}/root");
    let Ok(root) = Root::open(Path::new(&root_dir), Scope::InRoot) else {
        return FALLBACK_SHELL.into();
    };
    // Non-blocking, a regular file, at most 1 MiB: the image may put a FIFO or a huge file there.
    let passwd = root
        .open_with(Path::new("/etc/passwd"), libc::O_RDONLY | libc::O_NONBLOCK)
        .ok()
        .map(std::fs::File::from)
        .filter(|f| f.metadata().is_ok_and(|m| m.is_file()))
        .and_then(|f| std::io::read_to_string(std::io::Read::take(f, 1 << 20)).ok())
        .unwrap_or_default();
    match shell_of(&passwd, uid) {
        Some(shell) if root.open_path(Path::new(shell)).is_ok() => shell.to_string(),
        _ => FALLBACK_SHELL.into(),
    }
}

/// The shell field of `uid`'s line in a passwd file.
fn shell_of(passwd: &str, uid: u32) -> Option<&str> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        let (id, shell) = (fields.get(2)?, fields.get(6)?);
        (id.parse() == Ok(uid) && shell.starts_with('/')).then_some(*shell)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_parent_is_read_from_proc() {
        let ours = std::os::unix::process::parent_id();
        assert_eq!(parent_of(std::process::id() as i32), Some(ours));
        assert_eq!(parent_of(i32::MAX), None);
    }

    #[test]
    fn the_shell_is_the_users_login_shell() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      nobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n\
                      odd:x:7:7\n\
                      rel:x:8:8::/:bin/sh\n";
        assert_eq!(shell_of(passwd, 0), Some("/bin/bash"));
        assert_eq!(shell_of(passwd, 65534), Some("/usr/sbin/nologin"));
        assert_eq!(shell_of(passwd, 7), None, "a short line has no shell");
        assert_eq!(shell_of(passwd, 8), None, "a relative shell is not trusted");
        assert_eq!(shell_of(passwd, 1000), None);
    }

    #[test]
    fn a_slurm_run_is_reached_through_srun_on_its_node() {
        let args = ExecArgs {
            interactive: false,
            tty: false,
            run: "brave-otter-1".into(),
            command: vec!["ls".into(), "-l".into()],
        };
        let dstack = Path::new("/opt/dstack");
        assert_eq!(
            srun_line("42", dstack, &args, false),
            [
                "--overlap",
                "--jobid=42",
                "--quiet",
                "/opt/dstack",
                "exec",
                "brave-otter-1",
                "--",
                "ls",
                "-l"
            ]
        );
        let shell = ExecArgs {
            command: Vec::new(),
            ..args
        };
        assert_eq!(
            srun_line("42", dstack, &shell, true),
            [
                "--overlap",
                "--jobid=42",
                "--quiet",
                "--pty",
                "/opt/dstack",
                "exec",
                "-t",
                "brave-otter-1"
            ]
        );
    }
}
