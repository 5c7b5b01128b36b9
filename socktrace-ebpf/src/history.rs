//! The socket history: what each TCP/socket event does to it, and the probes that deliver the
//! events. Each event is reached three ways (one per probe mode; userspace loads only the one
//! it picked): a BTF tracepoint, a classic tracepoint whose record is read at offsets from its
//! format file, or a kprobe on the kernel function that fires the tracepoint. The `on_*`
//! handlers are the only place the facts are recorded; those the probe modes share are generic
//! over how they read the socket (`SockView`): typed loads under a BTF tracepoint, probe reads
//! under the others.

use crate::{
    count_history_created, current_tgid, global, is_traced, now_ns, read, resets, sk_field, sock_head,
    sock_type_protocol, zeroed, ProbedSock, SockView, TypedSock, EMPTY_HISTORY, SOCKETS,
};
use aya_ebpf::programs::tracing::StackIdContext;
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::generated::{bpf_get_current_comm, bpf_jiffies64},
    macros::{btf_tracepoint, fentry, kprobe, map, raw_tracepoint, tracepoint},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::{BtfTracePointContext, FEntryContext, ProbeContext, RawTracePointContext, TracePointContext},
    EbpfContext,
};
use aya_log_ebpf::warn;
use socktrace_common::{
    config_flags, history_origin, net, runtime, tcp_state, ConnectKey, ConnectedTo, ListenerInfo, ListenerKey,
    RstSegment, SockAddrs, SockHead, SocketHistory, StampedState, Transition, UdpError, HISTORY_TRANSITIONS, NO_FIELD,
};

/// The last state change seen on each CPU, for any TCP socket: when the kernel reports an
/// error right after closing a socket nobody traced yet (tcp_done, then the report: timeouts,
/// `ss -K`), the new history starts with the transition that closed it.
#[map]
static LAST_TRANSITION: PerCpuArray<LastTransition> = PerCpuArray::with_max_entries(1, 0);

#[derive(Clone, Copy)]
#[repr(C)]
struct LastTransition {
    sk: u64,
    transition: Transition,
}

/// Switches userspace sets after load (see `socktrace_common::runtime`).
#[map]
static RUNTIME: Array<u32> = Array::with_max_entries(runtime::SLOTS, 0);

/// Listening sockets, with who called listen() (any process: listen() is rare). A traced
/// process's listener gives its connections a history from their first state (an RST can hit
/// them in the accept queue); any listener names its owner and queue when a connect to it
/// times out (see `syscalls::read_resource`).
#[map]
pub(crate) static LISTENERS: LruHashMap<ListenerKey, ListenerInfo> = LruHashMap::with_max_entries(4096, 0);

/// The last error reported on any UDP socket: an ICMP error (port, host or net unreachable) on
/// a connected socket, which its next send or receive returns. Recorded for every UDP socket
/// because the report runs in softirq, whoever owns the socket; ICMP errors are rare. UDP
/// sockets have no destroy hook: the failing call that returns the error takes the entry (the
/// kernel reports such an error once), a fresh report overwrites it, and LRU bounds the rest.
#[map]
pub(crate) static UDP_ERRORS: LruHashMap<u64, UdpError> = LruHashMap::with_max_entries(1024, 0);

/// The last established connect of each traced process to each port: what tells a connect
/// that lost a race (Happy Eyeballs) from one given up on (`ended`), and a refusal the
/// program's fallback recovered from (userspace reads it).
#[map]
pub(crate) static CONNECTED: LruHashMap<ConnectKey, ConnectedTo> = LruHashMap::with_max_entries(4096, 0);

/// `insert`'s error when the key exists (another CPU created the history first).
const EEXIST: i32 = 17;

/// Only a transition this recent is taken to belong to the report that follows it.
const SEED_WINDOW_NS: u64 = 10_000_000;

/// The TCP states the handlers compare against, as the hooks pass them (ints).
const TCP_STATE_MAX: i32 = tcp_state::MAX as i32;
const TCP_ESTABLISHED: i32 = tcp_state::ESTABLISHED as i32;
const TCP_SYN_SENT: i32 = tcp_state::SYN_SENT as i32;
const TCP_SYN_RECV: i32 = tcp_state::SYN_RECV as i32;
const TCP_CLOSE: i32 = tcp_state::CLOSE as i32;
const TCP_LISTEN: i32 = tcp_state::LISTEN as i32;

