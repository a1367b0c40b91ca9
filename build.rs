//! Links the binaries as position-dependent executables (`-no-pie`). A PIE's thousands of relative
//! relocations are applied at every start, which dirties the pages of `.data.rel.ro` in the supervisor,
//! then in the init and job it clones: 0.4-0.8 ms of a `dstack run --network none` (A/B, 5 x 40 runs) and
//! 0.5 ms of `dstack --version`. The code stays position-independent; only the executable's own address
//! is fixed (shared libraries, heap, stacks and mappings keep their randomization), as in Debian's builds
//! of runc, podman, skopeo and umoci.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
