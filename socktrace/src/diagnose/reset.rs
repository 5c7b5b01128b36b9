//! Resets: an RST that arrived on this socket (a refusal in SYN_SENT, a reset elsewhere, the
//! EPIPE and ENOTCONN after it), who on this host sent it and why, what its segment says of a
//! remote sender; and an RST this socket sent itself.
//!
//! `tcp_reset()` turns an RST into ECONNREFUSED in SYN_SENT, EPIPE in CLOSE_WAIT and
//! ECONNRESET elsewhere, then closes the socket; the error is reported once, later writes get
//! EPIPE and later reads 0.

use super::history::{born_state, peer, state_name};
use super::phrases::{rst_reason, rst_reason_short, RST_REASON_TCP_STATE};
use super::{drops, Diagnosis};
use crate::facts::{Failure, Stamp};
use crate::model::{errno::*, Cause, TcpState};
use crate::text::escape_bytes;
use serde::Serialize;
use socktrace_common::tcp_flags::ACK;

/// What an RST segment says of its sender (`facts.rst_segment.origin` in JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RstOrigin {
    /// The answer to our SYN.
    Refused,
    /// RST+ACK: a socket that still had the connection aborted it.
    Aborted,
    /// RST without ACK: the answer of a host with no connection for our segment.
    NoConnection,
}

/// The origin of the RST segment this socket received, where the kernel showed it.
pub fn origin(f: &Failure) -> Option<RstOrigin> {
    let seg = f.history.rst_segment?;
    Some(if f.history.rst_received.is_some_and(|r| r.state == Some(TcpState::SynSent)) {
        RstOrigin::Refused
    } else if seg.flags & ACK != 0 {
        RstOrigin::Aborted
    } else {
        RstOrigin::NoConnection
    })
}

/// A refusal, reset, or the EPIPE/ENOTCONN/ECONNABORTED after one, by an RST this socket
/// received.
pub fn rst_received(f: &Failure, e: i32) -> Option<Diagnosis> {
    use TcpState::*;
    let rst = f.history.rst_received?;
    if !matches!(e, ECONNREFUSED | ECONNRESET | EPIPE | ECONNABORTED | ENOTCONN) {
        return None;
    }
    let remote = peer(f.remote);
    let state = rst.state;
    let sender = sender(f, rst);
    let explain = match (e, state) {
        (ECONNREFUSED, Some(SynSent)) => match &f.host.nat {
            Some(n) => format!("peer answered the SYN with RST: {}", super::nat::refused(n)),
            None => format!("peer answered the SYN with RST: nothing listens on {remote}"),
        },
        (_, Some(CloseWait)) => format!(
            "{remote} had closed its end (FIN) and answered our later data with RST: the peer terminated prematurely"
        ),
        (EPIPE, _) => format!(
            "{remote} reset the connection in {} earlier; the reset was reported once and writes after it are a broken pipe",
            state_name(state)
        ),
        (ENOTCONN, _) => format!(
            "{remote} reset the connection in {} earlier and the socket closed: there is no connection left to use",
            state_name(state)
        ),
        (ECONNABORTED, _) => format!("{remote} reset the connection in {} before it was accepted", state_name(state)),
        _ => match (&sender, segment_says(f)) {
            (Some(s), _) => format!("{remote} reset the connection (RST in {}): {s}", state_name(state)),
            (None, Some(origin)) => format!("{remote} reset the connection (RST in {}): {origin}", state_name(state)),
            (None, None) => format!(
                "{remote} reset the connection (RST in {}): it aborted, closed with unread data, or no longer knows \
                 the connection{}",
                state_name(state),
                match &f.rst_segment_unseen {
                    Some(why) => format!(" (the RST segment would tell which, and it was not seen: {why})"),
                    None => String::new(),
                }
            ),
        },
    };
    // The sender's account goes with the explanations that do not already carry it.
    let refusal = matches!((e, state), (ECONNREFUSED, Some(SynSent)));
    let explain = format!("{explain}{}", drops::rsts_before(f, rst));
    let explain = match (&sender, explain.contains("reset it:")) {
        (Some(s), false) if !refusal => format!("{explain}; {s}"),
        (None, _) if !refusal && state != Some(CloseWait) && !explain.contains("its RST") => match segment_says(f) {
            Some(origin) => format!("{explain}; {origin}"),
            None => explain,
        },
        _ => explain,
    };
    Some(Diagnosis::new(Cause::RstReceived, state, Some(rst.ts_ns), explain))
}