/// No selector: every socket is a traced process's, so any event may start a history.
#[inline(always)]
fn tracing_everything() -> bool {
    global!(CONFIG.flags) & config_flags::TRACE_ALL != 0
}

#[inline(always)]
fn is_tcp_sock<V: SockView>(sk: u64) -> bool {
    sk != 0 && sk_field::<V, u16>(sk, global!(OFFSETS.sk_protocol)) == net::IPPROTO_TCP
}

/// How a missing history is handled.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Create {
    No,
    /// Start an empty one, saying how it began (`history_origin`).
    Empty(u32),
    /// Start one if the socket is a connection of a traced listener (same namespace and
    /// local port).
    IfListenerTraced,
    /// Everything is traced: start one, with this CPU's last transition if that was on this
    /// socket, just now.
    Seeded,
}

/// The history of `sk`, created as `create` says (for a TCP socket the caller cares about).
#[inline(always)]
pub(crate) fn history_of<C: EbpfContext>(_ctx: &C, sk: u64, create: Create) -> Option<*mut SocketHistory> {
    if let Some(h) = SOCKETS.get_ptr_mut(sk) {
        return Some(h);
    }
    let origin = match create {
        Create::No => return None,
        Create::Empty(origin) => origin,
        Create::Seeded => history_origin::ANY,
        // SAFETY: the value is only tested for presence, never read through.
        Create::IfListenerTraced => match unsafe { LISTENERS.get(listener_key(sk)) } {
            Some(l) if l.traced != 0 => history_origin::TRACED_LISTENER,
            _ => return None,
        },
    };
    let fresh = EMPTY_HISTORY.get(0)?;
    // BPF_NOEXIST: if another CPU created it meanwhile, keep theirs.
    // Full (E2BIG) or no memory: counted; the lookup below then finds nothing. No more
    // branches than that: this runs inside the failing call's program, which 5.10's verifier
    // walks path by path.
    let created = match SOCKETS.insert(sk, fresh, BPF_NOEXIST as u64) {
        Ok(()) => true,
        Err(e) => {
            if e != -EEXIST {
                crate::count_history_refused();
            }
            false
        }
    };
    let h = SOCKETS.get_ptr_mut(sk)?;
    if created {
        count_history_created();
        // SAFETY: `h` points at the live map value just created.
        unsafe { (*h).origin = origin };
        if create == Create::Seeded {
            seed(h, sk);
        }
    }
    Some(h)
}

/// How the history of a socket no traced process has touched yet may start: only when
/// everything is traced.
#[inline(always)]
fn create_if_everything() -> Create {
    if tracing_everything() {
        Create::Seeded
    } else {
        Create::No
    }
}

/// `create_if_everything` for a TCP socket; the protocol is read only when it matters.
#[inline(always)]
fn create_for_tcp<V: SockView>(sk: u64) -> Create {
    if tracing_everything() && is_tcp_sock::<V>(sk) {
        Create::Seeded
    } else {
        Create::No
    }
}

/// A socket a traced process had open when socktrace attached (see `socktrace_common::adopt`).
#[inline(always)]
pub(crate) fn adopt<C: EbpfContext>(ctx: &C, sk: u64) {
    if !is_tcp_sock::<ProbedSock>(sk) {
        return;
    }
    let Some(head) = sock_head::<ProbedSock>(sk) else { return };
    if let Some(h) = history_of(ctx, sk, Create::Empty(history_origin::ADOPTED)) {
        // A connection open before the trace: its peer's packets are watched from now on
        // (a listener has no peer: skipped there).
        crate::drops::watch_peer(&merge_addrs(h, sk, &head));
        // What happened before the trace shows in the state and in an error still pending.
        let pending: i32 = read(sk, global!(OFFSETS.sk_err)).unwrap_or(0);
        // SAFETY: `h` points at a live history.
        unsafe { stamp(&raw mut (*h).at_attach, &head, pending) };
        // How long it had been idle each way: jiffies, as the kernel stamps them.
        // SAFETY: a helper without arguments.
        let now = unsafe { bpf_jiffies64() } as u32;
        let ago = |at: u32| -> u32 {
            let then: u32 = if at != NO_FIELD { read(sk, at).unwrap_or(0) } else { 0 };
            if then == 0 {
                u32::MAX
            } else {
                now.wrapping_sub(then)
            }
        };
        // SAFETY: `h` points at a live history.
        unsafe {
            (*h).at_attach_sent_ago = ago(global!(OFFSETS.tp_lsndtime));
            (*h).at_attach_received_ago = ago(global!(OFFSETS.icsk_ack_lrcvtime));
        }
    }
    // A listener opened before the trace: the connections it accepts are the process's too.
    if head.state == TCP_LISTEN as u8 {
        remember_listener(sk, 0, true);
    }
}

