//! A diagnosed failure as one JSON object (NDJSON): the keys of `docs/json-schema.json`.

use super::{Clock, SCHEMA_VERSION};
use crate::diagnose::Diagnosis;
use crate::facts::Failure;
use crate::model::Cause;
use crate::text::escape_bytes;
use serde::Serialize;
use socktrace_common::net;

#[derive(Serialize, Debug, PartialEq)]
pub struct JsonFailure {
    pub schema: u32,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Wall-clock time of the failing call's return, ns since the Unix epoch.
    pub ts_ns: u64,
    /// The same instant in CLOCK_MONOTONIC ns (the kernel's clock).
    pub mono_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    /// The calling task's cgroup v2 path, relative to the cgroup2 mount (schema 5); null when
    /// it could not be told (its cgroup is gone, or there is no cgroup v2).
    pub cgroup: Option<String>,
    /// The container (or systemd unit) the call came from (schema 5).
    pub container: Option<crate::container::Container>,
    /// The Kubernetes pod, by UID and QoS class (schema 5).
    pub pod: Option<crate::container::Pod>,
    pub syscall: String,
    /// The socket's fd; null when not known (an io_uring request on a fixed file, or one whose
    /// file lookup was not seen).
    pub fd: Option<i32>,
    /// An io_uring request on a registered (fixed) file (schema 3).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fixed_file: bool,
    /// The error was read with getsockopt(SO_ERROR) (schema 3); `syscall` is "connect" when it
    /// was a connect's result, "getsockopt" otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub so_error: bool,
    /// splice: the socket was the source of the data, not its destination (schema 3).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub socket_is_source: bool,
    pub ret: i64,
    pub errno: Option<String>,
    pub state: Option<&'static str>,
    pub state_now: Option<&'static str>,
    pub cause: &'static str,
    pub saddr: Option<String>,
    pub sport: Option<u16>,
    pub daddr: Option<String>,
    pub dport: Option<u16>,
    pub family: &'static str,
    pub cause_age_ns: Option<u64>,
    /// The process on the CPU when the causing event ran (softirq: often the peer, or none).
    pub cause_pid: Option<u32>,
    /// The kernel's own return value when it was a restart code folded into EINTR.
    pub kernel_ret: Option<i64>,
    pub retransmits: Option<u32>,
    pub history: Vec<JsonTransition>,
    /// The raw TCP facts the kernel recorded on this socket, for those who want to check.
    pub facts: JsonFacts,
    /// For a timeout: the socket's timers and the limits they applied (schema 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timers: Option<JsonTimers>,
    /// The cause was read from the snapshot taken at attach (the socket predates the trace)
    /// (schema 3).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub from_snapshot: bool,
    /// The host's numbers behind a failure for want of a resource (schema 2).
    pub resource: Option<JsonResource>,
    pub explain: String,
    /// With `--kstack`: the kernel stack at each event behind the failure, innermost frame
    /// first (schema 6); absent without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kstack: Option<std::collections::BTreeMap<&'static str, Vec<String>>>,
    /// No call failed: the process ended the socket while it waited (schema 7); absent
    /// otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended: Option<JsonEnded>,
}

/// A socket the process ended while it waited: what it was doing, in numbers.
#[derive(Serialize, Debug, PartialEq)]
pub struct JsonEnded {
    /// The call that ended it (`close`, `shutdown`, `connect`, `dup2`, `exit`), as `syscall`.
    pub call: String,
    /// The state it left.
    pub state: Option<&'static str>,
    /// How long it had been connecting (SYN_SENT), ns.
    pub waited_ns: Option<u64>,
    /// SYNs sent (the first and each retransmission), for a connect.
    pub syns: Option<u32>,
    /// Retransmission timeouts not recovered (data being retransmitted).
    pub retransmits: u32,
    /// Bytes sent and not acknowledged, queued and not sent, received and not read.
    pub unacked_bytes: u32,
    pub unsent_bytes: u32,
    pub unread_bytes: u32,
    /// All bytes the peer acknowledged, and sent, over the connection.
    pub sent_bytes: u64,
    pub received_bytes: u64,
    /// Time since data was last sent and last received, ns (null: never, or HZ unknown).
    pub since_sent_ns: Option<u64>,
    pub since_received_ns: Option<u64>,
    /// The peer's window (0: it stopped reading).
    pub peer_window: u32,
    /// The process was exiting: how (`killed by SIGKILL`, `status 1`).
    pub exit: Option<String>,
    /// Another connect of the process to the same port that was established first.
    pub established_instead: Option<String>,
}

