//! The plan's rules, as the user meets them.

use super::process::resolve_user;
use super::resources::limit_pids;
use super::*;
use std::path::Path;

use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder};

const GIB: u64 = 1 << 30;
fn host() -> Host {
    Host {
        memory: 16 * GIB,
        state_root: PathBuf::from("/state"),
        terminal: None,
        home: Some(PathBuf::from("/home/me")),
        invoker: Invoker::default(),
    }
}
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:App:/home/app:/bin/sh\n";
const GROUP: &str = "root:x:0:\nstaff:x:50:app\napp:x:1000:\nvideo:x:44:app,other\n";

fn image(entrypoint: &[&str], cmd: &[&str], user: &str) -> ImageConfiguration {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let config = ConfigBuilder::default()
        .entrypoint(s(entrypoint))
        .cmd(s(cmd))
        .user(user.to_string())
        .env(s(&["PATH=/image/bin", "A=image", "B=image"]))
        .working_dir("/srv".to_string())
        .build()
        .unwrap();
    ImageConfigurationBuilder::default()
        .config(config)
        .build()
        .unwrap()
}

fn req(commands: &[&str], entrypoint: Option<&[&str]>) -> JobRequest {
    JobRequest {
        image: "busybox".into(),
        commands: commands.iter().map(|c| c.to_string()).collect(),
        entrypoint: entrypoint.map(|e| e.iter().map(|x| x.to_string()).collect()),
        ..Default::default()
    }
}

fn args(spec: &Spec) -> Vec<String> {
    spec.process().as_ref().unwrap().args().clone().unwrap()
}

fn plan(req: &JobRequest, image: &ImageConfiguration) -> Result<Spec, PlanError> {
    let users = UserFiles {
        passwd: PASSWD.into(),
        group: GROUP.into(),
    };
    super::plan(req, image, &users, &host())
}

#[test]
fn commands_run_through_the_shell_joined_with_and() {
    let spec = plan(
        &req(&["echo a", "sleep 1 &", "", "echo b"], None),
        &image(&["/ep"], &["cmd"], ""),
    )
    .unwrap();
    assert_eq!(
        args(&spec),
        ["/bin/sh", "-c", "echo a && { sleep 1 & } && echo b"]
    );
}

#[test]
fn entrypoint_and_commands_pass_the_line_as_last_argument() {
    let spec = plan(
        &req(&["echo a"], Some(&["/bin/bash", "-lc"])),
        &image(&["/ep"], &["cmd"], ""),
    )
    .unwrap();
    assert_eq!(args(&spec), ["/bin/bash", "-lc", "echo a"]);
}

#[test]
fn entrypoint_alone_drops_the_image_cmd() {
    let spec = plan(
        &req(&[], Some(&["/bin/true"])),
        &image(&["/ep"], &["cmd"], ""),
    )
    .unwrap();
    assert_eq!(args(&spec), ["/bin/true"]);
}

#[test]
fn an_empty_entrypoint_clears_the_images_and_keeps_its_cmd() {
    let spec = plan(&req(&[], Some(&[])), &image(&["/ep"], &["cmd", "x"], "")).unwrap();
    assert_eq!(args(&spec), ["cmd", "x"]);
}

#[test]
fn neither_runs_the_image_entrypoint_and_cmd() {
    let spec = plan(&req(&[], None), &image(&["/ep", "x"], &["cmd"], "")).unwrap();
    assert_eq!(args(&spec), ["/ep", "x", "cmd"]);
    let err = plan(&req(&[], None), &image(&[], &[], "")).unwrap_err();
    assert_eq!(err, PlanError::NoCommand("busybox".into()));
    assert!(err.to_string().contains("-c"));
}

