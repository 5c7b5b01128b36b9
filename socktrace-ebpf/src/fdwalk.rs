//! From a traced task's fd to its socket: task -> files -> fdtable -> file -> socket -> sock,
//! with probe reads of adjacent fields taken together, and the fast path that tells a socket's
//! file and a TCP socket by their operations (`LEARNED`, learned from socktrace's own sockets).

use crate::syscalls::ExitView;
use crate::{global, read, sock_head, sock_type_protocol, ProbedSock};
use aya_ebpf::{macros::map, maps::Array, EbpfContext};
use aya_log_ebpf::debug;
use socktrace_common::{config_flags, net};

/// task -> files -> fdtable -> file -> socket -> sock, for the current task `task`
/// (`SockRef::NONE` when the fd is not a socket). Probe reads of adjacent fields go together
/// (`FDTABLE_PAIR`, `FDTAB_AFTER_FDT`, and in `sock_of_file` `FILE_OP_DATA_SPAN` and
/// `SOCKET_SK_OPS_PAIR`): each is a helper call, the bulk of what a traced process's failing
/// call costs.
#[inline(always)]
pub(crate) fn sock_of_task_fd<C: EbpfContext, V: ExitView>(ctx: &C, task: u64, fd: i32) -> SockRef {
    if fd < 0 {
        return SockRef::NONE;
    }
    let Some((max_fds, fd_array)) = V::fd_table(task) else {
        debug!(ctx, "could not read the fd table of pid {} (fd {})", crate::current_tgid(), fd);
        return SockRef::NONE;
    };
    if fd as u32 >= max_fds {
        return SockRef::NONE;
    }
    let file: u64 = read(fd_array, fd as u32 * 8).unwrap_or(0);
    sock_of_file(file)
}

/// The fd table of `files`, with probe reads: its size (`max_fds`) and its array of files.
#[inline(always)]
pub(crate) fn fd_table(files: u64) -> Option<(u32, u64)> {
    let flags = global!(CONFIG.flags);
    let fdt: u64 = if flags & config_flags::FDTAB_AFTER_FDT != 0 {
        // [fdt, fdtab.max_fds (and its padding), fdtab.fd]: a process with few fds uses the
        // table embedded in its files_struct, and the pointer says so.
        let v: [u64; 3] = read(files, global!(OFFSETS.files_fdt))?;
        if v[0] == files + global!(OFFSETS.files_fdtab) as u64 {
            return Some((v[1] as u32, v[2]));
        }
        v[0]
    } else {
        read(files, global!(OFFSETS.files_fdt))?
    };
    if flags & config_flags::FDTABLE_PAIR != 0 {
        // max_fds (a u32 and its padding), then fd.
        read::<[u64; 2]>(fdt, global!(OFFSETS.fdtable_max_fds)).map(|t| (t[0] as u32, t[1]))
    } else {
        let max_fds = read::<u32>(fdt, global!(OFFSETS.fdtable_max_fds))?;
        Some((max_fds, read(fdt, global!(OFFSETS.fdtable_fd)).unwrap_or(0)))
    }
}

/// A socket's `struct sock`, and its `proto_ops` (0 where not read).
#[derive(Clone, Copy)]
pub(crate) struct SockRef {
    pub sk: u64,
    pub ops: u64,
}

impl SockRef {
    pub const NONE: SockRef = SockRef { sk: 0, ops: 0 };
}

/// What every socket's file and every TCP socket look like, learned from TCP sockets socktrace
/// opens itself (`learn_from_own_socket`): a file is a socket exactly when its `f_op` is
/// `socket_file_ops` (every socket file is made by `sock_alloc_file`, and the kernel's own test
/// is this compare), and a socket is TCP when its `ops` are the family's `inet_stream_ops` /
/// `inet6_stream_ops` (SCTP, MPTCP and SMC have their own; TCP under kTLS or espintcp swaps
/// them, and only takes the slow path). Learned, not looked up: these are data symbols, absent
/// from kallsyms without `CONFIG_KALLSYMS_ALL`. Written only from socktrace's own sockets,
/// never from a walk of another process's files (a file can be freed and reused under a walk).
/// Zero until learned: every walk takes the slow, exact path then.
#[map]
static LEARNED: Array<Learned> = Array::with_max_entries(1, 0);

#[derive(Clone, Copy)]
#[repr(C)]
struct Learned {
    socket_file_ops: u64,
    /// By family: AF_INET, AF_INET6.
    tcp_ops: [u64; 2],
}

/// The `LEARNED` slot of a family's TCP ops.
#[inline(always)]
fn tcp_ops_slot(family: u16) -> Option<usize> {
    match family {
        net::AF_INET => Some(0),
        net::AF_INET6 => Some(1),
        _ => None,
    }
}

