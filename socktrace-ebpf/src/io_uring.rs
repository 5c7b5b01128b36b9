//! The io_uring door: requests that connect, accept, send and receive without a syscall of
//! their own. Two events (their arguments carry the request from 5.18):
//! `io_uring_file_get` remembers which fd a traced process's request looked its file up by,
//! and `io_uring_complete` turns a failing request on a socket into the same `FailureEvent`
//! as a failing syscall, numbered `IO_URING_CALL_BASE + opcode`.
//!
//! Where the probe mode allows it and the kernel's argument layout is known (one program per
//! layout), `io_uring_complete` is a BTF tracepoint and `io_uring_file_get` a raw one: no
//! trace record is built, so a process socktrace does not trace pays only the programs' first
//! checks. Elsewhere, classic tracepoints whose records are read at offsets from their format
//! files.
//!
//! Completions may run in the ring owner's io-wq workers or SQPOLL thread: those share the
//! owner's thread group (5.12+), so `-p`/`--cgroup` select them as they are, and `-c` is
//! matched against the process's name (`is_traced_process`).

use crate::{
    current_tgid,
    fdwalk::sock_of_file,
    global, is_traced_process, read, read_or_zero,
    syscalls::{load, on_socket_failure, Call},
};
use aya_ebpf::{
    macros::{btf_tracepoint, map, raw_tracepoint, tracepoint},
    maps::{Array, PerCpuArray},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
    EbpfContext,
};
use socktrace_common::{
    event_flags, request_fd, request_fd_slot, request_fd_word, syscall_kind, RequestFd, IO_URING_CALL_BASE,
    IO_URING_FD_SLOTS, IO_URING_OPS, NO_FIELD,
};

/// A traced process's io_uring requests (`struct io_kiocb` address) and the fd each one's file
/// was looked up by, direct-mapped (see `socktrace_common::RequestFd`). Requests are recycled:
/// a stale entry is overwritten by the next lookup of a request at that address.
#[map]
static IO_URING_FDS: Array<RequestFd> = Array::with_max_entries(IO_URING_FD_SLOTS, 0);

/// `REQ_F_FIXED_FILE` (bit 0, `IOSQE_FIXED_FILE_BIT`, on every kernel with io_uring): the
/// request's file is a registered one, looked up by index.
const REQ_F_FIXED_FILE: u8 = 1;

#[inline(always)]
fn record<T>(ctx: &TracePointContext, offset: u32) -> Option<T> {
    // SAFETY: read_at goes through bpf_probe_read_kernel, which fails instead of faulting.
    unsafe { ctx.read_at::<T>(offset as usize) }.ok()
}

/// `io_uring:io_uring_file_get(req, fd)`: a request looks up its (unregistered) file by fd.
#[tracepoint]
#[inline(always)]
pub fn tp_io_uring_file_get(ctx: TracePointContext) -> u32 {
    if !is_traced_process(current_tgid()) {
        return 0;
    }
    let (Some(req), Some(fd)) = (
        record::<u64>(&ctx, global!(OFFSETS.tp_io_file_get_req)),
        record::<i32>(&ctx, global!(OFFSETS.tp_io_file_get_fd)),
    ) else {
        return 0;
    };
    on_file_get(req, fd);
    0
}

/// The same as a raw tracepoint, `io_uring_file_get(req, fd)` (5.19+): no record built, and
/// the request comes as a plain number (a BTF tracepoint would type it, and the verifier
/// allows no hashing of a typed pointer). 5.18's `(ctx, req, user_data, fd)` keeps the classic
/// tracepoint (no kernel of the test matrix has it).
#[raw_tracepoint(tracepoint = "io_uring_file_get")]
#[inline(always)]
pub fn raw_io_uring_file_get(ctx: RawTracePointContext) -> u32 {
    if is_traced_process(current_tgid()) {
        on_file_get(ctx.arg(0), ctx.arg::<u64>(1) as i32);
    }
    0
}

#[inline(always)]
fn on_file_get(req: u64, fd: i32) {
    let Some(slot) = IO_URING_FDS.get_ptr_mut(request_fd_slot(req)) else { return };
    // SAFETY: `slot` points at a map value; each word is one 8-byte store, and a reader takes
    // the fd only if both words are this request's (`request_fd`).
    unsafe {
        core::ptr::write_volatile(&raw mut (*slot).req, req);
        core::ptr::write_volatile(&raw mut (*slot).fd_check, request_fd_word(req, fd));
    }
}

/// `io_uring:io_uring_complete(ctx, req, ..., res, ...)`: a request's result is posted.
#[tracepoint]
#[inline(always)]
pub fn tp_io_uring_complete(ctx: TracePointContext) -> u32 {
    let res: i32 = record(&ctx, global!(OFFSETS.tp_io_complete_res)).unwrap_or(0);
    if res >= 0 {
        return 0;
    }
    if !is_traced_process(current_tgid()) {
        return 0;
    }
    let Some(req) = record::<u64>(&ctx, global!(OFFSETS.tp_io_complete_req)) else { return 0 };
    on_failed_request(&ctx, req, res);
    0
}

