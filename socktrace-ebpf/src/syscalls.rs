//! Failing socket calls: one program on `sys_exit`, for every syscall of every process. It
//! builds no trace record: the program gets the saved registers and the return value, so a
//! call that succeeds costs one compare, and an untraced process's failing call one more. A
//! traced process's failing call on a watched syscall is walked to its socket; a routine
//! failure is counted; anything else becomes one event.
//!
//! Two entry points, one body: `sys_exit_btf` (a BTF tracepoint, 5.11+) reads the registers,
//! the task and its fd table with plain loads through BTF-typed pointers; `sys_exit` (a raw
//! tracepoint, any kernel) reads them with `bpf_probe_read_kernel`, a helper call each, which
//! is most of what a traced process's failing call costs (`ExitView`).

use crate::fdwalk::{fd_table, learn_from_own_socket, sock_of_task_fd, type_protocol, SockRef};
use crate::resources::{read_resource, read_timers, send_refused_memory};
use crate::{
    count, global,
    history::{adopt, history_of, Create, UDP_ERRORS},
    icmp::ICMP_SOURCES,
    is_traced, now_ns, read,
    resets::SENT_RESETS,
    sock_head, zero, ProbedSock, EMPTY_HISTORY, EVENTS, LOST_EVENTS, ROUTINE_COUNTS,
};
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_user,
        generated::{
            bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_task, bpf_get_current_task_btf,
            bpf_probe_read_kernel as probe_read_kernel_raw, bpf_probe_read_user as probe_read_user_raw,
        },
    },
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
    EbpfContext,
};
use aya_log_ebpf::warn;
use socktrace_common::{
    adopt, config_flags, errno, event_flags, history_origin, net, routine, syscall_kind, FailureEvent, IcmpSource,
    SentResetSlot, SockAddrs, SockHead, SockSnapshot, SocketHistory, UdpError, IO_URING_CALL_BASE, NO_FIELD,
    SYSCALL_TABLE_SIZE, TASK_COMM_LEN, WAKEUP_BYTES,
};

/// x86's `TS_COMPAT`: the task is in a 32-bit syscall, whose numbers are not the table's.
const TS_COMPAT: u32 = 0x0002;

/// `sys_exit(struct pt_regs *regs, long ret)` as a raw tracepoint, on every kernel since 4.17.
#[raw_tracepoint(tracepoint = "sys_exit")]
#[inline(always)]
pub fn sys_exit(ctx: RawTracePointContext) -> u32 {
    on_sys_exit::<_, ProbeReads>(&ctx, ctx.arg(0), ctx.arg(1))
}

/// The same as a BTF tracepoint (5.11+: `bpf_get_current_task_btf`): `regs` is a typed pointer.
#[btf_tracepoint(function = "sys_exit")]
#[inline(always)]
pub fn sys_exit_btf(ctx: BtfTracePointContext) -> u32 {
    on_sys_exit::<_, TypedLoads>(&ctx, ctx.arg(0), ctx.arg(1))
}

/// Inlined into each entry. As a subprogram it was refused by 6.1's verifier, which matches a
/// static subprogram's arguments against its BTF (LLVM had dropped an unused one, not the BTF).
#[inline(always)]
fn on_sys_exit<C: EbpfContext, V: ExitView>(ctx: &C, regs: u64, ret: i64) -> u32 {
    // Positive returns (bytes moved, new fds) are never failures: the cheapest exit first.
    if ret > 0 {
        return 0;
    }
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if !is_traced(tgid) {
        if tgid == global!(CONFIG.self_tgid) && tgid != 0 {
            adopt_marked::<C, V>(ctx, regs);
        }
        return 0;
    }
    let Some(call) = watched_call::<V>(regs) else { return 0 };
    on_watched_exit::<C, V>(ctx, regs, &call, ret);
    0
}

/// How the exit reads the saved registers, the current task and its fd table.
pub(crate) trait ExitView {
    /// The syscall number and the first argument.
    fn nr_and_arg0(regs: u64) -> Option<(u64, u64)>;
    fn current_task() -> u64;
    /// `task->thread_info.status` (at `at`).
    fn thread_status(task: u64, at: u32) -> u32;
    /// The current task's fd table: its size (`max_fds`) and its array of files.
    fn fd_table(task: u64) -> Option<(u32, u64)>;
}

