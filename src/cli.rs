//! The command line: every subcommand and flag, and nothing else. Each command's work lives in
//! `commands/<name>.rs`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// `dstack --version`: the release, the commit it was built from and the build kind (native or portable).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("DSTACK_COMMIT"),
    ", ",
    env!("DSTACK_BUILD"),
    " build)"
);

#[derive(Debug, Parser)]
#[command(
    name = "dstack",
    version = VERSION,
    about = "Run dstack workflows in containers, without a Docker daemon"
)]
pub struct Cli {
    /// Show what happens underneath (repeat for more: --verbose --verbose). No `-v`: that is a volume, as
    /// in Docker
    #[arg(long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a workflow (`dstack run NAME [ARGS]`) or an image (`dstack run docker IMAGE [-c CMD]...`)
    #[command(disable_help_flag = false)]
    Run(RunArgs),
    /// Pull an image into the local store
    Pull(PullArgs),
    /// List the images in the local store
    Images(ListArgs),
    /// Remove images from the local store
    Rmi(RmiArgs),
    /// Remove what is no longer needed
    #[command(subcommand)]
    Prune(PruneCommand),
    /// List runs (running ones; -a for all)
    Ps(PsArgs),
    /// Show a run's output
    Logs(LogsArgs),
    /// Stop a running run
    Stop(StopArgs),
    /// Run a command in a running job (`dstack exec RUN [-- CMD ...]`; default: the job user's shell)
    Exec(ExecArgs),
    /// Remove finished runs and their records
    Rm(RmArgs),
    /// List or download a run's artifacts
    #[command(subcommand)]
    Artifacts(ArtifactsCommand),
    /// Manage the project's secrets
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Show what this machine offers dstack (limits, rootless, overlay, network, GPUs, Slurm) and what to do
    /// about each missing piece
    Info(InfoArgs),
    /// Print a shell completion script: `dstack completions bash > /etc/bash_completion.d/dstack`
    Completions(CompletionsArgs),
    /// Write the man pages (one per command) into a directory: `dstack man /usr/local/share/man/man1`
    Man(ManArgs),
    /// Runs a submitted workflow inside its Slurm job (the batch script calls it)
    #[command(name = "__slurm-job", hide = true)]
    SlurmJob(SlurmJobArgs),
}

/// `dstack run`: flags first, then the workflow name (or `docker`), then everything else verbatim.
/// The ad hoc `docker` form parses its own flags (see `commands::run_docker`), so they may come before or after
/// the image.
#[derive(Debug, Args)]
#[command(trailing_var_arg = true)]
pub struct RunArgs {
    /// Return at once and leave the run going in the background
    #[arg(short, long)]
    pub detach: bool,
    /// Print the plan (image, command, environment, mounts, limits, ports) and stop
    #[arg(long)]
    pub dry_run: bool,
    /// When to pull the image: missing (default), always, never
    #[arg(long, value_name = "POLICY", default_value = "missing")]
    pub pull: String,
    /// Submit the workflow to Slurm as a batch job (the default when .dstack/slurm.yaml says so)
    #[arg(long, conflicts_with = "local")]
    pub slurm: bool,
    /// Run on this machine even when .dstack/slurm.yaml makes Slurm the default
    #[arg(long)]
    pub local: bool,
    /// The workflow to run, or `docker` for an ad hoc image run
    pub target: String,
    /// The workflow's arguments (`${{ run.args }}`), or the ad hoc form's image, command and flags
    #[arg(allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SlurmJobArgs {
    /// The state directory holding the run's record (`runs/<run>/`)
    #[arg(long)]
    pub state_dir: PathBuf,
    /// The run
    pub run: String,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image, as Docker users write it: `ubuntu`, `ghcr.io/org/img:tag`, `host:5000/repo@sha256:...`
    pub image: String,
    /// Pick this platform from a multi-platform image: `os/arch[/variant]`
    #[arg(long)]
    pub platform: Option<String>,
    /// Registry credentials, `USER:PASS` (else the usual credential files are used)
    #[arg(long, value_name = "USER:PASS")]
    pub creds: Option<String>,
    /// Print only the image digest
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Images to remove
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum PruneCommand {
    /// Remove blobs and layers that no image references
    Images,
    /// Empty the cache of a workflow in this project
    Cache {
        /// The workflow whose cache to remove
        workflow: String,
    },
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show finished runs too
    #[arg(short, long)]
    pub all: bool,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub run: String,
    /// Keep printing new output until the run ends
    #[arg(short, long)]
    pub follow: bool,
}

/// `dstack exec RUN [-- CMD ...]`.
#[derive(Debug, Args)]
#[command(trailing_var_arg = true)]
pub struct ExecArgs {
    /// Keep stdin open (it always is; accepted as Docker writes `-i`)
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the command a terminal (the default when stdin and stdout are terminals)
    #[arg(short, long)]
    pub tty: bool,
    /// The run to enter
    pub run: String,
    /// The command and its arguments (default: the job user's login shell, else /bin/sh)
    #[arg(allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// The run to stop
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub run: Option<String>,
    /// Stop every running run
    #[arg(long)]
    pub all: bool,
    /// Abort: kill at once instead of a graceful stop (artifacts are still saved)
    #[arg(short = 'x', long)]
    pub abort: bool,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// The run to remove
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub run: Option<String>,
    /// Remove every finished run
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Subcommand)]
pub enum ArtifactsCommand {
    /// List a run's artifacts: path, files, size
    List {
        run: String,
        #[arg(long)]
        json: bool,
    },
    /// Copy a run's artifacts to a directory
    Download {
        run: String,
        /// Where to put them (default: the current directory)
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Add or replace a secret; prompts for the value (without echo) when it is not given
    Add { name: String, value: Option<String> },
    /// List the secrets' names
    List,
    /// Delete a secret
    Delete { name: String },
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    pub shell: crate::manuals::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Where to write the pages (made if missing)
    pub dir: PathBuf,
}
