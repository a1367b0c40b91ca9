//! Shell completions and man pages, made from the command line's own definition so they never drift from
//! it. Both binaries use this file (`dstack-oci` through `#[path]`): `NAME completions SHELL` and
//! `NAME man DIR`.

use std::path::{Path, PathBuf};

pub use clap_complete::Shell;

#[derive(Debug, thiserror::Error)]
#[error("cannot write man pages to {}", dir.display())]
pub struct ManPagesError {
    dir: PathBuf,
    #[source]
    source: std::io::Error,
}

/// Prints `shell`'s completion script for `command` on stdout.
pub fn print_completions(shell: Shell, mut command: clap::Command) {
    let name = command.get_name().to_string();
    clap_complete::generate(shell, &mut command, name, &mut std::io::stdout());
}

/// Writes one man page per visible command into `dir` (made if missing): `NAME.1`, `NAME-SUB.1`,
/// `NAME-SUB-SUBSUB.1`. Returns how many.
pub fn write_man_pages(command: clap::Command, dir: &Path) -> Result<usize, ManPagesError> {
    let error = |source| ManPagesError {
        dir: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(error)?;
    let pages = page_count(&command);
    clap_mangen::generate_to(command, dir).map_err(error)?;
    Ok(pages)
}

/// The command and its visible subcommands, as `clap_mangen::generate_to` writes them (no `help`).
fn page_count(command: &clap::Command) -> usize {
    1 + command
        .get_subcommands()
        .filter(|c| !c.is_hide_set() && c.get_name() != "help")
        .map(page_count)
        .sum::<usize>()
}
