//! How an error reaches a person: each error type's `Display` says only what went wrong at its own level
//! and keeps the cause as its `source()`; [`Chain`] writes the whole chain on one line, `a: b: c`.

use std::error::Error;
use std::fmt;

/// `err` and its causes, outermost first, joined by `": "`.
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

/// [`Chain`] as a string.
pub fn chain(err: &(dyn Error + 'static)) -> String {
    Chain(err).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read {path}")]
    struct ReadError {
        path: &'static str,
        #[source]
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("loading the workflow")]
    struct LoadError(#[source] ReadError);

    #[test]
    fn each_level_is_said_once() {
        let err = LoadError(ReadError {
            path: "dstack.yaml",
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        });
        assert_eq!(
            chain(&err),
            "loading the workflow: cannot read dstack.yaml: No such file or directory (os error 2)"
        );
    }
}
