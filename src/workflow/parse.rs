//! From YAML to the typed [`Workflow`]: every property of the docker provider, every error with its file,
//! line and key.
//!
//! A workflow is converted twice. When the project is loaded (`Mode::Load`) strings may still hold
//! `${{ ... }}` expressions: their syntax is checked, and checks on the value itself wait. When a run
//! resolves it (`Mode::Run`) the expressions have been rendered and everything is checked.

use yaml_serde::{Mapping, Value};

use super::cx::{Cx, key_text, kind};
use super::error::{At, WorkflowError};
use super::locate::{self, Target, YamlPath};
use super::model::Workflow;
use super::paths::{artifacts, cache, working_dir};
use super::properties::{
    check_provider, commands, entrypoint, environment, network, ports, registry_auth, resources,
    security_opt, user, volumes, workflow_name,
};
use super::template;

/// One workflow file, as read.
#[derive(Debug)]
pub struct Source {
    /// The path as messages show it (relative to the project).
    pub display: String,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Load,
    Run,
}

const TOP_KEYS: &[&str] = &["workflows"];
const WORKFLOW_KEYS: &[&str] = &[
    "name",
    "provider",
    "image",
    "commands",
    "entrypoint",
    "version",
    "environment",
    "env",
    "artifacts",
    "resources",
    "ports",
    "network",
    "working_dir",
    "registry_auth",
    "cache",
    "security_opt",
    "volumes",
    "home",
    "user",
];

/// The items of the file's `workflows:` list (an empty file has none).
pub fn read_document(src: &Source) -> Result<Vec<Value>, WorkflowError> {
    // Bounded before the YAML parser sees it, whose time grows with the square of the nesting depth.
    runtime::text::check_size(src.text.as_bytes())
        .and_then(|()| runtime::text::check_nesting(&src.text))
        .map_err(|limit| WorkflowError::Syntax {
            at: At {
                file: src.display.clone(),
                line: Some(limit.line()),
            },
            message: limit.to_string(),
        })?;
    let doc: Value = yaml_serde::from_str(&src.text).map_err(|err| {
        let text = err.to_string();
        let message = match text.rfind(" at line ") {
            Some(cut) => text[..cut].to_string(),
            None => text,
        };
        WorkflowError::Syntax {
            at: At {
                file: src.display.clone(),
                line: err.location().map(|l| l.line()),
            },
            message: format!("this is not valid YAML: {}", runtime::text::clip(&message)),
        }
    })?;
    let cx = Cx::new(src, YamlPath::root(), Mode::Load);
    let root = YamlPath::root();
    let top = match &doc {
        Value::Null => return Ok(Vec::new()),
        Value::Mapping(map) => map,
        other => {
            return Err(cx.fail(
                &root,
                Target::Value,
                format!(
                    "a workflow file holds a mapping with a `workflows:` list, found {}",
                    kind(other)
                ),
            ));
        }
    };
    cx.known_keys(top, &root, TOP_KEYS, "the file")?;
    let path = root.key("workflows");
    match top.get("workflows") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Sequence(items)) => Ok(items.clone()),
        Some(other) => Err(cx.fail(
            &path,
            Target::Value,
            format!(
                "`workflows` must be a list of workflows, found {}",
                kind(other)
            ),
        )),
    }
}

