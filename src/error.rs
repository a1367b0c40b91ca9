//! The CLI's error: one clear line for the user, with the chain of causes (`a: b: c`).

use std::error::Error as StdError;
use std::fmt;

/// An error on its way to the user. Commands build it from any module error (`?` converts) and may add
/// context that says what was being done.
pub struct CliError {
    message: String,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
    exit_code: u8,
}

pub type CliResult<T> = Result<T, CliError>;

impl CliError {
    pub fn new(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            source: None,
            exit_code: 1,
        }
    }

    /// The exit status `dstack` ends with (1 unless a command says otherwise, e.g. 125 for runtime failures
    /// before the job started, as Docker does).
    pub fn with_exit_code(mut self, code: u8) -> CliError {
        self.exit_code = code;
        self
    }

    pub fn exit_code(&self) -> u8 {
        self.exit_code
    }
}

impl<E: StdError + Send + Sync + 'static> From<E> for CliError {
    fn from(err: E) -> CliError {
        CliError {
            message: runtime::report::chain(&err),
            source: Some(Box::new(err)),
            exit_code: 1,
        }
    }
}

impl fmt::Debug for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Adds a line of context to any result: `store.pull(..).context("pulling ubuntu")?`.
pub trait Context<T> {
    fn context(self, what: impl fmt::Display) -> CliResult<T>;
}

impl<T, E: Into<CliError>> Context<T> for Result<T, E> {
    fn context(self, what: impl fmt::Display) -> CliResult<T> {
        self.map_err(|e| {
            let inner: CliError = e.into();
            let exit_code = inner.exit_code;
            CliError {
                message: format!("{what}: {}", inner.message),
                source: inner.source,
                exit_code,
            }
        })
    }
}

/// Prints `error: MESSAGE`, the message holding the whole chain of causes.
pub fn report(err: &CliError) {
    eprintln!("error: {}", err.message);
}
