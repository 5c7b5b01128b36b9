//! Sockets older than the trace: adopted at attach, with a snapshot of their state and the
//! error pending on them then. Where no event seen since explains a failure, the snapshot may:
//! an error still pending names its cause where only one event sets that errno.

use super::history::{peer, state_name};
use super::Diagnosis;
use crate::facts::Failure;
use crate::model::{errno::*, Cause, TcpState};

/// A socket open before the trace, whose failure no event seen since explains: what the
/// snapshot taken at attach shows. An error still pending then names its cause where only one
/// event sets that errno; otherwise the failure stays unknown, saying what was seen.
/// How long an adopted socket had been idle at the attach: " (it last sent data 3.2 s and
/// received data 1.0 s before)", or nothing when not known.
fn idle(f: &Failure) -> String {
    let secs = |ms: u64| format!("{:.1} s", ms as f64 / 1000.0);
    match f.at_attach_idle_ms() {
        (Some(s), Some(r)) => format!(" (it last sent data {} and received data {} before)", secs(s), secs(r)),
        (Some(s), None) => format!(" (it last sent data {} before)", secs(s)),
        (None, Some(r)) => format!(" (it last received data {} before)", secs(r)),
        (None, None) => String::new(),
    }
}

pub fn before_the_trace(f: &Failure, e: i32) -> Option<Diagnosis> {
    let (at, pending) = f.history.at_attach?;
    let state = state_name(at.state);
    let remote = peer(f.remote);
    let snapshot = |cause, born: Option<TcpState>, explain: String| Diagnosis {
        from_snapshot: true,
        ..Diagnosis::new(cause, born, None, explain)
    };
    if pending == e {
        let seen = format!("the socket was in {state} with {} pending when socktrace attached{}", name(e), idle(f));
        return Some(match e {
            // tcp_reset() is what sets these: ECONNRESET in ESTABLISHED and the closing states
            // (SYN_SENT gives ECONNREFUSED), EPIPE in CLOSE_WAIT.
            ECONNRESET => snapshot(
                Cause::RstReceived,
                None,
                format!("{remote} had already reset this connection (RST) before tracing began: {seen}"),
            ),
            EPIPE => snapshot(
                Cause::RstReceived,
                Some(TcpState::CloseWait),
                format!(
                    "{remote} had closed its end and then reset the connection (RST in CLOSE_WAIT) before tracing \
                     began: {seen}"
                ),
            ),
            ETIMEDOUT => snapshot(
                Cause::Timeout,
                None,
                format!("the connection to {remote} had already timed out before tracing began: {seen}"),
            ),
            ECONNABORTED => snapshot(
                Cause::Aborted,
                None,
                format!("the connection to {remote} had been aborted on this host before tracing began: {seen}"),
            ),
            // Refusals (RST or ICMP), unreachables (ICMP, or a timeout reporting a soft ICMP
            // error): more than one event sets these, and none was seen.
            _ => snapshot(
                Cause::Unknown,
                None,
                format!(
                    "{} was already pending before tracing began ({seen}); more than one TCP event sets it, and the one \
                     that did was not seen",
                    name(e)
                ),
            ),
        });
    }
    let closed_before = at.state == Some(TcpState::Close);
    if closed_before && matches!(e, EPIPE | ENOTCONN) {
        return Some(snapshot(
            Cause::Unknown,
            None,
            format!(
                "the connection was already closed when socktrace attached (CLOSE, no error pending: its error had \
                 been reported before the trace{}), so what closed it was not seen",
                idle(f).replacen(" (", "; ", 1).trim_end_matches(')')
            ),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::diagnose;
    use super::super::test_support::*;
    use crate::facts::History;
    use crate::model::{errno::*, Cause, Syscall, TcpState, TcpState::*};

    fn adopted(state: TcpState, pending: i32) -> History {
        History { at_attach: Some((at(500, state), pending)), ..Default::default() }
    }

    #[test]
    fn sockets_older_than_the_trace_are_explained_by_their_snapshot() {
        // (failure, errno, snapshot state, pending) -> (cause, born state)
        let rows = [
            (Syscall::Read, Some(ECONNRESET), Close, ECONNRESET, Cause::RstReceived, None),
            (Syscall::Write, Some(EPIPE), Close, EPIPE, Cause::RstReceived, Some(CloseWait)),
            (Syscall::Write, Some(ETIMEDOUT), Close, ETIMEDOUT, Cause::Timeout, None),
            (Syscall::Read, Some(ECONNABORTED), Close, ECONNABORTED, Cause::Aborted, None),
            // Refused by RST or by ICMP: not told apart after the fact.
            (Syscall::Read, Some(ECONNREFUSED), Close, ECONNREFUSED, Cause::Unknown, None),
            // Closed before the trace, its error already consumed: what closed it was not seen.
            (Syscall::Write, Some(EPIPE), Close, 0, Cause::Unknown, None),
            (Syscall::Read, None, CloseWait, 0, Cause::PeerFin, Some(CloseWait)),
        ];
        for (call, e, state, pending, cause, born) in rows {
            let dg = diagnose(&failure(call, e, state, adopted(state, pending)));
            assert_eq!((dg.cause, dg.state), (cause, born), "{call:?} {e:?} {state:?} {pending}: {}", dg.explain);
            assert!(dg.from_snapshot, "{}", dg.explain);
            assert!(dg.explain.contains("before") || dg.explain.contains("when socktrace attached"), "{}", dg.explain);
            assert_eq!(dg.cause_ts_ns, None, "the cause's time is not known");
        }
        // An event seen since attach explains it as usual, not the snapshot.
        let mut h = adopted(Established, 0);
        h.rst_received = Some(at(900, Established));
        let dg = diagnose(&failure(Syscall::Read, Some(ECONNRESET), Close, h));
        assert_eq!(dg.cause, Cause::RstReceived);
        assert!(!dg.from_snapshot);
    }
}
