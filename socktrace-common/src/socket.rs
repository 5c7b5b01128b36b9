//! What the kernel keeps per socket: its addresses, its state changes and the TCP events that
//! hit it (`SocketHistory`), and the listeners it has seen.

use crate::{HISTORY_TRANSITIONS, TASK_COMM_LEN};

/// A listening socket: its network namespace and port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerKey {
    /// `struct net` address of the socket's namespace.
    pub net: u64,
    pub port: u16,
    pub _pad: [u16; 3],
}
assert_size!(ListenerKey, 16);
pod!(ListenerKey);

/// What the kernel keeps of a listening socket (`LISTENERS`, keyed by `ListenerKey`): the
/// socket, who called listen(), and whether it is a traced process's (then the connections it
/// accepts belong to that process from their first state, SYN_RECV).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerInfo {
    pub sk: u64,
    /// The process that called listen(); 0 when not known (a listener older than the trace).
    pub tgid: u32,
    pub traced: u8,
    pub _pad: [u8; 3],
    pub comm: [u8; TASK_COMM_LEN],
}
assert_size!(ListenerInfo, 32);
pod!(ListenerInfo);

/// The first 20 bytes of `struct sock_common` on every kernel since 4.x: `skc_addrpair`,
/// `skc_hash`, `skc_portpair`, `skc_family`, `skc_state` (userspace checks the offsets against
/// BTF and sets `SOCK_HEAD` only when they match).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockHead {
    pub daddr: [u8; 4],
    pub rcv_saddr: [u8; 4],
    pub hash: u32,
    /// Network order.
    pub dport: u16,
    /// Host order.
    pub num: u16,
    pub family: u16,
    pub state: u8,
    pub _pad: u8,
}
assert_size!(SockHead, 20);

impl SockHead {
    /// Where each field sits: (daddr, rcv_saddr, dport, num, family, state).
    pub const OFFSETS: (u32, u32, u32, u32, u32, u32) = (0, 4, 12, 14, 16, 18);
}

/// Addresses and ports of a socket. Ports in host byte order; addresses in network order,
/// IPv4 in the first 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockAddrs {
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub _pad: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}
assert_size!(SockAddrs, 40);
pod!(SockAddrs);

/// What was read from a `struct sock` at one moment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockSnapshot {
    pub addrs: SockAddrs,
    pub sock_type: u16,
    pub protocol: u16,
    /// `sk_state` (TCP_* numbering).
    pub state: u8,
    /// `sk_shutdown` (RCV_SHUTDOWN = 1, SEND_SHUTDOWN = 2).
    pub shutdown: u8,
    pub _pad: [u8; 2],
}
assert_size!(SockSnapshot, 48);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transition {
    pub ts_ns: u64,
    pub old_state: u8,
    pub new_state: u8,
    /// 1 when the transition ran in the context of a traced process (e.g. connect, close).
    pub in_traced_task: u8,
    pub _pad: [u8; 5],
}
assert_size!(Transition, 16);

/// An event at one moment on one socket: when, and the TCP state the socket had then.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StampedState {
    /// 0 when the event never happened.
    pub ts_ns: u64,
    pub state: u8,
    pub _pad: [u8; 3],
    /// Event-specific value: errno for an error report, reason for a sent reset; for an RST
    /// received in SYN_SENT, the socket's `snd_una`, its SYN's sequence number (0: not read).
    pub value: i32,
    /// The task on the CPU when the event ran (often not the socket's owner: softirq).
    pub current_tgid: u32,
    /// With `--kstack`: the kernel stack at the event, as its id in `STACKS` plus one (0: none).
    pub stack: u32,
}
assert_size!(StampedState, 24);

