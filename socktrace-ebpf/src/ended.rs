//! Sockets a traced process ends while they wait: the application's own timeouts. A program
//! that enforces a connect or read timeout (nginx, curl, Java, Go, Node, CPython) gives up by
//! closing the socket: no call fails, but the state change its close makes (SYN_SENT -> CLOSE,
//! ESTABLISHED -> FIN_WAIT1, ...) runs in its own context with no error set. That change is
//! turned into one event, with what the socket was doing (`EndFacts`) and the call that ended
//! it (the task's saved registers, 5.15+: on kernels where close() releases the file after the
//! syscall's exit, this is the only place both are known). Only the ends worth a look are
//! sent: a connect never answered, data unacknowledged and being retransmitted, a closed
//! window, nothing received since the last send for the configured silence; userspace names
//! them. The RSTs of dying processes are marked in `resets::keep_sent_reset`.

use crate::history::{read_addrs, CONNECTED};
use crate::syscalls::{copy_history, read_sock, Sock};
use crate::{global, read, read_or_zero, zero, EVENTS, LOST_EVENTS, ROUTINE_COUNTS};
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{
            bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_task, bpf_get_current_task_btf,
            bpf_jiffies64, bpf_task_pt_regs,
        },
    },
    macros::map,
    maps::PerCpuArray,
    EbpfContext,
};
use socktrace_common::{
    config_flags, errno, event_flags, net, routine, syscall_kind, tcp_state, ConnectKey, EndFacts, FailureEvent,
    SockHead, SocketHistory, ENDED_CALL_UNKNOWN, HISTORY_TRANSITIONS, NO_FIELD, TASK_COMM_LEN, WAKEUP_BYTES,
};

/// Where an end's facts are gathered before they go into an event: too large for the 512-byte
/// stack beside the state change's own locals.
#[map]
static END_SCRATCH: PerCpuArray<EndFacts> = PerCpuArray::with_max_entries(1, 0);

/// `PF_EXITING` in `task_struct.flags`.
pub(crate) const PF_EXITING: u32 = 0x4;
/// `sk_shutdown` of a socket closed, or shut down both ways.
const SHUTDOWN_MASK: u8 = net::RCV_SHUTDOWN | net::SEND_SHUTDOWN;

/// Whether `old -> new`, made by a traced task's own call, is the end of a connect or of a
/// connection: what a close, a shutdown or a disconnect does to it.
#[inline(always)]
pub(crate) fn is_end(old: i32, new: i32) -> bool {
    let (old, new) = (old as u8, new as u8);
    match old {
        tcp_state::SYN_SENT | tcp_state::SYN_RECV => new == tcp_state::CLOSE,
        tcp_state::ESTABLISHED => new == tcp_state::FIN_WAIT1 || new == tcp_state::CLOSE,
        tcp_state::CLOSE_WAIT => new == tcp_state::LAST_ACK || new == tcp_state::CLOSE,
        _ => false,
    }
}

/// A traced task ended `sk` (`old -> new`, from `is_end`): sent as an event when it was worth
/// a look. `head` was read at the change (its state is still `old`).
#[inline(always)]
pub(crate) fn on_end<C: EbpfContext>(ctx: &C, sk: u64, h: *mut SocketHistory, old: i32, new: i32, head: &SockHead) {
    // An error set first: the kernel ended it (an RST, a timer, an ICMP error, `ss -K`), and
    // the call that meets the error explains it.
    if read::<i32>(sk, global!(OFFSETS.sk_err)).unwrap_or(0) != 0 {
        return;
    }
    let connecting = old as u8 == tcp_state::SYN_SENT || old as u8 == tcp_state::SYN_RECV;
    if connecting && local_port(sk, head) == 0 {
        // A connect that failed before its SYN (no local port left: EADDRNOTAVAIL) closes in
        // connect() itself; that call's failure is the event.
        return;
    }
    // Counted before the facts are gathered: the commonest end of all in a scanner's storm.
    if old as u8 == tcp_state::SYN_SENT && closed_at_once(h) {
        crate::count(&ROUTINE_COUNTS, routine::CLOSED_AT_ONCE * routine::STATES + tcp_state::SYN_SENT as u32);
        return;
    }
    let Some(facts) = END_SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: a per-CPU slot: no other writer while this program runs on this CPU; zeroed
    // with word stores (see `zero`) and filled here.
    let facts = unsafe {
        zero(facts);
        &mut *facts
    };
    facts.from_state = old as u8;
    facts.to_state = new as u8;
    if !connecting {
        // A shutdown(SHUT_WR) is not an end: the program may still read the answer. A close
        // (or SHUT_RDWR) shuts both ways before the state changes; an abortive close or a
        // disconnect goes to CLOSE.
        let shutdown: u8 = read_or_zero(sk, global!(OFFSETS.sk_shutdown));
        if new as u8 != tcp_state::CLOSE && shutdown & SHUTDOWN_MASK != SHUTDOWN_MASK {
            return;
        }
        read_connection(sk, facts);
        if !waiting(facts, old as u8) {
            return;
        }
    }
    let addrs = read_addrs(sk, head);
    if connecting {
        // Another connect of this process to the same port that was established: the race
        // this one lost (Happy Eyeballs).
        let mut key: ConnectKey = crate::zeroed::<ConnectKey, 1>();
        key.tgid = crate::current_tgid();
        key.port = addrs.dport;
        // SAFETY: the value is copied out at once.
        if let Some(c) = unsafe { CONNECTED.get(key) }.copied() {
            facts.sibling_ts = c.ts_ns;
            facts.sibling = c.addr;
        }
    }
    let _ = ctx;
    send_end(sk, h, head, facts, connecting);
}

