//! The vocabulary: TCP states, errnos, syscalls and causes, with their printable names.

use serde::Serialize;
use std::fmt;

/// TCP states in the kernel's numbering (include/net/tcp_states.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TcpState {
    Established = socktrace_common::tcp_state::ESTABLISHED as isize,
    SynSent = socktrace_common::tcp_state::SYN_SENT as isize,
    SynRecv = socktrace_common::tcp_state::SYN_RECV as isize,
    FinWait1 = socktrace_common::tcp_state::FIN_WAIT1 as isize,
    FinWait2 = socktrace_common::tcp_state::FIN_WAIT2 as isize,
    TimeWait = socktrace_common::tcp_state::TIME_WAIT as isize,
    Close = socktrace_common::tcp_state::CLOSE as isize,
    CloseWait = socktrace_common::tcp_state::CLOSE_WAIT as isize,
    LastAck = socktrace_common::tcp_state::LAST_ACK as isize,
    Listen = socktrace_common::tcp_state::LISTEN as isize,
    Closing = socktrace_common::tcp_state::CLOSING as isize,
    NewSynRecv = socktrace_common::tcp_state::NEW_SYN_RECV as isize,
}

impl TcpState {
    pub fn from_kernel(v: u8) -> Option<Self> {
        use socktrace_common::tcp_state as k;
        use TcpState::*;
        Some(match v {
            k::ESTABLISHED => Established,
            k::SYN_SENT => SynSent,
            k::SYN_RECV => SynRecv,
            k::FIN_WAIT1 => FinWait1,
            k::FIN_WAIT2 => FinWait2,
            k::TIME_WAIT => TimeWait,
            k::CLOSE => Close,
            k::CLOSE_WAIT => CloseWait,
            k::LAST_ACK => LastAck,
            k::LISTEN => Listen,
            k::CLOSING => Closing,
            k::NEW_SYN_RECV => NewSynRecv,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        use TcpState::*;
        match self {
            Established => "ESTABLISHED",
            SynSent => "SYN_SENT",
            SynRecv => "SYN_RECV",
            FinWait1 => "FIN_WAIT1",
            FinWait2 => "FIN_WAIT2",
            TimeWait => "TIME_WAIT",
            Close => "CLOSE",
            CloseWait => "CLOSE_WAIT",
            LastAck => "LAST_ACK",
            Listen => "LISTEN",
            Closing => "CLOSING",
            NewSynRecv => "NEW_SYN_RECV",
        }
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a call failed: the one vocabulary of the text and JSON outputs. Never renamed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Cause {
    RstReceived,
    RstSent,
    IcmpError,
    NoRoute,
    Timeout,
    PeerFin,
    LocalShutdown,
    Aborted,
    WouldBlock,
    Interrupted,
    InProgress,
    /// An io_uring request was cancelled (or its timeout expired): the program's own doing.
    Cancelled,
    /// The process (or the system) is out of file descriptors.
    FdLimit,
    /// No local port is left for the connection (the ephemeral range is used up).
    NoLocalPort,
    /// The listener on this host did not accept fast enough: its queue was full and the
    /// kernel dropped the SYNs.
    ListenOverflow,
    /// The host is short of socket memory.
    SocketMemory,
    /// The application gave up on a connect no SYN-ACK answered (its own connect timeout).
    AbandonedConnect,
    /// The application ended a connection whose peer acknowledged everything and sent nothing
    /// back (its own read timeout).
    AbandonedNoReply,
    /// The application ended a connection whose data the peer had stopped acknowledging.
    AbandonedUnacked,
    /// The application ended a connection whose peer had closed its window (stopped reading).
    AbandonedZeroWindow,
    /// A connect the application dropped because another one to the same service was
    /// established first (Happy Eyeballs): routine.
    Superseded,
    /// A connect the application closed within 1 ms of starting it, before any retransmission:
    /// too soon to say the peer did not answer. Routine, counted in the kernel.
    ClosedAtOnce,
    Unknown,
}

impl Cause {
    #[cfg(test)]
    pub const ALL: [Cause; 23] = [
        Cause::RstReceived,
        Cause::RstSent,
        Cause::IcmpError,
        Cause::NoRoute,
        Cause::Timeout,
        Cause::PeerFin,
        Cause::LocalShutdown,
        Cause::Aborted,
        Cause::WouldBlock,
        Cause::Interrupted,
        Cause::InProgress,
        Cause::Cancelled,
        Cause::FdLimit,
        Cause::NoLocalPort,
        Cause::ListenOverflow,
        Cause::SocketMemory,
        Cause::AbandonedConnect,
        Cause::AbandonedNoReply,
        Cause::AbandonedUnacked,
        Cause::AbandonedZeroWindow,
        Cause::Superseded,
        Cause::ClosedAtOnce,
        Cause::Unknown,
    ];

    pub fn code(self) -> &'static str {
        use Cause::*;
        match self {
            RstReceived => "rst_received",
            RstSent => "rst_sent",
            IcmpError => "icmp_error",
            NoRoute => "no_route",
            Timeout => "timeout",
            PeerFin => "peer_fin",
            LocalShutdown => "local_shutdown",
            Aborted => "aborted",
            WouldBlock => "would_block",
            Interrupted => "interrupted",
            InProgress => "in_progress",
            Cancelled => "cancelled",
            FdLimit => "fd_limit",
            NoLocalPort => "no_local_port",
            ListenOverflow => "listen_overflow",
            SocketMemory => "socket_memory",
            AbandonedConnect => "abandoned_connect",
            AbandonedNoReply => "abandoned_no_reply",
            AbandonedUnacked => "abandoned_unacked",
            AbandonedZeroWindow => "abandoned_zero_window",
            Superseded => "superseded",
            ClosedAtOnce => "closed_at_once",
            Unknown => "unknown",
        }
    }

    /// Routine outcomes of non-blocking and signal-driven code: counted, shown on request.
    pub fn is_routine(self) -> bool {
        matches!(
            self,
            Cause::WouldBlock
                | Cause::Interrupted
                | Cause::InProgress
                | Cause::Cancelled
                | Cause::Superseded
                | Cause::ClosedAtOnce
        )
    }

    /// The cause of a routine failure kind (`socktrace_common::routine`).
    pub fn of_routine(kind: u32) -> Cause {
        use socktrace_common::routine;
        match kind {
            routine::EAGAIN => Cause::WouldBlock,
            routine::EINTR => Cause::Interrupted,
            routine::ECANCELED | routine::ETIME => Cause::Cancelled,
            routine::SEND_MEMORY => Cause::SocketMemory,
            routine::CLOSED_AT_ONCE => Cause::ClosedAtOnce,
            _ => Cause::InProgress,
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// RFC 792 / RFC 4443 names of the errors that carry the offending packet.
pub fn icmp_message(v6: bool, icmp_type: u8, code: u8) -> &'static str {
    match (v6, icmp_type, code) {
        (false, 3, 0) => "net unreachable",
        (false, 3, 1) => "host unreachable",
        (false, 3, 2) => "protocol unreachable",
        (false, 3, 3) => "port unreachable",
        (false, 3, 4) => "fragmentation needed",
        (false, 3, 6) => "destination network unknown",
        (false, 3, 7) => "destination host unknown",
        (false, 3, 9 | 10 | 13) => "communication administratively prohibited",
        (false, 3, _) => "destination unreachable",
        (false, 11, _) => "time exceeded (TTL)",
        (false, 12, _) => "parameter problem",
        (true, 1, 0) => "no route to destination",
        (true, 1, 1) => "communication administratively prohibited",
        (true, 1, 3) => "address unreachable",
        (true, 1, 4) => "port unreachable",
        (true, 1, 5 | 6) => "rejected by policy",
        (true, 1, _) => "destination unreachable",
        (true, 2, _) => "packet too big",
        (true, 3, _) => "time exceeded (hop limit)",
        (true, 4, _) => "parameter problem",
        _ => "error",
    }
}

/// Errno values (the shared vocabulary of `socktrace_common::errno`) with their names.
pub mod errno {
    pub use socktrace_common::errno::*;

    /// The name of an errno ("ECONNREFUSED"), including the kernel-internal restart codes
    /// that tracepoints can see.
    pub fn name(e: i32) -> String {
        match e {
            512 => "ERESTARTSYS".into(),
            513 => "ERESTARTNOINTR".into(),
            514 => "ERESTARTNOHAND".into(),
            515 => "ENOIOCTLCMD".into(),
            516 => "ERESTART_RESTARTBLOCK".into(),
            _ => {
                let errno = nix::errno::Errno::from_raw(e);
                if errno == nix::errno::Errno::UnknownErrno {
                    format!("E{e}")
                } else {
                    format!("{errno:?}")
                }
            }
        }
    }
}

/// The calls socktrace watches, named as the program called them: syscalls, and io_uring
/// requests (which fail without a syscall of their own).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Syscall {
    Read,
    Write,
    Readv,
    Writev,
    Recvfrom,
    Sendto,
    Recvmsg,
    Sendmsg,
    Recvmmsg,
    Sendmmsg,
    Accept,
    Accept4,
    Connect,
    Getsockopt,
    /// `sendfile` (`sendfile64` is the same call on 64-bit): the socket is the output.
    Sendfile,
    /// `splice`: the socket is either end (`Failure::socket_is_source` says which).
    Splice,
    Shutdown,
    /// `socket`: only its failures for want of descriptors (EMFILE, ENFILE).
    Socket,
    IoUring(IoUringOp),
}

/// The io_uring requests socktrace watches on sockets (`IORING_OP_*`, the UAPI numbering).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoUringOp {
    Readv = 1,
    Writev = 2,
    ReadFixed = 4,
    WriteFixed = 5,
    Sendmsg = 9,
    Recvmsg = 10,
    Accept = 13,
    Connect = 16,
    Read = 22,
    Write = 23,
    Send = 26,
    Recv = 27,
    Splice = 30,
    Shutdown = 34,
    SendZc = 47,
    SendmsgZc = 48,
}

/// How a call moves data, which decides what its errors and results mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Receive,
    Send,
    Connect,
    Accept,
    Other,
}

impl IoUringOp {
    pub const ALL: [IoUringOp; 16] = [
        IoUringOp::Readv,
        IoUringOp::Writev,
        IoUringOp::ReadFixed,
        IoUringOp::WriteFixed,
        IoUringOp::Sendmsg,
        IoUringOp::Recvmsg,
        IoUringOp::Accept,
        IoUringOp::Connect,
        IoUringOp::Read,
        IoUringOp::Write,
        IoUringOp::Send,
        IoUringOp::Recv,
        IoUringOp::Splice,
        IoUringOp::Shutdown,
        IoUringOp::SendZc,
        IoUringOp::SendmsgZc,
    ];

    pub fn opcode(self) -> u8 {
        self as u8
    }

    pub fn from_opcode(op: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.opcode() as u32 == op)
    }

    pub fn direction(self) -> Direction {
        use IoUringOp::*;
        match self {
            Readv | ReadFixed | Recvmsg | Read | Recv => Direction::Receive,
            // The request's file is splice's output end.
            Writev | WriteFixed | Sendmsg | Write | Send | SendZc | SendmsgZc | Splice => Direction::Send,
            Accept => Direction::Accept,
            Connect => Direction::Connect,
            Shutdown => Direction::Other,
        }
    }
}

impl Syscall {
    /// The syscalls (io_uring requests are in `IoUringOp::ALL`).
    pub const ALL: [Syscall; 18] = [
        Syscall::Read,
        Syscall::Write,
        Syscall::Readv,
        Syscall::Writev,
        Syscall::Recvfrom,
        Syscall::Sendto,
        Syscall::Recvmsg,
        Syscall::Sendmsg,
        Syscall::Recvmmsg,
        Syscall::Sendmmsg,
        Syscall::Accept,
        Syscall::Accept4,
        Syscall::Connect,
        Syscall::Getsockopt,
        Syscall::Sendfile,
        Syscall::Splice,
        Syscall::Shutdown,
        Syscall::Socket,
    ];

