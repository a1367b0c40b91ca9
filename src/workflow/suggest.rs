//! "Did you mean ...?": the known word closest to a misspelt one.

/// The candidate closest to `word` by edit distance (adjacent swaps count as one edit), if it is close
/// enough to be a plausible typo: at most a third of the word's length, and at least one edit allowed.
/// Failing that, a candidate that `word` abbreviates (`mem` for `memory`, `mnt` for `mount`).
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    let limit = (word.chars().count() / 3).max(1);
    let typo = candidates
        .iter()
        .map(|c| (distance(&word, &c.to_ascii_lowercase()), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c);
    typo.or_else(|| {
        candidates
            .iter()
            .find(|c| abbreviates(&word, &c.to_ascii_lowercase()))
            .copied()
    })
}

/// `short` (3 letters or more) keeps the first letter of `long` and more of its letters in order: `mem`,
/// `mnt`, `img`.
fn abbreviates(short: &str, long: &str) -> bool {
    if short.len() < 3 || short.len() >= long.len() || short.chars().next() != long.chars().next() {
        return false;
    }
    let mut rest = long.chars();
    short.chars().all(|c| rest.any(|l| l == c))
}

/// Optimal string alignment distance: insertions, deletions, substitutions and transpositions.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &[&str] = &[
        "environment",
        "env",
        "entrypoint",
        "artifacts",
        "image",
        "commands",
    ];

    #[test]
    fn typical_typos_find_their_key() {
        assert_eq!(closest("enviroment", KEYS), Some("environment"));
        assert_eq!(closest("artefacts", KEYS), Some("artifacts"));
        assert_eq!(closest("imgae", KEYS), Some("image"));
        assert_eq!(closest("Commands", KEYS), Some("commands"));
        assert_eq!(closest("command", KEYS), Some("commands"));
        assert_eq!(closest("mem", &["count", "name", "memory"]), Some("memory"));
        assert_eq!(closest("mnt", &["path", "mount"]), Some("mount"));
        assert_eq!(closest("img", KEYS), Some("image"));
    }

    #[test]
    fn unrelated_words_get_no_suggestion() {
        assert_eq!(closest("python", KEYS), None);
        assert_eq!(closest("x", &["ports"]), None);
        assert_eq!(closest("pt", &["ports"]), None, "too short to abbreviate");
        assert_eq!(closest("gpx", &["gpu"]), Some("gpu"));
        assert_eq!(closest("mxy", &["memory"]), None);
    }

    #[test]
    fn distance_counts_edits() {
        assert_eq!(distance("abc", "abc"), 0);
        assert_eq!(distance("abc", "acb"), 1);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "ab"), 2);
    }
}
