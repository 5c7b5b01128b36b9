//! socktrace's kernel programs. They filter and record facts; they never explain.
//!
//! * `sys_exit_*` turns a failing call of a traced thread on a socket fd into one
//!   `FailureEvent` on the ring buffer, carrying the history the kernel kept for that socket
//!   (arguments come from the registers saved at entry; routine failures are only counted).
//! * The TCP/socket events keep that history, keyed by the `struct sock` address, from
//!   whatever context they run in (softirq included): attribution goes through the socket.
//!   Each event has one handler (`on_*`) and up to three thin entry points, one per probe
//!   type; userspace loads one per event (see `kernel/probes.rs`).
//!
//! Every struct layout comes from userspace (`OFFSETS`), computed from the running kernel.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        bpf_probe_read_user, generated::{
            bpf_get_current_ancestor_cgroup_id, bpf_get_current_comm as bpf_get_current_comm_raw,
            bpf_get_current_task, bpf_get_current_task_btf,
            bpf_ktime_get_ns, bpf_probe_read_kernel as probe_read_kernel_raw,
            bpf_probe_read_user as probe_read_user_raw, bpf_task_pt_regs,
        },
    },
    macros::{btf_tracepoint, kprobe, map, raw_tracepoint, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, ProbeContext, RawTracePointContext, TracePointContext},
};
use socktrace_common::{
    benign, config_flags, event_flags, FailureEvent, KernelOffsets, SockAddrs, SockSnapshot,
    SocketHistory, StampedState, TracedConfig, Transition, HISTORY_TRANSITIONS, NO_FIELD,
    WAKEUP_BYTES,
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u16 = 6;
const SOCK_STREAM: u16 = 1;
const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;
const SOL_SOCKET: u64 = 1;
const SO_ERROR: u64 = 4;

#[no_mangle]
static OFFSETS: KernelOffsets = KernelOffsets::ZERO;

#[no_mangle]
static CONFIG: TracedConfig =
    TracedConfig { flags: 0, cgroup_level: 0, cgroup_id: 0, comm: [0; 16], tgid: 0, _pad: 0 };

/// Thread-group ids (processes) being traced; the first check of every syscall program.
#[map]
static TRACED_TGIDS: HashMap<u32, u8> = HashMap::with_max_entries(16384, 0);

/// What the kernel remembers per socket; entries go on `tcp_destroy_sock`, LRU bounds the rest.
#[map]
static SOCKETS: LruHashMap<u64, SocketHistory> =
    LruHashMap::with_max_entries(65536, BPF_F_NO_COMMON_LRU);

/// Per-CPU LRU lists: no shared lock when sockets come and go fast on both CPUs.
const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;

/// One all-zero `SocketHistory`, never written: the template for new entries.
#[map]
static EMPTY_HISTORY: Array<SocketHistory> = Array::with_max_entries(1, 0);

/// The last state change seen on each CPU, for any TCP socket: when the kernel reports an
/// error right after closing a socket nobody traced yet (tcp_done, then the report: timeouts,
/// `ss -K`), the new history starts with the transition that closed it.
#[map]
static LAST_TRANSITION: PerCpuArray<LastTransition> = PerCpuArray::with_max_entries(1, 0);

/// Routine failures counted instead of sent, by kind and TCP state (see `benign`).
#[map]
static BENIGN_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(benign::KINDS * benign::STATES, 0);

/// Failures that could not be sent because the ring buffer was full (summed over CPUs).
#[map]
static LOST_EVENTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

#[derive(Clone, Copy)]
#[repr(C)]
struct LastTransition {
    sk: u64,
    transition: Transition,
}

/// Only a transition this recent is taken to belong to the report that follows it.
const SEED_WINDOW_NS: u64 = 10_000_000;


/// Reads a global that userspace rewrites before load; volatile so the compiler cannot fold
/// the placeholder zero.
macro_rules! global {
    ($g:ident . $field:ident) => {{
        #[allow(unused_unsafe)]
        let v = unsafe { core::ptr::read_volatile(&raw const $g.$field) };
        v
    }};
}

/// Zeroes `*p` with word stores. A plain zero-initialisation (`Default`, `[0; N]`) compiles to
/// a call to a byte-loop `memset`, which verifiers before about 6.4 walk byte by byte on every
/// path: on 6.1 that alone exhausted the one-million-instruction budget. Volatile stores are
/// never turned back into a `memset`. `p` must be 8-byte aligned.
#[inline(always)]
unsafe fn zero<T>(p: *mut T) {
    let size = core::mem::size_of::<T>();
    let words = p.cast::<u64>();
    let mut i = 0;
    while i < size / 8 {
        core::ptr::write_volatile(words.add(i), 0);
        i += 1;
    }
    let bytes = p.cast::<u8>();
    let mut j = size / 8 * 8;
    while j < size {
        core::ptr::write_volatile(bytes.add(j), 0);
        j += 1;
    }
}

/// Addresses that start all-zero (see `zero`).
#[inline(always)]
fn zeroed_addrs() -> SockAddrs {
    let mut words = [0u64; 5];
    unsafe { zero(&raw mut words) };
    unsafe { core::mem::transmute::<[u64; 5], SockAddrs>(words) }
}

/// The current task's name (the helper zeroes it on failure).
#[inline(always)]
fn current_comm() -> [u64; 2] {
    let mut comm = [0u64; 2];
    unsafe { zero(&raw mut comm) };
    unsafe { bpf_get_current_comm_raw(comm.as_mut_ptr().cast(), 16) };
    comm
}

#[inline(always)]
fn now_ns() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

/// Whether the current task is selected. Every selector given must match (pids, name,
/// cgroup); with none, every process is.
#[inline(always)]
fn is_traced(tgid: u32) -> bool {
    let flags = global!(CONFIG.flags);
    if flags & config_flags::SELECT_ONE_PID != 0 && tgid != global!(CONFIG.tgid) {
        return false;
    }
    if flags & config_flags::SELECT_PIDS != 0 && unsafe { TRACED_TGIDS.get(&tgid).is_none() } {
        return false;
    }
    if flags & config_flags::SELECT_COMM != 0 {
        let comm = current_comm();
        let want: [u64; 2] = unsafe { core::mem::transmute(global!(CONFIG.comm)) };
        if comm != want {
            return false;
        }
    }
    if flags & config_flags::SELECT_CGROUP != 0 {
        let level = global!(CONFIG.cgroup_level) as i32;
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if id != global!(CONFIG.cgroup_id) {
            return false;
        }
    }
    true
}

#[inline(always)]
fn read<T>(base: u64, offset: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T).ok() }
}