/// Records a listening socket: who listens (0: unknown), and whether that is traced.
#[inline(always)]
fn remember_listener(sk: u64, tgid: u32, traced: bool) {
    let mut info: ListenerInfo = zeroed::<ListenerInfo, 4>();
    info.sk = sk;
    info.tgid = tgid;
    info.traced = traced as u8;
    if tgid != 0 {
        // SAFETY: the helper writes at most 16 bytes into the 16-byte name.
        unsafe { bpf_get_current_comm((&raw mut info.comm).cast(), socktrace_common::TASK_COMM_LEN as u32) };
    }
    let _ = LISTENERS.insert(listener_key(sk), info, 0);
}

/// The key of `sk` as a listener: its namespace and local port.
#[inline(always)]
pub(crate) fn listener_key(sk: u64) -> ListenerKey {
    let mut key: ListenerKey = zeroed::<ListenerKey, 2>();
    key.net = read(sk, global!(OFFSETS.sk_net)).unwrap_or(0);
    key.port = read(sk, global!(OFFSETS.sk_num)).unwrap_or(0);
    key
}

/// Starts a fresh history with this CPU's last transition, when it was this socket's, just now.
#[inline(always)]
fn seed(h: *mut SocketHistory, sk: u64) {
    let Some(last) = LAST_TRANSITION.get_ptr(0) else { return };
    // SAFETY: a per-CPU slot, not written while this program runs on this CPU.
    let last = unsafe { *last };
    if last.sk != sk || now_ns().wrapping_sub(last.transition.ts_ns) >= SEED_WINDOW_NS {
        return;
    }
    // SAFETY: `h` points at a live map value; racing writers can at worst interleave fields
    // of the same plain-data history, which the decoder tolerates.
    unsafe {
        if (*h).n_transitions == 0 {
            (*h).transitions[0] = last.transition;
            (*h).n_transitions = 1;
        }
    }
}

/// Marks `event` as happened now, in the state `sk` is in.
///
/// # Safety
/// `event` must point into a live history.
#[inline(always)]
unsafe fn stamp(event: *mut StampedState, head: &SockHead, value: i32) {
    // SAFETY: the caller's promise.
    unsafe {
        (*event).ts_ns = now_ns();
        (*event).state = head.state;
        (*event).value = value;
        (*event).current_tgid = current_tgid();
    }
}

/// The socket's addresses; ports in host order, addresses in network order.
#[inline(always)]
pub(crate) fn read_addrs(sk: u64, head: &SockHead) -> SockAddrs {
    let mut a: SockAddrs = zeroed::<SockAddrs, 5>();
    a.family = head.family;
    a.sport = head.num;
    a.dport = u16::from_be(head.dport);
    if a.family == net::AF_INET6 {
        a.saddr = read(sk, global!(OFFSETS.sk_v6_rcv_saddr)).unwrap_or([0; 16]);
        a.daddr = read(sk, global!(OFFSETS.sk_v6_daddr)).unwrap_or([0; 16]);
    } else {
        a.saddr[..4].copy_from_slice(&head.rcv_saddr);
        a.daddr[..4].copy_from_slice(&head.daddr);
    }
    a
}

/// Keeps the most complete addresses: the kernel zeroes ports while a socket closes.
#[inline(always)]
fn merge_addrs(h: *mut SocketHistory, sk: u64, head: &SockHead) -> SockAddrs {
    let mut now = read_addrs(sk, head);
    // `skc_num` is 0 once the local port is released, which tcp_set_state(CLOSE) does before
    // its tracepoint: a connect that fails in SYN_SENT shows no port at any event (the port
    // is assigned after the SYN_SENT transition). The full socket keeps it in inet_sport;
    // taken only while the history has none (an ICMP error is found by the 4-tuple).
    let sport_at = global!(OFFSETS.inet_sport);
    // SAFETY: `h` points at a live map value.
    if now.sport == 0 && sport_at != NO_FIELD && unsafe { (*h).addrs.sport } == 0 {
        now.sport = u16::from_be(read::<u16>(sk, sport_at).unwrap_or(0));
    }
    // SAFETY: `h` points at a live map value.
    unsafe {
        if now.family != 0 {
            (*h).addrs.family = now.family;
        }
        if now.sport != 0 {
            (*h).addrs.sport = now.sport;
            (*h).addrs.saddr = now.saddr;
        }
        if now.dport != 0 {
            (*h).addrs.dport = now.dport;
            (*h).addrs.daddr = now.daddr;
        }
    }
    now
}

