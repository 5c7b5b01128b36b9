//! The host's numbers behind a failure, read at the failure for the few errnos that need them
//! (never for the others): descriptors and their limit, the local port range, socket memory and
//! TCP's memory accounting, a listener's accept queue; and the socket's timers and their limits
//! for a timeout. Straight-line reads into the event, which the verifier walks once.

use crate::syscalls::Sock;
use crate::{global, history::LISTENERS, read, read_or_zero};
use aya_ebpf::helpers::generated::bpf_get_current_task;
use socktrace_common::{config_flags, errno, syscall_kind, ListenerKey, ResourceFacts, TimerFacts, NO_FIELD};

/// An EAGAIN from a send on a TCP socket while TCP's memory is over its hard limit
/// (`tcp_mem[2]`): counted apart from the routine full buffer of a slow reader (the numbers
/// come with each event under `--all-errors`). Decided inside the counting, whose path ends
/// there: a branch on the errno before the event is built made 6.1's verifier walk the whole
/// event path twice, past its limit.
#[inline(always)]
pub(crate) fn send_refused_memory(kind: u8, sock: &Sock) -> bool {
    if kind != syscall_kind::OTHER && kind != syscall_kind::SPLICE {
        return false;
    }
    if !sock.is_tcp || sock.head.state == socktrace_common::tcp_state::LISTEN {
        return false; // accept's EAGAIN is routine whatever the memory
    }
    // The kernel shrank this socket's send buffer below the size every socket starts with,
    // which it does only when it refuses memory (the buffer is full for want of memory, not
    // for a slow reader), and TCP is over its hard limit. The buffer first: three reads, and
    // the usual EAGAIN of a full buffer stops there.
    let sndbuf: u32 = read_or_zero(sock.sk, global!(OFFSETS.sk_sndbuf));
    let net: u64 = read_or_zero(sock.sk, global!(OFFSETS.sk_net));
    let wmem: [u32; 2] = read_or_zero(net, global!(OFFSETS.net_tcp_wmem));
    if sndbuf >= wmem[1] {
        return false;
    }
    let m = protocol_memory(sock.sk);
    m.mem_limits[2] != 0 && m.mem_pages > m.mem_limits[2]
}

/// The protocol's memory accounting (`ResourceFacts.mem_*`).
#[derive(Clone, Copy)]
#[repr(C)]
struct ProtocolMemory {
    mem_pages: u64,
    mem_limits: [u64; 3],
    mem_pressure: u32,
    has_mem: u32,
    wmem_initial: u32,
    _pad: u32,
}

/// The protocol's memory accounting, as the kernel compares it when it grants socket memory.
/// Straight-line reads (`read_or_zero`): a pointer that is NULL or unreadable gives zeros, and
/// zero limits mean "not read" (`has_mem` 0).
#[inline(always)]
fn protocol_memory(sk: u64) -> ProtocolMemory {
    let mut m: ProtocolMemory = crate::zeroed::<ProtocolMemory, 6>();
    let prot: u64 = read_or_zero(sk, global!(OFFSETS.sk_prot));
    let allocated: u64 = read_or_zero(prot, global!(OFFSETS.proto_memory_allocated));
    let pressure: u64 = read_or_zero(prot, global!(OFFSETS.proto_memory_pressure));
    let limits: u64 = read_or_zero(prot, global!(OFFSETS.proto_sysctl_mem));
    m.mem_pages = read_or_zero(allocated, 0);
    m.mem_limits = read_or_zero(limits, 0);
    m.mem_pressure = read_or_zero::<u64>(pressure, 0) as u32 | (read_or_zero::<u64>(pressure, 0) >> 32) as u32;
    m.has_mem = m.mem_limits[2] as u32 | (m.mem_limits[2] >> 32) as u32;
    let net: u64 = read_or_zero(sk, global!(OFFSETS.sk_net));
    let wmem: [u32; 2] = read_or_zero(net, global!(OFFSETS.net_tcp_wmem));
    m.wmem_initial = wmem[1];
    m
}