// ---------------------------------------------------------------------------------------------
// Syscalls

/// The registers saved at syscall entry (`struct pt_regs`): the arguments are read from
/// there at exit, only for calls that failed, and only those needed, so succeeding calls
/// cost no map operation and an EAGAIN storm no more reads than it must.
#[inline(always)]
fn entry_regs() -> u64 {
    unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) as u64 }
}

#[inline(always)]
fn syscall_arg(regs: u64, n: usize) -> u64 {
    let offs = global!(OFFSETS.regs_args);
    match offs.get(n) {
        Some(&off) => read(regs, off).unwrap_or(0),
        None => 0,
    }
}

/// The routine-failure kind of a negative return, if it is one.
#[inline(always)]
fn benign_kind(ret: i64) -> Option<u32> {
    match -ret {
        11 => Some(benign::EAGAIN),
        4 | 512..=516 => Some(benign::EINTR),
        115 => Some(benign::EINPROGRESS),
        114 => Some(benign::EALREADY),
        _ => None,
    }
}

/// What kind of exit a program handles; each is attached to the matching `sys_exit_*`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ExitKind {
    /// read-like: a return of 0 is end of file.
    Receive,
    /// getsockopt: a successful SO_ERROR read carrying an error is a failed async connect.
    GetSockOpt,
    Connect,
    Other,
}

