//! `ContainerBuilder`: the one complicated object, set up in sentences and checked in `build()`. Its mode is
//! its type: `.rootfs(layers)` makes dstack's supervised run ([`Supervised`]), `.oci(..)` an OCI container
//! ([`Oci`]); each mode has only its own settings, and its prepared container only its own way to start.
//!
//! ```no_run
//! # use runtime::container::*;
//! # fn f(spec: oci_spec::runtime::Spec, layers: Vec<std::path::PathBuf>) -> Result<(), ContainerError> {
//! let status = ContainerBuilder::new("abc123", spec).rootfs(layers).build()?.start()?.wait()?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::{MountBuilder, Spec};

use super::hooks::State;
use super::namespaces::{self, Namespaces};
use super::scratch::ScratchDir;
use super::steps::InContainerStep;
use super::{ContainerError, StdioMode, ids, mounts, validate};
use crate::cgroup::CgroupPlacement;
use crate::net::Network;
use crate::rootfs::Rootfs;

/// Settings shared by both modes; `M` is the mode: [`Unchosen`], [`Supervised`] or [`Oci`].
pub struct ContainerBuilder<M> {
    id: String,
    spec: Spec,
    cgroup: Option<Box<dyn CgroupPlacement>>,
    steps: Vec<&'static dyn InContainerStep>,
    mode: M,
}

/// A builder whose mode is not chosen yet: `.rootfs(..)` or `.oci(..)`.
pub struct Unchosen;

/// dstack's supervised run (`dstack run`): the image's layers under an overlay in a scratch directory,
/// the namespaces dstack gives every job, init dying with this process, output streamed (and logged) here.
pub struct Supervised {
    layers: Vec<PathBuf>,
    state_root: Option<PathBuf>,
    stdio: StdioMode,
    log_file: Option<PathBuf>,
    grace: Duration,
    network: Option<Network>,
}

/// The OCI runtime lifecycle (`dstack-oci create`): the bundle's root directory, the spec's namespaces and
/// id maps, the job waiting at a start gate, the spec's hooks at their points, nothing tied to this process.
pub struct Oci {
    pub(super) root: PathBuf,
    pub(super) readonly: bool,
    pub(super) options: OciOptions,
}

/// What an OCI container needs besides its spec and root directory.
pub struct OciOptions {
    /// The container's state directory, where the start gate is made.
    pub state_dir: PathBuf,
    /// The state hooks read on stdin (pid and status are filled in here).
    pub state: State,
    /// Where to send the pty's master when `process.terminal` is set (runc's `--console-socket`).
    pub console_socket: Option<PathBuf>,
    /// Descriptors 3..3+N passed on to the job (runc's `--preserve-fds`, plus `LISTEN_FDS`); the others
    /// above the standard streams are not.
    pub preserve_fds: u32,
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Supervised {}
    impl Sealed for super::Oci {}
}

/// A mode a container can be built in, and what `build()` makes ready for it.
pub trait Mode: sealed::Sealed {
    type Ready;
}

impl Mode for Supervised {
    type Ready = SupervisedReady;
}

impl Mode for Oci {
    type Ready = Oci;
}

/// A supervised run, built: its scratch directory, root filesystem and `/etc` files exist.
pub struct SupervisedReady {
    pub(super) files: Vec<(String, String)>,
    pub(super) rootfs: Rootfs,
    pub(super) scratch: ScratchDir,
    pub(super) stdio: StdioMode,
    pub(super) log_file: Option<PathBuf>,
    pub(super) grace: Duration,
    pub(super) network: Option<Network>,
}

/// A container checked and ready to start: `PreparedContainer<Supervised>::start`,
/// `PreparedContainer<Oci>::create`.
pub struct PreparedContainer<M: Mode> {
    pub(super) spec: Spec,
    pub(super) cgroup: Option<Box<dyn CgroupPlacement>>,
    pub(super) namespaces: Namespaces,
    pub(super) steps: Vec<&'static dyn InContainerStep>,
    pub(super) mode: M::Ready,
}

