//! Shell words: splitting an `entrypoint` string as `sh` would, and quoting arguments for `run.args`.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellError {
    #[error("unterminated {0} quote")]
    UnterminatedQuote(&'static str),
    #[error("trailing backslash")]
    TrailingBackslash,
}

/// Splits `line` into words: whitespace separates, `'...'` is literal, `"..."` honours `\"`, `\\`, `\$`
/// and `` \` ``, and a backslash outside quotes escapes the next character.
pub fn split(line: &str) -> Result<Vec<String>, ShellError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(ShellError::UnterminatedQuote("single")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(ShellError::UnterminatedQuote("double")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(ShellError::UnterminatedQuote("double")),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    word.push(c);
                }
                None => return Err(ShellError::TrailingBackslash),
            },
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// `word` as one shell word: unchanged when it needs no quoting, else in single quotes.
pub fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Arguments joined into one shell-safe string, each quoted as needed.
pub fn join(words: &[String]) -> String {
    words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        split(line).unwrap()
    }

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(words("/bin/bash -i -c"), ["/bin/bash", "-i", "-c"]);
        assert_eq!(words("  python   -u  "), ["python", "-u"]);
        assert_eq!(
            words(r#"sh -c 'echo "hi there"'"#),
            ["sh", "-c", r#"echo "hi there""#]
        );
        assert_eq!(
            words(r#"echo "a \"b\" \$HOME \n""#),
            ["echo", r#"a "b" $HOME \n"#]
        );
        assert_eq!(words(r"a\ b c"), ["a b", "c"]);
        assert_eq!(words("''"), [""]);
        assert!(words("").is_empty());
    }

    #[test]
    fn broken_quoting_is_an_error() {
        assert_eq!(
            split("echo 'oops"),
            Err(ShellError::UnterminatedQuote("single"))
        );
        assert_eq!(
            split("echo \"oops"),
            Err(ShellError::UnterminatedQuote("double"))
        );
        assert_eq!(split("echo \\"), Err(ShellError::TrailingBackslash));
    }

    #[test]
    fn quoting_round_trips_through_split() {
        let args: Vec<String> = ["--lr", "0.1", "hello world", "it's", "", "$HOME"]
            .map(String::from)
            .to_vec();
        let joined = join(&args);
        assert_eq!(joined, r"--lr 0.1 'hello world' 'it'\''s' '' '$HOME'");
        assert_eq!(split(&joined).unwrap(), args);
    }
}
