//! The run store as `dstack run`, `ps`, `stop` and `rm` use it.

use std::collections::BTreeSet;

use super::record::ArtifactRecord;
use super::*;

fn template() -> RunRecord {
    RunRecord::new("", "train", "/project".into(), "busybox")
}

#[test]
fn each_run_gets_a_unique_name_a_directory_and_a_record() {
    let state = tempfile::tempdir().unwrap();
    let store = RunStore::new(state.path());
    let a = store.create(template()).unwrap();
    let b = store.create(template()).unwrap();
    assert_ne!(a.name(), b.name());
    assert!(
        a.name().ends_with("-1") && b.name().ends_with("-2"),
        "{} {}",
        a.name(),
        b.name()
    );
    let view = store.get(a.name()).unwrap();
    assert!(view.live, "the creator holds the run's lock");
    assert_eq!(view.record.status, Status::Submitted);
    assert_eq!(view.record.workflow, "train");
    assert_eq!(view.record.supervisor_pid, Some(std::process::id()));
}

#[test]
fn the_counter_goes_on_from_an_old_store_and_survives_damage() {
    let state = tempfile::tempdir().unwrap();
    let runs = state.path().join("runs");
    fs::create_dir_all(&runs).unwrap();
    // A state root from before the counter moved into the lock file.
    fs::write(runs.join(".counter"), "41").unwrap();
    let store = RunStore::new(state.path());
    let a = store.create(template()).unwrap();
    assert!(a.name().ends_with("-42"), "{}", a.name());
    let b = store.create(template()).unwrap();
    assert!(b.name().ends_with("-43"), "{}", b.name());
    // Damaged (a crash mid-write): numbering starts again, and goes on from there.
    fs::write(runs.join(".lock"), "garbage").unwrap();
    let c = store.create(template()).unwrap();
    let d = store.create(template()).unwrap();
    assert!(
        c.name().ends_with("-1") && d.name().ends_with("-2"),
        "{} {}",
        c.name(),
        d.name()
    );
}

#[test]
fn runs_created_at_once_never_clash() {
    let state = tempfile::tempdir().unwrap();
    let names: BTreeSet<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let store = RunStore::new(state.path());
                    let run = store.create(template()).unwrap();
                    run.name().to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(names.len(), 8);
    let numbers: BTreeSet<String> = names
        .iter()
        .map(|n| n.rsplit('-').next().unwrap().to_string())
        .collect();
    assert_eq!(numbers.len(), 8, "{names:?}");
}

#[test]
fn statuses_are_recorded_forward_only() {
    let state = tempfile::tempdir().unwrap();
    let store = RunStore::new(state.path());
    let mut run = store.create(template()).unwrap();
    run.set_status(Status::Pulling).unwrap();
    run.set_status(Status::Running).unwrap();
    let view = store.get(run.name()).unwrap();
    assert_eq!(view.record.status, Status::Running);
    assert!(view.record.started_at.is_some());
    run.set_status(Status::Pulling).unwrap();
    assert_eq!(
        store.get(run.name()).unwrap().record.status,
        Status::Running
    );
    run.finish(Status::Failed, Some(3), Some("exit 3")).unwrap();
    run.finish(Status::Done, Some(0), None).unwrap();
    let view = store.get(run.name()).unwrap();
    assert_eq!(
        (view.record.status, view.record.exit_code),
        (Status::Failed, Some(3))
    );
    assert!(!view.live || view.record.status.is_finished());
    assert!(view.record.finished_at.is_some());
}

#[test]
fn a_run_whose_supervisor_died_is_aborted_not_running_forever() {
    let state = tempfile::tempdir().unwrap();
    let store = RunStore::new(state.path());
    let mut run = store.create(template()).unwrap();
    run.set_status(Status::Running).unwrap();
    let name = run.name().to_string();
    drop(run); // the lock goes with the supervisor
    let view = store.get(&name).unwrap();
    assert!(!view.live);
    assert_eq!(view.record.status, Status::Aborted);
    assert!(
        view.record
            .message
            .as_deref()
            .unwrap()
            .contains("supervisor ended")
    );
    // And it is recorded, not only shown.
    let again = read_record(&view.dir).unwrap().unwrap();
    assert_eq!(again.status, Status::Aborted);
}

#[test]
fn a_stop_request_decides_how_an_orphaned_run_ends() {
    let state = tempfile::tempdir().unwrap();
    let store = RunStore::new(state.path());
    let mut run = store.create(template()).unwrap();
    run.set_status(Status::Pulling).unwrap();
    // No pids to signal: only the request is recorded.
    run.update(|r| r.supervisor_pid = None).unwrap();
    assert!(
        store
            .request_stop(run.name(), StopRequest::Graceful)
            .unwrap()
    );
    assert_eq!(run.stop_request(), Some(StopRequest::Graceful));
    let name = run.name().to_string();
    drop(run);
    assert_eq!(store.get(&name).unwrap().record.status, Status::Stopped);
    assert!(
        !store.request_stop(&name, StopRequest::Abort).unwrap(),
        "already ended"
    );
}

