//! A run's artifacts under `runs/<name>/artifacts/<path>`: gathered when the run ends, listed, downloaded.

use std::path::Path;

use serde::Serialize;

use super::RunsError;
use super::copy::{self, Copied};
use super::record::ArtifactRecord;

/// One artifact as `dstack artifacts list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub path: String,
    pub files: u64,
    pub size: u64,
}

/// Moves what the job wrote at each artifact's place in the project copy into `artifacts/<path>`.
/// Artifacts that are missing (the job never wrote them) are simply absent.
pub fn collect(
    project_copy: &Path,
    artifacts_dir: &Path,
    artifacts: &[ArtifactRecord],
) -> Result<(), RunsError> {
    for artifact in artifacts {
        let Some(rel) = &artifact.from_project_copy else {
            continue;
        };
        let src = project_copy.join(rel);
        if std::fs::symlink_metadata(&src).is_err() {
            continue;
        }
        copy::move_tree(&src, &artifacts_dir.join(&artifact.path))?;
    }
    Ok(())
}

/// Files and bytes of each artifact, in the workflow's order.
pub fn list(artifacts_dir: &Path, artifacts: &[ArtifactRecord]) -> Vec<Summary> {
    artifacts
        .iter()
        .map(|a| {
            let measured = copy::measure(&artifacts_dir.join(&a.path));
            Summary {
                path: a.path.clone(),
                files: measured.files,
                size: measured.bytes,
            }
        })
        .collect()
}

/// Copies every artifact to `out/<path>`.
pub fn download(
    artifacts_dir: &Path,
    artifacts: &[ArtifactRecord],
    out: &Path,
) -> Result<Copied, RunsError> {
    let mut total = Copied::default();
    for artifact in artifacts {
        let src = artifacts_dir.join(&artifact.path);
        if std::fs::symlink_metadata(&src).is_err() {
            continue;
        }
        let dst = out.join(&artifact.path);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(|source| RunsError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let copied = copy::copy_tree(&src, &dst, &[])?;
        total.files += copied.files;
        total.bytes += copied.bytes;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn record(path: &str, from: Option<&str>) -> ArtifactRecord {
        ArtifactRecord {
            path: path.into(),
            mount: from.is_none(),
            from_project_copy: from.map(str::to_string),
        }
    }

    #[test]
    fn collects_lists_and_downloads() {
        let tmp = tempfile::tempdir().unwrap();
        let copy_dir = tmp.path().join("workflow");
        let arts = tmp.path().join("artifacts");
        fs::create_dir_all(copy_dir.join("src/output/sub")).unwrap();
        fs::write(copy_dir.join("src/output/hello.txt"), "Hello, world!\n").unwrap();
        fs::write(copy_dir.join("src/output/sub/x"), "12345").unwrap();
        fs::create_dir_all(arts.join("data/live")).unwrap();
        fs::write(arts.join("data/live/ckpt"), "abc").unwrap();
        let records = [
            record("output", Some("src/output")),
            record("data/live", None),
            record("never-written", Some("src/never-written")),
        ];
        collect(&copy_dir, &arts, &records).unwrap();
        assert_eq!(
            fs::read_to_string(arts.join("output/hello.txt")).unwrap(),
            "Hello, world!\n"
        );
        assert!(!copy_dir.join("src/output").exists(), "moved, not copied");
        let listed = list(&arts, &records);
        assert_eq!(
            listed,
            [
                Summary {
                    path: "output".into(),
                    files: 2,
                    size: 19
                },
                Summary {
                    path: "data/live".into(),
                    files: 1,
                    size: 3
                },
                Summary {
                    path: "never-written".into(),
                    files: 0,
                    size: 0
                },
            ]
        );
        let out = tmp.path().join("download");
        let copied = download(&arts, &records, &out).unwrap();
        assert_eq!((copied.files, copied.bytes), (3, 22));
        assert_eq!(
            fs::read_to_string(out.join("output/hello.txt")).unwrap(),
            "Hello, world!\n"
        );
        assert_eq!(
            fs::read_to_string(out.join("data/live/ckpt")).unwrap(),
            "abc"
        );
    }
}
