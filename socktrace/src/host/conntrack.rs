//! NAT on this host: whether a connection's destination was rewritten (a Kubernetes Service
//! address DNATed to a pod, a Docker published port), read from the connection tracking table
//! of the namespaces on its way (`/proc/PID/net/nf_conntrack`, readable by root without
//! capabilities; ctnetlink would need CAP_NET_ADMIN at each query, which socktrace has given
//! up). Read for the failures of a connection with a peer, never on the hot path; a burst of
//! failures shares one read of each table.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// A conntrack entry's two directions: as the first packet had it, and as the answer comes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracked {
    pub orig_src: SocketAddr,
    pub orig_dst: SocketAddr,
    pub reply_src: SocketAddr,
    pub reply_dst: SocketAddr,
}

impl Tracked {
    /// The destination was rewritten: the answer comes from another address than the one
    /// dialled.
    pub fn dnat(&self) -> bool {
        self.reply_src != self.orig_dst
    }
}

/// At most this many lines of one table are read (a bound on a busy host's cost).
const MAX_LINES: usize = 262_144;

/// One table's TCP entries, by their original direction, as read at `read_ns`.
struct Snapshot {
    read_ns: u64,
    by_orig: HashMap<(SocketAddr, SocketAddr), Tracked>,
}

/// The tables read so far, by the /proc directory they were read through.
#[derive(Default)]
pub struct Conntrack {
    tables: HashMap<String, Snapshot>,
}

impl Conntrack {
    /// The entry of the connection `local` -> `remote` in the table of the namespace `proc`
    /// (a /proc/PID directory) lives in. A table read after the failure (`failure_ns`,
    /// CLOCK_MONOTONIC) holds its entry if the kernel kept one: it is read again only when the
    /// last read is older than the failure.
    pub fn lookup(
        &mut self,
        proc: &Path,
        (local, remote): (SocketAddr, SocketAddr),
        failure_ns: u64,
        now_ns: &dyn Fn() -> u64,
    ) -> Option<Tracked> {
        let key = proc.to_string_lossy().into_owned();
        let fresh = self.tables.get(&key).is_some_and(|s| s.read_ns >= failure_ns);
        if !fresh {
            let read_ns = now_ns();
            let text = std::fs::read_to_string(proc.join("net/nf_conntrack")).unwrap_or_default();
            let by_orig =
                text.lines().take(MAX_LINES).filter_map(parse_line).map(|t| ((t.orig_src, t.orig_dst), t)).collect();
            if self.tables.len() >= 256 {
                self.tables.clear();
            }
            self.tables.insert(key.clone(), Snapshot { read_ns, by_orig });
        }
        let snapshot = self.tables.get(&key)?;
        snapshot.by_orig.get(&(unmapped(local), unmapped(remote))).copied()
    }
}

fn unmapped(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(|v4| SocketAddr::new(IpAddr::V4(v4), a.port())).unwrap_or(a),
        _ => a,
    }
}

/// One line of /proc/net/nf_conntrack, a TCP entry:
/// `ipv4 2 tcp 6 117 SYN_SENT src=A dst=B sport=P dport=Q [UNREPLIED] src=B' dst=A' sport=Q' dport=P' ...`.
pub fn parse_line(line: &str) -> Option<Tracked> {
    let mut fields = line.split_ascii_whitespace();
    fields.next()?; // ipv4 | ipv6
    fields.next()?;
    if fields.next()? != "tcp" {
        return None;
    }
    let (mut ips, mut ports): (Vec<IpAddr>, Vec<u16>) = (Vec::new(), Vec::new());
    for f in fields {
        if let Some(v) = f.strip_prefix("src=").or_else(|| f.strip_prefix("dst=")) {
            ips.push(v.parse().ok()?);
        } else if let Some(v) = f.strip_prefix("sport=").or_else(|| f.strip_prefix("dport=")) {
            ports.push(v.parse().ok()?);
        }
        if ips.len() == 4 && ports.len() == 4 {
            break;
        }
    }
    if ips.len() < 4 || ports.len() < 4 {
        return None;
    }
    let at = |i: usize| SocketAddr::new(ips[i], ports[i]);
    Some(Tracked { orig_src: at(0), orig_dst: at(1), reply_src: at(2), reply_dst: at(3) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_and_dnat_is_told_from_the_reply_direction() {
        let dnat = "ipv4     2 tcp      6 117 SYN_SENT src=10.199.12.1 dst=10.199.12.100 sport=40000 dport=80 \
                    [UNREPLIED] src=10.199.13.2 dst=10.199.12.1 sport=9104 dport=40000 mark=0 zone=0 use=2";
        let t = parse_line(dnat).unwrap();
        assert_eq!(
            (t.orig_src, t.orig_dst, t.reply_src, t.reply_dst),
            (
                "10.199.12.1:40000".parse().unwrap(),
                "10.199.12.100:80".parse().unwrap(),
                "10.199.13.2:9104".parse().unwrap(),
                "10.199.12.1:40000".parse().unwrap()
            )
        );
        assert!(t.dnat());
        let plain = "ipv6     10 tcp      6 431999 ESTABLISHED src=::1 dst=::1 sport=5000 dport=80 src=::1 dst=::1 \
                     sport=80 dport=5000 [ASSURED] mark=0 zone=0 use=2";
        assert!(!parse_line(plain).unwrap().dnat());
        assert_eq!(
            parse_line(
                "ipv4 2 udp 17 29 src=1.1.1.1 dst=2.2.2.2 sport=1 dport=2 src=2.2.2.2 dst=1.1.1.1 sport=2 dport=1"
            ),
            None
        );
        assert_eq!(parse_line("ipv4 2 tcp 6 1 SYN_SENT src=1.1.1.1"), None);
    }
}
