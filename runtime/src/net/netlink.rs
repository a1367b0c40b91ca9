//! Just enough rtnetlink over a raw `NETLINK_ROUTE` socket: create a veth pair with its peer in another
//! network namespace, set links up, add addresses and a default route, delete links, dump routes.
//! Synchronous, no threads: it runs on the supervisor's thread around the clone.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd as _, OwnedFd, RawFd};

use nix::sys::socket::SockProtocol;

use super::nlmsg::{
    self, NLA_F_NESTED, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NLMSG_DONE,
    NLMSG_ERROR, align4,
};

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;

const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;

const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_TABLE: u16 = 15;

const RT_TABLE_MAIN: u8 = 254;
const RT_TABLE_LOCAL: u32 = 255;
const RTPROT_BOOT: u8 = 3;
const RTN_UNICAST: u8 = 1;

const IFF_UP: u32 = libc::IFF_UP as u32;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct IfInfoMsg {
    family: u8,
    pad: u8,
    kind: u16,
    index: i32,
    flags: u32,
    change: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct IfAddrMsg {
    family: u8,
    prefixlen: u8,
    flags: u8,
    scope: u8,
    index: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct RtMsg {
    family: u8,
    dst_len: u8,
    src_len: u8,
    tos: u8,
    table: u8,
    protocol: u8,
    scope: u8,
    kind: u8,
    flags: u32,
}

/// The bytes of a plain `repr(C)` header struct.
fn bytes_of<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: T is one of the padding-free repr(C) integer structs above; reading its bytes is defined.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

/// One request being built: header, fixed payload, then attributes (nests closed in order).
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    fn new(kind: u16, flags: u16) -> Msg {
        let mut buf = vec![0u8; 16];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        Msg {
            buf,
            nests: Vec::new(),
        }
    }

    fn header<T: Copy>(mut self, v: &T) -> Msg {
        self.buf.extend_from_slice(bytes_of(v));
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    fn attr(&mut self, kind: u16, data: &[u8]) {
        let len = (4 + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    fn attr_str(&mut self, kind: u16, s: &str) {
        let mut data = s.as_bytes().to_vec();
        data.push(0);
        self.attr(kind, &data);
    }

    fn begin(&mut self, kind: u16) {
        self.nests.push(self.buf.len());
        // Without NLA_F_NESTED, as iproute2 sends it: the veth peer is not a plain nest to the kernel.
        self.attr(kind, &[]);
    }

    fn end(&mut self) {
        let start = self.nests.pop().expect("balanced nests");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// Nests a header struct (the veth peer's ifinfomsg) inside the current attribute.
    fn raw<T: Copy>(&mut self, v: &T) {
        self.buf.extend_from_slice(bytes_of(v));
        self.buf.resize(align4(self.buf.len()), 0);
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// A route as a dump reports it.
#[derive(Debug, Clone)]
pub(super) struct Route {
    pub dst: Ipv4Addr,
    pub len: u8,
    pub oif: Option<u32>,
}

/// A `NETLINK_ROUTE` socket, bound to the network namespace it was created in.
pub(super) struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub(super) fn open() -> io::Result<Netlink> {
        let fd = nlmsg::socket(SockProtocol::NetlinkRoute)?;
        Ok(Netlink { fd, seq: 1 })
    }

    fn send(&mut self, msg: Msg) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = msg.finish(seq);
        nlmsg::send_to_kernel(self.fd.as_fd(), &bytes)?;
        Ok(seq)
    }

    /// Reads replies to `seq` and hands each non-control message (type, payload) to `each`, until the ack
    /// or the end of a dump.
    fn receive(&mut self, seq: u32, mut each: impl FnMut(u16, &[u8])) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = nlmsg::receive(self.fd.as_fd(), &mut buf)?;
            let mut rest = &buf[..n];
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
                let kind = u16::from_ne_bytes(rest[4..6].try_into().expect("2 bytes"));
                let mseq = u32::from_ne_bytes(rest[8..12].try_into().expect("4 bytes"));
                if len < 16 || len > rest.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink message",
                    ));
                }
                let payload = &rest[16..len];
                rest = &rest[align4(len).min(rest.len())..];
                if mseq != seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = i32::from_ne_bytes(payload[0..4].try_into().expect("4 bytes"));
                        return if code == 0 {
                            Ok(())
                        } else {
                            Err(io::Error::from_raw_os_error(-code))
                        };
                    }
                    _ => each(kind, payload),
                }
            }
        }
    }

    fn request(&mut self, msg: Msg) -> io::Result<()> {
        let seq = self.send(msg)?;
        self.receive(seq, |_, _| {})
    }

    /// Creates a veth pair: `host` here and up, `peer` moved at once into the namespace `peer_netns`, down.
    pub(super) fn create_veth(
        &mut self,
        host: &str,
        peer: &str,
        peer_netns: RawFd,
        mtu: u32,
    ) -> io::Result<()> {
        // The host end up from the start (as `ip link add ... up`), a round trip fewer; the peer cannot
        // be: the kernel configures it before the pair is joined (ENOTCONN).
        let up = IfInfoMsg {
            flags: IFF_UP,
            change: IFF_UP,
            ..Default::default()
        };
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL).header(&up);
        m.attr_str(IFLA_IFNAME, host);
        m.attr(IFLA_MTU, &mtu.to_ne_bytes());
        m.begin(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "veth");
        m.begin(IFLA_INFO_DATA);
        m.begin(VETH_INFO_PEER);
        m.raw(&IfInfoMsg::default());
        m.attr_str(IFLA_IFNAME, peer);
        m.attr(IFLA_MTU, &mtu.to_ne_bytes());
        m.attr(IFLA_NET_NS_FD, &(peer_netns as u32).to_ne_bytes());
        m.end();
        m.end();
        m.end();
        self.request(m)
    }

    /// The index of the interface `name` in this socket's namespace.
    pub(super) fn link_index(&mut self, name: &str) -> io::Result<u32> {
        let mut m = Msg::new(RTM_GETLINK, NLM_F_ACK).header(&IfInfoMsg::default());
        m.attr_str(IFLA_IFNAME, name);
        let seq = self.send(m)?;
        let mut index = None;
        self.receive(seq, |kind, payload| {
            if kind == RTM_NEWLINK && payload.len() >= 8 {
                index = Some(i32::from_ne_bytes(payload[4..8].try_into().expect("4 bytes")) as u32);
            }
        })?;
        // A GET answered with the link and then the ack; without NLM_F_ACK older kernels send no ack.
        index.ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))
    }

    pub(super) fn set_up(&mut self, index: u32) -> io::Result<()> {
        let info = IfInfoMsg {
            index: index as i32,
            flags: IFF_UP,
            change: IFF_UP,
            ..Default::default()
        };
        self.request(Msg::new(RTM_NEWLINK, NLM_F_ACK).header(&info))
    }

    pub(super) fn add_address(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let hdr = IfAddrMsg {
            family: libc::AF_INET as u8,
            prefixlen: prefix,
            index,
            ..Default::default()
        };
        let mut m = Msg::new(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL).header(&hdr);
        m.attr(IFA_LOCAL, &addr.octets());
        m.attr(IFA_ADDRESS, &addr.octets());
        self.request(m)
    }

    pub(super) fn add_default_route(&mut self, gateway: Ipv4Addr, oif: u32) -> io::Result<()> {
        let hdr = RtMsg {
            family: libc::AF_INET as u8,
            table: RT_TABLE_MAIN,
            protocol: RTPROT_BOOT,
            scope: 0,
            kind: RTN_UNICAST,
            ..Default::default()
        };
        let mut m = Msg::new(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL).header(&hdr);
        m.attr(RTA_GATEWAY, &gateway.octets());
        m.attr(RTA_OIF, &oif.to_ne_bytes());
        self.request(m)
    }

    /// Deletes the link `name`; a veth takes its peer with it. `Ok(false)` when there was none.
    pub(super) fn delete_link(&mut self, name: &str) -> io::Result<bool> {
        let mut m = Msg::new(RTM_DELLINK, NLM_F_ACK).header(&IfInfoMsg::default());
        m.attr_str(IFLA_IFNAME, name);
        match self.request(m) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// IPv4 routes of every table but `local` (the host's own addresses).
    pub(super) fn routes(&mut self) -> io::Result<Vec<Route>> {
        let hdr = RtMsg {
            family: libc::AF_INET as u8,
            ..Default::default()
        };
        let seq = self.send(Msg::new(RTM_GETROUTE, NLM_F_DUMP).header(&hdr))?;
        let mut routes = Vec::new();
        self.receive(seq, |kind, payload| {
            if kind != RTM_NEWROUTE || payload.len() < 12 {
                return;
            }
            let mut route = Route {
                dst: Ipv4Addr::UNSPECIFIED,
                len: payload[1],
                oif: None,
            };
            let mut table = payload[4] as u32;
            for (kind, data) in attributes(&payload[12..]) {
                match kind {
                    RTA_DST if data.len() == 4 => {
                        route.dst = Ipv4Addr::new(data[0], data[1], data[2], data[3])
                    }
                    RTA_OIF if data.len() == 4 => {
                        route.oif = Some(u32::from_ne_bytes(data.try_into().expect("4")))
                    }
                    RTA_TABLE if data.len() == 4 => {
                        table = u32::from_ne_bytes(data.try_into().expect("4"))
                    }
                    _ => {}
                }
            }
            if table != RT_TABLE_LOCAL {
                routes.push(route);
            }
        })?;
        Ok(routes)
    }
}

