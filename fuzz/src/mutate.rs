//! Byte-level mutations: flips, insertions, deletions, repeats (nesting, long values), dictionary
//! tokens (the format's structural words) and splices of two corpus inputs.

/// xorshift64*: fast, seedable, good enough to pick mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Small numbers far more often than large ones: `0..n`.
    pub fn small(&mut self, n: usize) -> usize {
        let bits = self.below(usize::BITS as usize - n.leading_zeros() as usize + 1);
        self.below((1usize << bits).min(n).max(1))
    }
}

/// Bytes that often matter to parsers.
const INTERESTING: &[u8] = b"\0\xff\n\r\t \"'\\[]{}:,-#|>&*!/.%=@";

/// How a target's inputs may be changed.
pub struct Mutator<'a> {
    pub dictionary: &'a [&'a [u8]],
    /// Inputs made of blocks of this size (tar: 512): some insertions, deletions and repeats keep to it.
    pub align: usize,
    pub max_len: usize,
}

impl Mutator<'_> {
    /// `input` changed by one to four mutations; `other` is a second corpus input to splice from.
    pub fn mutate(&self, rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        for _ in 0..=rng.below(4) {
            self.once(rng, &mut out, other);
        }
        out.truncate(self.max_len);
        out
    }

    fn once(&self, rng: &mut Rng, out: &mut Vec<u8>, other: &[u8]) {
        let len = out.len();
        match rng.below(11) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.small(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                out.splice(at..at, bytes);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.small(len - at);
                out.drain(at..at + n);
            }
            4 | 5 if len > 0 => {
                // A chunk repeated: deep nesting, long values, many entries.
                let at = rng.below(len);
                let n = 1 + rng.small((len - at).min(64));
                let times = 1 + rng.small(20_000);
                let chunk = out[at..at + n].to_vec();
                let budget = self.max_len.saturating_sub(len) / n;
                let repeated = chunk.repeat(times.min(budget));
                out.splice(at..at, repeated);
            }
            6 | 7 if !self.dictionary.is_empty() => {
                let token = self.dictionary[rng.below(self.dictionary.len())];
                let at = if rng.below(2) == 0 {
                    rng.below(len + 1)
                } else {
                    // At a line start, where YAML's structure is.
                    let at = rng.below(len + 1);
                    out[..at]
                        .iter()
                        .rposition(|&b| b == b'\n')
                        .map_or(0, |p| p + 1)
                };
                out.splice(at..at, token.iter().copied());
            }
            8 if !other.is_empty() => {
                let keep = rng.below(len + 1);
                let from = rng.below(other.len());
                out.truncate(keep);
                out.extend_from_slice(&other[from..]);
            }
            9 | 10 if self.align > 0 && len >= self.align => {
                let blocks = len / self.align;
                let at = rng.below(blocks) * self.align;
                let block = out[at..at + self.align].to_vec();
                match rng.below(3) {
                    0 => {
                        out.drain(at..at + self.align);
                    }
                    1 => {
                        let to = rng.below(blocks + 1) * self.align;
                        out.splice(to..to, block);
                    }
                    _ => {
                        let from = rng.below(other.len() / self.align + 1) * self.align;
                        if from + self.align <= other.len() {
                            out.splice(at..at, other[from..from + self.align].iter().copied());
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_stay_within_the_size_limit() {
        let mutator = Mutator {
            dictionary: &[b"[", b"- "],
            align: 512,
            max_len: 4096,
        };
        let mut rng = Rng::new(7);
        let mut input = vec![b'a'; 1024];
        for _ in 0..10_000 {
            input = mutator.mutate(&mut rng, &input, b"workflows:\n");
            assert!(input.len() <= 4096);
        }
    }
}
