//! The fuzzing loop: seeds, mutation, the checks around each input (panic, time, the target's property),
//! artifacts, and a watchdog for inputs that never finish.

use std::collections::HashSet;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::mutate::{Mutator, Rng};

/// One fuzz target: its name (its corpus is `fuzz/corpus/<name>/`), the tokens worth inserting, and the
/// shape of its inputs.
pub struct Target {
    pub name: &'static str,
    pub dictionary: &'static [&'static [u8]],
    /// Inputs made of blocks of this size (0: none).
    pub align: usize,
    pub max_len: usize,
}

/// A slower input than this fails the run (`FUZZ_SLOW_MS` changes it).
const SLOW_DEFAULT_MS: u64 = 1000;
/// An input still running after this long is saved by the watchdog, which ends the process.
const HANG_FACTOR: u64 = 10;
/// The most inputs kept in memory for their new outcomes.
const CORPUS_MAX: usize = 2000;

/// Runs `target`. Arguments: `[SECONDS]` (default 30) to fuzz, or input files to replay once each.
/// `check` returns the input's outcome (a short label: "ok", an error's first words) or a violated
/// property; a panic is caught and reported.
pub fn run(target: Target, check: impl Fn(&[u8]) -> Result<String, String>) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let replay: Vec<&String> = args.iter().filter(|a| Path::new(a).is_file()).collect();
    if !replay.is_empty() {
        return replay_files(&target, &replay, &check);
    }
    let seconds = match args.first().map(|a| a.parse::<u64>()) {
        None => 30,
        Some(Ok(s)) => s,
        Some(Err(_)) => {
            eprintln!(
                "usage: fuzz_{} [SECONDS] | fuzz_{} INPUT_FILE...",
                target.name, target.name
            );
            return ExitCode::from(2);
        }
    };
    Fuzz::new(target).go(Duration::from_secs(seconds), &check)
}

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn slow_limit() -> Duration {
    let ms = std::env::var("FUZZ_SLOW_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SLOW_DEFAULT_MS);
    Duration::from_millis(ms)
}

/// Panics are caught and reported as failures; their message goes here instead of stderr.
fn quiet_panics() -> Arc<Mutex<String>> {
    let last = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&last);
    panic::set_hook(Box::new(move |info| {
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        *sink.lock().unwrap_or_else(|p| p.into_inner()) = format!("panicked{at}: {payload}");
    }));
    last
}