#[tracepoint]
pub fn sys_exit_receive(ctx: TracePointContext) -> u32 {
    record_exit(&ctx, ExitKind::Receive)
}

#[tracepoint]
pub fn sys_exit_getsockopt(ctx: TracePointContext) -> u32 {
    record_exit(&ctx, ExitKind::GetSockOpt)
}

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    record_exit(&ctx, ExitKind::Connect)
}


#[tracepoint]
pub fn sys_exit_other(ctx: TracePointContext) -> u32 {
    record_exit(&ctx, ExitKind::Other)
}

#[inline(always)]
fn record_exit(ctx: &TracePointContext, kind: ExitKind) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if !is_traced(tgid) {
        return 0;
    }
    let tid = id as u32;
    let ret: i64 = unsafe { ctx.read_at(global!(OFFSETS.tp_exit_ret) as usize) }.unwrap_or(0);
    let flags_cfg = global!(CONFIG.flags);
    // The cheap decisions first: most calls succeed and leave here.
    if ret >= 0 {
        let wanted = match kind {
            ExitKind::Receive => ret == 0 && flags_cfg & config_flags::REPORT_EOF != 0,
            ExitKind::GetSockOpt => true,
            _ => false,
        };
        if !wanted {
            return 0;
        }
    }
    let regs = entry_regs();

    let mut flags = 0u32;
    let mut so_error = 0i32;
    if kind == ExitKind::GetSockOpt && ret >= 0 {
        if syscall_arg(regs, 1) != SOL_SOCKET || syscall_arg(regs, 2) != SO_ERROR {
            return 0;
        }
        let optval = syscall_arg(regs, 3);
        let value: i32 = unsafe { bpf_probe_read_user(optval as *const i32) }.unwrap_or(0);
        if value == 0 {
            return 0;
        }
        so_error = value;
        flags |= event_flags::FROM_SO_ERROR;
    }

    let fd = syscall_arg(regs, 0) as i32;
    let sk = sock_of_fd(fd);
    if sk == 0 {
        // Pipes, files, eventfds: never ours to report.
        return 0;
    }
    let protocol: u16 = read(sk, global!(OFFSETS.sk_protocol)).unwrap_or(0);
    let sock_type: u16 = read(sk, global!(OFFSETS.sk_type)).unwrap_or(0);
    let family: u16 = read(sk, global!(OFFSETS.sk_family)).unwrap_or(0);
    let is_tcp = protocol == IPPROTO_TCP
        && sock_type == SOCK_STREAM
        && (family == AF_INET || family == AF_INET6);
    if !is_tcp && flags_cfg & config_flags::ALL_SOCKETS == 0 {
        return 0;
    }
    if ret == 0 && !is_tcp && flags & event_flags::FROM_SO_ERROR == 0 {
        return 0; // end of file is only reported for TCP
    }
    // Routine failures (an EAGAIN storm of a busy event loop) are counted here, per state,
    // not sent one by one: the summary has them, the ring buffer and the wakeups do not.
    if ret < 0 && flags_cfg & config_flags::SEND_BENIGN == 0 {
        if let Some(kind) = benign_kind(ret) {
            let state: u8 = if is_tcp { read(sk, global!(OFFSETS.sk_state)).unwrap_or(0) } else { 0 };
            let idx = kind * benign::STATES + (state as u32 & (benign::STATES - 1));
            if let Some(count) = BENIGN_COUNTS.get_ptr_mut(idx) {
                unsafe { *count += 1 };
            }
            return 0;
        }
    }
    let sock = read_sock(sk, family, sock_type, protocol);
    let syscall_nr: i32 =
        unsafe { ctx.read_at(global!(OFFSETS.tp_syscall_nr) as usize) }.unwrap_or(-1);

    let Some(mut entry) = EVENTS.reserve::<FailureEvent>(0) else {
        if let Some(lost) = LOST_EVENTS.get_ptr_mut(0) {
            unsafe { *lost += 1 };
        }
        return 0;
    };
    let ev = entry.as_mut_ptr();
    unsafe {
        zero(ev);
        (*ev).ts_ns = now_ns();
        (*ev).sk = sk;
        (*ev).ret = ret;
        (*ev).pid = tgid;
        (*ev).tid = tid;
        (*ev).syscall_nr = syscall_nr as u32;
        (*ev).fd = fd;
        (*ev).so_error = so_error;
        bpf_get_current_comm_raw((&raw mut (*ev).comm).cast(), 16);
        (*ev).sock = sock;
        flags |= event_flags::IS_SOCKET;
        if kind == ExitKind::Connect {
            if read_user_sockaddr(syscall_arg(regs, 1), syscall_arg(regs, 2), &raw mut (*ev).connect_addr) {
                flags |= event_flags::HAS_CONNECT_ADDR;
            }
        }
        match SOCKETS.get(&sk) {
            Some(history) => {
                copy_history(&raw mut (*ev).history, history);
                flags |= event_flags::HAS_HISTORY;
            }
            None => {
                if let Some(empty) = EMPTY_HISTORY.get(0) {
                    copy_history(&raw mut (*ev).history, empty);
                }
            }
        }
        (*ev).flags = flags;
    }
    // Wake userspace only when a batch is waiting; it drains on a timer otherwise.
    let wake = if EVENTS.query(BPF_RB_AVAIL_DATA) >= WAKEUP_BYTES { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP };
    entry.submit(wake);
    0
}

