//! `${{ ... }}` expressions in workflow strings: `secrets.NAME`, `run.name` and `run.args`.

use std::collections::BTreeMap;

use super::suggest;

/// One expression a string may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Secret(String),
    RunName,
    RunArgs,
}

/// What expressions stand for in one run.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub run_name: &'a str,
    /// `run.args`: the extra arguments, each quoted for the shell as needed and joined with spaces.
    pub run_args: &'a str,
    pub secrets: &'a BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("`${{{{` is not closed with `}}}}`")]
    Unclosed,
    #[error("unknown expression `{expr}`{hint}: use `secrets.NAME`, `run.name` or `run.args`")]
    Unknown { expr: String, hint: String },
    #[error(
        "`{0}` is not a valid secret name: use letters, digits and `_`, not starting with a digit"
    )]
    BadSecretName(String),
    #[error("the secret `{0}` is not set")]
    MissingSecret(String),
}

/// The expressions in `text`, in order.
pub fn expressions(text: &str) -> Result<Vec<Expr>, TemplateError> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        let after = &rest[start + 3..];
        let end = after.find("}}").ok_or(TemplateError::Unclosed)?;
        found.push(parse_expr(after[..end].trim())?);
        rest = &after[end + 2..];
    }
    Ok(found)
}

/// `text` with every expression replaced by its value.
pub fn render(text: &str, ctx: &Context<'_>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let end = after.find("}}").ok_or(TemplateError::Unclosed)?;
        match parse_expr(after[..end].trim())? {
            Expr::RunName => out.push_str(ctx.run_name),
            Expr::RunArgs => out.push_str(ctx.run_args),
            Expr::Secret(name) => match ctx.secrets.get(&name) {
                Some(value) => out.push_str(value),
                None => return Err(TemplateError::MissingSecret(name)),
            },
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn parse_expr(expr: &str) -> Result<Expr, TemplateError> {
    let unknown = |hint: Option<String>| TemplateError::Unknown {
        expr: expr.to_string(),
        hint: hint
            .map(|h| format!(" (did you mean `{h}`?)"))
            .unwrap_or_default(),
    };
    let (head, tail) = expr.split_once('.').unwrap_or((expr, ""));
    match head {
        "secrets" => {
            if crate::secrets::valid_name(tail) {
                Ok(Expr::Secret(tail.to_string()))
            } else {
                Err(TemplateError::BadSecretName(tail.to_string()))
            }
        }
        "run" => match tail {
            "name" => Ok(Expr::RunName),
            "args" => Ok(Expr::RunArgs),
            other => Err(unknown(
                suggest::closest(other, &["name", "args"]).map(|s| format!("run.{s}")),
            )),
        },
        other => Err(unknown(
            suggest::closest(other, &["secrets", "run"]).map(|s| format!("{s}.{tail}")),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(secrets: &BTreeMap<String, String>) -> Context<'_> {
        Context {
            run_name: "brave-otter-3",
            run_args: "--lr 0.1",
            secrets,
        }
    }

    #[test]
    fn renders_every_kind_of_expression() {
        let secrets = BTreeMap::from([("TOKEN".to_string(), "s3cret".to_string())]);
        let out = render(
            "run ${{ run.name }} with ${{run.args}} and ${{  secrets.TOKEN }}!",
            &ctx(&secrets),
        );
        assert_eq!(out.unwrap(), "run brave-otter-3 with --lr 0.1 and s3cret!");
        assert_eq!(
            render("no expressions", &ctx(&secrets)).unwrap(),
            "no expressions"
        );
    }

    #[test]
    fn lists_expressions_in_order() {
        let found = expressions("${{ secrets.A }}-${{ run.name }}-${{ run.args }}").unwrap();
        assert_eq!(
            found,
            [Expr::Secret("A".into()), Expr::RunName, Expr::RunArgs]
        );
    }

    #[test]
    fn a_missing_secret_is_an_error_not_an_empty_string() {
        let none = BTreeMap::new();
        assert_eq!(
            render("${{ secrets.GHCR_TOKEN }}", &ctx(&none)),
            Err(TemplateError::MissingSecret("GHCR_TOKEN".into()))
        );
    }

    #[test]
    fn unknown_and_malformed_expressions_are_errors() {
        let err = expressions("${{ secret.TOKEN }}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown expression `secret.TOKEN` (did you mean `secrets.TOKEN`?): use `secrets.NAME`, \
             `run.name` or `run.args`"
        );
        let err = expressions("${{ run.nmae }}").unwrap_err();
        assert!(
            err.to_string().contains("did you mean `run.name`?"),
            "{err}"
        );
        let err = expressions("${{ env.HOME }}").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("unknown expression `env.HOME`: "),
            "{err}"
        );
        assert_eq!(expressions("${{ run.name"), Err(TemplateError::Unclosed));
        assert_eq!(
            expressions("${{ secrets.9lives }}"),
            Err(TemplateError::BadSecretName("9lives".into()))
        );
        assert_eq!(
            expressions("${{ secrets }}"),
            Err(TemplateError::BadSecretName(String::new()))
        );
    }

    #[test]
    fn unclosed_message_shows_the_braces() {
        assert_eq!(
            TemplateError::Unclosed.to_string(),
            "`${{` is not closed with `}}`"
        );
    }
}
