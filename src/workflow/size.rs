//! Sizes as users write them: `512MB` and `16GB` are decimal, `16GiB` binary, units case-insensitive;
//! single letters (`512m`, `1g`) are binary, as Docker's flags read them; a bare number is bytes.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("`{0}` is not a size: write e.g. `512MB`, `16GB` or `16GiB`")]
    Malformed(String),
    #[error(
        "`{text}` has an unknown unit `{unit}`: use B, KB, MB, GB, TB (decimal) or KiB, MiB, GiB, TiB (binary)"
    )]
    UnknownUnit { text: String, unit: String },
    #[error("`{0}` is too large")]
    TooLarge(String),
}

/// Bytes in `text`.
pub fn parse(text: &str) -> Result<u64, SizeError> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let unit = unit.trim();
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(SizeError::Malformed(text.to_string()));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| SizeError::Malformed(text.to_string()))?;
    let factor: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(SizeError::UnknownUnit {
                text: text.to_string(),
                unit: unit.to_string(),
            });
        }
    };
    let bytes = (value * factor).round();
    if bytes >= u64::MAX as f64 {
        return Err(SizeError::TooLarge(text.to_string()));
    }
    Ok(bytes as u64)
}

/// True when `text` names a unit (a bare number of bytes is almost always a mistake in a workflow file).
pub fn has_unit(text: &str) -> bool {
    text.trim().ends_with(|c: char| c.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_and_binary_units_any_case() {
        assert_eq!(parse("512MB"), Ok(512_000_000));
        assert_eq!(parse("16GB"), Ok(16_000_000_000));
        assert_eq!(parse("16gb"), Ok(16_000_000_000));
        assert_eq!(parse("16GiB"), Ok(16 * 1024 * 1024 * 1024));
        assert_eq!(parse("16gib"), Ok(16 * 1024 * 1024 * 1024));
        assert_eq!(parse("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse(" 2 MiB "), Ok(2 * 1024 * 1024));
        assert_eq!(parse("1TB"), Ok(1_000_000_000_000));
    }

    #[test]
    fn docker_style_letters_are_binary_and_bare_numbers_bytes() {
        assert_eq!(parse("512m"), Ok(512 * 1024 * 1024));
        assert_eq!(parse("1G"), Ok(1024 * 1024 * 1024));
        assert_eq!(parse("4096"), Ok(4096));
        assert!(!has_unit("4096"));
        assert!(has_unit("4GB"));
    }

    #[test]
    fn nonsense_is_refused_with_a_hint() {
        assert_eq!(parse("GB"), Err(SizeError::Malformed("GB".into())));
        assert_eq!(parse("1.GB"), Err(SizeError::Malformed("1.GB".into())));
        assert_eq!(
            parse("1.2.3GB"),
            Err(SizeError::Malformed("1.2.3GB".into()))
        );
        let err = parse("16GX").unwrap_err();
        assert!(err.to_string().contains("unknown unit `GX`"), "{err}");
        assert!(parse("99999999999TB").is_err());
    }
}
