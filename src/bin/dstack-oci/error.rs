//! A command's failure: one line for the user (and the log), and the exit status.

use std::fmt::Display;

#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub code: u8,
}

pub type CmdResult = Result<std::process::ExitCode, Failure>;

impl Failure {
    pub fn new(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: 1,
        }
    }
}

/// `result.map_err(fail("what"))`: "what: cause" (the cause with its own causes).
pub fn fail<E: std::error::Error + 'static>(what: impl Display) -> impl FnOnce(E) -> Failure {
    move |e| Failure::new(format!("{what}: {}", runtime::report::Chain(&e)))
}

impl From<runtime::container::ContainerError> for Failure {
    fn from(e: runtime::container::ContainerError) -> Failure {
        Failure {
            message: runtime::report::chain(&e),
            code: 1,
        }
    }
}