#[test]
fn request_env_overrides_the_image_env() {
    let mut r = req(&["true"], None);
    r.env = vec![("B".into(), "req".into()), ("C".into(), "req".into())];
    let spec = plan(&r, &image(&[], &[], "")).unwrap();
    let env = spec.process().as_ref().unwrap().env().clone().unwrap();
    assert!(env.contains(&"PATH=/image/bin".to_string()));
    assert!(env.contains(&"A=image".to_string()));
    assert!(env.contains(&"B=req".to_string()));
    assert!(!env.contains(&"B=image".to_string()));
    assert!(env.contains(&"HOME=/root".to_string()));
    assert_eq!(spec.process().as_ref().unwrap().cwd(), Path::new("/srv"));
}

#[test]
fn the_unchanged_id_is_no_user() {
    let passwd = "root:x:0:0::/root:/bin/sh\nevil:x:4294967295:0::/:/bin/sh\n";
    let group = "root:x:0:\nevil:x:4294967295:root\n";
    for user in ["4294967295", "0:4294967295", "evil", "4294967295:0"] {
        let err = resolve_user(user, passwd, "").unwrap_err();
        assert!(matches!(err, PlanError::ReservedId { .. }), "{user}: {err}");
    }
    // A supplementary group from the image's /etc/group counts too.
    assert!(matches!(
        resolve_user("root", passwd, group),
        Err(PlanError::ReservedId { .. })
    ));
}

#[test]
fn users_resolve_by_name_with_supplementary_groups() {
    let u = resolve_user("app", PASSWD, GROUP).unwrap();
    assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1000, "/home/app"));
    assert_eq!(u.additional_gids, vec![1000, 50, 44]);
    assert_eq!(resolve_user("app:staff", PASSWD, GROUP).unwrap().gid, 50);
    assert_eq!(resolve_user("1000:44", PASSWD, GROUP).unwrap().gid, 44);
    let numeric = resolve_user("4242", PASSWD, GROUP).unwrap();
    assert_eq!(
        (numeric.uid, numeric.gid, numeric.home.as_str()),
        (4242, 0, "/")
    );
    assert_eq!(resolve_user("", PASSWD, GROUP).unwrap().uid, 0);
    assert!(matches!(
        resolve_user("nobody", PASSWD, GROUP),
        Err(PlanError::UnknownUser { .. })
    ));
    assert!(matches!(
        resolve_user("app:wheel", PASSWD, GROUP),
        Err(PlanError::UnknownGroup { .. })
    ));
}

#[test]
fn security_opt_values_follow_docker() {
    let parse = SeccompChoice::parse_security_opt;
    assert_eq!(
        parse("seccomp=unconfined"),
        Ok(Some(SeccompChoice::Unconfined))
    );
    assert_eq!(
        parse("seccomp:unconfined"),
        Ok(Some(SeccompChoice::Unconfined))
    );
    assert_eq!(
        parse("seccomp=p.json"),
        Ok(Some(SeccompChoice::File("p.json".into())))
    );
    assert_eq!(parse("no-new-privileges"), Ok(None));
    assert!(parse("seccomp=").is_err());
    let long = format!("label={}", "x".repeat(5000));
    let err = parse(&long).unwrap_err();
    assert!(err.len() < 400 && err.contains("seccomp=FILE"), "{err}");
    assert_eq!(
        SeccompChoice::File("p.json".into()).relative_to(Path::new("/project")),
        SeccompChoice::File("/project/p.json".into())
    );
    assert_eq!(
        SeccompChoice::File("/etc/p.json".into()).relative_to(Path::new("/project")),
        SeccompChoice::File("/etc/p.json".into())
    );
}