/// `f_op` and `private_data` of a file, in one read where they are two words apart
/// (`FILE_OP_DATA_SPAN`), else two.
#[inline(always)]
fn file_op_and_data(file: u64) -> (u64, u64) {
    if global!(CONFIG.flags) & config_flags::FILE_OP_DATA_SPAN != 0 {
        // f_op, f_mapping, private_data.
        let span: [u64; 3] = read(file, global!(OFFSETS.file_f_op)).unwrap_or([0; 3]);
        return (span[0], span[2]);
    }
    (read(file, global!(OFFSETS.file_f_op)).unwrap_or(0), read(file, global!(OFFSETS.file_private_data)).unwrap_or(0))
}

/// Whether the file's inode is a socket's: the slow test, before `LEARNED` is.
#[inline(always)]
fn inode_is_socket(file: u64) -> bool {
    let inode: u64 = read(file, global!(OFFSETS.file_f_inode)).unwrap_or(0);
    let mode: u16 = read(inode, global!(OFFSETS.inode_i_mode)).unwrap_or(0);
    mode & net::S_IFMT == net::S_IFSOCK
}

/// socket -> (sk, ops), in one read where adjacent (`SOCKET_SK_OPS_PAIR`; ops 0 otherwise).
#[inline(always)]
fn sock_and_ops(socket: u64) -> SockRef {
    if global!(CONFIG.flags) & config_flags::SOCKET_SK_OPS_PAIR != 0 {
        let pair: [u64; 2] = read(socket, global!(OFFSETS.socket_sk)).unwrap_or([0; 2]);
        return SockRef { sk: pair[0], ops: pair[1] };
    }
    SockRef { sk: read(socket, global!(OFFSETS.socket_sk)).unwrap_or(0), ops: 0 }
}

/// file -> socket -> sock, if the file is a socket's: by its `f_op` once `LEARNED`, else by
/// its inode's mode.
#[inline(always)]
pub(crate) fn sock_of_file(file: u64) -> SockRef {
    if file == 0 {
        return SockRef::NONE;
    }
    let (f_op, socket) = file_op_and_data(file);
    let known = LEARNED.get(0).map_or(0, |l| l.socket_file_ops);
    let is_socket = if known != 0 { f_op == known } else { inode_is_socket(file) };
    if !is_socket {
        return SockRef::NONE;
    }
    sock_and_ops(socket)
}

/// `sk_type` and `sk_protocol` of the socket `sock` (of the family `family`): known without a
/// read when its ops are the `LEARNED` TCP ops of that family.
#[inline(always)]
pub(crate) fn type_protocol(sock: SockRef, family: u16) -> (u16, u16) {
    if sock.ops != 0 {
        if let (Some(slot), Some(learned)) = (tcp_ops_slot(family), LEARNED.get(0)) {
            if learned.tcp_ops.get(slot) == Some(&sock.ops) {
                return (net::SOCK_STREAM, net::IPPROTO_TCP);
            }
        }
    }
    sock_type_protocol::<ProbedSock>(sock.sk)
}

/// Learns `LEARNED` from socktrace's own TCP socket on `fd`, checked the slow way: its inode is
/// a socket's, the socket points back at its file, and its sock says TCP of a known family.
#[inline(always)]
pub(crate) fn learn_from_own_socket<C: EbpfContext, V: ExitView>(ctx: &C, task: u64, fd: i32) {
    let Some(learned) = LEARNED.get_ptr_mut(0) else { return };
    let Some((max_fds, fd_array)) = V::fd_table(task) else { return };
    if fd < 0 || fd as u32 >= max_fds {
        return;
    }
    let file: u64 = read(fd_array, fd as u32 * 8).unwrap_or(0);
    if file == 0 || !inode_is_socket(file) {
        return;
    }
    let (f_op, socket) = file_op_and_data(file);
    let back: u64 = read(socket, global!(OFFSETS.socket_file)).unwrap_or(0);
    let sock = sock_and_ops(socket);
    if f_op == 0 || back != file || sock.sk == 0 {
        return;
    }
    // SAFETY: a live map value, written only here, from socktrace's own thread.
    unsafe { (*learned).socket_file_ops = f_op };
    let Some(head) = sock_head::<ProbedSock>(sock.sk) else { return };
    let (sock_type, protocol) = sock_type_protocol::<ProbedSock>(sock.sk);
    let Some(slot) = tcp_ops_slot(head.family) else { return };
    if sock.ops == 0 || sock_type != net::SOCK_STREAM || protocol != net::IPPROTO_TCP {
        return;
    }
    // SAFETY: as above.
    if let Some(ops) = unsafe { (*learned).tcp_ops.get_mut(slot) } {
        *ops = sock.ops;
    }
    debug!(ctx, "learned the socket file and TCP ops from fd {}", fd);
}
