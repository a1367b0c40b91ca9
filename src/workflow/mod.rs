//! Workflows: the project's `.dstack/workflows/*.yaml` files, read into typed, validated [`Workflow`]s,
//! with `${{ ... }}` expressions rendered for a run.

mod cx;
mod error;
mod locate;
pub mod model;
mod parse;
mod paths;
mod properties;
mod seccomp;
pub mod shell;
pub mod size;
mod suggest;
pub mod template;
#[cfg(test)]
mod tests;
mod user;
mod volume;

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use yaml_serde::Value;

pub use error::{At, WorkflowError};
pub use model::{Resources, WORKFLOW_DIR, Workflow};
pub use seccomp::SeccompChoice;
pub use suggest::closest as suggest_closest;
pub use template::Context;
pub use user::UserChoice;
pub use volume::Volume;

use crate::project::Project;
use locate::{Target, YamlPath};
use parse::{Mode, Source};

/// Every workflow of a project, checked as far as it can be before a run (expressions unrendered).
#[derive(Debug)]
pub struct Catalog {
    project: String,
    entries: Vec<Entry>,
}

/// One workflow as loaded: its YAML (rendered again for each run) and its checked form.
#[derive(Debug)]
pub struct Entry {
    src: Arc<Source>,
    index: usize,
    value: Value,
    workflow: Workflow,
}

impl Catalog {
    /// Reads and checks every workflow file of `project`. Names are unique across files.
    pub fn load(project: &Project) -> Result<Catalog, WorkflowError> {
        let mut sources = Vec::new();
        for path in project.workflow_files()? {
            let display = project.display_path(&path);
            // Read no more than the size limit allows: parse::read_document refuses a longer file.
            let text = runtime::text::read_capped(&path)
                .and_then(|bytes| {
                    String::from_utf8(bytes)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.utf8_error()))
                })
                .map_err(|source| WorkflowError::Read {
                    file: display.clone(),
                    source,
                })?;
            sources.push(Source { display, text });
        }
        Catalog::from_sources(project.dir().display().to_string(), sources)
    }

    fn from_sources(project: String, sources: Vec<Source>) -> Result<Catalog, WorkflowError> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
        for src in sources {
            let src = Arc::new(src);
            for (index, value) in parse::read_document(&src)?.into_iter().enumerate() {
                let workflow = parse::convert(&src, index, &value, Mode::Load)?;
                let entry = Entry {
                    src: Arc::clone(&src),
                    index,
                    value,
                    workflow,
                };
                if let Some(&first) = by_name.get(entry.name()) {
                    return Err(WorkflowError::Duplicate {
                        name: entry.name().to_string(),
                        first: entries[first].name_at(),
                        second: entry.name_at(),
                    });
                }
                by_name.insert(entry.name().to_string(), entries.len());
                entries.push(entry);
            }
        }
        Ok(Catalog { project, entries })
    }

    /// The workflows' names, in file order.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(Entry::name).collect()
    }

    pub fn get(&self, name: &str) -> Result<&Entry, WorkflowError> {
        if let Some(entry) = self.entries.iter().find(|e| e.name() == name) {
            return Ok(entry);
        }
        let names = self.names();
        let hint = if names.is_empty() {
            format!(
                "it has no workflows; add one to {}/.dstack/workflows/NAME.yaml",
                self.project
            )
        } else if let Some(near) = suggest::closest(name, &names) {
            format!("did you mean `{near}`?")
        } else {
            let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
            format!("its workflows are {}", quoted.join(", "))
        };
        Err(WorkflowError::NotFound {
            name: name.to_string(),
            project: self.project.clone(),
            hint,
        })
    }
}

impl Entry {
    pub fn name(&self) -> &str {
        &self.workflow.name
    }

    /// The workflow as loaded; strings may still hold `${{ ... }}` expressions.
    #[cfg(test)]
    pub fn unresolved(&self) -> &Workflow {
        &self.workflow
    }

    /// The workflow for one run: every expression rendered and every value checked. A secret it uses
    /// that `ctx` lacks is an error naming the secret and the line.
    pub fn resolve(&self, ctx: &Context<'_>) -> Result<Workflow, WorkflowError> {
        let rendered = parse::render(&self.src, self.index, self.name(), &self.value, ctx)?;
        parse::convert(&self.src, self.index, &rendered, Mode::Run)
    }

    fn name_at(&self) -> At {
        let name = YamlPath::root().key("name");
        parse::place(&self.src, self.index, &name, Target::Value)
    }
}