    pub fn name(self) -> &'static str {
        use Syscall::*;
        match self {
            Read => "read",
            Write => "write",
            Readv => "readv",
            Writev => "writev",
            Recvfrom => "recvfrom",
            Sendto => "sendto",
            Recvmsg => "recvmsg",
            Sendmsg => "sendmsg",
            Recvmmsg => "recvmmsg",
            Sendmmsg => "sendmmsg",
            Accept => "accept",
            Accept4 => "accept4",
            Connect => "connect",
            Getsockopt => "getsockopt",
            Sendfile => "sendfile",
            Splice => "splice",
            Shutdown => "shutdown",
            Socket => "socket",
            // As liburing names the requests (`io_uring_prep_recv`).
            IoUring(op) => match op {
                IoUringOp::Readv => "io_uring:readv",
                IoUringOp::Writev => "io_uring:writev",
                IoUringOp::ReadFixed => "io_uring:read_fixed",
                IoUringOp::WriteFixed => "io_uring:write_fixed",
                IoUringOp::Sendmsg => "io_uring:sendmsg",
                IoUringOp::Recvmsg => "io_uring:recvmsg",
                IoUringOp::Accept => "io_uring:accept",
                IoUringOp::Connect => "io_uring:connect",
                IoUringOp::Read => "io_uring:read",
                IoUringOp::Write => "io_uring:write",
                IoUringOp::Send => "io_uring:send",
                IoUringOp::Recv => "io_uring:recv",
                IoUringOp::Splice => "io_uring:splice",
                IoUringOp::Shutdown => "io_uring:shutdown",
                IoUringOp::SendZc => "io_uring:send_zc",
                IoUringOp::SendmsgZc => "io_uring:sendmsg_zc",
            },
        }
    }

