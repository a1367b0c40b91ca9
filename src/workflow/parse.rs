//! From YAML to the typed [`Workflow`]: every property of the docker provider, every error with its file,
//! line and key.
//!
//! A workflow is converted twice. When the project is loaded (`Mode::Load`) strings may still hold
//! `${{ ... }}` expressions: their syntax is checked, and checks on the value itself wait. When a run
//! resolves it (`Mode::Run`) the expressions have been rendered and everything is checked.

use yaml_serde::{Mapping, Value};

use super::error::{At, WorkflowError};
use super::locate::{self, Target, YamlPath};
use super::model::{
    Artifact, ContainerPath, EnvVar, GpuRequest, RegistryAuth, Resources, WORKFLOW_DIR, Workflow,
};
use super::{shell, size, suggest, template};

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
    "working_dir",
    "registry_auth",
    "cache",
];
const RESOURCE_KEYS: &[&str] = &["cpu", "memory", "gpu", "shm_size", "interruptible"];
const GPU_KEYS: &[&str] = &["count", "name", "memory"];
const ARTIFACT_KEYS: &[&str] = &["path", "mount"];
const CACHE_KEYS: &[&str] = &["path"];
const AUTH_KEYS: &[&str] = &["username", "password"];
const OTHER_PROVIDERS: &[&str] = &["bash", "code", "lab", "notebook"];
/// More forwarded ports than this is surely a mistake.
const MAX_PORTS: u64 = 64;

/// The items of the file's `workflows:` list (an empty file has none).
pub fn read_document(src: &Source) -> Result<Vec<Value>, WorkflowError> {
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
            message: format!("this is not valid YAML: {message}"),
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
    cx.workflow = format!("workflow `{name}`");
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

/// What converting needs at hand: the file, where the workflow sits in it, and how strict to be.
struct Cx<'a> {
    src: &'a Source,
    base: YamlPath,
    mode: Mode,
    /// "workflow `NAME`", for messages.
    workflow: String,
}

