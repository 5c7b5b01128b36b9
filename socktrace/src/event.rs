//! Decoding: ring buffer records -> `Failure`, the facts of one failing call in Rust types.
//!
//! Records come from the kernel, but a decoder that trusts them is one bug away from a panic
//! on a production box: every length and value is checked, nothing here can panic.

use crate::facts::{
    Ended, EndingCall, Failure, History, IcmpMessage, PacketDrops, PeerReset, StackRefs, Stamp, StateChange, TraceGaps,
};
use crate::model::{errno, Syscall, TcpState};
use socktrace_common::{
    event_flags,
    net::{self, AF_INET, AF_INET6},
    FailureEvent, SockAddrs, SocketHistory, StampedState, HISTORY_TRANSITIONS,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    Truncated { len: usize, want: usize },
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Truncated { len, want } => {
                write!(f, "ring buffer record of {len} bytes, expected {want}")
            }
        }
    }
}

/// `hash_seed` is the load's `TracedConfig::hash_seed`, which checks the sent RST the event
/// may carry (`peer_reset_of`).
pub fn decode(bytes: &[u8], hash_seed: u64) -> Result<Failure, DecodeError> {
    let want = std::mem::size_of::<FailureEvent>();
    if bytes.len() < want {
        return Err(DecodeError::Truncated { len: bytes.len(), want });
    }
    // SAFETY: the length was checked; FailureEvent is plain data valid for any bit pattern,
    // and read_unaligned makes no alignment assumption about the ring buffer memory.
    let ev: FailureEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    Ok(from_event(&ev, hash_seed))
}

pub fn from_event(ev: &FailureEvent, hash_seed: u64) -> Failure {
    let from_so_error = ev.flags & event_flags::FROM_SO_ERROR != 0;
    let mut errno = if from_so_error {
        Some(ev.so_error.saturating_abs())
    } else if ev.ret < 0 {
        i32::try_from(ev.ret.saturating_neg()).ok()
    } else {
        None
    };
    let mut ret = if from_so_error { -(ev.so_error.saturating_abs() as i64) } else { ev.ret };
    let mut kernel_ret = None;
    if errno.is_some_and(errno::is_restart) {
        // What the program sees: EINTR (or, with SA_RESTART, a transparently restarted call).
        kernel_ret = Some(ret);
        errno = Some(errno::EINTR);
        ret = -(errno::EINTR as i64);
    }
    let comm_len = ev.comm.iter().position(|&b| b == 0).unwrap_or(ev.comm.len());
    let syscall = Syscall::from_number(ev.syscall_nr);
    let sock = &ev.sock;
    let is_tcp = net::is_tcp(sock.addrs.family, sock.sock_type, sock.protocol);
    let history =
        if ev.flags & event_flags::HAS_HISTORY != 0 { decode_history(&ev.history) } else { History::default() };
    let state_now = if is_tcp { TcpState::from_kernel(sock.state) } else { None };
    let hist_addrs = (ev.flags & event_flags::HAS_HISTORY != 0).then_some(&ev.history.addrs);

    // The kernel zeroes a socket's ports as it closes: prefer what the socket shows at exit,
    // then the history's last complete view. A failing connect() names its peer itself: its
    // argument comes first (the history may hold an earlier connect's peer).
    let local = endpoint(&sock.addrs, true).or_else(|| hist_addrs.and_then(|a| endpoint(a, true)));
    let connect_arg =
        (ev.flags & event_flags::HAS_CONNECT_ADDR != 0).then(|| endpoint(&ev.connect_addr, false)).flatten();
    let remote =
        connect_arg.or_else(|| endpoint(&sock.addrs, false)).or_else(|| hist_addrs.and_then(|a| endpoint(a, false)));

    Failure {
        ts_ns: ev.ts_ns,
        pid: ev.pid,
        tid: ev.tid,
        comm: ev.comm[..comm_len].to_vec(),
        syscall_nr: ev.syscall_nr,
        syscall,
        from_so_error,
        reported_as_connect: from_so_error && connecting(&history, state_now),
        fd: if ev.flags & event_flags::ENDED != 0 { ended(ev).call.fd().unwrap_or(-1) } else { ev.fd },
        fixed_file: ev.flags & event_flags::FIXED_FILE != 0,
        socket_is_source: ev.flags & event_flags::SOCKET_IS_SOURCE != 0,
        ret,
        errno,
        sk: ev.sk,
        family: sock.addrs.family,
        sock_type: sock.sock_type,
        protocol: sock.protocol,
        is_tcp,
        state_now,
        shutdown: sock.shutdown,
        local,
        remote,
        history,
        kernel_ret,
        history_started_here: ev.flags & event_flags::HISTORY_STARTED_HERE != 0,
        resource: (ev.flags & event_flags::HAS_RESOURCE != 0).then_some(ev.resource),
        timers: (ev.flags & event_flags::HAS_TIMERS != 0).then_some(ev.timers),
        icmp: (ev.flags & event_flags::HAS_ICMP_SOURCE != 0).then(|| {
            let m = &ev.icmp;
            let v6 = m.family == socktrace_common::net::AF_INET6;
            let from = if v6 {
                std::net::IpAddr::V6(std::net::Ipv6Addr::from(m.from))
            } else {
                std::net::IpAddr::V4(std::net::Ipv4Addr::new(m.from[0], m.from[1], m.from[2], m.from[3]))
            };
            IcmpMessage { ts_ns: m.ts_ns, from, v6, icmp_type: m.icmp_type, code: m.code }
        }),
        peer_reset: peer_reset_of(ev, hash_seed).map(|p| {
            let len = p.comm.iter().position(|&b| b == 0).unwrap_or(p.comm.len());
            PeerReset {
                ts_ns: p.ts_ns,
                tgid: p.tgid,
                comm: p.comm[..len].to_vec(),
                reason: (p.reason >= 0).then_some(p.reason),
                reason_name: None,
                state: TcpState::from_kernel(p.state),
                no_socket: p.state == 0,
                accept_queue: (TcpState::from_kernel(p.state) == Some(TcpState::Listen))
                    .then_some((p.ack_backlog, p.max_ack_backlog)),
                exit_code: (p.exiting != 0).then_some(p.exit_code),
            }
        }),
        drops: Vec::new(),
        rst_segment_unseen: None,
        trace_gaps: TraceGaps::default(),
        kstacks: Vec::new(),
        stack_refs: StackRefs {
            rst_received: ev.history.rst_received.stack,
            rst_sent: ev.history.rst_sent.stack,
            error_report: ev.history.error_report.stack,
        },
        rst_sent_reason_name: None,
        cgroup_id: ev.cgroup_id,
        cgroup: None,
        host: Default::default(),
        kernel_hz: None,
        ended: (ev.flags & event_flags::ENDED != 0).then(|| ended(ev)),
        fallback: None,
    }
}

