//! Netlink's framing, shared by the rtnetlink client (`netlink`) and the nf_tables batches (`nfbatch`):
//! message types and flags of `struct nlmsghdr`, the nested-attribute bit, and the 4-byte alignment of
//! messages and attributes.

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
