//! The diagnosis: facts about one failing call in, its TCP cause out. Pure: no kernel, no I/O.
//!
//! The rules are Linux's own (net/ipv4/tcp_input.c, tcp_timer.c, tcp_ipv4.c), one family a
//! file: `abandoned` (sockets the application ended while they waited: its own timeouts),
//! `reset` (RSTs received and sent), `icmp` (ICMP errors and routing), `timeout` (the
//! TCP timers), `local` (this host's own shutdown or abort), `resource` (descriptors, ports,
//! memory, a full listener), `routine` (EAGAIN, EINTR, EINPROGRESS), `eof` (end of file),
//! `snapshot` (sockets older than the trace) and `unknown` (what stays unexplained, and why).
//! `drops` is evidence several families add; `phrases` holds the kernel enums' words;
//! `history` reads a socket's recorded history.
//!
//! Where the recorded facts do not prove a cause, the answer is `Unknown`, never a guess.

mod abandoned;
mod drops;
mod eof;
mod history;
mod icmp;
mod local;
mod nat;
mod phrases;
mod reset;
mod resource;
mod routine;
mod snapshot;
#[cfg(test)]
mod test_support;
mod timeout;
mod unknown;

use crate::facts::Failure;
use crate::model::{Cause, TcpState};
pub use drops::hook as drop_hook;
pub use reset::RstOrigin;
pub use resource::FullListener;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnosis {
    pub cause: Cause,
    /// The TCP state when the error was born (not the CLOSE the socket ends in).
    pub state: Option<TcpState>,
    /// When the causing event happened (kernel monotonic ns), if it was seen.
    pub cause_ts_ns: Option<u64>,
    /// Retransmissions counted on the socket, for timeouts.
    pub retransmits: Option<u32>,
    /// One plain sentence for the on-call engineer.
    pub explain: String,
    /// The cause comes from the snapshot of a socket taken at attach (it predates the trace).
    pub from_snapshot: bool,
    /// What the RST segment this socket received says of its sender, where it was seen.
    pub rst_origin: Option<RstOrigin>,
    /// The full listener of this host a timed-out connect waited for (`listen_overflow`).
    pub listener: Option<FullListener>,
}

impl Diagnosis {
    /// A diagnosis: the cause, the state the error was born in, when its cause happened (if
    /// seen), and the sentence for the on-call engineer.
    pub fn new(cause: Cause, state: Option<TcpState>, cause_ts_ns: Option<u64>, explain: String) -> Self {
        Diagnosis {
            cause,
            state,
            cause_ts_ns,
            retransmits: None,
            explain,
            from_snapshot: false,
            rst_origin: None,
            listener: None,
        }
    }

    /// With the retransmissions counted on the socket (timeouts).
    pub fn with_retransmits(self, n: u32) -> Self {
        Diagnosis { retransmits: Some(n), ..self }
    }

    /// Time between the causing event and the failing call.
    pub fn cause_age_ns(&self, failure_ts_ns: u64) -> Option<u64> {
        self.cause_ts_ns.map(|t| failure_ts_ns.saturating_sub(t))
    }
}

pub fn diagnose(f: &Failure) -> Diagnosis {
    let mut dg = cause(f);
    dg.rst_origin = reset::origin(f);
    if let Some(note) = abandoned::fallback(f) {
        dg.explain.push_str(&note);
    }
    if let Some(note) = nat::note(f, &dg.explain) {
        dg.explain.push_str(&note);
    }
    dg
}

/// A rule of one family: the diagnosis of a failure with errno `e`, if the facts it needs are
/// there.
type Rule = fn(&Failure, i32) -> Option<Diagnosis>;

/// The rules for a TCP failure, in precedence order: the first that applies decides.
const TCP_RULES: &[Rule] = &[
    // A send's EAGAIN is routine unless TCP's memory was over its hard limit: the kernel
    // refused the memory then, whatever the reader did.
    resource::send_refused_memory,
    routine::routine_outcome,
    resource::resource,
    // An RST that arrived on this socket explains refusals, resets and the EPIPE after them.
    reset::rst_received,
    icmp::refused,
    reset::rst_sent,
    local::local_shutdown,
    local::aborted,
    // Errors set by the stack itself: timeouts and ICMP, told apart by when they were reported.
    timeout::timed_out,
    icmp::icmp_error,
    icmp::soft_error_while_connecting,
    // Nothing seen since the attach explains it: the snapshot of a socket older than the trace.
    snapshot::before_the_trace,
    // A connect that failed before any SYN.
    icmp::no_route,
];

fn cause(f: &Failure) -> Diagnosis {
    // No call failed: the process ended a socket that was still waiting.
    if let Some(ended) = &f.ended {
        return abandoned::ended(f, ended);
    }
    let Some(e) = f.errno else {
        return eof::end_of_file(f);
    };
    if !f.is_tcp {
        return icmp::udp(f, e).unwrap_or_else(|| unknown::not_tcp(f, e));
    }
    TCP_RULES.iter().find_map(|rule| rule(f, e)).unwrap_or_else(|| unknown::unknown(f, e))
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::model::{errno::ECONNREFUSED, Syscall, TcpState::*};

    #[test]
    fn cause_age_is_measured_from_the_causing_event() {
        let f = failure(Syscall::Connect, Some(ECONNREFUSED), Close, refused_by_rst());
        let dg = diagnose(&f);
        assert_eq!(dg.cause_ts_ns, Some(1_900));
        assert_eq!(dg.cause_age_ns(f.ts_ns), Some(10_000 - 1_900));
    }
}
