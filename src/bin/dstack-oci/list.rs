//! `list [--format table|json] [-q]`: the containers under `--root`.

use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use crate::Globals;
use crate::error::CmdResult;
use crate::record;

#[derive(Debug, Args)]
pub struct ListArgs {
    /// table or json
    #[arg(short, long, default_value = "table")]
    pub format: String,
    /// Only the ids
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn list(globals: &Globals, args: ListArgs) -> CmdResult {
    let mut ids: Vec<String> = std::fs::read_dir(&globals.root)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    let mut rows = Vec::new();
    for id in ids {
        if let Ok((locked, rec)) = record::load(globals, &id) {
            let status = rec.status(&locked.dir);
            rows.push((rec, status));
        }
    }
    if args.quiet {
        for (rec, _) in &rows {
            println!("{}", rec.id);
        }
    } else if args.format == "json" {
        let list: Vec<_> = rows
            .iter()
            .map(|(rec, status)| {
                json!({
                    "ociVersion": rec.oci_version,
                    "id": rec.id,
                    "pid": if status.as_str() == "stopped" { 0 } else { rec.pid },
                    "status": status.as_str(),
                    "bundle": rec.bundle,
                    "rootfs": rec.bundle.join("rootfs"),
                    "created": rec.created,
                    "owner": rec.owner,
                    "annotations": rec.annotations,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
    } else {
        println!(
            "{:<24} {:<8} {:<10} {:<40} {:<22} OWNER",
            "ID", "PID", "STATUS", "BUNDLE", "CREATED"
        );
        for (rec, status) in &rows {
            let pid = if status.as_str() == "stopped" {
                0
            } else {
                rec.pid
            };
            println!(
                "{:<24} {:<8} {:<10} {:<40} {:<22} {}",
                rec.id,
                pid,
                status.as_str(),
                rec.bundle.display(),
                rec.created,
                rec.owner
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
