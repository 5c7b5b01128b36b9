//! The kernel's own counts for socktrace's programs (`BPF_OBJ_GET_INFO_BY_FD`), above all the
//! runs it skipped. A classic tracepoint or kprobe program is not run while another BPF
//! program of that kind runs on the same CPU, nor while that CPU is inside a BPF map syscall
//! (both hold the kernel's `bpf_prog_active` guard): a timer or packet softirq that
//! interrupts one is an event the program never sees. A raw or BTF tracepoint is skipped only
//! when it would nest in itself. The kernel counts each skipped run (5.12+; tracepoints since
//! 6.7); socktrace reads the counts so that a failure it cannot explain says events were
//! missed, and the summary accounts for them.

use aya_obj::generated::bpf_prog_info;
use std::os::fd::{AsRawFd as _, BorrowedFd};

/// `BPF_OBJ_GET_INFO_BY_FD`'s command number (stable uapi).
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// What the kernel counted for one program since it was loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgramCounts {
    /// Runs the kernel skipped (recursion guard).
    pub missed: u64,
    /// Runs and their time: counted only while `kernel.bpf_stats_enabled` is on.
    pub run_count: u64,
    pub run_time_ns: u64,
}

/// The `info` member of `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
struct InfoByFd {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The counts of the program behind `fd`. Needs no privilege: the descriptor is the right.
pub fn of(fd: BorrowedFd<'_>) -> std::io::Result<ProgramCounts> {
    // SAFETY: plain data; the kernel fills at most `info_len` bytes of it.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoByFd {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<bpf_prog_info>() as u32,
        info: (&raw mut info) as u64,
    };
    // SAFETY: `attr` is a valid bpf_attr prefix of the size given, pointing at `info`, which
    // outlives the call.
    let r =
        unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, &raw mut attr, std::mem::size_of::<InfoByFd>()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ProgramCounts { missed: info.recursion_misses, run_count: info.run_cnt, run_time_ns: info.run_time_ns })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_descriptors_have_no_counts() {
        // Not a BPF program: the kernel says so, and no count is made up.
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        assert!(of(std::os::fd::AsFd::as_fd(&file)).is_err());
    }
}