/// `bpf_probe_read_kernel`, on plain addresses: any kernel, any hook.
struct ProbeReads;

impl ExitView for ProbeReads {
    #[inline(always)]
    fn nr_and_arg0(regs: u64) -> Option<(u64, u64)> {
        if global!(CONFIG.flags) & config_flags::NR_AFTER_ARG0 != 0 {
            let both: [u64; 2] = read(regs, global!(OFFSETS.regs_args)[0])?;
            return Some((both[1], both[0]));
        }
        Some((read(regs, global!(OFFSETS.regs_syscall_nr))?, syscall_arg(regs, 0)))
    }

    #[inline(always)]
    fn current_task() -> u64 {
        // SAFETY: a helper without arguments; the task is only read through bpf_probe_read_kernel.
        unsafe { bpf_get_current_task() }
    }

    #[inline(always)]
    fn thread_status(task: u64, at: u32) -> u32 {
        read(task, at).unwrap_or(0)
    }

    #[inline(always)]
    fn fd_table(task: u64) -> Option<(u32, u64)> {
        fd_table(read(task, global!(OFFSETS.task_files)).unwrap_or(0))
    }
}

/// Plain loads through the BTF-typed pointers a BTF tracepoint gets (`regs`) and
/// `bpf_get_current_task_btf` returns: the verifier checks each offset (constants from the
/// frozen `OFFSETS`) against the kernel's types and the JIT makes it one load, which reads 0
/// where the pointer is bad. Pointers loaded this way are typed too (`task->files->fdt`); the
/// fd array (`struct file **`) is not, so the file and what follows are probe reads again.
struct TypedLoads;

/// Loads a `T` at `base + offset`, `base` being a BTF-typed pointer (see `TypedLoads`).
#[inline(always)]
pub(crate) fn load<T: Copy>(base: u64, offset: u32) -> T {
    // SAFETY: for the verifier `base` is a typed kernel pointer and `offset` a constant it
    // checks against the type; the JIT turns a fault into a zero.
    unsafe { core::ptr::read_volatile((base as *const u8).add(offset as usize).cast::<T>()) }
}

impl ExitView for TypedLoads {
    #[inline(always)]
    fn nr_and_arg0(regs: u64) -> Option<(u64, u64)> {
        Some((load(regs, global!(OFFSETS.regs_syscall_nr)), load(regs, global!(OFFSETS.regs_args)[0])))
    }

    #[inline(always)]
    fn current_task() -> u64 {
        // SAFETY: a helper without arguments.
        unsafe { bpf_get_current_task_btf() as u64 }
    }

    #[inline(always)]
    fn thread_status(task: u64, at: u32) -> u32 {
        load(task, at)
    }

    #[inline(always)]
    fn fd_table(task: u64) -> Option<(u32, u64)> {
        let files: u64 = load(task, global!(OFFSETS.task_files));
        let fdt: u64 = load(files, global!(OFFSETS.files_fdt));
        Some((load(fdt, global!(OFFSETS.fdtable_max_fds)), load(fdt, global!(OFFSETS.fdtable_fd))))
    }
}

/// A syscall socktrace watches, as its exit found it.
struct Watched {
    nr: u32,
    kind: u8,
    /// The first argument (the fd, for every watched call but `socket` and `splice`).
    arg0: u64,
    /// The current task, fetched once (each helper call costs about as much as a read).
    task: u64,
}

/// The syscall, if socktrace watches it (and it is a native call). Every read here is paid
/// by every failing call of a traced process, an EAGAIN storm's included: with probe reads,
/// the number and the first argument come in one read where they are adjacent
/// (`NR_AFTER_ARG0`).
#[inline(always)]
fn watched_call<V: ExitView>(regs: u64) -> Option<Watched> {
    let (nr, arg0) = V::nr_and_arg0(regs)?;
    let kind = crate::table_byte((&raw const crate::CONFIG.syscall_kinds).cast(), nr, SYSCALL_TABLE_SIZE as u64)?;
    if kind == syscall_kind::NONE {
        return None;
    }
    let task = V::current_task();
    let status_at = global!(OFFSETS.task_thread_status);
    if status_at != NO_FIELD && V::thread_status(task, status_at) & TS_COMPAT != 0 {
        return None;
    }
    Some(Watched { nr: nr as u32, kind, arg0, task })
}