#[test]
fn jobs_get_dockers_seccomp_profile_unless_asked_otherwise() {
    let names = |spec: &Spec| -> Vec<String> {
        let seccomp = spec.linux().as_ref().unwrap().seccomp().clone().unwrap();
        seccomp
            .syscalls()
            .clone()
            .unwrap()
            .iter()
            .filter(|s| s.action() == oci_spec::runtime::LinuxSeccompAction::ScmpActAllow)
            .flat_map(|s| s.names().clone())
            .collect()
    };
    let spec = plan(&req(&["true"], None), &image(&[], &[], "")).unwrap();
    let allowed = names(&spec);
    assert!(allowed.contains(&"read".to_string()));
    assert!(
        allowed.contains(&"chroot".to_string()),
        "CAP_SYS_CHROOT is a default"
    );
    for denied in [
        "add_key",
        "keyctl",
        "unshare",
        "mount",
        "bpf",
        "ptrace_nothing",
    ] {
        assert!(!allowed.contains(&denied.to_string()), "{denied}");
    }
    let mut r = req(&["true"], None);
    r.seccomp = SeccompChoice::Unconfined;
    let spec = plan(&r, &image(&[], &[], "")).unwrap();
    assert!(spec.linux().as_ref().unwrap().seccomp().is_none());
    r.seccomp = SeccompChoice::File("/nonexistent/profile.json".into());
    let err = plan(&r, &image(&[], &[], "")).unwrap_err().to_string();
    assert!(
        err.contains("/nonexistent/profile.json") && err.contains("seccomp=unconfined"),
        "{err}"
    );
}

#[test]
fn shm_defaults_to_half_the_memory_limit_else_half_of_ram() {
    let mut r = req(&["true"], None);
    assert_eq!(shm_size(&r, &host()), 8 * GIB);
    r.memory = Some(GIB);
    assert_eq!(shm_size(&r, &host()), GIB / 2);
    r.shm_size = Some(3 * GIB);
    assert_eq!(shm_size(&r, &host()), 3 * GIB);
}

#[test]
fn limits_round_trip_through_the_spec() {
    let mut r = req(&["true"], None);
    r.memory = Some(64 << 20);
    r.cpu = Some(0.5);
    let mut spec = plan(&r, &image(&[], &[], "app")).unwrap();
    let limits = |spec: &Spec| {
        let resources = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
        runtime::cgroup::Limits::from_oci(resources).unwrap()
    };
    let l = limits(&spec);
    assert_eq!((l.memory, l.cpu, l.pids), (Some(64 << 20), Some(0.5), None));
    // No swap beyond the memory limit.
    assert_eq!(l.memory_swap, Some(64 << 20));
    limit_pids(&mut spec, 100);
    assert_eq!(limits(&spec).pids, Some(100));
    // "No limit" stays in the spec (so no default replaces it) and limits nothing.
    limit_pids(&mut spec, 0);
    let pids = spec
        .linux()
        .as_ref()
        .unwrap()
        .resources()
        .as_ref()
        .unwrap()
        .pids();
    assert_eq!(pids.map(|p| p.limit()), Some(-1));
    assert_eq!(limits(&spec).pids, None);
    let user = spec.process().as_ref().unwrap().user().clone();
    assert_eq!((user.uid(), user.gid()), (1000, 1000));
}

#[test]
fn the_plan_holds_every_edit_the_container_gets() {
    let mut r = req(&["true"], None);
    r.container_id = "c0ffee".into();
    r.pids_limit = Some(100);
    let users = UserFiles {
        passwd: PASSWD.into(),
        group: GROUP.into(),
    };
    let mut on_a_terminal = host();
    on_a_terminal.terminal = Some("screen".into());
    let spec = super::plan(&r, &image(&[], &[], "app"), &users, &on_a_terminal).unwrap();
    let process = spec.process().as_ref().unwrap();
    // Not root: Docker keeps only the bounding set.
    let caps = process.capabilities().as_ref().unwrap();
    assert!(caps.effective().as_ref().unwrap().is_empty());
    assert!(!caps.bounding().as_ref().unwrap().is_empty());
    assert!(
        process
            .env()
            .as_ref()
            .unwrap()
            .contains(&"TERM=screen".to_string())
    );
    let hosts = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new("/etc/hosts"))
        .unwrap();
    assert_eq!(
        hosts.source().as_deref(),
        Some(Path::new("/state/containers/c0ffee/merged/files/hosts"))
    );
    let pids = spec
        .linux()
        .as_ref()
        .unwrap()
        .resources()
        .as_ref()
        .unwrap()
        .pids();
    assert_eq!(pids.map(|p| p.limit()), Some(100));

    // Root keeps Docker's default capabilities; no terminal, no TERM; a mount of the user's at /etc/hosts
    // stays the user's.
    r.mounts.push(BindMount {
        source: "/srv/hosts".into(),
        destination: "etc/hosts".into(),
        readonly: true,
    });
    let spec = super::plan(&r, &image(&[], &[], ""), &users, &host()).unwrap();
    let process = spec.process().as_ref().unwrap();
    let caps = process.capabilities().as_ref().unwrap();
    assert!(!caps.effective().as_ref().unwrap().is_empty());
    assert!(
        !process
            .env()
            .as_ref()
            .unwrap()
            .iter()
            .any(|e| e.starts_with("TERM="))
    );
    let at_hosts: Vec<_> = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|m| m.destination() == Path::new("/etc/hosts"))
        .map(|m| m.source().clone())
        .collect();
    assert_eq!(at_hosts, [Some(PathBuf::from("/srv/hosts"))]);
}

