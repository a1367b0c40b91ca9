//! The port forwarder, in the supervisor: for each published port a thread accepts on the host's
//! listening socket and, from inside the job's network namespace (it `setns`es there once), connects to
//! `127.0.0.1:PORT`; each connection then gets two threads that `splice` bytes both ways through a
//! pipe (zero copy). End of stream in one direction becomes a write shutdown on the other side
//! (half-close); an error shuts both sockets. As root with nf_tables it only sees what the kernel's DNAT
//! does not take (IPv6 clients). The same code serves root and rootless runs: the rootless
//! supervisor owns the job's namespace through its user namespace, so no `/dev/net/tun` is needed.
//! The threads start only after the container is started (nothing may run at clone time).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use super::netns;

const STACK: usize = 128 * 1024;
const CHUNK: usize = 1 << 20;

type Open = Mutex<HashMap<u64, [Arc<OwnedFd>; 2]>>;

/// Running forwarders; dropping it closes the listeners, joins their threads and shuts the connections.
pub(super) struct Forwarder {
    listeners: Vec<Arc<OwnedFd>>,
    acceptors: Vec<JoinHandle<()>>,
    open: Arc<Open>,
    stop: Arc<AtomicBool>,
}

fn shutdown(fd: RawFd, how: i32) {
    // SAFETY: shutdown on a socket descriptor that its owner keeps open for the duration of the call.
    unsafe { libc::shutdown(fd, how) };
}

fn cvt(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Closes `fd` with a reset, so the client sees a refused connection rather than an empty reply.
fn reset(fd: OwnedFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads a valid linger struct; fd is open (closed when `fd` drops right after).
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as u32,
        )
    };
}

fn nodelay(fd: &OwnedFd) {
    let one: i32 = 1;
    // SAFETY: setsockopt reads one int from a valid pointer.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const i32).cast(),
            4,
        )
    };
}

