//! What a socket's recorded history says, in the words every rule family uses: the peer's
//! name, the state an error was born in, a FIN this socket sent, an error reported before the
//! call that met it.

use crate::facts::{Failure, Stamp};
use crate::model::{
    errno::{name, ENOTCONN, EPIPE},
    TcpState,
};
use std::net::SocketAddr;

/// The remote end as the explanation names it.
pub fn peer(remote: Option<SocketAddr>) -> String {
    remote.map(|r| r.to_string()).unwrap_or_else(|| "the peer".into())
}

pub fn state_name(s: Option<TcpState>) -> &'static str {
    s.map(TcpState::name).unwrap_or("an unknown state")
}

/// The state the error was born in: the report's own state, or, when the kernel reported it
/// after closing the socket (tcp_done), the state just before that close.
pub fn born_state(f: &Failure, at: Stamp) -> Option<TcpState> {
    if at.state != Some(TcpState::Close) {
        return at.state;
    }
    f.history
        .transitions
        .iter()
        .rev()
        .find(|t| t.new == Some(TcpState::Close) && t.ts_ns <= at.ts_ns)
        .and_then(|t| t.old)
        .or(at.state)
}

/// A transition that sends this socket's FIN (close or shutdown(SHUT_WR) from these states).
pub fn is_local_fin(old: Option<TcpState>, new: Option<TcpState>) -> bool {
    use TcpState::*;
    matches!(
        (old, new),
        (Some(Established), Some(FinWait1)) | (Some(CloseWait), Some(LastAck)) | (Some(SynRecv), Some(FinWait1))
    )
}

/// The error the kernel reported on the socket (`sk_err` set: a timer, an ICMP error, an abort)
/// that this call met, or the EPIPE/ENOTCONN that follow it, with when and in which state it
/// was born.
pub struct Reported {
    pub at: Stamp,
    pub errno: i32,
    pub state: Option<TcpState>,
    /// Born while connecting: every ICMP unreachable is a hard error then.
    pub connecting: bool,
    /// Reported before the socket closed: only an ICMP error with IP_RECVERR does that on
    /// kernels where errors are reported after tcp_done (6.10+); older kernels report hard
    /// ICMP errors before closing.
    pub before_close: bool,
}

/// The error report this failure carries, if its errno is that report's (or follows it).
pub fn reported(f: &Failure, e: i32) -> Option<Reported> {
    let (at, errno) = f.history.error_report?;
    if !(errno == e || matches!(e, EPIPE | ENOTCONN)) {
        return None;
    }
    let state = born_state(f, at);
    Some(Reported {
        at,
        errno,
        state,
        connecting: matches!(state, Some(TcpState::SynSent | TcpState::SynRecv)),
        before_close: at.state.is_some_and(|s| s != TcpState::Close),
    })
}

/// For a call that met an error reported earlier on the socket: `reported` was returned to an
/// earlier call, and this one gets what follows it (EPIPE for a write, ENOTCONN once closed).
pub fn reported_first(e: i32, reported: i32) -> String {
    match e {
        EPIPE => format!(" ({} was reported first; this later write is a broken pipe)", name(reported)),
        ENOTCONN => format!(" ({} was reported first and the socket closed: no connection is left)", name(reported)),
        _ => String::new(),
    }
}

/// Seconds with one decimal (`2.0 s`), or milliseconds under a tenth of a second (`50.2 ms`).
pub fn secs(ns: u64) -> String {
    match ns {
        // Under a tenth of a second, "0.0 s" would hide what happened.
        0..100_000_000 => format!("{:.1} ms", ns as f64 / 1e6),
        _ => format!("{:.1} s", ns as f64 / 1e9),
    }
}

/// `n thing` or `n things`.
pub fn count(n: u64, thing: &str) -> String {
    format!("{n} {thing}{}", if n == 1 { "" } else { "s" })
}