/// Whether the task on the CPU holds `sk` in its own call (`sk_lock.owned`: connect, listen,
/// close, shutdown, and the backlog those calls process): a socket of the traced process, not
/// a loopback peer's whose packets softirq handles while a traced task happens to be on the
/// CPU. Where the kernel does not say, any socket a traced task touches counts.
#[inline(always)]
fn own_call<V: SockView>(sk: u64) -> bool {
    let at = global!(OFFSETS.sk_lock_owned);
    at == NO_FIELD || sk_field::<V, i32>(sk, at) != 0
}

/// `sk` goes from `old` to `new` (any context).
#[inline(always)]
fn on_state_change<C: EbpfContext + StackIdContext, V: SockView>(ctx: &C, sk: u64, old: i32, new: i32) -> u32 {
    // Other protocols (MPTCP, SCTP, DCCP) fire this tracepoint too: their sockets are told
    // apart by reading the protocol, only where it matters.
    let odd = old == new || !(1..=TCP_STATE_MAX).contains(&old) || !(1..=TCP_STATE_MAX).contains(&new);
    if odd && is_tcp_sock::<V>(sk) {
        warn!(ctx, "unexpected TCP state transition {} -> {} on socket {:x}", old, new, sk);
    }
    // A socket's history starts in the traced process's own context (connect, listen, close,
    // shutdown), or as a connection of a traced listener; later transitions from softirq find
    // it by address.
    let in_traced = is_traced(current_tgid());
    if new == TCP_LISTEN && is_tcp_sock::<V>(sk) {
        // listen() runs in its caller's context: the owner is the current process.
        remember_listener(sk, current_tgid(), in_traced);
    }
    let create = if in_traced && tracing_everything() {
        Create::Empty(history_origin::ANY)
    } else if in_traced && own_call::<V>(sk) {
        Create::Empty(history_origin::TRACED_TASK)
    } else if (old == TCP_LISTEN && new == TCP_SYN_RECV) || (old == TCP_SYN_RECV && new == TCP_ESTABLISHED) {
        // A passive open: the new connection is born LISTEN -> SYN_RECV (a state the kprobe on
        // tcp_set_state does not see: the clone sets it directly), then SYN_RECV -> ESTABLISHED.
        Create::IfListenerTraced
    } else {
        Create::No
    };
    if old == TCP_LISTEN && new == TCP_CLOSE && is_tcp_sock::<V>(sk) {
        let _ = LISTENERS.remove(listener_key(sk));
    }
    // Built on zeroed words: a literal's padding array would be a memset call (see `zero`).
    let mut transition: Transition = zeroed::<Transition, 2>();
    transition.old_state = old as u8;
    transition.new_state = new as u8;
    transition.in_traced_task = in_traced as u8;
    if tracing_everything() {
        transition.ts_ns = now_ns();
        if let Some(last) = LAST_TRANSITION.get_ptr_mut(0) {
            // SAFETY: a per-CPU slot: no other writer while this program runs on this CPU.
            unsafe { *last = LastTransition { sk, transition } };
        }
    }
    // Only a TCP socket gets a history (the protocol is read only then: every socket that
    // has one got it as a TCP socket). Most sockets on a busy machine are not traced: one
    // lookup, and they leave here.
    let create = if create != Create::No && !is_tcp_sock::<V>(sk) { Create::No } else { create };
    let Some(h) = history_of(ctx, sk, create) else {
        return 0;
    };
    if transition.ts_ns == 0 {
        transition.ts_ns = now_ns();
    }
    // SAFETY: `h` points at a live map value; the index is masked into the ring.
    unsafe {
        let n = (*h).n_transitions;
        let i = n as usize & (HISTORY_TRANSITIONS - 1);
        if let Some(t) = (*h).transitions.get_mut(i) {
            *t = transition;
        }
        (*h).n_transitions = n.wrapping_add(1);
    }
    let Some(head) = sock_head::<V>(sk) else { return 0 };
    let addrs = merge_addrs(h, sk, &head);
    if new == TCP_SYN_SENT || new == TCP_ESTABLISHED || new == TCP_SYN_RECV {
        // A traced connection starts: packets dropped on its way are worth keeping.
        crate::drops::watch_peer(&addrs);
    }
    if in_traced && old == TCP_CLOSE && new == TCP_SYN_SENT {
        // connect() runs in its caller's context: the process behind this connect.
        // SAFETY: `h` points at a live history.
        unsafe { (*h).owner_tgid = current_tgid() };
    } else if old == TCP_SYN_SENT && new == TCP_ESTABLISHED {
        // SAFETY: `h` points at a live history.
        let owner = unsafe { (*h).owner_tgid };
        if owner != 0 && addrs.dport != 0 {
            let mut key: ConnectKey = zeroed::<ConnectKey, 1>();
            key.tgid = owner;
            key.port = addrs.dport;
            let mut to: ConnectedTo = zeroed::<ConnectedTo, 6>();
            to.ts_ns = transition.ts_ns;
            to.addr = addrs;
            let _ = CONNECTED.insert(key, to, 0);
        }
    }
    if in_traced && crate::ended::is_end(old, new) {
        crate::ended::on_end(ctx, sk, h, old, new, &head);
    }
    // SAFETY: `h` points at a live history.
    let reported = unsafe { (*h).error_report.ts_ns } != 0;
    if new == TCP_CLOSE && (!reported || RUNTIME.get(runtime::ERROR_AT_CLOSE).copied() == Some(1)) {
        // Every abort sets sk_err before the close, so the close is where the report is taken
        // when this kernel has no error-report hook, in the state the socket leaves (`head`
        // was read before the kernel stores the new state). With a hook, the close still
        // takes it when nothing reported it yet: `tcp_done` wakes the failing call before the
        // kernel reports the error, and the call's program may copy the history on another
        // CPU before the hook has run; the hook then stamps it again, with its own stack.
        let err: i32 = sk_field::<V, i32>(sk, global!(OFFSETS.sk_err));
        if err != 0 {
            // SAFETY: `h` points at a live history.
            unsafe {
                stamp(&raw mut (*h).error_report, &head, err);
                // The close that carries the error: the path it was born on (the timer that
                // gave up, the RST, the ICMP handler).
                (*h).error_report.stack = crate::kstack(ctx);
            }
        }
    }
    0
}