/// What the process did to the socket it ended, and the call it did it with.
fn ended(ev: &FailureEvent) -> Ended {
    let e = &ev.ended;
    let fd = |a: u64| a as i32;
    let call = if e.exiting != 0 {
        EndingCall::Exit
    } else {
        match ev.syscall_nr {
            socktrace_common::ENDED_CALL_UNKNOWN => EndingCall::Unknown,
            nr if nr == libc::SYS_close as u32 => EndingCall::Close(fd(e.args[0])),
            nr if nr == libc::SYS_shutdown as u32 => EndingCall::Shutdown(fd(e.args[0])),
            nr if nr == libc::SYS_connect as u32 => EndingCall::Connect(fd(e.args[0])),
            nr if nr == libc::SYS_dup2 as u32 || nr == libc::SYS_dup3 as u32 => EndingCall::Dup(fd(e.args[1])),
            nr if nr == libc::SYS_exit as u32 || nr == libc::SYS_exit_group as u32 => EndingCall::Exit,
            nr => EndingCall::Other(nr),
        }
    };
    let known = |j: u32| (j != u32::MAX).then_some(j);
    Ended {
        call,
        from: TcpState::from_kernel(e.from_state),
        exit_code: (e.exiting != 0).then_some(e.exit_code),
        unacked: e.unacked,
        unsent: e.unsent,
        unread: e.unread,
        snd_wnd: e.snd_wnd,
        since_sent_j: known(e.since_sent_j),
        since_received_j: known(e.since_received_j),
        rto_retransmits: e.rto_retransmits,
        bytes_sent: e.bytes_sent,
        bytes_received: e.bytes_received,
        sibling: (e.sibling_ts != 0).then(|| endpoint(&e.sibling, false).map(|a| (e.sibling_ts, a))).flatten(),
    }
}

