//! A few threads that create regular files while the tar stream is still being read: file creation, not
//! decompression, bounds unpacking (a create costs ~0.8 ms on ext4), so several run at once.
//!
//! Contents are buffered in memory up to a byte budget; the reader blocks when the budget is spent. The
//! threads are scoped: `unpack` joins them before it returns.

use std::collections::VecDeque;
use std::ffi::CString;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::Scope;

use super::fs;
use super::meta::{self, Meta, Privilege};

/// One regular file to create in an already opened directory.
pub(crate) struct FileJob {
    pub dir: Arc<OwnedFd>,
    pub name: CString,
    pub data: Vec<u8>,
    pub meta: Meta,
    /// The entry's name, for error messages.
    pub path: String,
}

#[derive(Default)]
struct State {
    queue: VecDeque<FileJob>,
    bytes_in_flight: usize,
    outstanding: usize,
    closed: bool,
    error: Option<(String, io::Error)>,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    idle: Condvar,
    budget: usize,
    privilege: Privilege,
}

/// The handle the tar reader uses; dropping it (on success or error) lets the workers exit.
pub(crate) struct Pool {
    shared: Arc<Shared>,
}

impl Pool {
    pub(crate) fn start<'scope>(
        scope: &'scope Scope<'scope, '_>,
        workers: usize,
        budget: usize,
        privilege: Privilege,
    ) -> Pool {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            idle: Condvar::new(),
            budget,
            privilege,
        });
        for _ in 0..workers.max(1) {
            let shared = Arc::clone(&shared);
            scope.spawn(move || worker(&shared));
        }
        Pool { shared }
    }

    /// Queues a file, waiting while the buffered bytes exceed the budget. Reports the first failure of any
    /// earlier job.
    pub(crate) fn submit(&self, job: FileJob) -> Result<(), (String, io::Error)> {
        let len = job.data.len();
        let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(err) = state.error.take() {
                return Err(err);
            }
            if state.bytes_in_flight == 0 || state.bytes_in_flight + len <= self.shared.budget {
                break;
            }
            state = self
                .shared
                .idle
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
        state.bytes_in_flight += len;
        state.outstanding += 1;
        state.queue.push_back(job);
        drop(state);
        self.shared.work.notify_one();
        Ok(())
    }

    /// Waits until every queued file is written.
    pub(crate) fn drain(&self) -> Result<(), (String, io::Error)> {
        let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        while state.outstanding > 0 && state.error.is_none() {
            state = self
                .shared
                .idle
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
        match state.error.take() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        state.closed = true;
        // After an error nobody will write the rest; drop it so the workers stop promptly.
        state.queue.clear();
        drop(state);
        self.shared.work.notify_all();
    }
}

fn worker(shared: &Shared) {
    loop {
        let job = {
            let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(job) = state.queue.pop_front() {
                    break job;
                }
                if state.closed {
                    return;
                }
                state = shared.work.wait(state).unwrap_or_else(|p| p.into_inner());
            }
        };
        let len = job.data.len();
        let result = write_file(&job, &shared.privilege);
        let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        state.bytes_in_flight -= len;
        state.outstanding -= 1;
        if let Err(e) = result {
            state.error.get_or_insert((job.path, e));
        }
        drop(state);
        shared.idle.notify_all();
    }
}

pub(crate) fn write_file(job: &FileJob, privilege: &Privilege) -> io::Result<()> {
    let dir = job.dir.as_fd();
    // The layer directory starts empty, so a name is taken only when the layer lists it twice (or reaches it
    // twice through a symlink): rare enough to check only on EEXIST.
    let mut file = match fs::create_file(dir, &job.name, job.meta.mode) {
        Err(e) if fs::is_exists(&e) => {
            fs::remove_any(dir, &job.name)?;
            fs::create_file(dir, &job.name, job.meta.mode)?
        }
        other => other?,
    };
    file.write_all(&job.data)?;
    meta::apply_to_file(file.as_fd(), &job.meta, privilege, &job.path)
}
