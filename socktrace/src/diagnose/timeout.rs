//! Timeouts: a TCP timer gave up (SYN retries, data retransmissions, keepalive or zero-window
//! probes, TCP_USER_TIMEOUT). `tcp_write_err` reports `sk_err_soft ?: ETIMEDOUT` *after* the
//! socket closes, so a timeout that followed a soft ICMP error reports that error
//! (EHOSTUNREACH, ...): the state it was born in is the one before that close.

use super::history::{peer, reported, reported_first, secs, state_name};
use super::icmp::{is_icmp_errno, sender as icmp_sender};
use super::{drops, Diagnosis};
use crate::facts::Failure;
use crate::model::{errno::*, Cause, TcpState};
use socktrace_common::TimerFacts;

/// A timer gave up: ETIMEDOUT, or the soft ICMP error a timeout reports once the connection
/// is established (while connecting, ICMP unreachables are hard errors: `icmp::icmp_error`).
pub fn timed_out(f: &Failure, e: i32) -> Option<Diagnosis> {
    let r = reported(f, e)?;
    let soft_icmp = is_icmp_errno(r.errno) && !r.connecting && !r.before_close;
    if r.errno != ETIMEDOUT && !soft_icmp {
        return None;
    }
    let remote = peer(f.remote);
    let via = reported_first(e, r.errno);
    let n = f.history.retransmits;
    let soft = if r.errno == ETIMEDOUT {
        String::new()
    } else {
        format!(" (the last ICMP error seen, {}, is what the kernel reports)", name(r.errno))
    };
    let timer = f.timers.map(|t| which_timer(f, &t, r.connecting, n, r.at.ts_ns));
    // A closed window is probed, not retransmitted into: the persist timer gave up.
    let zero_window = !r.connecting && f.timers.is_some_and(|t| t.snd_wnd == 0);
    let explain = if (n == 0 || zero_window) && !r.connecting {
        match &timer {
            Some(which) => format!(
                "the connection to {remote} timed out in {}{}: {which}{soft}{via}",
                state_name(r.state),
                if n == 0 { " with nothing retransmitted" } else { "" }
            ),
            // Nothing was retransmitted, so no data was waiting for an acknowledgement: what
            // gave up was a probe timer (keepalive, or zero-window probes) or TCP_USER_TIMEOUT.
            None => format!(
                "the connection to {remote} timed out in {} with nothing retransmitted: no data was waiting for an \
                 acknowledgement, so keepalive or zero-window probes went unanswered (or TCP_USER_TIMEOUT \
                 expired){soft}{via}",
                state_name(r.state)
            ),
        }
    } else {
        let what = if r.connecting { "the SYN" } else { "data" };
        let limit = timer.map(|t| format!(" ({t})")).unwrap_or_default();
        format!(
            "{remote} never acknowledged {what} after {n} retransmission{} in {}: the connection timed out{limit}{soft}{via}",
            if n == 1 { "" } else { "s" },
            state_name(r.state)
        )
    };
    let mut explain = format!("{explain}{}", drops::on_this_host(f));
    if soft_icmp {
        // The ICMP message behind the soft error: who sent it, which.
        explain.push_str(&icmp_sender(f).unwrap_or_default());
    }
    Some(Diagnosis::new(Cause::Timeout, r.state, Some(r.at.ts_ns), explain).with_retransmits(n))
}