fn json_ended(f: &Failure) -> Option<JsonEnded> {
    let e = f.ended.as_ref()?;
    let connecting = matches!(e.from, Some(crate::model::TcpState::SynSent | crate::model::TcpState::SynRecv));
    let started = f.history.transitions.iter().rev().find(|t| t.new == Some(crate::model::TcpState::SynSent));
    Some(JsonEnded {
        call: e.call.name(),
        state: e.from.map(|s| s.name()),
        waited_ns: started.filter(|_| connecting).map(|t| f.ts_ns.saturating_sub(t.ts_ns)),
        syns: connecting.then_some(f.history.retransmits + 1),
        retransmits: e.rto_retransmits,
        unacked_bytes: e.unacked,
        unsent_bytes: e.unsent,
        unread_bytes: e.unread,
        sent_bytes: e.bytes_sent,
        received_bytes: e.bytes_received,
        since_sent_ns: e.since_sent_j.and_then(|j| f.jiffies_ns(j)),
        since_received_ns: e.since_received_j.and_then(|j| f.jiffies_ns(j)),
        peer_window: e.snd_wnd,
        exit: e.exit_code.map(crate::facts::describe_exit),
        established_instead: e.sibling.map(|(_, a)| a.to_string()),
    })
}

#[derive(Serialize, Debug, PartialEq)]
pub struct JsonFacts {
    pub rst_received: Option<JsonStamp>,
    pub rst_sent: Option<JsonStamp>,
    pub error_report: Option<JsonStamp>,
    pub retransmits: u32,
    /// The snapshot of a socket open before the trace, taken at attach: its state and the
    /// errno pending on it (`value`, 0 for none) (schema 3).
    pub at_attach: Option<JsonStamp>,
    /// For a socket open before the trace: how long before the attach it last sent and
    /// received data, ms (schema 4).
    pub at_attach_idle_ms: Option<JsonIdle>,
    /// The RST this socket received, as its sender on this host sent it (schema 3).
    pub peer_reset: Option<JsonPeerReset>,
    /// The ICMP error received about this connection: who sent it, which (schema 4).
    pub icmp: Option<JsonIcmp>,
    /// The RST segment received, as `tcp_reset` saw it, and what it says of its sender
    /// (schema 6).
    pub rst_segment: Option<JsonRstSegment>,
    /// Packets of this connection dropped on this host, for a timeout (schema 6).
    pub drops: Vec<JsonDrops>,
    /// The destination as this host's NAT rewrote it (conntrack), when it did.
    pub nat: Option<JsonNat>,
}

