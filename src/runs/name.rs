//! Run names: `<adjective>-<animal>-<N>`, as the original dstack named runs. `N` comes from a counter kept
//! under the runs directory's lock, so names never repeat on a machine (per state root) even when the words
//! do.

use std::hash::{BuildHasher as _, Hasher as _};

const ADJECTIVES: &[&str] = &[
    "agile", "bold", "brave", "bright", "calm", "clever", "cosmic", "crisp", "curious", "daring",
    "eager", "fancy", "fast", "fierce", "gentle", "glad", "golden", "grand", "happy", "honest",
    "humble", "jolly", "keen", "kind", "lively", "lucky", "merry", "mighty", "modest", "nimble",
    "noble", "patient", "plucky", "polite", "proud", "quick", "quiet", "rapid", "shiny", "silent",
    "smart", "snappy", "steady", "sunny", "swift", "tidy", "vivid", "wise", "witty", "zesty",
];

const ANIMALS: &[&str] = &[
    "badger", "beaver", "bison", "camel", "cheetah", "cobra", "crane", "dingo", "dolphin", "eagle",
    "falcon", "ferret", "gazelle", "gecko", "gibbon", "heron", "hyena", "ibis", "impala", "jackal",
    "jaguar", "koala", "lemur", "lion", "llama", "lynx", "marmot", "mink", "moose", "newt",
    "ocelot", "otter", "owl", "panda", "parrot", "puffin", "quokka", "rabbit", "raven", "salmon",
    "seal", "shark", "sloth", "swan", "tapir", "tiger", "toucan", "walrus", "wombat", "yak",
    "zebra",
];

/// The name of the `number`th run, with words picked at random.
pub fn generate(number: u64) -> String {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let adjective = ADJECTIVES[(random % ADJECTIVES.len() as u64) as usize];
    let animal = ANIMALS[((random >> 32) % ANIMALS.len() as u64) as usize];
    format!("{adjective}-{animal}-{number}")
}

/// True for strings shaped like a run name (and therefore safe as a directory name).
pub fn looks_like_run_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    parts.len() == 3
        && parts[..2]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && !parts[2].is_empty()
        && parts[2].chars().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_adjective_animal_number() {
        for n in [1, 42, 1000] {
            let name = generate(n);
            assert!(looks_like_run_name(&name), "{name}");
            assert!(name.ends_with(&format!("-{n}")), "{name}");
            let parts: Vec<&str> = name.split('-').collect();
            assert!(
                ADJECTIVES.contains(&parts[0]) && ANIMALS.contains(&parts[1]),
                "{name}"
            );
        }
    }

    #[test]
    fn words_vary() {
        let names: std::collections::BTreeSet<String> = (0..40).map(|_| generate(1)).collect();
        assert!(names.len() > 10, "{names:?}");
    }

    #[test]
    fn only_run_shaped_names_pass() {
        assert!(looks_like_run_name("brave-otter-3"));
        for bad in [
            "",
            "brave-otter",
            "brave-otter-x",
            "../etc-x-1",
            "Brave-otter-1",
            "a-b-1-2",
            "a--1",
        ] {
            assert!(!looks_like_run_name(bad), "{bad}");
        }
    }
}
