//! `WWW-Authenticate` challenges (RFC 7235): `Bearer realm="...",service="...",scope="..."` or
//! `Basic realm="..."`, several per header, quoted values that may hold commas and escaped quotes.

use std::collections::BTreeMap;

/// One challenge: its scheme (lowercased) and parameters (names lowercased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    pub fn is_bearer(&self) -> bool {
        self.scheme == "bearer"
    }

    pub fn is_basic(&self) -> bool {
        self.scheme == "basic"
    }
}

/// Every challenge in the header values, in order. Malformed pieces are skipped, not fatal: a registry
/// that sends one odd parameter should still be usable.
pub(crate) fn parse<'a>(headers: impl IntoIterator<Item = &'a str>) -> Vec<Challenge> {
    let mut out = Vec::new();
    for header in headers {
        parse_one(header, &mut out);
    }
    out
}

/// Prefer Bearer over Basic when a server offers both, as Docker does.
pub(crate) fn preferred(challenges: &[Challenge]) -> Option<&Challenge> {
    challenges
        .iter()
        .find(|c| c.is_bearer())
        .or_else(|| challenges.iter().find(|c| c.is_basic()))
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            if c == ' ' || c == '\t' {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn token(&mut self) -> &'a str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if is_token_char(c) {
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
        &self.s[start..self.pos]
    }

    /// A quoted string after the opening quote, with `\x` escapes resolved.
    fn quoted(&mut self) -> String {
        let mut out = String::new();
        let mut escaped = false;
        while let Some(c) = self.peek() {
            self.pos += c.len_utf8();
            if escaped {
                out.push(c);
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                return out;
            } else {
                out.push(c);
            }
        }
        out
    }

    /// Skip to just after the next comma (or the end).
    fn skip_past_comma(&mut self) {
        while let Some(c) = self.peek() {
            self.pos += c.len_utf8();
            if c == ',' {
                return;
            }
        }
    }
}

fn parse_one(header: &str, out: &mut Vec<Challenge>) {
    let mut cur = Cursor { s: header, pos: 0 };
    let mut current: Option<Challenge> = None;
    loop {
        cur.skip_ws();
        match cur.peek() {
            None => break,
            Some(',') => {
                cur.pos += 1;
                continue;
            }
            _ => {}
        }
        let start = cur.pos;
        let name = cur.token();
        if name.is_empty() {
            cur.skip_past_comma();
            continue;
        }
        cur.skip_ws();
        if cur.peek() == Some('=') {
            // A parameter of the current challenge (or token68 padding, which we do not need).
            cur.pos += 1;
            cur.skip_ws();
            let value = if cur.peek() == Some('"') {
                cur.pos += 1;
                cur.quoted()
            } else {
                cur.token().to_string()
            };
            match current.as_mut() {
                Some(ch) => {
                    ch.params.insert(name.to_ascii_lowercase(), value);
                }
                None => {
                    cur.pos = start;
                    cur.skip_past_comma();
                }
            }
            cur.skip_ws();
            if cur.peek() == Some(',') {
                cur.pos += 1;
            }
        } else {
            // A new scheme.
            if let Some(ch) = current.take() {
                out.push(ch);
            }
            current = Some(Challenge {
                scheme: name.to_ascii_lowercase(),
                params: BTreeMap::new(),
            });
        }
    }
    if let Some(ch) = current {
        out.push(ch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_with_quoted_params_holding_commas() {
        let h = r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:org/img:pull,push""#;
        let c = parse([h]);
        assert_eq!(c.len(), 1);
        assert!(c[0].is_bearer());
        assert_eq!(c[0].param("realm"), Some("https://auth.example/token"));
        assert_eq!(c[0].param("service"), Some("registry.example"));
        assert_eq!(c[0].param("scope"), Some("repository:org/img:pull,push"));
    }

    #[test]
    fn basic_and_case_and_spaces() {
        let c = parse([r#"basic  Realm = "Registry Realm" , charset="UTF-8""#]);
        assert_eq!(c.len(), 1);
        assert!(c[0].is_basic());
        assert_eq!(c[0].param("realm"), Some("Registry Realm"));
        assert_eq!(c[0].param("charset"), Some("UTF-8"));
    }

    #[test]
    fn several_challenges_in_one_header_and_across_headers() {
        let c = parse([
            r#"Basic realm="b", Bearer realm="https://t/x",service=s"#,
            r#"Negotiate"#,
        ]);
        let schemes: Vec<_> = c.iter().map(|c| c.scheme.as_str()).collect();
        assert_eq!(schemes, ["basic", "bearer", "negotiate"]);
        assert_eq!(c[1].param("service"), Some("s"));
        assert_eq!(preferred(&c).unwrap().scheme, "bearer");
        assert_eq!(preferred(&c[..1]).unwrap().scheme, "basic");
        assert!(preferred(&c[2..]).is_none());
    }

    #[test]
    fn escaped_quotes_and_garbage() {
        let c = parse([r#"Bearer realm="a\"b",error="insufficient_scope""#]);
        assert_eq!(c[0].param("realm"), Some("a\"b"));
        assert_eq!(c[0].param("error"), Some("insufficient_scope"));
        assert!(parse([""]).is_empty());
        assert!(parse([r#"=x, ="#]).is_empty());
        // Unterminated quote: keep what is there.
        let c = parse([r#"Bearer realm="https://t"#]);
        assert_eq!(c[0].param("realm"), Some("https://t"));
    }
}
