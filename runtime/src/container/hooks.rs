//! OCI lifecycle hooks: a program run with the container's state JSON on its stdin, its own `args` (the first
//! is argv[0]) and exactly its `env`, killed at its `timeout`. Hooks that run in the runtime's namespaces
//! (`prestart`, `createRuntime`, `poststart`, `poststop`) are called by the caller; `createContainer` and
//! `startContainer` by init and the job, inside the container.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Hooks};
use serde::Serialize;

/// The points of the lifecycle where hooks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookPoint {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl HookPoint {
    const ALL: [HookPoint; 6] = [
        HookPoint::Prestart,
        HookPoint::CreateRuntime,
        HookPoint::CreateContainer,
        HookPoint::StartContainer,
        HookPoint::Poststart,
        HookPoint::Poststop,
    ];

    /// The name the runtime spec (and CDI's `hookName`) gives it.
    pub fn name(self) -> &'static str {
        match self {
            HookPoint::Prestart => "prestart",
            HookPoint::CreateRuntime => "createRuntime",
            HookPoint::CreateContainer => "createContainer",
            HookPoint::StartContainer => "startContainer",
            HookPoint::Poststart => "poststart",
            HookPoint::Poststop => "poststop",
        }
    }

    /// The point named `name` (as [`HookPoint::name`] writes it).
    pub fn from_name(name: &str) -> Option<HookPoint> {
        HookPoint::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Appends `hook` to this point's list in `hooks`.
    #[allow(deprecated)] // prestart is deprecated by the spec, still honoured.
    pub fn push(self, hooks: &mut Hooks, hook: Hook) {
        let list = match self {
            HookPoint::Prestart => hooks.prestart_mut(),
            HookPoint::CreateRuntime => hooks.create_runtime_mut(),
            HookPoint::CreateContainer => hooks.create_container_mut(),
            HookPoint::StartContainer => hooks.start_container_mut(),
            HookPoint::Poststart => hooks.poststart_mut(),
            HookPoint::Poststop => hooks.poststop_mut(),
        };
        list.get_or_insert_with(Vec::new).push(hook);
    }

    /// The hooks of this point in `hooks`.
    #[allow(deprecated)]
    pub fn of(self, hooks: &Hooks) -> &[Hook] {
        let list = match self {
            HookPoint::Prestart => hooks.prestart(),
            HookPoint::CreateRuntime => hooks.create_runtime(),
            HookPoint::CreateContainer => hooks.create_container(),
            HookPoint::StartContainer => hooks.start_container(),
            HookPoint::Poststart => hooks.poststart(),
            HookPoint::Poststop => hooks.poststop(),
        };
        list.as_deref().unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{point} hook {path}: cannot run it")]
    Spawn {
        point: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{point} hook {path} failed ({status}){stderr}")]
    Failed {
        point: &'static str,
        path: PathBuf,
        status: String,
        stderr: String,
    },
    #[error("{point} hook {path} did not finish within its timeout of {secs} s")]
    Timeout {
        point: &'static str,
        path: PathBuf,
        secs: i64,
    },
}

/// The runtime spec's state of a container, as hooks read it on stdin and `state` prints it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct State {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    pub bundle: PathBuf,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

impl State {
    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("a state serializes")
    }
}

/// Runs the hooks of `point` in order; the first failure stops them and is returned.
pub fn run(hooks: Option<&Hooks>, point: HookPoint, state: &str) -> Result<(), HookError> {
    let Some(hooks) = hooks else {
        return Ok(());
    };
    point
        .of(hooks)
        .iter()
        .try_for_each(|h| run_one(h, point, state))
}

fn run_one(hook: &Hook, point: HookPoint, state: &str) -> Result<(), HookError> {
    let path = hook.path().clone();
    let args = hook.args().clone().unwrap_or_default();
    let mut cmd = Command::new(&path);
    if let Some((first, rest)) = args.split_first() {
        cmd.arg0(first).args(rest);
    }
    cmd.env_clear();
    for kv in hook.env().as_deref().unwrap_or_default() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| HookError::Spawn {
        point: point.name(),
        path: path.clone(),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin must not block us: a state fits in the pipe buffer.
        let _ = stdin.write_all(state.as_bytes());
    }
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => {
                return Err(HookError::Spawn {
                    point: point.name(),
                    path,
                    source,
                });
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HookError::Timeout {
                point: point.name(),
                path,
                secs: hook.timeout().unwrap_or_default(),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if status.success() {
        return Ok(());
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    let stderr = stderr.trim();
    Err(HookError::Failed {
        point: point.name(),
        path,
        status: match status.signal() {
            Some(sig) => format!("killed by signal {sig}"),
            None => format!("exit status {}", status.code().unwrap_or(-1)),
        },
        stderr: if stderr.is_empty() {
            String::new()
        } else {
            format!(": {stderr}")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{HookBuilder, HooksBuilder};

    fn hook(script: &str, timeout: Option<i64>) -> Hook {
        let mut b = HookBuilder::default()
            .path("/bin/sh")
            .args(vec!["sh".to_string(), "-c".into(), script.into()])
            .env(vec!["MARK=set".to_string()]);
        if let Some(t) = timeout {
            b = b.timeout(t);
        }
        b.build().unwrap()
    }

    #[test]
    fn hooks_read_the_state_and_get_only_their_env() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!("cat > {0}; echo \" $MARK $HOME\" >> {0}", out.display());
        let hooks = HooksBuilder::default()
            .create_runtime(vec![hook(&script, None)])
            .build()
            .unwrap();
        run(Some(&hooks), HookPoint::CreateRuntime, "{\"id\":\"x\"}").unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"id\":\"x\"} set \n"
        );
        run(Some(&hooks), HookPoint::Poststop, "{}").unwrap();
    }

    #[test]
    fn a_failing_or_slow_hook_is_an_error_naming_it() {
        let hooks = HooksBuilder::default()
            .poststart(vec![hook("echo nope >&2; exit 3", None)])
            .poststop(vec![hook("sleep 5", Some(1))])
            .build()
            .unwrap();
        let err = run(Some(&hooks), HookPoint::Poststart, "{}").unwrap_err();
        assert!(err.to_string().contains("(exit status 3): nope"), "{err}");
        let started = Instant::now();
        let err = run(Some(&hooks), HookPoint::Poststop, "{}").unwrap_err();
        assert!(matches!(err, HookError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(4));
    }
}
