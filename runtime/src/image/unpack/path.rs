//! Entry names from a layer tar, made relative to the layer directory, and whiteout names recognized.

/// A normalized entry name: components joined by `/`, no leading `/`, no `.` or `..`, never empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct EntryPath(Vec<u8>);

/// What a name means to overlay.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Special<'a> {
    /// `.wh..wh..opq`: the parent directory hides what lower layers have in it.
    Opaque,
    /// `.wh.NAME`: NAME in lower layers is deleted.
    Whiteout(&'a [u8]),
    /// Other `.wh..wh.` names are aufs bookkeeping (hardlink directories); they carry nothing for overlay.
    AufsMeta,
    /// `.wh.`, `.wh..` and `.wh...`: a whiteout of nothing, of the directory itself or of its parent. Taken
    /// as a whiteout, `.wh...` at the top emptied the directory holding the unpack destination (in the
    /// store, the layer's build directory; for another caller, whatever sits beside the destination); no
    /// honest layer has one.
    BadWhiteout,
}

/// The name climbs above the layer root.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Escapes;

impl EntryPath {
    /// Normalizes a tar name. Absolute names are made relative (they mean the same inside an image).
    /// `..` is applied lexically; a name that would climb above the root is refused rather than clamped:
    /// no honest layer contains one, and silently writing it somewhere else would hide the attack.
    /// Returns `None` for the root itself (`./`, `/`).
    pub(crate) fn parse(raw: &[u8]) -> Result<Option<EntryPath>, Escapes> {
        let mut parts: Vec<&[u8]> = Vec::new();
        for part in raw.split(|&b| b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => {
                    if parts.pop().is_none() {
                        return Err(Escapes);
                    }
                }
                other => parts.push(other),
            }
        }
        if parts.is_empty() {
            return Ok(None);
        }
        Ok(Some(EntryPath(parts.join(&b'/'))))
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The parent directory (empty for the root) and the last component.
    pub(crate) fn split(&self) -> (&[u8], &[u8]) {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => (&self.0[..i], &self.0[i + 1..]),
            None => (&[], &self.0),
        }
    }

    /// The same directory with another last component (a whiteout's target).
    pub(crate) fn sibling(&self, name: &[u8]) -> EntryPath {
        let (parent, _) = self.split();
        let mut out = parent.to_vec();
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(name);
        EntryPath(out)
    }

    /// True when `self` is `other` or lies below it.
    pub(crate) fn is_within(&self, other: &EntryPath) -> bool {
        self.0.starts_with(&other.0)
            && (self.0.len() == other.0.len() || self.0[other.0.len()] == b'/')
    }

    pub(crate) fn display(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

/// Recognizes overlay/aufs whiteout names.
pub(crate) fn special(name: &[u8]) -> Option<Special<'_>> {
    let rest = name.strip_prefix(b".wh.")?;
    if rest == b".wh..opq" {
        return Some(Special::Opaque);
    }
    if rest.starts_with(b".wh.") {
        return Some(Special::AufsMeta);
    }
    if matches!(rest, b"" | b"." | b"..") {
        return Some(Special::BadWhiteout);
    }
    Some(Special::Whiteout(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> Result<Option<String>, Escapes> {
        EntryPath::parse(s.as_bytes()).map(|p| p.map(|p| p.display()))
    }

    #[test]
    fn names_are_made_relative_and_clean() {
        assert_eq!(norm("./usr/bin/sh"), Ok(Some("usr/bin/sh".into())));
        assert_eq!(norm("/etc/passwd"), Ok(Some("etc/passwd".into())));
        assert_eq!(norm("usr//lib/./x/"), Ok(Some("usr/lib/x".into())));
        assert_eq!(norm("a/b/../c"), Ok(Some("a/c".into())));
        assert_eq!(norm("./"), Ok(None));
        assert_eq!(norm("/"), Ok(None));
    }

    #[test]
    fn climbing_out_is_refused() {
        assert_eq!(norm("../etc/passwd"), Err(Escapes));
        assert_eq!(norm("a/../../x"), Err(Escapes));
        assert_eq!(norm("/../x"), Err(Escapes));
    }

    #[test]
    fn split_and_within() {
        let p = EntryPath::parse(b"a/b/c").unwrap().unwrap();
        assert_eq!(p.split(), (&b"a/b"[..], &b"c"[..]));
        let top = EntryPath::parse(b"c").unwrap().unwrap();
        assert_eq!(top.split(), (&b""[..], &b"c"[..]));
        let ab = EntryPath::parse(b"a/b").unwrap().unwrap();
        assert!(p.is_within(&ab));
        assert!(!EntryPath::parse(b"a/bc").unwrap().unwrap().is_within(&ab));
        assert_eq!(p.sibling(b"d").display(), "a/b/d");
    }

    #[test]
    fn whiteout_names() {
        assert_eq!(special(b".wh..wh..opq"), Some(Special::Opaque));
        assert_eq!(special(b".wh.passwd"), Some(Special::Whiteout(b"passwd")));
        assert_eq!(special(b".wh..wh.plnk"), Some(Special::AufsMeta));
        assert_eq!(special(b"passwd"), None);
        for bad in [&b".wh."[..], b".wh..", b".wh..."] {
            assert_eq!(special(bad), Some(Special::BadWhiteout));
        }
    }
}