/// The same as a BTF tracepoint, `io_uring_complete(ctx, req, cqe)` (6.13+): the result is
/// read from the completion entry with a plain load the verifier checks against its type. One
/// program per layout of the arguments (see `names::IO_URING_COMPLETE_CQE`).
#[btf_tracepoint(function = "io_uring_complete")]
#[inline(always)]
pub fn btf_io_uring_complete_cqe(ctx: BtfTracePointContext) -> u32 {
    let res: i32 = load(ctx.arg::<u64>(2), global!(OFFSETS.io_uring_cqe_res));
    if res < 0 && is_traced_process(current_tgid()) {
        on_failed_request(&ctx, ctx.arg(1), res);
    }
    0
}

/// `io_uring_complete(ctx, req, user_data, res, cflags, ...)`, before (5.18-6.12).
#[btf_tracepoint(function = "io_uring_complete")]
#[inline(always)]
pub fn btf_io_uring_complete_res(ctx: BtfTracePointContext) -> u32 {
    let res: i32 = ctx.arg(3);
    if res < 0 && is_traced_process(current_tgid()) {
        on_failed_request(&ctx, ctx.arg(1), res);
    }
    0
}

/// A traced process's request `req` failed with `res`: an event if it was on a socket.
#[inline(always)]
fn on_failed_request<C: EbpfContext>(ctx: &C, req: u64, res: i32) {
    let opcode: u8 = read(req, global!(OFFSETS.io_kiocb_opcode)).unwrap_or(u8::MAX);
    let Some(kind) = op_kind(opcode) else { return };
    let file: u64 = read(req, global!(OFFSETS.io_kiocb_file)).unwrap_or(0);
    let sock = sock_of_file(file);
    if sock.sk == 0 {
        return;
    }
    let mut call =
        Call { nr: IO_URING_CALL_BASE + opcode as u32, kind, fd: -1, so_error: 0, flags: 0, user_addr: (0, 0) };
    if read::<u8>(req, global!(OFFSETS.io_kiocb_flags)).unwrap_or(0) & REQ_F_FIXED_FILE != 0 {
        call.flags |= event_flags::FIXED_FILE;
        call.fd = fixed_file_index(req, file);
    } else if let Some(slot) = IO_URING_FDS.get_ptr(request_fd_slot(req)) {
        // SAFETY: a value pointer of this map; each word read once (see `on_file_get`).
        let entry = unsafe {
            RequestFd {
                req: core::ptr::read_volatile(&raw const (*slot).req),
                fd_check: core::ptr::read_volatile(&raw const (*slot).fd_check),
            }
        };
        if let Some(fd) = request_fd(&entry, req) {
            call.fd = fd;
        }
    }
    on_socket_failure(ctx, &call, sock, res as i64);
}

/// Registered files searched for a fixed-file request's index: a bound for the verifier and
/// the failure path; a file registered beyond it has no known index.
const FIXED_FILES_SEARCHED: u32 = 64;

/// The low bits of a registered file's tagged pointer (`FFS_*` flags).
const FFS_MASK: u64 = 0x7;

/// The index of the request's registered file in its ring's table, or -1. The kernel drops
/// the index once it has the file, so the table is searched for it (only for a failing
/// request on a registered file). Straight-line reads and a last-match-wins loop without an
/// early exit: each exit of a loop would have the verifier walk the whole event path again.
#[inline(always)]
fn fixed_file_index(req: u64, file: u64) -> i32 {
    let ctx: u64 = read_or_zero(req, global!(OFFSETS.io_kiocb_ctx));
    let nr: u32 = read_or_zero(ctx, global!(OFFSETS.io_ctx_files_nr));
    let table: u64 = read_or_zero(ctx, global!(OFFSETS.io_ctx_files));
    // The node layout compares node pointers; the older one tagged file pointers. Both
    // tables are arrays of 8-byte entries.
    let nodes = global!(OFFSETS.io_fixed_files_nodes) == 1;
    let want: u64 = if nodes { read_or_zero(req, global!(OFFSETS.io_kiocb_file_node)) } else { file };
    let mask = if nodes { u64::MAX } else { !FFS_MASK };
    if table == 0 || want == 0 || global!(OFFSETS.io_kiocb_ctx) == NO_FIELD {
        return -1;
    }
    let Some(slot) = FIXED_INDEX.get_ptr_mut(0) else { return -1 };
    // SAFETY: a per-CPU slot: no other writer while this program runs on this CPU.
    unsafe { core::ptr::write_volatile(slot, -1) };
    let mut i: u32 = 0;
    while i < FIXED_FILES_SEARCHED {
        let entry: u64 = read_or_zero(table, 8 * i);
        if i < nr && entry & mask == want {
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile(slot, i as i32) };
        }
        i += 1;
    }
    // Read back from the map: an unknown number to the verifier, so every way out of the
    // loop is one state, and the event path after it is walked once.
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(slot) }
}

/// The fixed-file search's result, per CPU (see `fixed_file_index`).
#[map]
static FIXED_INDEX: PerCpuArray<i32> = PerCpuArray::with_max_entries(1, 0);

/// How an opcode is watched (`TracedConfig::io_uring_kinds`), if it is.
#[inline(always)]
fn op_kind(opcode: u8) -> Option<u8> {
    let kind = crate::table_byte((&raw const crate::CONFIG.io_uring_kinds).cast(), opcode as u64, IO_URING_OPS as u64)?;
    (kind != syscall_kind::NONE).then_some(kind)
}