#[test]
fn orphaned_runs_keep_the_artifacts_they_wrote() {
    let state = tempfile::tempdir().unwrap();
    let store = RunStore::new(state.path());
    let mut run = store.create(template()).unwrap();
    run.update(|r| {
        r.artifacts = vec![ArtifactRecord {
            path: "output".into(),
            mount: false,
            from_project_copy: Some("output".into()),
        }]
    })
    .unwrap();
    std::fs::create_dir_all(run.project_copy_dir().join("output")).unwrap();
    std::fs::write(run.project_copy_dir().join("output/partial.txt"), "half").unwrap();
    let name = run.name().to_string();
    drop(run);
    let view = store.get(&name).unwrap();
    assert_eq!(
        std::fs::read_to_string(view.artifacts_dir().join("output/partial.txt")).unwrap(),
        "half"
    );
    assert!(
        !view.dir.join("workflow").exists(),
        "the project copy is removed"
    );
}

#[test]
fn rm_removes_finished_runs_and_refuses_live_ones() {
    let state = tempfile::tempdir().unwrap();
    let store = RunStore::new(state.path());
    let live = store.create(template()).unwrap();
    let err = store.remove(live.name()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "run `{0}` is still going: stop it first with `dstack stop {0}`",
            live.name()
        )
    );
    let mut done = store.create(template()).unwrap();
    done.finish(Status::Done, Some(0), None).unwrap();
    let name = done.name().to_string();
    drop(done);
    store.remove(&name).unwrap();
    assert!(store.get(&name).is_err());
    assert_eq!(store.list().unwrap().len(), 1);
}

#[test]
fn unknown_names_suggest_a_close_one() {
    let state = tempfile::tempdir().unwrap();
    let store = RunStore::new(state.path());
    let run = store.create(template()).unwrap();
    let typo = run.name().replacen('-', "", 1);
    let err = store.get(&typo).unwrap_err().to_string();
    assert!(
        err.contains(&format!("did you mean `{}`?", run.name())),
        "{err}"
    );
    let err = store.get("../../etc-passwd-1").unwrap_err().to_string();
    assert!(
        err.starts_with("no run named `../../etc-passwd-1`"),
        "{err}"
    );
}

#[test]
fn listing_is_oldest_first_and_skips_strangers() {
    let state = tempfile::tempdir().unwrap();
    let store = RunStore::new(state.path());
    let first = store.create(template()).unwrap();
    let second = store.create(template()).unwrap();
    std::fs::create_dir_all(state.path().join("runs/not-a-run")).unwrap();
    std::fs::create_dir_all(state.path().join("runs/half-made-9")).unwrap();
    let names: Vec<String> = store
        .list()
        .unwrap()
        .into_iter()
        .map(|v| v.record.name)
        .collect();
    assert_eq!(names, [first.name(), second.name()]);
}

#[test]
fn a_run_that_never_started_can_be_discarded() {
    let state = tempfile::tempdir().unwrap();
    let store = RunStore::new(state.path());
    let run = store.create(template()).unwrap();
    let name = run.name().to_string();
    run.discard().unwrap();
    assert!(store.get(&name).is_err());
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn a_second_state_directory_is_searched_and_its_names_avoided() {
    let (home, shared) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let local = RunStore::new(home.path());
    let first = local.create(template()).unwrap();
    let slurm_store = RunStore::new(shared.path()).also(home.path());
    let second = slurm_store.create(template()).unwrap();
    assert_ne!(
        first.name(),
        second.name(),
        "the other directory's name is skipped"
    );
    assert!(shared.path().join("runs").join(second.name()).is_dir());
    let both = RunStore::new(home.path()).also(shared.path());
    let names: Vec<String> = both
        .list()
        .unwrap()
        .into_iter()
        .map(|v| v.record.name)
        .collect();
    assert_eq!(names, [first.name(), second.name()]);
    assert!(both.get(second.name()).unwrap().live);
    drop(second);
    let name = names[1].clone();
    both.remove(&name).unwrap();
    assert!(!shared.path().join("runs").join(&name).exists());
    assert!(
        std::fs::read_dir(shared.path().join("runs"))
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with(".removing")),
        "removed in its own directory"
    );
}

#[test]
fn a_requeued_run_is_taken_over_and_starts_again_as_submitted() {
    let state = tempfile::tempdir().unwrap();
    let store = RunStore::new(state.path());
    let mut run = store.create(template()).unwrap();
    let name = run.name().to_string();
    run.update(|r| {
        r.slurm = Some(SlurmRecord {
            job_id: "7".into(),
            partition: None,
            login: None,
            node: None,
            restarts: 0,
            state: None,
        })
    })
    .unwrap();
    run.set_status(Status::Running).unwrap();
    run.update(|r| r.ports = vec![8080]).unwrap();
    // The submitter lets go; the job on its node takes over.
    drop(run);
    let mut job = store.attach(&name).unwrap();
    assert!(store.get(&name).unwrap().live, "the job holds the lock");
    job.requeued(1).unwrap();
    let record = job.record().clone();
    assert_eq!(record.status, Status::Submitted);
    assert!(record.ports.is_empty() && record.started_at.is_none());
    assert_eq!(record.slurm.unwrap().restarts, 1);
    job.set_status(Status::Running).unwrap();
    job.finish(Status::Done, Some(0), None).unwrap();
    job.requeued(2).unwrap();
    assert_eq!(
        job.record().status,
        Status::Done,
        "an ended run stays ended"
    );
    assert!(store.attach("no-such-run-1").is_err());
}