/// A record of the kernel's `DROPS` map, read for a failing connection (`sent`: the packets
/// its socket sent; else those sent to it).
pub fn decode_drops(d: &socktrace_common::DropRecord, sent: bool) -> Option<PacketDrops> {
    if d.count == 0 {
        return None;
    }
    let dev_len = d.dev.iter().position(|&b| b == 0).unwrap_or(d.dev.len());
    Some(PacketDrops {
        sent,
        count: d.count,
        first_ns: d.first_ns,
        last_ns: d.last_ns,
        reason: (d.reason != u32::MAX).then_some(d.reason),
        reason_name: None,
        location: d.location,
        function: None,
        netns: (d.netns != 0).then_some(d.netns),
        ifindex: (d.ifindex != 0).then_some(d.ifindex),
        dev: d.dev[..dev_len].to_vec(),
        last_flags: d.last_flags,
        all_flags: d.all_flags,
        rsts: d.rsts as u32,
        stack: d.stack,
        frames: d.frames.iter().copied().take_while(|&ip| ip != 0).collect(),
        path: Vec::new(),
        netns_owner: None,
    })
}

/// Whether an error read through SO_ERROR is a connect's result: the socket is still
/// connecting, or its last connect attempt (CLOSE -> SYN_SENT) ended without being
/// established, or an RST or error report hit it in SYN_SENT.
fn connecting(h: &History, state_now: Option<TcpState>) -> bool {
    use TcpState::*;
    if state_now == Some(SynSent) {
        return true;
    }
    if h.rst_received.is_some_and(|s| s.state == Some(SynSent)) {
        return true;
    }
    let mut attempt = false;
    for t in &h.transitions {
        match (t.old, t.new) {
            (_, Some(SynSent)) => attempt = true,
            (Some(SynSent), Some(Established)) | (_, Some(Listen | SynRecv)) => attempt = false,
            _ => {}
        }
    }
    attempt
}

fn stamp(s: &StampedState) -> Option<Stamp> {
    (s.ts_ns != 0).then(|| Stamp {
        ts_ns: s.ts_ns,
        state: TcpState::from_kernel(s.state),
        current_tgid: s.current_tgid,
    })
}

/// The RST a socket of this host sent to this one, if the event carries its slot of the
/// kernel's table and the slot's check says the record is that connection's and whole (the
/// slot may hold another connection's RST, or have been copied while a writer wrote it: see
/// `socktrace_common::SentResetSlot`). The kernel looked it up by the history's 4-tuple.
fn peer_reset_of(ev: &FailureEvent, hash_seed: u64) -> Option<&socktrace_common::SentReset> {
    if ev.flags & event_flags::HAS_PEER_RESET == 0 {
        return None;
    }
    let key = socktrace_common::reversed(&ev.history.addrs);
    ev.peer_reset
        .iter()
        .find(|slot| slot.check != 0 && slot.check == socktrace_common::sent_reset_check(hash_seed, &key, &slot.reset))
        .map(|slot| &slot.reset)
}

fn decode_history(h: &SocketHistory) -> History {
    let n = h.n_transitions as usize;
    let kept = n.min(HISTORY_TRANSITIONS);
    let transitions = (n - kept..n)
        .map(|i| &h.transitions[i % HISTORY_TRANSITIONS])
        .map(|t| StateChange {
            ts_ns: t.ts_ns,
            old: TcpState::from_kernel(t.old_state),
            new: TcpState::from_kernel(t.new_state),
            in_traced_task: t.in_traced_task != 0,
        })
        .collect();
    History {
        transitions,
        retransmits: h.retransmits,
        last_retransmit_ns: (h.last_retransmit_ns != 0).then_some(h.last_retransmit_ns),
        first_retransmit_ns: (h.first_retransmit_ns != 0).then_some(h.first_retransmit_ns),
        rst_received: stamp(&h.rst_received),
        rst_sent: stamp(&h.rst_sent).map(|s| (s, (h.rst_sent.value >= 0).then_some(h.rst_sent.value))),
        error_report: stamp(&h.error_report).map(|s| (s, h.error_report.value.saturating_abs())),
        at_attach: stamp(&h.at_attach).map(|s| (s, h.at_attach.value.saturating_abs())),
        at_attach_idle_jiffies: if h.at_attach.ts_ns != 0 {
            let known = |j: u32| (j != u32::MAX).then_some(j);
            (known(h.at_attach_sent_ago), known(h.at_attach_received_ago))
        } else {
            (None, None)
        },
        rst_segment: (h.rst_segment.seen != 0).then_some(h.rst_segment),
        refused_syn_seq: (h.rst_received.ts_ns != 0
            && h.rst_received.state == socktrace_common::tcp_state::SYN_SENT
            && h.rst_received.value != 0)
            .then_some(h.rst_received.value as u32),
    }
}