#[inline(always)]
fn syscall_arg(regs: u64, n: usize) -> u64 {
    let offs = global!(OFFSETS.regs_args);
    match offs.get(n) {
        Some(&off) => read(regs, off).unwrap_or(0),
        None => 0,
    }
}

/// The socket a failing call was made on, read once.
pub(crate) struct Sock {
    pub sk: u64,
    pub head: SockHead,
    pub sock_type: u16,
    pub protocol: u16,
    pub is_tcp: bool,
}

#[inline(always)]
fn on_watched_exit<C: EbpfContext, V: ExitView>(ctx: &C, regs: u64, watched: &Watched, ret: i64) {
    let (nr, kind) = (watched.nr, watched.kind);
    let flags_cfg = global!(CONFIG.flags);
    let mut so_error = 0i32;
    if ret == 0 {
        match kind {
            syscall_kind::RECEIVE if flags_cfg & config_flags::REPORT_EOF != 0 => {}
            syscall_kind::GETSOCKOPT => {
                so_error = so_error_read(regs);
                if so_error == 0 {
                    return;
                }
            }
            _ => return,
        }
    }
    if kind == syscall_kind::SOCKET {
        on_socket_create_failure(ctx, regs, nr, ret);
        return;
    }
    let (fd, sk, source) = call_socket::<C, V>(ctx, regs, watched);
    let mut call = Call { nr, kind, fd, so_error, flags: 0, user_addr: (0, 0) };
    if source {
        call.flags |= event_flags::SOCKET_IS_SOURCE;
    }
    if kind == syscall_kind::CONNECT {
        call.user_addr = (syscall_arg(regs, 1), syscall_arg(regs, 2));
    }
    on_socket_failure(ctx, &call, sk, ret);
}

/// `socket()` failing for want of descriptors (EMFILE, ENFILE): there is no socket yet, so the
/// event carries the family, type and protocol the program asked for.
#[inline(always)]
fn on_socket_create_failure<C: EbpfContext>(ctx: &C, regs: u64, nr: u32, ret: i64) {
    if ret != -(errno::EMFILE as i64) && ret != -(errno::ENFILE as i64) {
        return;
    }
    let family = syscall_arg(regs, 0) as u16;
    // The type argument carries SOCK_NONBLOCK/SOCK_CLOEXEC above the type itself.
    let sock_type = (syscall_arg(regs, 1) & 0xf) as u16;
    let mut protocol = syscall_arg(regs, 2) as u16;
    if protocol == 0 && sock_type == net::SOCK_STREAM {
        protocol = net::IPPROTO_TCP;
    }
    let is_tcp = net::is_tcp(family, sock_type, protocol);
    if !is_tcp && global!(CONFIG.flags) & config_flags::ALL_SOCKETS == 0 {
        return;
    }
    let mut head: SockHead = crate::zeroed::<SockHead, 3>();
    head.family = family;
    let sock = Sock { sk: 0, head, sock_type, protocol, is_tcp };
    let call = Call { nr, kind: syscall_kind::SOCKET, fd: -1, so_error: 0, flags: 0, user_addr: (0, 0) };
    send_failure(ctx, &call, ret, &sock, None);
}

/// A failing call, syscall or io_uring request, as the event will say it.
pub(crate) struct Call {
    /// The syscall number, or `IO_URING_CALL_BASE + opcode`.
    pub nr: u32,
    pub kind: u8,
    pub fd: i32,
    pub so_error: i32,
    /// `event_flags` the caller knows (source of data, fixed file).
    pub flags: u32,
    /// The user-space sockaddr and its length a connect was given (0: none to read).
    pub user_addr: (u64, u64),
}