/// Whether a connect ended in SYN_SENT began (CLOSE -> SYN_SENT, the transition before the
/// one just recorded) less than `CLOSED_AT_ONCE_NS` ago, with no SYN retransmitted: given up
/// before an answer was due, not left unanswered.
#[inline(always)]
fn closed_at_once(h: *mut SocketHistory) -> bool {
    // SAFETY: `h` points at a live history; fields are copied out.
    let (n, retransmits) = unsafe { ((*h).n_transitions, (*h).retransmits) };
    if n < 2 || retransmits != 0 {
        return false;
    }
    let i = n.wrapping_sub(2) as usize & (HISTORY_TRANSITIONS - 1);
    // SAFETY: as above; the index is masked into the array.
    let Some(start) = (unsafe { (*h).transitions.get(i) }).copied() else { return false };
    start.new_state == tcp_state::SYN_SENT && crate::now_ns().wrapping_sub(start.ts_ns) < routine::CLOSED_AT_ONCE_NS
}

/// The socket's local port: `skc_num`, or the one the full socket keeps (`inet_sport`) once
/// a close released it.
#[inline(always)]
fn local_port(sk: u64, head: &SockHead) -> u16 {
    if head.num != 0 {
        return head.num;
    }
    let at = global!(OFFSETS.inet_sport);
    if at == NO_FIELD {
        return 0;
    }
    u16::from_be(read_or_zero(sk, at))
}

/// The connection's sequence space, timers and counters, read into `facts`.
#[inline(always)]
fn read_connection(sk: u64, facts: &mut EndFacts) {
    let field = |at: u32| -> u32 {
        if at == NO_FIELD {
            0
        } else {
            read_or_zero(sk, at)
        }
    };
    let (snd_una, snd_nxt) = (field(global!(OFFSETS.tp_snd_una)), field(global!(OFFSETS.tp_snd_nxt)));
    let write_seq = field(global!(OFFSETS.tp_write_seq));
    let (rcv_nxt, copied_seq) = (field(global!(OFFSETS.tp_rcv_nxt)), field(global!(OFFSETS.tp_copied_seq)));
    facts.unacked = snd_nxt.wrapping_sub(snd_una);
    facts.unsent = write_seq.wrapping_sub(snd_nxt);
    facts.unread = rcv_nxt.wrapping_sub(copied_seq);
    facts.snd_wnd = field(global!(OFFSETS.tp_snd_wnd));
    let retransmits_at = global!(OFFSETS.icsk_retransmits);
    facts.rto_retransmits = if retransmits_at == NO_FIELD { 0 } else { read_or_zero::<u8>(sk, retransmits_at) as u32 };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_jiffies64() } as u32;
    let since = |at: u32| -> u32 {
        let then = field(at);
        if then == 0 {
            u32::MAX
        } else {
            now.wrapping_sub(then)
        }
    };
    facts.since_sent_j = since(global!(OFFSETS.tp_lsndtime));
    facts.since_received_j = since(global!(OFFSETS.icsk_ack_lrcvtime));
    let wide = |at: u32| -> u64 {
        if at == NO_FIELD {
            0
        } else {
            read_or_zero(sk, at)
        }
    };
    facts.bytes_sent = wide(global!(OFFSETS.tp_bytes_sent)).saturating_sub(wide(global!(OFFSETS.tp_bytes_retrans)));
    facts.bytes_received = wide(global!(OFFSETS.tp_bytes_received));
}

