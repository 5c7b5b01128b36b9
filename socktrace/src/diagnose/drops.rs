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
        let place = place(d, who.starts_with("a netfilter rule"));
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

/// Where the packets were dropped: the namespace (whose, where the host could tell), the
/// device, and the hook (netfilter's, when a rule dropped them) or the path they were on:
/// ` in namespace blue (ip netns; netns 4026532239) on veth1, at its forward hook`.
fn place(d: &PacketDrops, by_netfilter: bool) -> String {
    let mut out = d.netns.map(|ns| namespace(ns, d.netns_owner.as_ref())).unwrap_or_default();
    if !d.dev.is_empty() {
        out.push_str(&format!(" on {}", escape_bytes(&d.dev)));
    }
    match (hook(&d.path), by_netfilter) {
        (Some(h), true) => out.push_str(&format!(", at its {} hook", h.name())),
        (Some(h), false) => out.push_str(&format!(", on its {} path", h.name())),
        (None, _) => {}
    }
    out
}

/// Network namespace `ns`, with whose it is where the host could tell: ` in namespace blue
/// (ip netns; netns 4026532239)`, ` in the namespace of pid 42 nginx, container 0123456789ab
/// (netns ...)`, ` in netns 4026532239`.
pub fn namespace(ns: u32, owner: Option<&crate::facts::NetnsOwner>) -> String {
    use crate::facts::NetnsOwner;
    match owner {
        Some(NetnsOwner::Traced) => format!(" in the process's own namespace (netns {ns})"),
        Some(NetnsOwner::Host) => format!(" in the host's namespace (netns {ns})"),
        Some(NetnsOwner::Named(name)) => {
            format!(" in namespace {} (ip netns; netns {ns})", escape_bytes(name.as_bytes()))
        }
        Some(NetnsOwner::Process { pid, comm, workload }) => {
            let mut whose = format!("pid {pid} {}", escape_bytes(comm));
            if let Some(c) = &workload.container {
                whose.push_str(&format!(", container {}", escape_bytes(c.short_id().as_bytes())));
            }
            if let Some(p) = &workload.pod {
                whose.push_str(&format!(", pod {}", escape_bytes(p.uid.as_bytes())));
            }
            format!(" in the namespace of {whose} (netns {ns})")
        }
        None => format!(" in netns {ns}"),
    }
}

/// Where on its way through a namespace a packet was: netfilter's hooks, which the kernel
/// functions that run them stand for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
    /// A bridge's own hooks (the `bridge` family), frames passing a bridge.
    BridgePrerouting,
    BridgeForward,
    BridgeInput,
}

impl Hook {
    pub fn name(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
            Hook::BridgePrerouting => "bridge prerouting",
            Hook::BridgeForward => "bridge forward",
            Hook::BridgeInput => "bridge input",
        }
    }
}

