//! ICMP errors and routing: a refusal by ICMP port-unreachable (the same ECONNREFUSED as an
//! RST), unreachables while connecting (hard errors: the connect fails at once, reported
//! *before* the socket closes), a soft error SO_ERROR returned while the connect still
//! retried, a UDP socket's error an ICMP message set, and a connect the routing table refused
//! before any packet was sent. Each names the ICMP message's sender where it was seen.

use super::history::{born_state, peer, reported, reported_first, state_name};
use super::Diagnosis;
use crate::facts::{Failure, IcmpMessage};
use crate::model::{errno::*, icmp_message, Cause, TcpState};
use socktrace_common::net;

/// The errnos the ICMP handlers set.
pub fn is_icmp_errno(e: i32) -> bool {
    matches!(e, EHOSTUNREACH | ENETUNREACH | ECONNREFUSED | EHOSTDOWN | ENONET | EPROTO | EACCES)
}

/// "; 10.0.0.1 (a router on the way) says: host unreachable (ICMP type 3 code 1)", for the
/// ICMP message received about this connection since it began; None if none was.
pub fn sender(f: &Failure) -> Option<String> {
    let m = f.icmp.as_ref().filter(|m| is_this_connections(f, m))?;
    let who = if f.remote.is_some_and(|r| r.ip() == m.from) { "the destination itself" } else { "a router on the way" };
    let family = if m.v6 { "ICMPv6" } else { "ICMP" };
    Some(format!(
        "; {} ({who}) says: {} ({family} type {} code {})",
        m.from,
        icmp_message(m.v6, m.icmp_type, m.code),
        m.icmp_type,
        m.code
    ))
}

/// The message was about this connection, not an earlier one on the same 4-tuple: it came
/// after the socket's first recorded transition (UDP has none: within the last minute), and
/// before the failure.
fn is_this_connections(f: &Failure, m: &IcmpMessage) -> bool {
    let born = f.history.transitions.first().map(|t| t.ts_ns).unwrap_or(f.ts_ns.saturating_sub(60_000_000_000));
    m.ts_ns >= born && m.ts_ns <= f.ts_ns
}

/// The ICMP message behind an errno the ICMP handlers set.
fn kind(e: i32) -> &'static str {
    match e {
        ECONNREFUSED => "port-unreachable",
        EHOSTUNREACH => "host-unreachable",
        ENETUNREACH => "net-unreachable",
        EACCES => "administratively-prohibited",
        _ => "unreachable",
    }
}

/// An ICMP diagnosis, with the message's sender where it was seen.
fn icmp(f: &Failure, state: Option<TcpState>, at: Option<u64>, explain: String) -> Diagnosis {
    let explain = explain + &sender(f).unwrap_or_default();
    Diagnosis::new(Cause::IcmpError, state, at, explain)
}

/// ECONNREFUSED reported without an RST: an ICMP port-unreachable answered the SYN.
pub fn refused(f: &Failure, e: i32) -> Option<Diagnosis> {
    match f.history.error_report {
        Some((at, ECONNREFUSED)) if e == ECONNREFUSED => Some(icmp(
            f,
            born_state(f, at),
            Some(at.ts_ns),
            format!(
                "an ICMP port-unreachable answered the SYN to {}: a firewall or router rejected it (no RST came from \
                 the host)",
                peer(f.remote)
            ),
        )),
        _ => None,
    }
}

/// A hard ICMP error: while connecting, or reported before the socket closed.
pub fn icmp_error(f: &Failure, e: i32) -> Option<Diagnosis> {
    let r = reported(f, e)?;
    if !is_icmp_errno(r.errno) || !(r.connecting || r.before_close) {
        return None;
    }
    let explain = format!(
        "an ICMP {} came back for {} while in {} ({}){}",
        kind(r.errno),
        peer(f.remote),
        state_name(r.state),
        name(r.errno),
        reported_first(e, r.errno)
    );
    Some(icmp(f, r.state, Some(r.at.ts_ns), explain))
}

/// A non-blocking connect's SO_ERROR with the socket still in SYN_SENT and no error reported:
/// the kernel returns sk_err_soft there, which only an ICMP error that arrived while the socket
/// was busy sets (a hard one would have closed it with a report).
pub fn soft_error_while_connecting(f: &Failure, e: i32) -> Option<Diagnosis> {
    let h = &f.history;
    let applies = f.reported_as_connect
        && f.state_now == Some(TcpState::SynSent)
        && h.error_report.is_none()
        && h.rst_received.is_none()
        && matches!(e, EHOSTUNREACH | ENETUNREACH | ECONNREFUSED | EACCES);
    if !applies {
        return None;
    }
    let explain = format!(
        "an ICMP {} came back for {} while connecting; it arrived while the socket was busy, so the kernel kept it \
         as a soft error (sk_err_soft), which SO_ERROR returned ({}); the connect itself was still retrying",
        kind(e),
        peer(f.remote),
        name(e)
    );
    Some(icmp(f, Some(TcpState::SynSent), None, explain))
}

