//! The docker provider's properties, one converter each: name and provider, commands, entrypoint,
//! environment, resources (with GPUs), ports and registry credentials. Path-valued ones are in `paths`.

use yaml_serde::{Mapping, Value};

use super::cx::{Cx, key_text};
use super::error::WorkflowError;
use super::locate::{Target, YamlPath};
use super::model::{EnvVar, GpuRequest, NetworkChoice, RegistryAuth, Resources};
use super::volume::Volume;
use super::{shell, suggest};
use crate::workflow::{SeccompChoice, UserChoice};

const RESOURCE_KEYS: &[&str] = &["cpu", "memory", "gpu", "shm_size", "interruptible"];
const GPU_KEYS: &[&str] = &["count", "name", "memory"];
const AUTH_KEYS: &[&str] = &["username", "password"];
const VOLUME_KEYS: &[&str] = &["host", "path", "read_only"];
const OTHER_PROVIDERS: &[&str] = &["bash", "code", "lab", "notebook"];
/// More forwarded ports than this is surely a mistake.
const MAX_PORTS: u64 = 64;

pub(super) fn workflow_name(cx: &Cx<'_>, map: &Mapping) -> Result<String, WorkflowError> {
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
                "`{}` is not a valid workflow name: use letters, digits, `.`, `_` and `-`, starting \
                 with a letter or digit",
                runtime::text::clip(&name)
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

pub(super) fn check_provider(cx: &Cx<'_>, map: &Mapping) -> Result<(), WorkflowError> {
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

pub(super) fn commands(
    cx: &Cx<'_>,
    value: &Value,
    rel: &YamlPath,
) -> Result<Vec<String>, WorkflowError> {
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

pub(super) fn entrypoint(
    cx: &Cx<'_>,
    value: &Value,
    rel: &YamlPath,
) -> Result<Vec<String>, WorkflowError> {
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

pub(super) fn environment(
    cx: &Cx<'_>,
    value: &Value,
    rel: &YamlPath,
) -> Result<Vec<EnvVar>, WorkflowError> {
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

pub(super) fn resources(
    cx: &Cx<'_>,
    value: &Value,
    rel: &YamlPath,
) -> Result<Resources, WorkflowError> {
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

pub(super) fn gpu(
    cx: &Cx<'_>,
    value: &Value,
    rel: &YamlPath,
) -> Result<Option<GpuRequest>, WorkflowError> {
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

pub(super) fn ports(cx: &Cx<'_>, value: &Value, rel: &YamlPath) -> Result<u16, WorkflowError> {
    cx.count(value, rel, MAX_PORTS).map(|n| n as u16)
}

pub(super) fn network(
    cx: &Cx<'_>,
    value: &Value,
    rel: &YamlPath,
) -> Result<NetworkChoice, WorkflowError> {
    match cx.string(value, rel)?.as_str() {
        "private" => Ok(NetworkChoice::Private),
        "host" => Ok(NetworkChoice::Host),
        "none" => Ok(NetworkChoice::None),
        other => Err(cx.invalid(
            rel,
            format_args!("is `{other}`: use `private` (the default), `host` or `none`"),
        )),
    }
}

/// `security_opt`: Docker's `--security-opt` values, a list; only the seccomp filter can be chosen.
pub(super) fn security_opt(
    cx: &Cx<'_>,
    value: &Value,
    rel: &YamlPath,
) -> Result<SeccompChoice, WorkflowError> {
    let Value::Sequence(items) = value else {
        return Err(cx.type_error(
            rel,
            "a list such as `[seccomp=unconfined]` or `[seccomp=profile.json]`",
            value,
        ));
    };
    let mut choice = SeccompChoice::Default;
    for (i, item) in items.iter().enumerate() {
        let at = rel.index(i);
        let text = cx.string(item, &at)?;
        if cx.deferred(&text) {
            // Checked once the expressions are rendered.
            continue;
        }
        match SeccompChoice::parse_security_opt(&text) {
            Ok(Some(c)) => choice = c,
            Ok(None) => {}
            Err(message) => return Err(cx.invalid(&at, format_args!(": {message}"))),
        }
    }
    Ok(choice)
}

/// `user`: Docker's `NAME|UID[:GROUP|GID]`, or `host` for the invoking user's own ids.
pub(super) fn user(
    cx: &Cx<'_>,
    value: &Value,
    rel: &YamlPath,
) -> Result<UserChoice, WorkflowError> {
    let text = cx.string(value, rel)?;
    if cx.deferred(&text) {
        // Checked once the expressions are rendered.
        return Ok(UserChoice::Named(text));
    }
    UserChoice::parse(&text).map_err(|message| cx.invalid(rel, format_args!("{message}")))
}

pub(super) fn registry_auth(
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

/// `volumes`: a list of `HOST:CONTAINER[:ro]` strings or maps `{host, path, read_only}`.
pub(super) fn volumes(
    cx: &Cx<'_>,
    value: &Value,
    rel: &YamlPath,
) -> Result<Vec<Volume>, WorkflowError> {
    let expected = "a list of `HOST:CONTAINER[:ro]` strings or `{host, path, read_only}` maps";
    let Value::Sequence(items) = value else {
        return Err(cx.type_error(rel, expected, value));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = rel.index(i);
        match item {
            Value::Mapping(map) => {
                cx.known_keys(map, &at, VOLUME_KEYS, &format!("`{at}` of {}", cx.workflow))?;
                let text = |key: &str| match map.get(key).filter(|v| !v.is_null()) {
                    Some(v) => cx.string(v, &at.key(key)),
                    None => Err(cx.invalid(&at, format_args!("has no `{key}`"))),
                };
                let read_only = match map.get("read_only").filter(|v| !v.is_null()) {
                    Some(v) => cx.boolean(v, &at.key("read_only"))?,
                    None => false,
                };
                out.push(Volume {
                    host: text("host")?,
                    path: text("path")?,
                    read_only,
                });
            }
            Value::String(_) => {
                let text = cx.string(item, &at)?;
                match Volume::parse(&text) {
                    Ok(volume) => out.push(volume),
                    // Checked once the expressions are rendered.
                    Err(_) if cx.deferred(&text) => {}
                    Err(message) => return Err(cx.invalid(&at, format_args!(": {message}"))),
                }
            }
            other => return Err(cx.type_error(&at, expected, other)),
        }
    }
    Ok(out)
}
