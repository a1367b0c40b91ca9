//! Typed messages between the supervisor and the container's init, one JSON datagram each over a
//! `SOCK_SEQPACKET` socket pair, so a failure inside the container comes back as words.

use std::os::fd::{AsRawFd, OwnedFd};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Supervisor to init: the cgroup (and id maps, network, runtime hooks) are in place, go on. `state` is
    /// the runtime-spec state JSON for the container's own hooks, when it has any.
    Go { state: Option<String> },
    /// Init: the spec's mounts are in place (before pivot_root); waiting for `Go` while the runtime's hooks
    /// run (`prestart`, `createRuntime`).
    Mounted,
    /// The job: set up and waiting at the start gate for `start` (the OCI `created` state).
    Created,
    /// Init: the root filesystem is mounted, with this driver (and why, when it is a fallback).
    Rootfs {
        driver: String,
        fallback_reason: Option<String>,
    },
    /// Init: the job has exec'd.
    Started,
    /// Init: set-up or exec failed; the message names the cause.
    Failed { message: String, exit_code: i32 },
    /// Init: the job ended, with its code (128+N for signal N) and signal.
    Exited { code: i32, signal: Option<i32> },
}

pub(crate) struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// A connected pair: (supervisor's end, init's end), both close-on-exec.
    pub(crate) fn pair() -> nix::Result<(Channel, Channel)> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    pub(crate) fn send(&self, msg: &Message) -> Result<(), String> {
        let bytes = serde_json::to_vec(msg).map_err(|e| e.to_string())?;
        // SAFETY: send reads `bytes.len()` bytes from `bytes`; MSG_NOSIGNAL turns a closed peer into EPIPE.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        Ok(())
    }

    /// The next message, or `None` when the peer closed its end.
    pub(crate) fn recv(&self) -> Result<Option<Message>, String> {
        // Its length first (MSG_TRUNC gives a packet's whole length), then exactly that: messages are
        // small, and a large zeroed buffer costs page faults in a process just forked.
        let size = self.recv_into(&mut [], libc::MSG_PEEK | libc::MSG_TRUNC)?;
        if size == 0 {
            return Ok(None);
        }
        let mut buf = vec![0u8; size];
        let n = self.recv_into(&mut buf, 0)?;
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_slice(&buf[..n])
            .map(Some)
            .map_err(|e| e.to_string())
    }

    fn recv_into(&self, buf: &mut [u8], flags: libc::c_int) -> Result<usize, String> {
        loop {
            // SAFETY: recv writes at most `buf.len()` bytes into `buf`.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    flags,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINTR) {
                return Err(err.to_string());
            }
        }
    }

    pub(crate) fn raw(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_cross_the_socket_pair_whole() {
        let (a, b) = Channel::pair().unwrap();
        let msg = Message::Failed {
            message: "exec \"foo\": command not found".into(),
            exit_code: 127,
        };
        b.send(&msg).unwrap();
        b.send(&Message::Started).unwrap();
        assert_eq!(a.recv().unwrap(), Some(msg));
        assert_eq!(a.recv().unwrap(), Some(Message::Started));
        drop(b);
        assert_eq!(a.recv().unwrap(), None);
    }
}
