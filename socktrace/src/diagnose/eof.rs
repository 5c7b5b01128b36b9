//! End of file: a read returning 0 (with `--eof`), after the peer's FIN, or after an RST whose
//! error an earlier call already took.

use super::history::{peer, state_name};
use super::Diagnosis;
use crate::facts::Failure;
use crate::model::{Cause, TcpState};

/// A read that returned 0 on a TCP socket.
pub fn end_of_file(f: &Failure) -> Diagnosis {
    let h = &f.history;
    // An RST that hit the socket after the peer's FIN (in CLOSE_WAIT) is not what ended the
    // stream: the FIN did, and the read's 0 is the FIN's.
    if let Some(rst) = h.rst_received.filter(|r| r.state != Some(TcpState::CloseWait)) {
        let explain = format!(
            "end of file: {} reset the connection in {} and its error was already reported",
            peer(f.remote),
            state_name(rst.state)
        );
        return Diagnosis::new(Cause::RstReceived, rst.state, Some(rst.ts_ns), explain);
    }
    let fin = h.transitions.iter().rev().find(|t| {
        matches!(
            (t.old, t.new),
            (Some(TcpState::Established), Some(TcpState::CloseWait))
                | (Some(TcpState::FinWait1), Some(TcpState::Closing))
                | (Some(TcpState::FinWait2), Some(TcpState::TimeWait))
                | (Some(TcpState::SynRecv), Some(TcpState::CloseWait))
        )
    });
    let state = fin.and_then(|t| t.new).or(f.state_now);
    let peer_closed = fin.is_some()
        || matches!(
            f.state_now,
            Some(TcpState::CloseWait | TcpState::LastAck | TcpState::Closing | TcpState::TimeWait)
        );
    let closed_before_trace = fin.is_none()
        && h.at_attach.is_some_and(|(at, _)| {
            matches!(at.state, Some(TcpState::CloseWait | TcpState::LastAck | TcpState::Closing | TcpState::TimeWait))
        });
    if closed_before_trace {
        let at = h.at_attach.map(|(at, _)| at.state).unwrap_or_default();
        let explain = format!(
            "end of file: {} had closed its side of the connection (FIN) before tracing began (the socket was in {} \
             when socktrace attached)",
            peer(f.remote),
            state_name(at)
        );
        Diagnosis { from_snapshot: true, ..Diagnosis::new(Cause::PeerFin, at, None, explain) }
    } else if peer_closed {
        let after = match h.rst_received {
            Some(rst) => format!(
                "; its RST came {} later",
                super::history::secs(rst.ts_ns.saturating_sub(fin.map_or(rst.ts_ns, |t| t.ts_ns)))
            ),
            None => String::new(),
        };
        let explain = format!("end of file: {} closed its side of the connection (FIN){after}", peer(f.remote));
        Diagnosis::new(Cause::PeerFin, state, fin.map(|t| t.ts_ns), explain)
    } else {
        let explain = "end of file with no FIN recorded (our own SHUT_RD, or the FIN predates tracing)".into();
        Diagnosis::new(Cause::Unknown, state, None, explain)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use crate::facts::History;
    use crate::model::{Cause, Syscall, TcpState::*};

    #[test]
    fn eof_rows() {
        let fin = History {
            transitions: vec![tr(1_100, SynSent, Established), tr(3_000, Established, CloseWait)],
            ..Default::default()
        };
        check_rows(&[
            Row::new(
                "read after RST was reported: EOF",
                failure(Syscall::Read, None, Close, reset_established()),
                Cause::RstReceived,
                Some(Established),
            ),
            Row::new(
                "read after peer FIN",
                failure(Syscall::Read, None, CloseWait, fin),
                Cause::PeerFin,
                Some(CloseWait),
            ),
        ]);
    }
}
