//! Host ports for `ports: N`: listening sockets on all of the host's addresses (dual-stack `[::]`, or
//! `0.0.0.0` where IPv6 is off). The socket that proves a port free is the one the forwarder accepts on,
//! so no other process can take the port in between.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::NetError;

const BACKLOG: i32 = 4096;

fn setsockopt_int(fd: &OwnedFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: setsockopt reads one int from a valid pointer.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as u32,
        )
    };
    if r != 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn tcp_socket(family: i32) -> io::Result<OwnedFd> {
    // SAFETY: creating a socket; the descriptor is checked and owned below.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Binds `port` (0: the kernel picks) on all addresses; listens when `listen`. Returns the socket and port.
fn bind_any(port: u16, listen: bool) -> io::Result<(OwnedFd, u16)> {
    let (fd, bound) = match tcp_socket(libc::AF_INET6) {
        Ok(fd) => {
            setsockopt_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0)?;
            if listen {
                setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
            }
            // SAFETY: sockaddr_in6 is plain data; zero is the unspecified address.
            let mut addr: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            addr.sin6_family = libc::AF_INET6 as u16;
            addr.sin6_port = port.to_be();
            // SAFETY: bind with a valid sockaddr_in6 of the given size.
            let r = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&addr as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of_val(&addr) as u32,
                )
            };
            (fd, r)
        }
        Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
            let fd = tcp_socket(libc::AF_INET)?;
            if listen {
                setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
            }
            // SAFETY: sockaddr_in is plain data; zero is INADDR_ANY.
            let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            addr.sin_family = libc::AF_INET as u16;
            addr.sin_port = port.to_be();
            // SAFETY: bind with a valid sockaddr_in of the given size.
            let r = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&addr as *const libc::sockaddr_in).cast(),
                    std::mem::size_of_val(&addr) as u32,
                )
            };
            (fd, r)
        }
        Err(e) => return Err(e),
    };
    if bound != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: listen on a bound socket we own.
    if listen && unsafe { libc::listen(fd.as_raw_fd(), BACKLOG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let port = local_port(&fd)?;
    Ok((fd, port))
}

fn local_port(fd: &OwnedFd) -> io::Result<u16> {
    // SAFETY: sockaddr_storage is plain data, large enough for any address getsockname returns.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of_val(&storage) as u32;
    // SAFETY: getsockname writes at most `len` bytes into storage.
    if unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    // The port is at the same offset (2) in sockaddr_in and sockaddr_in6, in network order.
    // SAFETY: storage was filled by getsockname with an AF_INET or AF_INET6 address.
    let port = unsafe {
        (*(&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()).sin_port
    };
    Ok(u16::from_be(port))
}

fn port_error(port: u16, e: io::Error) -> NetError {
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) => NetError::PortInUse { port },
        Some(libc::EACCES) => NetError::PortPrivileged { port },
        _ => NetError::Port { port, reason: e },
    }
}

/// Listening sockets for the forwarder, one per requested port (0: any free one), distinct ports.
pub(super) fn listen(requested: &[u16]) -> Result<Vec<(u16, OwnedFd)>, NetError> {
    let mut out: Vec<(u16, OwnedFd)> = Vec::new();
    for &want in requested {
        let (fd, port) = bind_any(want, true).map_err(|e| port_error(want, e))?;
        out.push((port, fd));
    }
    Ok(out)
}

/// Free port numbers the job binds itself (the host network): bound all at once to be distinct, then
/// released.
pub(super) fn pick_free(requested: &[u16]) -> Result<Vec<u16>, NetError> {
    let mut held = Vec::new();
    for &want in requested {
        held.push(bind_any(want, false).map_err(|e| port_error(want, e))?);
    }
    Ok(held.into_iter().map(|(_, p)| p).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picked_ports_are_distinct_and_a_taken_one_is_refused_in_words() {
        let l = listen(&[0, 0, 0]).unwrap();
        let mut ports: Vec<u16> = l.iter().map(|(p, _)| *p).collect();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), 3);
        assert!(ports.iter().all(|p| *p != 0));
        let err = listen(&[ports[0]]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("host port {} is already in use", ports[0])),
            "{err}"
        );
        assert!(std::net::TcpStream::connect(("127.0.0.1", ports[1])).is_ok());
        assert_eq!(pick_free(&[0, 0]).unwrap().len(), 2);
    }
}
