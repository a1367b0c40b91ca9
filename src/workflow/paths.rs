//! Path-valued properties: `artifacts`, `cache` and `working_dir`, normalized lexically and kept inside
//! what they may name.

use yaml_serde::Value;

use super::cx::Cx;
use super::error::WorkflowError;
use super::locate::YamlPath;
use super::model::{Artifact, ContainerPath, WORKFLOW_DIR};

const ARTIFACT_KEYS: &[&str] = &["path", "mount"];
const CACHE_KEYS: &[&str] = &["path"];

pub(super) fn artifacts(
    cx: &Cx<'_>,
    value: &Value,
    rel: &YamlPath,
) -> Result<Vec<Artifact>, WorkflowError> {
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

pub(super) fn cache(
    cx: &Cx<'_>,
    value: &Value,
    rel: &YamlPath,
) -> Result<Vec<ContainerPath>, WorkflowError> {
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
pub(super) fn container_path(
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
pub(super) fn overlaps(a: &ContainerPath, b: &ContainerPath) -> bool {
    let (a, b) = (a.key(), b.key());
    let inside = |x: &str, y: &str| x == y || x.starts_with(&format!("{y}/"));
    inside(&a, &b) || inside(&b, &a)
}

/// Lexical normalization without a leading `/`: `./a//b/../c/` is `a/c`; `..` that would climb above the
/// start is kept at the front (`../x`) for relative paths and dropped for absolute ones.
pub(super) fn normalize(path: &str) -> String {
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
pub(super) fn working_dir(
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