/// A traced process's call `call` returned `ret` on the socket `sock_ref` (none: not a socket):
/// counted if routine, else sent as one event.
#[inline(always)]
pub(crate) fn on_socket_failure<C: aya_ebpf::EbpfContext>(ctx: &C, call: &Call, sock_ref: SockRef, ret: i64) {
    let sk = sock_ref.sk;
    if sk == 0 {
        // Pipes, files, eventfds: never ours to report.
        return;
    }
    let flags_cfg = global!(CONFIG.flags);
    let Some(head) = sock_head::<ProbedSock>(sk) else { return };
    let (sock_type, protocol) = type_protocol(sock_ref, head.family);
    let sock = Sock { sk, head, sock_type, protocol, is_tcp: net::is_tcp(head.family, sock_type, protocol) };
    // A UDP socket's failure with the error an ICMP message set is reported by default; any
    // other failure of a socket that is not TCP only with --all-sockets.
    let udp_error = if protocol == net::IPPROTO_UDP && ret < 0 {
        // SAFETY: the value is copied out at once.
        unsafe { UDP_ERRORS.get(sk) }.copied().filter(|u| u.report.value as i64 == -ret)
    } else {
        None
    };
    if !sock.is_tcp && udp_error.is_none() && flags_cfg & config_flags::ALL_SOCKETS == 0 {
        return;
    }
    if ret == 0 && !sock.is_tcp && call.so_error == 0 {
        return; // end of file is only reported for TCP
    }
    if ret < 0 && flags_cfg & config_flags::SEND_ROUTINE == 0 && count_routine(ret, call.kind, &sock) {
        return;
    }
    if udp_error.is_some() {
        // The kernel reports the error once (sock_error clears sk_err): so is the entry used.
        let _ = UDP_ERRORS.remove(sk);
    }
    send_failure(ctx, call, ret, &sock, udp_error.as_ref());
}

/// The socket fd a watched call was made on and its socket (none: not a socket), and
/// whether the socket was the call's source of data (splice from a socket).
#[inline(always)]
fn call_socket<C: EbpfContext, V: ExitView>(ctx: &C, regs: u64, watched: &Watched) -> (i32, SockRef, bool) {
    let task = watched.task;
    if watched.kind == syscall_kind::SPLICE {
        // splice(fd_in, off_in, fd_out, ...): the socket is whichever end is one.
        let out = syscall_arg(regs, 2) as i32;
        let sock = sock_of_task_fd::<C, V>(ctx, task, out);
        if sock.sk != 0 {
            return (out, sock, false);
        }
        let input = watched.arg0 as i32;
        return (input, sock_of_task_fd::<C, V>(ctx, task, input), true);
    }
    let fd = watched.arg0 as i32;
    (fd, sock_of_task_fd::<C, V>(ctx, task, fd), false)
}

/// socktrace's own `getsockopt(fd, ADOPT_LEVEL, ADOPT_OPTNAME)` on a copy of a traced
/// process's socket: start that socket's history; with `LEARN_OPTNAME`, on a TCP socket of its
/// own: learn the fd walk's fast path from it (see `socktrace_common::adopt`).
#[inline(always)]
fn adopt_marked<C: EbpfContext, V: ExitView>(ctx: &C, regs: u64) {
    let Some(call) = watched_call::<V>(regs) else { return };
    if call.kind != syscall_kind::GETSOCKOPT {
        return;
    }
    if syscall_arg(regs, 1) != adopt::ADOPT_LEVEL {
        return;
    }
    let optname = syscall_arg(regs, 2);
    if optname == adopt::LEARN_OPTNAME {
        learn_from_own_socket::<C, V>(ctx, call.task, call.arg0 as i32);
        return;
    }
    if optname != adopt::ADOPT_OPTNAME {
        return;
    }
    let sk = sock_of_task_fd::<C, V>(ctx, call.task, call.arg0 as i32).sk;
    if sk != 0 {
        adopt(ctx, sk);
    }
}

/// The value a successful `getsockopt(fd, SOL_SOCKET, SO_ERROR, ...)` returned; 0 for any
/// other option.
#[inline(always)]
fn so_error_read(regs: u64) -> i32 {
    if syscall_arg(regs, 1) != net::SOL_SOCKET || syscall_arg(regs, 2) != net::SO_ERROR {
        return 0;
    }
    let optval = syscall_arg(regs, 3);
    // SAFETY: bpf_probe_read_user validates the user address and fails instead of faulting.
    unsafe { bpf_probe_read_user(optval as *const i32) }.unwrap_or(0)
}