/// Copies a history with one helper call. A plain struct copy this size compiles to a byte
/// loop, which kernels before about 6.4 verify one iteration per path: on 6.1 that ran past
/// the verifier's one million instruction budget.
#[inline(always)]
unsafe fn copy_history(dst: *mut SocketHistory, src: *const SocketHistory) {
    let _ = probe_read_kernel_raw(
        dst.cast(),
        core::mem::size_of::<SocketHistory>() as u32,
        src.cast(),
    );
}

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// task -> files -> fdtable -> file -> socket -> sock. Returns 0 when the fd is not a socket.
#[inline(always)]
fn sock_of_fd(fd: i32) -> u64 {
    if fd < 0 {
        return 0;
    }
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read(task, global!(OFFSETS.task_files)).unwrap_or(0);
    let fdt: u64 = read(files, global!(OFFSETS.files_fdt)).unwrap_or(0);
    let max_fds: u32 = read(fdt, global!(OFFSETS.fdtable_max_fds)).unwrap_or(0);
    if fd as u32 >= max_fds {
        return 0;
    }
    let fd_array: u64 = read(fdt, global!(OFFSETS.fdtable_fd)).unwrap_or(0);
    let file: u64 = read(fd_array, fd as u32 * 8).unwrap_or(0);
    let inode: u64 = read(file, global!(OFFSETS.file_f_inode)).unwrap_or(0);
    let mode: u16 = read(inode, global!(OFFSETS.inode_i_mode)).unwrap_or(0);
    if mode & S_IFMT != S_IFSOCK {
        return 0;
    }
    let socket: u64 = read(file, global!(OFFSETS.file_private_data)).unwrap_or(0);
    read(socket, global!(OFFSETS.socket_sk)).unwrap_or(0)
}

#[inline(always)]
fn read_addrs(sk: u64) -> SockAddrs {
    read_addrs_of_family(sk, read(sk, global!(OFFSETS.sk_family)).unwrap_or(0))
}

