//! Netlink's framing and socket, shared by the rtnetlink client (`netlink`) and the nf_tables batches
//! (`nfbatch`): message types and flags of `struct nlmsghdr`, the nested-attribute bit, the 4-byte
//! alignment of messages and attributes, and the socket that talks to the kernel. The socket calls make
//! no allocation: nf_tables batches are also sent from forked children of a multi-threaded process.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto,
};

pub(super) const NLMSG_ERROR: u16 = libc::NLMSG_ERROR as u16;
pub(super) const NLMSG_DONE: u16 = libc::NLMSG_DONE as u16;
pub(super) const NLM_F_REQUEST: u16 = libc::NLM_F_REQUEST as u16;
pub(super) const NLM_F_ACK: u16 = libc::NLM_F_ACK as u16;
pub(super) const NLM_F_DUMP: u16 = libc::NLM_F_DUMP as u16;
pub(super) const NLM_F_EXCL: u16 = libc::NLM_F_EXCL as u16;
pub(super) const NLM_F_CREATE: u16 = libc::NLM_F_CREATE as u16;
pub(super) const NLM_F_APPEND: u16 = libc::NLM_F_APPEND as u16;
pub(super) const NLA_F_NESTED: u16 = libc::NLA_F_NESTED as u16;

/// `n` rounded up to netlink's 4-byte alignment (`NLMSG_ALIGN`, `NLA_ALIGN`).
pub(super) fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A netlink socket of `protocol` in the calling thread's network namespace, close-on-exec.
pub(super) fn socket(protocol: SockProtocol) -> Result<OwnedFd, Errno> {
    nix::sys::socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        protocol,
    )
}

/// Sends `bytes` (one message or a batch) to the kernel (port 0).
pub(super) fn send_to_kernel(fd: BorrowedFd<'_>, bytes: &[u8]) -> Result<(), Errno> {
    sendto(
        fd.as_raw_fd(),
        bytes,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .map(drop)
}

/// Receives the next datagram into `buf` (a signal is no error); its length.
pub(super) fn receive(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<usize, Errno> {
    loop {
        match recv(fd.as_raw_fd(), buf, MsgFlags::empty()) {
            Err(Errno::EINTR) => continue,
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_framing_constants_are_the_kernels() {
        assert_eq!(
            (NLMSG_ERROR, NLMSG_DONE, NLM_F_REQUEST, NLM_F_ACK),
            (2, 3, 0x1, 0x4)
        );
        assert_eq!(
            (
                NLM_F_DUMP,
                NLM_F_EXCL,
                NLM_F_CREATE,
                NLM_F_APPEND,
                NLA_F_NESTED
            ),
            (0x300, 0x200, 0x400, 0x800, 0x8000)
        );
        assert_eq!((align4(0), align4(5), align4(8)), (0, 8, 8));
    }
}