/// How long before its arrival a local peer's record of an RST may be and still be that RST:
/// between namespaces the receiver may handle it later than the sender traces it (a backlog
/// softirq), by microseconds, or milliseconds on an emulated CPU.
const SENT_BEFORE_ARRIVAL_NS: u64 = 50_000_000;

/// Who on this host sent the RST a socket received, and why, when its sender was a local
/// socket and the record is the same RST (sent just before it arrived). The process is named
/// only where the RST is sent from that process's own call (close, disconnect: the sender
/// was already CLOSE, or the kernel's reason says so); RSTs sent from softirq or a timer run
/// with an unrelated task on the CPU.
fn sender(f: &Failure, rst: Stamp) -> Option<String> {
    use TcpState::*;
    let p = f.peer_reset.as_ref()?;
    // The same RST: traced within a second after its arrival, or a little before. The
    // sender's record usually comes *after* the arrival: the kernel traces the RST once it is
    // transmitted, and on loopback the receiver processes it inside that transmission. How
    // long after depends on the sender being preempted between the two (tens of milliseconds
    // were seen on an emulated CPU), so a second is allowed. The record is keyed by this
    // connection's reversed 4-tuple, so only a new connection on the same four-tuple could put
    // another RST there, and it could not do so within a second of this one closing. Sent
    // well before the arrival, it is another RST: one dropped on its way (the peer's abort
    // that never arrived, before the RST from no socket that did).
    if p.ts_ns > rst.ts_ns + 1_000_000_000 || p.ts_ns + SENT_BEFORE_ARRIVAL_NS < rst.ts_ns {
        return None;
    }
    // The segment, where seen, must be the one the record describes: an aborting full socket
    // sends RST+ACK; no socket, a TIME_WAIT socket or a listener answer with an RST alone
    // when our segment carried an ACK.
    if let Some(seg) = f.history.rst_segment {
        let ack = seg.flags & ACK != 0;
        let answers_alone = p.no_socket || matches!(p.state, Some(TimeWait | Listen));
        if (ack && answers_alone) || (!ack && p.state == Some(Close)) {
            return None;
        }
    }
    let reason = p.reason_name.as_deref().map(rst_reason_short);
    let row = reason.and_then(rst_reason);
    // A dying process's RST comes from its exit's close: its own, whichever thread ran it.
    let from_call = p.state == Some(Close) || row.is_some_and(|r| r.from_call) || p.exit_code.is_some();
    let kernel = match reason {
        Some(r) => format!(" (kernel reason {r})"),
        None => " (this kernel gives no RST reason before 6.10)".into(),
    };
    if p.no_socket {
        return Some(format!(
            "this host's TCP reset it: no socket of this host owns the connection any more (it was closed and \
             forgotten, or the process restarted), so the kernel answered our segment itself{kernel}"
        ));
    }
    if let Some((queued, backlog)) = p.accept_queue {
        // The RST comes from the listener: the connection never left its handshake queue. Sent
        // while the client's segment is processed, so whoever is on the CPU is not its owner.
        let why = if queued > backlog {
            format!(
                "its accept queue was full ({queued} connections waiting, backlog {backlog}) when our handshake \
                 completed, and net.ipv4.tcp_abort_on_overflow makes the kernel reset such a connection instead of \
                 dropping its ACK: the server does not accept fast enough"
            )
        } else {
            format!("it refused to complete our handshake ({queued} of {backlog} waiting in its accept queue)")
        };
        return Some(format!("the listener of this host reset it: {why}{kernel}"));
    }
    let who = if from_call && p.tgid != 0 {
        format!("pid {} \"{}\" on this host", p.tgid, escape_bytes(&p.comm))
    } else {
        "a socket of this host".into()
    };
    let why = match (row, reason, p.state) {
        _ if p.exit_code.is_some() => format!(
            "it exited ({}) with the connection open{}",
            crate::facts::describe_exit(p.exit_code.unwrap_or(0)),
            if row.is_some_and(|r| r.name == "TCP_ABORT_ON_CLOSE") {
                " and data from us unread, so its kernel aborted the connection"
            } else {
                ""
            }
        ),
        (Some(r), _, _) => r.peer.to_string(),
        (None, Some(RST_REASON_TCP_STATE), Some(Close)) => {
            "it closed the socket with SO_LINGER 0 (an abortive close) or disconnected it".into()
        }
        (None, _, Some(Close)) => {
            "it closed the socket abortively (SO_LINGER 0, or with unread data) or disconnected it".into()
        }
        (None, Some(RST_REASON_TCP_STATE), _) => "it aborted the connection (tcp_abort: e.g. `ss -K`)".into(),
        (None, _, state) => format!("its socket sent it in {}", state_name(state)),
    };
    Some(format!("{who} reset it: {why}{kernel}"))
}

