//! The listeners of a network namespace as the kernel's socket-diagnostics interface
//! (`NETLINK_SOCK_DIAG`, what `ss -lt` reads) reports them: unlike /proc/net/tcp it gives a
//! listener's backlog (the `listen()` value capped by `net.core.somaxconn`) beside the
//! connections waiting in its accept queue.
//!
//! The query runs on a thread of its own that first enters the namespace (`setns` moves only
//! the calling thread), so the netlink socket, and the `somaxconn` read, belong to it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};

/// One listening TCP socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiagListener {
    pub addr: SocketAddr,
    /// Connections waiting in its accept queue (`sk_ack_backlog`).
    pub queued: u64,
    /// Its backlog (`sk_max_ack_backlog`).
    pub backlog: u64,
    pub inode: u64,
}

/// A socket-diagnostics socket of one network namespace, and that namespace's
/// `net.core.somaxconn`. Opened at attach: entering a namespace needs CAP_SYS_ADMIN, which
/// socktrace gives up once attached; the socket stays bound to its namespace and needs no
/// privilege to dump listeners.
pub struct DiagSocket {
    sock: OwnedFd,
    pub somaxconn: Option<u64>,
}

impl DiagSocket {
    /// For the namespace of `netns`, a `/proc/.../ns/net` file.
    pub fn open_in(netns: &Path) -> io::Result<DiagSocket> {
        let netns: PathBuf = netns.to_owned();
        std::thread::scope(|s| {
            s.spawn(move || {
                let ns = std::fs::File::open(&netns)?;
                // SAFETY: plain syscall on an fd we own; it changes only this thread's namespace.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                // /proc/sys/net shows the reading thread's namespace.
                let somaxconn =
                    std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok().and_then(|t| t.trim().parse().ok());
                // SAFETY: plain syscall; the fd is owned at once.
                let fd = unsafe {
                    libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, libc::NETLINK_SOCK_DIAG)
                };
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: `fd` is a new descriptor nobody else owns.
                Ok(DiagSocket { sock: unsafe { OwnedFd::from_raw_fd(fd) }, somaxconn })
            })
            .join()
            .map_err(|_| io::Error::other("sock_diag thread panicked"))?
        })
    }

    /// The namespace's TCP listeners (IPv4 and IPv6), on `port` if given.
    pub fn listeners_on(&self, port: Option<u16>) -> io::Result<Vec<DiagListener>> {
        let mut out = Vec::new();
        for family in [libc::AF_INET, libc::AF_INET6] {
            let found = dump_listeners(&self.sock, family as u8)?;
            out.extend(found.into_iter().filter(|l| port.is_none_or(|p| l.addr.port() == p)));
        }
        Ok(out)
    }
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_HDR: usize = 16;
/// `struct inet_diag_req_v2`.
const REQ_LEN: usize = 56;
/// `struct inet_diag_msg`.
const MSG_LEN: usize = 72;
use socktrace_common::tcp_state::LISTEN as TCP_LISTEN;
/// A dump ends long before this many datagrams (each holds many sockets); a bound on the loop.
const MAX_DATAGRAMS: usize = 100_000;