/// An RST arrived for `sk`, which is still in the state the RST hit.
#[inline(always)]
fn on_receive_reset<C: EbpfContext + StackIdContext, V: SockView>(ctx: &C, sk: u64) -> u32 {
    // Only sockets of traced processes have a history (connections in a traced listener's
    // accept queue and sockets open at attach included); the rest cost one lookup.
    let Some(h) = history_of(ctx, sk, create_for_tcp::<V>(sk)) else { return 0 };
    let Some(head) = sock_head::<V>(sk) else { return 0 };
    // A refused connect: its SYN's sequence number, which ties it to the refusal this host
    // may have kept of that SYN (`REFUSED_SYNS`: another socket can share the local port).
    let snd_una_at = global!(OFFSETS.tp_snd_una);
    let syn_seq: u32 =
        if head.state == tcp_state::SYN_SENT && snd_una_at != NO_FIELD { read(sk, snd_una_at).unwrap_or(0) } else { 0 };
    // SAFETY: `h` points at a live history.
    unsafe {
        stamp(&raw mut (*h).rst_received, &head, syn_seq as i32);
        (*h).rst_received.stack = crate::kstack(ctx);
    }
    merge_addrs(h, sk, &head);
    0
}

/// `tcp_reset(sk, skb)` (5.14+) is handling the RST segment `skb`: its flags, sequence and
/// acknowledgement numbers, and the socket's sequence space, tell who sent it and why. Runs at
/// the function's entry, before `tcp_receive_reset`, so the history may start here (with the
/// same policy as there).
#[inline(always)]
fn on_rst_segment<C: EbpfContext>(ctx: &C, sk: u64, skb: u64) -> u32 {
    let Some(h) = history_of(ctx, sk, create_for_tcp::<ProbedSock>(sk)) else { return 0 };
    let data: u64 = read(skb, global!(OFFSETS.skb_head)).unwrap_or(0);
    let transport = crate::skb_headers(skb).transport;
    if data == 0 || transport == 0xffff {
        return 0;
    }
    let th: [u8; 14] = crate::read_or_zero(data + transport as u64, 0);
    let mut seg: RstSegment = zeroed::<RstSegment, 3>();
    seg.seq = u32::from_be_bytes([th[4], th[5], th[6], th[7]]);
    seg.ack_seq = u32::from_be_bytes([th[8], th[9], th[10], th[11]]);
    seg.flags = th[13];
    seg.rcv_nxt = read(sk, global!(OFFSETS.tp_rcv_nxt)).unwrap_or(0);
    seg.snd_nxt = read(sk, global!(OFFSETS.tp_snd_nxt)).unwrap_or(0);
    seg.snd_una = read(sk, global!(OFFSETS.tp_snd_una)).unwrap_or(0);
    seg.seen = 1;
    // SAFETY: `h` points at a live history.
    unsafe { (*h).rst_segment = seg };
    0
}