/// A destination this host rewrote: dialled, where it went, where that was seen
/// (`conntrack`: in the table of `netns`, null: the process's own; `refusal`: only by the
/// refused SYN, `netns` the namespace that refused, null: not found).
#[derive(Serialize, Debug, PartialEq)]
pub struct JsonNat {
    pub dialled: String,
    pub translated: String,
    pub seen: &'static str,
    pub netns: Option<u32>,
    pub netns_owner: Option<JsonNetnsOwner>,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct JsonRstSegment {
    pub seq: u32,
    pub ack_seq: u32,
    /// The TCP flags, named (`RST`, `ACK`, ...).
    pub flags: Vec<&'static str>,
    /// The socket's sequence space when it arrived.
    pub rcv_nxt: u32,
    pub snd_nxt: u32,
    pub snd_una: u32,
    /// `refused`: the answer to our SYN; `aborted`: an RST+ACK, an existing socket's abort;
    /// `no_connection`: an RST without ACK, the answer of a host with no connection for our
    /// segment (the diagnosis's `RstOrigin`).
    pub origin: Option<crate::diagnose::RstOrigin>,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct JsonDrops {
    /// `sent`: packets the socket sent; `received`: packets sent to it.
    pub direction: &'static str,
    pub count: u32,
    pub first_mono_ns: u64,
    pub last_mono_ns: u64,
    /// The kernel's drop reason (5.17+): number and name.
    pub reason: Option<u32>,
    pub reason_name: Option<String>,
    /// Where the last one was dropped: the kernel function (from /proc/kallsyms).
    pub function: Option<String>,
    pub netns: Option<u32>,
    pub ifindex: Option<u32>,
    pub dev: Option<String>,
    /// TCP flags of the last one dropped.
    pub flags: Vec<&'static str>,
    /// How many of them carried RST.
    pub rsts: u32,
    /// The netfilter hook (or path) the last one was on, read from the kernel stack.
    pub hook: Option<&'static str>,
    /// Whose namespace `netns` is, where the host could tell.
    pub netns_owner: Option<JsonNetnsOwner>,
}

/// Whose network namespace a packet was dropped in.
#[derive(Serialize, Debug, PartialEq)]
pub struct JsonNetnsOwner {
    /// `traced` (the process's own), `host` (PID 1's), `named` (ip netns), `process`.
    pub kind: &'static str,
    pub name: Option<String>,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub container: Option<String>,
    pub pod: Option<String>,
}

fn netns_owner(o: &crate::facts::NetnsOwner) -> JsonNetnsOwner {
    use crate::facts::NetnsOwner;
    let mut j = JsonNetnsOwner { kind: "traced", name: None, pid: None, comm: None, container: None, pod: None };
    match o {
        NetnsOwner::Traced => {}
        NetnsOwner::Host => j.kind = "host",
        NetnsOwner::Named(n) => {
            j.kind = "named";
            j.name = Some(escape_bytes(n.as_bytes()));
        }
        NetnsOwner::Process { pid, comm, workload } => {
            j.kind = "process";
            j.pid = Some(*pid);
            j.comm = Some(escape_bytes(comm));
            j.container = workload.container.as_ref().map(|c| escape_bytes(c.id.as_bytes()));
            j.pod = workload.pod.as_ref().map(|p| escape_bytes(p.uid.as_bytes()));
        }
    }
    j
}

/// TCP flag bits, named.
pub fn tcp_flags(bits: u8) -> Vec<&'static str> {
    use socktrace_common::tcp_flags::{ACK, FIN, PSH, RST, SYN, URG};
    const NAMES: [(u8, &str); 6] = [(SYN, "SYN"), (ACK, "ACK"), (FIN, "FIN"), (RST, "RST"), (PSH, "PSH"), (URG, "URG")];
    NAMES.iter().filter(|(b, _)| bits & b != 0).map(|(_, n)| *n).collect()
}

#[derive(Serialize, Debug, PartialEq)]
pub struct JsonIcmp {
    pub mono_ns: u64,
    pub from: String,
    /// The sender is the destination itself, not a router on the way.
    pub from_destination: bool,
    #[serde(rename = "type")]
    pub icmp_type: u8,
    pub code: u8,
    pub message: &'static str,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct JsonIdle {
    pub sent: Option<u64>,
    pub received: Option<u64>,
}

/// An RST sent by a socket of this host: when, in which state, who was on the CPU, and the
/// kernel's reason (6.10+).
#[derive(Serialize, Debug, PartialEq)]
pub struct JsonPeerReset {
    pub mono_ns: u64,
    pub state: Option<&'static str>,
    pub pid: u32,
    pub comm: String,
    pub reason: Option<i32>,
    pub reason_name: Option<String>,
    /// No socket of this host owned the connection (state is null then).
    pub no_socket: bool,
    /// A listener's accept queue when it sent the RST: [waiting, backlog].
    pub accept_queue: Option<[u32; 2]>,
}

/// What decides which TCP timer gave up (see `socktrace_common::TimerFacts`).
#[derive(Serialize, Debug, PartialEq)]
pub struct JsonTimers {
    /// TCP_USER_TIMEOUT, ms (0: not set).
    pub user_timeout_ms: u32,
    /// The peer's last advertised window (0: zero-window probing).
    pub snd_wnd: u32,
    /// Unanswered keepalive or zero-window probes.
    pub probes_out: u8,
    pub keepalive: bool,
    /// TCP_KEEPCNT and TCP_SYNCNT (0: the namespace's sysctl applies).
    pub keepalive_probes: u8,
    pub syn_retries: u8,
    /// The namespace's net.ipv4.tcp_syn_retries, tcp_retries2, tcp_keepalive_probes.
    pub tcp_syn_retries: u8,
    pub tcp_retries2: u8,
    pub tcp_keepalive_probes: u8,
}

/// The host's numbers behind a resource failure; each key only where it applies.
#[derive(Serialize, Debug, PartialEq, Default)]
pub struct JsonResource {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nofile_soft: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nofile_hard: Option<u64>,
    /// A listener's accept queue: connections waiting, and its limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_queue: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_backlog: Option<u32>,
    /// `ip_local_port_range` of the socket's network namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_range: Option<[u32; 2]>,
    /// TCP sockets whose remote end is the destination, by state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_destination: Option<std::collections::BTreeMap<&'static str, u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sndbuf: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wmem_queued: Option<u32>,
    /// The system's file table: [open, fs.file-max].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_nr: Option<[u64; 2]>,
    /// TCP memory in pages: in use, and net.ipv4.tcp_mem (min, pressure, max).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_mem_pages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_mem: Option<[u64; 3]>,
    /// TCP was in memory-pressure mode (the kernel's flag at the failure) (schema 4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_memory_pressure: Option<bool>,
    /// The send buffer sockets start with (the namespace's tcp_wmem[1]) (schema 4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sndbuf_initial: Option<u32>,
    /// The listener a timed-out connect waited for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener: Option<JsonListener>,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct JsonListener {
    pub addr: String,
    pub queued: u64,
    pub backlog: u64,
    /// The namespace's net.core.somaxconn, when socket diagnostics could be read.
    pub somaxconn: Option<u64>,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// Other processes holding the listener open (a pre-forked server).
    pub other_processes: usize,
    /// Its network namespace when not the connecting process's, and whose it is.
    pub netns: Option<u32>,
    pub netns_owner: Option<JsonNetnsOwner>,
    /// SYNs that namespace's listeners dropped since socktrace attached (ListenDrops).
    pub syns_dropped_since_attach: Option<u64>,
}

fn json_resource(f: &Failure, d: &Diagnosis) -> Option<JsonResource> {
    let mut out = JsonResource::default();
    let mut any = false;
    if let Some(r) = f.resource {
        any = true;
        match f.errno {
            Some(crate::model::errno::EMFILE) | Some(crate::model::errno::ENFILE) => {
                out.nofile_soft = Some(r.nofile_cur);
                out.nofile_hard = Some(r.nofile_max);
                out.accept_queue = Some(r.ack_backlog);
                out.accept_backlog = Some(r.max_ack_backlog);
            }
            Some(crate::model::errno::EADDRNOTAVAIL) | Some(crate::model::errno::EADDRINUSE) => {
                out.port_range = Some([r.port_low, r.port_high]);
            }
            Some(crate::model::errno::ETIMEDOUT) => {}
            _ => {
                out.sndbuf = Some(r.sndbuf);
                out.wmem_queued = Some(r.wmem_queued);
                if r.has_mem != 0 {
                    out.tcp_mem_pages = Some(r.mem_pages);
                    out.tcp_mem = Some(r.mem_limits);
                    out.tcp_memory_pressure = Some(r.mem_pressure != 0);
                    out.sndbuf_initial = (r.wmem_initial != 0).then_some(r.wmem_initial);
                }
            }
        }
    }
    let h = &f.host;
    if let Some(by_state) = &h.to_destination {
        any = true;
        out.to_destination = Some(by_state.iter().map(|(s, n)| (s.name(), *n)).collect());
    }
    if let Some((used, max)) = h.file_nr {
        any = true;
        out.file_nr = Some([used, max]);
    }
    if let Some((used, limits)) = h.tcp_mem.filter(|_| out.tcp_mem.is_none()) {
        any = true;
        out.tcp_mem_pages = Some(used);
        out.tcp_mem = Some(limits);
    }
    if let Some(l) = d.listener.as_ref().filter(|_| d.cause == Cause::ListenOverflow) {
        any = true;
        out.listener = Some(JsonListener {
            addr: l.addr.to_string(),
            queued: l.queued,
            backlog: l.backlog,
            somaxconn: l.somaxconn,
            pid: l.owner.as_ref().map(|(pid, _)| *pid),
            comm: l.owner.as_ref().map(|(_, comm)| comm.clone()),
            other_processes: l.others,
            netns: l.netns,
            netns_owner: l.netns_owner.as_ref().map(netns_owner),
            syns_dropped_since_attach: l.syns_dropped_since_attach,
        });
    }
    any.then_some(out)
}

#[derive(Serialize, Debug, PartialEq)]
pub struct JsonStamp {
    pub mono_ns: u64,
    pub state: Option<&'static str>,
    /// The process on the CPU when it happened.
    pub pid: u32,
    /// errno for an error report, the kernel's reason code for a sent RST.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<i32>,
}

fn json_stamp(s: &crate::facts::Stamp, value: Option<i32>) -> JsonStamp {
    JsonStamp { mono_ns: s.ts_ns, state: s.state.map(|st| st.name()), pid: s.current_tgid, value }
}

#[derive(Serialize, Debug, PartialEq)]
pub struct JsonTransition {
    pub mono_ns: u64,
    pub from: Option<&'static str>,
    pub to: Option<&'static str>,
}

fn family_name(f: u16) -> &'static str {
    match f {
        net::AF_INET => "inet",
        net::AF_INET6 => "inet6",
        net::AF_UNIX => "unix",
        _ => "other",
    }
}

