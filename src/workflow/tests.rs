//! Workflow files as users write them: every property, and every mistake with the message and line it
//! gets.

use std::collections::BTreeMap;

use super::model::{Artifact, ContainerPath, GpuRequest};
use super::*;

const FILE: &str = ".dstack/workflows/test.yaml";

fn catalog(files: &[(&str, &str)]) -> Result<Catalog, WorkflowError> {
    let sources = files
        .iter()
        .map(|(display, text)| Source {
            display: display.to_string(),
            text: text.to_string(),
        })
        .collect();
    Catalog::from_sources("/project".into(), sources)
}

/// The only workflow of a one-file project, resolved with no secrets.
fn one(yaml: &str) -> Workflow {
    let catalog = catalog(&[(FILE, yaml)]).unwrap_or_else(|e| panic!("{e}"));
    let name = catalog.names()[0].to_string();
    let secrets = BTreeMap::new();
    catalog
        .get(&name)
        .unwrap()
        .resolve(&ctx(&secrets))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn ctx(secrets: &BTreeMap<String, String>) -> Context<'_> {
    Context {
        run_name: "lucky-lynx-1",
        run_args: "--epochs 3",
        secrets,
    }
}

/// The error a one-file project gets while loading.
fn load_error(yaml: &str) -> String {
    catalog(&[(FILE, yaml)]).unwrap_err().to_string()
}

/// The error of resolving the workflow `w` (loading succeeds).
fn resolve_error(yaml: &str, secrets: &[(&str, &str)]) -> String {
    let catalog = catalog(&[(FILE, yaml)]).unwrap_or_else(|e| panic!("{e}"));
    let secrets: BTreeMap<String, String> = secrets
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    catalog
        .get("w")
        .unwrap()
        .resolve(&ctx(&secrets))
        .unwrap_err()
        .to_string()
}

