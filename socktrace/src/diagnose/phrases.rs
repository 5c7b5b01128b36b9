//! One phrase table per kernel enum the explanations name: `enum sk_rst_reason` (why a socket
//! sent an RST, 6.10+) and `enum skb_drop_reason` (why a packet was dropped, 5.17+). The
//! kernel renumbers both between versions, so they are matched by name (read from its BTF).

/// A reason from `enum sk_rst_reason`, and what it says of the socket that sent the RST.
pub struct RstReason {
    /// The name without its `SK_RST_REASON_` prefix.
    pub name: &'static str,
    /// Said of a socket of the traced process ("the process ...").
    pub own: &'static str,
    /// Said of the sending socket of a local peer ("it ...").
    pub peer: &'static str,
    /// The RST is sent from the sending process's own call (close, disconnect), so the task on
    /// the CPU is its sender; otherwise it comes from softirq or a timer.
    pub from_call: bool,
}

const RST_REASONS: &[RstReason] = &[
    RstReason {
        name: "TCP_ABORT_ON_CLOSE",
        own: "the process closed it with unread data",
        peer: "it closed the socket with unread data",
        from_call: true,
    },
    RstReason {
        name: "TCP_ABORT_ON_LINGER",
        own: "the linger time (SO_LINGER) of a closed socket ran out",
        peer: "the linger time (SO_LINGER) of its closed socket ran out",
        from_call: true,
    },
    RstReason {
        name: "TCP_ABORT_ON_MEMORY",
        own: "the host was short of memory or had too many orphaned sockets",
        peer: "it was short of memory or had too many orphaned sockets",
        from_call: false,
    },
    RstReason {
        name: "TCP_ABORT_ON_DATA",
        own: "data arrived after the process had closed its end",
        peer: "data arrived after it had closed its end",
        from_call: false,
    },
    RstReason {
        name: "TCP_KEEPALIVE_TIMEOUT",
        own: "its keepalive probes went unanswered",
        peer: "its keepalive probes went unanswered",
        from_call: false,
    },
    RstReason {
        name: "TCP_DISCONNECT_WITH_DATA",
        own: "the process disconnected it with data pending",
        peer: "it disconnected the socket with data pending",
        from_call: true,
    },
];

/// A kernel RST reason's name without its prefix (`SK_RST_REASON_TCP_STATE` -> `TCP_STATE`).
pub fn rst_reason_short(name: &str) -> &str {
    name.trim_start_matches("SK_RST_REASON_")
}

/// The row of the RST reason `name` (with or without its prefix), if it has a phrase.
pub fn rst_reason(name: &str) -> Option<&'static RstReason> {
    let short = rst_reason_short(name);
    RST_REASONS.iter().find(|r| r.name == short)
}

/// `TCP_STATE`: the socket was aborted or disconnected from a call (tcp_abort, `ss -K`,
/// connect(AF_UNSPEC)), or closed abortively; what its state tells apart.
pub const RST_REASON_TCP_STATE: &str = "TCP_STATE";

/// A reason from `enum skb_drop_reason`, and what it says of a dropped packet.
pub struct DropReason {
    /// The name without its `SKB_DROP_REASON_` prefix.
    pub name: &'static str,
    /// Said of an RST the kernel dropped before the one it accepted, if this reason drops
    /// RSTs for a reason worth naming.
    pub rst: Option<&'static str>,
    /// A netfilter rule (nftables or iptables) dropped it.
    pub netfilter: bool,
}

const OUTSIDE_THE_WINDOW: &str = "outside the receive window, as a blind or injected reset (or a stale one) would be";

const DROP_REASONS: &[DropReason] = &[
    DropReason { name: "NETFILTER_DROP", rst: None, netfilter: true },
    DropReason { name: "TCP_INVALID_SEQUENCE", rst: Some(OUTSIDE_THE_WINDOW), netfilter: false },
    DropReason { name: "TCP_OLD_SEQUENCE", rst: Some(OUTSIDE_THE_WINDOW), netfilter: false },
    DropReason { name: "TCP_INVALID_END_SEQUENCE", rst: Some(OUTSIDE_THE_WINDOW), netfilter: false },
    DropReason {
        name: "TCP_RESET",
        rst: Some("inside the window but not at rcv_nxt: the kernel challenged it with an ACK (RFC 5961)"),
        netfilter: false,
    },
];

/// A kernel drop reason's name without its prefix (`SKB_DROP_REASON_NO_SOCKET` -> `NO_SOCKET`).
pub fn drop_reason_short(name: &str) -> &str {
    name.trim_start_matches("SKB_DROP_REASON_")
}

/// The row of the drop reason `name` (with or without its prefix), if it has one.
pub fn drop_reason(name: &str) -> Option<&'static DropReason> {
    let short = drop_reason_short(name);
    DROP_REASONS.iter().find(|r| r.name == short)
}

/// Kernel functions that are netfilter's: where a drop happened when the kernel gives no
/// reason (before 5.17).
const NETFILTER_FUNCTIONS: [&str; 4] = ["nf_hook_slow", "nft_", "ipt_do_table", "ip6t_do_table"];

/// Whether a drop with this reason (if any) at this kernel function was a netfilter rule's.
pub fn dropped_by_netfilter(reason: Option<&str>, function: &str) -> bool {
    match reason {
        Some(r) => drop_reason(r).is_some_and(|d| d.netfilter),
        None => NETFILTER_FUNCTIONS.iter().any(|p| function.starts_with(p)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_with_or_without_their_prefix() {
        assert_eq!(rst_reason("SK_RST_REASON_TCP_ABORT_ON_CLOSE").map(|r| r.name), Some("TCP_ABORT_ON_CLOSE"));
        assert_eq!(rst_reason("TCP_KEEPALIVE_TIMEOUT").map(|r| r.from_call), Some(false));
        assert!(rst_reason("SK_RST_REASON_NOT_SPECIFIED").is_none());
        assert!(dropped_by_netfilter(Some("SKB_DROP_REASON_NETFILTER_DROP"), "nft_do_chain"));
        assert!(!dropped_by_netfilter(Some("SKB_DROP_REASON_TCP_RESET"), "nft_do_chain"));
        assert!(dropped_by_netfilter(None, "nf_hook_slow+0x9a"));
        assert!(!dropped_by_netfilter(None, "tcp_v4_rcv"));
        assert!(drop_reason("SKB_DROP_REASON_TCP_OLD_SEQUENCE").and_then(|d| d.rst).is_some());
    }

    /// Every row is named once, with its prefix stripped.
    #[test]
    fn rows_are_unique_and_bare() {
        for (i, r) in RST_REASONS.iter().enumerate() {
            assert!(!r.name.starts_with("SK_RST_REASON_") && RST_REASONS[..i].iter().all(|o| o.name != r.name));
        }
        for (i, d) in DROP_REASONS.iter().enumerate() {
            assert!(!d.name.starts_with("SKB_DROP_REASON_") && DROP_REASONS[..i].iter().all(|o| o.name != d.name));
        }
    }
}
