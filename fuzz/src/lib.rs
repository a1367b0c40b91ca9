//! A small fuzzing engine that runs on stable Rust, for CI: cargo-fuzz needs nightly and a sanitizer
//! runtime, this needs neither. Each target is one binary (`src/bin/fuzz_*.rs`) that hands [`run`] a
//! check function; the engine mutates the target's seed corpus (`fuzz/corpus/<target>/`) byte by byte
//! for a bounded time and fails on the first input that panics, runs too long or breaks the target's
//! own property (a message too long, a file outside the unpack root...), saving it to
//! `fuzz/artifacts/` and printing how to replay it.
//!
//! There is no coverage feedback (that needs instrumentation); instead an input whose outcome (the
//! error it produced, digits removed) was not seen before joins the corpus, so the search spreads over
//! the parsers' different error paths.

mod engine;
mod mutate;

pub use engine::{Target, run};

/// The longest error message a target accepts: values echoed in messages are cut to 200 characters
/// (`runtime::text::clip`), so a longer message means an echo that is not.
pub const MESSAGE_MAX: usize = 1000;

/// The property every target checks on its errors: short, whatever the input's size.
pub fn short_message(message: &str) -> Result<String, String> {
    let chars = message.chars().count();
    if chars > MESSAGE_MAX {
        let start: String = message.chars().take(300).collect();
        return Err(format!(
            "an error message of {chars} characters (at most {MESSAGE_MAX}): {start}…"
        ));
    }
    Ok(outcome(message))
}

/// A message's kind: its words without the values it quotes ("...", `...`) and without the words that
/// hold a digit (numbers, digests, positions), so that a new kind of error counts as new and a new value
/// in a known one does not.
pub fn outcome(message: &str) -> String {
    let mut unquoted = String::new();
    let mut quote = None;
    let mut escaped = false;
    for c in message.chars() {
        match quote {
            Some(_) if escaped => escaped = false,
            Some(_) if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '`' => {
                quote = Some(c);
                unquoted.push('_');
            }
            None => unquoted.push(c),
        }
    }
    let words: Vec<&str> = unquoted
        .split_whitespace()
        .map(|w| {
            if w.chars().any(|c| c.is_ascii_digit()) {
                "#"
            } else {
                w
            }
        })
        .collect();
    words.join(" ").chars().take(100).collect()
}
