//! The conversion context: which file and workflow a value belongs to, how strict to be, and how to say
//! what is wrong with it (file, line, key, what was expected).

use yaml_serde::{Mapping, Value};

use super::error::{At, WorkflowError};
use super::locate::{self, Target, YamlPath};
use super::parse::{Mode, Source};
use super::{size, suggest, template};

/// What converting needs at hand: the file, where the workflow sits in it, and how strict to be.
pub(super) struct Cx<'a> {
    src: &'a Source,
    base: YamlPath,
    mode: Mode,
    /// "workflow `NAME`", for messages.
    pub(super) workflow: String,
}

impl<'a> Cx<'a> {
    pub(super) fn new(src: &'a Source, base: YamlPath, mode: Mode) -> Cx<'a> {
        Cx {
            src,
            base,
            mode,
            workflow: "this workflow".to_string(),
        }
    }

    pub(super) fn fail(&self, rel: &YamlPath, target: Target, message: String) -> WorkflowError {
        WorkflowError::Invalid {
            at: At {
                file: self.src.display.clone(),
                line: locate::line_of(&self.src.text, &self.base.join(rel), target),
            },
            message,
        }
    }

    /// "`resources.memory` in workflow `hello` <what>".
    pub(super) fn msg(&self, rel: &YamlPath, what: &str) -> String {
        match what.strip_prefix(':') {
            Some(rest) => format!("`{rel}` in {}:{rest}", self.workflow),
            None => format!("`{rel}` in {} {what}", self.workflow),
        }
    }

    pub(super) fn type_error(
        &self,
        rel: &YamlPath,
        expected: &str,
        found: &Value,
    ) -> WorkflowError {
        let what = format!("must be {expected}, found {}", kind(found));
        self.fail(rel, Target::Value, self.msg(rel, &what))
    }

    pub(super) fn invalid(&self, rel: &YamlPath, what: impl std::fmt::Display) -> WorkflowError {
        self.fail(rel, Target::Value, self.msg(rel, &what.to_string()))
    }

    /// Every key of `map` must be one of `known`; the first that is not is reported at its own line, with
    /// the closest known key as a suggestion.
    pub(super) fn known_keys(
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
                format!(
                    "unknown key `{}` in {owner}: {hint}",
                    runtime::text::clip(&text)
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn mapping<'v>(
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
    pub(super) fn string(&self, value: &Value, rel: &YamlPath) -> Result<String, WorkflowError> {
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
    pub(super) fn deferred(&self, text: &str) -> bool {
        self.mode == Mode::Load && text.contains("${{")
    }

    pub(super) fn boolean(&self, value: &Value, rel: &YamlPath) -> Result<bool, WorkflowError> {
        value
            .as_bool()
            .ok_or_else(|| self.type_error(rel, "`true` or `false`", value))
    }

    /// A size with a unit (`512MB`, `16GB`, `16GiB`), in bytes; `None` while it waits on an expression.
    pub(super) fn size(&self, value: &Value, rel: &YamlPath) -> Result<Option<u64>, WorkflowError> {
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
    pub(super) fn count(
        &self,
        value: &Value,
        rel: &YamlPath,
        max: u64,
    ) -> Result<u64, WorkflowError> {
        match value.as_u64() {
            Some(n) if n <= max => Ok(n),
            Some(n) => Err(self.invalid(rel, format_args!("is {n}: at most {max} is allowed"))),
            None => Err(self.type_error(rel, "a whole number, 0 or more", value)),
        }
    }
}

/// A mapping key as text (keys are nearly always strings; others print as YAML would).
pub(super) fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_string(),
        other => format!("{other:?}"),
    }
}

/// How a value's type reads in a message.
pub(super) fn kind(value: &Value) -> &'static str {
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

pub(super) fn list(keys: &[&str]) -> String {
    keys.iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