/// `sk` sent an RST; `reason` is the kernel's sk_rst_reason, or -1 where it has none.
#[inline(always)]
fn on_send_reset<C: EbpfContext + StackIdContext, V: SockView>(ctx: &C, sk: u64, skb: u64, reason: i32) -> u32 {
    // sk may be NULL (no socket), a time-wait or a request sock: only sock_common is read
    // from it, which all of them start with; only full sockets we already know get the RST in
    // their history.
    let head = sock_head::<V>(sk);
    let full = head.filter(|h| h.state != TCP_LISTEN as u8);
    let sent = match (full, head) {
        (Some(h), _) => Some(resets::sent_by_socket(sk, &h)),
        // A listener resets a connection it never accepted (its queue overflowed with
        // tcp_abort_on_overflow, or an invalid handshake): it has no peer address of its own.
        // With no socket at all, the segment it answers names the connection too.
        (None, listener) => {
            resets::sent_for_segment(if listener.is_some() { sk } else { 0 }, listener.map_or(0, |l| l.state), skb)
        }
    };
    // One call site of each: everything here is inlined, and the check's hash three times
    // over doubled the program's verification at load.
    if let Some(sent) = sent {
        resets::keep_sent_reset(&sent, reason);
    }
    let Some(head) = full else { return 0 };
    let Some(h) = history_of(ctx, sk, Create::No) else { return 0 };
    // SAFETY: `h` points at a live history.
    unsafe {
        stamp(&raw mut (*h).rst_sent, &head, reason);
        // Why this host reset it: the path that sent the RST.
        (*h).rst_sent.stack = crate::kstack(ctx);
    }
    0
}

/// The kernel reported `sk->sk_err` to the socket's owner.
#[inline(always)]
fn on_error_report<C: EbpfContext + StackIdContext, V: SockView>(ctx: &C, sk: u64) -> u32 {
    // tcp_disconnect() reports too, after the error was consumed (sk_err 0): that report
    // carries no error and must not hide the one before it.
    let err: i32 = if sk == 0 { 0 } else { sk_field::<V, i32>(sk, global!(OFFSETS.sk_err)) };
    if err == 0 {
        return 0;
    }
    let (sock_type, protocol) = sock_type_protocol::<V>(sk);
    if protocol == net::IPPROTO_UDP && sock_type == net::SOCK_DGRAM {
        let Some(head) = sock_head::<V>(sk) else { return 0 };
        let mut e: UdpError = zeroed::<UdpError, 8>();
        // SAFETY: a local, plain-data value.
        unsafe { stamp(&raw mut e.report, &head, err) };
        e.addrs = read_addrs(sk, &head);
        let _ = UDP_ERRORS.insert(sk, e, 0);
        return 0;
    }
    let create = if tracing_everything() && protocol == net::IPPROTO_TCP { Create::Seeded } else { Create::No };
    // The socket is read only when it has a history: most that report an error have none.
    let Some(h) = history_of(ctx, sk, create) else { return 0 };
    let Some(head) = sock_head::<V>(sk) else { return 0 };
    // SAFETY: `h` points at a live history.
    unsafe {
        stamp(&raw mut (*h).error_report, &head, err);
        // Where the error was born: the timer that gave up, the RST, the ICMP handler.
        (*h).error_report.stack = crate::kstack(ctx);
    }
    merge_addrs(h, sk, &head);
    0
}

