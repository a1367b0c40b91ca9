//! Every property of the docker provider, read as the seed and the semantics page say.

use std::collections::BTreeMap;

use super::*;
use crate::workflow::model::{Artifact, ContainerPath, GpuRequest};

#[test]
fn the_seed_example_parses() {
    let w = one("workflows:
  - name: hello-docker
    provider: docker
    image: ubuntu
    entrypoint: /bin/bash -i -c
    commands:
      - mkdir -p output
      - echo 'Hello, world!' > output/hello.txt
    artifacts:
      - path: ./output
    resources:
      gpu:
        name: \"K80\"
        count: 1
");
    assert_eq!(w.name, "hello-docker");
    assert_eq!(w.image, "ubuntu");
    assert_eq!(
        w.entrypoint,
        Some(vec!["/bin/bash".into(), "-i".into(), "-c".into()])
    );
    assert_eq!(
        w.commands,
        ["mkdir -p output", "echo 'Hello, world!' > output/hello.txt"]
    );
    assert_eq!(
        w.artifacts,
        [Artifact {
            path: ContainerPath::Relative("output".into()),
            mount: false
        }]
    );
    let gpu = w.resources.gpu.unwrap();
    assert_eq!((gpu.count, gpu.name.as_deref()), (1, Some("K80")));
}

#[test]
fn a_workflow_needs_only_name_and_image() {
    let w = one("workflows:\n  - name: tiny\n    image: busybox\n");
    assert_eq!(w.image, "busybox");
    assert!(w.commands.is_empty() && w.entrypoint.is_none() && w.env.is_empty());
    assert_eq!(
        (w.ports, w.working_dir.clone(), w.registry_auth.clone()),
        (0, None, None)
    );
    assert_eq!(w.resources, Resources::default());
}

#[test]
fn commands_as_a_multi_line_string_drop_blank_lines() {
    let w = one(&wf(
        "    commands: |\n      echo one\n\n      echo two   \n   \n      echo three\n",
    ));
    assert_eq!(w.commands, ["echo one", "echo two", "echo three"]);
}

#[test]
fn entrypoint_is_split_like_a_shell_or_taken_as_a_list() {
    let w = one(&wf("    entrypoint: sh -c 'echo \"a b\"'\n"));
    assert_eq!(w.entrypoint.unwrap(), ["sh", "-c", "echo \"a b\""]);
    let w = one(&wf("    entrypoint: [\"/bin/sh\", \"-c\"]\n"));
    assert_eq!(w.entrypoint.unwrap(), ["/bin/sh", "-c"]);
    let err = load_error(&wf("    entrypoint: sh -c 'oops\n"));
    assert_eq!(
        err,
        format!("{FILE}:5: `entrypoint` in workflow `w` has an unterminated single quote")
    );
    let err = load_error(&wf("    entrypoint: []\n"));
    assert!(
        err.contains("`entrypoint` in workflow `w` is empty"),
        "{err}"
    );
}

#[test]
fn environment_as_a_list_or_a_map_and_env_as_its_alias() {
    let w = one(&wf(
        "    environment:\n      - A=1\n      - B=x=y\n      - PASSTHROUGH\n",
    ));
    let vars: Vec<(&str, Option<&str>)> = w
        .env
        .iter()
        .map(|v| (v.name.as_str(), v.value.as_deref()))
        .collect();
    assert_eq!(
        vars,
        [("A", Some("1")), ("B", Some("x=y")), ("PASSTHROUGH", None)]
    );
    let w = one(&wf(
        "    env:\n      B: 2\n      A: text\n      FLAG: true\n      FROM_HOST:\n",
    ));
    let vars: Vec<(&str, Option<&str>)> = w
        .env
        .iter()
        .map(|v| (v.name.as_str(), v.value.as_deref()))
        .collect();
    assert_eq!(
        vars,
        [
            ("B", Some("2")),
            ("A", Some("text")),
            ("FLAG", Some("true")),
            ("FROM_HOST", None)
        ]
    );
    let err = load_error(&wf("    environment: [A=1]\n    env: [B=2]\n"));
    assert_eq!(
        err,
        format!("{FILE}:6: workflow `w` has both `environment` and `env`: use one of them")
    );
    let err = load_error(&wf("    environment:\n      - =oops\n"));
    assert_eq!(
        err,
        format!("{FILE}:6: `environment[0]` in workflow `w` has ``, which is not a variable name")
    );
    let err = load_error(&wf("    environment: 3\n"));
    assert!(
        err.contains("must be a list of `NAME=value` strings or a mapping"),
        "{err}"
    );
}

#[test]
fn artifacts_as_mappings_or_strings_with_mount() {
    let w = one(&wf(
        "    artifacts:\n      - path: ./output/\n        mount: true\n      - checkpoints\n      - /data/out\n",
    ));
    assert_eq!(
        w.artifacts,
        [
            Artifact {
                path: ContainerPath::Relative("output".into()),
                mount: true
            },
            Artifact {
                path: ContainerPath::Relative("checkpoints".into()),
                mount: false
            },
            Artifact {
                path: ContainerPath::Absolute("/data/out".into()),
                mount: false
            },
        ]
    );
}

#[test]
fn resources_with_sizes_fractions_and_gpus() {
    let w = one(&wf(
        "    resources:\n      cpu: 1.5\n      memory: 16GB\n      shm_size: 512mib\n      interruptible: true\n      gpu: 2\n",
    ));
    let r = w.resources;
    assert_eq!(r.cpu, Some(1.5));
    assert_eq!(r.memory, Some(16_000_000_000));
    assert_eq!(r.shm_size, Some(512 * 1024 * 1024));
    assert!(r.interruptible);
    assert_eq!(
        r.gpu,
        Some(GpuRequest {
            count: 2,
            name: None,
            memory: None
        })
    );
    let w = one(&wf(
        "    resources:\n      cpu: \"4\"\n      gpu:\n        memory: 16GiB\n",
    ));
    assert_eq!(w.resources.cpu, Some(4.0));
    let gpu = w.resources.gpu.unwrap();
    assert_eq!(
        (gpu.count, gpu.memory),
        (1, Some(16 << 30)),
        "memory alone means one GPU"
    );
    let w = one(&wf("    resources:\n      gpu:\n        name: A100\n"));
    assert_eq!(
        w.resources.gpu.unwrap().count,
        1,
        "a name alone means one GPU"
    );
    let w = one(&wf("    resources:\n      gpu: 0\n"));
    assert_eq!(w.resources.gpu, None);
}

#[test]
fn ports_are_a_small_whole_number() {
    assert_eq!(one(&wf("    ports: 3\n")).ports, 3);
    let err = load_error(&wf("    ports: 1000\n"));
    assert_eq!(
        err,
        format!("{FILE}:5: `ports` in workflow `w` is 1000: at most 64 is allowed")
    );
    let err = load_error(&wf("    ports: \"8080\"\n"));
    assert_eq!(
        err,
        format!(
            "{FILE}:5: `ports` in workflow `w` must be a whole number, 0 or more, found a string"
        )
    );
}

#[test]
fn network_is_private_unless_the_workflow_asks_for_host_or_none() {
    use crate::workflow::model::NetworkChoice;
    assert_eq!(one(&wf("")).network, NetworkChoice::Private);
    assert_eq!(one(&wf("    network: host\n")).network, NetworkChoice::Host);
    assert_eq!(one(&wf("    network: none\n")).network, NetworkChoice::None);
    let err = load_error(&wf("    network: bridge\n"));
    assert_eq!(
        err,
        format!(
            "{FILE}:5: `network` in workflow `w` is `bridge`: use `private` (the default), `host` or \
             `none`"
        )
    );
}

#[test]
fn security_opt_chooses_the_seccomp_filter() {
    use crate::workflow::SeccompChoice;
    assert_eq!(one(&wf("")).seccomp, SeccompChoice::Default);
    let unconfined = "    security_opt: [seccomp=unconfined]\n";
    assert_eq!(one(&wf(unconfined)).seccomp, SeccompChoice::Unconfined);
    let file = "    security_opt: [no-new-privileges, \"seccomp:p/x.json\"]\n";
    assert_eq!(
        one(&wf(file)).seccomp,
        SeccompChoice::File("p/x.json".into())
    );
    let err = load_error(&wf(
        "    security_opt: [seccomp=unconfined, apparmor=unconfined]\n",
    ));
    assert_eq!(
        err,
        format!(
            "{FILE}:5: `security_opt[1]` in workflow `w`: `apparmor=unconfined` is not a supported security \
             option: use `seccomp=unconfined` or `seccomp=FILE` (a Docker seccomp profile)"
        )
    );
    let err = load_error(&wf("    security_opt: seccomp=unconfined\n"));
    assert!(
        err.contains("`security_opt`") && err.contains("a list"),
        "{err}"
    );
}

#[test]
fn working_dir_is_relative_to_workflow_and_cannot_leave_it() {
    assert_eq!(
        one(&wf("    working_dir: ./src/app/\n"))
            .working_dir
            .as_deref(),
        Some("src/app")
    );
    assert_eq!(
        one(&wf("    working_dir: src/../lib\n"))
            .working_dir
            .as_deref(),
        Some("lib")
    );
    assert_eq!(one(&wf("    working_dir: .\n")).working_dir, None);
    assert_eq!(
        one(&wf("    working_dir: /workflow/src\n"))
            .working_dir
            .as_deref(),
        Some("src")
    );
    let err = load_error(&wf("    working_dir: src/../..\n"));
    assert_eq!(
        err,
        format!(
            "{FILE}:5: `working_dir` in workflow `w` `src/../..` leaves the project's directory (`/workflow`)"
        )
    );
    let err = load_error(&wf("    working_dir: /opt\n"));
    assert!(
        err.contains("is `/opt`: it is relative to the project's directory"),
        "{err}"
    );
}

#[test]
fn registry_auth_and_its_mistakes() {
    let w = one(&wf(
        "    registry_auth:\n      username: bot\n      password: 12345\n",
    ));
    let auth = w.registry_auth.unwrap();
    assert_eq!(
        (auth.username.as_str(), auth.password.as_str()),
        ("bot", "12345")
    );
    let err = load_error(&wf("    registry_auth:\n      username: bot\n"));
    assert_eq!(
        err,
        format!(
            "{FILE}:6: `registry_auth` in workflow `w` has no `password`: add e.g. `password: ${{{{ secrets.REGISTRY_PASSWORD }}}}`"
        )
    );
    let err = load_error(&wf(
        "    registry_auth:\n      user: bot\n      password: x\n",
    ));
    assert!(
        err.contains("unknown key `user` in `registry_auth` of workflow `w`"),
        "{err}"
    );
}

#[test]
fn cache_paths_relative_absolute_or_home() {
    let w = one(&wf(
        "    cache:\n      - path: ~/.cache/pip\n      - ./data\n      - /opt/cache\n",
    ));
    assert_eq!(
        w.cache,
        [
            ContainerPath::Home(".cache/pip".into()),
            ContainerPath::Relative("data".into()),
            ContainerPath::Absolute("/opt/cache".into()),
        ]
    );
    let w = one(&wf("    cache:\n      - \"~\"\n"));
    assert_eq!(w.cache, [ContainerPath::Home(String::new())]);
    let err = load_error(&wf("    cache:\n      - \"~\"\n      - ~/.cache\n"));
    assert!(
        err.contains("`~/.cache` overlaps the cache path `~`"),
        "{err}"
    );
    let err = load_error(&wf("    cache:\n      - path: /\n"));
    assert!(
        err.contains("`cache[0].path` in workflow `w` is `/`"),
        "{err}"
    );
    let err = load_error(&wf("    cache:\n      - ~/../etc\n"));
    assert!(
        err.contains("`~/../etc` leaves the home directory"),
        "{err}"
    );
    let err = load_error(&wf("    cache:\n      - path: ~\n"));
    assert_eq!(
        err,
        format!(
            "{FILE}:6: `cache[0].path` in workflow `w` is empty (a bare `~` is YAML for nothing: write `\"~\"` for the home directory)"
        )
    );
}

#[test]
fn version_is_accepted() {
    assert_eq!(
        one(&wf("    version: 3.10\n")).version.as_deref(),
        Some("3.1")
    );
    assert_eq!(
        one(&wf("    version: \"3.10\"\n")).version.as_deref(),
        Some("3.10")
    );
}

#[test]
fn empty_files_and_empty_lists_hold_no_workflows() {
    assert!(catalog(&[(FILE, "")]).unwrap().names().is_empty());
    assert!(
        catalog(&[(FILE, "workflows:\n")])
            .unwrap()
            .names()
            .is_empty()
    );
    assert!(
        catalog(&[(FILE, "# just a comment\n")])
            .unwrap()
            .names()
            .is_empty()
    );
}

#[test]
fn expressions_are_rendered_in_every_string() {
    let yaml = "workflows:
  - name: w
    image: ${{ secrets.REGISTRY }}/app:${{ run.name }}
    entrypoint: python train.py ${{ run.args }}
    commands:
      - echo ${{ run.name }}
    environment:
      TOKEN: ${{ secrets.TOKEN }}
    working_dir: runs/${{ run.name }}
    artifacts:
      - path: out/${{ run.name }}
    registry_auth:
      username: ${{ secrets.USER }}
      password: ${{ secrets.TOKEN }}
";
    let c = catalog(&[(FILE, yaml)]).unwrap();
    let secrets: BTreeMap<String, String> =
        [("REGISTRY", "reg:5000"), ("TOKEN", "t0k"), ("USER", "bot")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let w = c.get("w").unwrap().resolve(&ctx(&secrets)).unwrap();
    assert_eq!(w.image, "reg:5000/app:lucky-lynx-1");
    assert_eq!(
        w.entrypoint.unwrap(),
        ["python", "train.py", "--epochs", "3"]
    );
    assert_eq!(w.commands, ["echo lucky-lynx-1"]);
    assert_eq!(w.env[0].value.as_deref(), Some("t0k"));
    assert_eq!(w.working_dir.as_deref(), Some("runs/lucky-lynx-1"));
    assert_eq!(
        w.artifacts[0].path,
        ContainerPath::Relative("out/lucky-lynx-1".into())
    );
    let auth = w.registry_auth.unwrap();
    assert_eq!(
        (auth.username.as_str(), auth.password.as_str()),
        ("bot", "t0k")
    );
    // Loading alone leaves them in place.
    assert_eq!(
        c.get("w").unwrap().unresolved().commands,
        ["echo ${{ run.name }}"]
    );
}

#[test]
fn the_repository_examples_load() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let project = crate::project::Project::at(repo).unwrap();
    let catalog = Catalog::load(&project).unwrap_or_else(|e| panic!("{e}"));
    let mut names = catalog.names();
    names.sort();
    assert_eq!(names, ["hello-app", "hello-docker", "private-registry"]);
    let hello = catalog.get("hello-docker").unwrap().unresolved();
    assert_eq!(
        hello.artifacts[0].path,
        ContainerPath::Relative("output".into())
    );
    assert_eq!(catalog.get("hello-app").unwrap().unresolved().ports, 1);
    let err = catalog
        .get("private-registry")
        .unwrap()
        .resolve(&ctx(&BTreeMap::new()))
        .unwrap_err();
    assert!(
        matches!(err, WorkflowError::MissingSecret { ref name, .. } if name == "REGISTRY_USER"),
        "{err}"
    );
}

#[test]
fn volumes_are_strings_or_maps_and_home_a_boolean() {
    use crate::workflow::Volume;
    let w = one(&wf("    volumes:
      - /mnt/data:/data:ro
      - {host: ./out, path: /out}
      - host: ~/cache
        path: /cache
        read_only: true
    home: true
"));
    let v = |host: &str, path: &str, read_only| Volume {
        host: host.into(),
        path: path.into(),
        read_only,
    };
    assert_eq!(
        w.volumes,
        [
            v("/mnt/data", "/data", true),
            v("./out", "/out", false),
            v("~/cache", "/cache", true)
        ]
    );
    assert!(w.home);
    assert!(!one(&wf("")).home);
    let err = load_error(&wf("    volumes: [/data]\n"));
    assert!(
        err.contains("`volumes[0]` in workflow `w`") && err.contains("HOST:CONTAINER"),
        "{err}"
    );
    let err = load_error(&wf("    volumes: [{host: /a}]\n"));
    assert!(err.contains("has no `path`"), "{err}");
    let err = load_error(&wf("    volumes: [{host: /a, path: /b, mode: ro}]\n"));
    assert!(err.contains("mode"), "{err}");
}

#[test]
fn user_names_the_jobs_user_or_the_invoking_one() {
    use crate::workflow::UserChoice;
    assert_eq!(one(&wf("")).user, UserChoice::Image);
    assert_eq!(one(&wf("    user: host\n")).user, UserChoice::Host);
    assert_eq!(
        one(&wf("    user: app:staff\n")).user,
        UserChoice::Named("app:staff".into())
    );
    assert_eq!(
        one(&wf("    user: 1234\n")).user,
        UserChoice::Named("1234".into())
    );
    let err = load_error(&wf("    user: \"app:\"\n"));
    assert!(
        err.starts_with(&format!(
            "{FILE}:5: `user` in workflow `w` is \"app:\": give `NAME`"
        )),
        "{err}"
    );
}