impl Forwarder {
    /// Starts one accepting thread per `(port, listener)`, each inside the namespace `netns`.
    pub(super) fn start(listeners: Vec<(u16, OwnedFd)>, netns: &OwnedFd) -> io::Result<Forwarder> {
        let mut fwd = Forwarder {
            listeners: Vec::new(),
            acceptors: Vec::new(),
            open: Arc::new(Mutex::new(HashMap::new())),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let next = Arc::new(AtomicU64::new(0));
        for (port, listener) in listeners {
            let listener = Arc::new(listener);
            fwd.listeners.push(listener.clone());
            let ns = netns.try_clone()?;
            let (ready_tx, ready_rx) = mpsc::sync_channel(1);
            let (open, stop, next) = (fwd.open.clone(), fwd.stop.clone(), next.clone());
            let handle = std::thread::Builder::new()
                .name(format!("dstack-fwd-{port}"))
                .stack_size(STACK)
                .spawn(move || {
                    // A splice into a socket its peer closed raises SIGPIPE, which kills a process that
                    // keeps the default action (dstack does, for `| head`); blocked here, it stays blocked
                    // in every connection thread this one starts.
                    block_sigpipe();
                    let entered = netns::enter(ns.as_fd());
                    let ok = entered.is_ok();
                    let _ = ready_tx.send(entered);
                    if ok {
                        accept_loop(&listener, port, &open, &stop, &next);
                    }
                })?;
            fwd.acceptors.push(handle);
            ready_rx
                .recv()
                .unwrap_or_else(|_| Err(io::Error::other("a forwarding thread ended at start")))?;
        }
        Ok(fwd)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for l in &self.listeners {
            // Wakes the thread blocked in accept() (it then returns EINVAL).
            shutdown(l.as_raw_fd(), libc::SHUT_RDWR);
        }
        for h in self.acceptors.drain(..) {
            let _ = h.join();
        }
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        for pair in open.values() {
            for fd in pair {
                shutdown(fd.as_raw_fd(), libc::SHUT_RDWR);
            }
        }
    }
}

fn block_sigpipe() {
    // SAFETY: an initialised signal set given to pthread_sigmask for the calling thread only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

fn accept_loop(
    listener: &OwnedFd,
    port: u16,
    open: &Arc<Open>,
    stop: &AtomicBool,
    next: &AtomicU64,
) {
    loop {
        // SAFETY: accept4 on our listening socket; null address pointers are allowed.
        let fd = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if stop.load(Ordering::SeqCst) {
            if fd >= 0 {
                // SAFETY: a fresh descriptor from accept4, closed at once.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
            return;
        }
        if fd < 0 {
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR | libc::ECONNABORTED | libc::EPROTO) => continue,
                Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                _ => return,
            }
        }
        // SAFETY: a fresh descriptor from accept4 that nothing else owns.
        let client = unsafe { OwnedFd::from_raw_fd(fd) };
        // This thread is in the job's namespace: the new socket belongs there.
        // SAFETY: creating a socket; the descriptor is checked and owned below.
        let up = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if up < 0 {
            reset(client);
            continue;
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let up = unsafe { OwnedFd::from_raw_fd(up) };
        let id = next.fetch_add(1, Ordering::Relaxed);
        let open = open.clone();
        let spawned = std::thread::Builder::new()
            .name("dstack-conn".into())
            .stack_size(STACK)
            .spawn(move || connection(client, up, port, id, &open));
        if let Err(e) = spawned {
            tracing::warn!("port {port}: cannot start a connection thread: {e}");
        }
    }
}

fn connect_loopback(fd: &OwnedFd, port: u16) -> io::Result<()> {
    // SAFETY: sockaddr_in is plain data; filled in below.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    addr.sin_family = libc::AF_INET as u16;
    addr.sin_port = port.to_be();
    addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
    loop {
        // SAFETY: connect with a valid sockaddr_in of the given size.
        let r = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of_val(&addr) as u32,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn connection(client: OwnedFd, up: OwnedFd, port: u16, id: u64, open: &Open) {
    if let Err(e) = connect_loopback(&up, port) {
        tracing::debug!("port {port}: the job does not accept: {e}");
        reset(client);
        return;
    }
    nodelay(&client);
    nodelay(&up);
    let (client, up) = (Arc::new(client), Arc::new(up));
    open.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, [client.clone(), up.clone()]);
    let (c2, u2) = (client.clone(), up.clone());
    let back = std::thread::Builder::new()
        .name("dstack-conn".into())
        .stack_size(STACK)
        .spawn(move || pump(&u2, &c2));
    pump(&client, &up);
    match back {
        Ok(h) => {
            let _ = h.join();
        }
        Err(_) => {
            shutdown(client.as_raw_fd(), libc::SHUT_RDWR);
            shutdown(up.as_raw_fd(), libc::SHUT_RDWR);
        }
    }
    open.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
}

/// Moves bytes from `src` to `dst` until end of stream (then half-closes `dst`) or an error (then shuts
/// both down, which also ends the other direction).
fn pump(src: &OwnedFd, dst: &OwnedFd) {
    if splice_all(src, dst).is_ok() {
        shutdown(dst.as_raw_fd(), libc::SHUT_WR);
    } else {
        shutdown(src.as_raw_fd(), libc::SHUT_RDWR);
        shutdown(dst.as_raw_fd(), libc::SHUT_RDWR);
    }
}

fn splice_all(src: &OwnedFd, dst: &OwnedFd) -> io::Result<()> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return copy_all(src, dst);
    }
    // SAFETY: both descriptors are fresh from pipe2 and owned here.
    let (pr, pw) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // A bigger pipe moves more per call; refused above the user's limit, which is fine.
    // SAFETY: fcntl with an integer argument on our pipe.
    unsafe { libc::fcntl(pw.as_raw_fd(), libc::F_SETPIPE_SZ, CHUNK as i32) };
    loop {
        // SAFETY: splice between descriptors we hold, with null offsets (sockets and pipes).
        let n = unsafe {
            libc::splice(
                src.as_raw_fd(),
                std::ptr::null_mut(),
                pw.as_raw_fd(),
                std::ptr::null_mut(),
                CHUNK,
                libc::SPLICE_F_MOVE,
            )
        };
        let n = match cvt(n) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut left = n;
        while left > 0 {
            // SAFETY: as above, draining the pipe into `dst`.
            let m = unsafe {
                libc::splice(
                    pr.as_raw_fd(),
                    std::ptr::null_mut(),
                    dst.as_raw_fd(),
                    std::ptr::null_mut(),
                    left,
                    libc::SPLICE_F_MOVE,
                )
            };
            match cvt(m) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Plain read/write, for when no pipe can be had.
fn copy_all(src: &OwnedFd, dst: &OwnedFd) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: read into a valid buffer from a descriptor we hold.
        let n =
            match cvt(unsafe { libc::read(src.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) }) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
        let mut off = 0;
        while off < n {
            // SAFETY: send from a valid slice; MSG_NOSIGNAL turns a closed peer into EPIPE.
            match cvt(unsafe {
                libc::send(
                    dst.as_raw_fd(),
                    buf[off..n].as_ptr().cast(),
                    n - off,
                    libc::MSG_NOSIGNAL,
                )
            }) {
                Ok(m) => off += m,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}