impl<'a> Cx<'a> {
    fn new(src: &'a Source, base: YamlPath, mode: Mode) -> Cx<'a> {
        Cx {
            src,
            base,
            mode,
            workflow: "this workflow".to_string(),
        }
    }

    fn fail(&self, rel: &YamlPath, target: Target, message: String) -> WorkflowError {
        WorkflowError::Invalid {
            at: At {
                file: self.src.display.clone(),
                line: locate::line_of(&self.src.text, &self.base.join(rel), target),
            },
            message,
        }
    }

    /// "`resources.memory` in workflow `hello` <what>".
    fn msg(&self, rel: &YamlPath, what: &str) -> String {
        match what.strip_prefix(':') {
            Some(rest) => format!("`{rel}` in {}:{rest}", self.workflow),
            None => format!("`{rel}` in {} {what}", self.workflow),
        }
    }

    fn type_error(&self, rel: &YamlPath, expected: &str, found: &Value) -> WorkflowError {
        let what = format!("must be {expected}, found {}", kind(found));
        self.fail(rel, Target::Value, self.msg(rel, &what))
    }

    fn invalid(&self, rel: &YamlPath, what: impl std::fmt::Display) -> WorkflowError {
        self.fail(rel, Target::Value, self.msg(rel, &what.to_string()))
    }

    /// Every key of `map` must be one of `known`; the first that is not is reported at its own line, with
    /// the closest known key as a suggestion.
    fn known_keys(
        &self,
        map: &Mapping,
        rel: &YamlPath,
        known: &[&str],
        owner: &str,
    ) -> Result<(), WorkflowError> {
        for key in map.keys() {
            let text = key_text(key);
            if known.contains(&text.as_str()) {
                continue;
            }
            let hint = match suggest::closest(&text, known) {
                Some(near) => format!("did you mean `{near}`?"),
                None => format!("known keys are {}", list(known)),
            };
            return Err(self.fail(
                &rel.key(&text),
                Target::Key,
                format!("unknown key `{text}` in {owner}: {hint}"),
            ));
        }
        Ok(())
    }

    fn mapping<'v>(
        &self,
        value: &'v Value,
        rel: &YamlPath,
        expected: &str,
    ) -> Result<&'v Mapping, WorkflowError> {
        value
            .as_mapping()
            .ok_or_else(|| self.type_error(rel, expected, value))
    }

    /// A scalar as a string (numbers and booleans as written); expressions checked while loading.
    fn string(&self, value: &Value, rel: &YamlPath) -> Result<String, WorkflowError> {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => return Err(self.type_error(rel, "a string", other)),
        };
        if self.mode == Mode::Load {
            template::expressions(&text)
                .map_err(|err| self.invalid(rel, format_args!(": {err}")))?;
        }
        Ok(text)
    }

    /// True when `text` still holds an expression, so checks on its value must wait for the run.
    fn deferred(&self, text: &str) -> bool {
        self.mode == Mode::Load && text.contains("${{")
    }

    fn boolean(&self, value: &Value, rel: &YamlPath) -> Result<bool, WorkflowError> {
        value
            .as_bool()
            .ok_or_else(|| self.type_error(rel, "`true` or `false`", value))
    }

    /// A size with a unit (`512MB`, `16GB`, `16GiB`), in bytes; `None` while it waits on an expression.
    fn size(&self, value: &Value, rel: &YamlPath) -> Result<Option<u64>, WorkflowError> {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => {
                return Err(self.invalid(
                    rel,
                    format_args!("needs a unit: write e.g. `{n}MB`, `{n}GB` or `{n}GiB`"),
                ));
            }
            other => return Err(self.type_error(rel, "a size such as `16GB`", other)),
        };
        if self.deferred(&text) {
            self.string(value, rel)?;
            return Ok(None);
        }
        if !size::has_unit(&text) {
            return Err(self.invalid(
                rel,
                format_args!("`{text}` needs a unit: write e.g. `{text}MB` or `{text}GB`"),
            ));
        }
        match size::parse(&text) {
            Ok(0) => Err(self.invalid(rel, "must be more than zero")),
            Ok(bytes) => Ok(Some(bytes)),
            Err(err) => Err(self.invalid(rel, format_args!(": {err}"))),
        }
    }

    /// A whole number in `0..=max`.
    fn count(&self, value: &Value, rel: &YamlPath, max: u64) -> Result<u64, WorkflowError> {
        match value.as_u64() {
            Some(n) if n <= max => Ok(n),
            Some(n) => Err(self.invalid(rel, format_args!("is {n}: at most {max} is allowed"))),
            None => Err(self.type_error(rel, "a whole number, 0 or more", value)),
        }
    }
}

fn workflow_name(cx: &Cx<'_>, map: &Mapping) -> Result<String, WorkflowError> {
    let rel = YamlPath::root().key("name");
    let name = match map.get("name") {
        Some(v) if !v.is_null() => cx.string(v, &rel)?,
        _ => {
            return Err(cx.fail(
                &YamlPath::root(),
                Target::Value,
                "this workflow has no `name`: add one, e.g. `name: train`".to_string(),
            ));
        }
    };
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !valid {
        return Err(cx.fail(
            &rel,
            Target::Value,
            format!(
                "`{name}` is not a valid workflow name: use letters, digits, `.`, `_` and `-`, starting \
                 with a letter or digit"
            ),
        ));
    }
    if name == "docker" {
        return Err(cx.fail(
            &rel,
            Target::Value,
            "the workflow name `docker` is taken by `dstack run docker IMAGE`: rename the workflow"
                .to_string(),
        ));
    }
    Ok(name)
}

