//! The event ABI shared by socktrace's kernel programs and its userspace.
//!
//! Every struct here is `#[repr(C)]` with explicit padding and a size checked at compile time,
//! so the kernel side (bpfel) and userspace (x86_64 or any 64-bit host) agree byte for byte.
//! The kernel only records facts into these structs; the meaning is decided in userspace.
#![cfg_attr(not(test), no_std)]

/// The kernel's task-name buffer (`TASK_COMM_LEN`), NUL included.
pub const TASK_COMM_LEN: usize = 16;
/// The longest task name the kernel keeps (`-c` matches at most this many bytes).
pub const TASK_COMM_MAX: usize = TASK_COMM_LEN - 1;

/// How many socket histories the kernel keeps at most, as the eBPF object declares it: the
/// floor userspace sizes the map from at load (`kernel::load`), never below this. A history
/// lives as long as its socket: the map is never evicted from, and a socket that finds it full
/// gets none (`history_stats::REFUSED`). Entries are allocated as sockets come, not up front.
pub const MAX_SOCKETS: u32 = 262_144;

/// How many state transitions each socket remembers (a ring: the newest overwrite the oldest).
/// A power of two so the ring index is a mask the verifier can bound.
pub const HISTORY_TRANSITIONS: usize = 8;

/// Checks a shared struct's size at compile time (and that it has no tail padding): the
/// kernel side (bpfel) and userspace must agree byte for byte.
macro_rules! assert_size {
    ($t:ty, $n:expr) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $n);
        const _: () = assert!(core::mem::size_of::<$t>() % core::mem::align_of::<$t>() == 0);
    };
}

/// Marks a struct as plain old data for aya's maps and globals (userspace only).
macro_rules! pod {
    ($t:ty) => {
        // SAFETY: repr(C), integers and arrays of them only, no pointers: every bit pattern is
        // a valid value.
        #[cfg(feature = "user")]
        unsafe impl aya::Pod for $t {}
    };
}

mod config;
mod event;
mod socket;
mod tables;
mod vocabulary;

pub use config::*;
pub use event::*;
pub use socket::*;
pub use tables::*;
pub use vocabulary::*;

/// Ring buffer wakeups are batched: userspace is woken when this much is waiting, and
/// otherwise drains on its own timer, so a storm of failures does not cost a wakeup each.
pub const WAKEUP_BYTES: u64 = 256 * 1024;

/// A `KernelOffsets` tracepoint field this kernel's record does not have.
pub const NO_FIELD: u32 = u32::MAX;

const _: () = assert!(HISTORY_TRANSITIONS.is_power_of_two());
