//! `dstack-oci`: a runc-compatible OCI runtime command line over dstack's `runtime` crate, so that tools
//! which drive runc (Slurm's `srun --container`, podman's `--runtime`, conmon, containerd shims) can run
//! containers with it. The lifecycle is the runtime spec's: `create` leaves the container waiting before
//! its program, `start` releases it, `delete` removes it; nothing ties a container to a `dstack-oci`
//! process. One file per command; the container itself is `runtime::container`'s.

mod create;
mod delete;
mod error;
mod exec;
mod features;
mod kill;
mod list;
mod log;
#[path = "../../manuals.rs"]
mod manuals;
mod record;
mod signals;
mod spec;
mod start;
mod state;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use error::Failure;

#[derive(Debug, Parser)]
#[command(
    name = "dstack-oci",
    version = concat!(
        env!("CARGO_PKG_VERSION"),
        " (commit ",
        env!("DSTACK_COMMIT"),
        ", ",
        env!("DSTACK_BUILD"),
        " build)\nspec: 1.2.0"
    ),
    about = "An OCI runtime (runc's command line) over dstack's container runtime"
)]
struct Cli {
    /// Where containers' state lives (default: /run/dstack-oci as root, $XDG_RUNTIME_DIR/dstack-oci otherwise)
    #[arg(long, global = true, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Write log messages (and errors) to this file instead of stderr
    #[arg(long, global = true, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Log format: text or json
    #[arg(long, global = true, default_value = "text", value_name = "FORMAT")]
    log_format: String,
    /// Debug logging
    #[arg(long, global = true)]
    debug: bool,
    /// Accepted for compatibility: cgroups are managed through cgroupfs, never systemd
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    /// Accepted for compatibility (true, false or auto): rootless mode follows the calling user
    #[arg(long, global = true, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    rootless: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a container from a bundle; its program waits for `start`
    Create(create::CreateArgs),
    /// Start a created container's program
    Start(start::StartArgs),
    /// Print a container's state (JSON)
    State(state::StateArgs),
    /// Send a signal to a container's init (and with --all, to all its processes)
    Kill(kill::KillArgs),
    /// Delete a container (its cgroup and state), after poststop hooks
    Delete(delete::DeleteArgs),
    /// Create and start a container; wait for it unless --detach
    Run(create::RunArgs),
    /// List containers
    List(list::ListArgs),
    /// Run a new process in a running container
    Exec(exec::ExecArgs),
    /// Print the features this runtime supports (JSON)
    Features,
    /// Write a default config.json for a bundle (with --rootless: for an unprivileged user)
    Spec(spec::SpecArgs),
    /// Print a shell completion script: `dstack-oci completions bash > /etc/bash_completion.d/dstack-oci`
    Completions {
        /// The shell to complete for
        shell: manuals::Shell,
    },
    /// Write the man pages (one per command) into a directory: `dstack-oci man /usr/local/share/man/man1`
    Man {
        /// Where to write the pages (made if missing)
        dir: PathBuf,
    },
}

/// Global options every command gets.
pub struct Globals {
    pub root: PathBuf,
}

fn default_root() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/run/dstack-oci");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("dstack-oci"),
        None => PathBuf::from(format!("/tmp/dstack-oci-{}", nix::unistd::getuid())),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match cli.log_format.as_str() {
        "json" => log::Format::Json,
        _ => log::Format::Text,
    };
    log::init(cli.log.as_deref(), format, cli.debug);
    if cli.systemd_cgroup {
        tracing::debug!("--systemd-cgroup: dstack-oci manages cgroups through cgroupfs");
    }
    let globals = Globals {
        root: cli.root.unwrap_or_else(default_root),
    };
    let result = match cli.command {
        Command::Create(a) => create::create(&globals, a),
        Command::Start(a) => start::start(&globals, a),
        Command::State(a) => state::state(&globals, a),
        Command::Kill(a) => kill::kill(&globals, a),
        Command::Delete(a) => delete::delete(&globals, a),
        Command::Run(a) => create::run(&globals, a),
        Command::List(a) => list::list(&globals, a),
        Command::Exec(a) => exec::exec(&globals, a),
        Command::Features => features::features(),
        Command::Spec(a) => spec::spec(a, cli.rootless.as_deref() == Some("true")),
        Command::Completions { shell } => {
            manuals::print_completions(shell, Cli::command());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir } => manuals::write_man_pages(Cli::command(), &dir)
            .map(|pages| {
                eprintln!("{pages} man pages written to {}", dir.display());
                ExitCode::SUCCESS
            })
            .map_err(|e| Failure::new(runtime::report::chain(&e))),
    };
    match result {
        Ok(code) => code,
        Err(Failure { message, code }) => {
            log::error(&message);
            ExitCode::from(code)
        }
    }
}