/// (type, data) of each attribute in `buf`.
fn attributes(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & !NLA_F_NESTED;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((kind, &buf[4..len]));
        buf = &buf[align4(len).min(buf.len())..];
    }
    out
}

/// The name of interface `index` in the calling thread's namespace.
pub(super) fn link_name(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: if_indextoname writes at most IF_NAMESIZE bytes, NUL-terminated, into buf.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_have_their_lengths_and_alignment() {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_ACK).header(&IfInfoMsg::default());
        m.begin(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "veth");
        m.end();
        let bytes = m.finish(7);
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize,
            bytes.len()
        );
        let attrs = attributes(&bytes[32..]);
        assert_eq!(attrs.len(), 1);
        assert_eq!(attrs[0].0, IFLA_LINKINFO);
        assert_eq!(
            attributes(attrs[0].1),
            vec![(IFLA_INFO_KIND, &b"veth\0"[..])]
        );
    }

    #[test]
    fn the_route_dump_sees_the_loopback_link() {
        let mut nl = Netlink::open().unwrap();
        assert_eq!(nl.link_index("lo").unwrap(), 1);
        assert_eq!(link_name(1).as_deref(), Some("lo"));
        assert!(nl.link_index("no-such-link0").is_err());
        nl.routes().unwrap();
    }
}