/// The hook a drop's kernel stack (innermost first, `function+0xoff`) was in: the innermost
/// function that runs a hook. None when no frame tells (no stack, an unknown path).
pub fn hook(path: &[String]) -> Option<Hook> {
    path.iter().find_map(|frame| {
        let f = frame.split('+').next().unwrap_or(frame);
        Some(match f {
            "ip_forward" | "ip_forward_finish" | "ip6_forward" | "ip6_forward_finish" | "br_nf_forward_ip"
            | "br_nf_forward" => Hook::Forward,
            "ip_local_deliver" | "ip_local_deliver_finish" | "ip6_input" | "ip6_input_finish" => Hook::Input,
            "ip_rcv" | "ip_rcv_finish" | "ipv6_rcv" | "ip6_rcv_finish" | "br_nf_pre_routing" => Hook::Prerouting,
            "__ip_local_out" | "ip_local_out" | "__ip6_local_out" | "ip6_local_out" => Hook::Output,
            "ip_output" | "ip_finish_output" | "ip6_output" | "ip6_finish_output" | "br_nf_post_routing" => {
                Hook::Postrouting
            }
            "br_handle_frame" | "br_handle_frame_finish" => Hook::BridgePrerouting,
            "__br_forward" | "br_forward" | "br_forward_finish" => Hook::BridgeForward,
            "br_pass_frame_up" | "br_netif_receive_skb" => Hook::BridgeInput,
            _ => return None,
        })
    })
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
            frames: Vec::new(),
            path: Vec::new(),
            netns_owner: None,
        }
    }

    fn path(frames: &[&str]) -> Vec<String> {
        frames.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn the_hook_is_read_from_the_innermost_function_that_runs_one() {
        use super::{hook, Hook};
        // Measured on 6.18: an nftables forward-chain drop, and an input-chain one.
        let forward = path(&[
            "bpf_prog_c85bccdf27d02ff4_raw_kfree_skb\\x09[bpf]+0xe1b",
            "bpf_trace_run4+0x10d",
            "sk_skb_reason_drop+0x90",
            "nft_do_chain+0x46f",
            "nft_do_chain_inet+0x4c",
            "nf_hook_slow+0x43",
            "ip_forward+0x6e9",
            "__netif_receive_skb_one_core+0x8d",
            "ip_rcv+0x20",
        ]);
        let table = [
            ("forward", forward, Some(Hook::Forward)),
            (
                "input",
                path(&["kfree_skb_reason+0x1", "nf_hook_slow+0x43", "ip_local_deliver+0x9", "ip_rcv+0x20"]),
                Some(Hook::Input),
            ),
            (
                "output",
                path(&["nf_hook_slow", "__ip_local_out+0x1", "ip_local_out", "__ip_queue_xmit"]),
                Some(Hook::Output),
            ),
            ("v6 input", path(&["nf_hook_slow", "ip6_input+0x4", "ipv6_rcv"]), Some(Hook::Input)),
            (
                "bridge forward",
                path(&["nft_do_chain", "nf_hook_slow", "__br_forward+0x5", "br_handle_frame_finish"]),
                Some(Hook::BridgeForward),
            ),
            (
                "bridged, br_netfilter",
                path(&["nf_hook_slow", "br_nf_forward_ip+0x1", "__br_forward"]),
                Some(Hook::Forward),
            ),
            ("unknown path", path(&["tcp_v4_rcv+0x10", "some_fn"]), None),
            ("no stack", Vec::new(), None),
        ];
        for (name, frames, want) in table {
            assert_eq!(hook(&frames), want, "{name}");
        }
    }

    #[test]
    fn the_namespace_of_a_drop_is_named_with_its_owner_and_hook() {
        use crate::container::{Container, Runtime, Workload};
        use crate::facts::NetnsOwner;
        let h = timed_out(vec![tr(S, Close, SynSent), tr(8 * S, SynSent, Close)], 8 * S, 2, Some(2 * S));
        let mut f = with(base(), Syscall::Connect, h);
        let forward = path(&["nft_do_chain+0x46f", "nf_hook_slow+0x43", "ip_forward+0x6e9"]);
        let table: [(&str, Option<NetnsOwner>, Vec<String>, &str); 5] = [
            ("named", Some(NetnsOwner::Named("router".into())), forward.clone(), " in namespace router (ip netns; netns 4026531840) on lo, at its forward hook,"),
            ("host", Some(NetnsOwner::Host), forward.clone(), " in the host's namespace (netns 4026531840) on lo, at its forward hook,"),
            ("own", Some(NetnsOwner::Traced), Vec::new(), " in the process's own namespace (netns 4026531840) on lo,"),
            (
                "container",
                Some(NetnsOwner::Process {
                    pid: 42,
                    comm: b"nginx\x1b".to_vec(),
                    workload: Workload {
                        container: Some(Container { runtime: Runtime::Docker, id: "0123456789abcdef0123".into() }),
                        pod: None,
                    },
                }),
                forward.clone(),
                " in the namespace of pid 42 nginx\\x1b, container 0123456789ab (netns 4026531840) on lo, at its forward hook,",
            ),
            ("unknown", None, Vec::new(), " in netns 4026531840 on lo,"),
        ];
        for (name, owner, path, want) in table {
            f.drops = vec![PacketDrops {
                netns_owner: owner,
                path,
                ..drop(true, 2, 0x02, Some("NETFILTER_DROP"), "nft_do_chain+0x46f")
            }];
            let dg = diagnose(&f);
            assert!(dg.explain.contains(want), "{name}: {}", dg.explain);
        }
        // Not a rule: the path, not a hook.
        f.drops = vec![PacketDrops {
            path: path(&["tcp_v4_rcv", "ip_protocol_deliver_rcu", "ip_local_deliver_finish"]),
            ..drop(true, 2, 0x18, None, "tcp_v4_rcv+0x10")
        }];
        assert!(diagnose(&f).explain.contains(" on lo, on its input path,"), "{}", diagnose(&f).explain);
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
