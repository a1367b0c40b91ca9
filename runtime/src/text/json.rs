//! JSON from outside parsed with an error that says where (line, column) and what, with any value it
//! echoes cut short: never oci-spec's bare "serde failed" nor a Rust debug value.

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::error::Category;

use super::clip::clip;

/// Why a JSON document was refused, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    pub line: usize,
    pub column: usize,
    /// What is wrong, e.g. "expected a string for `User`, found a map" (serde's words, cut short).
    pub message: String,
    /// The text is not JSON at all (as opposed to JSON of the wrong shape).
    pub syntax: bool,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.syntax {
            "it is not valid JSON: "
        } else {
            ""
        };
        write!(
            f,
            "line {}, column {}: {what}{}",
            self.line, self.column, self.message
        )
    }
}

impl std::error::Error for JsonError {}

/// `bytes` as a `T`, or where and why not.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, JsonError> {
    serde_json::from_slice(bytes).map_err(|err| describe(&err))
}

fn describe(err: &serde_json::Error) -> JsonError {
    let text = err.to_string();
    // serde_json appends " at line L column C"; we say the place first, in our own words.
    let bare = match text.rfind(" at line ") {
        Some(cut) => &text[..cut],
        None => &text,
    };
    let message = match err.classify() {
        Category::Eof => format!("it ends too early ({})", clip(bare)),
        Category::Io => format!("it could not be read ({})", clip(bare)),
        Category::Syntax | Category::Data => clip(bare),
    };
    JsonError {
        line: err.line(),
        column: err.column(),
        message,
        syntax: !matches!(err.classify(), Category::Data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Config {
        user: String,
    }

    #[test]
    fn text_that_is_not_json_says_where() {
        let err = parse_json::<Config>(b"{\n  \"user\": nope\n}").unwrap_err();
        assert_eq!((err.line, err.column), (2, 12));
        assert!(err.syntax);
        let shown = err.to_string();
        assert!(
            shown.starts_with("line 2, column 12: it is not valid JSON: "),
            "{shown}"
        );
    }

    #[test]
    fn a_wrong_type_says_what_was_expected() {
        let err = parse_json::<Config>(b"{\"user\": {}}").unwrap_err();
        assert!(!err.syntax);
        assert!(err.to_string().contains("expected a string"), "{err}");
    }

    #[test]
    fn echoed_values_are_cut() {
        let long = format!("{{\"user\": 1, \"{}\": 2}}", "k".repeat(1 << 20));
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Strict {
            user: u32,
        }
        let err = parse_json::<Strict>(long.as_bytes()).unwrap_err();
        assert!(err.to_string().len() < 400, "{}", err.to_string().len());
    }

    #[test]
    fn a_truncated_document_says_it_ends_early() {
        let err = parse_json::<Config>(b"{\"user\": \"a").unwrap_err();
        assert!(err.to_string().contains("ends too early"), "{err}");
    }
}