#[inline(always)]
fn on_retransmit<C: EbpfContext, V: SockView>(ctx: &C, sk: u64) -> u32 {
    // The timer runs in softirq: the socket is found by address, whoever is on the CPU.
    let Some(h) = history_of(ctx, sk, create_if_everything()) else { return 0 };
    // SAFETY: `h` points at a live history.
    unsafe {
        let now = now_ns();
        if (*h).retransmits == 0 {
            (*h).first_retransmit_ns = now;
        }
        (*h).retransmits = (*h).retransmits.wrapping_add(1);
        (*h).last_retransmit_ns = now;
    }
    if let Some(head) = sock_head::<V>(sk) {
        merge_addrs(h, sk, &head);
    }
    0
}

#[inline(always)]
fn on_destroy(sk: u64) -> u32 {
    if SOCKETS.remove(sk).is_ok() {
        crate::count_history_destroyed();
    }
    0
}

// BTF tracepoints (tp_btf, 5.5+): typed arguments, the socket pointer included.

#[btf_tracepoint(function = "inet_sock_set_state")]
#[inline(always)]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> u32 {
    on_state_change::<_, TypedSock>(&ctx, ctx.arg(0), ctx.arg(1), ctx.arg(2))
}

#[btf_tracepoint(function = "tcp_receive_reset")]
#[inline(always)]
pub fn tcp_receive_reset(ctx: BtfTracePointContext) -> u32 {
    on_receive_reset::<_, TypedSock>(&ctx, ctx.arg(0))
}

#[btf_tracepoint(function = "tcp_send_reset")]
#[inline(always)]
pub fn tcp_send_reset(ctx: BtfTracePointContext) -> u32 {
    let reason: i32 = if global!(CONFIG.flags) & config_flags::SEND_RESET_HAS_REASON != 0 { ctx.arg(2) } else { -1 };
    on_send_reset::<_, TypedSock>(&ctx, ctx.arg(0), ctx.arg(1), reason)
}

#[btf_tracepoint(function = "inet_sk_error_report")]
#[inline(always)]
pub fn inet_sk_error_report(ctx: BtfTracePointContext) -> u32 {
    on_error_report::<_, TypedSock>(&ctx, ctx.arg(0))
}

#[btf_tracepoint(function = "tcp_retransmit_skb")]
#[inline(always)]
pub fn tcp_retransmit_skb(ctx: BtfTracePointContext) -> u32 {
    on_retransmit::<_, TypedSock>(&ctx, ctx.arg(0))
}

#[btf_tracepoint(function = "tcp_destroy_sock")]
#[inline(always)]
pub fn tcp_destroy_sock(ctx: BtfTracePointContext) -> u32 {
    on_destroy(ctx.arg(0))
}

// Classic tracepoints: the record's fields at the offsets the format files gave.

#[inline(always)]
fn record_field<T: Default>(ctx: &TracePointContext, offset: u32) -> T {
    // SAFETY: the offset comes from the record's format file; read_at checks the bounds.
    unsafe { ctx.read_at::<T>(offset as usize) }.unwrap_or_default()
}

#[tracepoint]
#[inline(always)]
pub fn tp_inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let sk: u64 = record_field(&ctx, global!(OFFSETS.tp_set_state_skaddr));
    let old: i32 = record_field(&ctx, global!(OFFSETS.tp_set_state_oldstate));
    let new: i32 = record_field(&ctx, global!(OFFSETS.tp_set_state_newstate));
    on_state_change::<_, ProbedSock>(&ctx, sk, old, new)
}

#[tracepoint]
#[inline(always)]
pub fn tp_tcp_receive_reset(ctx: TracePointContext) -> u32 {
    on_receive_reset::<_, ProbedSock>(&ctx, record_field(&ctx, global!(OFFSETS.tp_receive_reset_skaddr)))
}

#[tracepoint]
#[inline(always)]
pub fn tp_tcp_send_reset(ctx: TracePointContext) -> u32 {
    let sk: u64 = record_field(&ctx, global!(OFFSETS.tp_send_reset_skaddr));
    let reason_at = global!(OFFSETS.tp_send_reset_reason);
    let reason: i32 = if reason_at != NO_FIELD { record_field(&ctx, reason_at) } else { -1 };
    let skb_at = global!(OFFSETS.tp_send_reset_skbaddr);
    let skb: u64 = if skb_at != NO_FIELD { record_field(&ctx, skb_at) } else { 0 };
    on_send_reset::<_, ProbedSock>(&ctx, sk, skb, reason)
}