impl ContainerBuilder<Unchosen> {
    /// `id` names the scratch directory `<state_root>/containers/<id>/` (supervised runs).
    pub fn new(id: impl Into<String>, spec: Spec) -> ContainerBuilder<Unchosen> {
        ContainerBuilder {
            id: id.into(),
            spec,
            cgroup: None,
            steps: Vec::new(),
            mode: Unchosen,
        }
    }

    /// A supervised run of the image's layer directories, bottom to top.
    pub fn rootfs(self, layer_dirs: Vec<PathBuf>) -> ContainerBuilder<Supervised> {
        self.with_mode(Supervised {
            layers: layer_dirs,
            state_root: None,
            stdio: StdioMode::Auto,
            log_file: None,
            grace: Duration::from_secs(10),
            network: None,
        })
    }

    /// An OCI container on a ready root directory (a bundle's `root.path`: no overlay, no scratch
    /// directory; `readonly` remounts it read-only once everything is mounted).
    pub fn oci(
        self,
        root: impl Into<PathBuf>,
        readonly: bool,
        options: OciOptions,
    ) -> ContainerBuilder<Oci> {
        self.with_mode(Oci {
            root: root.into(),
            readonly,
            options,
        })
    }

    fn with_mode<M>(self, mode: M) -> ContainerBuilder<M> {
        ContainerBuilder {
            id: self.id,
            spec: self.spec,
            cgroup: self.cgroup,
            steps: self.steps,
            mode,
        }
    }
}

impl<M> ContainerBuilder<M> {
    /// The cgroup init is started in (`cgroup::SpecCgroup` makes one from the spec).
    pub fn cgroup(mut self, placement: Box<dyn CgroupPlacement>) -> Self {
        self.cgroup = Some(placement);
        self
    }

    /// A step init runs inside the container (after the masked and read-only paths), such as
    /// `gpu::DRIVER_LINKS`.
    pub fn in_container_step(mut self, step: &'static dyn InContainerStep) -> Self {
        self.steps.push(step);
        self
    }
}

impl ContainerBuilder<Supervised> {
    /// Where `containers/` lives; `paths::state_root()` by default.
    pub fn state_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.mode.state_root = Some(root.into());
        self
    }

    pub fn stdio(mut self, mode: StdioMode) -> Self {
        self.mode.stdio = mode;
        self
    }

    /// Also write the job's output, line by line, to this file (appended).
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.mode.log_file = Some(path.into());
        self
    }

    /// The job's network (`runtime::net`); without one the job gets a private loopback-only namespace.
    pub fn network(mut self, network: Network) -> Self {
        self.mode.network = Some(network);
        self
    }

    /// How long a stop signal may take before SIGKILL (10 s by default).
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.mode.grace = grace;
        self
    }

    /// Checks the settings, creates the scratch directory and the files bound into the container.
    pub fn build(self) -> Result<PreparedContainer<Supervised>, ContainerError> {
        let ContainerBuilder {
            id,
            mut spec,
            cgroup,
            steps,
            mode,
        } = self;
        check_command(&spec)?;
        let mut namespaces = Namespaces::default();
        if namespaces::asks_new_user(&spec) {
            namespaces.new |= libc::CLONE_NEWUSER as u64;
        }
        validate::spec(&spec, validate::OwnNamespaces::ALL).map_err(ContainerError::Invalid)?;
        ids::check(&spec, id_space(&spec, &namespaces))?;
        let state_root = mode.state_root.unwrap_or_else(crate::paths::state_root);
        let scratch = ScratchDir::create(&state_root, &id)?;
        let rootfs = Rootfs::new(mode.layers, scratch.path())?;
        rootfs.prepare()?;
        let staging = scratch.path().join(mounts::STAGING);
        crate::fsops::make_dir(&staging, crate::rootfs::SCRATCH_DIR_MODE)
            .map_err(ContainerError::io("cannot create", &staging))?;
        let files = etc_files(&mut spec, &staging, mode.network.as_ref())?;
        super::spec::write_debug_copy(&spec);
        Ok(PreparedContainer {
            spec,
            cgroup,
            namespaces,
            steps,
            mode: SupervisedReady {
                files,
                rootfs,
                scratch,
                stdio: mode.stdio,
                log_file: mode.log_file,
                grace: mode.grace,
                network: mode.network,
            },
        })
    }
}

