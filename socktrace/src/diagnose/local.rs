//! What this host did to its own connection: it shut down its sending side (a FIN sent, or
//! shutdown(SHUT_WR)), so a write is a broken pipe; or it aborted the connection (`ss -K`,
//! tcp_abort), which sets ECONNABORTED.

use super::history::{born_state, is_local_fin, peer, state_name};
use super::Diagnosis;
use crate::facts::Failure;
use crate::model::{errno::*, Cause};
use socktrace_common::net;

/// EPIPE after this socket sent its FIN, or after its sending side was shut down.
pub fn local_shutdown(f: &Failure, e: i32) -> Option<Diagnosis> {
    if e != EPIPE {
        return None;
    }
    let h = &f.history;
    if let Some(fin) = h.transitions.iter().rev().find(|t| is_local_fin(t.old, t.new)) {
        return Some(Diagnosis::new(
            Cause::LocalShutdown,
            f.state_now,
            Some(fin.ts_ns),
            format!(
                "this socket had already sent its FIN (shutdown(SHUT_WR) or close in {}); writing after that is a \
                 broken pipe",
                state_name(fin.old)
            ),
        ));
    }
    if f.shutdown & net::SEND_SHUTDOWN != 0 && h.error_report.is_none() {
        return Some(Diagnosis::new(
            Cause::LocalShutdown,
            f.state_now,
            None,
            "the sending side of this socket was shut down (shutdown(SHUT_WR)) before the write".into(),
        ));
    }
    None
}

/// ECONNABORTED that this host's abort of the connection reported.
pub fn aborted(f: &Failure, e: i32) -> Option<Diagnosis> {
    match f.history.error_report {
        Some((at, ECONNABORTED)) if e == ECONNABORTED => {
            let state = born_state(f, at);
            Some(Diagnosis::new(
                Cause::Aborted,
                state,
                Some(at.ts_ns),
                format!(
                    "the connection to {} was aborted on this host in {} (a socket kill such as `ss -K`, or \
                     tcp_abort)",
                    peer(f.remote),
                    state_name(state)
                ),
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use crate::facts::History;
    use crate::model::{errno::*, Cause, Syscall, TcpState::*};

    #[test]
    fn local_rows() {
        let shut_wr = History {
            transitions: vec![
                tr(1_100, SynSent, Established),
                tr(3_000, Established, FinWait1),
                tr(3_100, FinWait1, FinWait2),
            ],
            ..Default::default()
        };
        let aborted = History {
            transitions: vec![tr(1_100, SynSent, Established), tr(6_000, Established, Close)],
            error_report: Some((at(6_100, Close), ECONNABORTED)),
            ..Default::default()
        };
        check_rows(&[
            Row::new(
                "write after our shutdown(SHUT_WR)",
                failure(Syscall::Write, Some(EPIPE), FinWait2, shut_wr),
                Cause::LocalShutdown,
                Some(FinWait2),
            ),
            Row::new(
                "killed with ss -K",
                failure(Syscall::Read, Some(ECONNABORTED), Close, aborted),
                Cause::Aborted,
                Some(Established),
            ),
        ]);
    }
}