pub fn to_json(f: &Failure, d: &Diagnosis, clock: &Clock) -> JsonFailure {
    JsonFailure {
        schema: SCHEMA_VERSION,
        kind: "failure",
        ts_ns: clock.wall_ns(f.ts_ns),
        mono_ns: f.ts_ns,
        pid: f.pid,
        tid: f.tid,
        comm: escape_bytes(&f.comm),
        cgroup: f.cgroup.as_ref().map(|c| escape_bytes(c.path.as_bytes())),
        container: f.cgroup.as_ref().and_then(|c| c.workload.container.clone()),
        pod: f.cgroup.as_ref().and_then(|c| c.workload.pod.clone()),
        syscall: f.syscall_name(),
        fd: (f.fd >= 0).then_some(f.fd),
        fixed_file: f.fixed_file,
        so_error: f.from_so_error,
        socket_is_source: f.socket_is_source,
        ret: f.ret,
        errno: f.errno_name(),
        state: d.state.map(|s| s.name()),
        state_now: f.state_now.map(|s| s.name()),
        cause: d.cause.code(),
        saddr: f.local.map(|a| a.ip().to_string()),
        sport: f.local.map(|a| a.port()),
        daddr: f.remote.map(|a| a.ip().to_string()),
        dport: f.remote.map(|a| a.port()),
        family: family_name(f.family),
        cause_age_ns: d.cause_age_ns(f.ts_ns),
        cause_pid: d.cause_ts_ns.and_then(|t| f.task_at(t)),
        kernel_ret: f.kernel_ret,
        retransmits: d.retransmits,
        history: f
            .history
            .transitions
            .iter()
            .map(|t| JsonTransition { mono_ns: t.ts_ns, from: t.old.map(|s| s.name()), to: t.new.map(|s| s.name()) })
            .collect(),
        facts: JsonFacts {
            rst_received: f.history.rst_received.as_ref().map(|s| json_stamp(s, None)),
            rst_sent: f.history.rst_sent.as_ref().map(|(s, r)| json_stamp(s, *r)),
            error_report: f.history.error_report.as_ref().map(|(s, e)| json_stamp(s, Some(*e))),
            retransmits: f.history.retransmits,
            at_attach: f.history.at_attach.as_ref().map(|(s, e)| json_stamp(s, Some(*e))),
            at_attach_idle_ms: f.history.at_attach.as_ref().map(|_| {
                let (sent, received) = f.at_attach_idle_ms();
                JsonIdle { sent, received }
            }),
            icmp: f.icmp.as_ref().map(|m| JsonIcmp {
                mono_ns: m.ts_ns,
                from: m.from.to_string(),
                from_destination: f.remote.is_some_and(|r| r.ip() == m.from),
                icmp_type: m.icmp_type,
                code: m.code,
                message: crate::model::icmp_message(m.v6, m.icmp_type, m.code),
            }),
            peer_reset: f.peer_reset.as_ref().map(|p| JsonPeerReset {
                mono_ns: p.ts_ns,
                state: p.state.map(|s| s.name()),
                pid: p.tgid,
                comm: escape_bytes(&p.comm),
                reason: p.reason,
                reason_name: p.reason_name.clone(),
                no_socket: p.no_socket,
                accept_queue: p.accept_queue.map(|(q, b)| [q, b]),
            }),
            rst_segment: f.history.rst_segment.map(|seg| JsonRstSegment {
                seq: seg.seq,
                ack_seq: seg.ack_seq,
                flags: tcp_flags(seg.flags),
                rcv_nxt: seg.rcv_nxt,
                snd_nxt: seg.snd_nxt,
                snd_una: seg.snd_una,
                origin: d.rst_origin,
            }),
            drops: f
                .drops
                .iter()
                .map(|d| JsonDrops {
                    direction: if d.sent { "sent" } else { "received" },
                    count: d.count,
                    first_mono_ns: d.first_ns,
                    last_mono_ns: d.last_ns,
                    reason: d.reason,
                    reason_name: d.reason_name.clone(),
                    function: d.function.clone(),
                    netns: d.netns,
                    ifindex: d.ifindex,
                    dev: (!d.dev.is_empty()).then(|| escape_bytes(&d.dev)),
                    flags: tcp_flags(d.last_flags),
                    rsts: d.rsts,
                    hook: crate::diagnose::drop_hook(&d.path).map(|h| h.name()),
                    netns_owner: d.netns_owner.as_ref().map(netns_owner),
                })
                .collect(),
            nat: f.host.nat.as_ref().map(|n| JsonNat {
                dialled: n.dialled.to_string(),
                translated: n.translated.to_string(),
                seen: match n.seen {
                    crate::facts::NatSeen::Conntrack => "conntrack",
                    crate::facts::NatSeen::Refusal => "refusal",
                },
                netns: n.netns,
                netns_owner: n.netns_owner.as_ref().map(netns_owner),
            }),
        },
        from_snapshot: d.from_snapshot,
        timers: f.timers.filter(|_| d.cause == Cause::Timeout).map(|t| JsonTimers {
            user_timeout_ms: t.user_timeout_ms,
            snd_wnd: t.snd_wnd,
            probes_out: t.probes_out,
            keepalive: t.keepalive != 0,
            keepalive_probes: t.keepalive_probes,
            syn_retries: t.syn_retries,
            tcp_syn_retries: t.net_syn_retries,
            tcp_retries2: t.net_retries2,
            tcp_keepalive_probes: t.net_keepalive_probes,
        }),
        resource: json_resource(f, d),
        explain: d.explain.clone(),
        kstack: (!f.kstacks.is_empty()).then(|| {
            f.kstacks.iter().map(|k| (k.event, k.frames.iter().map(|s| escape_bytes(s.as_bytes())).collect())).collect()
        }),
        ended: json_ended(f),
    }
}

