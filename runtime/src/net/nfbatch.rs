//! nf_tables netlink messages: a batch in one buffer (framing, attributes, the expressions dstack's rules
//! use) and its sending, acknowledgements counted. The run's table itself is `nftables`.

use std::io;

pub(super) const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub(super) const NFNL_MSG_BATCH_BEGIN: u16 = 16;
pub(super) const NFNL_MSG_BATCH_END: u16 = 17;
pub(super) const NFT_MSG_NEWTABLE: u16 = 0;
pub(super) const NFT_MSG_DELTABLE: u16 = 2;
pub(super) const NFT_MSG_NEWCHAIN: u16 = 3;
pub(super) const NFT_MSG_NEWRULE: u16 = 6;
pub(super) const NFPROTO_IPV4: u8 = 2;

use std::os::fd::AsFd as _;

use nix::sys::socket::SockProtocol;

use super::nlmsg;
pub(super) use super::nlmsg::{
    NLA_F_NESTED, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NLMSG_ERROR,
    align4,
};

pub(super) const NFTA_TABLE_NAME: u16 = 1;
pub(super) const NFTA_CHAIN_TABLE: u16 = 1;
pub(super) const NFTA_CHAIN_NAME: u16 = 3;
pub(super) const NFTA_CHAIN_HOOK: u16 = 4;
pub(super) const NFTA_CHAIN_POLICY: u16 = 5;
pub(super) const NFTA_CHAIN_TYPE: u16 = 7;
pub(super) const NFTA_HOOK_HOOKNUM: u16 = 1;
pub(super) const NFTA_HOOK_PRIORITY: u16 = 2;
pub(super) const NFTA_RULE_TABLE: u16 = 1;
pub(super) const NFTA_RULE_CHAIN: u16 = 2;
pub(super) const NFTA_RULE_EXPRESSIONS: u16 = 4;
pub(super) const NFTA_LIST_ELEM: u16 = 1;
pub(super) const NFTA_EXPR_NAME: u16 = 1;
pub(super) const NFTA_EXPR_DATA: u16 = 2;
pub(super) const NFTA_PAYLOAD_DREG: u16 = 1;
pub(super) const NFTA_PAYLOAD_BASE: u16 = 2;
pub(super) const NFTA_PAYLOAD_OFFSET: u16 = 3;
pub(super) const NFTA_PAYLOAD_LEN: u16 = 4;
pub(super) const NFTA_CMP_SREG: u16 = 1;
pub(super) const NFTA_CMP_OP: u16 = 2;
pub(super) const NFTA_CMP_DATA: u16 = 3;
pub(super) const NFTA_DATA_VALUE: u16 = 1;
pub(super) const NFTA_DATA_VERDICT: u16 = 2;
pub(super) const NFTA_VERDICT_CODE: u16 = 1;
pub(super) const NFTA_META_DREG: u16 = 1;
pub(super) const NFTA_META_KEY: u16 = 2;
pub(super) const NFTA_IMMEDIATE_DREG: u16 = 1;
pub(super) const NFTA_IMMEDIATE_DATA: u16 = 2;
pub(super) const NFTA_FIB_DREG: u16 = 1;
pub(super) const NFTA_FIB_RESULT: u16 = 2;
pub(super) const NFTA_FIB_FLAGS: u16 = 3;
pub(super) const NFTA_NAT_TYPE: u16 = 1;
pub(super) const NFTA_NAT_FAMILY: u16 = 2;
pub(super) const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
pub(super) const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
pub(super) const NFTA_NAT_FLAGS: u16 = 7;
pub(super) const NFTA_CT_DREG: u16 = 1;
pub(super) const NFTA_CT_KEY: u16 = 2;
pub(super) const NFTA_BITWISE_SREG: u16 = 1;
pub(super) const NFTA_BITWISE_DREG: u16 = 2;
pub(super) const NFTA_BITWISE_LEN: u16 = 3;
pub(super) const NFTA_BITWISE_MASK: u16 = 4;
pub(super) const NFTA_BITWISE_XOR: u16 = 5;