impl ContainerBuilder<Oci> {
    /// Checks the spec against the namespaces it asks for and the root directory.
    pub fn build(self) -> Result<PreparedContainer<Oci>, ContainerError> {
        let ContainerBuilder {
            spec,
            cgroup,
            steps,
            mode,
            ..
        } = self;
        check_command(&spec)?;
        let namespaces = namespaces::from_spec(&spec)?;
        let own = validate::OwnNamespaces::of(&spec).map_err(ContainerError::Invalid)?;
        validate::spec(&spec, own).map_err(ContainerError::Invalid)?;
        check_oci(&spec, &namespaces)?;
        ids::check(&spec, id_space(&spec, &namespaces))?;
        if !mode.root.is_dir() {
            return Err(ContainerError::Invalid(format!(
                "the root filesystem {} is not a directory",
                mode.root.display()
            )));
        }
        Ok(PreparedContainer {
            spec,
            cgroup,
            namespaces,
            steps,
            mode,
        })
    }
}

impl PreparedContainer<Supervised> {
    pub fn scratch_dir(&self) -> &Path {
        self.mode.scratch.path()
    }
}

fn check_command(spec: &Spec) -> Result<(), ContainerError> {
    let has_args = spec
        .process()
        .as_ref()
        .and_then(|p| p.args().as_ref())
        .is_some_and(|a| !a.is_empty());
    if has_args {
        Ok(())
    } else {
        Err(ContainerError::Invalid(
            "the spec has no command to run".into(),
        ))
    }
}

/// Where the job's ids must be mapped: a new user namespace's maps, a joined one's, or this process's.
fn id_space(spec: &Spec, ns: &Namespaces) -> ids::IdSpace {
    let user = libc::CLONE_NEWUSER as u64;
    if ns.new & user != 0 {
        let (uids, gids) = super::launch::maps_for(spec);
        ids::IdSpace::New(uids, gids)
    } else if ns.join.iter().any(|(flag, _)| *flag == user) {
        ids::IdSpace::Joined
    } else {
        ids::IdSpace::Current
    }
}

/// What an OCI spec asks that cannot be honoured with the namespaces it has.
fn check_oci(spec: &Spec, ns: &Namespaces) -> Result<(), ContainerError> {
    let has = |flag: libc::c_int| ns.new & flag as u64 != 0;
    // A uts namespace joined by path is the container's too (runc's rule): it may be named.
    if spec.hostname().is_some() && !ns.has(libc::CLONE_NEWUTS) {
        return Err(ContainerError::Invalid(
            "hostname needs a uts namespace of the container's own".into(),
        ));
    }
    if spec.domainname().is_some() && !ns.has(libc::CLONE_NEWUTS) {
        return Err(ContainerError::Invalid(
            "domainname needs a uts namespace of the container's own".into(),
        ));
    }
    let maps = spec
        .linux()
        .as_ref()
        .is_some_and(|l| l.uid_mappings().is_some() || l.gid_mappings().is_some());
    if maps && !has(libc::CLONE_NEWUSER) {
        return Err(ContainerError::Invalid(
            "uidMappings and gidMappings need a user namespace (linux.namespaces: user)".into(),
        ));
    }
    if !crate::paths::running_as_host_root() && !has(libc::CLONE_NEWUSER) {
        return Err(ContainerError::Invalid(
            "an unprivileged user needs a user namespace: add {\"type\": \"user\"} to linux.namespaces (with uidMappings and gidMappings, or none for your own id and subordinate range)".into(),
        ));
    }
    Ok(())
}