#[inline(always)]
fn read_addrs_of_family(sk: u64, family: u16) -> SockAddrs {
    let mut a = zeroed_addrs();
    a.family = family;
    a.sport = read(sk, global!(OFFSETS.sk_num)).unwrap_or(0);
    a.dport = u16::from_be(read(sk, global!(OFFSETS.sk_dport)).unwrap_or(0));
    if a.family == AF_INET6 {
        a.saddr = read(sk, global!(OFFSETS.sk_v6_rcv_saddr)).unwrap_or([0; 16]);
        a.daddr = read(sk, global!(OFFSETS.sk_v6_daddr)).unwrap_or([0; 16]);
    } else {
        let s: [u8; 4] = read(sk, global!(OFFSETS.sk_rcv_saddr)).unwrap_or([0; 4]);
        let d: [u8; 4] = read(sk, global!(OFFSETS.sk_daddr)).unwrap_or([0; 4]);
        a.saddr[..4].copy_from_slice(&s);
        a.daddr[..4].copy_from_slice(&d);
    }
    a
}

#[inline(always)]
/// The rest of the socket, given the fields the caller has already read.
fn read_sock(sk: u64, family: u16, sock_type: u16, protocol: u16) -> SockSnapshot {
    SockSnapshot {
        addrs: read_addrs_of_family(sk, family),
        sock_type,
        protocol,
        state: read(sk, global!(OFFSETS.sk_state)).unwrap_or(0),
        shutdown: read(sk, global!(OFFSETS.sk_shutdown)).unwrap_or(0),
        _pad: [0; 2],
    }
}

/// Reads a `struct sockaddr_in`/`sockaddr_in6` passed by the program into `out`, which is
/// already zeroed (written in place: a returned copy would be a byte loop, see `zero`).
#[inline(always)]
unsafe fn read_user_sockaddr(ptr: u64, len: u64, out: *mut SockAddrs) -> bool {
    if ptr == 0 || len < 8 {
        return false;
    }
    let Ok(family) = bpf_probe_read_user(ptr as *const u16) else { return false };
    let Ok(port) = bpf_probe_read_user((ptr + 2) as *const u16) else { return false };
    let ok = if family == AF_INET {
        probe_read_user_raw((&raw mut (*out).daddr).cast(), 4, (ptr + 4) as *const _) == 0
    } else if family == AF_INET6 && len >= 24 {
        probe_read_user_raw((&raw mut (*out).daddr).cast(), 16, (ptr + 8) as *const _) == 0
    } else {
        false
    };
    if ok {
        (*out).family = family;
        (*out).dport = u16::from_be(port);
    }
    ok
}

// ---------------------------------------------------------------------------------------------
// Socket history (any context)

#[inline(always)]
fn is_tcp_sock(sk: u64) -> bool {
    read::<u16>(sk, global!(OFFSETS.sk_protocol)) == Some(IPPROTO_TCP)
}

/// How a missing history is handled.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Create {
    No,
    Empty,
    /// Start it with this CPU's last transition if that was on this socket, just now.
    Seeded,
}

/// The history of `sk`, created as `create` says (for a TCP socket the caller cares about).
#[inline(always)]
fn history_of(sk: u64, create: Create) -> Option<*mut SocketHistory> {
    if let Some(h) = SOCKETS.get_ptr_mut(&sk) {
        return Some(h);
    }
    if create == Create::No {
        return None;
    }
    // The zeroed template lives in a map: a SocketHistory on the stack would not fit in 512 B.
    let fresh = EMPTY_HISTORY.get(0)?;
    // BPF_NOEXIST: if another CPU created it meanwhile, keep theirs.
    let _ = SOCKETS.insert(&sk, fresh, 1);
    let h = SOCKETS.get_ptr_mut(&sk)?;
    if create == Create::Seeded {
        if let Some(last) = LAST_TRANSITION.get_ptr(0) {
            let last = unsafe { *last };
            if last.sk == sk && now_ns().wrapping_sub(last.transition.ts_ns) < SEED_WINDOW_NS {
                unsafe {
                    if (*h).n_transitions == 0 {
                        (*h).transitions[0] = last.transition;
                        (*h).n_transitions = 1;
                    }
                }
            }
        }
    }
    Some(h)
}

