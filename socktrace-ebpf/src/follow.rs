//! Following forks (`-f`): a child forked by a traced process is traced from its first call.

use crate::{global, read, TRACED_TGIDS};
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use socktrace_common::config_flags;

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
    // SAFETY: the value is only tested for presence, never read through.
    if ptgid != ctgid && unsafe { TRACED_TGIDS.get(ptgid).is_some() } {
        let _ = TRACED_TGIDS.insert(ctgid, 1, 0);
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
        let _ = TRACED_TGIDS.remove((id >> 32) as u32);
    }
    0
}

#[btf_tracepoint(function = "sched_process_fork")]
#[inline(always)]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> u32 {
    on_fork(ctx.arg(0), ctx.arg(1))
}

#[btf_tracepoint(function = "sched_process_exit")]
#[inline(always)]
pub fn sched_process_exit(_ctx: BtfTracePointContext) -> u32 {
    on_exit()
}

/// The classic fork record has pids, not tgids (a thread and a process look alike there):
/// the raw tracepoint's task pointers tell them apart.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
#[inline(always)]
pub fn raw_sched_process_fork(ctx: RawTracePointContext) -> u32 {
    on_fork(ctx.arg(0), ctx.arg(1))
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
#[inline(always)]
pub fn raw_sched_process_exit(_ctx: RawTracePointContext) -> u32 {
    on_exit()
}
