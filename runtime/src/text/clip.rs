//! One rule for echoing outside values in messages: at most [`CLIP_CHARS`] characters of them, so that a
//! 1 MB image `User` or workflow value cannot flood a terminal or a log.

/// The most characters of an outside value a message shows.
pub const CLIP_CHARS: usize = 200;

/// `text` if it is short, else its first [`CLIP_CHARS`] characters and how long it was.
pub fn clip(text: &str) -> String {
    match text.char_indices().nth(CLIP_CHARS) {
        None => text.to_string(),
        Some((cut, _)) => format!(
            "{}… ({} characters in all)",
            &text[..cut],
            text.chars().count()
        ),
    }
}

/// `text` quoted and escaped as Rust's `{:?}` does, cut like [`clip`] (escapes count toward the limit, so
/// a value of control characters stays short too).
pub fn quote(text: &str) -> String {
    let mut escaped = String::from("\"");
    let mut shown = 0usize;
    let mut chars = text.chars();
    for c in chars.by_ref() {
        let piece: String = c.escape_debug().collect();
        shown += piece.chars().count();
        if shown > CLIP_CHARS {
            escaped.push_str("\"… (");
            escaped.push_str(&text.chars().count().to_string());
            escaped.push_str(" characters in all)");
            return escaped;
        }
        escaped.push_str(&piece);
    }
    escaped.push('"');
    escaped
}

/// A whole message that may hold an outside value somewhere inside: kept whole up to three times
/// [`CLIP_CHARS`], else its start and its end (where the advice usually is) around what was cut. A net
/// for messages built before their values were clipped.
pub fn shorten(message: &str) -> std::borrow::Cow<'_, str> {
    let total = message.chars().count();
    if total <= 3 * CLIP_CHARS {
        return message.into();
    }
    let head_end = message
        .char_indices()
        .nth(CLIP_CHARS)
        .map_or(message.len(), |(i, _)| i);
    let tail_start = message
        .char_indices()
        .nth(total - CLIP_CHARS)
        .map_or(message.len(), |(i, _)| i);
    format!(
        "{}… ({} characters cut) …{}",
        &message[..head_end],
        total - 2 * CLIP_CHARS,
        &message[tail_start..]
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_shown_whole() {
        assert_eq!(clip("alice"), "alice");
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
    }

    #[test]
    fn long_values_are_cut_and_say_their_length() {
        let long = "é".repeat(1 << 20);
        let shown = clip(&long);
        assert!(shown.starts_with(&"é".repeat(CLIP_CHARS)));
        assert!(shown.ends_with("… (1048576 characters in all)"), "{shown}");
        assert!(shown.chars().count() < 250);
        let quoted = quote(&long);
        assert!(quoted.chars().count() < 250, "{quoted}");
        assert!(quoted.ends_with("(1048576 characters in all)"));
    }

    #[test]
    fn long_messages_keep_their_start_and_their_advice() {
        let message = format!("`{}` needs a unit: write e.g. `16GB`", "9".repeat(100_000));
        let short = shorten(&message);
        assert!(short.starts_with("`999"));
        assert!(
            short.ends_with("needs a unit: write e.g. `16GB`"),
            "{short}"
        );
        assert!(short.chars().count() < 450);
        assert_eq!(shorten("fine"), "fine");
    }

    #[test]
    fn escapes_count_toward_the_limit() {
        let controls = "\u{1}".repeat(10_000);
        let quoted = quote(&controls);
        assert!(quoted.chars().count() < 250, "{quoted}");
    }
}
