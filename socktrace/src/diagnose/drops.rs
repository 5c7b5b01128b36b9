//! Packets of a connection that this host dropped: evidence that the timeout, abandoned
//! connect and reset families add to their explanations.

use super::history::{count, peer, secs};
use super::phrases::{drop_reason, drop_reason_short, dropped_by_netfilter};
use crate::facts::{Failure, PacketDrops, Stamp};
use crate::text::escape_bytes;

use socktrace_common::tcp_flags::{ACK, FIN, PSH, RST, SYN, URG};

/// The packets of this connection that this host dropped, for a timeout's explanation:
/// `; 2 SYNs it sent were dropped on this host: a netfilter rule dropped them (...)`.
pub fn on_this_host(f: &Failure) -> String {
    let mut out = String::new();
    for d in &f.drops {
        let n = d.count;
        let what = segments(d);
        let whose = if d.sent { "it sent".to_string() } else { format!("sent to it by {}", peer(f.remote)) };
        let reason = d.reason_name.as_deref().map(drop_reason_short);
        let function = d.function.as_deref().unwrap_or("?");
        let who = if dropped_by_netfilter(reason, function) {
            "a netfilter rule (nftables or iptables) dropped"
        } else {
            "the kernel dropped"
        };
        let why = match (reason, d.reason) {
            (Some(r), _) => format!("kernel reason {r}, in {function}"),
            (None, Some(r)) => format!("kernel reason {r}, in {function}"),
            (None, None) => format!("in {function}; this kernel gives no drop reason before 5.17"),
        };
        let place = match (d.netns, d.dev.is_empty()) {
            (Some(ns), false) => format!(" in netns {ns} on {}", escape_bytes(&d.dev)),
            (Some(ns), true) => format!(" in netns {ns}"),
            (None, false) => format!(" on {}", escape_bytes(&d.dev)),
            (None, true) => String::new(),
        };
        let ago = |t: u64| secs(f.ts_ns.saturating_sub(t));
        let when = if n == 1 {
            format!("{} before the failure", ago(d.last_ns))
        } else {
            format!("the first {} and the last {} before the failure", ago(d.first_ns), ago(d.last_ns))
        };
        out.push_str(&format!(
            "; {what} {whose} {} dropped on this host: {who} {} ({why}){place}, {when}",
            if n == 1 { "was" } else { "were" },
            if n == 1 { "it" } else { "them" },
        ));
    }
    out
}

/// What a flow's dropped packets were: `3 SYNs`, `1 RST`, `2 segments and 1 RST` (a
/// keepalive timeout's unanswered probes, then the RST it sends). The record keeps how many
/// carried RST and the flags of all together, so the others are named only when that tells.
pub fn segments(d: &PacketDrops) -> String {
    let n = d.count;
    let rsts = d.rsts.min(n);
    let others = n - rsts;
    if others == 0 {
        return count(n.into(), "RST");
    }
    // SYN alone among the others' flags: every one was a SYN (any later segment has ACK).
    let kind = if rsts == 0 && d.all_flags & (SYN | ACK | FIN | PSH | URG) == SYN {
        "SYN"
    } else if rsts == 0 && d.all_flags & (ACK | FIN | PSH | URG) == ACK && d.last_flags & (SYN | ACK) == SYN | ACK {
        "SYN-ACK"
    } else {
        "segment"
    };
    if rsts == 0 {
        count(n.into(), kind)
    } else {
        format!("{} and {}", count(others.into(), kind), count(rsts.into(), "RST"))
    }
}

/// RSTs sent to this socket that the kernel dropped before the one it accepted: an RST
/// outside the receive window (a blind or injected reset, or a stale one) is dropped as an
/// invalid sequence; one inside it but not at `rcv_nxt` is answered with a challenge ACK
/// (RFC 5961) and dropped too.
pub fn rsts_before(f: &Failure, rst: Stamp) -> String {
    let Some(d) = f.drops.iter().find(|d| !d.sent && d.all_flags & RST != 0 && d.first_ns <= rst.ts_ns) else {
        return String::new();
    };
    let reason = d.reason_name.as_deref().map(drop_reason_short);
    let what = reason.and_then(drop_reason).and_then(|r| r.rst).unwrap_or("that the kernel did not accept");
    let n = d.rsts.clamp(1, d.count.max(1));
    format!(
        "; before it, {n} segment{} with RST sent to it {} dropped on this host, {what} (kernel reason {}, in {})",
        if n == 1 { "" } else { "s" },
        if n == 1 { "was" } else { "were" },
        reason.unwrap_or("not given before 5.17"),
        d.function.as_deref().unwrap_or("?")
    )
}

#[cfg(test)]
mod tests {
    use super::super::diagnose;
    use super::super::test_support::tr;
    use crate::facts::{Failure, History, PacketDrops, Stamp, StateChange};
    use crate::model::{errno::*, Syscall, TcpState::*};
    use socktrace_common::TimerFacts;

    const S: u64 = 1_000_000_000;

