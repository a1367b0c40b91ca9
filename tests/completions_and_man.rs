//! `dstack completions SHELL`, `dstack man DIR` and the same for `dstack-oci`, run as a user installing them
//! would: no state root is needed, every command is in the scripts, and the pages render.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use test_support::*;

const OCI_BIN: &str = env!("CARGO_BIN_EXE_dstack-oci");

const DSTACK_COMMANDS: &[&str] = &[
    "run",
    "pull",
    "images",
    "rmi",
    "prune",
    "ps",
    "logs",
    "stop",
    "rm",
    "artifacts",
    "secrets",
    "info",
];
const OCI_COMMANDS: &[&str] = &[
    "create", "start", "state", "kill", "delete", "run", "list", "exec", "features", "spec",
];

/// `dstack ARGS` or `dstack-oci ARGS` as an ordinary user whose home holds no dstack state.
fn run(oci: bool, args: &[&str]) -> Output {
    let dstack = Dstack::rootless();
    let state_before = listing(&dstack.state_root());
    let out = if oci {
        dstack.run_program(OCI_BIN, args)
    } else {
        dstack.run(args)
    };
    out.assert_success();
    assert_eq!(
        listing(&dstack.state_root()),
        state_before,
        "completions and man pages make no state"
    );
    out
}

fn listing(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn completion_scripts_name_every_command_in_each_shell() {
    for (oci, name, commands) in [
        (false, "dstack", DSTACK_COMMANDS),
        (true, "dstack-oci", OCI_COMMANDS),
    ] {
        for shell in ["bash", "zsh", "fish"] {
            let script = run(oci, &["completions", shell]).stdout;
            for command in commands {
                assert!(
                    script.contains(command),
                    "{name} completions {shell}: no {command}"
                );
            }
        }
    }
}

#[test]
fn bash_loads_the_completion_script() {
    let script = run(false, &["completions", "bash"]).stdout;
    let out = Command::new("bash")
        .args(["-c", "eval \"$1\" && complete -p dstack", "bash", &script])
        .output()
        .expect("run bash");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("dstack"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_unknown_shell_is_refused_with_the_choices() {
    let out = Dstack::rootless().run(&["completions", "tcsh"]);
    out.assert_failure()
        .assert_stderr_contains("invalid value 'tcsh'")
        .assert_stderr_contains("bash");
}

fn assert_renders(page: &Path) {
    let roff = std::fs::read_to_string(page).unwrap();
    assert!(roff.lines().any(|l| l.starts_with(".TH ")), "{roff}");
    if Path::new("/usr/bin/man").exists() {
        let out = Command::new("/usr/bin/man")
            .arg("-l")
            .arg(page)
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .expect("run man -l");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("NAME") && text.contains("SYNOPSIS"), "{text}");
    }
}

#[test]
fn man_pages_are_written_one_per_command_and_render() {
    let dir = tempfile::tempdir().unwrap();
    // The user must be able to write there.
    let out_dir = dir.path().join("man1");
    std::fs::create_dir(&out_dir).unwrap();
    std::fs::set_permissions(&out_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let target = out_dir.to_str().unwrap();
    run(false, &["man", target]).assert_stderr_contains("man pages written to");
    run(true, &["man", target]);
    for page in ["dstack.1", "dstack-oci.1"] {
        assert_renders(&out_dir.join(page));
    }
    for command in DSTACK_COMMANDS {
        assert_renders(&out_dir.join(format!("dstack-{command}.1")));
    }
    for command in OCI_COMMANDS {
        assert_renders(&out_dir.join(format!("dstack-oci-{command}.1")));
    }
    // Nested commands get their own page; hidden ones get none.
    assert!(out_dir.join("dstack-prune-images.1").exists());
    assert!(!out_dir.join("dstack-__slurm-job.1").exists());
    let run_page = std::fs::read_to_string(out_dir.join("dstack-run.1")).unwrap();
    assert!(run_page.contains("dry\\-run"), "options are documented");
}

#[test]
fn man_into_an_unwritable_place_is_an_error_saying_where() {
    let out = Dstack::rootless().run(&["man", "/proc/dstack-man"]);
    out.assert_failure()
        .assert_stderr_contains("cannot write man pages to /proc/dstack-man");
}
