//! The diagnosis: facts about one failing call in, its TCP cause out. Pure: no kernel, no I/O.
//!
//! The rules are Linux's own (net/ipv4/tcp_input.c, tcp_timer.c, tcp_ipv4.c):
//! * `tcp_reset()` turns an RST into ECONNREFUSED in SYN_SENT, EPIPE in CLOSE_WAIT and
//!   ECONNRESET elsewhere, then closes the socket. The error is reported once; later writes get
//!   EPIPE and later reads 0.
//! * ICMP errors in SYN_SENT are hard: the connect fails at once (port-unreachable gives the
//!   same ECONNREFUSED as an RST), reported *before* the socket closes.
//! * Timeouts report `sk_err_soft ?: ETIMEDOUT` *after* the socket closes, so a timeout that
//!   followed a soft ICMP error reports that error (EHOSTUNREACH, ...).
//! * A connect that fails before any SYN leaves no state change: routing refused it locally.
//!
//! Where the recorded facts do not prove a cause, the answer is `Unknown`, never a guess.

use crate::facts::{Failure, Stamp};
use crate::model::{errno::*, Cause, TcpState};
use socktrace_common::{net, routine};
use std::net::SocketAddr;

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
}

impl Diagnosis {
    /// A diagnosis: the cause, the state the error was born in, when its cause happened (if
    /// seen), and the sentence for the on-call engineer.
    pub fn new(cause: Cause, state: Option<TcpState>, cause_ts_ns: Option<u64>, explain: String) -> Self {
        Diagnosis { cause, state, cause_ts_ns, retransmits: None, explain, from_snapshot: false }
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

fn peer(remote: Option<SocketAddr>) -> String {
    remote.map(|r| r.to_string()).unwrap_or_else(|| "the peer".into())
}

fn state_name(s: Option<TcpState>) -> &'static str {
    s.map(TcpState::name).unwrap_or("an unknown state")
}

pub fn diagnose(f: &Failure) -> Diagnosis {
    let mut dg = diagnose_cause(f);
    // An ICMP error's own account: who sent it, and which message it was.
    let icmp_named = dg.cause == Cause::IcmpError || (dg.cause == Cause::Timeout && dg.explain.contains("ICMP"));
    if let Some(sender) = icmp_named.then(|| icmp_sender(f)).flatten() {
        dg.explain.push_str(&sender);
    }
    dg
}

/// "; 10.0.0.1 (a router on the way) says: host unreachable (ICMP type 3 code 1)", for the
/// ICMP message received about this connection since it began; None if none was.
pub fn icmp_sender(f: &Failure) -> Option<String> {
    let m = f.icmp.as_ref().filter(|m| icmp_is_this_connections(f, m))?;
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
fn icmp_is_this_connections(f: &Failure, m: &crate::facts::IcmpMessage) -> bool {
    let born = f.history.transitions.first().map(|t| t.ts_ns).unwrap_or(f.ts_ns.saturating_sub(60_000_000_000));
    m.ts_ns >= born && m.ts_ns <= f.ts_ns
}

/// RFC 792 / RFC 4443 names of the errors that carry the offending packet.
pub fn icmp_message(v6: bool, icmp_type: u8, code: u8) -> &'static str {
    match (v6, icmp_type, code) {
        (false, 3, 0) => "net unreachable",
        (false, 3, 1) => "host unreachable",
        (false, 3, 2) => "protocol unreachable",
        (false, 3, 3) => "port unreachable",
        (false, 3, 4) => "fragmentation needed",
        (false, 3, 6) => "destination network unknown",
        (false, 3, 7) => "destination host unknown",
        (false, 3, 9 | 10 | 13) => "communication administratively prohibited",
        (false, 3, _) => "destination unreachable",
        (false, 11, _) => "time exceeded (TTL)",
        (false, 12, _) => "parameter problem",
        (true, 1, 0) => "no route to destination",
        (true, 1, 1) => "communication administratively prohibited",
        (true, 1, 3) => "address unreachable",
        (true, 1, 4) => "port unreachable",
        (true, 1, 5 | 6) => "rejected by policy",
        (true, 1, _) => "destination unreachable",
        (true, 2, _) => "packet too big",
        (true, 3, _) => "time exceeded (hop limit)",
        (true, 4, _) => "parameter problem",
        _ => "error",
    }
}

fn diagnose_cause(f: &Failure) -> Diagnosis {
    let h = &f.history;
    let remote = peer(f.remote);
    let d = Diagnosis::new;

    let Some(e) = f.errno else {
        return end_of_file(f);
    };
    if !f.is_tcp {
        return not_tcp(f, e);
    }

    // A send's EAGAIN is routine unless TCP's memory was over its hard limit: the kernel
    // refused the memory then, whatever the reader did.
    if let Some(dg) = send_refused_memory(f, e) {
        return dg;
    }
    if let Some(kind) = routine::kind_of(e) {
        return routine_failure(f, e, kind);
    }
    if let Some(dg) = resource_failure(f, e) {
        return dg;
    }

    // An RST that arrived on this socket explains refusals, resets and the EPIPE after them.
    if let Some(rst) = h.rst_received {
        if matches!(e, ECONNREFUSED | ECONNRESET | EPIPE | ECONNABORTED | ENOTCONN) {
            return from_rst_received(f, e, rst, &remote);
        }
    }

    match e {
        ECONNREFUSED => {
            if let Some((at, ECONNREFUSED)) = h.error_report {
                return d(Cause::IcmpError, born_state(f, at), Some(at.ts_ns), format!(
                    "an ICMP port-unreachable answered the SYN to {remote}: a firewall or router rejected it (no RST came from the host)"
                ));
            }
        }
        ECONNRESET => {
            if let Some((at, reason)) = h.rst_sent {
                let kernel = own_reset_reason(f, reason);
                // A disconnect closes the socket before it sends the RST: the state the
                // connection was reset in is the one that close left.
                let state = born_state(f, at);
                return d(
                    Cause::RstSent,
                    state,
                    Some(at.ts_ns),
                    format!(
                        "this host reset the connection to {remote} in {}: {}{kernel}",
                        state_name(state),
                        own_reset_why(f, at)
                    ),
                );
            }
        }
        EPIPE => {
            if let Some((at, reason)) = h.rst_sent {
                let kernel = own_reset_reason(f, reason);
                let state = born_state(f, at);
                return d(
                    Cause::RstSent,
                    state,
                    Some(at.ts_ns),
                    format!(
                        "this host had reset the connection to {remote} in {} ({}{kernel}); writing after that is a \
                         broken pipe",
                        state_name(state),
                        own_reset_why(f, at)
                    ),
                );
            }
            if let Some(fin) = h.transitions.iter().rev().find(|t| is_local_fin(t.old, t.new)) {
                return d(Cause::LocalShutdown, f.state_now, Some(fin.ts_ns), format!(
                    "this socket had already sent its FIN (shutdown(SHUT_WR) or close in {}); writing after that is a broken pipe",
                    state_name(fin.old)
                ));
            }
            if f.shutdown & net::SEND_SHUTDOWN != 0 && h.error_report.is_none() {
                return d(
                    Cause::LocalShutdown,
                    f.state_now,
                    None,
                    "the sending side of this socket was shut down (shutdown(SHUT_WR)) before the write".into(),
                );
            }
        }
        ECONNABORTED => {
            if let Some((at, ECONNABORTED)) = h.error_report {
                let state = born_state(f, at);
                return d(Cause::Aborted, state, Some(at.ts_ns), format!(
                    "the connection to {remote} was aborted on this host in {} (a socket kill such as `ss -K`, or tcp_abort)",
                    state_name(state)
                ));
            }
        }
        _ => {}
    }

    // Errors set by the stack itself: timeouts and ICMP, told apart by when they were reported.
    if let Some((at, reported)) = h.error_report {
        if reported == e || matches!(e, EPIPE | ENOTCONN) {
            if let Some(dg) = from_error_report(f, e, at, reported, &remote) {
                return dg;
            }
        }
    }

    // A non-blocking connect's SO_ERROR with the socket still in SYN_SENT and no error
    // reported: the kernel returns sk_err_soft there, which only an ICMP error that arrived
    // while the socket was busy sets (a hard one would have closed it with a report).
    if f.reported_as_connect
        && f.state_now == Some(TcpState::SynSent)
        && h.error_report.is_none()
        && h.rst_received.is_none()
        && matches!(e, EHOSTUNREACH | ENETUNREACH | ECONNREFUSED | EACCES)
    {
        let kind = icmp_kind(e);
        return d(
            Cause::IcmpError,
            Some(TcpState::SynSent),
            None,
            format!(
                "an ICMP {kind} came back for {remote} while connecting; it arrived while the socket was busy, so the \
                 kernel kept it as a soft error (sk_err_soft), which SO_ERROR returned ({}); the connect itself was \
                 still retrying",
                name(e)
            ),
        );
    }

    if let Some(dg) = before_the_trace(f, e) {
        return dg;
    }

    if matches!(e, EHOSTUNREACH | ENETUNREACH)
        && f.is_connect()
        && !h.transitions.iter().any(|t| t.new == Some(TcpState::SynSent))
    {
        let what = if e == ENETUNREACH { "network" } else { "host" };
        return d(
            Cause::NoRoute,
            None,
            None,
            format!("no route to {what} {remote}: the routing table refused the connect before any packet was sent"),
        );
    }

    d(Cause::Unknown, f.state_now, None, unexplained(f, e))
}

/// A socket that is not TCP: a UDP socket's error that an ICMP message set is explained by it;
/// anything else is reported with its errno only (`--all-sockets`).
fn not_tcp(f: &Failure, e: i32) -> Diagnosis {
    let remote = peer(f.remote);
    if f.protocol == net::IPPROTO_UDP {
        let icmp = match e {
            ECONNREFUSED => Some(("port-unreachable (type 3 code 3)", "nothing listens on that UDP port")),
            EHOSTUNREACH => {
                Some(("host-unreachable (type 3)", "the host, or a firewall on the way, cannot be reached"))
            }
            ENETUNREACH => Some(("net-unreachable (type 3)", "a router on the way has no route to that network")),
            _ => None,
        };
        if let (Some((what, meaning)), Some((at, reported))) = (icmp, f.history.error_report) {
            if reported == e {
                return Diagnosis::new(
                    Cause::IcmpError,
                    None,
                    Some(at.ts_ns),
                    format!(
                        "an ICMP {what} came back for a datagram to {remote}: {meaning}; the connected UDP socket \
                         returns it on its next call ({})",
                        name(e)
                    ),
                );
            }
        }
        return Diagnosis::new(
            Cause::Unknown,
            None,
            None,
            format!(
                "{} on a UDP socket: no ICMP error was reported on it, and socktrace explains UDP failures only by \
                 the ICMP errors that set them{}",
                name(e),
                match &f.trace_gaps.udp_errors_unseen {
                    Some(why) => format!(" (and cannot see them here: {why})"),
                    None => String::new(),
                }
            ),
        );
    }
    Diagnosis::new(
        Cause::Unknown,
        None,
        None,
        format!("{} on a non-TCP socket (family {}); socktrace explains TCP causes only", name(e), f.family),
    )
}

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

fn before_the_trace(f: &Failure, e: i32) -> Option<Diagnosis> {
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

/// Why nothing explains a failure: the socket's history began with this very call (nothing
/// was known of it), or what was recorded holds no cause for this errno; and, whichever, the
/// events the kernel did not let socktrace see.
fn unexplained(f: &Failure, e: i32) -> String {
    let missed = &f.trace_gaps.missed_runs;
    if missed.is_empty() {
        return unexplained_by_history(f, e);
    }
    let n = crate::kernel::prog_stats::total(missed);
    format!(
        "{}; the kernel skipped {n} run{} of socktrace's probes since the attach ({}: another BPF program, or a \
         BPF map syscall, held that CPU's guard when the event fired), so this socket's cause may be among the \
         events not seen",
        unexplained_by_history(f, e),
        if n == 1 { "" } else { "s" },
        crate::kernel::prog_stats::describe(missed)
    )
}

fn unexplained_by_history(f: &Failure, e: i32) -> String {
    let state = state_name(f.state_now);
    if f.history_started_here {
        let g = &f.trace_gaps;
        let why = match (g.histories_evicted, g.not_adopted) {
            (_, true) => {
                "it was open before the trace, and socktrace could not adopt this process's sockets at attach \
                          (see the notice at attach)"
                    .to_string()
            }
            (Some(0), false) => "no history was evicted (the map never filled), so the socket came into the process \
                                 from outside the trace: open before it and not adopted, or passed in from another \
                                 process (SCM_RIGHTS, inheritance)"
                .to_string(),
            (Some(n), false) => format!(
                "{n} socket histor{} evicted from the full map ({} sockets) since the attach: this one may be among \
                 them, or it was open before the trace and not adopted",
                if n == 1 { "y was" } else { "ies were" },
                socktrace_common::MAX_SOCKETS
            ),
            (None, false) => "it was open before the trace and could not be adopted, or its history was evicted from \
                              a full map"
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

/// Failures for want of a host resource: descriptors, local ports, a listener's queue, socket
/// memory. The numbers come from the kernel at the failure (`resource`) and from /proc
/// (`host`).
fn resource_failure(f: &Failure, e: i32) -> Option<Diagnosis> {
    let r = f.resource;
    let remote = peer(f.remote);
    match e {
        EMFILE => {
            let r = r?;
            let mut explain = format!(
                "the process has all {} descriptors its limit allows open (RLIMIT_NOFILE soft {}, hard {}): it must close \
                 some or raise the limit",
                r.nofile_cur, r.nofile_cur, r.nofile_max
            );
            if f.state_now == Some(TcpState::Listen) {
                if let Some(local) = f.local {
                    explain.push_str(&format!(
                        "; connections wait in the accept queue of {local} ({} queued, backlog {})",
                        r.ack_backlog, r.max_ack_backlog
                    ));
                }
            }
            Some(Diagnosis::new(Cause::FdLimit, f.state_now, None, explain))
        }
        ENFILE => {
            let table = match f.host.file_nr {
                Some((used, max)) => format!(" ({used} of fs.file-max {max} open)"),
                None => String::new(),
            };
            let explain = format!("the system's file table is full{table}: no process can open a descriptor");
            Some(Diagnosis::new(Cause::FdLimit, f.state_now, None, explain))
        }
        EADDRNOTAVAIL if f.is_connect() => {
            let r = r?;
            let range = r.port_high.saturating_sub(r.port_low) + 1;
            let mut explain = format!(
                "no local port is free for a connection to {remote}: the ephemeral range {}-{} ({range} ports, \
                 net.ipv4.ip_local_port_range) is used up",
                r.port_low, r.port_high
            );
            if let Some(by_state) = f.host.to_destination.as_ref().filter(|b| !b.is_empty()) {
                let n: u64 = by_state.iter().map(|(_, n)| n).sum();
                let states: Vec<String> = by_state.iter().map(|(s, n)| format!("{n} {}", s.name())).collect();
                explain = format!(
                    "all {range} ports of {}-{} are in use: {n} connections to {remote} ({}) hold ports of the \
                     range (net.ipv4.ip_local_port_range)",
                    r.port_low,
                    r.port_high,
                    states.join(", ")
                );
            }
            Some(Diagnosis::new(Cause::NoLocalPort, None, None, explain))
        }
        ENOBUFS | ENOMEM => {
            let r = r?;
            let mut explain = format!(
                "the kernel could not allocate socket memory for the send (this socket: {} of {} bytes of send buffer \
                 queued)",
                r.wmem_queued, r.sndbuf
            );
            if r.has_mem != 0 {
                explain.push_str(&tcp_memory(&r));
            } else if let Some((used, [_, pressure, max])) = f.host.tcp_mem {
                explain.push_str(&format!(
                    "; TCP uses {used} pages of memory (net.ipv4.tcp_mem: pressure at {pressure}, limit {max})"
                ));
            }
            Some(Diagnosis::new(Cause::SocketMemory, f.state_now, None, explain))
        }
        ETIMEDOUT if f.is_connect() => {
            let l = full_listener(f)?;
            let owner = match &l.owner {
                Some((pid, comm)) if l.others > 0 => {
                    format!(" (pid {pid} \"{comm}\" and {} other processes)", l.others)
                }
                Some((pid, comm)) => format!(" (pid {pid} \"{comm}\")"),
                None => String::new(),
            };
            let cap = match l.somaxconn {
                Some(max) => format!("capped by net.core.somaxconn {max}"),
                None => "capped by net.core.somaxconn".into(),
            };
            let n = f.history.retransmits;
            let explain = format!(
                "the listener on {}{owner} of this host does not accept fast enough: {} connections wait in an accept \
                 queue of {} (its listen() backlog, {cap}), so the kernel dropped our SYN and its {n} \
                 retransmission{}",
                l.addr,
                l.queued,
                l.backlog,
                if n == 1 { "" } else { "s" }
            );
            let at = f.history.error_report.map(|(s, _)| s.ts_ns);
            Some(Diagnosis::new(Cause::ListenOverflow, Some(TcpState::SynSent), at, explain).with_retransmits(n))
        }
        _ => None,
    }
}

/// TCP's memory at the failure, from the kernel's own counters.
fn tcp_memory(r: &socktrace_common::ResourceFacts) -> String {
    let [_, pressure, max] = r.mem_limits;
    format!(
        "; TCP uses {} pages of memory (net.ipv4.tcp_mem: pressure at {pressure}, limit {max}){}",
        r.mem_pages,
        if r.mem_pressure != 0 { ", in memory-pressure mode" } else { "" }
    )
}

/// EAGAIN from a send while TCP's memory was over `tcp_mem`'s hard limit, on a socket whose
/// send buffer the kernel had shrunk below the size every socket starts with (`tcp_wmem[1]`):
/// it does that only when it refuses memory (`sk_stream_moderate_sndbuf`), so the full
/// buffer is memory's doing, not a slow reader's. Both are the kernel's numbers at the
/// failure. Anything else is the routine full buffer, and memory is not named.
fn send_refused_memory(f: &Failure, e: i32) -> Option<Diagnosis> {
    let r = f.resource.filter(|r| {
        r.has_mem != 0 && r.mem_pages > r.mem_limits[2] && r.wmem_initial != 0 && r.sndbuf < r.wmem_initial
    })?;
    if e != EAGAIN || !f.syscall.is_some_and(crate::model::Syscall::is_send) || !f.is_tcp {
        return None;
    }
    let explain = format!(
        "TCP is out of memory: the kernel shrank this socket's send buffer to {} bytes (sockets start with {}, \
         net.ipv4.tcp_wmem) and refuses it more, so the non-blocking send could not queue anything ({} bytes \
         queued){}: find what holds TCP memory (ss -tm) or raise net.ipv4.tcp_mem",
        r.sndbuf,
        r.wmem_initial,
        r.wmem_queued,
        tcp_memory(&r)
    );
    Some(Diagnosis::new(Cause::SocketMemory, f.state_now, None, explain))
}

/// A listener of this host whose accept queue is full, as a timed-out connect to it found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FullListener {
    pub addr: std::net::SocketAddr,
    pub queued: u64,
    pub backlog: u64,
    pub somaxconn: Option<u64>,
    /// The process that owns it (named in the kernel when socktrace saw it listen, else the
    /// lowest PID holding it open), and how many other processes hold it too.
    pub owner: Option<(u32, String)>,
    pub others: usize,
}

/// The listener a timed-out connect waited for, if its queue is full (the kernel's own test,
/// `sk_acceptq_is_full`: more connections waiting than the backlog allows). The queue is the
/// kernel's at the failure when socktrace saw the listener listen; otherwise (it listened
/// before the trace, or in a process not traced) socket diagnostics' just after.
pub fn full_listener(f: &Failure) -> Option<FullListener> {
    let l = f.host.listener.as_ref()?;
    let seen = f.resource.filter(|r| r.has_listener != 0);
    let (queued, backlog) = match seen {
        Some(r) => (u64::from(r.ack_backlog), u64::from(r.max_ack_backlog)),
        None => (l.queued, l.backlog?),
    };
    if queued <= backlog {
        return None;
    }
    let (owner, others) = match seen.filter(|r| r.listener_tgid != 0) {
        Some(r) => {
            let len = r.listener_comm.iter().position(|&b| b == 0).unwrap_or(r.listener_comm.len());
            let comm = crate::text::escape_bytes(&r.listener_comm[..len]);
            (Some((r.listener_tgid, comm)), l.owners.iter().filter(|(pid, _)| *pid != r.listener_tgid).count())
        }
        None => (l.owners.first().cloned(), l.owners.len().saturating_sub(1)),
    };
    Some(FullListener { addr: l.addr, queued, backlog, somaxconn: l.somaxconn, owner, others })
}

/// The ICMP message behind an errno the ICMP handlers set.
fn icmp_kind(e: i32) -> &'static str {
    match e {
        ECONNREFUSED => "port-unreachable",
        EHOSTUNREACH => "host-unreachable",
        ENETUNREACH => "net-unreachable",
        EACCES => "administratively-prohibited",
        _ => "unreachable",
    }
}

/// Routine outcomes of non-blocking and signal-driven code: named, never a TCP cause.
fn routine_failure(f: &Failure, e: i32, kind: u32) -> Diagnosis {
    let explain = match kind {
        routine::EAGAIN if f.is_send() => match f.resource {
            Some(r) if r.sndbuf > 0 => format!(
                "the socket's send buffer is full ({} of {} bytes queued) and it is non-blocking (or SO_SNDTIMEO \
                 expired): retry when writable",
                r.wmem_queued, r.sndbuf
            ),
            _ => "the socket's send buffer is full and it is non-blocking (or SO_SNDTIMEO expired): retry when writable"
                .into(),
        },
        routine::EAGAIN => {
            "nothing to read yet on a non-blocking socket (or SO_RCVTIMEO expired): retry when readable".into()
        }
        routine::EINTR if is_restart(e) => format!(
            "a signal interrupted the blocking call ({} is the kernel's internal code; the program sees EINTR or a restarted call)",
            name(e)
        ),
        routine::EINTR => "a signal interrupted the blocking call before it completed".into(),
        routine::ECANCELED => "the io_uring request was cancelled before it completed (IORING_OP_ASYNC_CANCEL, a linked \
                               timeout that fired, or the ring was torn down)"
            .into(),
        routine::ETIME => "the io_uring timeout expired".into(),
        _ => "non-blocking connect started; its result comes later through SO_ERROR or a failing read/write".into(),
    };
    Diagnosis::new(Cause::of_routine(kind), f.state_now, None, explain)
}

fn is_local_fin(old: Option<TcpState>, new: Option<TcpState>) -> bool {
    use TcpState::*;
    matches!(
        (old, new),
        (Some(Established), Some(FinWait1)) | (Some(CloseWait), Some(LastAck)) | (Some(SynRecv), Some(FinWait1))
    )
}

/// The state the error was born in: the report's own state, or, when the kernel reported it
/// after closing the socket (tcp_done), the state just before that close.
fn born_state(f: &Failure, at: Stamp) -> Option<TcpState> {
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

/// The kernel's reason for an RST this socket sent, for the explanation: ` (kernel reason
/// NAME)`, or its bare number where this kernel's BTF names none.
fn own_reset_reason(f: &Failure, reason: Option<i32>) -> String {
    match (&f.rst_sent_reason_name, reason) {
        (Some(name), _) => format!(" (kernel reason {})", name.trim_start_matches("SK_RST_REASON_")),
        (None, Some(r)) => format!(" (kernel reason {r})"),
        (None, None) => String::new(),
    }
}

/// Why this socket sent its RST: the kernel's reason where it gives one (6.10+), else what the
/// context tells: the traced process's own call (a disconnect, an abortive close), or the
/// kernel on its own (a timer, a segment it received).
fn own_reset_why(f: &Failure, at: Stamp) -> String {
    let own_call = at.current_tgid == f.pid;
    let reason = f.rst_sent_reason_name.as_deref().map(|n| n.trim_start_matches("SK_RST_REASON_"));
    match reason {
        Some("TCP_ABORT_ON_CLOSE") => "the process closed it with unread data".into(),
        Some("TCP_ABORT_ON_LINGER") => "the linger time (SO_LINGER) of a closed socket ran out".into(),
        Some("TCP_ABORT_ON_MEMORY") => "the host was short of memory or had too many orphaned sockets".into(),
        Some("TCP_ABORT_ON_DATA") => "data arrived after the process had closed its end".into(),
        Some("TCP_KEEPALIVE_TIMEOUT") => "its keepalive probes went unanswered".into(),
        Some("TCP_DISCONNECT_WITH_DATA") => "the process disconnected it with data pending".into(),
        // An open connection reset from the process's own call, the socket still in its hands
        // (this failure is on it): a disconnect.
        Some("TCP_STATE") | None if own_call && f.fd >= 0 => {
            "the process's own call reset it: it disconnected the socket (connect() with AF_UNSPEC), which resets \
             an open connection"
                .into()
        }
        Some("TCP_STATE") => "it was aborted (tcp_abort, e.g. `ss -K`) or disconnected".into(),
        Some(other) => format!("the kernel's reason is {other}"),
        None => "the kernel reset it itself (a timer, or a segment it could not accept); this kernel gives no RST \
                 reason before 6.10"
            .into(),
    }
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
fn reset_sender(f: &Failure, rst: Stamp) -> Option<String> {
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
        let ack = seg.flags & 0x10 != 0;
        let answers_alone = p.no_socket || matches!(p.state, Some(TimeWait | Listen));
        if (ack && answers_alone) || (!ack && p.state == Some(Close)) {
            return None;
        }
    }
    let reason = p.reason_name.as_deref().map(|n| n.trim_start_matches("SK_RST_REASON_"));
    let from_call = p.state == Some(Close)
        || matches!(reason, Some("TCP_ABORT_ON_CLOSE" | "TCP_ABORT_ON_LINGER" | "TCP_DISCONNECT_WITH_DATA"));
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
        format!("pid {} \"{}\" on this host", p.tgid, crate::text::escape_bytes(&p.comm))
    } else {
        "a socket of this host".into()
    };
    let why = match (reason, p.state) {
        (Some("TCP_ABORT_ON_CLOSE"), _) => "it closed the socket with unread data".to_string(),
        (Some("TCP_ABORT_ON_MEMORY"), _) => "it was short of memory or had too many orphaned sockets".into(),
        (Some("TCP_ABORT_ON_DATA"), _) => "data arrived after it had closed its end".into(),
        (Some("TCP_KEEPALIVE_TIMEOUT"), _) => "its keepalive probes went unanswered".into(),
        (Some("TCP_DISCONNECT_WITH_DATA"), _) => "it disconnected the socket with data pending".into(),
        (Some("TCP_STATE"), Some(Close)) => {
            "it closed the socket with SO_LINGER 0 (an abortive close) or disconnected it".into()
        }
        (_, Some(Close)) => {
            "it closed the socket abortively (SO_LINGER 0, or with unread data) or disconnected it".into()
        }
        (Some("TCP_STATE"), _) => "it aborted the connection (tcp_abort: e.g. `ss -K`)".into(),
        (_, state) => format!("its socket sent it in {}", state_name(state)),
    };
    Some(format!("{who} reset it: {why}{kernel}"))
}

fn from_rst_received(f: &Failure, e: i32, rst: Stamp, remote: &str) -> Diagnosis {
    use TcpState::*;
    let state = rst.state;
    let sender = reset_sender(f, rst);
    let explain = match (e, state) {
        (ECONNREFUSED, Some(SynSent)) => {
            format!("peer answered the SYN with RST: nothing listens on {remote}")
        }
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
        (ECONNABORTED, _) => format!(
            "{remote} reset the connection in {} before it was accepted",
            state_name(state)
        ),
        _ => match (&sender, rst_origin(f)) {
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
    let explain = format!("{explain}{}", rsts_dropped_before(f, rst));
    let explain = match (&sender, explain.contains("reset it:")) {
        (Some(s), false) if !refusal => format!("{explain}; {s}"),
        (None, _) if !refusal && state != Some(CloseWait) && !explain.contains("its RST") => match rst_origin(f) {
            Some(origin) => format!("{explain}; {origin}"),
            None => explain,
        },
        _ => explain,
    };
    Diagnosis::new(Cause::RstReceived, state, Some(rst.ts_ns), explain)
}

/// What an RST segment says of its sender, by the rules TCP senders follow (RFC 793 3.4, RFC
/// 5961): a host with no connection for a segment answers it with an RST that has no ACK and
/// takes its sequence number from the segment's acknowledgement; a socket that aborts its own
/// connection sends RST+ACK at its send sequence. Linux accepts an RST only at `rcv_nxt`
/// exactly (or one below, after a FIN), so an accepted one is in the window.
pub fn rst_origin(f: &Failure) -> Option<String> {
    const ACK: u8 = 0x10;
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

/// RSTs sent to this socket that the kernel dropped before the one it accepted: an RST
/// outside the receive window (a blind or injected reset, or a stale one) is dropped as an
/// invalid sequence; one inside it but not at `rcv_nxt` is answered with a challenge ACK
/// (RFC 5961) and dropped too.
fn rsts_dropped_before(f: &Failure, rst: Stamp) -> String {
    const RST: u8 = 0x04;
    let Some(d) = f.drops.iter().find(|d| !d.sent && d.all_flags & RST != 0 && d.first_ns <= rst.ts_ns) else {
        return String::new();
    };
    let reason = d.reason_name.as_deref().map(|r| r.trim_start_matches("SKB_DROP_REASON_"));
    let what = match reason {
        Some("TCP_INVALID_SEQUENCE" | "TCP_OLD_SEQUENCE" | "TCP_INVALID_END_SEQUENCE") => {
            "outside the receive window, as a blind or injected reset (or a stale one) would be"
        }
        Some("TCP_RESET") => "inside the window but not at rcv_nxt: the kernel challenged it with an ACK (RFC 5961)",
        _ => "that the kernel did not accept",
    };
    let n = d.rsts.clamp(1, d.count.max(1));
    format!(
        "; before it, {n} segment{} with RST sent to it {} dropped on this host, {what} (kernel reason {}, in {})",
        if n == 1 { "" } else { "s" },
        if n == 1 { "was" } else { "were" },
        reason.unwrap_or("not given before 5.17"),
        d.function.as_deref().unwrap_or("?")
    )
}

/// The packets of this connection that this host dropped, for a timeout's explanation:
/// `; 2 SYNs it sent were dropped on this host: a netfilter rule dropped them (...)`.
fn drops_on_this_host(f: &Failure) -> String {
    let mut out = String::new();
    for d in &f.drops {
        let n = d.count;
        let what = dropped_segments(d);
        let whose = if d.sent { "it sent".to_string() } else { format!("sent to it by {}", peer(f.remote)) };
        let reason = d.reason_name.as_deref().map(|r| r.trim_start_matches("SKB_DROP_REASON_"));
        let function = d.function.as_deref().unwrap_or("?");
        let netfilter = reason == Some("NETFILTER_DROP")
            || (reason.is_none()
                && ["nf_hook_slow", "nft_", "ipt_do_table", "ip6t_do_table"].iter().any(|p| function.starts_with(p)));
        let who = if netfilter { "a netfilter rule (nftables or iptables) dropped" } else { "the kernel dropped" };
        let why = match (reason, d.reason) {
            (Some(r), _) => format!("kernel reason {r}, in {function}"),
            (None, Some(r)) => format!("kernel reason {r}, in {function}"),
            (None, None) => format!("in {function}; this kernel gives no drop reason before 5.17"),
        };
        let place = match (d.netns, d.dev.is_empty()) {
            (Some(ns), false) => format!(" in netns {ns} on {}", crate::text::escape_bytes(&d.dev)),
            (Some(ns), true) => format!(" in netns {ns}"),
            (None, false) => format!(" on {}", crate::text::escape_bytes(&d.dev)),
            (None, true) => String::new(),
        };
        let ago = |t: u64| format!("{:.1} s", f.ts_ns.saturating_sub(t) as f64 / 1e9);
        let when = if n == 1 {
            format!("{} before the failure", ago(d.last_ns))
        } else {
            format!("the first {} and the last {} before the failure", ago(d.first_ns), ago(d.last_ns))
        };
        out.push_str(&format!(
            "; {what} {whose} {} dropped on this host: {who} {} ({why}){place}, {when}",
            if n == 1 { "was" } else { "were" },
            if n == 1 { "it" } else { "them" },
        ));
    }
    out
}

/// What a flow's dropped packets were: `3 SYNs`, `1 RST`, `2 segments and 1 RST` (a
/// keepalive timeout's unanswered probes, then the RST it sends). The record keeps how many
/// carried RST and the flags of all together, so the others are named only when that tells.
fn dropped_segments(d: &crate::facts::PacketDrops) -> String {
    let n = d.count;
    let rsts = d.rsts.min(n);
    let others = n - rsts;
    let count = |k: u32, what: &str| format!("{k} {what}{}", if k == 1 { "" } else { "s" });
    if others == 0 {
        return count(n, "RST");
    }
    // SYN alone among the others' flags: every one was a SYN (any later segment has ACK).
    let kind = if rsts == 0 && d.all_flags & 0x3b == 0x02 {
        "SYN"
    } else if rsts == 0 && d.all_flags & 0x39 == 0x10 && d.last_flags & 0x12 == 0x12 {
        "SYN-ACK"
    } else {
        "segment"
    };
    if rsts == 0 {
        count(n, kind)
    } else {
        format!("{} and {}", count(others, kind), count(rsts, "RST"))
    }
}

fn from_error_report(f: &Failure, e: i32, at: Stamp, reported: i32, remote: &str) -> Option<Diagnosis> {
    let h = &f.history;
    let state = born_state(f, at);
    let connecting = matches!(state, Some(TcpState::SynSent | TcpState::SynRecv));
    // Reported before the socket closed: only an ICMP error with IP_RECVERR does that on
    // kernels where errors are reported after tcp_done (6.10+); older kernels report hard
    // ICMP errors before closing.
    let reported_before_close = at.state.is_some_and(|s| s != TcpState::Close);
    let via = match e {
        EPIPE => format!(" ({} was reported first; this later write is a broken pipe)", name(reported)),
        ENOTCONN => format!(" ({} was reported first and the socket closed: no connection is left)", name(reported)),
        _ => String::new(),
    };
    let icmp_errno =
        matches!(reported, EHOSTUNREACH | ENETUNREACH | ECONNREFUSED | EHOSTDOWN | ENONET | EPROTO | EACCES);
    // While connecting, every ICMP unreachable is a hard error (tcp_v4_err/tcp_v6_err): the
    // connect fails on it. Afterwards they are soft: remembered, and reported only when the
    // retransmissions time out.
    if reported == ETIMEDOUT || (icmp_errno && !connecting && !reported_before_close) {
        let n = h.retransmits;
        let soft = if reported == ETIMEDOUT {
            String::new()
        } else {
            format!(" (the last ICMP error seen, {}, is what the kernel reports)", name(reported))
        };
        let timer = f.timers.map(|t| which_timer(f, &t, connecting, n, at.ts_ns));
        // A closed window is probed, not retransmitted into: the persist timer gave up.
        let zero_window = !connecting && f.timers.is_some_and(|t| t.snd_wnd == 0);
        let explain = if (n == 0 || zero_window) && !connecting {
            match &timer {
                Some(which) => format!(
                    "the connection to {remote} timed out in {}{}: {which}{soft}{via}",
                    state_name(state),
                    if n == 0 { " with nothing retransmitted" } else { "" }
                ),
                // Nothing was retransmitted, so no data was waiting for an acknowledgement:
                // what gave up was a probe timer (keepalive, or zero-window probes) or
                // TCP_USER_TIMEOUT.
                None => format!(
                    "the connection to {remote} timed out in {} with nothing retransmitted: no data was waiting for \
                     an acknowledgement, so keepalive or zero-window probes went unanswered (or TCP_USER_TIMEOUT \
                     expired){soft}{via}",
                    state_name(state)
                ),
            }
        } else {
            let what = if connecting { "the SYN" } else { "data" };
            let limit = timer.map(|t| format!(" ({t})")).unwrap_or_default();
            format!(
                "{remote} never acknowledged {what} after {n} retransmission{} in {}: the connection timed \
                 out{limit}{soft}{via}",
                if n == 1 { "" } else { "s" },
                state_name(state)
            )
        };
        let explain = format!("{explain}{}", drops_on_this_host(f));
        return Some(Diagnosis::new(Cause::Timeout, state, Some(at.ts_ns), explain).with_retransmits(n));
    }
    if icmp_errno {
        let kind = icmp_kind(reported);
        let explain =
            format!("an ICMP {kind} came back for {remote} while in {} ({}){via}", state_name(state), name(reported));
        return Some(Diagnosis::new(Cause::IcmpError, state, Some(at.ts_ns), explain));
    }
    None
}

/// Which TCP timer gave up, with the limit it applied and the numbers it went by: the SYN
/// retries (how many SYNs, over how long), the data retransmissions (for how long), keepalive
/// probes (the idle time and interval), zero-window probes, or TCP_USER_TIMEOUT (which bounds
/// each of the others). `gave_up_ns`: when the error was reported.
fn which_timer(
    f: &Failure,
    t: &socktrace_common::TimerFacts,
    connecting: bool,
    retransmits: u32,
    gave_up_ns: u64,
) -> String {
    let user = (t.user_timeout_ms > 0).then(|| format!("TCP_USER_TIMEOUT {} ms", t.user_timeout_ms));
    let or_user = |limit: String| match &user {
        Some(u) => format!("{u} (else {limit})"),
        None => limit,
    };
    let secs = |ns: u64| format!("{:.1} s", ns as f64 / 1e9);
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

fn end_of_file(f: &Failure) -> Diagnosis {
    let h = &f.history;
    if let Some(rst) = h.rst_received {
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
        let explain = format!("end of file: {} closed its side of the connection (FIN)", peer(f.remote));
        Diagnosis::new(Cause::PeerFin, state, fin.map(|t| t.ts_ns), explain)
    } else {
        let explain = "end of file with no FIN recorded (our own SHUT_RD, or the FIN predates tracing)".into();
        Diagnosis::new(Cause::Unknown, state, None, explain)
    }
}

/// What the diagnosis test modules build their cases from.
#[cfg(test)]
mod test_support {
    use crate::facts::{Failure, History, Stamp, StateChange};
    use crate::model::{Syscall, TcpState};

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
}

#[cfg(test)]
mod tests {
    use super::test_support::{at, failure, tr};
    use super::*;
    use crate::facts::{History, StateChange};
    use crate::model::{IoUringOp, Syscall};
    use socktrace_common::RstSegment;
    use TcpState::*;

    fn reset_established_2() -> History {
        History {
            transitions: vec![tr(1_100, SynSent, Established), tr(5_000, Established, Close)],
            rst_received: Some(at(4_900, Established)),
            error_report: Some((at(5_100, Close), ECONNRESET)),
            ..Default::default()
        }
    }

    fn est_timeout_2() -> History {
        History {
            transitions: vec![tr(1_100, SynSent, Established), tr(9_000, Established, Close)],
            retransmits: 5,
            error_report: Some((at(9_100, Close), ETIMEDOUT)),
            ..Default::default()
        }
    }

    fn connect_then_close(ts_close: u64) -> Vec<StateChange> {
        vec![tr(1_000, Close, SynSent), tr(ts_close, SynSent, Close)]
    }

    /// (name, failure, expected cause, expected state at the failure's birth)
    fn catalogue() -> Vec<(&'static str, Failure, Cause, Option<TcpState>)> {
        let refused_rst = History {
            transitions: connect_then_close(2_000),
            rst_received: Some(at(1_900, SynSent)),
            error_report: Some((at(2_100, Close), ECONNREFUSED)),
            ..Default::default()
        };
        let refused_icmp = History {
            transitions: connect_then_close(2_000),
            error_report: Some((at(1_900, SynSent), ECONNREFUSED)),
            ..Default::default()
        };
        let reset_established = History {
            transitions: vec![
                tr(1_000, Close, SynSent),
                tr(1_100, SynSent, Established),
                tr(5_000, Established, Close),
            ],
            rst_received: Some(at(4_900, Established)),
            error_report: Some((at(5_100, Close), ECONNRESET)),
            ..Default::default()
        };
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
        let shut_wr = History {
            transitions: vec![
                tr(1_100, SynSent, Established),
                tr(3_000, Established, FinWait1),
                tr(3_100, FinWait1, FinWait2),
            ],
            ..Default::default()
        };
        let syn_timeout = History {
            transitions: connect_then_close(9_000),
            retransmits: 2,
            last_retransmit_ns: Some(5_000),
            error_report: Some((at(9_100, Close), ETIMEDOUT)),
            ..Default::default()
        };
        let est_timeout = History {
            transitions: vec![tr(1_100, SynSent, Established), tr(9_000, Established, Close)],
            retransmits: 5,
            error_report: Some((at(9_100, Close), ETIMEDOUT)),
            ..Default::default()
        };
        let icmp_host = History {
            transitions: connect_then_close(2_000),
            error_report: Some((at(1_900, SynSent), EHOSTUNREACH)),
            ..Default::default()
        };
        let refused_icmp_after_close = History {
            transitions: connect_then_close(2_000),
            retransmits: 1,
            error_report: Some((at(2_100, Close), ECONNREFUSED)),
            ..Default::default()
        };
        let icmp_host_after_close = History {
            transitions: connect_then_close(2_000),
            retransmits: 1,
            error_report: Some((at(2_100, Close), EHOSTUNREACH)),
            ..Default::default()
        };
        let soft_then_timeout = History {
            transitions: vec![tr(1_100, SynSent, Established), tr(9_000, Established, Close)],
            retransmits: 4,
            error_report: Some((at(9_100, Close), EHOSTUNREACH)),
            ..Default::default()
        };
        let aborted = History {
            transitions: vec![tr(1_100, SynSent, Established), tr(6_000, Established, Close)],
            error_report: Some((at(6_100, Close), ECONNABORTED)),
            ..Default::default()
        };
        let fin = History {
            transitions: vec![tr(1_100, SynSent, Established), tr(3_000, Established, CloseWait)],
            ..Default::default()
        };
        let we_reset = History {
            transitions: vec![tr(1_100, SynSent, Established), tr(3_000, Established, Close)],
            rst_sent: Some((at(2_900, Established), Some(2))),
            ..Default::default()
        };
        use Syscall::*;
        vec![
            (
                "connect refused by RST",
                failure(Connect, Some(ECONNREFUSED), Close, refused_rst.clone()),
                Cause::RstReceived,
                Some(SynSent),
            ),
            (
                "connect refused by ICMP port-unreachable",
                failure(Connect, Some(ECONNREFUSED), Close, refused_icmp),
                Cause::IcmpError,
                Some(SynSent),
            ),
            (
                "read after peer RST",
                failure(Read, Some(ECONNRESET), Close, reset_established.clone()),
                Cause::RstReceived,
                Some(Established),
            ),
            (
                "write after peer RST: first ECONNRESET",
                failure(Write, Some(ECONNRESET), Close, reset_established.clone()),
                Cause::RstReceived,
                Some(Established),
            ),
            (
                "write after peer RST: then EPIPE",
                failure(Sendto, Some(EPIPE), Close, reset_established.clone()),
                Cause::RstReceived,
                Some(Established),
            ),
            (
                "read after RST was reported: EOF",
                failure(Read, None, Close, reset_established),
                Cause::RstReceived,
                Some(Established),
            ),
            (
                "server terminated prematurely",
                failure(Write, Some(EPIPE), Close, premature),
                Cause::RstReceived,
                Some(CloseWait),
            ),
            (
                "write after our shutdown(SHUT_WR)",
                failure(Write, Some(EPIPE), FinWait2, shut_wr),
                Cause::LocalShutdown,
                Some(FinWait2),
            ),
            ("read after peer FIN", failure(Read, None, CloseWait, fin), Cause::PeerFin, Some(CloseWait)),
            ("connect timeout", failure(Connect, Some(ETIMEDOUT), Close, syn_timeout), Cause::Timeout, Some(SynSent)),
            (
                "established timeout",
                failure(Write, Some(ETIMEDOUT), Close, est_timeout),
                Cause::Timeout,
                Some(Established),
            ),
            (
                "ICMP host unreachable while connecting",
                failure(Connect, Some(EHOSTUNREACH), Close, icmp_host),
                Cause::IcmpError,
                Some(SynSent),
            ),
            (
                "ICMP port-unreachable reported after tcp_done (6.10+)",
                failure(Connect, Some(ECONNREFUSED), Close, refused_icmp_after_close),
                Cause::IcmpError,
                Some(SynSent),
            ),
            (
                "ICMP host-unreachable reported after tcp_done (6.10+)",
                failure(Connect, Some(EHOSTUNREACH), Close, icmp_host_after_close),
                Cause::IcmpError,
                Some(SynSent),
            ),
            (
                "timeout after a soft ICMP error",
                failure(Read, Some(EHOSTUNREACH), Close, soft_then_timeout),
                Cause::Timeout,
                Some(Established),
            ),
            (
                "no route: unreachable route",
                failure(Connect, Some(EHOSTUNREACH), Close, History::default()),
                Cause::NoRoute,
                None,
            ),
            ("no route at all", failure(Connect, Some(ENETUNREACH), Close, History::default()), Cause::NoRoute, None),
            ("killed with ss -K", failure(Read, Some(ECONNABORTED), Close, aborted), Cause::Aborted, Some(Established)),
            (
                "we reset it ourselves",
                failure(Read, Some(ECONNRESET), Close, we_reset),
                Cause::RstSent,
                Some(Established),
            ),
            (
                "sendfile after peer RST: EPIPE",
                failure(Sendfile, Some(EPIPE), Close, reset_established_2()),
                Cause::RstReceived,
                Some(Established),
            ),
            (
                "splice into a reset socket",
                failure(Splice, Some(ECONNRESET), Close, reset_established_2()),
                Cause::RstReceived,
                Some(Established),
            ),
            (
                "shutdown after peer RST: ENOTCONN",
                failure(Shutdown, Some(ENOTCONN), Close, reset_established_2()),
                Cause::RstReceived,
                Some(Established),
            ),
            (
                "shutdown after a timeout: ENOTCONN",
                failure(Shutdown, Some(ENOTCONN), Close, est_timeout_2()),
                Cause::Timeout,
                Some(Established),
            ),
            (
                "shutdown of a socket never connected",
                failure(Shutdown, Some(ENOTCONN), Close, History::default()),
                Cause::Unknown,
                Some(Close),
            ),
            (
                "io_uring recv after peer RST",
                failure(IoUring(IoUringOp::Recv), Some(ECONNRESET), Close, reset_established_2()),
                Cause::RstReceived,
                Some(Established),
            ),
            (
                "io_uring connect refused by RST",
                failure(IoUring(IoUringOp::Connect), Some(ECONNREFUSED), Close, refused_rst.clone()),
                Cause::RstReceived,
                Some(SynSent),
            ),
            (
                "io_uring send cancelled",
                failure(IoUring(IoUringOp::Send), Some(ECANCELED), Established, History::default()),
                Cause::Cancelled,
                Some(Established),
            ),
            (
                "accept aborted with nothing recorded",
                failure(Accept, Some(ECONNABORTED), Listen, History::default()),
                Cause::Unknown,
                Some(Listen),
            ),
            (
                "EAGAIN",
                failure(Read, Some(EAGAIN), Established, History::default()),
                Cause::WouldBlock,
                Some(Established),
            ),
            (
                "EINTR",
                failure(Read, Some(EINTR), Established, History::default()),
                Cause::Interrupted,
                Some(Established),
            ),
            (
                "ERESTARTSYS",
                failure(Read, Some(ERESTARTSYS), Established, History::default()),
                Cause::Interrupted,
                Some(Established),
            ),
            (
                "EINPROGRESS",
                failure(Connect, Some(EINPROGRESS), SynSent, History::default()),
                Cause::InProgress,
                Some(SynSent),
            ),
            (
                "reset with no recorded event",
                failure(Read, Some(ECONNRESET), Close, History::default()),
                Cause::Unknown,
                Some(Close),
            ),
            (
                "refused with no recorded event",
                failure(Connect, Some(ECONNREFUSED), Close, History::default()),
                Cause::Unknown,
                Some(Close),
            ),
            (
                "timeout with no recorded event",
                failure(Connect, Some(ETIMEDOUT), Close, History::default()),
                Cause::Unknown,
                Some(Close),
            ),
        ]
    }

    #[test]
    fn every_row_of_the_catalogue() {
        for (name, f, cause, state) in catalogue() {
            let dg = diagnose(&f);
            assert_eq!((dg.cause, dg.state), (cause, state), "{name}: {}", dg.explain);
            assert!(!dg.explain.is_empty() && !dg.explain.contains('\n'), "{name}");
        }
    }

    #[test]
    fn refusal_by_rst_and_by_icmp_explain_differently() {
        let rows = catalogue();
        let rst = diagnose(&rows[0].1).explain;
        let icmp = diagnose(&rows[1].1).explain;
        assert!(rst.contains("RST") && rst.contains("nothing listens on 127.0.0.1:9"), "{rst}");
        assert!(icmp.contains("ICMP") && !icmp.contains("nothing listens"), "{icmp}");
    }

    #[test]
    fn cause_age_is_measured_from_the_causing_event() {
        let rows = catalogue();
        let f = &rows[0].1;
        let dg = diagnose(f);
        assert_eq!(dg.cause_ts_ns, Some(1_900));
        assert_eq!(dg.cause_age_ns(f.ts_ns), Some(10_000 - 1_900));
    }

    #[test]
    fn timeouts_carry_the_retransmission_count() {
        let rows = catalogue();
        let dg = diagnose(&rows[9].1);
        assert_eq!(dg.retransmits, Some(2));
        assert!(dg.explain.contains("2 retransmissions"), "{}", dg.explain);
    }

    #[test]
    fn async_connect_result_is_labelled_like_a_connect() {
        let rows = catalogue();
        let mut f = rows[0].1.clone();
        f.syscall = Some(Syscall::Getsockopt);
        f.reported_as_connect = true;
        assert_eq!(diagnose(&f).cause, Cause::RstReceived);
    }

    #[test]
    fn non_tcp_sockets_are_not_explained() {
        let mut f = catalogue()[0].1.clone();
        f.is_tcp = false;
        assert_eq!(diagnose(&f).cause, Cause::Unknown);
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
}

/// Failures for want of a host resource, rule by rule (`resource_failure`), and what stays
/// unknown when the numbers are missing.
#[cfg(test)]
mod resource_tests {
    use super::*;
    use crate::facts::History;
    use crate::facts::{HostFacts, Listener};
    use crate::model::Syscall;
    use socktrace_common::ResourceFacts;
    use TcpState::*;

    fn failure(syscall: Syscall, e: i32, state_now: TcpState, resource: Option<ResourceFacts>) -> Failure {
        Failure {
            local: Some("127.0.0.1:8080".parse().unwrap()),
            remote: Some("127.0.0.1:9000".parse().unwrap()),
            resource,
            ..Failure::for_test(syscall, Some(e), state_now, History::default())
        }
    }

    #[test]
    fn emfile_names_the_limit_and_the_accept_queue() {
        let r = ResourceFacts {
            nofile_cur: 32,
            nofile_max: 64,
            ack_backlog: 17,
            max_ack_backlog: 128,
            ..Default::default()
        };
        let dg = diagnose(&failure(Syscall::Accept4, EMFILE, Listen, Some(r)));
        assert_eq!((dg.cause, dg.state), (Cause::FdLimit, Some(Listen)));
        assert!(
            dg.explain.contains("all 32 descriptors its limit allows open (RLIMIT_NOFILE soft 32, hard 64)"),
            "{}",
            dg.explain
        );
        assert!(dg.explain.contains("accept queue of 127.0.0.1:8080 (17 queued, backlog 128)"), "{}", dg.explain);
        // Without the kernel's numbers there is nothing to prove it: unknown, saying why.
        let dg = diagnose(&failure(Syscall::Accept4, EMFILE, Listen, None));
        assert_eq!(dg.cause, Cause::Unknown);
        assert!(dg.explain.contains("EMFILE in LISTEN"), "{}", dg.explain);
    }

    #[test]
    fn enfile_names_the_system_file_table() {
        let mut f = failure(Syscall::Accept, ENFILE, Listen, None);
        f.host = HostFacts { file_nr: Some((99_990, 100_000)), ..HostFacts::default() };
        let dg = diagnose(&f);
        assert_eq!(dg.cause, Cause::FdLimit);
        assert!(dg.explain.contains("(99990 of fs.file-max 100000 open)"), "{}", dg.explain);
    }

    #[test]
    fn eaddrnotavail_on_connect_names_the_range_and_who_holds_it() {
        let r = ResourceFacts { port_low: 40000, port_high: 40003, ..Default::default() };
        let mut f = failure(Syscall::Connect, EADDRNOTAVAIL, Close, Some(r));
        let dg = diagnose(&f);
        assert_eq!((dg.cause, dg.state), (Cause::NoLocalPort, None));
        assert!(dg.explain.contains("the ephemeral range 40000-40003 (4 ports"), "{}", dg.explain);
        f.host = HostFacts { to_destination: Some(vec![(Established, 3), (TimeWait, 1)]), ..HostFacts::default() };
        let dg = diagnose(&f);
        assert!(
            dg.explain.contains(
                "all 4 ports of 40000-40003 are in use: 4 connections to 127.0.0.1:9000 (3 ESTABLISHED, 1 TIME_WAIT)"
            ),
            "{}",
            dg.explain
        );
        // Not a connect: not this rule.
        assert_ne!(diagnose(&failure(Syscall::Sendto, EADDRNOTAVAIL, Close, Some(r))).cause, Cause::NoLocalPort);
    }

    #[test]
    fn a_timed_out_connect_to_a_full_queue_of_this_host_is_listen_overflow() {
        let mut comm = [0u8; 16];
        comm[..6].copy_from_slice(b"server");
        let full = ResourceFacts {
            has_listener: 1,
            listener_tgid: 4884,
            listener_comm: comm,
            ack_backlog: 2,
            max_ack_backlog: 1,
            ..Default::default()
        };
        let mut f = failure(Syscall::Connect, ETIMEDOUT, Close, Some(full));
        f.history.retransmits = 2;
        f.host = HostFacts {
            listener: Some(Listener {
                addr: "127.0.0.1:9000".parse().unwrap(),
                queued: 2,
                backlog: None,
                somaxconn: None,
                owners: Vec::new(),
            }),
            ..HostFacts::default()
        };
        let dg = diagnose(&f);
        assert_eq!((dg.cause, dg.state, dg.retransmits), (Cause::ListenOverflow, Some(SynSent), Some(2)));
        assert!(dg.explain.contains("the listener on 127.0.0.1:9000 (pid 4884 \"server\")"), "{}", dg.explain);
        assert!(dg.explain.contains("2 connections wait in an accept queue of 1"), "{}", dg.explain);
        // A queue with room: the kernel did not drop for it, so not this rule.
        let mut room = f.clone();
        room.resource = Some(ResourceFacts { ack_backlog: 1, ..full });
        assert_ne!(diagnose(&room).cause, Cause::ListenOverflow);
        // No listener of this host at that address (the destination is another host): not this rule.
        let mut remote = f.clone();
        remote.host = HostFacts::default();
        assert_ne!(diagnose(&remote).cause, Cause::ListenOverflow);
    }

    /// A listener socktrace never saw listen (it predates the trace, or its process is not
    /// traced): the queue from socket diagnostics, the owner from /proc.
    #[test]
    fn a_full_listener_older_than_the_trace_is_named_from_the_host() {
        let mut f = failure(Syscall::Connect, ETIMEDOUT, Close, Some(ResourceFacts::default()));
        f.history.retransmits = 1;
        let listener = Listener {
            addr: "127.0.0.1:9000".parse().unwrap(),
            queued: 3,
            backlog: Some(1),
            somaxconn: Some(4096),
            owners: vec![(700, "nginx".into()), (701, "nginx".into())],
        };
        f.host = HostFacts { listener: Some(listener.clone()), ..HostFacts::default() };
        let dg = diagnose(&f);
        assert_eq!((dg.cause, dg.state), (Cause::ListenOverflow, Some(SynSent)));
        assert!(
            dg.explain
                .contains("the listener on 127.0.0.1:9000 (pid 700 \"nginx\" and 1 other processes) of this host"),
            "{}",
            dg.explain
        );
        assert!(
            dg.explain.contains(
                "3 connections wait in an accept queue of 1 (its listen() backlog, capped by net.core.somaxconn 4096)"
            ),
            "{}",
            dg.explain
        );
        assert!(dg.explain.contains("its 1 retransmission"), "{}", dg.explain);
        // Without the backlog (no socket diagnostics) nothing proves the queue full.
        f.host.listener = Some(Listener { backlog: None, ..listener.clone() });
        assert_ne!(diagnose(&f).cause, Cause::ListenOverflow);
        // Room in the queue: not this rule.
        f.host.listener = Some(Listener { queued: 1, ..listener });
        assert_ne!(diagnose(&f).cause, Cause::ListenOverflow);
    }

    /// EAGAIN on a send: routine, unless the kernel saw TCP over its hard memory limit.
    #[test]
    fn eagain_on_send_over_the_tcp_memory_limit_is_socket_memory() {
        let over = ResourceFacts {
            sndbuf: 4608,
            wmem_queued: 4352,
            mem_pages: 300,
            mem_limits: [1, 1, 1],
            mem_pressure: 1,
            has_mem: 1,
            wmem_initial: 16384,
            ..Default::default()
        };
        let dg = diagnose(&failure(Syscall::Sendto, EAGAIN, Established, Some(over)));
        assert_eq!(dg.cause, Cause::SocketMemory);
        assert!(dg.explain.contains("TCP is out of memory"), "{}", dg.explain);
        assert!(
            dg.explain.contains("shrank this socket's send buffer to 4608 bytes (sockets start with 16384")
                && dg.explain.contains("(4352 bytes queued)")
                && dg.explain.contains(
                    "TCP uses 300 pages of memory (net.ipv4.tcp_mem: pressure at 1, limit 1), in memory-pressure mode"
                ),
            "{}",
            dg.explain
        );
        // Under the limit: the routine full buffer.
        let under = ResourceFacts { mem_pages: 1, mem_limits: [10, 20, 30], mem_pressure: 0, ..over };
        assert_eq!(diagnose(&failure(Syscall::Sendto, EAGAIN, Established, Some(under))).cause, Cause::WouldBlock);
        // Over the limit, but the buffer was never shrunk: a slow reader filled it.
        let full = ResourceFacts { sndbuf: 65536, wmem_queued: 65536, ..over };
        assert_eq!(diagnose(&failure(Syscall::Sendto, EAGAIN, Established, Some(full))).cause, Cause::WouldBlock);
        // A read's EAGAIN is never about send memory.
        assert_eq!(diagnose(&failure(Syscall::Read, EAGAIN, Established, Some(over))).cause, Cause::WouldBlock);
        // Nothing read: routine.
        assert_eq!(diagnose(&failure(Syscall::Sendto, EAGAIN, Established, None)).cause, Cause::WouldBlock);
    }

    #[test]
    fn enobufs_names_the_send_buffer_and_tcp_memory() {
        let r = ResourceFacts { sndbuf: 16384, wmem_queued: 16000, ..Default::default() };
        let mut f = failure(Syscall::Sendmsg, ENOBUFS, Established, Some(r));
        f.host = HostFacts { tcp_mem: Some((9000, [4000, 8000, 12000])), ..HostFacts::default() };
        let dg = diagnose(&f);
        assert_eq!(dg.cause, Cause::SocketMemory);
        assert!(dg.explain.contains("16000 of 16384 bytes"), "{}", dg.explain);
        assert!(
            dg.explain.contains("TCP uses 9000 pages of memory (net.ipv4.tcp_mem: pressure at 8000, limit 12000)"),
            "{}",
            dg.explain
        );
    }

    #[test]
    fn eagain_on_send_says_how_full_the_buffer_is() {
        let r = ResourceFacts { sndbuf: 4608, wmem_queued: 4608, ..Default::default() };
        let dg = diagnose(&failure(Syscall::Write, EAGAIN, Established, Some(r)));
        assert_eq!(dg.cause, Cause::WouldBlock);
        assert!(dg.explain.contains("send buffer is full (4608 of 4608 bytes queued)"), "{}", dg.explain);
    }

    #[test]
    fn unknown_says_whether_anything_was_recorded_before_the_call() {
        let mut f = failure(Syscall::Read, EPROTO, Established, None);
        f.history_started_here = true;
        let dg = diagnose(&f);
        assert_eq!(dg.cause, Cause::Unknown);
        assert!(dg.explain.contains("nothing was recorded on this socket before this call"), "{}", dg.explain);
        // Why, as exactly as the session can tell: the map never filled...
        f.trace_gaps.histories_evicted = Some(0);
        let dg = diagnose(&f);
        assert!(dg.explain.contains("no history was evicted (the map never filled)"), "{}", dg.explain);
        // ...or it did...
        f.trace_gaps.histories_evicted = Some(12);
        let dg = diagnose(&f);
        assert!(
            dg.explain.contains("12 socket histories were evicted from the full map (65536 sockets)"),
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

/// The two explanations that were wrong, not just vague (issue #14 (i) and (ii)).
#[cfg(test)]
mod soft_error_and_probe_timeout_tests {
    use super::*;
    use crate::facts::{History, Stamp, StateChange};
    use crate::model::Syscall;
    use TcpState::*;

    fn failure(syscall: Syscall, e: i32, state_now: TcpState, history: History) -> Failure {
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
        let dg = diagnose(&failure(Syscall::Getsockopt, EHOSTUNREACH, SynSent, h.clone()));
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
        let dg = diagnose(&failure(Syscall::Connect, EHOSTUNREACH, Close, closed));
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
        let mut f = failure(Syscall::Getsockopt, EHOSTUNREACH, SynSent, h);
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
        let dg = diagnose(&failure(Syscall::Read, ETIMEDOUT, Close, h));
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
            let f = Failure { timers: Some(timers), ..failure(Syscall::Read, ETIMEDOUT, Close, timed_out(before, n)) };
            let dg = diagnose(&f);
            assert_eq!((dg.cause, dg.state), (Cause::Timeout, Some(before)), "{name}");
            for w in want {
                assert!(dg.explain.contains(w), "{name}: {w:?} not in {}", dg.explain);
            }
        }
    }
}

/// Which RST a remote peer sent, from its segment (#14).
#[cfg(test)]
mod rst_origin_tests {
    use super::test_support::{at, failure, tr};
    use super::*;
    use crate::facts::History;
    use crate::model::Syscall;
    use socktrace_common::RstSegment;
    use TcpState::*;

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
}

/// The numbers behind a timeout and the drops behind it (#14, items 4 and 5).
#[cfg(test)]
mod timeout_numbers_tests {
    use super::test_support::tr;
    use super::*;
    use crate::facts::{History, PacketDrops, StateChange};
    use crate::model::Syscall;
    use socktrace_common::TimerFacts;
    use TcpState::*;

    const S: u64 = 1_000_000_000;

    fn timed_out(transitions: Vec<StateChange>, gave_up: u64, retransmits: u32, first: Option<u64>) -> History {
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
        let h = timed_out(vec![tr(S, Close, SynSent), tr(4 * S, SynSent, Close)], 4 * S, 2, Some(2 * S));
        let dg = diagnose(&with(TimerFacts { net_syn_retries: 2, ..base() }, Syscall::Connect, h));
        assert!(
            dg.explain.contains("SYN retries exhausted: net.ipv4.tcp_syn_retries 2; 3 SYNs over 3.0 s"),
            "{}",
            dg.explain
        );
    }

    #[test]
    fn data_retransmissions_say_for_how_long() {
        let h = timed_out(vec![tr(S, SynSent, Established), tr(9 * S, Established, Close)], 9 * S, 5, Some(2 * S));
        let dg = diagnose(&with(base(), Syscall::Read, h));
        assert!(dg.explain.contains("after 5 retransmissions in ESTABLISHED"), "{}", dg.explain);
        assert!(dg.explain.contains("net.ipv4.tcp_retries2 15; retransmitting for 7.0 s"), "{}", dg.explain);
    }

    #[test]
    fn keepalive_says_its_idle_time_and_interval_where_hz_is_known() {
        let h = timed_out(vec![tr(S, SynSent, Established), tr(9 * S, Established, Close)], 9 * S, 0, None);
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
        let h = timed_out(vec![tr(S, SynSent, Established), tr(9 * S, Established, Close)], 9 * S, 2, Some(3 * S));
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

    fn drop(sent: bool, count: u32, flags: u8, reason: Option<&str>, function: &str) -> PacketDrops {
        PacketDrops {
            sent,
            count,
            first_ns: 2 * S,
            last_ns: 7 * S,
            reason: reason.map(|_| 12),
            reason_name: reason.map(|r| format!("SKB_DROP_REASON_{r}")),
            location: 0xffff_ffff_8100_0000,
            function: Some(function.into()),
            netns: Some(4026531840),
            ifindex: Some(1),
            dev: b"lo".to_vec(),
            last_flags: flags,
            all_flags: flags,
            rsts: if flags & 0x04 != 0 { count } else { 0 },
            stack: 0,
        }
    }

    #[test]
    fn drops_behind_a_timeout_are_named_with_reason_place_and_time() {
        let h = timed_out(vec![tr(S, Close, SynSent), tr(8 * S, SynSent, Close)], 8 * S, 2, Some(2 * S));
        let mut f = with(base(), Syscall::Connect, h);
        f.drops = vec![drop(true, 3, 0x02, Some("NETFILTER_DROP"), "nft_do_chain+0x47f")];
        let dg = diagnose(&f);
        assert!(
            dg.explain.contains(
                "; 3 SYNs it sent were dropped on this host: a netfilter rule (nftables or iptables) dropped them \
                 (kernel reason NETFILTER_DROP, in nft_do_chain+0x47f) in netns 4026531840 on lo, the first 8.0 s and \
                 the last 3.0 s before the failure"
            ),
            "{}",
            dg.explain
        );
        // Before 5.17: no reason; nf_hook_slow is still netfilter's, anything else is named by
        // its function only.
        f.drops = vec![drop(false, 1, 0x12, None, "nf_hook_slow+0x9a")];
        let dg = diagnose(&f);
        assert!(
            dg.explain.contains("1 SYN-ACK sent to it by 127.0.0.1:9 was dropped on this host: a netfilter rule"),
            "{}",
            dg.explain
        );
        assert!(dg.explain.contains("this kernel gives no drop reason before 5.17"), "{}", dg.explain);
        f.drops = vec![drop(true, 2, 0x18, None, "tcp_v4_rcv+0x10")];
        assert!(diagnose(&f).explain.contains("2 segments it sent were dropped on this host: the kernel dropped them"));
        // A keepalive timeout's flow: two unanswered probes (ACK), then the RST it sent. Not
        // "3 RSTs": the record counts the RSTs apart.
        f.drops = vec![PacketDrops {
            last_flags: 0x14,
            all_flags: 0x14,
            rsts: 1,
            ..drop(true, 3, 0x10, None, "nft_do_chain")
        }];
        assert!(
            diagnose(&f).explain.contains("; 2 segments and 1 RST it sent were dropped on this host"),
            "{}",
            diagnose(&f).explain
        );
        f.drops = vec![drop(true, 1, 0x14, None, "nft_do_chain")];
        assert!(diagnose(&f).explain.contains("; 1 RST it sent was dropped on this host"));
    }

    #[test]
    fn an_rst_dropped_before_the_one_accepted_is_flagged() {
        let h = History {
            transitions: vec![tr(S, SynSent, Established), tr(8 * S, Established, Close)],
            rst_received: Some(Stamp { ts_ns: 8 * S, state: Some(Established), current_tgid: 0 }),
            ..Default::default()
        };
        let mut f = Failure::for_test(Syscall::Read, Some(ECONNRESET), Close, h);
        f.drops = vec![drop(false, 1, 0x04, Some("TCP_INVALID_SEQUENCE"), "tcp_validate_incoming+0x1c")];
        let dg = diagnose(&f);
        assert!(
            dg.explain.contains(
                "; before it, 1 segment with RST sent to it was dropped on this host, outside the receive window, as a \
                 blind or injected reset (or a stale one) would be (kernel reason TCP_INVALID_SEQUENCE"
            ),
            "{}",
            dg.explain
        );
        f.drops[0].reason_name = Some("SKB_DROP_REASON_TCP_RESET".into());
        assert!(diagnose(&f).explain.contains("inside the window but not at rcv_nxt"));
        // A dropped segment without RST is not an RST.
        f.drops[0].all_flags = 0x10;
        assert!(!diagnose(&f).explain.contains("before it,"));
    }
}
