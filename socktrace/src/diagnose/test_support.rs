//! What the diagnosis test modules build their cases from: failures, transitions, stamped
//! events, and table rows looked up by name.

use super::{diagnose, Diagnosis};
use crate::facts::{Failure, History, Stamp, StateChange};
use crate::model::{Cause, Syscall, TcpState};

pub fn failure(syscall: Syscall, errno: Option<i32>, state_now: TcpState, history: History) -> Failure {
    Failure::for_test(syscall, errno, state_now, history)
}

/// A state change a traced task made.
pub fn tr(ts_ns: u64, old: TcpState, new: TcpState) -> StateChange {
    StateChange { ts_ns, old: Some(old), new: Some(new), in_traced_task: true }
}

/// An event stamped in `state`.
pub fn at(ts_ns: u64, state: TcpState) -> Stamp {
    Stamp { ts_ns, state: Some(state), current_tgid: 99 }
}

/// One row of a family's table: a named failure, the cause and the state the error was born
/// in that the diagnosis must give it.
pub struct Row {
    pub name: &'static str,
    pub failure: Failure,
    pub cause: Cause,
    pub state: Option<TcpState>,
}

impl Row {
    pub fn new(name: &'static str, failure: Failure, cause: Cause, state: Option<TcpState>) -> Row {
        Row { name, failure, cause, state }
    }
}

/// Every row gets its cause and state, and one line of explanation.
pub fn check_rows(rows: &[Row]) {
    for r in rows {
        let dg = diagnose(&r.failure);
        assert_eq!((dg.cause, dg.state), (r.cause, r.state), "{}: {}", r.name, dg.explain);
        assert!(!dg.explain.is_empty() && !dg.explain.contains('\n'), "{}", r.name);
    }
}

/// The row named `name` (a test that picks rows by position breaks when they are reordered).
pub fn row<'a>(rows: &'a [Row], name: &str) -> &'a Row {
    rows.iter().find(|r| r.name == name).unwrap_or_else(|| panic!("no row named {name:?}"))
}

/// The diagnosis of the row named `name`.
pub fn diagnosis_of(rows: &[Row], name: &str) -> Diagnosis {
    diagnose(&row(rows, name).failure)
}

/// A connect (CLOSE -> SYN_SENT at 1 µs) that ended at `ts_close`.
pub fn connect_then_close(ts_close: u64) -> Vec<StateChange> {
    vec![tr(1_000, TcpState::Close, TcpState::SynSent), tr(ts_close, TcpState::SynSent, TcpState::Close)]
}

/// A connection established, then reset by its peer (RST at 4.9 µs, reported at 5.1 µs).
pub fn reset_established() -> History {
    use TcpState::*;
    History {
        transitions: vec![tr(1_000, Close, SynSent), tr(1_100, SynSent, Established), tr(5_000, Established, Close)],
        rst_received: Some(at(4_900, Established)),
        error_report: Some((at(5_100, Close), crate::model::errno::ECONNRESET)),
        ..Default::default()
    }
}

/// A connection established, then timed out after 5 retransmissions (reported at 9.1 µs).
pub fn established_timeout() -> History {
    use TcpState::*;
    History {
        transitions: vec![tr(1_100, SynSent, Established), tr(9_000, Established, Close)],
        retransmits: 5,
        error_report: Some((at(9_100, Close), crate::model::errno::ETIMEDOUT)),
        ..Default::default()
    }
}

/// A connect refused by an RST in SYN_SENT.
pub fn refused_by_rst() -> History {
    use TcpState::*;
    History {
        transitions: connect_then_close(2_000),
        rst_received: Some(at(1_900, SynSent)),
        error_report: Some((at(2_100, Close), crate::model::errno::ECONNREFUSED)),
        ..Default::default()
    }
}