pub(super) const NFT_REG_VERDICT: u32 = 0;
pub(super) const NFT_REG_1: u32 = 1;
pub(super) const NFT_REG_2: u32 = 2;
pub(super) const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
pub(super) const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
pub(super) const NFT_CMP_EQ: u32 = 0;
pub(super) const NFT_CMP_NEQ: u32 = 1;
pub(super) const NFT_META_IIFNAME: u32 = 6;
pub(super) const NFT_META_OIFNAME: u32 = 7;
pub(super) const NFT_META_L4PROTO: u32 = 16;
pub(super) const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
pub(super) const NFTA_FIB_F_DADDR: u32 = 1 << 1;
pub(super) const RTN_LOCAL: u32 = 2;
pub(super) const NFT_NAT_DNAT: u32 = 1;
pub(super) const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 2;
pub(super) const NFT_CT_DIRECTION: u32 = 1;
pub(super) const NFT_CT_STATUS: u32 = 2;
pub(super) const IP_CT_DIR_ORIGINAL: u8 = 0;
pub(super) const IPS_DST_NAT: u32 = 1 << 5;
pub(super) const NF_INET_PRE_ROUTING: u32 = 0;
pub(super) const NF_INET_LOCAL_IN: u32 = 1;
pub(super) const NF_INET_FORWARD: u32 = 2;
pub(super) const NF_INET_LOCAL_OUT: u32 = 3;
pub(super) const NF_INET_POST_ROUTING: u32 = 4;
pub(super) const NF_DROP: u32 = 0;
pub(super) const NF_ACCEPT: u32 = 1;

/// A batch of nf_tables messages in one buffer.
pub(super) struct Batch {
    buf: Vec<u8>,
    /// Start of the message being built, and of each open nest.
    start: usize,
    nests: Vec<usize>,
    seq: u32,
    /// Messages that will be acknowledged.
    acked: usize,
}

impl Batch {
    pub(super) fn new() -> Batch {
        let mut b = Batch {
            buf: Vec::new(),
            start: 0,
            nests: Vec::new(),
            seq: 0,
            acked: 0,
        };
        b.message(NFNL_MSG_BATCH_BEGIN, 0, 0);
        b
    }

    /// Starts a message: header and nfgenmsg (family, version 0, resource id).
    pub(super) fn message(&mut self, kind: u16, flags: u16, family: u8) {
        self.close();
        self.start = self.buf.len();
        self.seq += 1;
        let res_id: u16 = if kind == NFNL_MSG_BATCH_BEGIN || kind == NFNL_MSG_BATCH_END {
            NFNL_SUBSYS_NFTABLES
        } else {
            0
        };
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf
            .extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&[family, 0]);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        if flags & NLM_F_ACK != 0 {
            self.acked += 1;
        }
    }

    pub(super) fn nft(&mut self, msg: u16, flags: u16) {
        self.message(
            (NFNL_SUBSYS_NFTABLES << 8) | msg,
            flags | NLM_F_ACK,
            NFPROTO_IPV4,
        );
    }

    /// Writes the length of the message being built.
    pub(super) fn close(&mut self) {
        if self.buf.len() > self.start {
            let len = (self.buf.len() - self.start) as u32;
            self.buf[self.start..self.start + 4].copy_from_slice(&len.to_ne_bytes());
        }
    }

    pub(super) fn attr(&mut self, kind: u16, data: &[u8]) {
        self.buf
            .extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    pub(super) fn str(&mut self, kind: u16, s: &str) {
        let mut data = s.as_bytes().to_vec();
        data.push(0);
        self.attr(kind, &data);
    }

    pub(super) fn u32(&mut self, kind: u16, v: u32) {
        self.attr(kind, &v.to_be_bytes());
    }

    pub(super) fn begin(&mut self, kind: u16) {
        self.nests.push(self.buf.len());
        self.attr(kind | NLA_F_NESTED, &[]);
    }

    pub(super) fn end(&mut self) {
        let at = self.nests.pop().expect("balanced nests");
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// One expression of a rule: `name` with its attributes.
    pub(super) fn expr(&mut self, name: &str, data: impl FnOnce(&mut Batch)) {
        self.begin(NFTA_LIST_ELEM);
        self.str(NFTA_EXPR_NAME, name);
        self.begin(NFTA_EXPR_DATA);
        data(self);
        self.end();
        self.end();
    }

    pub(super) fn cmp(&mut self, op: u32, value: &[u8]) {
        self.expr("cmp", |b| {
            b.u32(NFTA_CMP_SREG, NFT_REG_1);
            b.u32(NFTA_CMP_OP, op);
            b.begin(NFTA_CMP_DATA);
            b.attr(NFTA_DATA_VALUE, value);
            b.end();
        });
    }

    /// Loads `len` bytes at `offset` of a header (`base`) into register 1.
    pub(super) fn payload(&mut self, base: u32, offset: u32, len: u32) {
        self.expr("payload", |b| {
            b.u32(NFTA_PAYLOAD_DREG, NFT_REG_1);
            b.u32(NFTA_PAYLOAD_BASE, base);
            b.u32(NFTA_PAYLOAD_OFFSET, offset);
            b.u32(NFTA_PAYLOAD_LEN, len);
        });
    }

    /// Loads a constant into register `reg`.
    pub(super) fn immediate(&mut self, reg: u32, value: &[u8]) {
        self.expr("immediate", |b| {
            b.u32(NFTA_IMMEDIATE_DREG, reg);
            b.begin(NFTA_IMMEDIATE_DATA);
            b.attr(NFTA_DATA_VALUE, value);
            b.end();
        });
    }

    pub(super) fn drop_packet(&mut self) {
        self.expr("immediate", |b| {
            b.u32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
            b.begin(NFTA_IMMEDIATE_DATA);
            b.begin(NFTA_DATA_VERDICT);
            b.u32(NFTA_VERDICT_CODE, NF_DROP);
            b.end();
            b.end();
        });
    }

    pub(super) fn ct(&mut self, key: u32) {
        self.expr("ct", |b| {
            b.u32(NFTA_CT_DREG, NFT_REG_1);
            b.u32(NFTA_CT_KEY, key);
        });
    }

    /// `meta iifname/oifname == name`.
    pub(super) fn interface_is(&mut self, key: u32, name: &str) {
        self.meta(key);
        self.cmp(NFT_CMP_EQ, &ifname(name));
    }

    pub(super) fn meta(&mut self, key: u32) {
        self.expr("meta", |b| {
            b.u32(NFTA_META_KEY, key);
            b.u32(NFTA_META_DREG, NFT_REG_1);
        });
    }

    pub(super) fn chain(&mut self, table: &str, name: &str, kind: &str, hook: u32, priority: i32) {
        self.nft(NFT_MSG_NEWCHAIN, NLM_F_CREATE);
        self.str(NFTA_CHAIN_TABLE, table);
        self.str(NFTA_CHAIN_NAME, name);
        self.begin(NFTA_CHAIN_HOOK);
        self.u32(NFTA_HOOK_HOOKNUM, hook);
        self.u32(NFTA_HOOK_PRIORITY, priority as u32);
        self.end();
        self.u32(NFTA_CHAIN_POLICY, NF_ACCEPT);
        self.str(NFTA_CHAIN_TYPE, kind);
    }

    pub(super) fn rule(&mut self, table: &str, chain: &str, exprs: impl FnOnce(&mut Batch)) {
        self.nft(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND);
        self.str(NFTA_RULE_TABLE, table);
        self.str(NFTA_RULE_CHAIN, chain);
        self.begin(NFTA_RULE_EXPRESSIONS);
        exprs(self);
        self.end();
    }

    pub(super) fn finish(mut self) -> (Vec<u8>, usize) {
        self.message(NFNL_MSG_BATCH_END, 0, 0);
        self.close();
        (self.buf, self.acked)
    }
}

/// An interface name as nf_tables compares it: IFNAMSIZ bytes, zero-padded.
pub(super) fn ifname(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..name.len().min(15)].copy_from_slice(&name.as_bytes()[..name.len().min(15)]);
    out
}

