//! Typed messages between the supervisor and the container's init, one JSON datagram each over a
//! `SOCK_SEQPACKET` socket pair, so a failure inside the container comes back as words. Each end sends one
//! direction's messages and receives the other's ([`SupervisorEnd`], [`InitEnd`]); a message its receiver
//! does not expect where it comes is an error that names it ([`ChannelError::Unexpected`]).

use std::marker::PhantomData;
use std::os::fd::{AsRawFd, OwnedFd};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Supervisor to init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToInit {
    /// The cgroup (and id maps, network, runtime hooks) are in place, go on. `state` is the runtime-spec
    /// state JSON for the container's own hooks, when it has any.
    Go { state: Option<String> },
}

/// Init (and the job, before its exec) to the supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromInit {
    /// The spec's mounts are in place (before pivot_root); waiting for `Go` while the runtime's hooks run
    /// (`prestart`, `createRuntime`).
    Mounted,
    /// The job: set up and waiting at the start gate for `start` (the OCI `created` state).
    Created,
    /// The root filesystem is mounted, with this driver (and why, when it is a fallback).
    Rootfs {
        driver: String,
        fallback_reason: Option<String>,
    },
    /// The job has exec'd.
    Started,
    /// Set-up or exec failed; the message names the cause.
    Failed { message: String, exit_code: i32 },
    /// The job ended, with its code (128+N for signal N) and signal.
    Exited { code: i32, signal: Option<i32> },
}

impl FromInit {
    /// The message's name, for an error that says which one came unexpected.
    pub fn name(&self) -> &'static str {
        match self {
            FromInit::Mounted => "Mounted",
            FromInit::Created => "Created",
            FromInit::Rootfs { .. } => "Rootfs",
            FromInit::Started => "Started",
            FromInit::Failed { .. } => "Failed",
            FromInit::Exited { .. } => "Exited",
        }
    }
}

/// What can go wrong on the channel.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("a message that does not parse: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("init sent {got} while {during}")]
    Unexpected {
        got: &'static str,
        during: &'static str,
    },
}

impl ChannelError {
    /// `message` came while the receiver was doing `during` and expects none such.
    pub(crate) fn unexpected(message: &FromInit, during: &'static str) -> ChannelError {
        ChannelError::Unexpected {
            got: message.name(),
            during,
        }
    }
}

/// One end of the socket pair: sends `Out` messages, receives `In` ones.
pub(crate) struct End<Out, In> {
    fd: OwnedFd,
    directions: PhantomData<fn(Out) -> In>,
}

/// The supervisor's end (the `create` or `start` caller's).
pub(crate) type SupervisorEnd = End<ToInit, FromInit>;
/// Init's end (inherited by the job until its exec).
pub(crate) type InitEnd = End<FromInit, ToInit>;

/// A connected pair, both ends close-on-exec.
pub(crate) fn pair() -> nix::Result<(SupervisorEnd, InitEnd)> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    Ok((End::new(a), End::new(b)))
}

impl<Out: Serialize, In: DeserializeOwned> End<Out, In> {
    fn new(fd: OwnedFd) -> End<Out, In> {
        End {
            fd,
            directions: PhantomData,
        }
    }

    pub(crate) fn send(&self, msg: &Out) -> Result<(), ChannelError> {
        let bytes = serde_json::to_vec(msg)?;
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
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(())
    }

    /// The next message, or `None` when the peer closed its end.
    pub(crate) fn recv(&self) -> Result<Option<In>, ChannelError> {
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
        Ok(Some(serde_json::from_slice(&buf[..n])?))
    }

    fn recv_into(&self, buf: &mut [u8], flags: libc::c_int) -> std::io::Result<usize> {
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
                return Err(err);
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
        let (supervisor, init) = pair().unwrap();
        let msg = FromInit::Failed {
            message: "exec \"foo\": command not found".into(),
            exit_code: 127,
        };
        init.send(&msg).unwrap();
        init.send(&FromInit::Started).unwrap();
        assert_eq!(supervisor.recv().unwrap(), Some(msg));
        assert_eq!(supervisor.recv().unwrap(), Some(FromInit::Started));
        supervisor.send(&ToInit::Go { state: None }).unwrap();
        assert_eq!(init.recv().unwrap(), Some(ToInit::Go { state: None }));
        drop(init);
        assert_eq!(supervisor.recv().unwrap(), None);
    }

    #[test]
    fn a_message_of_the_other_direction_is_refused() {
        let (supervisor, init) = pair().unwrap();
        // Init's end cannot send `Go`; a stray one written raw does not parse as init's message.
        let raw: End<ToInit, ToInit> = End::new(init.fd);
        raw.send(&ToInit::Go { state: None }).unwrap();
        assert!(matches!(supervisor.recv(), Err(ChannelError::Decode(_))));
    }

    #[test]
    fn an_unexpected_message_is_named() {
        let e = ChannelError::unexpected(&FromInit::Mounted, "starting the job");
        assert_eq!(e.to_string(), "init sent Mounted while starting the job");
    }
}