/// Routine failures (an EAGAIN storm of a busy event loop) are counted here, per state, not
/// sent one by one: the summary has them, the ring buffer and the wakeups do not. Returns
/// whether `ret` was one.
#[inline(always)]
fn count_routine(ret: i64, call_kind: u8, sock: &Sock) -> bool {
    let Some(mut kind) = routine::kind_of(-ret as i32) else { return false };
    if kind == routine::EAGAIN && send_refused_memory(call_kind, sock) {
        kind = routine::SEND_MEMORY;
    }
    let state: u8 = if sock.is_tcp { sock.head.state } else { 0 };
    count(&ROUTINE_COUNTS, kind * routine::STATES + (state as u32 & (routine::STATES - 1)));
    true
}

/// Writes one `FailureEvent` with the socket's recorded history to the ring buffer, or counts
/// it as lost when the buffer is full.
#[inline(always)]
fn send_failure<C: aya_ebpf::EbpfContext>(ctx: &C, call: &Call, ret: i64, sock: &Sock, udp_error: Option<&UdpError>) {
    let (kind, fd, so_error) = (call.kind, call.fd, call.so_error);
    let snapshot = read_sock(sock);
    // A TCP socket the traced process failed on is its own from here on: later events on it
    // are recorded even if nothing was known before.
    let mut started_here = false;
    let history = if sock.is_tcp && sock.sk != 0 {
        match history_of(ctx, sock.sk, Create::No) {
            Some(h) => Some(h),
            None => {
                started_here = true;
                history_of(ctx, sock.sk, Create::Empty(history_origin::FAILED_CALL))
            }
        }
    } else {
        None
    };
    let Some(mut entry) = EVENTS.reserve::<FailureEvent>(0) else {
        count(&LOST_EVENTS, 0);
        warn!(ctx, "ring buffer full: a failure of pid {} on fd {} was counted as lost", crate::current_tgid(), fd);
        return;
    };
    let ev = entry.as_mut_ptr();
    let id = bpf_get_current_pid_tgid();
    // SAFETY: `ev` points at a reserved, 8-byte aligned ring buffer slot of a FailureEvent,
    // owned here until submit; every helper below writes within the field it is given.
    unsafe {
        zero(ev);
        // The flags live in the event, never in a register: each "has this fact" bit set in a
        // register would double the states the verifier walks (an older one ran past its
        // limit), while a value read back from the record is just an unknown number.
        let flags = &raw mut (*ev).flags;
        let set = |bit: u32| core::ptr::write_volatile(flags, core::ptr::read_volatile(flags) | bit);
        set(event_flags::IS_SOCKET | call.flags);
        if so_error != 0 {
            set(event_flags::FROM_SO_ERROR);
        }
        (*ev).ts_ns = now_ns();
        (*ev).sk = sock.sk;
        (*ev).ret = ret;
        // Which container or service: io-wq workers and the SQPOLL thread live in their
        // ring owner's cgroup, so this is the owner's too.
        (*ev).cgroup_id = bpf_get_current_cgroup_id();
        (*ev).pid = (id >> 32) as u32;
        (*ev).tid = id as u32;
        (*ev).syscall_nr = call.nr;
        (*ev).fd = fd;
        (*ev).so_error = so_error;
        if call.nr >= IO_URING_CALL_BASE {
            // An io-wq worker's name is `iou-wrk-<pid>`: name the process that owns the ring.
            (*ev).comm = crate::leader_comm();
        } else {
            bpf_get_current_comm((&raw mut (*ev).comm).cast(), TASK_COMM_LEN as u32);
        }
        (*ev).sock = snapshot;
        match history {
            Some(h) if !started_here => {
                copy_history(&raw mut (*ev).history, h);
                set(event_flags::HAS_HISTORY);
            }
            _ if udp_error.is_some() => {
                if let Some(u) = udp_error {
                    (*ev).history.error_report = u.report;
                    (*ev).history.addrs = u.addrs;
                }
                set(event_flags::HAS_HISTORY);
            }
            _ => {
                if let Some(empty) = EMPTY_HISTORY.get(0) {
                    copy_history(&raw mut (*ev).history, empty);
                }
                if started_here {
                    set(event_flags::HISTORY_STARTED_HERE);
                }
            }
        }
        // The address connect() was given: the peer this call meant, where the socket may show
        // none (the kernel clears it as a failed connect disconnects) or its history an
        // earlier connect's.
        if call.user_addr.0 != 0 && read_user_sockaddr(call.user_addr.0, call.user_addr.1, &raw mut (*ev).connect_addr)
        {
            set(event_flags::HAS_CONNECT_ADDR);
        }
        // The destination port, for the listener a timed-out connect waited for: what the
        // socket shows, else its history's last complete view, else the connect() argument.
        let dport = [(*ev).sock.addrs.dport, (*ev).history.addrs.dport, (*ev).connect_addr.dport]
            .into_iter()
            .find(|&p| p != 0)
            .unwrap_or(0);
        // The errno read back from the record: an unknown number to the verifier, so the paths
        // that reached here with `ret` narrowed (the routine and memory checks) merge again
        // instead of each walking what follows.
        let e = -core::ptr::read_volatile(&raw const (*ev).ret) as i32;
        if read_resource(e, kind, sock, dport, &raw mut (*ev).resource) {
            set(event_flags::HAS_RESOURCE);
        }
        if sock.is_tcp && sock.sk != 0 && read_timers(e, sock.sk, &raw mut (*ev).timers) {
            set(event_flags::HAS_TIMERS);
        }
        if core::ptr::read_volatile(flags) & event_flags::HAS_HISTORY != 0
            && (*ev).history.rst_received.ts_ns != 0
            && find_sent_reset(&(*ev).history.addrs, (&raw mut (*ev).peer_reset).cast())
        {
            set(event_flags::HAS_PEER_RESET);
        }

        // An error the kernel reported, or the unreachables a soft ICMP error leaves without a
        // report: the ICMP message behind it, if one came.
        if core::ptr::read_volatile(flags) & event_flags::HAS_HISTORY != 0
            && ((*ev).history.error_report.ts_ns != 0 || e == errno::EHOSTUNREACH || e == errno::ENETUNREACH)
            && crate::icmp::icmp_kept()
            && find_icmp_source(&(*ev).history.addrs, &raw mut (*ev).icmp)
        {
            set(event_flags::HAS_ICMP_SOURCE);
        }
    }
    // Wake userspace only when a batch is waiting; it drains on a timer otherwise.
    let wake =
        if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_BYTES { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP };
    entry.submit(wake as u64);
}

