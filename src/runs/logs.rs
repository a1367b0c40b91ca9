//! `dstack logs`: a run's `output.log`, printed once or followed until the run ends, with the project's
//! secret values masked.

use std::fs::File;
use std::io::{self, Read as _, Seek as _, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::time::Duration;

/// Replaces every occurrence of each secret value (longest first) with `***`.
pub fn mask(text: &str, secrets: &[String]) -> String {
    let mut values: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    values.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_string();
    for value in values {
        out = out.replace(value.as_str(), "***");
    }
    out
}

/// Rewrites `log` with every secret value masked, line by line, if any appears in it (the job printed
/// one): what is kept after the run never holds a secret. A missing log is fine.
pub fn mask_file(log: &Path, secrets: &[String]) -> io::Result<()> {
    use std::io::BufRead as _;
    if secrets.iter().all(String::is_empty) {
        return Ok(());
    }
    let file = match File::open(log) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let tmp = log.with_extension("log.masking");
    let mut out = io::BufWriter::new(
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(runtime::private::FILE_MODE)
            .open(&tmp)?,
    );
    let mut changed = false;
    let mut reader = io::BufReader::new(file);
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line)? > 0 {
        let text = String::from_utf8_lossy(&line);
        let masked = mask(&text, secrets);
        if masked != text {
            changed = true;
            out.write_all(masked.as_bytes())?;
        } else {
            out.write_all(&line)?;
        }
        line.clear();
    }
    out.flush()?;
    drop(out);
    if changed {
        std::fs::rename(&tmp, log)
    } else {
        std::fs::remove_file(&tmp)
    }
}

/// Writes `log` to `out`, whole lines masked. With `follow`, keeps reading new output every `poll`
/// until `live()` says the run has ended and everything written before that has been printed.
pub fn print(
    log: &Path,
    out: &mut impl Write,
    secrets: &[String],
    follow: bool,
    poll: Duration,
    mut live: impl FnMut() -> bool,
) -> io::Result<()> {
    let mut file = loop {
        match File::open(log) {
            Ok(file) => break Some(file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // The run may not have produced output yet.
                if follow && live() {
                    std::thread::sleep(poll);
                    continue;
                }
                break None;
            }
            Err(e) => return Err(e),
        }
    };
    let Some(file) = file.as_mut() else {
        return Ok(());
    };
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Look at liveness before reading, so nothing written before the end is missed.
        let still_live = follow && live();
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            pending.extend_from_slice(&buf[..n]);
            if let Some(end) = pending.iter().rposition(|b| *b == b'\n') {
                let lines: Vec<u8> = pending.drain(..=end).collect();
                out.write_all(mask(&String::from_utf8_lossy(&lines), secrets).as_bytes())?;
            }
        }
        out.flush()?;
        if !still_live {
            break;
        }
        std::thread::sleep(poll);
        // Keep our place even if the file was replaced by a shorter one.
        let pos = file.stream_position()?;
        if file.metadata()?.len() < pos {
            file.seek(SeekFrom::Start(0))?;
        }
    }
    if !pending.is_empty() {
        out.write_all(mask(&String::from_utf8_lossy(&pending), secrets).as_bytes())?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn secrets_are_masked_longest_first() {
        let secrets = vec!["abc".to_string(), "abcdef".to_string(), String::new()];
        assert_eq!(mask("x abcdef y abc z", &secrets), "x *** y *** z");
    }

    #[test]
    fn a_kept_log_is_rewritten_without_secrets() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("output.log");
        std::fs::write(&log, "start\npassword is s3cret\nend").unwrap();
        mask_file(&log, &["s3cret".to_string()]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "start\npassword is ***\nend"
        );
        let before = std::fs::metadata(&log).unwrap().modified().unwrap();
        mask_file(&log, &["absent".to_string()]).unwrap();
        assert_eq!(
            std::fs::metadata(&log).unwrap().modified().unwrap(),
            before,
            "left alone"
        );
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
        mask_file(&tmp.path().join("missing.log"), &["x".to_string()]).unwrap();
    }

    #[test]
    fn prints_a_finished_log() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("output.log");
        std::fs::write(&log, "one\ntoken=s3cret\nno newline").unwrap();
        let mut out = Vec::new();
        let secrets = vec!["s3cret".to_string()];
        print(&log, &mut out, &secrets, false, Duration::ZERO, || false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "one\ntoken=***\nno newline"
        );
    }

    #[test]
    fn follow_prints_what_arrives_until_the_run_ends() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("output.log");
        let polls = AtomicUsize::new(0);
        let mut out = Vec::new();
        print(&log, &mut out, &[], true, Duration::from_millis(1), || {
            let n = polls.fetch_add(1, Ordering::SeqCst);
            match n {
                0 => true,
                1 => {
                    std::fs::write(&log, "first\n").unwrap();
                    true
                }
                2 => {
                    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
                    f.write_all(b"second\n").unwrap();
                    true
                }
                _ => false,
            }
        })
        .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "first\nsecond\n");
    }
}
