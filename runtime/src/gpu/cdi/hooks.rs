//! CDI hooks. The NVIDIA toolkit's (`nvidia-ctk hook ...`, `nvidia-cdi-hook ...`) are done here instead of
//! being run: `create-symlinks` and `update-ldcache` become the in-container set-up step, which needs no host
//! binary and no bundle directory; `chmod` and the other housekeeping hooks are not needed. Other hooks are kept
//! as OCI hooks in the spec.

use std::path::{Path, PathBuf};

use oci_spec::runtime::HookBuilder;

use super::super::GpuError;
use super::super::edits::Edits;
use super::spec::HookSpec;
use crate::container::HookPoint;

/// Adds what `hook` asks for to `edits`.
pub(crate) fn translate(
    spec_path: &Path,
    hook: &HookSpec,
    edits: &mut Edits,
) -> Result<(), GpuError> {
    let program = Path::new(&hook.path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let args: Vec<&str> = hook.args.iter().skip(1).map(String::as_str).collect();
    let sub = match (program, args.as_slice()) {
        ("nvidia-ctk", ["hook", sub, ..]) => Some((*sub, &args[2..])),
        ("nvidia-cdi-hook", [sub, ..]) => Some((*sub, &args[1..])),
        _ => None,
    };
    if let Some((sub, rest)) = sub {
        match sub {
            "create-symlinks" => {
                for value in flag_values(rest, "--link") {
                    let Some((target, link)) = value.split_once("::") else {
                        continue;
                    };
                    edits
                        .setup
                        .links
                        .push((PathBuf::from(link), PathBuf::from(target)));
                }
            }
            "update-ldcache" => {
                for folder in flag_values(rest, "--folder") {
                    edits.setup.ld_dirs.push(PathBuf::from(folder));
                }
            }
            other => {
                tracing::debug!("CDI hook `{program} {other}` is not needed by dstack; skipped")
            }
        }
        return Ok(());
    }
    let kind = HookPoint::from_name(&hook.hook_name).ok_or_else(|| GpuError::CdiInvalid {
        spec: spec_path.to_path_buf(),
        reason: format!("unknown hookName {:?}", hook.hook_name),
    })?;
    let mut oci = HookBuilder::default()
        .path(PathBuf::from(&hook.path))
        .args(hook.args.clone())
        .env(hook.env.clone());
    if let Some(t) = hook.timeout {
        oci = oci.timeout(t);
    }
    edits.hooks.push((
        kind,
        oci.build().map_err(|e| GpuError::Spec(e.to_string()))?,
    ));
    Ok(())
}

/// The values of `--flag VALUE` and `--flag=VALUE` in `args`.
fn flag_values<'a>(args: &[&'a str], flag: &str) -> Vec<&'a str> {
    let mut values = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if *a == flag {
            if let Some(v) = it.next() {
                values.push(*v);
            }
        } else if let Some(v) = a.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
            values.push(v);
        }
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(path: &str, args: &[&str]) -> HookSpec {
        HookSpec {
            hook_name: "createContainer".into(),
            path: path.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            timeout: None,
        }
    }

    #[test]
    fn nvidia_ctk_hooks_become_the_setup_step() {
        let mut edits = Edits::default();
        let spec = Path::new("/etc/cdi/nvidia.yaml");
        let links = hook(
            "/usr/bin/nvidia-ctk",
            &[
                "nvidia-ctk",
                "hook",
                "create-symlinks",
                "--link",
                "libcuda.so.1::/usr/lib/x86_64-linux-gnu/libcuda.so",
            ],
        );
        let ldcache = hook(
            "/usr/bin/nvidia-cdi-hook",
            &[
                "nvidia-cdi-hook",
                "update-ldcache",
                "--folder=/usr/lib/x86_64-linux-gnu",
                "--folder",
                "/usr/lib64",
            ],
        );
        let chmod = hook(
            "/usr/bin/nvidia-ctk",
            &[
                "nvidia-ctk",
                "hook",
                "chmod",
                "--mode",
                "755",
                "--path",
                "/dev/dri",
            ],
        );
        for h in [links, ldcache, chmod] {
            translate(spec, &h, &mut edits).unwrap();
        }
        assert_eq!(
            edits.setup.links,
            [(
                PathBuf::from("/usr/lib/x86_64-linux-gnu/libcuda.so"),
                PathBuf::from("libcuda.so.1")
            )]
        );
        assert_eq!(
            edits.setup.ld_dirs,
            [
                PathBuf::from("/usr/lib/x86_64-linux-gnu"),
                PathBuf::from("/usr/lib64")
            ]
        );
        assert!(edits.hooks.is_empty());
        translate(spec, &hook("/opt/vendor/hook", &["hook", "x"]), &mut edits).unwrap();
        assert_eq!(edits.hooks.len(), 1);
        let mut bad = hook("/opt/vendor/hook", &[]);
        bad.hook_name = "sometime".into();
        assert!(
            translate(spec, &bad, &mut edits)
                .unwrap_err()
                .to_string()
                .contains("unknown hookName")
        );
    }
}