/// What an RST segment says of its sender, by the rules TCP senders follow (RFC 793 3.4, RFC
/// 5961): a host with no connection for a segment answers it with an RST that has no ACK and
/// takes its sequence number from the segment's acknowledgement; a socket that aborts its own
/// connection sends RST+ACK at its send sequence. Linux accepts an RST only at `rcv_nxt`
/// exactly (or one below, after a FIN), so an accepted one is in the window.
fn segment_says(f: &Failure) -> Option<String> {
    let seg = f.history.rst_segment?;
    if seg.flags & ACK == 0 {
        return Some(format!(
            "its RST has no ACK flag and sequence {} (the acknowledgement we had sent), the answer of a host that has \
             no connection for our segment: the peer no longer knows this connection (it closed the socket and our \
             data came after, or it restarted), or a NAT or firewall on the way forgot it",
            seg.seq
        ));
    }
    let unacked = seg.snd_nxt.wrapping_sub(seg.ack_seq);
    let acked = match unacked {
        0 => "everything we had sent had arrived".to_string(),
        n if n < 1 << 30 => format!("{n} bytes we had sent were not acknowledged"),
        _ => format!("acknowledging {} while we had sent up to {}", seg.ack_seq, seg.snd_nxt),
    };
    Some(format!(
        "its RST carries an ACK ({acked}), the form of an abort by a socket that still had the connection: the peer \
         closed it with unread data, with SO_LINGER 0, was killed (ss -K), or gave up on it"
    ))
}

/// An ECONNRESET or EPIPE because this socket sent an RST itself.
pub fn rst_sent(f: &Failure, e: i32) -> Option<Diagnosis> {
    if !matches!(e, ECONNRESET | EPIPE) {
        return None;
    }
    let (at, reason) = f.history.rst_sent?;
    let remote = peer(f.remote);
    let kernel = own_reason(f, reason);
    // A disconnect closes the socket before it sends the RST: the state the connection was
    // reset in is the one that close left.
    let state = born_state(f, at);
    let explain = if e == ECONNRESET {
        format!("this host reset the connection to {remote} in {}: {}{kernel}", state_name(state), own_why(f, at))
    } else {
        format!(
            "this host had reset the connection to {remote} in {} ({}{kernel}); writing after that is a broken pipe",
            state_name(state),
            own_why(f, at)
        )
    };
    Some(Diagnosis::new(Cause::RstSent, state, Some(at.ts_ns), explain))
}

/// The kernel's reason for an RST this socket sent, for the explanation: ` (kernel reason
/// NAME)`, or its bare number where this kernel's BTF names none.
fn own_reason(f: &Failure, reason: Option<i32>) -> String {
    match (&f.rst_sent_reason_name, reason) {
        (Some(name), _) => format!(" (kernel reason {})", rst_reason_short(name)),
        (None, Some(r)) => format!(" (kernel reason {r})"),
        (None, None) => String::new(),
    }
}

