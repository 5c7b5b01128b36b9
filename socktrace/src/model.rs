//! The vocabulary: TCP states, errnos, syscalls and causes, with their printable names.

use serde::Serialize;
use std::fmt;

/// TCP states in the kernel's numbering (include/net/tcp_states.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TcpState {
    Established = 1,
    SynSent = 2,
    SynRecv = 3,
    FinWait1 = 4,
    FinWait2 = 5,
    TimeWait = 6,
    Close = 7,
    CloseWait = 8,
    LastAck = 9,
    Listen = 10,
    Closing = 11,
    NewSynRecv = 12,
}

impl TcpState {
    pub fn from_kernel(v: u8) -> Option<Self> {
        use TcpState::*;
        Some(match v {
            1 => Established,
            2 => SynSent,
            3 => SynRecv,
            4 => FinWait1,
            5 => FinWait2,
            6 => TimeWait,
            7 => Close,
            8 => CloseWait,
            9 => LastAck,
            10 => Listen,
            11 => Closing,
            12 => NewSynRecv,
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
    /// The process (or the system) is out of file descriptors.
    FdLimit,
    /// No local port is left for the connection (the ephemeral range is used up).
    NoLocalPort,
    /// The listener on this host did not accept fast enough: its queue was full and the
    /// kernel dropped the SYNs.
    ListenOverflow,
    /// The host is short of socket memory.
    SocketMemory,
    Unknown,
}

impl Cause {
    #[cfg(test)]
    pub const ALL: [Cause; 16] = [
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
        Cause::FdLimit,
        Cause::NoLocalPort,
        Cause::ListenOverflow,
        Cause::SocketMemory,
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
            FdLimit => "fd_limit",
            NoLocalPort => "no_local_port",
            ListenOverflow => "listen_overflow",
            SocketMemory => "socket_memory",
            Unknown => "unknown",
        }
    }

    /// Routine outcomes of non-blocking and signal-driven code: counted, shown on request.
    pub fn is_routine(self) -> bool {
        matches!(self, Cause::WouldBlock | Cause::Interrupted | Cause::InProgress)
    }

    /// The cause of a routine failure kind (`socktrace_common::routine`).
    pub fn of_routine(kind: u32) -> Cause {
        use socktrace_common::routine;
        match kind {
            routine::EAGAIN => Cause::WouldBlock,
            routine::EINTR => Cause::Interrupted,
            _ => Cause::InProgress,
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
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

/// The calls socktrace watches, named as the program called them.
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
}

impl Syscall {
    pub const ALL: [Syscall; 14] = [
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
        }
    }

    /// This architecture's syscall number.
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
        }
    }

    pub fn from_number(nr: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.number() == nr as i64)
    }

    pub fn is_receive(self) -> bool {
        use Syscall::*;
        matches!(self, Read | Readv | Recvfrom | Recvmsg | Recvmmsg)
    }

    pub fn is_connect(self) -> bool {
        self == Syscall::Connect
    }

    pub fn is_send(self) -> bool {
        use Syscall::*;
        matches!(self, Write | Writev | Sendto | Sendmsg | Sendmmsg)
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
        for s in Syscall::ALL {
            assert_eq!(Syscall::from_number(s.number() as u32), Some(s));
        }
        assert_eq!(Syscall::Connect.name(), "connect");
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
        for kind in 0..routine::KINDS {
            assert!(Cause::of_routine(kind).is_routine());
            assert_eq!(routine::kind_of(routine::errno_of(kind)), Some(kind));
        }
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
                "fd_limit",
                "no_local_port",
                "listen_overflow",
                "socket_memory",
                "unknown"
            ]
        );
        for c in Cause::ALL {
            assert_eq!(serde_json::to_value(c).unwrap(), c.code());
        }
    }
}
