//! Failing socket calls: one program per kind of exit, attached to the watched
//! `syscalls:sys_exit_*` tracepoints. A call that succeeds leaves after the process filter
//! and one compare; a routine failure is counted; anything else becomes one event.

use crate::{
    count, current_tgid, global, is_traced, now_ns, read, zero, EMPTY_HISTORY, EVENTS, LOST_EVENTS, ROUTINE_COUNTS,
    SOCKETS,
};
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_user,
        generated::{
            bpf_get_current_comm, bpf_get_current_task, bpf_get_current_task_btf,
            bpf_probe_read_kernel as probe_read_kernel_raw, bpf_probe_read_user as probe_read_user_raw,
            bpf_task_pt_regs,
        },
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use aya_log_ebpf::{debug, warn};
use socktrace_common::{
    config_flags, event_flags, net, routine, FailureEvent, SockAddrs, SockSnapshot, SocketHistory, TASK_COMM_LEN,
    WAKEUP_BYTES,
};

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
    on_exit(&ctx, ExitKind::Receive)
}

#[tracepoint]
pub fn sys_exit_getsockopt(ctx: TracePointContext) -> u32 {
    on_exit(&ctx, ExitKind::GetSockOpt)
}

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    on_exit(&ctx, ExitKind::Connect)
}

#[tracepoint]
pub fn sys_exit_other(ctx: TracePointContext) -> u32 {
    on_exit(&ctx, ExitKind::Other)
}

