//! Workflow files as users write them: every property (`properties`), and every mistake with the message
//! and line it gets (`mistakes`).

mod mistakes;
mod properties;

use std::collections::BTreeMap;

use super::*;

pub(super) const FILE: &str = ".dstack/workflows/test.yaml";

pub(super) fn catalog(files: &[(&str, &str)]) -> Result<Catalog, WorkflowError> {
    let sources = files
        .iter()
        .map(|(display, text)| Source {
            display: display.to_string(),
            text: text.to_string(),
        })
        .collect();
    Catalog::from_sources("/project".into(), sources)
}

/// The only workflow of a one-file project, resolved with no secrets.
pub(super) fn one(yaml: &str) -> Workflow {
    let catalog = catalog(&[(FILE, yaml)]).unwrap_or_else(|e| panic!("{e}"));
    let name = catalog.names()[0].to_string();
    let secrets = BTreeMap::new();
    catalog
        .get(&name)
        .unwrap()
        .resolve(&ctx(&secrets))
        .unwrap_or_else(|e| panic!("{e}"))
}

pub(super) fn ctx(secrets: &BTreeMap<String, String>) -> Context<'_> {
    Context {
        run_name: "lucky-lynx-1",
        run_args: "--epochs 3",
        secrets,
    }
}

/// The error a one-file project gets while loading.
pub(super) fn load_error(yaml: &str) -> String {
    catalog(&[(FILE, yaml)]).unwrap_err().to_string()
}

/// The error of resolving the workflow `w` (loading succeeds).
pub(super) fn resolve_error(yaml: &str, secrets: &[(&str, &str)]) -> String {
    let catalog = catalog(&[(FILE, yaml)]).unwrap_or_else(|e| panic!("{e}"));
    let secrets: BTreeMap<String, String> = secrets
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    catalog
        .get("w")
        .unwrap()
        .resolve(&ctx(&secrets))
        .unwrap_err()
        .to_string()
}

pub(super) fn wf(body: &str) -> String {
    format!("workflows:\n  - name: w\n    provider: docker\n    image: busybox\n{body}")
}