fn check_provider(cx: &Cx<'_>, map: &Mapping) -> Result<(), WorkflowError> {
    let rel = YamlPath::root().key("provider");
    let Some(value) = map.get("provider").filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let provider = cx.string(value, &rel)?;
    if provider == "docker" {
        return Ok(());
    }
    let message = if OTHER_PROVIDERS.contains(&provider.as_str()) {
        format!(
            "provider `{provider}` is not supported by this runtime (only docker): use `provider: docker` \
             with an image that has what `{provider}` provided"
        )
    } else {
        let mut known = vec!["docker"];
        known.extend_from_slice(OTHER_PROVIDERS);
        match suggest::closest(&provider, &known) {
            Some(near) => format!(
                "unknown provider `{provider}` in {}: did you mean `{near}`?",
                cx.workflow
            ),
            None => format!(
                "unknown provider `{provider}` in {}: this runtime runs `docker`",
                cx.workflow
            ),
        }
    };
    Err(cx.fail(&rel, Target::Value, message))
}

fn commands(cx: &Cx<'_>, value: &Value, rel: &YamlPath) -> Result<Vec<String>, WorkflowError> {
    match value {
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| cx.string(item, &rel.index(i)))
            .collect(),
        Value::String(_) => Ok(cx
            .string(value, rel)?
            .lines()
            .map(str::trim_end)
            .filter(|line| !line.trim().is_empty())
            .map(str::to_string)
            .collect()),
        other => Err(cx.type_error(rel, "a list of commands or a multi-line string", other)),
    }
}

fn entrypoint(cx: &Cx<'_>, value: &Value, rel: &YamlPath) -> Result<Vec<String>, WorkflowError> {
    let words = match value {
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| cx.string(item, &rel.index(i)))
            .collect::<Result<Vec<_>, _>>()?,
        Value::String(text) => {
            cx.string(value, rel)?;
            if cx.deferred(text) {
                // Split once the expressions are rendered: `${{ run.args }}` holds spaces.
                return Ok(vec![text.clone()]);
            }
            shell::split(text).map_err(|err| cx.invalid(rel, format_args!("has an {err}")))?
        }
        other => return Err(cx.type_error(rel, "a string or a list of strings", other)),
    };
    if words.is_empty() {
        return Err(cx.invalid(rel, "is empty: remove it to keep the image's entrypoint"));
    }
    Ok(words)
}

fn environment(cx: &Cx<'_>, value: &Value, rel: &YamlPath) -> Result<Vec<EnvVar>, WorkflowError> {
    let check_name = |name: &str, at: &YamlPath, target: Target| {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            Err(cx.fail(
                at,
                target,
                cx.msg(at, &format!("has `{name}`, which is not a variable name")),
            ))
        } else {
            Ok(())
        }
    };
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let at = rel.index(i);
                let text = match item {
                    Value::String(_) => cx.string(item, &at)?,
                    other => return Err(cx.type_error(&at, "a `NAME=value` string", other)),
                };
                let var = match text.split_once('=') {
                    Some((name, value)) => EnvVar {
                        name: name.to_string(),
                        value: Some(value.to_string()),
                    },
                    None => EnvVar {
                        name: text.clone(),
                        value: None,
                    },
                };
                check_name(&var.name, &at, Target::Value)?;
                Ok(var)
            })
            .collect(),
        Value::Mapping(map) => map
            .iter()
            .map(|(key, item)| {
                let name = key_text(key);
                let at = rel.key(&name);
                check_name(&name, &at, Target::Key)?;
                let value = match item {
                    Value::Null => None,
                    Value::Sequence(_) | Value::Mapping(_) | Value::Tagged(_) => {
                        return Err(cx.type_error(&at, "a string", item));
                    }
                    scalar => Some(cx.string(scalar, &at)?),
                };
                Ok(EnvVar { name, value })
            })
            .collect(),
        other => Err(cx.type_error(
            rel,
            "a list of `NAME=value` strings or a mapping of names to values",
            other,
        )),
    }
}