/// The set of `SENT_RESETS` where the RST a socket of this host sent on the connection whose
/// other end `ours` is (the 4-tuple reversed) would be, copied into `out`; whether it was
/// copied. Userspace takes the slot whose check belongs to `ours` (see `SentResetSlot`).
///
/// # Safety
/// `out` must be valid for writes of `SENT_RESET_WAYS` `SentResetSlot`s.
#[inline(always)]
unsafe fn find_sent_reset(ours: &SockAddrs, out: *mut SentResetSlot) -> bool {
    let key = socktrace_common::reversed(ours);
    let seed = global!(CONFIG.hash_seed);
    let set = socktrace_common::sent_reset_set(seed, &key);
    let Some(first) = SENT_RESETS.get_ptr(set) else { return false };
    // The set's slots lie one after another in the array (64-byte values, packed): the whole
    // set in one helper call, not a struct copy (LLVM makes that a call to `memmove`, which
    // kernels before about 6.4 refuse with the ring buffer record as its argument).
    let ways = socktrace_common::SENT_RESET_WAYS as usize;
    // SAFETY: `set` is a multiple of the ways below the table's size, so the set lies within
    // the array; `out` is valid for writes of that many slots (the caller's promise); the
    // helper reads safely.
    unsafe {
        probe_read_kernel_raw(out.cast(), (core::mem::size_of::<SentResetSlot>() * ways) as u32, first.cast()) == 0
    }
}