/// Which TCP timer gave up, with the limit it applied and the numbers it went by: the SYN
/// retries (how many SYNs, over how long), the data retransmissions (for how long), keepalive
/// probes (the idle time and interval), zero-window probes, or TCP_USER_TIMEOUT (which bounds
/// each of the others). `gave_up_ns`: when the error was reported.
fn which_timer(f: &Failure, t: &TimerFacts, connecting: bool, retransmits: u32, gave_up_ns: u64) -> String {
    let user = (t.user_timeout_ms > 0).then(|| format!("TCP_USER_TIMEOUT {} ms", t.user_timeout_ms));
    let or_user = |limit: String| match &user {
        Some(u) => format!("{u} (else {limit})"),
        None => limit,
    };
    if connecting {
        let limit = if t.syn_retries > 0 {
            format!("TCP_SYNCNT {}", t.syn_retries)
        } else {
            format!("net.ipv4.tcp_syn_retries {}", t.net_syn_retries)
        };
        // The SYNs: the first, sent as the socket entered SYN_SENT, and each retransmission.
        let started = f.history.transitions.iter().rev().find(|c| c.new == Some(TcpState::SynSent));
        let span = match started {
            Some(c) if c.ts_ns <= gave_up_ns => {
                let syns = retransmits + 1;
                format!("; {syns} SYN{} over {}", if syns == 1 { "" } else { "s" }, secs(gave_up_ns - c.ts_ns))
            }
            _ => String::new(),
        };
        return format!("SYN retries exhausted: {}{span}", or_user(limit));
    }
    let probes = |n: u8| format!("{n} probe{}", if n == 1 { "" } else { "s" });
    if t.snd_wnd == 0 {
        if t.probes_out == 0 {
            if let Some(u) = &user {
                return format!(
                    "the peer's receive window stayed closed (zero window): it answered our window probes with a \
                     closed window until {u} expired (the peer is alive but does not read)"
                );
            }
        }
        return format!(
            "the peer's receive window stayed closed (zero window) and {} went unanswered: zero-window probing gave up \
             ({})",
            probes(t.probes_out),
            or_user(format!("net.ipv4.tcp_retries2 {}", t.net_retries2))
        );
    }
    if retransmits > 0 {
        let span = match f.history.first_retransmit_ns {
            Some(first) if first <= gave_up_ns => format!("; retransmitting for {}", secs(gave_up_ns - first)),
            _ => String::new(),
        };
        return format!(
            "data retransmissions exhausted: {}{span}",
            or_user(format!("net.ipv4.tcp_retries2 {}", t.net_retries2))
        );
    }
    if t.keepalive != 0 {
        let limit = if t.keepalive_probes > 0 {
            format!("TCP_KEEPCNT {}", t.keepalive_probes)
        } else {
            format!("net.ipv4.tcp_keepalive_probes {}", t.net_keepalive_probes)
        };
        // The idle time before the first probe, and the interval between probes (jiffies;
        // the socket's own, else the namespace's).
        let settings = f.kernel_hz.filter(|&hz| hz > 0).map(|hz| {
            let s = |j: u32| format!("{:.1} s", j as f64 / hz as f64);
            let idle = if t.keepalive_time > 0 {
                format!("{} idle (TCP_KEEPIDLE)", s(t.keepalive_time))
            } else {
                format!("{} idle (net.ipv4.tcp_keepalive_time)", s(t.net_keepalive_time))
            };
            let every = if t.keepalive_intvl > 0 {
                format!("a probe every {} (TCP_KEEPINTVL)", s(t.keepalive_intvl))
            } else {
                format!("a probe every {} (net.ipv4.tcp_keepalive_intvl)", s(t.net_keepalive_intvl))
            };
            format!(", after {idle} and {every}")
        });
        return format!(
            "the connection was idle and {} keepalive {} went unanswered ({}){}",
            t.probes_out,
            if t.probes_out == 1 { "probe" } else { "probes" },
            or_user(limit),
            settings.unwrap_or_default()
        );
    }
    match user {
        Some(u) => format!("{u} expired with no data waiting for an acknowledgement and no probe running"),
        None => "no retransmission was seen, and the socket had no keepalive, no zero window and no \
                 TCP_USER_TIMEOUT"
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::diagnose;
    use super::super::test_support::*;
    use crate::facts::{Failure, History, Stamp, StateChange};
    use crate::model::{errno::*, Cause, Syscall, TcpState, TcpState::*};
    use socktrace_common::TimerFacts;

    fn rows() -> Vec<Row> {
        let syn_timeout = History {
            transitions: connect_then_close(9_000),
            retransmits: 2,
            last_retransmit_ns: Some(5_000),
            error_report: Some((at(9_100, Close), ETIMEDOUT)),
            ..Default::default()
        };
        let soft_then_timeout = History {
            transitions: vec![tr(1_100, SynSent, Established), tr(9_000, Established, Close)],
            retransmits: 4,
            error_report: Some((at(9_100, Close), EHOSTUNREACH)),
            ..Default::default()
        };
        use Syscall::*;
        vec![
            Row::new(
                "connect timeout",
                failure(Connect, Some(ETIMEDOUT), Close, syn_timeout),
                Cause::Timeout,
                Some(SynSent),
            ),
            Row::new(
                "established timeout",
                failure(Write, Some(ETIMEDOUT), Close, established_timeout()),
                Cause::Timeout,
                Some(Established),
            ),
            Row::new(
                "timeout after a soft ICMP error",
                failure(Read, Some(EHOSTUNREACH), Close, soft_then_timeout),
                Cause::Timeout,
                Some(Established),
            ),
            Row::new(
                "shutdown after a timeout: ENOTCONN",
                failure(Shutdown, Some(ENOTCONN), Close, established_timeout()),
                Cause::Timeout,
                Some(Established),
            ),
        ]
    }

    #[test]
    fn timeout_rows() {
        check_rows(&rows());
    }

    #[test]
    fn timeouts_carry_the_retransmission_count() {
        let dg = diagnosis_of(&rows(), "connect timeout");
        assert_eq!(dg.retransmits, Some(2));
        assert!(dg.explain.contains("2 retransmissions"), "{}", dg.explain);
    }

    fn remote_failure(syscall: Syscall, e: i32, state_now: TcpState, history: History) -> Failure {
        Failure {
            reported_as_connect: syscall == Syscall::Getsockopt,
            local: Some("10.0.1.2:40000".parse().unwrap()),
            remote: Some("10.0.2.2:80".parse().unwrap()),
            ..Failure::for_test(syscall, Some(e), state_now, history)
        }
    }

    /// A keepalive timeout: ETIMEDOUT in ESTABLISHED with nothing retransmitted.
    #[test]
    fn a_timeout_with_nothing_retransmitted_is_a_probe_timeout() {
        let h = History {
            transitions: vec![StateChange {
                ts_ns: 5_000,
                old: Some(Established),
                new: Some(Close),
                in_traced_task: false,
            }],
            error_report: Some((Stamp { ts_ns: 5_001, state: Some(Close), current_tgid: 0 }, ETIMEDOUT)),
            retransmits: 0,
            ..Default::default()
        };
        let dg = diagnose(&remote_failure(Syscall::Read, ETIMEDOUT, Close, h));
        assert_eq!((dg.cause, dg.state), (Cause::Timeout, Some(Established)));
        assert!(!dg.explain.contains("after 0 retransmissions"), "{}", dg.explain);
        assert!(dg.explain.contains("nothing retransmitted") && dg.explain.contains("keepalive"), "{}", dg.explain);
    }

    fn timed_out(state_before: TcpState, retransmits: u32) -> History {
        History {
            transitions: vec![StateChange {
                ts_ns: 5_000,
                old: Some(state_before),
                new: Some(Close),
                in_traced_task: false,
            }],
            error_report: Some((Stamp { ts_ns: 5_001, state: Some(Close), current_tgid: 0 }, ETIMEDOUT)),
            retransmits,
            ..Default::default()
        }
    }

    /// Which timer gave up, told by the socket's timer facts, with the limit that applied.
    #[test]
    fn timeout_anatomy_names_the_timer_and_its_limit() {
        use socktrace_common::TimerFacts;
        let base = TimerFacts {
            snd_wnd: 65_535,
            net_syn_retries: 6,
            net_retries2: 15,
            net_keepalive_probes: 9,
            ..Default::default()
        };
        let rows: [(&str, TcpState, u32, TimerFacts, &[&str]); 7] = [
            ("syn", SynSent, 2, TimerFacts { syn_retries: 2, ..base }, &["SYN retries exhausted: TCP_SYNCNT 2"]),
            ("syn, sysctl", SynSent, 6, base, &["net.ipv4.tcp_syn_retries 6", "after 6 retransmissions"]),
            ("data", Established, 5, base, &["data retransmissions exhausted: net.ipv4.tcp_retries2 15"]),
            (
                "data, user timeout",
                Established,
                3,
                TimerFacts { user_timeout_ms: 1000, ..base },
                &["TCP_USER_TIMEOUT 1000 ms (else net.ipv4.tcp_retries2 15)"],
            ),
            (
                "keepalive",
                Established,
                0,
                TimerFacts { keepalive: 1, keepalive_probes: 2, probes_out: 2, ..base },
                &["idle and 2 keepalive probes went unanswered (TCP_KEEPCNT 2)"],
            ),
            (
                "zero window",
                Established,
                0,
                TimerFacts { snd_wnd: 0, probes_out: 4, ..base },
                &["receive window stayed closed (zero window) and 4 probes went unanswered"],
            ),
            (
                "user timeout alone",
                Established,
                0,
                TimerFacts { user_timeout_ms: 2000, ..base },
                &["TCP_USER_TIMEOUT 2000 ms expired"],
            ),
        ];
        for (name, before, n, timers, want) in rows {
            let f = Failure {
                timers: Some(timers),
                ..remote_failure(Syscall::Read, ETIMEDOUT, Close, timed_out(before, n))
            };
            let dg = diagnose(&f);
            assert_eq!((dg.cause, dg.state), (Cause::Timeout, Some(before)), "{name}");
            for w in want {
                assert!(dg.explain.contains(w), "{name}: {w:?} not in {}", dg.explain);
            }
        }
    }

    const S: u64 = 1_000_000_000;

    fn timed_out_at(transitions: Vec<StateChange>, gave_up: u64, retransmits: u32, first: Option<u64>) -> History {
        History {
            transitions,
            error_report: Some((Stamp { ts_ns: gave_up, state: Some(Close), current_tgid: 0 }, ETIMEDOUT)),
            retransmits,
            first_retransmit_ns: first,
            ..Default::default()
        }
    }

    fn base() -> TimerFacts {
        TimerFacts {
            snd_wnd: 65535,
            net_syn_retries: 6,
            net_retries2: 15,
            net_keepalive_probes: 9,
            ..Default::default()
        }
    }

    fn with(timers: TimerFacts, syscall: Syscall, h: History) -> Failure {
        let mut f = Failure::for_test(syscall, Some(ETIMEDOUT), Close, h);
        f.timers = Some(timers);
        f.ts_ns = 10 * S;
        f
    }

    #[test]
    fn syn_retries_say_how_many_syns_over_how_long() {
        let h = timed_out_at(vec![tr(S, Close, SynSent), tr(4 * S, SynSent, Close)], 4 * S, 2, Some(2 * S));
        let dg = diagnose(&with(TimerFacts { net_syn_retries: 2, ..base() }, Syscall::Connect, h));
        assert!(
            dg.explain.contains("SYN retries exhausted: net.ipv4.tcp_syn_retries 2; 3 SYNs over 3.0 s"),
            "{}",
            dg.explain
        );
    }

    #[test]
    fn data_retransmissions_say_for_how_long() {
        let h = timed_out_at(vec![tr(S, SynSent, Established), tr(9 * S, Established, Close)], 9 * S, 5, Some(2 * S));
        let dg = diagnose(&with(base(), Syscall::Read, h));
        assert!(dg.explain.contains("after 5 retransmissions in ESTABLISHED"), "{}", dg.explain);
        assert!(dg.explain.contains("net.ipv4.tcp_retries2 15; retransmitting for 7.0 s"), "{}", dg.explain);
    }

    #[test]
    fn keepalive_says_its_idle_time_and_interval_where_hz_is_known() {
        let h = timed_out_at(vec![tr(S, SynSent, Established), tr(9 * S, Established, Close)], 9 * S, 0, None);
        let t = TimerFacts { keepalive: 1, probes_out: 3, keepalive_time: 250, net_keepalive_intvl: 18750, ..base() };
        let mut f = with(t, Syscall::Read, h);
        f.kernel_hz = Some(250);
        let dg = diagnose(&f);
        assert!(
            dg.explain.contains(
                "3 keepalive probes went unanswered (net.ipv4.tcp_keepalive_probes 9), after 1.0 s idle (TCP_KEEPIDLE) \
                 and a probe every 75.0 s (net.ipv4.tcp_keepalive_intvl)"
            ),
            "{}",
            dg.explain
        );
        // Without HZ the settings are left out, never guessed.
        f.kernel_hz = None;
        assert!(!diagnose(&f).explain.contains(" idle ("), "{}", diagnose(&f).explain);
    }

    #[test]
    fn a_closed_window_that_the_peer_keeps_answering_is_a_zero_window_stall() {
        let h = timed_out_at(vec![tr(S, SynSent, Established), tr(9 * S, Established, Close)], 9 * S, 2, Some(3 * S));
        let t = TimerFacts { snd_wnd: 0, probes_out: 0, user_timeout_ms: 1000, ..base() };
        let dg = diagnose(&with(t, Syscall::Write, h));
        assert_eq!((dg.cause, dg.state), (Cause::Timeout, Some(Established)));
        assert!(
            dg.explain.contains("timed out in ESTABLISHED: the peer's receive window stayed closed"),
            "{}",
            dg.explain
        );
        assert!(dg.explain.contains("until TCP_USER_TIMEOUT 1000 ms expired"), "{}", dg.explain);
        assert!(!dg.explain.contains("never acknowledged"), "{}", dg.explain);
    }
}
