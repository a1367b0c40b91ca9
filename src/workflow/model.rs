//! The docker provider's workflow, typed: what `parse` produces and the run path consumes.

use std::fmt;

/// Where the project's files are seen inside the container.
pub const WORKFLOW_DIR: &str = "/workflow";

/// One `provider: docker` workflow. Strings are final (expressions rendered) once the workflow has been
/// resolved for a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Workflow {
    pub name: String,
    pub image: String,
    /// Shell command lines, in order (a multi-line string is split into its non-blank lines).
    pub commands: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    /// Accepted from the seed's schema; it has no effect for the docker provider.
    pub version: Option<String>,
    /// `environment` (or `env`), in the file's order.
    pub env: Vec<EnvVar>,
    pub artifacts: Vec<Artifact>,
    pub resources: Resources,
    /// How many host ports to forward (`PORT_0`..).
    pub ports: u16,
    /// `network:` (not in the seed; issue 5): the job's own network by default, the host's for MPI/NCCL.
    pub network: NetworkChoice,
    /// Relative to `/workflow`, normalized, never leaving it; `None` is `/workflow` itself.
    pub working_dir: Option<String>,
    pub registry_auth: Option<RegistryAuth>,
    pub cache: Vec<ContainerPath>,
    /// `security_opt:` (Docker's `--security-opt`): the seccomp filter; a relative profile path is the
    /// project's.
    pub seccomp: crate::workflow::SeccompChoice,
    /// `volumes:`: host paths bound into the container, in order.
    pub volumes: Vec<crate::workflow::Volume>,
    /// `home: true`: the invoking user's home bound at the same path (pyxis' `--container-mount-home`).
    pub home: bool,
    /// `user:` (Docker's `--user`, or `host` for the invoking user's ids); the image's USER by default.
    pub user: crate::workflow::UserChoice,
}

impl Workflow {
    /// A workflow with only a name and an image, every other property at its default (for tests, so
    /// that a new property is added in one place).
    #[cfg(test)]
    pub fn minimal(name: &str, image: &str) -> Workflow {
        Workflow {
            name: name.into(),
            image: image.into(),
            commands: vec![],
            entrypoint: None,
            version: None,
            env: vec![],
            artifacts: vec![],
            resources: Resources::default(),
            ports: 0,
            network: NetworkChoice::Private,
            working_dir: None,
            registry_auth: None,
            cache: vec![],
            seccomp: Default::default(),
            volumes: vec![],
            home: false,
            user: Default::default(),
        }
    }

    /// The job's initial directory inside the container.
    pub fn container_working_dir(&self) -> String {
        match &self.working_dir {
            Some(dir) => format!("{WORKFLOW_DIR}/{dir}"),
            None => WORKFLOW_DIR.to_string(),
        }
    }
}

/// Which network the job gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NetworkChoice {
    /// Its own network namespace with outbound access (`private`, the default).
    #[default]
    Private,
    /// The host's network namespace (`host`): for MPI and NCCL jobs that need the host's interfaces.
    Host,
    /// Its own namespace with loopback only (`none`); published ports still reach it.
    None,
}

/// `K=V` (value given) or a bare `K` (the value comes from `dstack`'s own environment, as with
/// `docker run -e K`; unset there means unset in the job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub name: String,
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub path: ContainerPath,
    /// Bind-mounted from the run's artifact directory, so files land there as the job writes them.
    pub mount: bool,
}

/// A path inside the container as a workflow names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerPath {
    /// Relative to the working directory; normalized, never starting with `..`, never empty.
    Relative(String),
    /// Absolute, normalized, never `/`.
    Absolute(String),
    /// Below the container user's home (`~` or `~/x`): the part after `~/`, normalized (may be empty).
    Home(String),
}

impl ContainerPath {
    /// The absolute path inside the container.
    pub fn resolve(&self, working_dir: &str, home: &str) -> String {
        let join = |base: &str, rest: &str| {
            if rest.is_empty() {
                base.to_string()
            } else {
                format!("{}/{rest}", base.trim_end_matches('/'))
            }
        };
        match self {
            ContainerPath::Relative(p) => join(working_dir, p),
            ContainerPath::Absolute(p) => p.clone(),
            ContainerPath::Home(p) => join(home, p),
        }
    }

    /// Where its files go below a run's artifact directory (or a workflow's cache directory): relative
    /// paths as written, absolute ones without the leading `/`, home paths under `~`.
    pub fn key(&self) -> String {
        match self {
            ContainerPath::Relative(p) => p.clone(),
            ContainerPath::Absolute(p) => p.trim_start_matches('/').to_string(),
            ContainerPath::Home(p) if p.is_empty() => "~".to_string(),
            ContainerPath::Home(p) => format!("~/{p}"),
        }
    }
}

impl fmt::Display for ContainerPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContainerPath::Relative(p) | ContainerPath::Absolute(p) => f.write_str(p),
            ContainerPath::Home(p) if p.is_empty() => f.write_str("~"),
            ContainerPath::Home(p) => write!(f, "~/{p}"),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    /// Cores, possibly fractional.
    pub cpu: Option<f64>,
    /// Bytes.
    pub memory: Option<u64>,
    /// Bytes.
    pub shm_size: Option<u64>,
    pub gpu: Option<GpuRequest>,
    /// Accepted; meaningless on one machine.
    pub interruptible: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuRequest {
    pub count: u32,
    /// A model name to match, e.g. `A100` or `K80`.
    pub name: Option<String>,
    /// Bytes of memory each GPU must have at least.
    pub memory: Option<u64>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths_resolve_and_key() {
        let rel = ContainerPath::Relative("output/logs".into());
        let abs = ContainerPath::Absolute("/data/out".into());
        let home = ContainerPath::Home(".cache/pip".into());
        let bare_home = ContainerPath::Home(String::new());
        assert_eq!(
            rel.resolve("/workflow/src", "/root"),
            "/workflow/src/output/logs"
        );
        assert_eq!(abs.resolve("/workflow", "/root"), "/data/out");
        assert_eq!(
            home.resolve("/workflow", "/home/app/"),
            "/home/app/.cache/pip"
        );
        assert_eq!(bare_home.resolve("/workflow", "/root"), "/root");
        assert_eq!(rel.key(), "output/logs");
        assert_eq!(abs.key(), "data/out");
        assert_eq!(home.key(), "~/.cache/pip");
        assert_eq!(bare_home.key(), "~");
        assert_eq!(home.to_string(), "~/.cache/pip");
    }

    #[test]
    fn a_password_never_shows_in_debug_output() {
        let auth = RegistryAuth {
            username: "bot".into(),
            password: "hunter2".into(),
        };
        let shown = format!("{auth:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("bot"));
    }

    #[test]
    fn the_working_directory_is_below_workflow() {
        let mut wf = Workflow::minimal("w", "busybox");
        assert_eq!(wf.container_working_dir(), "/workflow");
        wf.working_dir = Some("src/app".into());
        assert_eq!(wf.container_working_dir(), "/workflow/src/app");
    }
}
