//! Every mistake: the file, the line, the key, what was expected, and the closest known name.

use std::collections::BTreeMap;

use super::*;

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
fn deep_nesting_is_refused_with_its_line_before_the_yaml_parser() {
    let started = std::time::Instant::now();
    let err = load_error(&format!(
        "workflows:\n  - name: w\n    image: {}\n",
        "[".repeat(100_000)
    ));
    assert!(
        started.elapsed().as_secs_f64() < 1.0,
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.starts_with(&format!("{FILE}:3: it is nested deeper than 64 levels")),
        "{err}"
    );
}

#[test]
fn long_values_are_cut_in_messages() {
    let err = load_error(&format!(
        "workflows:\n  - name: w{}\n    image: x\n",
        " w".repeat(100_000)
    ));
    assert!(err.len() < 600, "{} bytes: {}", err.len(), &err[..300]);
    assert!(err.contains("characters in all"), "{err}");
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