    fn timed_out(transitions: Vec<StateChange>, gave_up: u64, retransmits: u32, first: Option<u64>) -> History {
        History {
            transitions,
            error_report: Some((Stamp { ts_ns: gave_up, state: Some(Close), current_tgid: 0 }, ETIMEDOUT)),
            retransmits,
            first_retransmit_ns: first,
            ..Default::default()
        }
    }

    fn base() -> TimerFacts {
        TimerFacts {
            snd_wnd: 65535,
            net_syn_retries: 6,
            net_retries2: 15,
            net_keepalive_probes: 9,
            ..Default::default()
        }
    }

    fn with(timers: TimerFacts, syscall: Syscall, h: History) -> Failure {
        let mut f = Failure::for_test(syscall, Some(ETIMEDOUT), Close, h);
        f.timers = Some(timers);
        f.ts_ns = 10 * S;
        f
    }

    fn drop(sent: bool, count: u32, flags: u8, reason: Option<&str>, function: &str) -> PacketDrops {
        PacketDrops {
            sent,
            count,
            first_ns: 2 * S,
            last_ns: 7 * S,
            reason: reason.map(|_| 12),
            reason_name: reason.map(|r| format!("SKB_DROP_REASON_{r}")),
            location: 0xffff_ffff_8100_0000,
            function: Some(function.into()),
            netns: Some(4026531840),
            ifindex: Some(1),
            dev: b"lo".to_vec(),
            last_flags: flags,
            all_flags: flags,
            rsts: if flags & 0x04 != 0 { count } else { 0 },
            stack: 0,
        }
    }

    #[test]
    fn drops_behind_a_timeout_are_named_with_reason_place_and_time() {
        let h = timed_out(vec![tr(S, Close, SynSent), tr(8 * S, SynSent, Close)], 8 * S, 2, Some(2 * S));
        let mut f = with(base(), Syscall::Connect, h);
        f.drops = vec![drop(true, 3, 0x02, Some("NETFILTER_DROP"), "nft_do_chain+0x47f")];
        let dg = diagnose(&f);
        assert!(
            dg.explain.contains(
                "; 3 SYNs it sent were dropped on this host: a netfilter rule (nftables or iptables) dropped them \
                 (kernel reason NETFILTER_DROP, in nft_do_chain+0x47f) in netns 4026531840 on lo, the first 8.0 s and \
                 the last 3.0 s before the failure"
            ),
            "{}",
            dg.explain
        );
        // Before 5.17: no reason; nf_hook_slow is still netfilter's, anything else is named by
        // its function only.
        f.drops = vec![drop(false, 1, 0x12, None, "nf_hook_slow+0x9a")];
        let dg = diagnose(&f);
        assert!(
            dg.explain.contains("1 SYN-ACK sent to it by 127.0.0.1:9 was dropped on this host: a netfilter rule"),
            "{}",
            dg.explain
        );
        assert!(dg.explain.contains("this kernel gives no drop reason before 5.17"), "{}", dg.explain);
        f.drops = vec![drop(true, 2, 0x18, None, "tcp_v4_rcv+0x10")];
        assert!(diagnose(&f).explain.contains("2 segments it sent were dropped on this host: the kernel dropped them"));
        // A keepalive timeout's flow: two unanswered probes (ACK), then the RST it sent. Not
        // "3 RSTs": the record counts the RSTs apart.
        f.drops = vec![PacketDrops {
            last_flags: 0x14,
            all_flags: 0x14,
            rsts: 1,
            ..drop(true, 3, 0x10, None, "nft_do_chain")
        }];
        assert!(
            diagnose(&f).explain.contains("; 2 segments and 1 RST it sent were dropped on this host"),
            "{}",
            diagnose(&f).explain
        );
        f.drops = vec![drop(true, 1, 0x14, None, "nft_do_chain")];
        assert!(diagnose(&f).explain.contains("; 1 RST it sent was dropped on this host"));
    }

    #[test]
    fn an_rst_dropped_before_the_one_accepted_is_flagged() {
        let h = History {
            transitions: vec![tr(S, SynSent, Established), tr(8 * S, Established, Close)],
            rst_received: Some(Stamp { ts_ns: 8 * S, state: Some(Established), current_tgid: 0 }),
            ..Default::default()
        };
        let mut f = Failure::for_test(Syscall::Read, Some(ECONNRESET), Close, h);
        f.drops = vec![drop(false, 1, 0x04, Some("TCP_INVALID_SEQUENCE"), "tcp_validate_incoming+0x1c")];
        let dg = diagnose(&f);
        assert!(
            dg.explain.contains(
                "; before it, 1 segment with RST sent to it was dropped on this host, outside the receive window, as a \
                 blind or injected reset (or a stale one) would be (kernel reason TCP_INVALID_SEQUENCE"
            ),
            "{}",
            dg.explain
        );
        f.drops[0].reason_name = Some("SKB_DROP_REASON_TCP_RESET".into());
        assert!(diagnose(&f).explain.contains("inside the window but not at rcv_nxt"));
        // A dropped segment without RST is not an RST.
        f.drops[0].all_flags = 0x10;
        assert!(!diagnose(&f).explain.contains("before it,"));
    }
}