/// What happened to one input.
enum Verdict {
    Outcome(String),
    Failure { kind: &'static str, detail: String },
}

fn judge(
    check: &impl Fn(&[u8]) -> Result<String, String>,
    input: &[u8],
    panic_message: &Mutex<String>,
    slow: Duration,
) -> Verdict {
    let started = Instant::now();
    let result = panic::catch_unwind(AssertUnwindSafe(|| check(input)));
    let took = started.elapsed();
    match result {
        Err(_) => Verdict::Failure {
            kind: "crash",
            detail: panic_message
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        },
        Ok(Err(broken)) => Verdict::Failure {
            kind: "property",
            detail: broken,
        },
        Ok(Ok(_)) if took > slow => Verdict::Failure {
            kind: "slow",
            detail: format!("took {took:?} (the limit is {slow:?})"),
        },
        Ok(Ok(outcome)) => Verdict::Outcome(outcome),
    }
}

/// Saves `input` to `fuzz/artifacts/` and says what failed and how to replay it.
fn report(target: &str, kind: &str, detail: &str, input: &[u8]) -> ExitCode {
    let dir = fuzz_dir().join("artifacts");
    let name = format!("{target}-{kind}-{:016x}", fnv(input));
    let path = dir.join(name);
    let saved = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, input));
    let detail: String = detail.chars().take(2000).collect();
    eprintln!("fuzz_{target}: FAILED ({kind}): {detail}");
    match saved {
        Ok(()) => eprintln!(
            "fuzz_{target}: the input is saved as {}\nreplay it with: cargo run -p dstack-fuzz --bin fuzz_{target} -- {}",
            path.display(),
            path.display()
        ),
        Err(e) => eprintln!(
            "fuzz_{target}: could not save the input to {}: {e}",
            path.display()
        ),
    }
    ExitCode::FAILURE
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn replay_files(
    target: &Target,
    files: &[&String],
    check: &impl Fn(&[u8]) -> Result<String, String>,
) -> ExitCode {
    let panic_message = quiet_panics();
    for file in files {
        let input = match std::fs::read(file) {
            Ok(input) => input,
            Err(e) => {
                eprintln!("fuzz_{}: cannot read {file}: {e}", target.name);
                return ExitCode::from(2);
            }
        };
        match judge(check, &input, &panic_message, slow_limit()) {
            Verdict::Outcome(outcome) => println!("{file}: {outcome}"),
            Verdict::Failure { kind, detail } => {
                eprintln!("fuzz_{}: {file} FAILED ({kind}): {detail}", target.name);
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

struct Fuzz {
    target: Target,
    corpus: Vec<Vec<u8>>,
    seen: HashSet<String>,
}

impl Fuzz {
    fn new(target: Target) -> Fuzz {
        let dir = fuzz_dir().join("corpus").join(target.name);
        let mut corpus: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .map(|entries| {
                let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
                paths.sort();
                paths.iter().filter_map(|p| std::fs::read(p).ok()).collect()
            })
            .unwrap_or_default();
        if corpus.is_empty() {
            eprintln!(
                "fuzz_{}: no seeds in {}; starting from an empty input",
                target.name,
                dir.display()
            );
            corpus.push(Vec::new());
        }
        Fuzz {
            target,
            corpus,
            seen: HashSet::new(),
        }
    }

    fn go(
        mut self,
        budget: Duration,
        check: &impl Fn(&[u8]) -> Result<String, String>,
    ) -> ExitCode {
        let name = self.target.name;
        let panic_message = quiet_panics();
        let slow = slow_limit();
        let current = Arc::new(Mutex::new(Vec::new()));
        let started_ms = Arc::new(AtomicU64::new(0));
        watchdog(
            name,
            Arc::clone(&current),
            Arc::clone(&started_ms),
            slow * HANG_FACTOR as u32,
        );
        let seed = std::env::var("FUZZ_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| now_ms() ^ u64::from(std::process::id()));
        let mut rng = Rng::new(seed);
        let mutator = Mutator {
            dictionary: self.target.dictionary,
            align: self.target.align,
            max_len: self.target.max_len,
        };
        let show_outcomes = std::env::var_os("FUZZ_SHOW_OUTCOMES").is_some();
        let deadline = Instant::now() + budget;
        let mut runs = 0u64;
        // The seeds themselves first: each must pass.
        let mut queue: Vec<Vec<u8>> = self.corpus.clone();
        loop {
            let input = match queue.pop() {
                Some(input) => input,
                None if Instant::now() >= deadline => break,
                None => {
                    let a = rng.below(self.corpus.len());
                    let b = rng.below(self.corpus.len());
                    mutator.mutate(&mut rng, &self.corpus[a], &self.corpus[b])
                }
            };
            current
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone_from(&input);
            started_ms.store(now_ms(), Ordering::SeqCst);
            let verdict = judge(check, &input, &panic_message, slow);
            started_ms.store(0, Ordering::SeqCst);
            runs += 1;
            match verdict {
                Verdict::Failure { kind, detail } => return report(name, kind, &detail, &input),
                Verdict::Outcome(outcome) => {
                    if show_outcomes && !self.seen.contains(&outcome) {
                        eprintln!("fuzz_{name}: new outcome: {outcome}");
                    }
                    if self.seen.insert(outcome) && self.corpus.len() < CORPUS_MAX {
                        self.corpus.push(input);
                    }
                }
            }
        }
        println!(
            "fuzz_{name}: ok: {runs} inputs in {}s (seed {seed}), {} distinct outcomes",
            budget.as_secs(),
            self.seen.len()
        );
        ExitCode::SUCCESS
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A thread that saves the running input and ends the process if one input runs longer than `hang`.
fn watchdog(
    name: &'static str,
    current: Arc<Mutex<Vec<u8>>>,
    started_ms: Arc<AtomicU64>,
    hang: Duration,
) {
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let started = started_ms.load(Ordering::SeqCst);
            if started != 0 && now_ms().saturating_sub(started) > hang.as_millis() as u64 {
                let input = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let _ = report(
                    name,
                    "hang",
                    &format!("still running after {hang:?}"),
                    &input,
                );
                std::process::exit(1);
            }
        }
    });
}