fn dump_listeners(sock: &OwnedFd, family: u8) -> io::Result<Vec<DiagListener>> {
    let mut req = [0u8; NLMSG_HDR + REQ_LEN];
    req[0..4].copy_from_slice(&((NLMSG_HDR + REQ_LEN) as u32).to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req[6..8].copy_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[16] = family;
    req[17] = libc::IPPROTO_TCP as u8;
    req[20..24].copy_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    // SAFETY: the buffer is valid for its length; the kernel is the destination (zeroed sockaddr_nl).
    let sent = unsafe {
        let mut to: libc::sockaddr_nl = std::mem::zeroed();
        to.nl_family = libc::AF_NETLINK as u16;
        libc::sendto(
            sock.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            (&raw const to).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..MAX_DATAGRAMS {
        // SAFETY: the buffer is valid for its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        match parse_datagram(&buf[..n as usize], &mut out)? {
            Dump::More => continue,
            Dump::Done => return Ok(out),
        }
    }
    Err(io::Error::other("sock_diag dump did not end"))
}

enum Dump {
    More,
    Done,
}

/// The netlink messages of one datagram: listeners into `out`; whether the dump ended.
fn parse_datagram(mut data: &[u8], out: &mut Vec<DiagListener>) -> io::Result<Dump> {
    let u32_at = |b: &[u8], at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().unwrap());
    while data.len() >= NLMSG_HDR {
        let len = u32_at(data, 0) as usize;
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        if len < NLMSG_HDR || len > data.len() {
            return Err(io::Error::other("truncated sock_diag message"));
        }
        let body = &data[NLMSG_HDR..len];
        match kind as i32 {
            libc::NLMSG_DONE => return Ok(Dump::Done),
            libc::NLMSG_ERROR => {
                let errno = body.get(0..4).map(|b| i32::from_ne_bytes(b.try_into().unwrap())).unwrap_or(0);
                return Err(io::Error::from_raw_os_error(-errno));
            }
            _ if kind == SOCK_DIAG_BY_FAMILY && body.len() >= MSG_LEN => out.extend(parse_msg(body)),
            _ => {}
        }
        // Messages are 4-byte aligned.
        let next = (len + 3) & !3;
        data = data.get(next..).unwrap_or(&[]);
    }
    Ok(Dump::More)
}

/// `struct inet_diag_msg`: family, state, timer, retrans; the socket id (ports big-endian,
/// then 16-byte source and destination); expires, rqueue, wqueue, uid, inode.
fn parse_msg(b: &[u8]) -> Option<DiagListener> {
    let u32_at = |at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().unwrap());
    let port = u16::from_be_bytes([b[4], b[5]]);
    let src: [u8; 16] = b[8..24].try_into().ok()?;
    let ip = match b[0] as i32 {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::new(src[0], src[1], src[2], src[3])),
        libc::AF_INET6 => {
            let v6 = Ipv6Addr::from(src);
            v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6))
        }
        _ => return None,
    };
    Some(DiagListener {
        addr: SocketAddr::new(ip, port),
        queued: u32_at(56) as u64,
        backlog: u32_at(60) as u64,
        inode: u32_at(68) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(family: u8, addr: [u8; 16], port: u16, rq: u32, wq: u32, inode: u32) -> Vec<u8> {
        let mut m = vec![0u8; NLMSG_HDR + MSG_LEN];
        m[0..4].copy_from_slice(&((NLMSG_HDR + MSG_LEN) as u32).to_ne_bytes());
        m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        let b = &mut m[NLMSG_HDR..];
        b[0] = family;
        b[1] = TCP_LISTEN;
        b[4..6].copy_from_slice(&port.to_be_bytes());
        b[8..24].copy_from_slice(&addr);
        b[56..60].copy_from_slice(&rq.to_ne_bytes());
        b[60..64].copy_from_slice(&wq.to_ne_bytes());
        b[68..72].copy_from_slice(&inode.to_ne_bytes());
        m
    }

    #[test]
    fn listeners_parse_from_a_dump() {
        let mut v4 = [0u8; 16];
        v4[..4].copy_from_slice(&[127, 0, 0, 1]);
        let mut data = message(libc::AF_INET as u8, v4, 9000, 3, 1, 4242);
        data.extend(message(libc::AF_INET6 as u8, Ipv6Addr::LOCALHOST.octets(), 8080, 0, 4096, 7));
        let mut out = Vec::new();
        assert!(matches!(parse_datagram(&data, &mut out).unwrap(), Dump::More));
        assert_eq!(
            out,
            vec![
                DiagListener { addr: "127.0.0.1:9000".parse().unwrap(), queued: 3, backlog: 1, inode: 4242 },
                DiagListener { addr: "[::1]:8080".parse().unwrap(), queued: 0, backlog: 4096, inode: 7 },
            ]
        );
        let mut done = vec![0u8; NLMSG_HDR + 4];
        done[0..4].copy_from_slice(&((NLMSG_HDR + 4) as u32).to_ne_bytes());
        done[4..6].copy_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes());
        assert!(matches!(parse_datagram(&done, &mut out).unwrap(), Dump::Done));
    }

    /// The real interface: a listener this test opens is found with its backlog.
    #[cfg(feature = "host-kernel-tests")]
    #[test]
    fn finds_a_listener_of_this_namespace() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let diag = DiagSocket::open_in(Path::new("/proc/self/ns/net")).unwrap();
        let found = diag.listeners_on(Some(port)).unwrap();
        let somaxconn = diag.somaxconn;
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].addr, l.local_addr().unwrap());
        // std listens with backlog 128 (capped by somaxconn).
        assert_eq!(found[0].backlog, 128.min(somaxconn.unwrap()));
    }
}
