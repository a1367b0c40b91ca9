//! What can be wrong with a project's workflows, each said with the file and line to fix.

use std::fmt;

use crate::project::ProjectError;

/// A place in a workflow file: `.dstack/workflows/app.yaml:12`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At {
    pub file: String,
    pub line: Option<usize>,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.file),
            None => f.write_str(&self.file),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error(transparent)]
    Project(#[from] ProjectError),
    #[error("{file}: cannot read it")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    // Messages may hold values from the file: shortened, so that a 1 MB value cannot flood the terminal.
    #[error("{at}: {}", runtime::text::shorten(.message))]
    Syntax { at: At, message: String },
    #[error("{at}: {}", runtime::text::shorten(.message))]
    Invalid { at: At, message: String },
    #[error(
        "{second}: workflow `{}` is defined twice: here and at {first}; rename one of them",
        runtime::text::clip(.name)
    )]
    Duplicate { name: String, first: At, second: At },
    #[error("no workflow named `{}` in {project}: {hint}", runtime::text::clip(.name))]
    NotFound {
        name: String,
        project: String,
        hint: String,
    },
    #[error(
        "{at}: workflow `{}` uses the secret `{name}`, which is not set for this project: add it \
         with `dstack secrets add {name}`",
        runtime::text::clip(.workflow),
        name = runtime::text::clip(.name)
    )]
    MissingSecret {
        at: At,
        workflow: String,
        name: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_print_with_or_without_a_line() {
        let with = At {
            file: ".dstack/workflows/a.yaml".into(),
            line: Some(7),
        };
        let without = At {
            file: ".dstack/workflows/a.yaml".into(),
            line: None,
        };
        assert_eq!(with.to_string(), ".dstack/workflows/a.yaml:7");
        assert_eq!(without.to_string(), ".dstack/workflows/a.yaml");
    }
}
