//! `ContainerBuilder`: the one complicated object, set up in sentences and checked in `build()`.
//!
//! ```no_run
//! # use runtime::container::*;
//! # fn f(spec: oci_spec::runtime::Spec, layers: Vec<std::path::PathBuf>) -> Result<(), ContainerError> {
//! let status = ContainerBuilder::new("abc123").spec(spec).rootfs(layers).build()?.start()?.wait()?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::{MountBuilder, Spec};

use super::cgroup::CgroupPlacement;
use super::hooks::State;
use super::namespaces::{self, Namespaces};
use super::scratch::ScratchDir;
use super::{ContainerError, StdioMode, ids, mounts, validate};
use crate::net::Network;
use crate::rootfs::Rootfs;

pub struct ContainerBuilder {
    id: String,
    spec: Option<Spec>,
    layers: Option<Vec<PathBuf>>,
    directory: Option<(PathBuf, bool)>,
    oci: Option<OciOptions>,
    state_root: Option<PathBuf>,
    cgroup: Option<Box<dyn CgroupPlacement>>,
    stdio: StdioMode,
    log_file: Option<PathBuf>,
    grace: Duration,
    network: Option<Network>,
}

/// The OCI runtime lifecycle (`dstack-oci create`): the container outlives the process that creates it
/// (no PDEATHSIG, no supervisor), its namespaces and id maps come from the spec, the job waits at a start
/// gate in `state_dir`, and the spec's hooks run at their points.
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

/// A container whose scratch directory and files exist, ready to start.
pub struct PreparedContainer {
    pub(super) spec: Spec,
    pub(super) root: PreparedRoot,
    pub(super) cgroup: Option<Box<dyn CgroupPlacement>>,
    pub(super) stdio: StdioMode,
    pub(super) log_file: Option<PathBuf>,
    pub(super) grace: Duration,
    pub(super) network: Option<Network>,
    pub(super) oci: Option<OciOptions>,
    pub(super) namespaces: Namespaces,
}

/// The root filesystem, prepared.
pub(super) enum PreparedRoot {
    Layers {
        files: Vec<(String, String)>,
        rootfs: Rootfs,
        scratch: ScratchDir,
    },
    Directory {
        path: PathBuf,
        readonly: bool,
    },
}

impl ContainerBuilder {
    /// `id` names the scratch directory `<state_root>/containers/<id>/`.
    pub fn new(id: impl Into<String>) -> ContainerBuilder {
        ContainerBuilder {
            id: id.into(),
            spec: None,
            layers: None,
            directory: None,
            oci: None,
            state_root: None,
            cgroup: None,
            stdio: StdioMode::Auto,
            log_file: None,
            grace: Duration::from_secs(10),
            network: None,
        }
    }

    pub fn spec(mut self, spec: Spec) -> Self {
        self.spec = Some(spec);
        self
    }

    /// The image's layer directories, bottom to top.
    pub fn rootfs(mut self, layer_dirs: Vec<PathBuf>) -> Self {
        self.layers = Some(layer_dirs);
        self
    }

    /// A ready root directory (an OCI bundle's `root.path`) instead of image layers: no overlay, no
    /// scratch directory; `readonly` remounts it read-only once everything is mounted.
    pub fn root_directory(mut self, path: impl Into<PathBuf>, readonly: bool) -> Self {
        self.directory = Some((path.into(), readonly));
        self
    }

    /// Runs the OCI lifecycle instead of supervising: see [`OciOptions`]; start with
    /// [`PreparedContainer::create`].
    pub fn oci(mut self, options: OciOptions) -> Self {
        self.oci = Some(options);
        self
    }

    /// Where `containers/` lives; `paths::state_root()` by default.
    pub fn state_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.state_root = Some(root.into());
        self
    }

    pub fn cgroup(mut self, placement: Box<dyn CgroupPlacement>) -> Self {
        self.cgroup = Some(placement);
        self
    }

    pub fn stdio(mut self, mode: StdioMode) -> Self {
        self.stdio = mode;
        self
    }

    /// Also write the job's output, line by line, to this file (appended).
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_file = Some(path.into());
        self
    }

    /// The job's network (`runtime::net`); without one the job gets a private loopback-only namespace.
    pub fn network(mut self, network: Network) -> Self {
        self.network = Some(network);
        self
    }

    /// How long a stop signal may take before SIGKILL (10 s by default).
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Checks the settings, creates the scratch directory and the files bound into the container.
    pub fn build(self) -> Result<PreparedContainer, ContainerError> {
        let mut spec = self
            .spec
            .ok_or_else(|| ContainerError::Invalid("no spec: call .spec(..)".into()))?;
        let has_args = spec
            .process()
            .as_ref()
            .and_then(|p| p.args().as_ref())
            .is_some_and(|a| !a.is_empty());
        if !has_args {
            return Err(ContainerError::Invalid(
                "the spec has no command to run".into(),
            ));
        }
        let namespaces = match &self.oci {
            Some(_) => namespaces::from_spec(&spec)?,
            None => Namespaces::default(),
        };
        let own = match &self.oci {
            Some(_) => validate::OwnNamespaces::of(&spec).map_err(ContainerError::Invalid)?,
            None => validate::OwnNamespaces::ALL,
        };
        validate::spec(&spec, own).map_err(ContainerError::Invalid)?;
        if self.oci.is_some() {
            check_oci(&spec, &namespaces)?;
        }
        ids::check(&spec, id_space(&spec, &namespaces))?;
        let root = match (self.layers, self.directory) {
            (Some(layers), None) if self.oci.is_none() => {
                let state_root = self.state_root.unwrap_or_else(crate::paths::state_root);
                let scratch = ScratchDir::create(&state_root, &self.id)?;
                let rootfs = Rootfs::new(layers, scratch.path())?;
                rootfs.prepare()?;
                let staging = scratch.path().join(mounts::STAGING);
                crate::fsops::make_dir(&staging, crate::rootfs::SCRATCH_DIR_MODE)
                    .map_err(ContainerError::io("cannot create", &staging))?;
                let files = etc_files(&mut spec, &staging, self.network.as_ref())?;
                PreparedRoot::Layers {
                    files,
                    rootfs,
                    scratch,
                }
            }
            (None, Some((path, readonly))) if self.oci.is_some() => {
                if !path.is_dir() {
                    return Err(ContainerError::Invalid(format!(
                        "the root filesystem {} is not a directory",
                        path.display()
                    )));
                }
                PreparedRoot::Directory { path, readonly }
            }
            _ => {
                return Err(ContainerError::Invalid(
                    "give image layers (.rootfs) for a supervised run, or a root directory (.root_directory) with .oci(..)".into(),
                ));
            }
        };
        super::spec::write_debug_copy(&spec);
        Ok(PreparedContainer {
            spec,
            root,
            cgroup: self.cgroup,
            stdio: self.stdio,
            log_file: self.log_file,
            grace: self.grace,
            network: self.network,
            oci: self.oci,
            namespaces,
        })
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
            .map_err(|e| ContainerError::Invalid(e.to_string()))?;
        mounts.push(m);
    }
    spec.set_mounts(Some(mounts));
    Ok(files)
}

pub(super) fn setgroups_allowed() -> bool {
    std::fs::read_to_string("/proc/self/setgroups").map_or(true, |s| s.trim() != "deny")
}