fn artifacts(cx: &Cx<'_>, value: &Value, rel: &YamlPath) -> Result<Vec<Artifact>, WorkflowError> {
    let Value::Sequence(items) = value else {
        return Err(cx.type_error(rel, "a list of `path:` entries", value));
    };
    let mut out: Vec<Artifact> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = rel.index(i);
        let (path_value, path_at, mount) = match item {
            Value::String(_) => (item, at.clone(), false),
            Value::Mapping(map) => {
                cx.known_keys(
                    map,
                    &at,
                    ARTIFACT_KEYS,
                    &format!("an artifact of {}", cx.workflow),
                )?;
                let mount = match map.get("mount").filter(|v| !v.is_null()) {
                    Some(v) => cx.boolean(v, &at.key("mount"))?,
                    None => false,
                };
                match map.get("path").filter(|v| !v.is_null()) {
                    Some(v) => (v, at.key("path"), mount),
                    None => return Err(cx.invalid(&at, "has no `path`: add e.g. `path: ./output`")),
                }
            }
            other => return Err(cx.type_error(&at, "a path or a mapping with `path`", other)),
        };
        let text = cx.string(path_value, &path_at)?;
        let path = if cx.deferred(&text) {
            ContainerPath::Relative(text)
        } else {
            container_path(cx, &text, &path_at, false)?
        };
        if let Some(other) = out.iter().find(|a| overlaps(&a.path, &path)) {
            return Err(cx.invalid(
                &path_at,
                format_args!(
                    "`{path}` overlaps the artifact `{}`: list each directory once",
                    other.path
                ),
            ));
        }
        out.push(Artifact { path, mount });
    }
    Ok(out)
}

fn cache(cx: &Cx<'_>, value: &Value, rel: &YamlPath) -> Result<Vec<ContainerPath>, WorkflowError> {
    let Value::Sequence(items) = value else {
        return Err(cx.type_error(rel, "a list of `path:` entries", value));
    };
    let mut out: Vec<ContainerPath> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = rel.index(i);
        let (path_value, path_at) = match item {
            Value::Mapping(map) => {
                cx.known_keys(
                    map,
                    &at,
                    CACHE_KEYS,
                    &format!("a cache entry of {}", cx.workflow),
                )?;
                match map.get("path") {
                    Some(v) => (v, at.key("path")),
                    None => {
                        return Err(cx.invalid(&at, "has no `path`: add e.g. `path: ~/.cache/pip`"));
                    }
                }
            }
            other => (other, at.clone()),
        };
        match path_value {
            Value::String(_) => {}
            // `~` alone is YAML's null, a likely slip for the home directory.
            Value::Null => {
                return Err(cx.invalid(
                    &path_at,
                    "is empty (a bare `~` is YAML for nothing: write `\"~\"` for the home directory)",
                ));
            }
            other => return Err(cx.type_error(&path_at, "a path or a mapping with `path`", other)),
        }
        let text = cx.string(path_value, &path_at)?;
        let path = if cx.deferred(&text) {
            ContainerPath::Relative(text)
        } else {
            container_path(cx, &text, &path_at, true)?
        };
        if let Some(other) = out.iter().find(|p| overlaps(p, &path)) {
            return Err(cx.invalid(
                &path_at,
                format_args!(
                    "`{path}` overlaps the cache path `{other}`: list each directory once"
                ),
            ));
        }
        out.push(path);
    }
    Ok(out)
}

