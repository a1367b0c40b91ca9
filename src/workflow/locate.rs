//! Line numbers for any node of a YAML document, found again from its path.
//!
//! `yaml_serde` parses into a `Value` without positions, but it does stamp every error with the position of
//! the node being deserialized when the error arose. So to learn where `workflows[1].environment` is, we
//! walk the document once more with a visitor that fails exactly at that node (or at that key) and read the
//! line off the error. It runs only when an error is being reported, on small files.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step from a node to its child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// Where a node sits in its document: `workflows[0].resources.gpu`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct YamlPath(Vec<Step>);

impl YamlPath {
    pub fn root() -> YamlPath {
        YamlPath(Vec::new())
    }

    pub fn key(&self, key: &str) -> YamlPath {
        let mut steps = self.0.clone();
        steps.push(Step::Key(key.to_string()));
        YamlPath(steps)
    }

    pub fn index(&self, index: usize) -> YamlPath {
        let mut steps = self.0.clone();
        steps.push(Step::Index(index));
        YamlPath(steps)
    }

    /// This path followed by `rest`.
    pub fn join(&self, rest: &YamlPath) -> YamlPath {
        let mut steps = self.0.clone();
        steps.extend(rest.0.iter().cloned());
        YamlPath(steps)
    }
}

impl fmt::Display for YamlPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            match step {
                Step::Key(key) if i == 0 => write!(f, "{key}")?,
                Step::Key(key) => write!(f, ".{key}")?,
                Step::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// What on the path to point at: the value there, or the key that introduces it (for unknown keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Value,
    Key,
}

const FOUND: &str = "\u{0}dstack-locate-found";

/// The 1-based line of the node at `path` in `text`, or `None` if the path is not there.
pub fn line_of(text: &str, path: &YamlPath, target: Target) -> Option<usize> {
    let seek = Seek {
        steps: &path.0,
        target,
    };
    match seek.deserialize(yaml_serde::Deserializer::from_str(text)) {
        Ok(()) => None,
        Err(err) if err.to_string().contains(FOUND) => err.location().map(|l| l.line()),
        // A syntax error elsewhere in the file: the parse reported it already; no line for this node.
        Err(_) => None,
    }
}

struct Seek<'p> {
    steps: &'p [Step],
    target: Target,
}

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seek<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.steps.split_first() else {
            return Err(de::Error::custom(FOUND));
        };
        let Step::Key(wanted) = first else {
            return drain_map(map);
        };
        let fail_on_key = rest.is_empty() && self.target == Target::Key;
        while let Some(matched) = map.next_key_seed(KeyMatch {
            wanted,
            fail_on_match: fail_on_key,
        })? {
            if matched {
                return map.next_value_seed(Seek {
                    steps: rest,
                    target: self.target,
                });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.steps.split_first() else {
            return Err(de::Error::custom(FOUND));
        };
        let Step::Index(wanted) = first else {
            return drain_seq(seq);
        };
        for _ in 0..*wanted {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Seek {
            steps: rest,
            target: self.target,
        })?;
        drain_seq(seq)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.at_scalar()
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.at_scalar()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.at_scalar()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.at_scalar()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.at_scalar()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.at_scalar()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.at_scalar()
    }
}

impl Seek<'_> {
    fn at_scalar<E: de::Error>(&self) -> Result<(), E> {
        if self.steps.is_empty() {
            Err(E::custom(FOUND))
        } else {
            Ok(())
        }
    }
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Reads one mapping key and says whether it is the wanted one; fails right there (so the error carries
/// the key's position) when asked to.
struct KeyMatch<'a> {
    wanted: &'a str,
    fail_on_match: bool,
}

impl<'de> DeserializeSeed<'de> for KeyMatch<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyMatch<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        self.compare(key)
    }
    fn visit_bool<E: de::Error>(self, key: bool) -> Result<bool, E> {
        self.compare(&key.to_string())
    }
    fn visit_i64<E: de::Error>(self, key: i64) -> Result<bool, E> {
        self.compare(&key.to_string())
    }
    fn visit_u64<E: de::Error>(self, key: u64) -> Result<bool, E> {
        self.compare(&key.to_string())
    }
    fn visit_f64<E: de::Error>(self, key: f64) -> Result<bool, E> {
        self.compare(&key.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        self.compare("null")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        drain_map(map).map(|()| false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
        drain_seq(seq).map(|()| false)
    }
}

impl KeyMatch<'_> {
    fn compare<E: de::Error>(&self, key: &str) -> Result<bool, E> {
        let matched = key == self.wanted;
        if matched && self.fail_on_match {
            Err(E::custom(FOUND))
        } else {
            Ok(matched)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
workflows:
  - name: first
    image: busybox
    commands:
      - echo one
      - echo two
  - name: second
    resources:
      gpu:
        count: 1
    environment: {A: 1, B: 2}
";

    fn path(steps: &[Step]) -> YamlPath {
        YamlPath(steps.to_vec())
    }

    fn k(key: &str) -> Step {
        Step::Key(key.into())
    }

    #[test]
    fn finds_values_keys_and_list_items() {
        let wf = |i| path(&[k("workflows"), Step::Index(i)]);
        assert_eq!(line_of(DOC, &wf(0), Target::Value), Some(2));
        assert_eq!(line_of(DOC, &wf(1), Target::Value), Some(7));
        assert_eq!(
            line_of(DOC, &wf(0).key("commands").index(1), Target::Value),
            Some(6)
        );
        assert_eq!(line_of(DOC, &wf(1).key("resources"), Target::Key), Some(8));
        let count = wf(1).key("resources").key("gpu").key("count");
        assert_eq!(line_of(DOC, &count, Target::Value), Some(10));
        assert_eq!(
            line_of(DOC, &wf(1).key("environment").key("B"), Target::Key),
            Some(11)
        );
    }

    #[test]
    fn a_missing_path_has_no_line() {
        let p = path(&[k("workflows"), Step::Index(5)]);
        assert_eq!(line_of(DOC, &p, Target::Value), None);
        assert_eq!(line_of(DOC, &path(&[k("nope")]), Target::Key), None);
    }

    #[test]
    fn paths_print_as_users_write_them() {
        let p = path(&[k("workflows"), Step::Index(0), k("resources"), k("gpu")]);
        assert_eq!(p.to_string(), "workflows[0].resources.gpu");
    }
}