/// Marks `event` as happened now, in the state `sk` is in.
#[inline(always)]
fn stamp(event: *mut StampedState, sk: u64, value: i32) {
    unsafe {
        (*event).ts_ns = now_ns();
        (*event).state = read(sk, global!(OFFSETS.sk_state)).unwrap_or(0);
        (*event).value = value;
        (*event).current_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    }
}

/// Keeps the most complete addresses: the kernel zeroes ports while a socket closes.
#[inline(always)]
fn merge_addrs(h: *mut SocketHistory, sk: u64) {
    let now = read_addrs(sk);
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
}

// ---------------------------------------------------------------------------------------------
// What each TCP/socket event does to the history. Each is reached three ways (one per probe
// mode, userspace loads only the one it picked): a BTF tracepoint, a classic tracepoint whose
// record is read at offsets from its format file, or a kprobe on the kernel function that
// fires the tracepoint. The handlers below are the only place the facts are recorded.

/// `sk` goes from `old` to `new` (any context).
#[inline(always)]
fn on_state_change(sk: u64, old: i32, new: i32) -> u32 {
    if !is_tcp_sock(sk) {
        return 0;
    }
    // A socket's history starts in the traced process's own context (connect, close,
    // shutdown); later transitions from softirq find it by address.
    let in_traced = is_traced((bpf_get_current_pid_tgid() >> 32) as u32);
    let mut words = [0u64; 2];
    unsafe { zero(&raw mut words) };
    // Built on zeroed words: a literal's padding array would be a memset call (see `zero`).
    let mut transition: Transition = unsafe { core::mem::transmute(words) };
    transition.ts_ns = now_ns();
    transition.old_state = old as u8;
    transition.new_state = new as u8;
    transition.in_traced_task = in_traced as u8;
    if let Some(last) = LAST_TRANSITION.get_ptr_mut(0) {
        unsafe { *last = LastTransition { sk, transition } };
    }
    let Some(h) = history_of(sk, if in_traced { Create::Empty } else { Create::No }) else {
        return 0;
    };
    unsafe {
        let n = (*h).n_transitions;
        let i = n as usize & (HISTORY_TRANSITIONS - 1);
        if let Some(t) = (*h).transitions.get_mut(i) {
            *t = transition;
        }
        (*h).n_transitions = n.wrapping_add(1);
    }
    merge_addrs(h, sk);
    0
}

/// An RST arrived for `sk`, which is still in the state the RST hit.
#[inline(always)]
fn on_receive_reset(sk: u64) -> u32 {
    // Created for any TCP socket: the RST may come before the traced process ever touched
    // it (a connection still in an accept queue, or one opened before tracing began).
    let Some(h) = history_of(sk, if is_tcp_sock(sk) { Create::Empty } else { Create::No }) else {
        return 0;
    };
    unsafe { stamp(&raw mut (*h).rst_received, sk, 0) };
    merge_addrs(h, sk);
    0
}

/// `sk` sent an RST; `reason` is the kernel's sk_rst_reason, or -1 where it has none.
#[inline(always)]
fn on_send_reset(sk: u64, reason: i32) -> u32 {
    // sk may be NULL (no socket), a time-wait or a request sock: only full sockets we already
    // know are recorded, so no field beyond sock_common is read from the others.
    let Some(h) = history_of(sk, Create::No) else {
        return 0;
    };
    unsafe { stamp(&raw mut (*h).rst_sent, sk, reason) };
    0
}

