//! What stays unknown, and why: a wrong explanation is worse than `unknown`, and `unknown`
//! says what socktrace saw and what it could not: nothing recorded before the call (and why:
//! evictions, adoption), nothing recorded that sets this errno, runs of its probes the kernel
//! skipped, a socket that is not TCP.

use super::history::state_name;
use super::Diagnosis;
use crate::facts::Failure;
use crate::model::{errno::*, Cause};
use socktrace_common::net;

/// A TCP failure no rule explains.
pub fn unknown(f: &Failure, e: i32) -> Diagnosis {
    Diagnosis::new(Cause::Unknown, f.state_now, None, unexplained(f, e))
}

/// Why nothing explains a failure: the socket's history began with this very call (nothing
/// was known of it), or what was recorded holds no cause for this errno; and, whichever, the
/// events the kernel did not let socktrace see.
fn unexplained(f: &Failure, e: i32) -> String {
    let missed = &f.trace_gaps.missed_runs;
    if missed.is_empty() {
        return unexplained_by_history(f, e);
    }
    let n = crate::facts::missed_total(missed);
    format!(
        "{}; the kernel skipped {n} run{} of socktrace's probes since the attach ({}: another BPF program, or a \
         BPF map syscall, held that CPU's guard when the event fired), so this socket's cause may be among the \
         events not seen",
        unexplained_by_history(f, e),
        if n == 1 { "" } else { "s" },
        crate::facts::describe_missed(missed)
    )
}

fn unexplained_by_history(f: &Failure, e: i32) -> String {
    let state = state_name(f.state_now);
    if f.history_started_here {
        let g = &f.trace_gaps;
        let why = match (g.histories_refused, g.not_adopted) {
            (_, true) => {
                "it was open before the trace, and socktrace could not adopt this process's sockets at attach \
                          (see the notice at attach)"
                    .to_string()
            }
            (Some(0), false) => "the history map was never full and histories are never evicted, so the socket came \
                                 into the process from outside the trace: open before it and not adopted, or passed \
                                 in from another process (SCM_RIGHTS, inheritance)"
                .to_string(),
            (Some(n), false) => format!(
                "the history map was full ({} sockets) when {n} socket{} came, and this one may be among them \
                 (--max-histories raises the bound), or it was open before the trace and not adopted",
                g.max_histories,
                if n == 1 { "" } else { "s" },
            ),
            (None, false) => "it was open before the trace and could not be adopted, or it came while the history map \
                              was full"
                .to_string(),
        };
        format!(
            "{} in {state}: nothing was recorded on this socket before this call ({why}), so its cause was not seen",
            name(e)
        )
    } else if f.history.transitions.is_empty() && f.history.rst_received.is_none() && f.history.error_report.is_none() {
        format!("{} in {state}: the socket's recorded history holds no TCP event that sets this error", name(e))
    } else {
        format!("{} in {state}: none of the TCP events recorded on this socket sets this error", name(e))
    }
}

/// A socket that is not TCP whose failure no ICMP error explains (`--all-sockets`): its errno
/// only.
pub fn not_tcp(f: &Failure, e: i32) -> Diagnosis {
    let explain = if f.protocol == net::IPPROTO_UDP {
        format!(
            "{} on a UDP socket: no ICMP error was reported on it, and socktrace explains UDP failures only by the \
             ICMP errors that set them{}",
            name(e),
            match &f.trace_gaps.udp_errors_unseen {
                Some(why) => format!(" (and cannot see them here: {why})"),
                None => String::new(),
            }
        )
    } else {
        format!("{} on a non-TCP socket (family {}); socktrace explains TCP causes only", name(e), f.family)
    };
    Diagnosis::new(Cause::Unknown, None, None, explain)
}

#[cfg(test)]
mod tests {
    use super::super::diagnose;
    use super::super::test_support::*;
    use crate::facts::{Failure, History};
    use crate::model::{errno::*, Cause, Syscall, TcpState::*};

    #[test]
    fn unknown_rows() {
        use Syscall::*;
        check_rows(&[
            Row::new(
                "shutdown of a socket never connected",
                failure(Shutdown, Some(ENOTCONN), Close, History::default()),
                Cause::Unknown,
                Some(Close),
            ),
            Row::new(
                "accept aborted with nothing recorded",
                failure(Accept, Some(ECONNABORTED), Listen, History::default()),
                Cause::Unknown,
                Some(Listen),
            ),
            Row::new(
                "reset with no recorded event",
                failure(Read, Some(ECONNRESET), Close, History::default()),
                Cause::Unknown,
                Some(Close),
            ),
            Row::new(
                "refused with no recorded event",
                failure(Connect, Some(ECONNREFUSED), Close, History::default()),
                Cause::Unknown,
                Some(Close),
            ),
            Row::new(
                "timeout with no recorded event",
                failure(Connect, Some(ETIMEDOUT), Close, History::default()),
                Cause::Unknown,
                Some(Close),
            ),
        ]);
    }

    #[test]
    fn non_tcp_sockets_are_not_explained() {
        let mut f = failure(Syscall::Connect, Some(ECONNREFUSED), Close, refused_by_rst());
        f.is_tcp = false;
        assert_eq!(diagnose(&f).cause, Cause::Unknown);
    }

    #[test]
    fn unknown_says_whether_anything_was_recorded_before_the_call() {
        let mut f = Failure {
            local: Some("127.0.0.1:8080".parse().unwrap()),
            ..failure(Syscall::Read, Some(EPROTO), Established, History::default())
        };
        f.history_started_here = true;
        let dg = diagnose(&f);
        assert_eq!(dg.cause, Cause::Unknown);
        assert!(dg.explain.contains("nothing was recorded on this socket before this call"), "{}", dg.explain);
        // Why, as exactly as the session can tell: the map never filled...
        f.trace_gaps.histories_refused = Some(0);
        let dg = diagnose(&f);
        assert!(
            dg.explain.contains("the history map was never full and histories are never evicted"),
            "{}",
            dg.explain
        );
        // ...or it did...
        f.trace_gaps.histories_refused = Some(12);
        f.trace_gaps.max_histories = 300_000;
        let dg = diagnose(&f);
        assert!(
            dg.explain.contains("the history map was full (300000 sockets) when 12 sockets came"),
            "{}",
            dg.explain
        );
        // ...or this process's sockets could not be adopted.
        f.trace_gaps.not_adopted = true;
        assert!(diagnose(&f).explain.contains("could not adopt this process's sockets"));
        f.history_started_here = false;
        assert!(!diagnose(&f).explain.contains("before this call"));
        // Runs the kernel skipped are events not seen: said, with how many and of which probe.
        f.trace_gaps.missed_runs = vec![("state change", 2), ("error report", 1)];
        let dg = diagnose(&f);
        assert_eq!(dg.cause, Cause::Unknown);
        assert!(
            dg.explain.contains(
                "the kernel skipped 3 runs of socktrace's probes since the attach (state change 2, error report 1:"
            ),
            "{}",
            dg.explain
        );
    }
}