/// The registers saved at syscall entry (`struct pt_regs`): the arguments are read from
/// there at exit, only for calls that failed, and only those needed, so succeeding calls
/// cost no map operation and an EAGAIN storm no more reads than it must.
#[inline(always)]
fn entry_regs() -> u64 {
    // SAFETY: helpers without pointer arguments; the result is only read through
    // bpf_probe_read_kernel.
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

/// The socket a failing call was made on, read once.
struct Sock {
    sk: u64,
    family: u16,
    sock_type: u16,
    protocol: u16,
    is_tcp: bool,
}

#[inline(always)]
fn on_exit(ctx: &TracePointContext, kind: ExitKind) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if !is_traced(tgid) {
        return 0;
    }
    // SAFETY: the offset comes from the record's format file; read_at checks the bounds.
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
    let mut so_error = 0i32;
    if kind == ExitKind::GetSockOpt && ret >= 0 {
        so_error = so_error_read(regs);
        if so_error == 0 {
            return 0;
        }
    }
    let fd = syscall_arg(regs, 0) as i32;
    let sk = sock_of_fd(ctx, fd);
    if sk == 0 {
        // Pipes, files, eventfds: never ours to report.
        return 0;
    }
    let family: u16 = read(sk, global!(OFFSETS.sk_family)).unwrap_or(0);
    let sock_type: u16 = read(sk, global!(OFFSETS.sk_type)).unwrap_or(0);
    let protocol: u16 = read(sk, global!(OFFSETS.sk_protocol)).unwrap_or(0);
    let sock = Sock { sk, family, sock_type, protocol, is_tcp: net::is_tcp(family, sock_type, protocol) };
    if !sock.is_tcp && flags_cfg & config_flags::ALL_SOCKETS == 0 {
        return 0;
    }
    if ret == 0 && !sock.is_tcp && so_error == 0 {
        return 0; // end of file is only reported for TCP
    }
    if ret < 0 && flags_cfg & config_flags::SEND_ROUTINE == 0 && count_routine(ret, &sock) {
        return 0;
    }
    send_failure(ctx, kind, regs, ret, fd, so_error, &sock);
    0
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
fn count_routine(ret: i64, sock: &Sock) -> bool {
    let Some(kind) = routine::kind_of(-ret as i32) else { return false };
    let state: u8 = if sock.is_tcp { read(sock.sk, global!(OFFSETS.sk_state)).unwrap_or(0) } else { 0 };
    count(&ROUTINE_COUNTS, kind * routine::STATES + (state as u32 & (routine::STATES - 1)));
    true
}

/// Writes one `FailureEvent` with the socket's recorded history to the ring buffer, or counts
/// it as lost when the buffer is full.
#[inline(always)]
fn send_failure(ctx: &TracePointContext, kind: ExitKind, regs: u64, ret: i64, fd: i32, so_error: i32, sock: &Sock) {
    let snapshot = read_sock(sock);
    // SAFETY: the offset comes from the record's format file; read_at checks the bounds.
    let syscall_nr: i32 = unsafe { ctx.read_at(global!(OFFSETS.tp_syscall_nr) as usize) }.unwrap_or(-1);
    let Some(mut entry) = EVENTS.reserve::<FailureEvent>(0) else {
        count(&LOST_EVENTS, 0);
        warn!(ctx, "ring buffer full: a failure of pid {} on fd {} was counted as lost", current_tgid(), fd);
        return;
    };
    let ev = entry.as_mut_ptr();
    let id = bpf_get_current_pid_tgid();
    let mut flags = event_flags::IS_SOCKET;
    if so_error != 0 {
        flags |= event_flags::FROM_SO_ERROR;
    }
    // SAFETY: `ev` points at a reserved, 8-byte aligned ring buffer slot of a FailureEvent,
    // owned here until submit; every helper below writes within the field it is given.
    unsafe {
        zero(ev);
        (*ev).ts_ns = now_ns();
        (*ev).sk = sock.sk;
        (*ev).ret = ret;
        (*ev).pid = (id >> 32) as u32;
        (*ev).tid = id as u32;
        (*ev).syscall_nr = syscall_nr as u32;
        (*ev).fd = fd;
        (*ev).so_error = so_error;
        bpf_get_current_comm((&raw mut (*ev).comm).cast(), TASK_COMM_LEN as u32);
        (*ev).sock = snapshot;
        if kind == ExitKind::Connect
            && read_user_sockaddr(syscall_arg(regs, 1), syscall_arg(regs, 2), &raw mut (*ev).connect_addr)
        {
            flags |= event_flags::HAS_CONNECT_ADDR;
        }
        match SOCKETS.get(sock.sk) {
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
    let wake =
        if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_BYTES { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP };
    entry.submit(wake as u64);
}

/// Copies a history with one helper call. A plain struct copy this size compiles to a byte
/// loop, which kernels before about 6.4 verify one iteration per path: on 6.1 that ran past
/// the verifier's one million instruction budget.
///
/// # Safety
/// `dst` must be valid for writes of a `SocketHistory`; `src` must point at one.
#[inline(always)]
unsafe fn copy_history(dst: *mut SocketHistory, src: *const SocketHistory) {
    // SAFETY: both point at a whole SocketHistory (the caller's promise); the helper reads
    // `src` safely and writes exactly that many bytes.
    let _ = unsafe { probe_read_kernel_raw(dst.cast(), core::mem::size_of::<SocketHistory>() as u32, src.cast()) };
}

/// task -> files -> fdtable -> file -> socket -> sock. Returns 0 when the fd is not a socket.
#[inline(always)]
fn sock_of_fd(ctx: &TracePointContext, fd: i32) -> u64 {
    if fd < 0 {
        return 0;
    }
    // SAFETY: a helper without arguments; the task is only read through bpf_probe_read_kernel.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read(task, global!(OFFSETS.task_files)).unwrap_or(0);
    let fdt: u64 = read(files, global!(OFFSETS.files_fdt)).unwrap_or(0);
    let Some(max_fds) = read::<u32>(fdt, global!(OFFSETS.fdtable_max_fds)) else {
        debug!(ctx, "could not read the fd table of pid {} (fd {})", current_tgid(), fd);
        return 0;
    };
    if fd as u32 >= max_fds {
        return 0;
    }
    let fd_array: u64 = read(fdt, global!(OFFSETS.fdtable_fd)).unwrap_or(0);
    let file: u64 = read(fd_array, fd as u32 * 8).unwrap_or(0);
    let inode: u64 = read(file, global!(OFFSETS.file_f_inode)).unwrap_or(0);
    let mode: u16 = read(inode, global!(OFFSETS.inode_i_mode)).unwrap_or(0);
    if mode & net::S_IFMT != net::S_IFSOCK {
        return 0;
    }
    let socket: u64 = read(file, global!(OFFSETS.file_private_data)).unwrap_or(0);
    read(socket, global!(OFFSETS.socket_sk)).unwrap_or(0)
}

/// The socket's addresses (and the rest of it) at the call's exit.
#[inline(always)]
fn read_sock(sock: &Sock) -> SockSnapshot {
    SockSnapshot {
        addrs: crate::history::read_addrs_of_family(sock.sk, sock.family),
        sock_type: sock.sock_type,
        protocol: sock.protocol,
        state: read(sock.sk, global!(OFFSETS.sk_state)).unwrap_or(0),
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
    // SAFETY: bpf_probe_read_user validates the user address and fails instead of faulting.
    let Ok(family) = (unsafe { bpf_probe_read_user(ptr as *const u16) }) else { return false };
    // SAFETY: as above.
    let Ok(port) = (unsafe { bpf_probe_read_user((ptr + 2) as *const u16) }) else { return false };
    // SAFETY: the helper writes at most the given length into `out`'s 16-byte daddr.
    let ok = unsafe {
        if family == net::AF_INET {
            probe_read_user_raw((&raw mut (*out).daddr).cast(), 4, (ptr + 4) as *const _) == 0
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
            (*out).dport = u16::from_be(port);
        }
    }
    ok
}