/// The kernel reported `sk->sk_err` to the socket's owner.
#[inline(always)]
fn on_error_report(sk: u64) -> u32 {
    // tcp_disconnect() reports too, after the error was consumed (sk_err 0): that report
    // carries no error and must not hide the one before it.
    let err: i32 = read(sk, global!(OFFSETS.sk_err)).unwrap_or(0);
    if err == 0 {
        return 0;
    }
    let Some(h) = history_of(sk, if is_tcp_sock(sk) { Create::Seeded } else { Create::No }) else {
        return 0;
    };
    unsafe { stamp(&raw mut (*h).error_report, sk, err) };
    merge_addrs(h, sk);
    0
}

#[inline(always)]
fn on_retransmit(sk: u64) -> u32 {
    // Created on the first retransmission: a timeout later needs the count, whoever the
    // socket belongs to (the timer runs in softirq).
    let Some(h) = history_of(sk, Create::Empty) else {
        return 0;
    };
    unsafe {
        (*h).retransmits = (*h).retransmits.wrapping_add(1);
        (*h).last_retransmit_ns = now_ns();
    }
    merge_addrs(h, sk);
    0
}

#[inline(always)]
fn on_destroy(sk: u64) -> u32 {
    let _ = SOCKETS.remove(&sk);
    0
}

// BTF tracepoints (tp_btf, 5.5+): typed arguments, the socket pointer included.

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> u32 {
    on_state_change(ctx.arg(0), ctx.arg(1), ctx.arg(2))
}

#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: BtfTracePointContext) -> u32 {
    on_receive_reset(ctx.arg(0))
}

#[btf_tracepoint(function = "tcp_send_reset")]
pub fn tcp_send_reset(ctx: BtfTracePointContext) -> u32 {
    let reason: i32 = if global!(CONFIG.flags) & config_flags::SEND_RESET_HAS_REASON != 0 {
        ctx.arg(2)
    } else {
        -1
    };
    on_send_reset(ctx.arg(0), reason)
}

#[btf_tracepoint(function = "inet_sk_error_report")]
pub fn inet_sk_error_report(ctx: BtfTracePointContext) -> u32 {
    on_error_report(ctx.arg(0))
}

#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: BtfTracePointContext) -> u32 {
    on_retransmit(ctx.arg(0))
}

#[btf_tracepoint(function = "tcp_destroy_sock")]
pub fn tcp_destroy_sock(ctx: BtfTracePointContext) -> u32 {
    on_destroy(ctx.arg(0))
}

// Classic tracepoints: the record's fields at the offsets the format files gave.

#[inline(always)]
fn record_field<T>(ctx: &TracePointContext, offset: u32) -> T
where
    T: Default,
{
    unsafe { ctx.read_at::<T>(offset as usize) }.unwrap_or_default()
}

#[tracepoint]
pub fn tp_inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let sk: u64 = record_field(&ctx, global!(OFFSETS.tp_set_state_skaddr));
    let old: i32 = record_field(&ctx, global!(OFFSETS.tp_set_state_oldstate));
    let new: i32 = record_field(&ctx, global!(OFFSETS.tp_set_state_newstate));
    on_state_change(sk, old, new)
}

#[tracepoint]
pub fn tp_tcp_receive_reset(ctx: TracePointContext) -> u32 {
    on_receive_reset(record_field(&ctx, global!(OFFSETS.tp_receive_reset_skaddr)))
}

#[tracepoint]
pub fn tp_tcp_send_reset(ctx: TracePointContext) -> u32 {
    let sk: u64 = record_field(&ctx, global!(OFFSETS.tp_send_reset_skaddr));
    let reason_at = global!(OFFSETS.tp_send_reset_reason);
    let reason: i32 = if reason_at != NO_FIELD { record_field(&ctx, reason_at) } else { -1 };
    on_send_reset(sk, reason)
}

#[tracepoint]
pub fn tp_tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    on_retransmit(record_field(&ctx, global!(OFFSETS.tp_retransmit_skaddr)))
}

#[tracepoint]
pub fn tp_tcp_destroy_sock(ctx: TracePointContext) -> u32 {
    on_destroy(record_field(&ctx, global!(OFFSETS.tp_destroy_skaddr)))
}

