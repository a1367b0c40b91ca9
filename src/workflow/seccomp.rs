//! Which seccomp filter a job gets: a workflow's `security_opt` and `run docker --security-opt`, in Docker's
//! words. The plan turns the choice into the Spec's `linux.seccomp`.

use std::path::{Path, PathBuf};

/// Which seccomp filter a job gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SeccompChoice {
    /// Docker's default profile for the job's capabilities.
    #[default]
    Default,
    /// No filter (`seccomp=unconfined`).
    Unconfined,
    /// A Docker or OCI profile file (`seccomp=FILE`); a relative path is resolved by the caller.
    File(PathBuf),
}

impl SeccompChoice {
    /// Docker's `--security-opt` value: `seccomp=unconfined`, `seccomp=FILE` (or the old `seccomp:...`);
    /// `no-new-privileges` is accepted and changes nothing (every job has it). Errors say what to write.
    pub fn parse_security_opt(option: &str) -> Result<Option<SeccompChoice>, String> {
        let nnp = [
            "no-new-privileges",
            "no-new-privileges=true",
            "no-new-privileges:true",
        ];
        if nnp.contains(&option) {
            return Ok(None);
        }
        let value = option
            .strip_prefix("seccomp=")
            .or_else(|| option.strip_prefix("seccomp:"));
        match value {
            Some("unconfined") => Ok(Some(SeccompChoice::Unconfined)),
            Some("") => Err("`seccomp=` needs `unconfined` or a profile file".to_string()),
            Some(file) => Ok(Some(SeccompChoice::File(PathBuf::from(file)))),
            None => Err(format!(
                "`{}` is not a supported security option: use `seccomp=unconfined` or `seccomp=FILE` \
                 (a Docker seccomp profile)",
                runtime::text::clip(option)
            )),
        }
    }

    /// A relative profile path taken relative to `base`.
    pub fn relative_to(self, base: &Path) -> SeccompChoice {
        match self {
            SeccompChoice::File(path) if path.is_relative() => SeccompChoice::File(base.join(path)),
            other => other,
        }
    }
}