/// Why this socket sent its RST: the kernel's reason where it gives one (6.10+), else what the
/// context tells: the traced process's own call (a disconnect, an abortive close), or the
/// kernel on its own (a timer, a segment it received).
fn own_why(f: &Failure, at: Stamp) -> String {
    let own_call = at.current_tgid == f.pid;
    let reason = f.rst_sent_reason_name.as_deref().map(rst_reason_short);
    if let Some(row) = reason.and_then(rst_reason) {
        return row.own.into();
    }
    match reason {
        // An open connection reset from the process's own call, the socket still in its hands
        // (this failure is on it): a disconnect.
        Some(RST_REASON_TCP_STATE) | None if own_call && f.fd >= 0 => {
            "the process's own call reset it: it disconnected the socket (connect() with AF_UNSPEC), which resets \
             an open connection"
                .into()
        }
        Some(RST_REASON_TCP_STATE) => "it was aborted (tcp_abort, e.g. `ss -K`) or disconnected".into(),
        Some(other) => format!("the kernel's reason is {other}"),
        None => "the kernel reset it itself (a timer, or a segment it could not accept); this kernel gives no RST \
                 reason before 6.10"
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{diagnose, Diagnosis};
    use crate::facts::{Failure, History};
    use crate::model::{errno::*, Cause, IoUringOp, Syscall, TcpState, TcpState::*};
    use socktrace_common::RstSegment;

    fn rows() -> Vec<Row> {
        let premature = History {
            transitions: vec![
                tr(1_100, SynSent, Established),
                tr(3_000, Established, CloseWait),
                tr(5_000, CloseWait, Close),
            ],
            rst_received: Some(at(4_900, CloseWait)),
            error_report: Some((at(5_100, Close), EPIPE)),
            ..Default::default()
        };
        let we_reset = History {
            transitions: vec![tr(1_100, SynSent, Established), tr(3_000, Established, Close)],
            rst_sent: Some((at(2_900, Established), Some(2))),
            ..Default::default()
        };
        use Syscall::*;
        vec![
            Row::new(
                "connect refused by RST",
                failure(Connect, Some(ECONNREFUSED), Close, refused_by_rst()),
                Cause::RstReceived,
                Some(SynSent),
            ),
            Row::new(
                "read after peer RST",
                failure(Read, Some(ECONNRESET), Close, reset_established()),
                Cause::RstReceived,
                Some(Established),
            ),
            Row::new(
                "write after peer RST: first ECONNRESET",
                failure(Write, Some(ECONNRESET), Close, reset_established()),
                Cause::RstReceived,
                Some(Established),
            ),
            Row::new(
                "write after peer RST: then EPIPE",
                failure(Sendto, Some(EPIPE), Close, reset_established()),
                Cause::RstReceived,
                Some(Established),
            ),
            Row::new(
                "server terminated prematurely",
                failure(Write, Some(EPIPE), Close, premature),
                Cause::RstReceived,
                Some(CloseWait),
            ),
            Row::new(
                "we reset it ourselves",
                failure(Read, Some(ECONNRESET), Close, we_reset),
                Cause::RstSent,
                Some(Established),
            ),
            Row::new(
                "sendfile after peer RST: EPIPE",
                failure(Sendfile, Some(EPIPE), Close, reset_established()),
                Cause::RstReceived,
                Some(Established),
            ),
            Row::new(
                "splice into a reset socket",
                failure(Splice, Some(ECONNRESET), Close, reset_established()),
                Cause::RstReceived,
                Some(Established),
            ),
            Row::new(
                "shutdown after peer RST: ENOTCONN",
                failure(Shutdown, Some(ENOTCONN), Close, reset_established()),
                Cause::RstReceived,
                Some(Established),
            ),
            Row::new(
                "io_uring recv after peer RST",
                failure(IoUring(IoUringOp::Recv), Some(ECONNRESET), Close, reset_established()),
                Cause::RstReceived,
                Some(Established),
            ),
            Row::new(
                "io_uring connect refused by RST",
                failure(IoUring(IoUringOp::Connect), Some(ECONNREFUSED), Close, refused_by_rst()),
                Cause::RstReceived,
                Some(SynSent),
            ),
        ]
    }

    #[test]
    fn reset_rows() {
        check_rows(&rows());
        let refused = diagnosis_of(&rows(), "connect refused by RST").explain;
        assert!(refused.contains("RST") && refused.contains("nothing listens on 127.0.0.1:9"), "{refused}");
    }

    #[test]
    fn async_connect_result_is_labelled_like_a_connect() {
        let mut f = row(&rows(), "connect refused by RST").failure.clone();
        f.syscall = Some(Syscall::Getsockopt);
        f.reported_as_connect = true;
        assert_eq!(diagnose(&f).cause, Cause::RstReceived);
    }

    /// A local peer's RST: who sent it and why, from the sender's own record; the process only
    /// where the RST came from its own call.
    #[test]
    fn reset_by_a_local_peer_names_who_and_why() {
        use crate::facts::PeerReset;
        let h = History {
            transitions: vec![tr(1_100, SynSent, Established), tr(5_000, Established, Close)],
            rst_received: Some(at(4_900, Established)),
            ..Default::default()
        };
        let sent = |state, reason: Option<&str>, ts_ns| PeerReset {
            ts_ns,
            tgid: 4884,
            comm: b"python3".to_vec(),
            reason: reason.map(|_| 3),
            reason_name: reason.map(String::from),
            state: Some(state),
            no_socket: false,
            accept_queue: None,
            exit_code: None,
        };
        let with = |p: PeerReset| Failure {
            peer_reset: Some(p),
            ..failure(Syscall::Read, Some(ECONNRESET), Close, h.clone())
        };
        let dg = diagnose(&with(sent(Close, Some("SK_RST_REASON_TCP_ABORT_ON_CLOSE"), 4_800)));
        assert_eq!(dg.cause, Cause::RstReceived);
        assert!(
            dg.explain.contains(
                "pid 4884 \"python3\" on this host reset it: it closed the socket with unread data (kernel reason \
                 TCP_ABORT_ON_CLOSE)"
            ),
            "{}",
            dg.explain
        );
        // Before 6.10: no reason; a sender already CLOSE sent it from close/disconnect.
        let dg = diagnose(&with(sent(Close, None, 4_800)));
        assert!(dg.explain.contains("pid 4884 \"python3\" on this host reset it: it closed the socket abortively"));
        assert!(dg.explain.contains("no RST reason before 6.10"), "{}", dg.explain);
        // Sent from a timer: the task on the CPU is not the sender, so no pid is named.
        let dg = diagnose(&with(sent(Established, Some("SK_RST_REASON_TCP_KEEPALIVE_TIMEOUT"), 4_800)));
        assert!(dg.explain.contains("a socket of this host reset it: its keepalive probes went unanswered"));
        assert!(!dg.explain.contains("4884"), "{}", dg.explain);
        // A record traced after the arrival is still this RST (the sender traces it once it
        // is transmitted, and may be preempted in between)...
        let dg = diagnose(&with(sent(Close, None, 4_900 + 50_000_000)));
        assert!(dg.explain.contains("pid 4884 \"python3\" on this host reset it"), "{}", dg.explain);
        // ...but a record seconds away from it is another RST.
        for ts in [0, 5_000_000_000] {
            let far = History { rst_received: Some(at(2_500_000_000, Established)), ..h.clone() };
            let f = Failure {
                peer_reset: Some(sent(Close, None, ts)),
                ..failure(Syscall::Read, Some(ECONNRESET), Close, far)
            };
            assert!(!diagnose(&f).explain.contains("on this host"), "{ts}: {}", diagnose(&f).explain);
        }
        // A record from 200 ms before the arrival is another RST (one dropped on its way).
        let later = History { rst_received: Some(at(200_005_000, Established)), ..h.clone() };
        let f = Failure {
            peer_reset: Some(sent(Close, None, 4_800)),
            ..failure(Syscall::Read, Some(ECONNRESET), Close, later.clone())
        };
        assert!(!diagnose(&f).explain.contains("on this host"), "{}", diagnose(&f).explain);
        // Where the segment is seen it must match the record: an RST alone is not the abort
        // a CLOSE socket sends (RST+ACK), and the segment then tells the origin itself.
        let alone =
            RstSegment { seq: 7, ack_seq: 0, rcv_nxt: 7, snd_nxt: 9, snd_una: 9, flags: 0x04, seen: 1, _pad: [0; 2] };
        let seen = History { rst_segment: Some(alone), ..h.clone() };
        let f = Failure {
            peer_reset: Some(sent(Close, None, 4_900)),
            ..failure(Syscall::Read, Some(ECONNRESET), Close, seen)
        };
        let dg = diagnose(&f);
        assert!(!dg.explain.contains("pid 4884"), "{}", dg.explain);
        assert!(dg.explain.contains("its RST has no ACK flag and sequence 7"), "{}", dg.explain);
        assert!(dg.explain.contains("the peer no longer knows this connection"), "{}", dg.explain);
        // The EPIPE after it carries the sender too.
        let f = Failure {
            peer_reset: Some(sent(Close, None, 4_800)),
            ..failure(Syscall::Write, Some(EPIPE), Close, h.clone())
        };
        assert!(diagnose(&f).explain.contains("; pid 4884 \"python3\" on this host reset it"));
        // A listener's RST: its queue decides, never the task on the CPU (the client's softirq).
        let listener = |queued, backlog| PeerReset {
            state: Some(Listen),
            accept_queue: Some((queued, backlog)),
            ..sent(Listen, Some("SK_RST_REASON_INVALID_SYN"), 4_800)
        };
        let dg = diagnose(&with(listener(3, 2)));
        assert!(
            dg.explain.contains(
                "the listener of this host reset it: its accept queue was full (3 connections waiting, backlog 2)"
            ),
            "{}",
            dg.explain
        );
        assert!(dg.explain.contains("tcp_abort_on_overflow") && !dg.explain.contains("4884"), "{}", dg.explain);
        let dg = diagnose(&with(listener(0, 128)));
        assert!(dg.explain.contains("it refused to complete our handshake (0 of 128 waiting"), "{}", dg.explain);
        assert!(!dg.explain.contains("tcp_abort_on_overflow"), "{}", dg.explain);
        // No socket at all: the kernel answered for nobody.
        let gone = PeerReset { state: None, no_socket: true, ..sent(Close, Some("SK_RST_REASON_NO_SOCKET"), 4_800) };
        let dg = diagnose(&with(gone));
        assert!(
            dg.explain.contains("this host's TCP reset it: no socket of this host owns the connection"),
            "{}",
            dg.explain
        );
        assert!(dg.explain.contains("(kernel reason NO_SOCKET)") && !dg.explain.contains("4884"), "{}", dg.explain);
    }

    /// A remote peer's RST, told by its segment alone (RFC 793): RST+ACK is an abort by a
    /// socket that had the connection (with how much of ours it had), an RST without ACK the
    /// answer of a host with no connection. Without the segment the explanation hedges and
    /// says why it cannot tell.
    #[test]
    fn remote_rst_origin_from_the_segment() {
        let h = |seg: Option<RstSegment>| History {
            transitions: vec![
                tr(1_000, Close, SynSent),
                tr(2_000, SynSent, Established),
                tr(5_000, Established, Close),
            ],
            rst_received: Some(at(5_000, Established)),
            rst_segment: seg,
            ..History::default()
        };
        let seg = |flags, ack_seq| RstSegment {
            seq: 1000,
            ack_seq,
            rcv_nxt: 1000,
            snd_nxt: 5000,
            snd_una: 4000,
            flags,
            seen: 1,
            _pad: [0; 2],
        };
        let read = |seg| diagnose(&failure(Syscall::Read, Some(ECONNRESET), Close, h(seg)));
        let dg = read(Some(seg(0x14, 5000)));
        assert_eq!((dg.cause, dg.state), (Cause::RstReceived, Some(Established)));
        assert!(dg.explain.contains("its RST carries an ACK (everything we had sent had arrived)"), "{}", dg.explain);
        assert!(dg.explain.contains("peer closed it with unread data"), "{}", dg.explain);
        let dg = read(Some(seg(0x14, 4000)));
        assert!(dg.explain.contains("1000 bytes we had sent were not acknowledged"), "{}", dg.explain);
        let dg = read(Some(seg(0x04, 0)));
        assert!(dg.explain.contains("its RST has no ACK flag and sequence 1000"), "{}", dg.explain);
        assert!(dg.explain.contains("or a NAT or firewall on the way forgot it"), "{}", dg.explain);
        // The EPIPE after it carries the origin too.
        let dg = diagnose(&failure(Syscall::Write, Some(EPIPE), Close, h(Some(seg(0x04, 0)))));
        assert!(dg.explain.contains("; its RST has no ACK flag"), "{}", dg.explain);
        // Not seen: the hedge, and why.
        let f = Failure {
            rst_segment_unseen: Some("tcp_reset takes no segment on this kernel (it does from 5.14)".into()),
            ..failure(Syscall::Read, Some(ECONNRESET), Close, h(None))
        };
        let dg = diagnose(&f);
        assert!(dg.explain.contains("it aborted, closed with unread data, or no longer knows the connection"));
        assert!(dg
            .explain
            .contains("(the RST segment would tell which, and it was not seen: tcp_reset takes no segment"));
    }

    /// The origin the JSON names is the diagnosis's own (one derivation).
    #[test]
    fn the_origin_of_a_segment() {
        use super::RstOrigin;
        let seg =
            |flags| RstSegment { seq: 1, ack_seq: 1, rcv_nxt: 1, snd_nxt: 1, snd_una: 1, flags, seen: 1, _pad: [0; 2] };
        let with = |h: History, flags| Failure {
            ..failure(Syscall::Read, Some(ECONNRESET), Close, History { rst_segment: Some(seg(flags)), ..h })
        };
        let of = |f: &Failure| -> Option<RstOrigin> {
            let d: Diagnosis = diagnose(f);
            d.rst_origin
        };
        assert_eq!(of(&with(reset_established(), 0x14)), Some(RstOrigin::Aborted));
        assert_eq!(of(&with(reset_established(), 0x04)), Some(RstOrigin::NoConnection));
        assert_eq!(of(&with(refused_by_rst(), 0x14)), Some(RstOrigin::Refused));
        assert_eq!(of(&failure(Syscall::Read, Some(ECONNRESET), Close, reset_established())), None);
        let _: TcpState = Close;
    }
}