#[tracepoint]
#[inline(always)]
pub fn tp_tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    on_retransmit::<_, ProbedSock>(&ctx, record_field(&ctx, global!(OFFSETS.tp_retransmit_skaddr)))
}

#[tracepoint]
#[inline(always)]
pub fn tp_tcp_destroy_sock(ctx: TracePointContext) -> u32 {
    on_destroy(record_field(&ctx, global!(OFFSETS.tp_destroy_skaddr)))
}

/// The classic `inet_sk_error_report` record has the error and addresses but no socket
/// pointer, so tracepoint mode takes this event as a raw tracepoint (arguments, no record).
#[raw_tracepoint(tracepoint = "inet_sk_error_report")]
#[inline(always)]
pub fn raw_inet_sk_error_report(ctx: RawTracePointContext) -> u32 {
    on_error_report::<_, ProbedSock>(&ctx, ctx.arg(0))
}

// kprobes on the functions that fire those tracepoints, for kernels where the tracepoints
// are missing or unusable. The first argument is the socket in every signature used here
// (tcp_reset(sk) before 5.14, tcp_reset(sk, skb) since), so one program serves each.

#[kprobe]
#[inline(always)]
pub fn kp_tcp_set_state(ctx: ProbeContext) -> u32 {
    let sk: u64 = ctx.arg(0).unwrap_or(0);
    let new: i32 = ctx.arg(1).unwrap_or(0);
    // At entry the socket still holds the state it leaves.
    let old: u8 = read(sk, global!(OFFSETS.sk_state)).unwrap_or(0);
    on_state_change::<_, ProbedSock>(&ctx, sk, old as i32, new)
}

#[kprobe]
#[inline(always)]
pub fn kp_tcp_reset(ctx: ProbeContext) -> u32 {
    on_receive_reset::<_, ProbedSock>(&ctx, ctx.arg(0).unwrap_or(0))
}

/// The RST segment: not part of the probe modes (no tracepoint carries it), attached beside
/// them where the kernel allows (`load.rs`): fentry, else a kprobe.
#[fentry(function = "tcp_reset")]
#[inline(always)]
pub fn rst_segment(ctx: FEntryContext) -> u32 {
    on_rst_segment(&ctx, ctx.arg(0), ctx.arg(1))
}

#[kprobe]
#[inline(always)]
pub fn kp_rst_segment(ctx: ProbeContext) -> u32 {
    on_rst_segment(&ctx, ctx.arg(0).unwrap_or(0), ctx.arg(1).unwrap_or(0))
}

#[kprobe]
#[inline(always)]
pub fn kp_sk_error_report(ctx: ProbeContext) -> u32 {
    on_error_report::<_, ProbedSock>(&ctx, ctx.arg(0).unwrap_or(0))
}

/// Before 5.14 TCP reports errors through the socket's callback, `sock_def_error_report`.
/// It also runs for error-queue traffic (timestamps, zero copy) with `sk_err` 0, which
/// `on_error_report` ignores.
#[kprobe]
#[inline(always)]
pub fn kp_sock_def_error_report(ctx: ProbeContext) -> u32 {
    on_error_report::<_, ProbedSock>(&ctx, ctx.arg(0).unwrap_or(0))
}

/// At entry, so attempts are counted (the tracepoint counts only retransmissions that were
/// sent); a timeout diagnosis needs only "at least one".
#[kprobe]
#[inline(always)]
pub fn kp_tcp_retransmit_skb(ctx: ProbeContext) -> u32 {
    on_retransmit::<_, ProbedSock>(&ctx, ctx.arg(0).unwrap_or(0))
}

/// tcp_v4_destroy_sock destroys IPv6 TCP sockets too.
#[kprobe]
#[inline(always)]
pub fn kp_tcp_v4_destroy_sock(ctx: ProbeContext) -> u32 {
    on_destroy(ctx.arg(0).unwrap_or(0))
}

/// listen(): inet_csk_listen_start() sets LISTEN without tcp_set_state(), so kprobe mode
/// takes the transition here (in the caller's context, as the tracepoint would).
#[kprobe]
#[inline(always)]
pub fn kp_inet_csk_listen_start(ctx: ProbeContext) -> u32 {
    on_state_change::<_, ProbedSock>(&ctx, ctx.arg(0).unwrap_or(0), TCP_CLOSE, TCP_LISTEN)
}
