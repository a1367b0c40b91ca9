//! `--dry-run` prints the Spec that runs: the same job is planned with `--dry-run`, then run with
//! `DSTACK_SPEC_OUT` (the runtime writes the Spec its container receives there), and the two are equal
//! once what only a started run has (its name, container id and ports) is set aside. Root and rootless, the
//! ad hoc form and a workflow, each with a volume.

use std::path::Path;

use test_support::*;

/// Both ways a user meets dstack.
const MODES: [RunAs; 2] = [RunAs::Root, RunAs::Rootless];

/// The Spec `dstack ARGS` runs, from `$DSTACK_SPEC_OUT`.
fn spec_that_ran(dstack: Dstack, args: &[&str]) -> serde_json::Value {
    let out_file = dstack.home().join("spec-that-ran.json");
    let dstack = dstack.env("DSTACK_SPEC_OUT", &out_file);
    dstack.run(args).assert_success();
    let text = std::fs::read_to_string(&out_file)
        .unwrap_or_else(|e| panic!("{}: {e}", out_file.display()));
    serde_json::from_str(&text).unwrap()
}

/// The `spec` of the plan `dstack ARGS --dry-run` prints (`--dry-run` goes right after `run`).
fn dry_run_spec(dstack: &Dstack, args: &[&str]) -> serde_json::Value {
    let mut with_flag = vec![args[0], "--dry-run"];
    with_flag.extend(&args[1..]);
    let out = dstack.run(&with_flag);
    out.assert_success();
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    plan["spec"].clone()
}

/// `spec` as text with each `(from, to)` replaced, the values of `PORT_i`/`JOB_PORT_i` set to 0, and the
/// capability sets (sets: their JSON order varies) sorted.
fn normalized(spec: &serde_json::Value, replace: &[(&str, &str)]) -> serde_json::Value {
    let mut text = serde_json::to_string_pretty(spec).unwrap();
    for (from, to) in replace {
        text = text.replace(from, to);
    }
    let mut spec: serde_json::Value = serde_json::from_str(&text).unwrap();
    if let Some(sets) = spec["process"]["capabilities"].as_object_mut() {
        for set in sets.values_mut() {
            if let Some(caps) = set.as_array_mut() {
                caps.sort_by_key(|c| c.to_string());
            }
        }
    }
    if let Some(env) = spec["process"]["env"].as_array_mut() {
        for var in env.iter_mut() {
            let kv = var.as_str().unwrap().to_string();
            let (key, _) = kv.split_once('=').unwrap();
            if key.starts_with("PORT_") || key.starts_with("JOB_PORT_") {
                *var = serde_json::json!(format!("{key}=0"));
            }
        }
    }
    spec
}

fn env_value<'a>(spec: &'a serde_json::Value, key: &str) -> &'a str {
    spec["process"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {spec}"))
}

#[track_caller]
fn assert_same_spec(dry: serde_json::Value, ran: serde_json::Value) {
    if dry != ran {
        let (dry, ran) = (
            serde_json::to_string_pretty(&dry).unwrap(),
            serde_json::to_string_pretty(&ran).unwrap(),
        );
        let first = dry
            .lines()
            .zip(ran.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "--dry-run printed a different spec from the one that ran; first difference at line {first}:\n\
             dry run: {}\nran:     {}\n\nfull dry run:\n{dry}\n\nfull spec that ran:\n{ran}",
            dry.lines().nth(first).unwrap_or(""),
            ran.lines().nth(first).unwrap_or("")
        );
    }
}

