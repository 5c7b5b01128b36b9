//! Following forks (`-f`): a child forked by a traced process is traced from its first call,
//! and a process stays traced until its last thread has closed its files.

use crate::{global, read, TRACED_TGIDS};
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use socktrace_common::{
    config_flags,
    traced_tgid::{EXITED, TRACED},
};

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
    if ptgid == ctgid {
        return 0;
    }
    // SAFETY: the values are only tested for presence, never read through.
    if unsafe { TRACED_TGIDS.get(ptgid).is_some() } {
        let _ = TRACED_TGIDS.insert(ctgid, TRACED, 0);
    } else if unsafe { TRACED_TGIDS.get(ctgid).is_some() } {
        // The PID of a traced process that exited, recycled by an untraced parent: forgotten
        // before the child runs (this tracepoint fires before it is first woken).
        let _ = TRACED_TGIDS.remove(ctgid);
    }
    0
}

#[inline(always)]
fn on_exit() -> u32 {
    if global!(CONFIG.flags) & config_flags::FOLLOW_FORKS == 0 {
        return 0;
    }
    let id = bpf_get_current_pid_tgid();
    // The process is not forgotten here: this tracepoint fires before the exiting thread
    // closes its files, and the last thread's exit is where a program that returned from
    // main closes what it left open (Go's transport cancels a dial on another thread; the
    // process can exit first). The entry is marked; a fork that recycles the PID for an
    // untraced process removes it (`on_fork`).
    if id >> 32 == id & 0xffff_ffff {
        let tgid = (id >> 32) as u32;
        // SAFETY: the value is only tested for presence, never read through.
        if unsafe { TRACED_TGIDS.get(tgid).is_some() } {
            let _ = TRACED_TGIDS.insert(tgid, EXITED, 0);
        }
    }
    0
}

/// A task's last reference is gone (long after its exit): a process leader's marks the whole
/// process reaped, its files closed; forgotten, unless the PID was already recycled for a
/// traced child (then `on_fork` marked it traced again).
#[inline(always)]
fn on_free(task: u64) -> u32 {
    if global!(CONFIG.flags) & config_flags::FOLLOW_FORKS == 0 {
        return 0;
    }
    let (Some(leader), Some(tgid)) =
        (read::<u64>(task, global!(OFFSETS.task_group_leader)), read::<u32>(task, global!(OFFSETS.task_tgid)))
    else {
        return 0;
    };
    // SAFETY: the value is copied out at once.
    if leader == task && unsafe { TRACED_TGIDS.get(tgid) }.copied() == Some(EXITED) {
        let _ = TRACED_TGIDS.remove(tgid);
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

#[btf_tracepoint(function = "sched_process_free")]
#[inline(always)]
pub fn sched_process_free(ctx: BtfTracePointContext) -> u32 {
    on_free(ctx.arg(0))
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

#[raw_tracepoint(tracepoint = "sched_process_free")]
#[inline(always)]
pub fn raw_sched_process_free(ctx: RawTracePointContext) -> u32 {
    on_free(ctx.arg(0))
}