    /// This architecture's syscall number; for an io_uring request, the number its events
    /// carry (`IO_URING_CALL_BASE + opcode`).
    pub fn number(self) -> i64 {
        use Syscall::*;
        match self {
            Read => libc::SYS_read,
            Write => libc::SYS_write,
            Readv => libc::SYS_readv,
            Writev => libc::SYS_writev,
            Recvfrom => libc::SYS_recvfrom,
            Sendto => libc::SYS_sendto,
            Recvmsg => libc::SYS_recvmsg,
            Sendmsg => libc::SYS_sendmsg,
            Recvmmsg => libc::SYS_recvmmsg,
            Sendmmsg => libc::SYS_sendmmsg,
            Accept => libc::SYS_accept,
            Accept4 => libc::SYS_accept4,
            Connect => libc::SYS_connect,
            Getsockopt => libc::SYS_getsockopt,
            Sendfile => libc::SYS_sendfile,
            Splice => libc::SYS_splice,
            Shutdown => libc::SYS_shutdown,
            Socket => libc::SYS_socket,
            IoUring(op) => (socktrace_common::IO_URING_CALL_BASE + op.opcode() as u32) as i64,
        }
    }

    pub fn from_number(nr: u32) -> Option<Self> {
        if let Some(op) = nr.checked_sub(socktrace_common::IO_URING_CALL_BASE) {
            return IoUringOp::from_opcode(op).map(Syscall::IoUring);
        }
        Self::ALL.into_iter().find(|s| s.number() == nr as i64)
    }

