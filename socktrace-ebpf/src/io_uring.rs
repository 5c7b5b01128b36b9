//! The io_uring door: requests that connect, accept, send and receive without a syscall of
//! their own. Two classic tracepoints (their records carry the request from about 5.19):
//! `io_uring_file_get` remembers which fd a traced process's request looked its file up by,
//! and `io_uring_complete` turns a failing request on a socket into the same `FailureEvent`
//! as a failing syscall, numbered `IO_URING_CALL_BASE + opcode`.
//!
//! Completions may run in the ring owner's io-wq workers or SQPOLL thread: those share the
//! owner's thread group (5.12+), so `-p`/`--cgroup` select them as they are, and `-c` is
//! matched against the process's name (`is_traced_process`).

use crate::{
    current_tgid, global, is_traced_process, read, read_or_zero,
    syscalls::{on_socket_failure, sock_of_file, Call},
};
use aya_ebpf::{
    macros::{map, tracepoint},
    maps::{LruHashMap, PerCpuArray},
    programs::TracePointContext,
};
use socktrace_common::{event_flags, syscall_kind, IO_URING_CALL_BASE, IO_URING_OPS, NO_FIELD};

/// A traced process's io_uring request (`struct io_kiocb` address) -> the fd its file was
/// looked up by. Requests are recycled, so a stale entry is overwritten by the next lookup;
/// the LRU bounds the rest.
#[map]
static IO_URING_FDS: LruHashMap<u64, i32> = LruHashMap::with_max_entries(4096, 0);

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
    let _ = IO_URING_FDS.insert(req, fd, 0);
    0
}

/// `io_uring:io_uring_complete(ctx, req, ..., res, ...)`: a request's result is posted.
#[tracepoint]
pub fn tp_io_uring_complete(ctx: TracePointContext) -> u32 {
    let res: i32 = record(&ctx, global!(OFFSETS.tp_io_complete_res)).unwrap_or(0);
    if res >= 0 {
        return 0;
    }
    if !is_traced_process(current_tgid()) {
        return 0;
    }
    let Some(req) = record::<u64>(&ctx, global!(OFFSETS.tp_io_complete_req)) else { return 0 };
    let opcode: u8 = read(req, global!(OFFSETS.io_kiocb_opcode)).unwrap_or(u8::MAX);
    let Some(kind) = op_kind(opcode) else { return 0 };
    let file: u64 = read(req, global!(OFFSETS.io_kiocb_file)).unwrap_or(0);
    let sk = sock_of_file(file);
    if sk == 0 {
        return 0;
    }
    let mut call =
        Call { nr: IO_URING_CALL_BASE + opcode as u32, kind, fd: -1, so_error: 0, flags: 0, user_addr: (0, 0) };
    if read::<u8>(req, global!(OFFSETS.io_kiocb_flags)).unwrap_or(0) & REQ_F_FIXED_FILE != 0 {
        call.flags |= event_flags::FIXED_FILE;
        call.fd = fixed_file_index(req, file);
    } else if let Some(fd) = IO_URING_FDS.get_ptr(req) {
        // SAFETY: a value pointer of this map, read at once.
        call.fd = unsafe { *fd };
    }
    on_socket_failure(&ctx, &call, sk, res as i64);
    0
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