/// The workflow at `workflows[index]` of `src`, whose YAML is `value`.
pub fn convert(
    src: &Source,
    index: usize,
    value: &Value,
    mode: Mode,
) -> Result<Workflow, WorkflowError> {
    let mut cx = Cx::new(src, item_path(index), mode);
    let root = YamlPath::root();
    let Value::Mapping(map) = value else {
        return Err(cx.fail(
            &root,
            Target::Value,
            format!(
                "each item of `workflows` must be a mapping with `name`, `provider`, `image`, ..., found {}",
                kind(value)
            ),
        ));
    };
    let name = workflow_name(&cx, map)?;
    cx.workflow = format!("workflow `{}`", runtime::text::clip(&name));
    check_provider(&cx, map)?;
    cx.known_keys(map, &root, WORKFLOW_KEYS, &cx.workflow)?;

    let image = match map.get("image") {
        Some(v) if !v.is_null() => cx.string(v, &root.key("image"))?,
        _ => {
            return Err(cx.fail(
                &root,
                Target::Value,
                format!(
                    "{} has no `image`: add the image to run, e.g. `image: ubuntu`",
                    cx.workflow
                ),
            ));
        }
    };
    if image.trim().is_empty() {
        return Err(cx.fail(
            &root.key("image"),
            Target::Value,
            cx.msg(&root.key("image"), "is empty"),
        ));
    }
    let env = match (map.get("environment"), map.get("env")) {
        (Some(_), Some(_)) => {
            return Err(cx.fail(
                &root.key("env"),
                Target::Key,
                format!(
                    "{} has both `environment` and `env`: use one of them",
                    cx.workflow
                ),
            ));
        }
        (Some(v), None) => environment(&cx, v, &root.key("environment"))?,
        (None, Some(v)) => environment(&cx, v, &root.key("env"))?,
        (None, None) => Vec::new(),
    };
    let field = |key: &str| map.get(key).filter(|v| !v.is_null());
    Ok(Workflow {
        name,
        image,
        commands: field("commands")
            .map(|v| commands(&cx, v, &root.key("commands")))
            .transpose()?
            .unwrap_or_default(),
        entrypoint: field("entrypoint")
            .map(|v| entrypoint(&cx, v, &root.key("entrypoint")))
            .transpose()?,
        version: field("version")
            .map(|v| cx.string(v, &root.key("version")))
            .transpose()?,
        env,
        artifacts: field("artifacts")
            .map(|v| artifacts(&cx, v, &root.key("artifacts")))
            .transpose()?
            .unwrap_or_default(),
        resources: field("resources")
            .map(|v| resources(&cx, v, &root.key("resources")))
            .transpose()?
            .unwrap_or_default(),
        ports: field("ports")
            .map(|v| ports(&cx, v, &root.key("ports")))
            .transpose()?
            .unwrap_or(0),
        network: field("network")
            .map(|v| network(&cx, v, &root.key("network")))
            .transpose()?
            .unwrap_or_default(),
        working_dir: field("working_dir")
            .map(|v| working_dir(&cx, v, &root.key("working_dir")))
            .transpose()?
            .flatten(),
        registry_auth: field("registry_auth")
            .map(|v| registry_auth(&cx, v, &root.key("registry_auth")))
            .transpose()?,
        cache: field("cache")
            .map(|v| cache(&cx, v, &root.key("cache")))
            .transpose()?
            .unwrap_or_default(),
        seccomp: field("security_opt")
            .map(|v| security_opt(&cx, v, &root.key("security_opt")))
            .transpose()?
            .unwrap_or_default(),
        volumes: field("volumes")
            .map(|v| volumes(&cx, v, &root.key("volumes")))
            .transpose()?
            .unwrap_or_default(),
        home: field("home")
            .map(|v| cx.boolean(v, &root.key("home")))
            .transpose()?
            .unwrap_or(false),
        user: field("user")
            .map(|v| user(&cx, v, &root.key("user")))
            .transpose()?
            .unwrap_or_default(),
    })
}

/// The `name` of `workflows[index]` if it has a usable one (for lookups before a full conversion).
pub fn item_path(index: usize) -> YamlPath {
    YamlPath::root().key("workflows").index(index)
}

/// The place of `rel` (below `workflows[index]`) in `src`.
pub fn place(src: &Source, index: usize, rel: &YamlPath, target: Target) -> At {
    At {
        file: src.display.clone(),
        line: locate::line_of(&src.text, &item_path(index).join(rel), target),
    }
}

/// Renders every expression in the string values of a workflow's YAML, keys left alone.
pub fn render(
    src: &Source,
    index: usize,
    workflow: &str,
    value: &Value,
    ctx: &template::Context<'_>,
) -> Result<Value, WorkflowError> {
    render_node(src, index, workflow, value, &YamlPath::root(), ctx)
}

fn render_node(
    src: &Source,
    index: usize,
    workflow: &str,
    value: &Value,
    path: &YamlPath,
    ctx: &template::Context<'_>,
) -> Result<Value, WorkflowError> {
    match value {
        Value::String(text) => template::render(text, ctx)
            .map(Value::String)
            .map_err(|err| {
                let at = place(src, index, path, Target::Value);
                match err {
                    template::TemplateError::MissingSecret(name) => WorkflowError::MissingSecret {
                        at,
                        workflow: workflow.to_string(),
                        name,
                    },
                    other => WorkflowError::Invalid {
                        at,
                        message: format!("`{path}` in workflow `{workflow}`: {other}"),
                    },
                }
            }),
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| render_node(src, index, workflow, item, &path.index(i), ctx))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Sequence),
        Value::Mapping(map) => {
            let mut out = Mapping::with_capacity(map.len());
            for (key, item) in map {
                let child = path.key(&key_text(key));
                out.insert(
                    key.clone(),
                    render_node(src, index, workflow, item, &child, ctx)?,
                );
            }
            Ok(Value::Mapping(out))
        }
        other => Ok(other.clone()),
    }
}