    pub fn direction(self) -> Direction {
        use Syscall::*;
        match self {
            Read | Readv | Recvfrom | Recvmsg | Recvmmsg => Direction::Receive,
            // splice from a socket is told apart by the event (`socket_is_source`).
            Write | Writev | Sendto | Sendmsg | Sendmmsg | Sendfile | Splice => Direction::Send,
            Accept | Accept4 => Direction::Accept,
            Connect => Direction::Connect,
            Getsockopt | Shutdown | Socket => Direction::Other,
            IoUring(op) => op.direction(),
        }
    }

    pub fn is_receive(self) -> bool {
        self.direction() == Direction::Receive
    }

    pub fn is_connect(self) -> bool {
        self.direction() == Direction::Connect
    }

    pub fn is_send(self) -> bool {
        self.direction() == Direction::Send
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names() {
        assert_eq!(errno::name(111), "ECONNREFUSED");
        assert_eq!(errno::name(104), "ECONNRESET");
        assert_eq!(errno::name(32), "EPIPE");
        assert_eq!(errno::name(11), "EAGAIN");
        assert_eq!(errno::name(512), "ERESTARTSYS");
        assert_eq!(errno::name(9999), "E9999");
    }

    #[test]
    fn syscall_numbers_round_trip() {
        for s in Syscall::ALL.into_iter().chain(IoUringOp::ALL.map(Syscall::IoUring)) {
            assert_eq!(Syscall::from_number(s.number() as u32), Some(s));
        }
        assert_eq!(Syscall::Connect.name(), "connect");
        assert_eq!(Syscall::IoUring(IoUringOp::Recv).name(), "io_uring:recv");
        // The UAPI numbering (include/uapi/linux/io_uring.h).
        assert_eq!(IoUringOp::Connect.opcode(), 16);
        assert_eq!(IoUringOp::SendmsgZc.opcode(), 48);
        assert_eq!(Syscall::from_number(socktrace_common::IO_URING_CALL_BASE), None, "NOP is not watched");
    }

    #[test]
    fn state_names_round_trip() {
        for v in 1..=12u8 {
            let s = TcpState::from_kernel(v).unwrap();
            assert_eq!(s as u8, v);
        }
        assert_eq!(TcpState::from_kernel(2).unwrap().name(), "SYN_SENT");
        assert_eq!(TcpState::from_kernel(0), None);
    }

    #[test]
    fn every_routine_kind_is_a_routine_cause_of_its_errno() {
        use socktrace_common::routine;
        let failed_calls = |&k: &u32| k != routine::SEND_MEMORY && k != routine::CLOSED_AT_ONCE;
        for kind in (0..routine::KINDS).filter(failed_calls) {
            assert!(Cause::of_routine(kind).is_routine());
            assert_eq!(routine::kind_of(routine::errno_of(kind)), Some(kind));
        }
        // Counted by the kernel like EAGAIN, but for want of memory: not routine.
        assert_eq!(Cause::of_routine(routine::SEND_MEMORY), Cause::SocketMemory);
        assert_eq!(routine::errno_of(routine::SEND_MEMORY), errno::EAGAIN);
        // A socket closed at once: routine, and no call failed.
        assert_eq!(Cause::of_routine(routine::CLOSED_AT_ONCE), Cause::ClosedAtOnce);
        assert!(Cause::ClosedAtOnce.is_routine());
        assert_eq!(routine::errno_of(routine::CLOSED_AT_ONCE), 0);
        for e in [errno::EINTR, errno::ERESTARTSYS, errno::ERESTART_RESTARTBLOCK] {
            assert_eq!(routine::kind_of(e), Some(routine::EINTR));
        }
        assert_eq!(routine::kind_of(errno::ECONNRESET), None);
    }

    #[test]
    fn cause_codes_are_the_documented_vocabulary() {
        let codes: Vec<_> = Cause::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(
            codes,
            [
                "rst_received",
                "rst_sent",
                "icmp_error",
                "no_route",
                "timeout",
                "peer_fin",
                "local_shutdown",
                "aborted",
                "would_block",
                "interrupted",
                "in_progress",
                "cancelled",
                "fd_limit",
                "no_local_port",
                "listen_overflow",
                "socket_memory",
                "abandoned_connect",
                "abandoned_no_reply",
                "abandoned_unacked",
                "abandoned_zero_window",
                "superseded",
                "closed_at_once",
                "unknown"
            ]
        );
        for c in Cause::ALL {
            assert_eq!(serde_json::to_value(c).unwrap(), c.code());
        }
    }
}