/// A connect that failed before any SYN: the routing table refused it locally.
pub fn no_route(f: &Failure, e: i32) -> Option<Diagnosis> {
    let never_sent = !f.history.transitions.iter().any(|t| t.new == Some(TcpState::SynSent));
    if !(matches!(e, EHOSTUNREACH | ENETUNREACH) && f.is_connect() && never_sent) {
        return None;
    }
    let what = if e == ENETUNREACH { "network" } else { "host" };
    Some(Diagnosis::new(
        Cause::NoRoute,
        None,
        None,
        format!(
            "no route to {what} {}: the routing table refused the connect before any packet was sent",
            peer(f.remote)
        ),
    ))
}

/// A UDP socket's failure with the error an ICMP message set on it.
pub fn udp(f: &Failure, e: i32) -> Option<Diagnosis> {
    if f.protocol != net::IPPROTO_UDP {
        return None;
    }
    let (what, meaning) = match e {
        ECONNREFUSED => ("port-unreachable (type 3 code 3)", "nothing listens on that UDP port"),
        EHOSTUNREACH => ("host-unreachable (type 3)", "the host, or a firewall on the way, cannot be reached"),
        ENETUNREACH => ("net-unreachable (type 3)", "a router on the way has no route to that network"),
        _ => return None,
    };
    let (at, reported) = f.history.error_report?;
    if reported != e {
        return None;
    }
    let explain = format!(
        "an ICMP {what} came back for a datagram to {}: {meaning}; the connected UDP socket returns it on its next \
         call ({})",
        peer(f.remote),
        name(e)
    );
    Some(icmp(f, None, Some(at.ts_ns), explain))
}

#[cfg(test)]
mod tests {
    use super::super::diagnose;
    use super::super::test_support::*;
    use crate::facts::{Failure, History, Stamp, StateChange};
    use crate::model::{errno::*, icmp_message, Cause, Syscall, TcpState, TcpState::*};
    use socktrace_common::net;

    fn rows() -> Vec<Row> {
        let refused_icmp = History {
            transitions: connect_then_close(2_000),
            error_report: Some((at(1_900, SynSent), ECONNREFUSED)),
            ..Default::default()
        };
        let icmp_host = History {
            transitions: connect_then_close(2_000),
            error_report: Some((at(1_900, SynSent), EHOSTUNREACH)),
            ..Default::default()
        };
        let after_close = |e| History {
            transitions: connect_then_close(2_000),
            retransmits: 1,
            error_report: Some((at(2_100, Close), e)),
            ..Default::default()
        };
        use Syscall::*;
        vec![
            Row::new(
                "connect refused by ICMP port-unreachable",
                failure(Connect, Some(ECONNREFUSED), Close, refused_icmp),
                Cause::IcmpError,
                Some(SynSent),
            ),
            Row::new(
                "ICMP host unreachable while connecting",
                failure(Connect, Some(EHOSTUNREACH), Close, icmp_host),
                Cause::IcmpError,
                Some(SynSent),
            ),
            Row::new(
                "ICMP port-unreachable reported after tcp_done (6.10+)",
                failure(Connect, Some(ECONNREFUSED), Close, after_close(ECONNREFUSED)),
                Cause::IcmpError,
                Some(SynSent),
            ),
            Row::new(
                "ICMP host-unreachable reported after tcp_done (6.10+)",
                failure(Connect, Some(EHOSTUNREACH), Close, after_close(EHOSTUNREACH)),
                Cause::IcmpError,
                Some(SynSent),
            ),
            Row::new(
                "no route: unreachable route",
                failure(Connect, Some(EHOSTUNREACH), Close, History::default()),
                Cause::NoRoute,
                None,
            ),
            Row::new(
                "no route at all",
                failure(Connect, Some(ENETUNREACH), Close, History::default()),
                Cause::NoRoute,
                None,
            ),
        ]
    }

    #[test]
    fn icmp_rows() {
        check_rows(&rows());
    }

    #[test]
    fn refusal_by_rst_and_by_icmp_explain_differently() {
        let rst = diagnose(&failure(Syscall::Connect, Some(ECONNREFUSED), Close, refused_by_rst())).explain;
        let icmp = diagnosis_of(&rows(), "connect refused by ICMP port-unreachable").explain;
        assert!(rst.contains("RST") && rst.contains("nothing listens on 127.0.0.1:9"), "{rst}");
        assert!(icmp.contains("ICMP") && !icmp.contains("nothing listens"), "{icmp}");
    }

