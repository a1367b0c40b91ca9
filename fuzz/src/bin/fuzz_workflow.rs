//! Workflow files through the real loader (`src/workflow`, compiled in here by path, with the project
//! module it uses) and each workflow resolved for a run: no panic, inputs past the size and nesting
//! limits refused quickly, errors stay short.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::LazyLock;

use dstack_fuzz::{Target, run, short_message};

#[path = "../../../src/project.rs"]
#[allow(dead_code)]
mod project;
#[path = "../../../src/workflow/mod.rs"]
#[allow(dead_code, unused_imports)]
mod workflow;

/// The one item of `src/secrets.rs` the workflow templates use (that module needs the run store).
mod secrets {
    pub fn valid_name(name: &str) -> bool {
        let mut chars = name.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    }
}

static PROJECT: LazyLock<(tempfile::TempDir, project::Project)> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("a temporary project");
    std::fs::create_dir_all(dir.path().join(".dstack/workflows")).expect("its workflows directory");
    let project = project::Project::at(dir.path()).expect("the temporary project");
    (dir, project)
});

fn check(input: &[u8]) -> Result<String, String> {
    let (dir, project) = &*PROJECT;
    let file = dir.path().join(".dstack/workflows/fuzz.yaml");
    std::fs::write(&file, input).map_err(|e| format!("writing {}: {e}", file.display()))?;
    let catalog = match workflow::Catalog::load(project) {
        Ok(catalog) => catalog,
        Err(e) => return short_message(&e.to_string()),
    };
    let secrets = BTreeMap::from([("TOKEN".to_string(), "s3cret".to_string())]);
    let context = workflow::Context {
        run_name: "fuzz-1",
        run_args: "--epochs 1",
        secrets: &secrets,
    };
    for name in catalog.names() {
        let entry = catalog
            .get(name)
            .map_err(|e| format!("{name} is listed but not found: {e}"))?;
        if let Err(e) = entry.resolve(&context) {
            short_message(&e.to_string())?;
        }
    }
    Ok("ok".into())
}

fn main() -> ExitCode {
    run(
        Target {
            name: "workflow",
            dictionary: &[
                b"workflows:\n",
                b"  - ",
                b"- ",
                b"name: ",
                b"provider: docker\n",
                b"image: ",
                b"commands:\n",
                b"entrypoint: ",
                b"env:\n",
                b"environment:\n",
                b"artifacts:\n",
                b"resources:\n",
                b"gpu: ",
                b"memory: ",
                b"shm_size: ",
                b"cpu: ",
                b"ports: ",
                b"network: ",
                b"working_dir: ",
                b"registry_auth:\n",
                b"cache:\n",
                b"path: ",
                b"${{ run.name }}",
                b"${{ run.args }}",
                b"${{ secrets.TOKEN }}",
                b"${{",
                b"}}",
                b"[",
                b"]",
                b"{",
                b"}",
                b"'",
                b"\"",
                b"|\n",
                b">-\n",
                b"&a ",
                b"*a",
                b"<<: ",
                b"!!str ",
                b"---\n",
                b"# ",
                b"~/",
                b"../",
                b"/",
                b"16GB",
                b"0",
                b"-1",
                b"1e999",
                b"null",
                b"    ",
                b"\t",
            ],
            align: 0,
            max_len: 64 << 10,
        },
        check,
    )
}
