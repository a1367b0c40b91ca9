//! `dstack artifacts list|download`.

use std::process::ExitCode;

use crate::cli::ArtifactsCommand;
use crate::error::{CliResult, Context as _};
use crate::runs::artifacts;
use runtime::container::human_size;

pub fn artifacts(cmd: ArtifactsCommand) -> CliResult<ExitCode> {
    let store = crate::slurm::visible_runs(&runtime::paths::state_root());
    match cmd {
        ArtifactsCommand::List { run, json } => {
            let view = store.get(&run)?;
            let listed = artifacts::list(&view.artifacts_dir(), &view.record.artifacts);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&listed).expect("summaries serialize")
                );
                return Ok(ExitCode::SUCCESS);
            }
            if listed.is_empty() {
                eprintln!("{} has no artifacts", view.record.name);
                return Ok(ExitCode::SUCCESS);
            }
            let mut rows = vec![["PATH".to_string(), "FILES".to_string(), "SIZE".to_string()]];
            for a in listed {
                rows.push([a.path, a.files.to_string(), human_size(a.size)]);
            }
            super::table::print_table(&rows);
        }
        ArtifactsCommand::Download { run, output } => {
            let view = store.get(&run)?;
            let out = match output {
                Some(dir) => dir,
                None => std::env::current_dir().context("finding the current directory")?,
            };
            if view.live {
                eprintln!(
                    "note: {} is still going; its artifacts may be incomplete",
                    view.record.name
                );
            }
            let copied = artifacts::download(&view.artifacts_dir(), &view.record.artifacts, &out)
                .context(format!("downloading the artifacts of {}", view.record.name))?;
            eprintln!(
                "{} file{} ({}) to {}",
                copied.files,
                if copied.files == 1 { "" } else { "s" },
                human_size(copied.bytes),
                out.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
