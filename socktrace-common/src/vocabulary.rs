//! The numbers both sides name things by: socket families and types, TCP states and flags,
//! errnos, and the routine outcomes the kernel counts instead of sending.

/// Socket families, types and protocols, and the file-mode bits that tell a socket inode.
pub mod net {
    pub const AF_UNIX: u16 = 1;
    pub const AF_INET: u16 = 2;
    pub const AF_INET6: u16 = 10;
    pub const SOCK_STREAM: u16 = 1;
    pub const SOCK_DGRAM: u16 = 2;
    pub const IPPROTO_TCP: u16 = 6;
    pub const IPPROTO_UDP: u16 = 17;
    pub const SOL_SOCKET: u64 = 1;
    pub const SO_ERROR: u64 = 4;
    pub const S_IFMT: u16 = 0o170000;
    pub const S_IFSOCK: u16 = 0o140000;
    /// `sk_shutdown` bits.
    pub const RCV_SHUTDOWN: u8 = 1;
    pub const SEND_SHUTDOWN: u8 = 2;

    /// A TCP socket of the internet families: the sockets whose causes socktrace explains.
    #[inline(always)]
    pub const fn is_tcp(family: u16, sock_type: u16, protocol: u16) -> bool {
        protocol == IPPROTO_TCP && sock_type == SOCK_STREAM && (family == AF_INET || family == AF_INET6)
    }
}

/// TCP states in the kernel's numbering (`include/net/tcp_states.h`): the one definition the
/// kernel programs, the socket-diagnostics reader and the userspace model share.
pub mod tcp_state {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT1: u8 = 4;
    pub const FIN_WAIT2: u8 = 5;
    pub const TIME_WAIT: u8 = 6;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const LISTEN: u8 = 10;
    pub const CLOSING: u8 = 11;
    pub const NEW_SYN_RECV: u8 = 12;
    /// The highest state number.
    pub const MAX: u8 = NEW_SYN_RECV;
}

/// The TCP header's flag bits (byte 13 of the header), as the RST and drop records keep them.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

/// Linux errno values socktrace reasons about (the generic numbering x86_64 and arm64 share).
pub mod errno {
    pub const EINTR: i32 = 4;
    pub const EBADF: i32 = 9;
    pub const EAGAIN: i32 = 11;
    pub const ENOMEM: i32 = 12;
    pub const EACCES: i32 = 13;
    pub const ENFILE: i32 = 23;
    pub const EMFILE: i32 = 24;
    pub const EPIPE: i32 = 32;
    pub const ETIME: i32 = 62;
    pub const ENONET: i32 = 64;
    pub const EPROTO: i32 = 71;
    pub const EADDRINUSE: i32 = 98;
    pub const EADDRNOTAVAIL: i32 = 99;
    pub const ENETUNREACH: i32 = 101;
    pub const ECONNABORTED: i32 = 103;
    pub const ECONNRESET: i32 = 104;
    pub const ENOBUFS: i32 = 105;
    pub const ENOTCONN: i32 = 107;
    pub const ETIMEDOUT: i32 = 110;
    pub const ECONNREFUSED: i32 = 111;
    pub const EHOSTDOWN: i32 = 112;
    pub const EHOSTUNREACH: i32 = 113;
    pub const EALREADY: i32 = 114;
    pub const EINPROGRESS: i32 = 115;
    pub const ECANCELED: i32 = 125;
    /// Kernel-internal restart codes (ERESTARTSYS ..= ERESTART_RESTARTBLOCK); the program
    /// sees EINTR, or a transparently restarted call.
    pub const ERESTARTSYS: i32 = 512;
    pub const ERESTART_RESTARTBLOCK: i32 = 516;

    #[inline(always)]
    pub const fn is_restart(e: i32) -> bool {
        e >= ERESTARTSYS && e <= ERESTART_RESTARTBLOCK
    }
}

/// Routine failures: the everyday outcomes of non-blocking and signal-driven code, which the
/// kernel counts instead of sending (unless `--all-errors`). The one place they are defined:
/// the kernel counts by `kind_of`, the summary and the diagnosis name them from it.
pub mod routine {
    use super::errno;

    pub const EAGAIN: u32 = 0;
    /// EINTR and the kernel's restart codes (ERESTARTSYS..ERESTART_RESTARTBLOCK).
    pub const EINTR: u32 = 1;
    pub const EINPROGRESS: u32 = 2;
    pub const EALREADY: u32 = 3;
    /// An io_uring request cancelled (IORING_OP_ASYNC_CANCEL, a ring torn down, or a linked
    /// timeout that fired first).
    pub const ECANCELED: u32 = 4;
    /// An io_uring timeout that expired.
    pub const ETIME: u32 = 5;
    /// EAGAIN from a send on a TCP socket while TCP's memory was over its hard limit
    /// (`tcp_mem[2]`): counted apart from the routine full buffer (cause socket_memory).
    pub const SEND_MEMORY: u32 = 6;
    /// A connect its process closed within `CLOSED_AT_ONCE_NS` of starting it, before any
    /// retransmission: no call failed, and too soon to say that the peer did not answer (a
    /// port scan, a probe, a program that gave up on purpose). Counted, not sent.
    pub const CLOSED_AT_ONCE: u32 = 7;
    pub const KINDS: u32 = 8;
    /// How soon after its SYN a closed connect is `CLOSED_AT_ONCE`: 1 ms, under the round trip
    /// to most peers beyond this host and far under any connect timeout a program sets.
    pub const CLOSED_AT_ONCE_NS: u64 = 1_000_000;
    /// The index into `ROUTINE_COUNTS` is `kind * STATES + tcp_state`; TCP states are 1..=12
    /// and 0 is "not TCP" (other sockets, with --all-sockets).
    pub const STATES: u32 = 16;

    /// The routine kind of a (positive) errno, if it is one.
    #[inline(always)]
    pub const fn kind_of(e: i32) -> Option<u32> {
        match e {
            errno::EAGAIN => Some(EAGAIN),
            errno::EINTR => Some(EINTR),
            _ if errno::is_restart(e) => Some(EINTR),
            errno::EINPROGRESS => Some(EINPROGRESS),
            errno::EALREADY => Some(EALREADY),
            errno::ECANCELED => Some(ECANCELED),
            errno::ETIME => Some(ETIME),
            _ => None,
        }
    }

    /// The errno a kind is counted under.
    pub const fn errno_of(kind: u32) -> i32 {
        match kind {
            EAGAIN => errno::EAGAIN,
            EINTR => errno::EINTR,
            EINPROGRESS => errno::EINPROGRESS,
            ECANCELED => errno::ECANCELED,
            ETIME => errno::ETIME,
            SEND_MEMORY => errno::EAGAIN,
            // No call failed.
            CLOSED_AT_ONCE => 0,
            _ => errno::EALREADY,
        }
    }
}
