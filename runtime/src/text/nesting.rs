//! Bounds on YAML and JSON from outside, checked before a parser sees them: a file over [`LIMIT_BYTES`]
//! or nested deeper than [`LIMIT_DEPTH`] is refused at once with the line. YAML parsers take time
//! quadratic in the nesting depth (100,000 `[` took minutes), so this pre-scan is one linear pass that
//! keeps no more than a stack of indentation columns.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// The largest workflow or configuration file read from a project.
pub const LIMIT_BYTES: u64 = 1 << 20;
/// The deepest nesting (block indentation levels plus flow `[`/`{` levels) accepted.
pub const LIMIT_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error(
        "it is larger than 1 MiB (the limit is passed on this line); a workflow or configuration file \
         is at most 1 MiB: split it or move the data into files the job reads"
    )]
    TooBig { line: usize },
    #[error(
        "it is nested deeper than {LIMIT_DEPTH} levels here (lists or mappings inside each other); \
         flatten it"
    )]
    TooDeep { line: usize },
}

impl LimitError {
    /// The 1-based line the limit was passed on.
    pub fn line(&self) -> usize {
        match self {
            LimitError::TooBig { line } | LimitError::TooDeep { line } => *line,
        }
    }
}

/// At most `LIMIT_BYTES + 1` bytes of `path`: enough to tell that it is too big, never more (a FIFO,
/// `/dev/zero` or a growing file cannot make us read without end).
pub fn read_capped(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?
        .take(LIMIT_BYTES + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Refuses `bytes` longer than [`LIMIT_BYTES`], naming the line where the limit is passed.
pub fn check_size(bytes: &[u8]) -> Result<(), LimitError> {
    if bytes.len() as u64 <= LIMIT_BYTES {
        return Ok(());
    }
    let within = &bytes[..LIMIT_BYTES as usize];
    let line = 1 + within.iter().filter(|&&b| b == b'\n').count();
    Err(LimitError::TooBig { line })
}

/// Refuses YAML (JSON included) nested deeper than [`LIMIT_DEPTH`]. It tracks block indentation, `- `
/// and `? ` indicators, flow brackets, quoted scalars, block scalars (`|`, `>`) and comments closely
/// enough that brackets inside strings do not count and nesting cannot hide from it inside something
/// that only looks like a string; where it is unsure it counts a level (refusing, not missing).
pub fn check_nesting(text: &str) -> Result<(), LimitError> {
    Scan::new(text.as_bytes()).run()
}

/// Where the scan is inside a block scalar (`|` or `>`): lines indented at least `content` belong to it.
struct BlockScalar {
    parent: usize,
    content: Option<usize>,
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
    line: usize,
    line_start: usize,
    /// Columns of the open block collections, innermost last.
    block: Vec<usize>,
    flow: usize,
    /// The next token starts a node (where a quote, bracket or block scalar indicator means one).
    node_start: bool,
    /// The last token was a quoted scalar (JSON's `"a":1` has no space after the colon).
    after_quoted: bool,
    /// A `- ` or `? ` on this line: the next token's column opens a level if it is a key.
    after_indicator: bool,
    /// The column of the token after a `- ` or `? `, until its `: ` shows it to be a key.
    key_col: Option<usize>,
    scalar: Option<BlockScalar>,
}

impl<'a> Scan<'a> {
    fn new(b: &'a [u8]) -> Scan<'a> {
        Scan {
            b,
            i: 0,
            line: 1,
            line_start: 0,
            block: Vec::new(),
            flow: 0,
            node_start: true,
            after_quoted: false,
            after_indicator: false,
            key_col: None,
            scalar: None,
        }
    }

    fn run(mut self) -> Result<(), LimitError> {
        self.start_line()?;
        while self.i < self.b.len() {
            let c = self.b[self.i];
            match c {
                b'\n' => {
                    self.i += 1;
                    self.line += 1;
                    self.line_start = self.i;
                    self.start_line()?;
                    continue;
                }
                b' ' | b'\t' | b'\r' => {
                    self.i += 1;
                    continue;
                }
                b'#' if self.after_space() => {
                    self.skip_to_eol();
                    continue;
                }
                _ => {}
            }
            if self.flow == 0 && self.after_indicator {
                self.key_col = Some(self.i - self.line_start);
            }
            self.after_indicator = false;
            let quoted = self.after_quoted;
            self.after_quoted = false;
            match c {
                b'\'' | b'"' if self.node_start => {
                    self.quoted(c);
                    self.node_start = false;
                    self.after_quoted = true;
                    continue;
                }
                b'[' | b'{' if self.flow > 0 || self.node_start => {
                    self.flow += 1;
                    self.check_depth()?;
                    self.node_start = true;
                }
                b']' | b'}' if self.flow > 0 => {
                    self.flow -= 1;
                    self.node_start = false;
                }
                b',' if self.flow > 0 => self.node_start = true,
                b'|' | b'>' if self.flow == 0 && self.node_start => {
                    let parent = self.block.last().copied().unwrap_or(0);
                    self.scalar = Some(BlockScalar {
                        parent,
                        content: None,
                    });
                    self.skip_to_eol();
                    continue;
                }
                b'-' | b'?' if self.flow == 0 && self.node_start && self.space_follows() => {
                    let col = self.i - self.line_start;
                    self.open_block(col)?;
                    self.after_indicator = true;
                    self.node_start = true;
                }
                b':' if self.space_follows() || quoted => {
                    if self.flow == 0
                        && let Some(col) = self.key_col.take()
                    {
                        // `- key: value`: a mapping inside the list item.
                        self.open_block(col)?;
                    }
                    self.node_start = true
                }
                b'&' | b'!' if self.node_start => {
                    // An anchor or a tag: the node itself comes after it.
                    while self.i < self.b.len() && !matches!(self.b[self.i], b' ' | b'\t' | b'\n') {
                        self.i += 1;
                    }
                    continue;
                }
                _ => self.node_start = false,
            }
            self.i += 1;
        }
        Ok(())
    }

    /// At the start of a line: skip the lines of an open block scalar, else note the line's indentation.
    fn start_line(&mut self) -> Result<(), LimitError> {
        let mut j = self.i;
        while j < self.b.len() && self.b[j] == b' ' {
            j += 1;
        }
        let indent = j - self.i;
        let blank = self.b[j..]
            .iter()
            .take_while(|&&c| c != b'\n')
            .all(|c| c.is_ascii_whitespace());
        if let Some(scalar) = &mut self.scalar {
            let inside = blank
                || match scalar.content {
                    Some(content) => indent >= content,
                    None if indent > scalar.parent => {
                        scalar.content = Some(indent);
                        true
                    }
                    None => false,
                };
            if inside {
                self.skip_to_eol();
                return Ok(());
            }
            self.scalar = None;
        }
        self.i = j;
        self.after_indicator = false;
        self.key_col = None;
        if self.flow > 0 || blank || self.b.get(j) == Some(&b'#') {
            return Ok(());
        }
        self.node_start = true;
        if indent == 0 && self.document_marker() {
            // `---` or `...`: a new document, whose node may follow on the same line (`--- [`).
            self.block.clear();
            self.i += 3;
            return Ok(());
        }
        self.open_block(indent)
    }

    /// `---` or `...` at the start of a line, followed by a space or the line's end.
    fn document_marker(&self) -> bool {
        let rest = &self.b[self.i..];
        (rest.starts_with(b"---") || rest.starts_with(b"..."))
            && matches!(rest.get(3), None | Some(b' ' | b'\t' | b'\n' | b'\r'))
    }

    /// A block collection at `col`: closes the deeper ones, opens one if it is deeper than the last.
    fn open_block(&mut self, col: usize) -> Result<(), LimitError> {
        while self.block.last().is_some_and(|&top| top > col) {
            self.block.pop();
        }
        if self.block.last() != Some(&col) {
            self.block.push(col);
        }
        self.check_depth()
    }

    fn check_depth(&self) -> Result<(), LimitError> {
        if self.block.len() + self.flow > LIMIT_DEPTH {
            return Err(LimitError::TooDeep { line: self.line });
        }
        Ok(())
    }

    fn after_space(&self) -> bool {
        self.i == self.line_start || matches!(self.b[self.i - 1], b' ' | b'\t')
    }

    fn space_follows(&self) -> bool {
        matches!(
            self.b.get(self.i + 1),
            None | Some(b' ' | b'\t' | b'\n' | b'\r')
        )
    }

    fn skip_to_eol(&mut self) {
        while self.i < self.b.len() && self.b[self.i] != b'\n' {
            self.i += 1;
        }
    }

    /// Past a quoted scalar that opens at `self.i` (which may span lines), or to the end of the text.
    fn quoted(&mut self, quote: u8) {
        self.i += 1;
        while self.i < self.b.len() {
            let c = self.b[self.i];
            self.i += 1;
            match c {
                b'\n' => {
                    self.line += 1;
                    self.line_start = self.i;
                }
                b'\\' if quote == b'"' => {
                    if self.b.get(self.i) == Some(&b'\n') {
                        self.line += 1;
                        self.line_start = self.i + 1;
                    }
                    self.i += 1;
                }
                _ if c == quote => {
                    if quote == b'\'' && self.b.get(self.i) == Some(&b'\'') {
                        self.i += 1;
                    } else {
                        return;
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_error(text: &str) -> Option<usize> {
        match check_nesting(text) {
            Ok(()) => None,
            Err(e) => Some(e.line()),
        }
    }

    fn block_nest(levels: usize) -> String {
        (0..levels)
            .map(|d| format!("{}k{d}:\n", "  ".repeat(d)))
            .collect::<String>()
    }

    #[test]
    fn ordinary_workflows_pass() {
        let text = "workflows:\n  - name: a # comment [[[\n    provider: docker\n    image: ubuntu\n    \
                    commands:\n      - if [ -f x ]; then echo '[[[[' \"{{{\"; fi\n      - |\n        \
                    [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n      \
                    - >-\n          {{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{\n    \
                    env: {A: '[', B: \"]{\", C: [1, [2, {x: y}]]}\n";
        assert_eq!(depth_error(text), None);
        let json = format!("{{\"a\":\"{}\",\"b\":[1,{{\"c\":2}}]}}", "[".repeat(500));
        assert_eq!(depth_error(&json), None);
    }

    #[test]
    fn flow_nesting_past_the_limit_is_refused_with_its_line() {
        let ok = format!("a: 1\nb: {}{}", "[".repeat(63), "]".repeat(63));
        assert_eq!(depth_error(&ok), None);
        let deep = format!("a: 1\nb: {}", "[".repeat(64));
        assert_eq!(depth_error(&deep), Some(2));
        let huge = format!("workflows: {}", "[".repeat(100_000));
        assert_eq!(depth_error(&huge), Some(1));
    }

    #[test]
    fn block_nesting_past_the_limit_is_refused_with_its_line() {
        assert_eq!(depth_error(&block_nest(64)), None);
        assert_eq!(depth_error(&block_nest(65)), Some(65));
        let dashes = format!("{}x\n", "- ".repeat(65));
        assert_eq!(depth_error(&dashes), Some(1));
        assert_eq!(depth_error(&format!("{}x\n", "- ".repeat(64))), None);
    }

    #[test]
    fn nesting_cannot_hide_behind_a_quote_or_a_block_scalar_that_ended() {
        // A quote in the middle of a plain scalar opens no string.
        let plain = format!("a: don't\nb: {}", "[".repeat(100));
        assert!(depth_error(&plain).is_some());
        // The block scalar ends at the first line indented less than its content.
        let ended = format!("a: |\n    text\nb: {}", "[".repeat(100));
        assert_eq!(depth_error(&ended), Some(3));
    }

    #[test]
    fn nesting_after_a_document_marker_or_a_quoted_key_counts() {
        assert!(depth_error(&format!("--- {}", "[".repeat(100))).is_some());
        assert!(depth_error(&format!("a: 1\n--- {}", "{".repeat(100))).is_some());
        assert!(depth_error(&format!("\"a\":{}", "[".repeat(100))).is_some());
        assert_eq!(depth_error("--- \na: [1]\n...\n---\nb: {c: d}\n"), None);
    }

    #[test]
    fn the_scan_is_linear() {
        let started = std::time::Instant::now();
        let mixed = "- [".repeat(300_000);
        let _ = check_nesting(&mixed);
        let dashes = "- ".repeat(500_000);
        let _ = check_nesting(&dashes);
        let lines: String = (0..100_000)
            .map(|i| format!("{}x:\n", " ".repeat(i % 60)))
            .collect();
        let _ = check_nesting(&lines);
        assert!(
            started.elapsed().as_secs_f64() < 2.0,
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn sizes_past_one_mib_are_refused_with_a_line() {
        assert_eq!(check_size(&vec![b'x'; 1 << 20]), Ok(()));
        let mut big = b"a\nb\n".to_vec();
        big.resize((1 << 20) + 1, b'x');
        assert_eq!(check_size(&big), Err(LimitError::TooBig { line: 3 }));
    }
}