/// Sends a batch and waits for every acknowledgement; the first error (an errno) fails it, and the
/// kernel then applies none of it. Only system calls, no allocation: it also runs in forked children
/// of a multi-threaded process.
pub(super) fn send_raw(bytes: &[u8], acks: usize, buf: &mut [u8]) -> Result<(), i32> {
    let fd = nlmsg::socket(SockProtocol::NetlinkNetFilter).map_err(|e| e as i32)?;
    nlmsg::send_to_kernel(fd.as_fd(), bytes).map_err(|e| e as i32)?;
    let mut seen = 0;
    while seen < acks {
        let n = nlmsg::receive(fd.as_fd(), buf).map_err(|e| e as i32)?;
        let mut rest = &buf[..n];
        while rest.len() >= 20 {
            let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let kind = u16::from_ne_bytes([rest[4], rest[5]]);
            if len < 16 || len > rest.len() {
                return Err(libc::EPROTO);
            }
            if kind == NLMSG_ERROR {
                let code = i32::from_ne_bytes([rest[16], rest[17], rest[18], rest[19]]);
                if code != 0 {
                    return Err(-code);
                }
                seen += 1;
            }
            rest = &rest[align4(len).min(rest.len())..];
        }
    }
    Ok(())
}

pub(super) fn send(batch: (Vec<u8>, usize)) -> io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    send_raw(&batch.0, batch.1, &mut buf).map_err(io::Error::from_raw_os_error)
}

/// Whether `bytes` (a batch) holds an expression named `name` (its NFTA_EXPR_NAME attribute).
#[cfg(test)]
pub(super) fn has_expression(bytes: &[u8], name: &str) -> bool {
    let mut attr = Batch::new();
    attr.buf.clear();
    attr.str(NFTA_EXPR_NAME, name);
    let attr = &attr.buf[..4 + name.len() + 1];
    bytes.windows(attr.len()).any(|w| w == attr)
}
