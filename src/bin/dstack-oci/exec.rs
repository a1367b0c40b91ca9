//! `exec ID -- ARGS` or `exec --process FILE ID`: a new process in a running container. Unless given as a
//! whole (`--process`), it starts from the container's own process (user, env, cwd, capabilities,
//! rlimits, no_new_privs) with these arguments, and gets the container's seccomp profile.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use oci_spec::runtime::Process;
use runtime::container::exec::{ConsoleTarget, ExecOptions, exec as exec_in};

use crate::Globals;
use crate::error::{CmdResult, Failure, fail};
use crate::record::{self, Status};

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The process as JSON (the runtime spec's `process` object)
    #[arg(short, long, value_name = "FILE")]
    pub process: Option<PathBuf>,
    /// Give the process a terminal (sent to --console-socket)
    #[arg(short, long)]
    pub tty: bool,
    /// A unix socket to send the terminal's master to
    #[arg(long, value_name = "SOCKET")]
    pub console_socket: Option<PathBuf>,
    /// Add an environment variable K=V
    #[arg(short, long, value_name = "K=V")]
    pub env: Vec<String>,
    /// The working directory
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// UID[:GID]
    #[arg(short, long, value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// Set no_new_privs
    #[arg(long)]
    pub no_new_privs: bool,
    /// Return at once instead of waiting for the process
    #[arg(short, long)]
    pub detach: bool,
    /// Write the process's pid to this file
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    pub id: String,
    /// The command and its arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

fn process_of(args: &ExecArgs, base: Option<Process>) -> Result<Process, Failure> {
    if let Some(path) = &args.process {
        let text = std::fs::read_to_string(path).map_err(fail(path.display()))?;
        return runtime::text::parse_json(text.as_bytes()).map_err(fail(path.display()));
    }
    if args.args.is_empty() {
        return Err(Failure::new(
            "exec needs a command (after the id) or --process FILE",
        ));
    }
    let mut p = base.unwrap_or_default();
    p.set_args(Some(args.args.clone()));
    p.set_terminal(Some(args.tty));
    let mut env = p.env().clone().unwrap_or_default();
    env.extend(args.env.iter().cloned());
    p.set_env(Some(env));
    if let Some(cwd) = &args.cwd {
        p.set_cwd(cwd.clone());
    }
    if let Some(user) = &args.user {
        let (uid, gid) = user.split_once(':').unwrap_or((user, "0"));
        let parse = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| Failure::new(format!("--user {user}: use numeric UID[:GID]")))
        };
        let mut u = p.user().clone();
        u.set_uid(parse(uid)?);
        u.set_gid(parse(gid)?);
        u.set_additional_gids(None);
        p.set_user(u);
    }
    if args.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    Ok(p)
}

pub fn exec(globals: &Globals, args: ExecArgs) -> CmdResult {
    let (locked, rec) = record::load(globals, &args.id)?;
    if rec.status(&locked.dir) != Status::Running {
        return Err(Failure::new(format!(
            "container {} is not running",
            args.id
        )));
    }
    let spec = record::config(&locked.dir)?;
    let process = process_of(&args, spec.process().clone())?;
    if process.terminal().unwrap_or(false) && args.console_socket.is_none() && args.detach {
        return Err(Failure::new("a detached terminal needs --console-socket"));
    }
    // Opened before exec joins the container's mount namespace, where this path means something else.
    let pid_file = match &args.pid_file {
        Some(p) => Some(std::fs::File::create(p).map_err(fail(p.display()))?),
        None => None,
    };
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
    let options = ExecOptions {
        seccomp: seccomp.as_ref(),
        console: args.console_socket.clone().map(ConsoleTarget::Socket),
    };
    drop(locked);
    let child = exec_in(rec.pid, &process, &options).map_err(|e| Failure {
        code: e.exit_code().clamp(1, 255) as u8,
        message: runtime::report::chain(&e),
    })?;
    if let Some(mut f) = pid_file {
        std::io::Write::write_all(&mut f, child.to_string().as_bytes())
            .map_err(fail("--pid-file"))?;
    }
    if args.detach {
        return Ok(ExitCode::SUCCESS);
    }
    let code = crate::signals::wait_forwarding(child);
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}