fn volume(host: &str, path: &str, read_only: bool) -> Volume {
    Volume {
        host: host.into(),
        path: path.into(),
        read_only,
    }
}

fn with_volumes(volumes: Vec<Volume>, base: &Path) -> JobRequest {
    JobRequest {
        volumes,
        volume_base: base.to_path_buf(),
        ..req(&["true"], None)
    }
}

#[test]
fn volumes_are_recursive_nosuid_nodev_binds_resolved_against_the_project() {
    let project = tempfile::tempdir().unwrap();
    std::fs::create_dir(project.path().join("out")).unwrap();
    let r = with_volumes(
        vec![
            volume("out", "/results/../out", false),
            volume(project.path().to_str().unwrap(), "/data", true),
        ],
        project.path(),
    );
    let spec = plan(&r, &image(&[], &[], "")).unwrap();
    let mounts = spec.mounts().as_ref().unwrap();
    let find = |dest: &str| {
        mounts
            .iter()
            .find(|m| m.destination() == Path::new(dest))
            .unwrap_or_else(|| panic!("no mount at {dest}"))
    };
    let out = find("/out");
    assert_eq!(
        out.source().as_deref(),
        Some(project.path().join("out").as_path())
    );
    let options = |m: &oci_spec::runtime::Mount| m.options().clone().unwrap();
    assert_eq!(options(out), ["rbind", "rprivate", "nosuid", "nodev"]);
    assert_eq!(
        options(find("/data")),
        ["rbind", "rprivate", "nosuid", "nodev", "ro"]
    );
    assert_eq!(
        recorded_volumes(&r, &host()),
        [
            format!("{}:/results/../out", project.path().join("out").display()),
            format!("{}:/data:ro", project.path().display()),
        ]
    );
}

#[test]
fn a_volume_is_refused_naming_its_entry() {
    let project = tempfile::tempdir().unwrap();
    let base = project.path();
    let refused = |v: Volume| {
        plan(&with_volumes(vec![v], base), &image(&[], &[], ""))
            .unwrap_err()
            .to_string()
    };
    let missing = refused(volume("nope", "/data", false));
    assert!(missing.contains("`nope:/data`"), "{missing}");
    assert!(missing.contains("does not exist"), "{missing}");
    assert!(!base.join("nope").exists(), "nothing is made on the host");
    let relative = refused(volume(".", "data", false));
    assert!(
        relative.contains("`.:data`") && relative.contains("absolute"),
        "{relative}"
    );
    for target in ["/proc", "/sys/kernel", "/dev/../dev/shm", "/", "/a/../.."] {
        let over = refused(volume(".", target, false));
        assert!(over.contains(&format!("`.:{target}`")), "{over}");
    }
    let home = refused(volume("~/missing", "/m", false));
    assert!(home.contains("/home/me/missing"), "{home}");
}

fn users() -> UserFiles {
    UserFiles {
        passwd: PASSWD.into(),
        group: GROUP.into(),
    }
}

fn planned_user(spec: &Spec) -> (u32, u32, Vec<u32>) {
    let user = spec.process().as_ref().unwrap().user();
    (
        user.uid(),
        user.gid(),
        user.additional_gids().clone().unwrap_or_default(),
    )
}