/// `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` (name, contents), bound into the container unless
/// the spec already mounts something there. Init writes them into its staging tmpfs, not to disk.
fn etc_files(
    spec: &mut Spec,
    staging: &Path,
    network: Option<&Network>,
) -> Result<Vec<(String, String)>, ContainerError> {
    let hostname = spec.hostname().clone().unwrap_or_else(|| "dstack".into());
    let (hosts, resolv) = match network {
        Some(net) => (net.hosts(&hostname), net.resolv_conf()),
        None => (
            format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
            ),
            // A loopback-only network cannot reach the host's local resolver; keep the others.
            std::fs::read_to_string("/etc/resolv.conf")
                .unwrap_or_default()
                .lines()
                .filter(|l| !(l.starts_with("nameserver 127.") || l.starts_with("nameserver ::1")))
                .map(|l| format!("{l}\n"))
                .collect(),
        ),
    };
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    let mut files = Vec::new();
    for (name, text) in [
        ("hosts", hosts),
        ("hostname", format!("{hostname}\n")),
        ("resolv.conf", resolv),
    ] {
        let dest = PathBuf::from("/etc").join(name);
        let path = staging.join(mounts::STAGED_FILES).join(name);
        // A mount the plan made from our staged file gets its contents; any other is the user's own.
        let planned = mounts
            .iter()
            .any(|m| m.destination() == &dest && m.source().as_deref() == Some(path.as_path()));
        if mounts.iter().any(|m| m.destination() == &dest) && !planned {
            continue;
        }
        files.push((name.to_string(), text));
        if planned {
            continue;
        }
        let m = MountBuilder::default()
            .destination(dest)
            .typ("bind")
            .source(path)
            .options(vec!["rbind".to_string(), "rprivate".to_string()])
            .build()
            .map_err(|e| ContainerError::Invalid(crate::report::chain(&e)))?;
        mounts.push(m);
    }
    spec.set_mounts(Some(mounts));
    Ok(files)
}

pub(super) fn setgroups_allowed() -> bool {
    std::fs::read_to_string("/proc/self/setgroups").map_or(true, |s| s.trim() != "deny")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oci_options(dir: &Path) -> OciOptions {
        OciOptions {
            state_dir: dir.to_path_buf(),
            state: State {
                oci_version: "1.0.2".into(),
                id: "t".into(),
                status: "creating".into(),
                pid: None,
                bundle: dir.to_path_buf(),
                annotations: Default::default(),
            },
            console_socket: None,
            preserve_fds: 0,
        }
    }

    #[test]
    fn a_spec_without_a_command_is_refused_in_either_mode() {
        let dir = tempfile::tempdir().unwrap();
        let spec = super::super::spec::default_spec(vec![], 1 << 20);
        let run = ContainerBuilder::new("t", spec.clone())
            .rootfs(vec![])
            .state_root(dir.path())
            .build();
        let oci = ContainerBuilder::new("t", spec)
            .oci(dir.path(), false, oci_options(dir.path()))
            .build();
        for e in [run.err(), oci.err()] {
            let e = e.expect("refused").to_string();
            assert!(e.contains("the spec has no command to run"), "{e}");
        }
        assert!(!dir.path().join("containers/t").exists());
    }

    #[test]
    fn an_oci_root_must_be_a_directory() {
        if !crate::paths::running_as_host_root() {
            return; // an unprivileged spec needs a user namespace first
        }
        let dir = tempfile::tempdir().unwrap();
        let spec = super::super::spec::default_spec(vec!["true".into()], 1 << 20);
        let e = ContainerBuilder::new("t", spec)
            .oci(dir.path().join("missing"), false, oci_options(dir.path()))
            .build()
            .err()
            .map(|e| e.to_string())
            .expect("refused");
        assert!(e.contains("is not a directory"), "{e}");
    }
}