/// A path for an artifact or a cache directory: relative (to the working directory), absolute but not
/// `/`, or, for caches, below `~`.
fn container_path(
    cx: &Cx<'_>,
    text: &str,
    at: &YamlPath,
    home_allowed: bool,
) -> Result<ContainerPath, WorkflowError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(cx.invalid(at, "is empty: name a directory, e.g. `./output`"));
    }
    if text == "~" || text.starts_with("~/") {
        if !home_allowed {
            return Err(cx.invalid(
                at,
                format_args!(
                    "`{text}`: `~` is for cache paths; give artifacts a relative or absolute path"
                ),
            ));
        }
        let rest = normalize(text[1..].trim_start_matches('/'));
        if rest.starts_with("..") {
            return Err(cx.invalid(at, format_args!("`{text}` leaves the home directory")));
        }
        return Ok(ContainerPath::Home(rest));
    }
    if text.starts_with('/') {
        let path = normalize(text);
        if path.is_empty() {
            return Err(cx.invalid(
                at,
                format_args!(
                    "is `{text}`: the whole file system cannot be saved; name a directory"
                ),
            ));
        }
        return Ok(ContainerPath::Absolute(format!("/{path}")));
    }
    let path = normalize(text);
    if path.is_empty() {
        return Err(cx.invalid(
            at,
            format_args!("is `{text}`, the working directory itself: name a directory inside it"),
        ));
    }
    if path == ".." || path.starts_with("../") {
        return Err(cx.invalid(
            at,
            format_args!("`{text}` leaves the working directory: use an absolute path instead"),
        ));
    }
    Ok(ContainerPath::Relative(path))
}

/// Whether two paths name the same directory or one holds the other (compared as written).
fn overlaps(a: &ContainerPath, b: &ContainerPath) -> bool {
    let (a, b) = (a.key(), b.key());
    let inside = |x: &str, y: &str| x == y || x.starts_with(&format!("{y}/"));
    inside(&a, &b) || inside(&b, &a)
}

/// Lexical normalization without a leading `/`: `./a//b/../c/` is `a/c`; `..` that would climb above the
/// start is kept at the front (`../x`) for relative paths and dropped for absolute ones.
fn normalize(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if absolute => {}
                _ => parts.push(".."),
            },
            other => parts.push(other),
        }
    }
    parts.join("/")
}

fn resources(cx: &Cx<'_>, value: &Value, rel: &YamlPath) -> Result<Resources, WorkflowError> {
    let map = cx.mapping(
        value,
        rel,
        "a mapping of `cpu`, `memory`, `gpu`, `shm_size`",
    )?;
    cx.known_keys(
        map,
        rel,
        RESOURCE_KEYS,
        &format!("`resources` of {}", cx.workflow),
    )?;
    let field = |key: &str| {
        map.get(key)
            .filter(|v| !v.is_null())
            .map(|v| (v, rel.key(key)))
    };
    let mut out = Resources::default();
    if let Some((v, at)) = field("cpu") {
        let cores = match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) if cx.deferred(s) => None,
            Value::String(s) => Some(
                s.trim()
                    .parse::<f64>()
                    .map_err(|_| cx.type_error(&at, "a number of cores, e.g. `2` or `0.5`", v))?,
            ),
            other => return Err(cx.type_error(&at, "a number of cores, e.g. `2` or `0.5`", other)),
        };
        if let Some(cores) = cores {
            if !(cores.is_finite() && cores > 0.0) {
                return Err(cx.invalid(&at, "must be more than zero cores"));
            }
            out.cpu = Some(cores);
        }
    }
    if let Some((v, at)) = field("memory") {
        out.memory = cx.size(v, &at)?;
    }
    if let Some((v, at)) = field("shm_size") {
        out.shm_size = cx.size(v, &at)?;
    }
    if let Some((v, at)) = field("interruptible") {
        out.interruptible = cx.boolean(v, &at)?;
    }
    if let Some((v, at)) = field("gpu") {
        out.gpu = gpu(cx, v, &at)?;
    }
    Ok(out)
}