/// The classic `inet_sk_error_report` record has the error and addresses but no socket
/// pointer, so tracepoint mode takes this event as a raw tracepoint (arguments, no record).
#[raw_tracepoint(tracepoint = "inet_sk_error_report")]
pub fn raw_inet_sk_error_report(ctx: RawTracePointContext) -> u32 {
    on_error_report(ctx.arg(0))
}

// kprobes on the functions that fire those tracepoints, for kernels where the tracepoints
// are missing or unusable. The first argument is the socket in every signature used here
// (tcp_reset(sk) before 5.14, tcp_reset(sk, skb) since), so one program serves each.

#[kprobe]
pub fn kp_tcp_set_state(ctx: ProbeContext) -> u32 {
    let sk: u64 = ctx.arg(0).unwrap_or(0);
    let new: i32 = ctx.arg(1).unwrap_or(0);
    // At entry the socket still holds the state it leaves.
    let old: u8 = read(sk, global!(OFFSETS.sk_state)).unwrap_or(0);
    on_state_change(sk, old as i32, new)
}

#[kprobe]
pub fn kp_tcp_reset(ctx: ProbeContext) -> u32 {
    on_receive_reset(ctx.arg(0).unwrap_or(0))
}

#[kprobe]
pub fn kp_sk_error_report(ctx: ProbeContext) -> u32 {
    on_error_report(ctx.arg(0).unwrap_or(0))
}

/// At entry, so attempts are counted (the tracepoint counts only retransmissions that were
/// sent); a timeout diagnosis needs only "at least one".
#[kprobe]
pub fn kp_tcp_retransmit_skb(ctx: ProbeContext) -> u32 {
    on_retransmit(ctx.arg(0).unwrap_or(0))
}

/// tcp_v4_destroy_sock destroys IPv6 TCP sockets too.
#[kprobe]
pub fn kp_tcp_v4_destroy_sock(ctx: ProbeContext) -> u32 {
    on_destroy(ctx.arg(0).unwrap_or(0))
}

// ---------------------------------------------------------------------------------------------
// Following forks (-f)

#[inline(always)]
fn on_fork(parent: u64, child: u64) -> u32 {
    if global!(CONFIG.flags) & config_flags::FOLLOW_FORKS == 0 {
        return 0;
    }
    let off = global!(OFFSETS.task_tgid);
    let (Some(ptgid), Some(ctgid)) = (read::<u32>(parent, off), read::<u32>(child, off)) else {
        return 0;
    };
    // A new thread shares its parent's tgid and is already traced with it.
    if ptgid != ctgid && unsafe { TRACED_TGIDS.get(&ptgid).is_some() } {
        let _ = TRACED_TGIDS.insert(&ctgid, &1, 0);
    }
    0
}

#[inline(always)]
fn on_exit() -> u32 {
    if global!(CONFIG.flags) & config_flags::FOLLOW_FORKS == 0 {
        return 0;
    }
    let id = bpf_get_current_pid_tgid();
    // The thread-group leader leaves last in the usual case: forget the process then, so a
    // recycled PID is not traced by mistake.
    if id >> 32 == id & 0xffff_ffff {
        let _ = TRACED_TGIDS.remove(&((id >> 32) as u32));
    }
    0
}

#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> u32 {
    on_fork(ctx.arg(0), ctx.arg(1))
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(_ctx: BtfTracePointContext) -> u32 {
    on_exit()
}

/// The classic fork record has pids, not tgids (a thread and a process look alike there):
/// the raw tracepoint's task pointers tell them apart.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn raw_sched_process_fork(ctx: RawTracePointContext) -> u32 {
    on_fork(ctx.arg(0), ctx.arg(1))
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn raw_sched_process_exit(_ctx: RawTracePointContext) -> u32 {
    on_exit()
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