/// The host's numbers behind a failure for want of a resource, read into `out` (already
/// zeroed) only for those errnos; whether it was one.
///
/// # Safety
/// `out` must be valid for writes of a `ResourceFacts`.
#[inline(always)]
pub(crate) unsafe fn read_resource(e: i32, kind: u8, sock: &Sock, dport: u16, out: *mut ResourceFacts) -> bool {
    match e {
        errno::EMFILE | errno::ENFILE => {
            // SAFETY: a helper without arguments; the task is only read through bpf_probe_read_kernel.
            let task = unsafe { bpf_get_current_task() };
            let signal: u64 = read(task, global!(OFFSETS.task_signal)).unwrap_or(0);
            let rlim: [u64; 2] = read(signal, global!(OFFSETS.signal_rlim_nofile)).unwrap_or([0; 2]);
            // SAFETY: `out` is valid for writes (the caller's promise).
            unsafe {
                (*out).nofile_cur = rlim[0];
                (*out).nofile_max = rlim[1];
                (*out).ack_backlog = read(sock.sk, global!(OFFSETS.sk_ack_backlog)).unwrap_or(0);
                (*out).max_ack_backlog = read(sock.sk, global!(OFFSETS.sk_max_ack_backlog)).unwrap_or(0);
            }
            true
        }
        errno::EADDRNOTAVAIL | errno::EADDRINUSE => {
            let net: u64 = read(sock.sk, global!(OFFSETS.sk_net)).unwrap_or(0);
            let at = global!(OFFSETS.net_local_ports);
            let (low, high) = if global!(CONFIG.flags) & config_flags::PORT_RANGE_INTS != 0 {
                let r: [u32; 2] = read(net, at).unwrap_or([0; 2]);
                (r[0], r[1])
            } else {
                let r: u32 = read(net, at).unwrap_or(0);
                (r & 0xffff, r >> 16)
            };
            // SAFETY: `out` is valid for writes (the caller's promise).
            unsafe {
                (*out).port_low = low;
                (*out).port_high = high;
            }
            true
        }
        // A connect that timed out: a listener of this namespace on that port, if socktrace saw
        // it listen, and how full its accept queue is now (a full one drops SYNs silently).
        errno::ETIMEDOUT if kind == syscall_kind::CONNECT || kind == syscall_kind::GETSOCKOPT => {
            let mut key: ListenerKey = crate::zeroed::<ListenerKey, 2>();
            key.net = read(sock.sk, global!(OFFSETS.sk_net)).unwrap_or(0);
            key.port = dport;
            // SAFETY: the value is copied out at once.
            let Some(l) = (unsafe { LISTENERS.get(key) }).copied() else { return false };
            // SAFETY: `out` is valid for writes (the caller's promise).
            unsafe {
                (*out).has_listener = 1;
                (*out).listener_tgid = l.tgid;
                (*out).listener_comm = l.comm;
                (*out).ack_backlog = read(l.sk, global!(OFFSETS.sk_ack_backlog)).unwrap_or(0);
                (*out).max_ack_backlog = read(l.sk, global!(OFFSETS.sk_max_ack_backlog)).unwrap_or(0);
            }
            true
        }
        errno::ENOBUFS | errno::ENOMEM | errno::EAGAIN if kind != syscall_kind::RECEIVE => {
            let m = if sock.is_tcp { protocol_memory(sock.sk) } else { crate::zeroed::<ProtocolMemory, 6>() };
            // SAFETY: `out` is valid for writes (the caller's promise).
            unsafe {
                (*out).sndbuf = read(sock.sk, global!(OFFSETS.sk_sndbuf)).unwrap_or(0);
                (*out).wmem_queued = read(sock.sk, global!(OFFSETS.sk_wmem_queued)).unwrap_or(0);
                (*out).mem_pages = m.mem_pages;
                (*out).mem_limits = m.mem_limits;
                (*out).mem_pressure = m.mem_pressure;
                (*out).has_mem = m.has_mem;
                (*out).wmem_initial = m.wmem_initial;
            }
            true
        }
        _ => false,
    }
}

/// Which TCP timer could have given up on the socket, and its limits, read into `out`
/// (already zeroed) only for the errnos a timeout reports: ETIMEDOUT, or the soft ICMP error
/// it reports instead. Whether it was one.
///
/// # Safety
/// `out` must be valid for writes of a `TimerFacts`.
#[inline(always)]
pub(crate) unsafe fn read_timers(e: i32, sk: u64, out: *mut TimerFacts) -> bool {
    if !matches!(e, errno::ETIMEDOUT | errno::EHOSTUNREACH | errno::ENETUNREACH) {
        return false;
    }
    let net: u64 = read(sk, global!(OFFSETS.sk_net)).unwrap_or(0);
    let field = |base: u64, at: u32| -> u8 {
        if at == NO_FIELD {
            0
        } else {
            read(base, at).unwrap_or(0)
        }
    };
    let flags: u64 =
        if global!(OFFSETS.sk_flags) == NO_FIELD { 0 } else { read(sk, global!(OFFSETS.sk_flags)).unwrap_or(0) };
    // SAFETY: `out` is valid for writes (the caller's promise).
    unsafe {
        if global!(OFFSETS.icsk_user_timeout) != NO_FIELD {
            (*out).user_timeout_ms = read(sk, global!(OFFSETS.icsk_user_timeout)).unwrap_or(0);
        }
        if global!(OFFSETS.tp_snd_wnd) != NO_FIELD {
            (*out).snd_wnd = read(sk, global!(OFFSETS.tp_snd_wnd)).unwrap_or(0);
        }
        (*out).probes_out = field(sk, global!(OFFSETS.icsk_probes_out));
        (*out).syn_retries = field(sk, global!(OFFSETS.icsk_syn_retries));
        // SOCK_KEEPOPEN is bit 3 of sk_flags on every kernel.
        (*out).keepalive = ((flags >> 3) & 1) as u8;
        (*out).keepalive_probes = field(sk, global!(OFFSETS.tp_keepalive_probes));
        (*out).net_syn_retries = field(net, global!(OFFSETS.net_syn_retries));
        (*out).net_retries2 = field(net, global!(OFFSETS.net_retries2));
        (*out).net_keepalive_probes = field(net, global!(OFFSETS.net_keepalive_probes));
        let word = |base: u64, at: u32| -> u32 {
            if at == NO_FIELD {
                0
            } else {
                read(base, at).unwrap_or(0)
            }
        };
        (*out).keepalive_time = word(sk, global!(OFFSETS.tp_keepalive_time));
        (*out).keepalive_intvl = word(sk, global!(OFFSETS.tp_keepalive_intvl));
        (*out).net_keepalive_time = word(net, global!(OFFSETS.net_keepalive_time));
        (*out).net_keepalive_intvl = word(net, global!(OFFSETS.net_keepalive_intvl));
    }
    true
}