#[test]
fn an_ad_hoc_dry_run_prints_the_spec_that_runs() {
    for mode in MODES {
        let registry = TestRegistry::plain();
        registry.push(
            "test/img:1",
            &busybox_image().user("app").workdir("/home/app").build(),
        );
        let image = registry.image("test/img:1");
        let dstack = Dstack::new(mode);
        dstack.run(&["pull", "-q", &image]).assert_success();
        let volume = format!("{}:/data:ro", dstack.home().display());
        let args = [
            "run",
            "docker",
            &image,
            "-v",
            &volume,
            "-e",
            "GREETING=hello",
            "-p",
            "2",
            "--pids-limit",
            "100",
            "--memory",
            "256MB",
            "-c",
            "id",
        ];
        let dry = dry_run_spec(&dstack, &args);
        let ran = spec_that_ran(dstack, &args);
        let dry_id = dry["hostname"].as_str().unwrap().to_string();
        let ran_id = ran["hostname"].as_str().unwrap().to_string();
        let run_name = env_value(&ran, "RUN_NAME").to_string();
        assert_eq!(
            ran["process"]["user"]["uid"], 1000,
            "{mode:?}: the image's user"
        );
        assert_eq!(ran["linux"]["resources"]["pids"]["limit"], 100, "{mode:?}");
        assert!(
            ran["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["destination"] == "/data"),
            "{mode:?}: the volume"
        );
        assert_same_spec(
            normalized(&dry, &[(&dry_id, "<id>")]),
            normalized(&ran, &[(&ran_id, "<id>"), (&run_name, "<run-name>")]),
        );
    }
}

#[test]
fn a_workflows_dry_run_prints_the_spec_that_runs() {
    let registry = busybox_registry();
    for mode in MODES {
        let dstack = Dstack::new(mode);
        let workflow = busybox_workflow(
            &registry,
            "hello",
            "    ports: 1\n    volumes: [\"src:/src:ro\"]\n    env:\n      - GREETING=hello\n    resources:\n      memory: 256MB\n    commands:\n      - echo $GREETING\n",
        );
        dstack.write_home_file("project/.dstack/workflows/hello.yaml", workflow);
        dstack.write_home_file("project/src/main.py", "print(1)\n");
        let project = dstack.home().join("project");
        let dstack = dstack.current_dir(&project);
        let args = ["run", "hello"];
        let dry = dry_run_spec(&dstack, &args);
        let ran = spec_that_ran(dstack, &args);
        let run_name = ran["hostname"].as_str().unwrap().to_string();
        let job_id = env_value(&ran, "JOB_ID").to_string();
        assert!(!Path::new(&run_name).is_absolute());
        assert_same_spec(
            normalized(&dry, &[]),
            normalized(&ran, &[(&job_id, "<job-id>"), (&run_name, "<run-name>")]),
        );
    }
}

/// The job's user as `-u` and `--userns keep-id` choose it (keep-id rootless: its own user namespace and
/// maps) is planned as it runs.
#[test]
fn a_chosen_users_dry_run_prints_the_spec_that_runs() {
    for mode in [RunAs::Root, RunAs::Rootless, RunAs::RootlessNoSubid] {
        let registry = TestRegistry::plain();
        registry.push("test/img:1", &busybox_image().build());
        let image = registry.image("test/img:1");
        let dstack = Dstack::new(mode);
        dstack.run(&["pull", "-q", &image]).assert_success();
        let numeric = ["run", "docker", &image, "-u", "app:staff", "-c", "id"];
        let keep_id = ["run", "docker", &image, "--userns", "keep-id", "-c", "id"];
        // Without a subordinate range only the user's own id exists: `-u` has nothing else to map.
        let cases: &[&[&str]] = if mode == RunAs::RootlessNoSubid {
            &[&keep_id]
        } else {
            &[&numeric, &keep_id]
        };
        for args in cases {
            let dry = dry_run_spec(&dstack, args);
            let out_file = dstack.home().join("spec-that-ran.json");
            let mut command = dstack.command(args);
            command.env("DSTACK_SPEC_OUT", &out_file);
            Output::of(command).assert_success();
            let ran: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
            let dry_id = dry["hostname"].as_str().unwrap().to_string();
            let ran_id = ran["hostname"].as_str().unwrap().to_string();
            let run_name = env_value(&ran, "RUN_NAME").to_string();
            assert_same_spec(
                normalized(&dry, &[(&dry_id, "<id>")]),
                normalized(&ran, &[(&ran_id, "<id>"), (&run_name, "<run-name>")]),
            );
        }
    }
}