/// The ICMP error received about the packets of the connection `ours` (as its socket sees
/// it), copied into `out` with one helper call (see `find_sent_reset`).
///
/// # Safety
/// `out` must be valid for writes of an `IcmpSource`.
#[inline(always)]
unsafe fn find_icmp_source(ours: &SockAddrs, out: *mut IcmpSource) -> bool {
    // The key on the stack: kernels before about 6.4 take no map key from the ring buffer.
    let mut key: SockAddrs = crate::zeroed::<SockAddrs, 5>();
    key.family = ours.family;
    key.sport = ours.sport;
    key.dport = ours.dport;
    key.saddr = ours.saddr;
    key.daddr = ours.daddr;
    let Some(found) = ICMP_SOURCES.get_ptr(key) else { return false };
    // SAFETY: `found` points at a map value of that size; `out` is valid for writes of it.
    unsafe { probe_read_kernel_raw(out.cast(), core::mem::size_of::<IcmpSource>() as u32, found.cast()) == 0 }
}

/// Copies a history with one helper call. A plain struct copy this size compiles to a byte
/// loop, which kernels before about 6.4 verify one iteration per path: on 6.1 that ran past
/// the verifier's one million instruction budget.
///
/// # Safety
/// `dst` must be valid for writes of a `SocketHistory`; `src` must point at one.
#[inline(always)]
pub(crate) unsafe fn copy_history(dst: *mut SocketHistory, src: *const SocketHistory) {
    // SAFETY: both point at a whole SocketHistory (the caller's promise); the helper reads
    // `src` safely and writes exactly that many bytes.
    let _ = unsafe { probe_read_kernel_raw(dst.cast(), core::mem::size_of::<SocketHistory>() as u32, src.cast()) };
}

/// The socket's addresses (and the rest of it) at the call's exit.
#[inline(always)]
pub(crate) fn read_sock(sock: &Sock) -> SockSnapshot {
    SockSnapshot {
        addrs: crate::history::read_addrs(sock.sk, &sock.head),
        sock_type: sock.sock_type,
        protocol: sock.protocol,
        state: sock.head.state,
        shutdown: read(sock.sk, global!(OFFSETS.sk_shutdown)).unwrap_or(0),
        _pad: [0; 2],
    }
}

/// Reads a `struct sockaddr_in`/`sockaddr_in6` passed by the program into `out`, which is
/// already zeroed (written in place: a returned copy would be a byte loop, see `zero`).
///
/// # Safety
/// `out` must be valid for writes of a `SockAddrs`.
#[inline(always)]
unsafe fn read_user_sockaddr(ptr: u64, len: u64, out: *mut SockAddrs) -> bool {
    if ptr == 0 || len < 8 {
        return false;
    }
    // Family, port and (for IPv4) the address in one read: each user read is a helper call
    // with the kernel's object checks, about 60 ns here.
    // SAFETY: bpf_probe_read_user validates the user address and fails instead of faulting.
    let Ok(head) = (unsafe { bpf_probe_read_user(ptr as *const [u8; 8]) }) else { return false };
    let family = u16::from_ne_bytes([head[0], head[1]]);
    // SAFETY: the writes stay within `out`'s 16-byte daddr; the helper writes at most the
    // given length there.
    let ok = unsafe {
        if family == net::AF_INET {
            core::ptr::write_unaligned((&raw mut (*out).daddr).cast::<[u8; 4]>(), [head[4], head[5], head[6], head[7]]);
            true
        } else if family == net::AF_INET6 && len >= 24 {
            probe_read_user_raw((&raw mut (*out).daddr).cast(), 16, (ptr + 8) as *const _) == 0
        } else {
            false
        }
    };
    if ok {
        // SAFETY: `out` is valid for writes (the caller's promise).
        unsafe {
            (*out).family = family;
            (*out).dport = u16::from_be_bytes([head[2], head[3]]);
        }
    }
    ok
}

/// Does nothing, on the same hook: what the kernel's BPF statistics report for an empty
/// program is their own floor (two clock reads per run), which the benchmark subtracts to
/// tell the time socktrace's programs really take (`socktrace stats-floor`).
#[raw_tracepoint(tracepoint = "sys_exit")]
#[inline(always)]
pub fn stats_floor(_ctx: RawTracePointContext) -> u32 {
    0
}