/// The remote end of `a` (a connection's, as the kernel keeps it).
pub fn remote_endpoint(a: &SockAddrs) -> Option<SocketAddr> {
    endpoint(a, false)
}

/// The local (`local = true`) or remote end, if the kernel had filled it in.
fn endpoint(a: &SockAddrs, local: bool) -> Option<SocketAddr> {
    let (addr, port) = if local { (&a.saddr, a.sport) } else { (&a.daddr, a.dport) };
    if port == 0 {
        return None;
    }
    let ip = match a.family {
        AF_INET => IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])),
        AF_INET6 => {
            let v6 = Ipv6Addr::from(*addr);
            // Dual-stack sockets show IPv4 peers as ::ffff:a.b.c.d; print them as IPv4.
            v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use socktrace_common::{SockSnapshot, Transition};

    /// The load's hash seed, for the events these tests decode.
    const SEED: u64 = 0x5eed;

    fn sample() -> FailureEvent {
        let mut ev = FailureEvent {
            ts_ns: 5_000,
            sk: 0xffff_8880_1234_0000,
            ret: -111,
            pid: 42,
            tid: 43,
            syscall_nr: libc::SYS_connect as u32,
            fd: 3,
            flags: event_flags::IS_SOCKET | event_flags::HAS_HISTORY | event_flags::HAS_CONNECT_ADDR,
            ..Default::default()
        };
        ev.comm[..4].copy_from_slice(b"demo");
        ev.sock = SockSnapshot { sock_type: 1, protocol: 6, state: 7, ..Default::default() };
        ev.sock.addrs.family = AF_INET;
        ev.history.addrs = SockAddrs {
            family: AF_INET,
            sport: 40122,
            dport: 9,
            saddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            daddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ..Default::default()
        };
        ev.history.n_transitions = 2;
        ev.history.transitions[0] =
            Transition { ts_ns: 1_000, old_state: 7, new_state: 2, in_traced_task: 1, _pad: [0; 5] };
        ev.history.transitions[1] =
            Transition { ts_ns: 2_000, old_state: 2, new_state: 7, in_traced_task: 1, _pad: [0; 5] };
        ev.history.rst_received = StampedState { ts_ns: 1_900, state: 2, current_tgid: 77, ..Default::default() };
        ev
    }

    fn bytes(ev: &FailureEvent) -> Vec<u8> {
        let p = ev as *const FailureEvent as *const u8;
        unsafe { std::slice::from_raw_parts(p, std::mem::size_of::<FailureEvent>()) }.to_vec()
    }

    #[test]
    fn decodes_a_refused_connect() {
        let f = decode(&bytes(&sample()), SEED).unwrap();
        assert_eq!(f.errno, Some(111));
        assert_eq!(f.syscall, Some(Syscall::Connect));
        assert_eq!(f.comm, b"demo");
        assert!(f.is_tcp);
        assert_eq!(f.state_now, Some(TcpState::Close));
        assert_eq!(f.local, Some("127.0.0.1:40122".parse().unwrap()));
        assert_eq!(f.remote, Some("127.0.0.1:9".parse().unwrap()));
        assert_eq!(f.history.transitions.len(), 2);
        assert_eq!(f.history.transitions[0].new, Some(TcpState::SynSent));
        assert_eq!(f.history.rst_received.unwrap().state, Some(TcpState::SynSent));
        assert_eq!(f.history.rst_received.unwrap().current_tgid, 77);
        assert_eq!(f.history.error_report, None);
        assert_eq!(f.kernel_ret, None);
    }

    /// A connect() that failed names the peer it was given, even where the socket's history
    /// holds an earlier connect's (a second connect on the socket, failing before the kernel
    /// stored its destination).
    #[test]
    fn a_failing_connect_names_its_own_argument() {
        let mut ev = sample();
        ev.connect_addr = SockAddrs { family: AF_INET, dport: 8080, ..Default::default() };
        ev.connect_addr.daddr[..4].copy_from_slice(&[10, 0, 0, 5]);
        assert_eq!(decode(&bytes(&ev), SEED).unwrap().remote, Some("10.0.0.5:8080".parse().unwrap()));
        // Without the argument (a failure reported through SO_ERROR), the history's peer.
        ev.flags &= !event_flags::HAS_CONNECT_ADDR;
        assert_eq!(decode(&bytes(&ev), SEED).unwrap().remote, Some("127.0.0.1:9".parse().unwrap()));
    }

    /// The sender's record is taken only when the slot's check matches the connection the
    /// kernel looked it up for: another connection's RST in the slot, or a record torn by a
    /// writer, gives no sender (never the wrong one).
    #[test]
    fn a_sent_reset_is_taken_only_with_its_check() {
        use socktrace_common::{reversed, sent_reset_check, SentReset, SentResetSlot};
        let mut ev = sample();
        ev.flags |= event_flags::HAS_PEER_RESET;
        let mut reset = SentReset { ts_ns: 1_850, tgid: 4242, state: 1, ..Default::default() };
        reset.comm[..5].copy_from_slice(b"nginx");
        let key = reversed(&ev.history.addrs);
        assert_eq!((key.sport, key.dport), (9, 40122));
        // The connection's slot is the third of its set; the others hold nothing.
        ev.peer_reset[2] = SentResetSlot { reset, check: sent_reset_check(SEED, &key, &reset), tag: 1 };
        let f = decode(&bytes(&ev), SEED).unwrap();
        let p = f.peer_reset.expect("the slot is this connection's");
        assert_eq!((p.tgid, p.comm.as_slice(), p.state), (4242, &b"nginx"[..], Some(TcpState::Established)));

        // Another connection's RST in the same slot.
        let mut other = ev;
        let mut their_key = key;
        their_key.sport = 10;
        other.peer_reset[2].check = sent_reset_check(SEED, &their_key, &reset);
        assert!(decode(&bytes(&other), SEED).unwrap().peer_reset.is_none());
        // A copy torn between two writers: one record's fields, another's check.
        let mut torn = ev;
        torn.peer_reset[2].reset.tgid = 1;
        assert!(decode(&bytes(&torn), SEED).unwrap().peer_reset.is_none());
        // Another load's record (another seed).
        assert!(decode(&bytes(&ev), SEED ^ 1).unwrap().peer_reset.is_none());
        // The flag alone, on a slot never written.
        let mut empty = ev;
        empty.peer_reset = Default::default();
        assert!(decode(&bytes(&empty), SEED).unwrap().peer_reset.is_none());
    }

    #[test]
    fn restart_codes_fold_into_eintr() {
        let mut ev = sample();
        ev.syscall_nr = libc::SYS_read as u32;
        ev.ret = -512;
        let f = decode(&bytes(&ev), SEED).unwrap();
        assert_eq!((f.errno, f.ret, f.kernel_ret), (Some(4), -4, Some(-512)));
    }

    #[test]
    fn ring_of_transitions_is_read_oldest_first() {
        let mut ev = sample();
        ev.history.n_transitions = (HISTORY_TRANSITIONS + 3) as u32;
        for i in 0..HISTORY_TRANSITIONS + 3 {
            ev.history.transitions[i % HISTORY_TRANSITIONS].ts_ns = i as u64 + 1;
        }
        let f = decode(&bytes(&ev), SEED).unwrap();
        let ts: Vec<u64> = f.history.transitions.iter().map(|t| t.ts_ns).collect();
        assert_eq!(ts, (4..=(HISTORY_TRANSITIONS as u64 + 3)).collect::<Vec<_>>());
    }

    #[test]
    fn so_error_is_a_connect_failure() {
        let mut ev = sample();
        ev.syscall_nr = libc::SYS_getsockopt as u32;
        ev.ret = 0;
        ev.so_error = 111;
        ev.flags |= event_flags::FROM_SO_ERROR;
        let f = decode(&bytes(&ev), SEED).unwrap();
        assert_eq!(f.errno, Some(111));
        assert_eq!(f.ret, -111);
        assert_eq!(f.syscall_name(), "connect");
        assert_eq!(f.call_display(), "connect(fd=3, SO_ERROR)");
    }

    /// An event loop reading SO_ERROR after EPOLLERR on an accepted (or long established)
    /// socket never called connect: the call is named as the getsockopt it was.
    #[test]
    fn so_error_on_a_socket_that_is_not_connecting_is_a_getsockopt() {
        let mut ev = sample();
        ev.syscall_nr = libc::SYS_getsockopt as u32;
        ev.ret = 0;
        ev.so_error = 104;
        ev.flags |= event_flags::FROM_SO_ERROR;
        // Accepted: SYN_RECV -> ESTABLISHED, then reset.
        ev.history.n_transitions = 2;
        ev.history.transitions[0] = Transition { ts_ns: 1_000, old_state: 3, new_state: 1, ..Default::default() };
        ev.history.transitions[1] = Transition { ts_ns: 2_000, old_state: 1, new_state: 7, ..Default::default() };
        ev.history.rst_received = StampedState { ts_ns: 1_900, state: 1, ..Default::default() };
        let f = decode(&bytes(&ev), SEED).unwrap();
        assert!(f.from_so_error && !f.reported_as_connect && !f.is_connect());
        assert_eq!(f.syscall_name(), "getsockopt");
        assert_eq!(f.call_display(), "getsockopt(fd=3, SO_ERROR)");
        // A connect that was established and later reset: not a connect result either.
        ev.history.n_transitions = 3;
        ev.history.transitions[0] = Transition { ts_ns: 500, old_state: 7, new_state: 2, ..Default::default() };
        ev.history.transitions[1] = Transition { ts_ns: 1_000, old_state: 2, new_state: 1, ..Default::default() };
        ev.history.transitions[2] = Transition { ts_ns: 2_000, old_state: 1, new_state: 7, ..Default::default() };
        assert!(!decode(&bytes(&ev), SEED).unwrap().reported_as_connect);
        // Nothing known and the socket closed: no evidence of a connect, so none is claimed.
        ev.history.n_transitions = 0;
        ev.history.rst_received = StampedState::default();
        ev.flags &= !event_flags::HAS_HISTORY;
        assert!(!decode(&bytes(&ev), SEED).unwrap().reported_as_connect);
        // Still in SYN_SENT: the connect's own (soft) error.
        ev.sock.state = 2;
        assert!(decode(&bytes(&ev), SEED).unwrap().reported_as_connect);
    }

    #[test]
    fn io_uring_requests_are_named_and_their_fd_kind_kept() {
        use crate::model::IoUringOp;
        let mut ev = sample();
        ev.syscall_nr = socktrace_common::IO_URING_CALL_BASE + 27;
        ev.ret = -104;
        ev.fd = 5;
        let f = decode(&bytes(&ev), SEED).unwrap();
        assert_eq!(f.syscall, Some(Syscall::IoUring(IoUringOp::Recv)));
        assert_eq!(f.call_display(), "io_uring:recv(fd=5)");
        assert!(!f.is_send());
        ev.flags |= event_flags::FIXED_FILE;
        ev.fd = -1;
        assert_eq!(decode(&bytes(&ev), SEED).unwrap().call_display(), "io_uring:recv(fixed file)");
        ev.fd = 2;
        assert_eq!(decode(&bytes(&ev), SEED).unwrap().call_display(), "io_uring:recv(fixed file 2)");
        ev.fd = -1;
        ev.flags &= !event_flags::FIXED_FILE;
        assert_eq!(decode(&bytes(&ev), SEED).unwrap().call_display(), "io_uring:recv(fd=?)");
        ev.syscall_nr = socktrace_common::IO_URING_CALL_BASE + 16;
        assert!(decode(&bytes(&ev), SEED).unwrap().is_connect());
    }

    #[test]
    fn splice_says_which_end_the_socket_is() {
        let mut ev = sample();
        ev.syscall_nr = libc::SYS_splice as u32;
        ev.ret = -104;
        let f = decode(&bytes(&ev), SEED).unwrap();
        assert_eq!(f.call_display(), "splice(fd_out=3)");
        assert!(f.is_send());
        ev.flags |= event_flags::SOCKET_IS_SOURCE;
        let f = decode(&bytes(&ev), SEED).unwrap();
        assert_eq!(f.call_display(), "splice(fd_in=3)");
        assert!(!f.is_send());
    }

    #[test]
    fn ipv4_mapped_ipv6_prints_as_ipv4() {
        let mut a = SockAddrs { family: AF_INET6, dport: 80, ..Default::default() };
        a.daddr[10] = 0xff;
        a.daddr[11] = 0xff;
        a.daddr[12..].copy_from_slice(&[10, 0, 0, 5]);
        assert_eq!(endpoint(&a, false), Some("10.0.0.5:80".parse().unwrap()));
    }

    #[test]
    fn truncated_and_arbitrary_records_never_panic() {
        let full = bytes(&sample());
        for len in 0..full.len() {
            assert!(matches!(decode(&full[..len], SEED), Err(DecodeError::Truncated { .. })));
        }
        // Arbitrary bytes of the right length decode to something, without panicking.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let junk: Vec<u8> = (0..full.len())
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let f = decode(&junk, SEED).unwrap();
            let _ = crate::diagnose::diagnose(&f);
        }
    }
}