/// Whether an established connection its process ends was waiting on its peer: data
/// unacknowledged and being retransmitted, a closed window with data to send, or (not after
/// the peer's FIN) nothing received since the last send for the configured silence.
#[inline(always)]
fn waiting(f: &EndFacts, old: u8) -> bool {
    if f.unacked > 0 && f.rto_retransmits > 0 {
        return true;
    }
    if f.snd_wnd == 0 && (f.unacked > 0 || f.unsent > 0) {
        return true;
    }
    // Nothing received since the last send: the last receipt is older, or (in the same
    // jiffy, as when a request follows the handshake at once) nothing was ever received but
    // the handshake.
    let silence = global!(CONFIG.silence_jiffies);
    let nothing_since =
        f.since_received_j > f.since_sent_j || (f.since_received_j == f.since_sent_j && f.bytes_received == 0);
    // Data was sent: the send time alone starts at the handshake, and `bytes_acked` counts
    // a connect's SYN.
    let sent_data = f.bytes_sent > 0 || f.unacked > 0;
    old == tcp_state::ESTABLISHED
        && silence != 0
        && sent_data
        && f.since_sent_j != u32::MAX
        && nothing_since
        && f.since_sent_j >= silence
}

/// Writes the end as one `FailureEvent` (no call failed: `ret` 0, `ENDED`), or counts it lost.
#[inline(always)]
fn send_end(sk: u64, h: *mut SocketHistory, head: &SockHead, facts: &EndFacts, connecting: bool) {
    let Some(mut entry) = EVENTS.reserve::<FailureEvent>(0) else {
        crate::count(&LOST_EVENTS, 0);
        return;
    };
    let ev = entry.as_mut_ptr();
    let id = bpf_get_current_pid_tgid();
    let mut head_now = *head;
    head_now.state = facts.to_state;
    let sock = Sock { sk, head: head_now, sock_type: net::SOCK_STREAM, protocol: net::IPPROTO_TCP, is_tcp: true };
    // SAFETY: `ev` points at a reserved, 8-byte aligned ring buffer slot of a FailureEvent,
    // owned here until submit; every helper below writes within the field it is given.
    unsafe {
        zero(ev);
        (*ev).flags = event_flags::IS_SOCKET | event_flags::HAS_HISTORY | event_flags::ENDED;
        (*ev).ts_ns = crate::now_ns();
        (*ev).sk = sk;
        (*ev).cgroup_id = bpf_get_current_cgroup_id();
        (*ev).pid = (id >> 32) as u32;
        (*ev).tid = id as u32;
        (*ev).fd = -1;
        (*ev).sock = read_sock(&sock);
        copy_facts(&raw mut (*ev).ended, facts);
        copy_history(&raw mut (*ev).history, h);
        ending_call(&raw mut (*ev).ended, &raw mut (*ev).syscall_nr, &raw mut (*ev).comm);
        if connecting {
            // A listener of this host on the destination port, and how full its queue is: a
            // full one drops SYNs silently.
            let dport = (*ev).history.addrs.dport;
            if crate::resources::read_resource(
                errno::ETIMEDOUT,
                syscall_kind::CONNECT,
                &sock,
                dport,
                &raw mut (*ev).resource,
            ) {
                (*ev).flags |= event_flags::HAS_RESOURCE;
            }
        }
    }
    let wake =
        if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_BYTES { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP };
    entry.submit(wake as u64);
}

/// Copies the facts into the event with one helper call (a struct copy this size would be a
/// byte loop older verifiers walk byte by byte; see `syscalls::copy_history`).
///
/// # Safety
/// `dst` must be valid for writes of an `EndFacts`.
#[inline(always)]
unsafe fn copy_facts(dst: *mut EndFacts, src: &EndFacts) {
    // SAFETY: both are whole EndFacts; the helper reads `src` safely and writes that many bytes.
    let _ = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            dst.cast(),
            core::mem::size_of::<EndFacts>() as u32,
            (src as *const EndFacts).cast(),
        )
    };
}

/// The call that ended the socket (its number and first two arguments, from the task's saved
/// registers), and who: the task, or, when it is exiting, its process.
///
/// # Safety
/// The pointers must be valid for writes, into a reserved event.
#[inline(always)]
unsafe fn ending_call(facts: *mut EndFacts, nr: *mut u32, comm: *mut [u8; TASK_COMM_LEN]) {
    // SAFETY: a helper without arguments; the task is only read through bpf_probe_read_kernel.
    let task = unsafe { bpf_get_current_task() };
    let flags: u32 = read_or_zero(task, global!(OFFSETS.task_flags));
    // SAFETY: the caller's promise.
    unsafe {
        if flags & PF_EXITING != 0 {
            (*facts).exiting = 1;
            (*facts).exit_code = read_or_zero(task, global!(OFFSETS.task_exit_code));
            *comm = crate::leader_comm();
        } else {
            bpf_get_current_comm(comm.cast(), TASK_COMM_LEN as u32);
        }
        *nr = ENDED_CALL_UNKNOWN;
        if global!(CONFIG.flags) & config_flags::TASK_PT_REGS != 0 {
            let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as u64;
            let args = global!(OFFSETS.regs_args);
            *nr = read_or_zero::<u64>(regs, global!(OFFSETS.regs_syscall_nr)) as u32;
            (*facts).args = [read_or_zero(regs, args[0]), read_or_zero(regs, args[1])];
        }
    }
}