fn gpu(cx: &Cx<'_>, value: &Value, rel: &YamlPath) -> Result<Option<GpuRequest>, WorkflowError> {
    const MAX_GPUS: u64 = 1024;
    let expected = "a number of GPUs or a mapping of `count`, `name`, `memory`";
    let request = match value {
        Value::Number(_) => GpuRequest {
            count: cx.count(value, rel, MAX_GPUS)? as u32,
            name: None,
            memory: None,
        },
        Value::Mapping(map) => {
            cx.known_keys(
                map,
                rel,
                GPU_KEYS,
                &format!("`resources.gpu` of {}", cx.workflow),
            )?;
            let field = |key: &str| {
                map.get(key)
                    .filter(|v| !v.is_null())
                    .map(|v| (v, rel.key(key)))
            };
            let name = field("name").map(|(v, at)| cx.string(v, &at)).transpose()?;
            let memory = match field("memory") {
                Some((v, at)) => cx.size(v, &at)?,
                None => None,
            };
            let count = match field("count") {
                Some((v, at)) => cx.count(v, &at, MAX_GPUS)? as u32,
                // A name or a memory size alone asks for one such GPU.
                None => u32::from(name.is_some() || memory.is_some()),
            };
            GpuRequest {
                count,
                name,
                memory,
            }
        }
        other => return Err(cx.type_error(rel, expected, other)),
    };
    Ok((request.count > 0).then_some(request))
}

fn ports(cx: &Cx<'_>, value: &Value, rel: &YamlPath) -> Result<u16, WorkflowError> {
    cx.count(value, rel, MAX_PORTS).map(|n| n as u16)
}

fn working_dir(
    cx: &Cx<'_>,
    value: &Value,
    rel: &YamlPath,
) -> Result<Option<String>, WorkflowError> {
    let text = cx.string(value, rel)?;
    if cx.deferred(&text) {
        return Ok(Some(text));
    }
    let trimmed = text.trim();
    if let Some(inside) = trimmed
        .strip_prefix(WORKFLOW_DIR)
        .filter(|r| r.is_empty() || r.starts_with('/'))
    {
        return working_dir(cx, &Value::String(format!(".{inside}")), rel);
    }
    if trimmed.starts_with('/') {
        return Err(cx.invalid(
            rel,
            format_args!(
                "is `{trimmed}`: it is relative to the project's directory, `{WORKFLOW_DIR}` in the \
                 container; write e.g. `src`"
            ),
        ));
    }
    let path = normalize(trimmed);
    if path == ".." || path.starts_with("../") {
        return Err(cx.invalid(
            rel,
            format_args!("`{trimmed}` leaves the project's directory (`{WORKFLOW_DIR}`)"),
        ));
    }
    Ok((!path.is_empty()).then_some(path))
}

fn registry_auth(
    cx: &Cx<'_>,
    value: &Value,
    rel: &YamlPath,
) -> Result<RegistryAuth, WorkflowError> {
    let map = cx.mapping(value, rel, "a mapping of `username` and `password`")?;
    cx.known_keys(
        map,
        rel,
        AUTH_KEYS,
        &format!("`registry_auth` of {}", cx.workflow),
    )?;
    let field = |key: &str| match map.get(key).filter(|v| !v.is_null()) {
        Some(v) => cx.string(v, &rel.key(key)),
        None => Err(cx.invalid(
            rel,
            format_args!(
                "has no `{key}`: add e.g. `{key}: ${{{{ secrets.REGISTRY_{} }}}}`",
                key.to_uppercase()
            ),
        )),
    };
    Ok(RegistryAuth {
        username: field("username")?,
        password: field("password")?,
    })
}

/// A mapping key as text (keys are nearly always strings; others print as YAML would).
fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_string(),
        other => format!("{other:?}"),
    }
}

/// How a value's type reads in a message.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "`true`/`false`",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn list(keys: &[&str]) -> String {
    keys.iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn normalization_is_lexical() {
        assert_eq!(normalize("./a//b/../c/"), "a/c");
        assert_eq!(normalize("."), "");
        assert_eq!(normalize("../x"), "../x");
        assert_eq!(normalize("a/../../x"), "../x");
        assert_eq!(normalize("/a/../../x"), "x");
        assert_eq!(normalize("/"), "");
    }
}
