//! `kill [--all] ID [SIGNAL]`: a signal to the container's init, which passes it on to the program; with
//! `--all`, to every process of the container (those in its pid namespace).

use std::os::unix::fs::MetadataExt;
use std::process::ExitCode;

use clap::Args;

use crate::Globals;
use crate::error::{CmdResult, Failure};
use crate::record::{self, Record, Status};

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal every process of the container
    #[arg(short, long)]
    pub all: bool,
    pub id: String,
    /// A name (TERM, SIGTERM) or number; TERM by default
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
}

/// A signal by name (`KILL`, `SIGKILL`) or number.
pub fn parse_signal(text: &str) -> Result<i32, Failure> {
    if let Ok(n) = text.parse::<i32>()
        && (1..=64).contains(&n)
    {
        return Ok(n);
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .map_err(|_| Failure::new(format!("unknown signal {text:?}")))
}

pub fn kill(globals: &Globals, args: KillArgs) -> CmdResult {
    let sig = parse_signal(&args.signal)?;
    let (locked, rec) = record::load(globals, &args.id)?;
    let status = rec.status(&locked.dir);
    if status == Status::Stopped {
        return Err(Failure::new(format!(
            "container {} is not running",
            args.id
        )));
    }
    // A created container's init holds signals until the program runs; its program-to-be takes them now.
    signal(&rec, sig, args.all || status == Status::Created)?;
    Ok(ExitCode::SUCCESS)
}

/// Sends `sig` to init, and with `all` to the other processes of its pid namespace.
pub fn signal(rec: &Record, sig: i32, all: bool) -> Result<(), Failure> {
    if all {
        for pid in members(rec.pid) {
            // SAFETY: kill with a pid read from /proc; a process gone meanwhile is ESRCH, ignored.
            unsafe { libc::kill(pid, sig) };
        }
    }
    // SAFETY: kill of the container's init, checked alive by its start time.
    if unsafe { libc::kill(rec.pid, sig) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(Failure::new(format!(
                "signalling container {}: {err}",
                rec.id
            )));
        }
    }
    Ok(())
}

/// The processes in init's pid namespace (init excepted), as far as we may look.
pub fn members(init: i32) -> Vec<i32> {
    let Ok(ns) = std::fs::metadata(format!("/proc/{init}/ns/pid")) else {
        return Vec::new();
    };
    let mine = std::fs::metadata("/proc/self/ns/pid").map(|m| m.ino()).ok();
    if Some(ns.ino()) == mine {
        // Sharing our pid namespace: "all" would be everything we can see.
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != init)
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/pid"))
                .is_ok_and(|m| m.ino() == ns.ino() && m.dev() == ns.dev())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(parse_signal("KILL").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("SIGTERM").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("usr1").unwrap(), libc::SIGUSR1);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert!(parse_signal("NOPE").is_err());
    }
}