/// `SocketHistory::origin`: how socktrace came to keep a socket's history.
pub mod history_origin {
    /// A traced process changed its state (connect, listen, shutdown, close).
    pub const TRACED_TASK: u32 = 0;
    /// Accepted through a traced process's listener.
    pub const TRACED_LISTENER: u32 = 1;
    /// Open in a traced process when socktrace attached (adopted).
    pub const ADOPTED: u32 = 2;
    /// A traced process's call failed on it and nothing was known before.
    pub const FAILED_CALL: u32 = 3;
    /// Everything is traced (no selector): any event on any TCP socket.
    pub const ANY: u32 = 4;
}

/// What the kernel remembers about one socket, keyed by its `struct sock` address. Filled from
/// any context (softirq included): attribution goes through the socket, not the current task.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketHistory {
    pub transitions: [Transition; HISTORY_TRANSITIONS],
    /// Transitions ever recorded; the newest is at `(n_transitions - 1) % HISTORY_TRANSITIONS`.
    pub n_transitions: u32,
    /// How the history began (`history_origin`).
    pub origin: u32,
    /// The process that started it from its own call (connect, listen, ...); 0 when it began
    /// elsewhere (a traced listener's connection, adoption, softirq).
    pub owner_tgid: u32,
    pub retransmits: u32,
    pub last_retransmit_ns: u64,
    /// `tcp:tcp_receive_reset`: an RST arrived; `state` is the state before it was handled.
    pub rst_received: StampedState,
    /// `tcp:tcp_send_reset`: this socket sent an RST; `value` is the reason when known.
    pub rst_sent: StampedState,
    /// `sock:inet_sk_error_report`: `sk_err` was set; `value` is the (positive) errno.
    pub error_report: StampedState,
    /// The snapshot of a socket adopted at attach (open before the trace): its state then, and
    /// `value` the error pending on it (`sk_err`, 0 for none), read without consuming it.
    pub at_attach: StampedState,
    /// For an adopted socket: how long before the attach it last sent data (`lsndtime`) and
    /// last received data (`icsk_ack.lrcvtime`), in jiffies; `u32::MAX`: not known.
    pub at_attach_sent_ago: u32,
    pub at_attach_received_ago: u32,
    /// The most complete addresses seen on this socket (ports are cleared by the kernel when
    /// a socket closes, so the last non-empty ones are kept).
    pub addrs: SockAddrs,
    /// The RST segment behind `rst_received`, where the kernel shows it (`tcp_reset`'s skb).
    pub rst_segment: RstSegment,
    /// When the first retransmission was sent (0: none): how long a timeout retransmitted.
    pub first_retransmit_ns: u64,
}
assert_size!(SocketHistory, 16 * HISTORY_TRANSITIONS + 24 + 4 * 24 + 8 + 40 + 24 + 8);
pod!(SocketHistory);

/// An RST segment as `tcp_reset` received it, with the receiving socket's sequence space at
/// that moment: what tells an aborting peer from one that no longer knows the connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RstSegment {
    /// The segment's sequence and acknowledgement numbers (host order).
    pub seq: u32,
    pub ack_seq: u32,
    /// The socket's `rcv_nxt`, `snd_nxt` and `snd_una` when the RST arrived.
    pub rcv_nxt: u32,
    pub snd_nxt: u32,
    pub snd_una: u32,
    /// The TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10).
    pub flags: u8,
    /// 1 when the segment was read.
    pub seen: u8,
    pub _pad: [u8; 2],
}
assert_size!(RstSegment, 24);

/// A process and a destination port: the key of `CONNECTED`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectKey {
    pub tgid: u32,
    /// Host order.
    pub port: u16,
    pub _pad: u16,
}
assert_size!(ConnectKey, 8);
pod!(ConnectKey);

/// The last connect of a traced process to a port that was established (`CONNECTED`): when,
/// and to which address. What tells a connect that lost a race (Happy Eyeballs: another
/// address of the same name answered first) from one that was given up on, and a refusal the
/// program's fallback recovered from.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectedTo {
    pub ts_ns: u64,
    pub addr: SockAddrs,
}
assert_size!(ConnectedTo, 48);
pod!(ConnectedTo);