#[test]
fn a_chosen_user_replaces_the_images() {
    let mut r = req(&["id"], None);
    r.user = UserChoice::Named("app:video".into());
    let spec = plan(&r, &image(&[], &[], "root")).unwrap();
    assert_eq!(planned_user(&spec), (1000, 44, vec![44, 50]));
    r.user = UserChoice::Named("4321".into());
    let spec = plan(&r, &image(&[], &[], "app")).unwrap();
    assert_eq!(planned_user(&spec), (4321, 0, vec![0]));
}

#[test]
fn an_unknown_chosen_user_is_named_as_chosen() {
    let mut r = req(&["id"], None);
    r.user = UserChoice::Named("ghost".into());
    let err = plan(&r, &image(&[], &[], "")).unwrap_err();
    assert_eq!(
        err,
        PlanError::UnknownChosenUser {
            user: "ghost".into()
        }
    );
    assert!(err.to_string().contains("--user"), "{err}");
    r.user = UserChoice::Named("app:ghosts".into());
    assert!(matches!(
        plan(&r, &image(&[], &[], "")),
        Err(PlanError::UnknownChosenGroup { .. })
    ));
}

#[test]
fn as_root_the_host_user_runs_with_its_ids_and_groups_and_no_user_namespace() {
    let mut r = req(&["id"], None);
    r.user = UserChoice::Host;
    let mut h = host();
    h.invoker = Invoker {
        uid: 1000,
        gid: 1000,
        groups: vec![1000, 27, 44],
        rootless: None,
    };
    let spec = super::plan(&r, &image(&[], &[], "root"), &users(), &h).unwrap();
    assert_eq!(planned_user(&spec), (1000, 1000, vec![1000, 27, 44]));
    let env = spec.process().as_ref().unwrap().env().clone().unwrap();
    assert!(env.contains(&"HOME=/home/app".to_string()), "{env:?}");
    assert!(spec.linux().as_ref().unwrap().uid_mappings().is_none());
}

#[test]
fn rootless_the_host_user_gets_a_namespace_that_maps_it_to_itself() {
    let mut r = req(&["id"], None);
    r.user = UserChoice::Host;
    let mut h = host();
    let range = |inside, outside, size| keep_id::IdRange {
        inside,
        outside,
        size,
    };
    h.invoker = Invoker {
        uid: 1001,
        gid: 1001,
        groups: vec![],
        rootless: Some((
            vec![range(0, 1001, 1), range(1, 100000, 65536)],
            vec![range(0, 1001, 1), range(1, 100000, 65536)],
        )),
    };
    let spec = super::plan(&r, &image(&[], &[], ""), &users(), &h).unwrap();
    assert_eq!(planned_user(&spec), (1001, 1001, vec![1001]));
    let linux = spec.linux().as_ref().unwrap();
    assert!(
        linux
            .namespaces()
            .iter()
            .flatten()
            .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::User)
    );
    let own = linux
        .uid_mappings()
        .iter()
        .flatten()
        .find(|m| m.container_id() == 1001)
        .unwrap();
    assert_eq!((own.host_id(), own.size()), (0, 1));
    assert_eq!(
        spec.annotations().as_ref().unwrap()[keep_id::KEEP_ORIGINAL_GROUPS],
        "1"
    );
}

/// A hostile image's `/etc/passwd` that is a FIFO (or a device) is no user file: planning neither blocks on
/// it nor reads it, and the image's users are then unknown.
#[test]
fn a_fifo_for_etc_passwd_is_not_read() {
    let layer = tempfile::tempdir().unwrap();
    let etc = layer.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    nix::unistd::mkfifo(
        &etc.join("passwd"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    std::fs::write(etc.join("group"), "root:x:0:\n").unwrap();
    let users = UserFiles::read(&[layer.path().to_path_buf()]);
    assert_eq!(users.passwd, "");
    assert_eq!(users.group, "root:x:0:\n");
}
