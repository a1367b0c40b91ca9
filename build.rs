//! Links the binaries as position-dependent executables (`-no-pie`). A PIE's thousands of relative
//! relocations are applied at every start, which dirties the pages of `.data.rel.ro` in the supervisor,
//! then in the init and job it clones: 0.4-0.8 ms of a `dstack run --network none` (A/B, 5 x 40 runs) and
//! 0.5 ms of `dstack --version`. The code stays position-independent; only the executable's own address
//! is fixed (shared libraries, heap, stacks and mappings keep their randomization), as in Debian's builds
//! of runc, podman, skopeo and umoci.
//!
//! Also names the build for `--version` and `dstack info`: `DSTACK_COMMIT` (the git commit, "unknown" outside
//! a git checkout, as in a source tarball) and `DSTACK_BUILD` (`DSTACK_BUILD_KIND` as `scripts/release` sets
//! it, `portable`; else `native`).
use std::process::Command;

fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");

    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=DSTACK_COMMIT={commit}");
    // Rebuild the version text when HEAD moves (the branch's ref, or HEAD itself when detached).
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &head_ref]));
        watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    }
    for path in watched.into_iter().flatten() {
        // A path that does not exist would make cargo rerun this script on every build.
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");

    println!("cargo:rerun-if-env-changed=DSTACK_BUILD_KIND");
    let kind = std::env::var("DSTACK_BUILD_KIND")
        .ok()
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| "native".into());
    println!("cargo:rustc-env=DSTACK_BUILD={kind}");
}

/// One line of git's output, or `None` without git or outside a repository.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}