pub fn json_line(f: &Failure, d: &Diagnosis, clock: &Clock) -> String {
    serde_json::to_string(&to_json(f, d, clock))
        .unwrap_or_else(|e| format!("{{\"schema\":{SCHEMA_VERSION},\"type\":\"error\",\"error\":\"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden_failure() -> (Failure, Diagnosis) {
        use crate::facts::History;
        use crate::model::{Syscall, TcpState};
        let f = Failure {
            ts_ns: 1_004_512_000,
            pid: 1234,
            tid: 1235,
            comm: b"cu\x1brl\n".to_vec(),
            ret: -111,
            errno: Some(111),
            local: Some("127.0.0.1:40122".parse().unwrap()),
            ..Failure::for_test(Syscall::Connect, Some(111), TcpState::Close, History::default())
        };
        let d = Diagnosis::new(
            Cause::RstReceived,
            Some(TcpState::SynSent),
            Some(1_004_499_200),
            "peer answered the SYN with RST: nothing listens on 127.0.0.1:9".into(),
        );
        (f, d)
    }

    const CLOCK: Clock = Clock { realtime_offset_ns: 1_700_000_000_000_000_000, attach_mono_ns: 1_000_000_000 };

    #[test]
    fn json_keeps_the_documented_keys() {
        let (f, d) = golden_failure();
        let v: serde_json::Value = serde_json::from_str(&json_line(&f, &d, &CLOCK)).unwrap();
        for key in [
            "schema",
            "type",
            "ts_ns",
            "pid",
            "tid",
            "comm",
            "syscall",
            "fd",
            "ret",
            "errno",
            "state",
            "cause",
            "saddr",
            "sport",
            "daddr",
            "dport",
            "explain",
            "cause_age_ns",
            "history",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["comm"], "cu\\x1brl\\x0a");
        assert_eq!(v["cause_age_ns"], 12_800);
    }
}