    #[test]
    fn udp_error_set_by_icmp_is_explained_by_it() {
        let mut f = failure(Syscall::Recvfrom, Some(ECONNREFUSED), Close, History::default());
        (f.is_tcp, f.protocol, f.sock_type, f.state_now) = (false, net::IPPROTO_UDP, net::SOCK_DGRAM, None);
        let bare = diagnose(&f);
        assert_eq!(bare.cause, Cause::Unknown);
        assert!(bare.explain.contains("no ICMP error was reported"), "{}", bare.explain);
        f.history.error_report = Some((Stamp { ts_ns: 5_000, state: None, current_tgid: 0 }, ECONNREFUSED));
        let dg = diagnose(&f);
        assert_eq!((dg.cause, dg.state, dg.cause_ts_ns), (Cause::IcmpError, None, Some(5_000)));
        assert!(dg.explain.contains("port-unreachable (type 3 code 3) came back for a datagram to 127.0.0.1:9"));
        // A report of another error does not explain this one.
        f.history.error_report = Some((Stamp { ts_ns: 5_000, state: None, current_tgid: 0 }, EHOSTUNREACH));
        assert_eq!(diagnose(&f).cause, Cause::Unknown);
    }

    fn remote_failure(syscall: Syscall, e: i32, state_now: TcpState, history: History) -> Failure {
        Failure {
            reported_as_connect: syscall == Syscall::Getsockopt,
            local: Some("10.0.1.2:40000".parse().unwrap()),
            remote: Some("10.0.2.2:80".parse().unwrap()),
            ..Failure::for_test(syscall, Some(e), state_now, history)
        }
    }

    /// A router's ICMP host-unreachable while the connecting socket was busy: no report, the
    /// socket still in SYN_SENT, SO_ERROR returns sk_err_soft. Not "unknown".
    #[test]
    fn so_error_from_a_soft_icmp_error_while_connecting() {
        let h = History {
            transitions: vec![StateChange { ts_ns: 1_000, old: Some(Close), new: Some(SynSent), in_traced_task: true }],
            ..Default::default()
        };
        let dg = diagnose(&remote_failure(Syscall::Getsockopt, EHOSTUNREACH, SynSent, h.clone()));
        assert_eq!((dg.cause, dg.state), (Cause::IcmpError, Some(SynSent)));
        assert!(dg.explain.contains("ICMP host-unreachable") && dg.explain.contains("sk_err_soft"), "{}", dg.explain);
        // The same errno from a blocking connect that closed with a report is the hard case.
        let mut closed = h.clone();
        closed.transitions.push(StateChange {
            ts_ns: 2_000,
            old: Some(SynSent),
            new: Some(Close),
            in_traced_task: false,
        });
        closed.error_report = Some((Stamp { ts_ns: 1_990, state: Some(SynSent), current_tgid: 0 }, EHOSTUNREACH));
        let dg = diagnose(&remote_failure(Syscall::Connect, EHOSTUNREACH, Close, closed));
        assert_eq!(dg.cause, Cause::IcmpError);
        assert!(!dg.explain.contains("sk_err_soft"), "{}", dg.explain);
    }

    /// The ICMP message's own account: who sent it (the destination, or a router on the way)
    /// and which message, only when it came during this connection.
    #[test]
    fn an_icmp_error_names_its_sender() {
        use crate::facts::IcmpMessage;
        let h = History {
            transitions: vec![StateChange { ts_ns: 1_000, old: Some(Close), new: Some(SynSent), in_traced_task: true }],
            ..Default::default()
        };
        let mut f = remote_failure(Syscall::Getsockopt, EHOSTUNREACH, SynSent, h);
        f.ts_ns = 9_000;
        f.remote = Some("10.0.0.5:8080".parse().unwrap());
        let router = IcmpMessage { ts_ns: 5_000, from: "10.0.0.1".parse().unwrap(), v6: false, icmp_type: 3, code: 1 };
        f.icmp = Some(router.clone());
        let dg = diagnose(&f);
        assert_eq!(dg.cause, Cause::IcmpError);
        assert!(
            dg.explain.ends_with("; 10.0.0.1 (a router on the way) says: host unreachable (ICMP type 3 code 1)"),
            "{}",
            dg.explain
        );
        f.icmp = Some(IcmpMessage { from: "10.0.0.5".parse().unwrap(), code: 3, ..router.clone() });
        assert!(diagnose(&f).explain.contains("10.0.0.5 (the destination itself) says: port unreachable"));
        // A message from before this connection began (an earlier one on the same ports): not this one.
        f.icmp = Some(IcmpMessage { ts_ns: 500, ..router.clone() });
        assert!(!diagnose(&f).explain.contains(" says: "));
        // Not an ICMP cause: never appended.
        f.icmp = Some(router);
        f.errno = Some(ECONNRESET);
        assert!(!diagnose(&f).explain.contains(" says: "));
        assert_eq!(icmp_message(true, 1, 4), "port unreachable");
        assert_eq!(icmp_message(true, 2, 0), "packet too big");
    }
}
