//! `dstack secrets add|list|delete`: the current project's secrets.

use std::io::{self, BufRead as _, IsTerminal as _, Write as _};
use std::process::ExitCode;

use nix::sys::termios::{self, LocalFlags, SetArg};

use crate::cli::SecretsCommand;
use crate::error::{CliError, CliResult};
use crate::project::Project;
use crate::secrets::{self, SecretStore, SecretsError};

pub fn secrets(cmd: SecretsCommand) -> CliResult<ExitCode> {
    let project = Project::current()?;
    let store = SecretStore::for_project(&runtime::paths::state_root(), &project);
    match cmd {
        SecretsCommand::Add { name, value } => {
            // Check the name before asking for a value the user would then type for nothing.
            if !secrets::valid_name(&name) {
                return Err(SecretsError::BadName(name).into());
            }
            let value = match value {
                Some(value) => value,
                None => read_value(&name)?,
            };
            store.set(&name, &value)?;
            eprintln!("secret `{name}` saved for {}", project.dir().display());
        }
        SecretsCommand::List => {
            let names = store.names()?;
            if names.is_empty() && io::stdout().is_terminal() {
                eprintln!(
                    "no secrets for {} (add one with `dstack secrets add NAME`)",
                    project.dir().display()
                );
            }
            for name in names {
                println!("{name}");
            }
        }
        SecretsCommand::Delete { name } => {
            store.delete(&name)?;
            eprintln!("secret `{name}` deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The value from the terminal without echo, or one line from standard input when it is not a terminal.
fn read_value(name: &str) -> CliResult<String> {
    let stdin = io::stdin();
    let mut line = String::new();
    if stdin.is_terminal() {
        eprint!("value of {name}: ");
        let _ = io::stderr().flush();
        let _echo_off = EchoOff::new(&stdin)?;
        stdin.lock().read_line(&mut line)?;
        eprintln!();
    } else if stdin.lock().read_line(&mut line)? == 0 {
        return Err(CliError::new(format!(
            "no value for `{name}`: give it as `dstack secrets add {name} VALUE` or on standard input"
        )));
    }
    let value = line.strip_suffix('\n').unwrap_or(&line);
    let value = value.strip_suffix('\r').unwrap_or(value);
    if value.is_empty() {
        return Err(CliError::new(format!(
            "the value of `{name}` is empty; nothing was saved"
        )));
    }
    Ok(value.to_string())
}

/// Turns the terminal's echo off while it lives, and back on when dropped (also on error paths).
struct EchoOff<'a> {
    stdin: &'a io::Stdin,
    saved: termios::Termios,
}

impl<'a> EchoOff<'a> {
    fn new(stdin: &'a io::Stdin) -> CliResult<EchoOff<'a>> {
        let saved = termios::tcgetattr(stdin)
            .map_err(|e| CliError::new(format!("cannot read the terminal's settings: {e}")))?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        termios::tcsetattr(stdin, SetArg::TCSANOW, &quiet)
            .map_err(|e| CliError::new(format!("cannot turn the terminal's echo off: {e}")))?;
        Ok(EchoOff { stdin, saved })
    }
}

impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.stdin, SetArg::TCSANOW, &self.saved);
    }
}
