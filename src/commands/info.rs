//! `dstack info`: what this machine offers dstack, one line per concern and what to do about each missing
//! piece; `--json` for scripts. The probes live in `crate::probes`.

use std::process::ExitCode;

use crate::cli::InfoArgs;
use crate::error::CliResult;
use crate::probes;

pub fn info(args: InfoArgs) -> CliResult<ExitCode> {
    let sections = probes::all();
    if args.json {
        let mut json = serde_json::Map::new();
        let mut hints = serde_json::Map::new();
        for s in sections {
            if let Some(hint) = s.hint {
                hints.insert(s.name.to_string(), hint.into());
            }
            json.insert(s.name.to_string(), s.json);
        }
        json.insert("hints".into(), hints.into());
        println!(
            "{}",
            serde_json::to_string_pretty(&json).expect("JSON values serialize")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let width = sections.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in sections {
        println!("{:width$}  {}", s.name, s.summary);
        if let Some(hint) = s.hint {
            println!("{:width$}  -> {hint}", "");
        }
    }
    Ok(ExitCode::SUCCESS)
}
