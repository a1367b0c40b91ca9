//! Numbers out of range on `dstack run docker`, typed as a user would: a negative one is a range error
//! naming the flag (not "unexpected argument '-1'"), refused before anything is pulled or run.

use test_support::*;

fn refused(args: &[&str]) -> Output {
    let dstack = Dstack::rootless();
    let mut full = vec!["run", "docker", "busybox"];
    full.extend_from_slice(args);
    let out = dstack.run(&full);
    out.assert_failure();
    assert!(!out.stderr.contains("unexpected argument"), "{out}");
    assert!(
        !out.stderr.contains("pulling"),
        "refused before pulling: {out}"
    );
    out
}

#[test]
fn negative_limits_and_counts_are_range_errors() {
    refused(&["--memory", "-1"])
        .assert_stderr_contains("invalid value '-1' for '--memory <SIZE>'")
        .assert_stderr_contains("cannot be negative");
    refused(&["--cpu", "-1"])
        .assert_stderr_contains("invalid value '-1' for '--cpu <CORES>'")
        .assert_stderr_contains("above 0");
    refused(&["-p", "-1"]).assert_stderr_contains("-1 is not in 0..=65535");
    refused(&["--shm-size", "-64MB"]).assert_stderr_contains("cannot be negative");
}

#[test]
fn a_pids_limit_below_minus_one_is_refused_and_minus_one_or_zero_mean_none() {
    refused(&["--pids-limit", "-5"])
        .assert_stderr_contains("invalid value '-5' for '--pids-limit <N>'")
        .assert_stderr_contains("-1 (or 0) for no limit");
    let help = Dstack::rootless().run(&["run", "docker", "busybox", "--help"]);
    help.assert_success();
    assert!(help.stdout.contains("`-1` or `0`: no limit"), "{help}");
}

#[test]
fn an_environment_variable_needs_a_name() {
    refused(&["-e", "=x"]).assert_stderr_contains("a variable needs a name");
}