fn wf(body: &str) -> String {
    format!("workflows:\n  - name: w\n    provider: docker\n    image: busybox\n{body}")
}

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
fn artifact_paths_that_cannot_work_are_refused() {
    let cases = [
        (
            "      - path: /\n",
            6,
            "`artifacts[0].path` in workflow `w` is `/`: the whole file system cannot be saved; name a directory",
        ),
        (
            "      - /./\n",
            6,
            "`artifacts[0]` in workflow `w` is `/./`: the whole file system cannot be saved; name a directory",
        ),
        (
            "      - .\n",
            6,
            "`artifacts[0]` in workflow `w` is `.`, the working directory itself: name a directory inside it",
        ),
        (
            "      - ../up\n",
            6,
            "`artifacts[0]` in workflow `w` `../up` leaves the working directory: use an absolute path instead",
        ),
        (
            "      - ~/x\n",
            6,
            "`artifacts[0]` in workflow `w` `~/x`: `~` is for cache paths; give artifacts a relative or absolute path",
        ),
        (
            "      - out\n      - ./out/sub\n",
            7,
            "`artifacts[1]` in workflow `w` `out/sub` overlaps the artifact `out`: list each directory once",
        ),
        (
            "      - mount: true\n",
            6,
            "`artifacts[0]` in workflow `w` has no `path`: add e.g. `path: ./output`",
        ),
        (
            "      - path: out\n        mount: yes\n",
            7,
            "`artifacts[0].mount` in workflow `w` must be `true` or `false`, found a string",
        ),
        (
            "      - path: out\n        mnt: true\n",
            7,
            "unknown key `mnt` in an artifact of workflow `w`: did you mean `mount`?",
        ),
    ];
    for (items, line, message) in cases {
        let err = load_error(&wf(&format!("    artifacts:\n{items}")));
        assert_eq!(err, format!("{FILE}:{line}: {message}"), "for {items:?}");
    }
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
fn resource_mistakes_name_the_key_and_line() {
    let cases = [
        (
            "      memory: 16\n",
            "`resources.memory` in workflow `w` needs a unit: write e.g. `16MB`, `16GB` or `16GiB`",
        ),
        (
            "      memory: \"16\"\n",
            "`resources.memory` in workflow `w` `16` needs a unit: write e.g. `16MB` or `16GB`",
        ),
        (
            "      shm_size: 8XB\n",
            "`resources.shm_size` in workflow `w`: `8XB` has an unknown unit `XB`: use B, KB, MB, GB, TB (decimal) or KiB, MiB, GiB, TiB (binary)",
        ),
        (
            "      memory: 0GB\n",
            "`resources.memory` in workflow `w` must be more than zero",
        ),
        (
            "      cpu: 0\n",
            "`resources.cpu` in workflow `w` must be more than zero cores",
        ),
        (
            "      cpu: many\n",
            "`resources.cpu` in workflow `w` must be a number of cores, e.g. `2` or `0.5`, found a string",
        ),
        (
            "      gpu: [1]\n",
            "`resources.gpu` in workflow `w` must be a number of GPUs or a mapping of `count`, `name`, `memory`, found a list",
        ),
        (
            "      gpu: -1\n",
            "`resources.gpu` in workflow `w` must be a whole number, 0 or more, found a number",
        ),
        (
            "      interruptible: 1\n",
            "`resources.interruptible` in workflow `w` must be `true` or `false`, found a number",
        ),
        (
            "      gpus: 1\n",
            "unknown key `gpus` in `resources` of workflow `w`: did you mean `gpu`?",
        ),
    ];
    for (body, message) in cases {
        let err = load_error(&wf(&format!("    resources:\n{body}")));
        assert_eq!(err, format!("{FILE}:6: {message}"), "for {body:?}");
    }
    let err = load_error(&wf(
        "    resources:\n      gpu:\n        count: 1\n        mem: 16GB\n",
    ));
    assert_eq!(
        err,
        format!(
            "{FILE}:8: unknown key `mem` in `resources.gpu` of workflow `w`: did you mean `memory`?"
        )
    );
    let err = load_error(&wf("    resources: 4\n"));
    assert!(
        err.starts_with(&format!(
            "{FILE}:5: `resources` in workflow `w` must be a mapping"
        )),
        "{err}"
    );
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
fn unknown_keys_suggest_the_closest_known_one() {
    let err = load_error(&wf("    enviroment:\n      - A=1\n"));
    assert_eq!(
        err,
        format!("{FILE}:5: unknown key `enviroment` in workflow `w`: did you mean `environment`?")
    );
    let err = load_error(&wf("    comands: [ls]\n"));
    assert_eq!(
        err,
        format!("{FILE}:5: unknown key `comands` in workflow `w`: did you mean `commands`?")
    );
    let err = load_error(&wf("    python: 3.10\n"));
    assert!(
        err.starts_with(&format!(
            "{FILE}:5: unknown key `python` in workflow `w`: known keys are `name`, "
        )),
        "{err}"
    );
    let err = load_error("workflow:\n  - name: w\n");
    assert_eq!(
        err,
        format!("{FILE}:1: unknown key `workflow` in the file: did you mean `workflows`?")
    );
}

#[test]
fn wrong_types_say_what_was_expected() {
    let err = load_error(&wf("    commands: 3\n"));
    assert_eq!(
        err,
        format!(
            "{FILE}:5: `commands` in workflow `w` must be a list of commands or a multi-line string, found a number"
        )
    );
    let err = load_error(&wf("    commands:\n      - ls\n      - {a: b}\n"));
    assert_eq!(
        err,
        format!("{FILE}:7: `commands[1]` in workflow `w` must be a string, found a mapping")
    );
    let err = load_error("workflows:\n  - name: w\n    image: [a]\n");
    assert_eq!(
        err,
        format!("{FILE}:3: `image` in workflow `w` must be a string, found a list")
    );
    let err = load_error("workflows: {w: 1}\n");
    assert_eq!(
        err,
        format!("{FILE}:1: `workflows` must be a list of workflows, found a mapping")
    );
    let err = load_error("workflows:\n  - just a string\n");
    assert!(
        err.starts_with(&format!(
            "{FILE}:2: each item of `workflows` must be a mapping"
        )),
        "{err}"
    );
    let err = load_error("- a\n- b\n");
    assert!(
        err.starts_with(&format!("{FILE}:1: a workflow file holds a mapping")),
        "{err}"
    );
}

#[test]
fn name_and_image_are_required_and_names_are_checked() {
    let err = load_error("workflows:\n  - provider: docker\n    image: busybox\n");
    assert_eq!(
        err,
        format!("{FILE}:2: this workflow has no `name`: add one, e.g. `name: train`")
    );
    let err = load_error("workflows:\n  - name: w\n    provider: docker\n");
    assert_eq!(
        err,
        format!(
            "{FILE}:2: workflow `w` has no `image`: add the image to run, e.g. `image: ubuntu`"
        )
    );
    let err = load_error("workflows:\n  - name: my workflow\n    image: busybox\n");
    assert!(
        err.starts_with(&format!(
            "{FILE}:2: `my workflow` is not a valid workflow name"
        )),
        "{err}"
    );
    let err = load_error("workflows:\n  - name: docker\n    image: busybox\n");
    assert!(
        err.contains("`docker` is taken by `dstack run docker IMAGE`"),
        "{err}"
    );
}

#[test]
fn other_providers_are_not_supported_here() {
    for provider in ["bash", "code", "lab", "notebook"] {
        let yaml = format!("workflows:\n  - name: w\n    provider: {provider}\n    python: 3.10\n");
        let err = load_error(&yaml);
        assert!(
            err.starts_with(&format!(
                "{FILE}:3: provider `{provider}` is not supported by this runtime (only docker)"
            )),
            "{err}"
        );
    }
    let err = load_error("workflows:\n  - name: w\n    provider: dokcer\n    image: x\n");
    assert_eq!(
        err,
        format!("{FILE}:3: unknown provider `dokcer` in workflow `w`: did you mean `docker`?")
    );
}

#[test]
fn a_duplicate_name_across_files_names_both() {
    let a = (
        "a.yaml",
        "workflows:\n  - name: train\n    image: busybox\n",
    );
    let b = (
        "b.yml",
        "workflows:\n  - name: other\n    image: x\n  - name: train\n    image: y\n",
    );
    let err = catalog(&[a, b]).unwrap_err().to_string();
    assert_eq!(
        err,
        "b.yml:4: workflow `train` is defined twice: here and at a.yaml:2; rename one of them"
    );
}

#[test]
fn yaml_syntax_errors_have_a_line() {
    let err = load_error("workflows:\n  - name: w\n    image: [unclosed\n");
    assert!(
        err.starts_with(&format!("{FILE}:4: this is not valid YAML: ")),
        "{err}"
    );
    let err = load_error("workflows:\n  - name: w\n    image: a\n    image: b\n");
    assert!(err.starts_with(&format!("{FILE}:")), "{err}");
    assert!(err.contains("duplicate"), "{err}");
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
fn looking_up_a_missing_workflow_suggests_or_lists() {
    let c = catalog(&[(
        FILE,
        "workflows:\n  - name: train\n    image: x\n  - name: serve\n    image: x\n",
    )])
    .unwrap();
    let err = c.get("trian").unwrap_err().to_string();
    assert_eq!(
        err,
        "no workflow named `trian` in /project: did you mean `train`?"
    );
    let err = c.get("zzz").unwrap_err().to_string();
    assert_eq!(
        err,
        "no workflow named `zzz` in /project: its workflows are `train`, `serve`"
    );
    let err = catalog(&[]).unwrap().get("x").unwrap_err().to_string();
    assert!(
        err.contains("it has no workflows; add one to /project/.dstack/workflows/NAME.yaml"),
        "{err}"
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
fn a_missing_secret_is_an_error_with_its_line() {
    let yaml =
        wf("    registry_auth:\n      username: bot\n      password: ${{ secrets.GHCR_TOKEN }}\n");
    let err = resolve_error(&yaml, &[]);
    assert_eq!(
        err,
        format!(
            "{FILE}:7: workflow `w` uses the secret `GHCR_TOKEN`, which is not set for this project: add it with `dstack secrets add GHCR_TOKEN`"
        )
    );
}

#[test]
fn unknown_expressions_fail_when_loading() {
    let err = load_error(&wf("    commands:\n      - echo ${{ secret.X }}\n"));
    assert_eq!(
        err,
        format!(
            "{FILE}:6: `commands[0]` in workflow `w`: unknown expression `secret.X` (did you mean `secrets.X`?): use `secrets.NAME`, `run.name` or `run.args`"
        )
    );
    let err = load_error(&wf("    environment:\n      A: ${{ run.name\n"));
    assert_eq!(
        err,
        format!("{FILE}:6: `environment.A` in workflow `w`: `${{{{` is not closed with `}}}}`")
    );
}

#[test]
fn values_checked_after_rendering_are_still_checked() {
    let yaml = wf("    working_dir: ${{ secrets.DIR }}\n");
    let err = resolve_error(&yaml, &[("DIR", "../../etc")]);
    assert!(
        err.starts_with(&format!("{FILE}:5: `working_dir` in workflow `w`")),
        "{err}"
    );
    let yaml = wf("    resources:\n      memory: ${{ secrets.MEM }}\n");
    let c = catalog(&[(FILE, &yaml)]).unwrap();
    let secrets = BTreeMap::from([("MEM".to_string(), "2GB".to_string())]);
    let w = c.get("w").unwrap().resolve(&ctx(&secrets)).unwrap();
    assert_eq!(w.resources.memory, Some(2_000_000_000));
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
