//! The catalogue, end to end: every failure the seed lists, made to happen on real sockets
//! (loopback, or network namespaces built here), traced by the real socktrace, and checked
//! for errno, the state the error was born in, and the cause.

use serde_json::{json, Value};
use socktrace_tests::{
    assert_dropped_by_netfilter, assert_icmp_sender, assert_label, run_unexplained_twice, single_event, trace_scenario,
    Netns, Run,
};

const SCENARIO: &str = env!("CARGO_BIN_EXE_scenario");

fn run(args: &[&str], extra: &[&str]) -> Run {
    trace_scenario(SCENARIO, args, extra).unwrap()
}

fn in_netns(ns: &Netns, args: &[&str], extra: &[&str]) -> Run {
    let mut full = vec!["--netns", ns.name.as_str()];
    full.extend_from_slice(args);
    run(&full, extra)
}

/// The event socktrace printed for the scenario's step `step` (matched by fd and errno).
fn event_for<'a>(run: &'a Run, step: &str) -> &'a Value {
    let c = run.client_step(step);
    run.events
        .iter()
        .find(|e| e["fd"] == c["fd"] && e["ret"].as_i64() == c["errno"].as_i64().map(|n| -n))
        .unwrap_or_else(|| panic!("no event for step {step} ({c}); events: {:#?}\nstderr: {}", run.events, run.stderr))
}

fn last_transition(ev: &Value) -> (&str, &str) {
    let t = ev["history"].as_array().and_then(|h| h.last()).unwrap_or_else(|| panic!("no history in {ev:#}"));
    (t["from"].as_str().unwrap(), t["to"].as_str().unwrap())
}

#[test]
fn connect_refused_by_rst_ipv6() {
    let r = run(&["connect", "[::1]:closed"], &[]);
    assert_eq!(r.client_step("connect")["errno"], 111);
    let ev = single_event(&r);
    assert_label(ev, "ECONNREFUSED", Some("SYN_SENT"), "rst_received");
    assert_eq!(ev["family"], "inet6");
    assert_eq!(ev["daddr"], "::1");
    assert_eq!(ev["dport"], r.client_step("connect")["dport"]);
    assert!(ev["explain"].as_str().unwrap().contains("nothing listens on [::1]:"), "{ev:#}");
}

#[test]
fn connect_refused_by_icmp_port_unreachable() {
    let ns = Netns::new("icmp");
    ns.input_rules("inet", &["tcp dport 9999 reject with icmpx type port-unreachable".into()]);
    let r = in_netns(&ns, &["connect", "127.0.0.1:9999"], &[]);
    assert_eq!(r.client_step("connect")["errno"], 111);
    let ev = single_event(&r);
    assert_label(ev, "ECONNREFUSED", Some("SYN_SENT"), "icmp_error");
    let explain = ev["explain"].as_str().unwrap();
    assert!(explain.contains("ICMP port-unreachable") && !explain.contains("nothing listens"), "{explain}");
    assert_icmp_sender(&r, ev, "127.0.0.1", "the destination itself", 3, 3, "port unreachable");
}

#[test]
fn connect_refused_nonblocking_through_so_error() {
    let r = run(&["nonblocking-connect", "127.0.0.1:0"], &[]);
    assert_eq!(r.client_step("connect")["errno"], 115, "EINPROGRESS first");
    assert_eq!(r.client_step("so_error")["errno"], 111);
    // EINPROGRESS is routine (counted, not printed); the SO_ERROR result is the failure.
    let ev = single_event(&r);
    assert_label(ev, "ECONNREFUSED", Some("SYN_SENT"), "rst_received");
    assert_eq!(ev["syscall"], "connect");
    assert_eq!(ev["fd"], r.client_step("so_error")["fd"]);
    assert_eq!(ev["dport"], r.client_step("so_error")["dport"]);
    assert!(r.stderr.contains("1 failure (rst_received 1), 1 printed; routine: EINPROGRESS 1"), "{}", r.stderr);
}

/// Every receive and send call, each on a connection the peer aborted (SO_LINGER {1,0}):
/// the first call gets ECONNRESET, a write after it EPIPE, both traced to the RST. The RST is
/// handled while the *peer* is on the CPU; socktrace must still join it to our socket.
#[test]
fn reset_by_peer_for_every_call() {
    for call in ["read", "readv", "recvfrom", "recvmsg", "recvmmsg", "write", "writev", "sendto", "sendmsg", "sendmmsg"]
    {
        let r = run(&["reset", call, "v4"], &[]);
        let step = r.client_step(call);
        assert_eq!(step["errno"], 104, "{call}: the program's own errno");
        assert_eq!(r.events.len(), 2, "{call}: {:#?}", r.events);
        let ev = event_for(&r, call);
        assert_eq!(ev["syscall"], call);
        assert_label(ev, "ECONNRESET", Some("ESTABLISHED"), "rst_received");
        // Loopback delivers the RST in the sending peer's softirq, unless the kernel deferred
        // it to ksoftirqd (seen on a busy emulated CPU): never in ours.
        let cause_pid = ev["cause_pid"].as_u64().unwrap();
        let in_ksoftirqd =
            std::fs::read_to_string(format!("/proc/{cause_pid}/comm")).is_ok_and(|c| c.starts_with("ksoftirqd"));
        assert!(
            ev["cause_pid"] == step["peer_pid"] || in_ksoftirqd,
            "{call}: the RST ran in the peer's context (or ksoftirqd): {ev}"
        );
        assert_ne!(ev["cause_pid"], json!(r.client_pid));
        // The peer is on this host: its own record of the RST names it, and why (it closed
        // with SO_LINGER 0: already CLOSE when it sent the RST).
        assert_eq!(ev["facts"]["peer_reset"]["pid"], step["peer_pid"], "{call}: {ev:#}");
        assert_eq!(ev["facts"]["peer_reset"]["state"], "CLOSE", "{call}: {ev:#}");
        let explain = ev["explain"].as_str().unwrap();
        assert!(
            explain.contains(&format!("pid {} \"scenario\" on this host reset it", step["peer_pid"])),
            "{call}: {explain}"
        );
        assert_eq!(ev["sport"], step["sport"]);
        assert_eq!(ev["dport"], step["dport"]);
        // The connection predates tracing; the history starts with the reset closing it.
        assert_eq!(last_transition(ev), ("ESTABLISHED", "CLOSE"), "{call}");

        assert_eq!(r.client_step("after")["errno"], 32);
        let after = event_for(&r, "after");
        assert_label(after, "EPIPE", Some("ESTABLISHED"), "rst_received");
        assert!(after["cause_age_ns"].as_u64().unwrap() >= ev["cause_age_ns"].as_u64().unwrap());
    }
}

#[test]
fn reset_by_peer_ipv6() {
    let r = run(&["reset", "read", "v6"], &[]);
    let ev = event_for(&r, "read");
    assert_label(ev, "ECONNRESET", Some("ESTABLISHED"), "rst_received");
    // The segment of an abort: RST+ACK, acknowledging all we sent (where the kernel shows it).
    assert_rst_segment(&r, ev, "aborted");
    assert_eq!((ev["family"].as_str(), ev["daddr"].as_str()), (Some("inet6"), Some("::1")));
    assert_label(event_for(&r, "after"), "EPIPE", Some("ESTABLISHED"), "rst_received");
}

/// The RST segment `ev`'s socket received, where this kernel shows it (fentry or kprobe on
/// tcp_reset, 5.14+): its origin and flags; elsewhere nothing is invented and the notice says
/// why.
fn assert_rst_segment(r: &Run, ev: &Value, origin: &str) {
    let seg = &ev["facts"]["rst_segment"];
    if socktrace_tests::fact_probe(r, "RST segment received").is_none() {
        assert!(seg.is_null(), "{ev:#}");
        assert!(r.stderr.contains("RST segments") && r.stderr.contains("not visible on this kernel"), "{}", r.stderr);
        return;
    }
    assert_eq!(seg["origin"], origin, "{ev:#}");
    let flags = if origin == "aborted" { json!(["ACK", "RST"]) } else { json!(["RST"]) };
    assert_eq!(seg["flags"], flags, "{ev:#}");
    // Linux accepts an RST only at rcv_nxt.
    assert_eq!(seg["seq"], seg["rcv_nxt"], "{ev:#}");
    if origin == "aborted" {
        assert_eq!(seg["ack_seq"], seg["snd_nxt"], "the peer had received everything: {ev:#}");
    }
}

/// The peer host forgot the connection (its RST never left; it exited): our write reaches no
/// socket, whose kernel answers with an RST that has no ACK. Told apart from an abort by this
/// host's own record of the RST, and by the segment itself where the kernel shows it.
#[test]
fn a_peer_that_forgot_the_connection() {
    let r = run(&["forgotten"], &[]);
    assert_eq!(r.client_step("write")["errno"], 0);
    assert_eq!(r.client_step("read")["errno"], 104);
    let ev = single_event(&r);
    assert_label(ev, "ECONNRESET", Some("ESTABLISHED"), "rst_received");
    let explain = ev["explain"].as_str().unwrap();
    // The peer's abort that never left is not taken for this RST: no process is named.
    assert!(!explain.contains("\"scenario\""), "{explain}");
    let segment = socktrace_tests::fact_probe(&r, "RST segment received").is_some();
    if ev["facts"]["peer_reset"]["no_socket"] == true {
        // Kernels that trace an RST sent for no socket (about 6.10+): this host's own record.
        assert!(explain.contains("no socket of this host owns the connection any more"), "{explain}");
    } else if segment {
        // Older kernels trace no such RST; the segment tells, as it would for a remote peer.
        assert!(explain.contains("its RST has no ACK flag"), "{explain}");
        assert!(explain.contains("the peer no longer knows this connection"), "{explain}");
    } else {
        // Neither (before 5.14): the hedge, saying what would have told.
        assert!(explain.contains("or no longer knows the connection (the RST segment would tell which"), "{explain}");
    }
    assert_rst_segment(&r, ev, "no_connection");
}

/// The frames of one `--kstack` stack of `ev`.
fn kstack(ev: &Value, event: &str) -> Vec<String> {
    ev["kstack"][event]
        .as_array()
        .unwrap_or_else(|| panic!("no {event} stack: {ev:#}"))
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect()
}

/// `--kstack`: the kernel stack where each cause was born, symbolized; nothing without it.
#[test]
fn kstack_names_where_the_cause_was_born() {
    let r = run(&["reset", "read", "v4"], &["--kstack"]);
    let ev = event_for(&r, "read");
    assert_label(ev, "ECONNRESET", Some("ESTABLISHED"), "rst_received");
    // The RST was handled in tcp_reset, on the receive path.
    let rst = kstack(ev, "rst_received");
    assert!(rst.iter().any(|f| f.starts_with("tcp_reset")), "{rst:?}");
    assert!(
        rst.iter().any(|f| f.starts_with("tcp_rcv") || f.starts_with("tcp_v4_") || f.starts_with("tcp_validate")),
        "{rst:?}"
    );
    let plain = run(&["reset", "read", "v4"], &[]);
    assert!(event_for(&plain, "read").get("kstack").is_none(), "no stacks without --kstack");

    // A SYN timeout: the timer that gave up, and where the SYNs were dropped.
    let ns = timeout_netns("kstack", 9996);
    let r = in_netns(&ns, &["connect", "127.0.0.1:9996"], &["--kstack"]);
    let ev = single_event(&r);
    assert_label(ev, "ETIMEDOUT", Some("SYN_SENT"), "timeout");
    let gave_up = kstack(ev, "error_report");
    assert!(
        gave_up.iter().any(|f| f.starts_with("tcp_write_err")
            || f.starts_with("tcp_retransmit_timer")
            || f.starts_with("tcp_write_timer")),
        "{gave_up:?}"
    );
    let dropped = kstack(ev, "drop_sent");
    assert!(dropped.iter().any(|f| f.starts_with("nft_do_chain") || f.starts_with("nf_hook_slow")), "{dropped:?}");
}

/// `-v`: a second line with the evidence, and the stacks with --kstack, under a text line.
#[test]
fn verbose_text_shows_the_evidence() {
    let mut scenario = socktrace_tests::Scenario::start(SCENARIO, &["reset", "read", "v4"]).unwrap();
    let pid = scenario.pid.to_string();
    let tracer = socktrace_tests::Tracer::start(&["-p", &pid, "-v", "--kstack", "--color", "never"]).unwrap();
    scenario.go().unwrap();
    scenario.finish().unwrap();
    let out = tracer.wait(std::time::Duration::from_secs(15)).unwrap();
    let lines: Vec<&str> = out.stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains(" read(fd=") && l.contains("ECONNRESET"))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(lines[at + 1].starts_with("    evidence: "), "{}", out.stdout);
    assert!(lines[at + 1].contains("RST sent on this host by"), "{}", out.stdout);
    assert!(
        lines[at + 2..]
            .iter()
            .take_while(|l| l.starts_with("    "))
            .any(|l| l.starts_with("    kstack rst_received: ")),
        "{}",
        out.stdout
    );
}

/// The peer closes its socket with our data unread: its kernel resets the connection. Named
/// with the peer's process and why (the kernel's reason on 6.10+; before, the sender's state).
#[test]
fn a_peer_closing_with_unread_data_is_named() {
    let r = run(&["unread-close"], &[]);
    assert_eq!(r.client_step("write")["errno"], 0);
    let ev = event_for(&r, "read");
    assert_label(ev, "ECONNRESET", Some("ESTABLISHED"), "rst_received");
    let explain = ev["explain"].as_str().unwrap();
    let peer_pid = r.client_step("read")["peer_pid"].as_u64().unwrap();
    assert!(explain.contains(&format!("pid {peer_pid} \"scenario\" on this host reset it")), "{explain}");
    if ev["facts"]["peer_reset"]["reason_name"].is_string() {
        assert!(
            explain.contains("it closed the socket with unread data (kernel reason TCP_ABORT_ON_CLOSE)"),
            "{explain}"
        );
    } else {
        assert!(explain.contains("it closed the socket abortively (SO_LINGER 0, or with unread data)"), "{explain}");
    }
    assert_rst_segment(&r, ev, "aborted");
}

/// Our own RST: the process disconnects its connected socket (connect with AF_UNSPEC); the
/// write after it fails, explained by the RST this host sent and why.
#[test]
fn our_own_reset_by_a_disconnect_is_named() {
    let r = run(&["disconnect"], &[]);
    assert_eq!(r.client_step("disconnect")["errno"], 0);
    let ev = event_for(&r, "write");
    assert_eq!(ev["cause"], "rst_sent", "{ev:#}");
    assert_eq!(ev["state"], "ESTABLISHED", "{ev:#}");
    assert!(ev["facts"]["rst_sent"].is_object(), "{ev:#}");
    let explain = ev["explain"].as_str().unwrap();
    assert!(explain.contains("this host"), "{explain}");
    assert!(explain.contains("the process's own call reset it: it disconnected the socket"), "{explain}");
}

/// A socket that came into the process from outside the trace (taken from an untraced child
/// with pidfd_getfd): nothing was recorded on it, and the unknown says why, exactly.
#[test]
fn unknown_says_the_socket_came_from_outside_the_trace() {
    let r = run(&["borrowed-socket"], &[]);
    assert_eq!(r.client_step("read")["errno"], 104);
    let ev = single_event(&r);
    assert_eq!(ev["cause"], "unknown", "{ev:#}");
    let explain = ev["explain"].as_str().unwrap();
    assert!(explain.contains("nothing was recorded on this socket before this call"), "{explain}");
    assert!(
        explain.contains("the history map was never full and histories are never evicted, so the socket came into the"),
        "{explain}"
    );
}

/// A blind reset: an RST injected at a sequence number outside the window is dropped and the
/// connection lives on; when the peer then really aborts it, the explanation names the abort
/// and the earlier dropped RST (kernels that give drop reasons: 5.17+).
#[test]
fn an_injected_out_of_window_rst_is_flagged() {
    let r = run(&["blind-reset"], &[]);
    assert_eq!(r.client_step("read")["errno"], 104, "the injected RST did not kill the connection");
    let ev = single_event(&r);
    assert_label(ev, "ECONNRESET", Some("ESTABLISHED"), "rst_received");
    let explain = ev["explain"].as_str().unwrap();
    if socktrace_tests::kernel_version() >= (5, 17) {
        let d = ev["facts"]["drops"].as_array().unwrap().iter().find(|d| d["direction"] == "received");
        let d = d.unwrap_or_else(|| panic!("the dropped RST is not in the facts: {ev:#}"));
        assert_eq!((d["count"].as_u64(), &d["flags"]), (Some(1), &json!(["RST"])), "{ev:#}");
        assert!(
            explain.contains(
                "before it, 1 segment with RST sent to it was dropped on this host, outside the receive window"
            ),
            "{explain}"
        );
    } else {
        // Older kernels drop such a segment without the drop tracepoint: nothing is claimed.
        assert!(!explain.contains("before it,"), "{explain}");
    }
}

/// A zero-window stall: the peer is alive but does not read; TCP_USER_TIMEOUT ends the
/// zero-window probing and the blocked write times out. Named as the persist timer, never as
/// unacknowledged data.
#[test]
fn zero_window_stall_is_named() {
    let ns = Netns::new("zerowin");
    ns.exec(&["sysctl", "-q", "-w", "net.ipv4.tcp_rmem=4096 4096 4096"]);
    ns.exec(&["sysctl", "-q", "-w", "net.ipv4.tcp_wmem=4096 4096 4096"]);
    let r = in_netns(&ns, &["zero-window"], &[]);
    assert_eq!(r.client_step("write")["errno"], 110);
    let ev = single_event(&r);
    assert_label(ev, "ETIMEDOUT", Some("ESTABLISHED"), "timeout");
    assert_eq!(ev["timers"]["snd_wnd"], 0, "{ev:#}");
    let explain = ev["explain"].as_str().unwrap();
    assert!(explain.contains("the peer's receive window stayed closed (zero window)"), "{explain}");
    assert!(!explain.contains("never acknowledged data"), "{explain}");
}

/// The seed's "server terminated prematurely".
#[test]
fn premature_exit_write_then_epipe() {
    let r = run(&["premature-exit"], &[]);
    assert_eq!(r.client_step("first_write")["errno"], 0, "the first write goes out");
    assert_eq!(r.client_step("second_write")["errno"], 32);
    let ev = single_event(&r);
    assert_label(ev, "EPIPE", Some("CLOSE_WAIT"), "rst_received");
    assert_eq!(last_transition(ev), ("CLOSE_WAIT", "CLOSE"));
}

#[test]
fn write_after_own_shutdown() {
    let r = run(&["shut-wr"], &[]);
    assert_eq!(r.client_step("write")["errno"], 32);
    let ev = single_event(&r);
    assert_eq!(ev["errno"], "EPIPE");
    assert_eq!(ev["cause"], "local_shutdown");
    assert!(matches!(ev["state"].as_str(), Some("FIN_WAIT1" | "FIN_WAIT2")), "{ev:#}");
}

#[test]
fn read_after_peer_fin_with_eof() {
    let r = run(&["peer-fin"], &["--eof"]);
    assert_eq!(r.client_step("read")["ret"], 0);
    let ev = single_event(&r);
    assert_eq!((ev["ret"].as_i64(), ev["errno"].is_null()), (Some(0), true));
    assert_eq!((ev["cause"].as_str(), ev["state"].as_str()), (Some("peer_fin"), Some("CLOSE_WAIT")));

    let quiet = run(&["peer-fin"], &[]);
    assert!(quiet.events.is_empty(), "EOF is reported only with --eof: {:#?}", quiet.events);
}

fn timeout_netns(tag: &str, port: u16) -> Netns {
    let ns = Netns::new(tag);
    ns.exec(&["sysctl", "-q", "-w", "net.ipv4.tcp_syn_retries=1"]);
    ns.input_rules("inet", &[format!("tcp dport {port} drop")]);
    ns
}

#[test]
fn connect_timeout_ipv4_and_ipv6() {
    for (tag, addr) in [("syn4", "127.0.0.1:9998"), ("syn6", "[::1]:9998")] {
        let ns = timeout_netns(tag, 9998);
        let r = in_netns(&ns, &["connect", addr], &[]);
        assert_eq!(r.client_step("connect")["errno"], 110, "{addr}");
        let ev = single_event(&r);
        assert_label(ev, "ETIMEDOUT", Some("SYN_SENT"), "timeout");
        assert!(ev["retransmits"].as_u64().unwrap() >= 1, "{ev:#}");
        // Which timer, and its limit: the namespace's tcp_syn_retries the test set.
        assert_eq!(ev["timers"]["tcp_syn_retries"], 1, "{ev:#}");
        assert!(
            ev["explain"].as_str().unwrap().contains("SYN retries exhausted: net.ipv4.tcp_syn_retries 1"),
            "{ev:#}"
        );
        // How many SYNs, over how long.
        let syns = ev["retransmits"].as_u64().unwrap() + 1;
        assert!(ev["explain"].as_str().unwrap().contains(&format!("; {syns} SYNs over ")), "{ev:#}");
        // Why no SYN-ACK came: the namespace's nft rule dropped every SYN on this host.
        assert_dropped_by_netfilter(&r, ev, "sent", "SYNs it sent were");
        let sent = ev["facts"]["drops"].as_array().unwrap().iter().find(|d| d["direction"] == "sent").unwrap();
        // Every SYN: the first and each retransmission.
        assert_eq!((sent["count"].as_u64(), &sent["flags"]), (Some(syns), &json!(["SYN"])), "{ev:#}");
        assert_eq!(sent["dev"], "lo", "{ev:#}");
    }
}

#[test]
fn established_connection_timeout() {
    let ns = Netns::new("est");
    let r = run_unexplained_twice(|| in_netns(&ns, &["established-timeout", "v4"], &[]));
    assert_eq!(r.client_step("write")["errno"], 0);
    assert_eq!(r.client_step("read")["errno"], 110);
    let ev = single_event(&r);
    assert_label(ev, "ETIMEDOUT", Some("ESTABLISHED"), "timeout");
    assert!(ev["retransmits"].as_u64().unwrap() >= 1, "{ev:#}");
    assert_eq!(ev["timers"]["user_timeout_ms"], 1000, "{ev:#}");
    let explain = ev["explain"].as_str().unwrap();
    assert!(explain.contains("data retransmissions exhausted: TCP_USER_TIMEOUT 1000 ms"), "{explain}");
    assert!(explain.contains("; retransmitting for "), "{explain}");
    assert_dropped_by_netfilter(&r, ev, "sent", "segments it sent were");
}

/// An idle connection with keepalive on whose packets start being dropped: the keepalive
/// probes go unanswered and the blocked read times out with nothing retransmitted. Named as
/// the keepalive timer, with its probe count, never as "after 0 retransmissions".
#[test]
fn keepalive_timeout_is_named() {
    let ns = Netns::new("keepalive");
    let r = run_unexplained_twice(|| in_netns(&ns, &["keepalive-timeout"], &[]));
    assert_eq!(r.client_step("read")["errno"], 110);
    let ev = single_event(&r);
    assert_label(ev, "ETIMEDOUT", Some("ESTABLISHED"), "timeout");
    assert_eq!((ev["timers"]["keepalive"].as_bool(), ev["timers"]["keepalive_probes"].as_u64()), (Some(true), Some(2)));
    let explain = ev["explain"].as_str().unwrap();
    assert!(explain.contains("keepalive probes went unanswered (TCP_KEEPCNT 2)"), "{explain}");
    // The settings the probes ran by (the scenario's 1 s idle, 1 s interval).
    assert!(explain.contains("after 1.0 s idle (TCP_KEEPIDLE) and a probe every 1.0 s (TCP_KEEPINTVL)"), "{explain}");
    assert!(!explain.contains("after 0 retransmissions"), "{explain}");
    assert_dropped_by_netfilter(&r, ev, "sent", "it sent were");
    // The unanswered probes and the RST the timer sends are dropped on one flow: counted
    // apart, never all called RSTs ("3 RSTs it sent", as before).
    let sent = ev["facts"]["drops"].as_array().unwrap().iter().find(|d| d["direction"] == "sent").unwrap();
    assert!(sent["rsts"].as_u64().unwrap() <= 1, "{ev:#}");
    assert!(!explain.contains("RSTs it sent"), "{explain}");
}

#[test]
fn host_unreachable_by_icmp() {
    let ns = Netns::new("hostun");
    ns.input_rules("ip", &["tcp dport 9997 reject with icmp type host-unreachable".into()]);
    let r = in_netns(&ns, &["connect", "127.0.0.1:9997"], &[]);
    assert_eq!(r.client_step("connect")["errno"], 113);
    let ev = single_event(&r);
    assert_label(ev, "EHOSTUNREACH", Some("SYN_SENT"), "icmp_error");
    assert_icmp_sender(&r, ev, "127.0.0.1", "the destination itself", 3, 1, "host unreachable");
}

#[test]
fn no_route_unreachable_route_and_no_route_at_all() {
    let ns = Netns::new("noroute");
    ns.ip(&["route", "add", "unreachable", "10.77.0.0/24"]);
    let r = in_netns(&ns, &["connect", "10.77.0.1:80"], &[]);
    assert_eq!(r.client_step("connect")["errno"], 113);
    let ev = single_event(&r);
    assert_label(ev, "EHOSTUNREACH", None, "no_route");
    assert_eq!((ev["daddr"].as_str(), ev["dport"].as_u64()), (Some("10.77.0.1"), Some(80)));

    let r = in_netns(&ns, &["connect", "10.78.0.1:80"], &[]);
    assert_eq!(r.client_step("connect")["errno"], 101);
    let ev = single_event(&r);
    assert_label(ev, "ENETUNREACH", None, "no_route");
    assert_eq!(ev["daddr"], "10.78.0.1");
}

#[test]
fn killed_with_ss_k_is_aborted() {
    let r = run(&["ss-kill"], &[]);
    assert_eq!(r.client_step("read")["ss_status"], 0, "ss -K worked");
    assert_eq!(r.client_step("read")["errno"], 103);
    assert_label(single_event(&r), "ECONNABORTED", Some("ESTABLISHED"), "aborted");
}

/// `ss -K` kills the peer's socket (on this host): its kernel resets the connection from
/// tcp_abort, in ESTABLISHED. Named as that abort (the kernel's reason on 6.10+), never with
/// the pid of whatever ran on the CPU (`ss` itself).
#[test]
fn a_peer_killed_with_ss_k_reset_us() {
    let r = run(&["ss-kill-peer"], &[]);
    assert_eq!(r.client_step("read")["ss_status"], 0, "ss -K worked");
    assert_eq!(r.client_step("read")["errno"], 104);
    let ev = single_event(&r);
    assert_label(ev, "ECONNRESET", Some("ESTABLISHED"), "rst_received");
    let explain = ev["explain"].as_str().unwrap();
    assert!(explain.contains("a socket of this host reset it"), "{explain}");
    assert!(!explain.contains(" pid "), "{explain}");
    if ev["facts"]["peer_reset"]["reason_name"].is_string() {
        assert!(explain.contains("it aborted the connection (tcp_abort: e.g. `ss -K`)"), "{explain}");
    } else {
        assert!(explain.contains("its socket sent it in ESTABLISHED"), "{explain}");
    }
    assert_rst_segment(&r, ev, "aborted");
}

/// The seed expects ECONNABORTED from accept() when the client reset the queued connection.
/// Linux hands the dead connection to accept() anyway (inet_getname with peer=2 accepts a
/// closed socket); the read after it fails with the reset, which happened before the accept.
#[test]
fn reset_before_accept_surfaces_on_the_accepted_socket() {
    let r = run(&["accept-after-reset"], &[]);
    assert_eq!(r.client_step("accept")["errno"], 0, "Linux accepts the reset connection");
    assert_eq!(r.client_step("read")["errno"], 104);
    let ev = single_event(&r);
    assert_label(ev, "ECONNRESET", Some("ESTABLISHED"), "rst_received");
    assert_ne!(ev["cause_pid"], json!(r.client_pid), "the RST came from the client process's close");
    assert!(ev["cause_age_ns"].as_u64().unwrap() >= 40_000_000, "the RST predates the accept: {ev:#}");
}

#[test]
fn would_block_is_counted_and_printed_with_all_errors() {
    let r = run(&["would-block"], &["--all-errors"]);
    assert_eq!(r.client_step("read")["errno"], 11);
    assert_label(single_event(&r), "EAGAIN", Some("ESTABLISHED"), "would_block");

    let quiet = run(&["would-block"], &[]);
    assert!(quiet.events.is_empty(), "{:#?}", quiet.events);
    assert!(quiet.stderr.contains("0 failures, 0 printed; routine: EAGAIN 1"), "{}", quiet.stderr);
}

#[test]
fn interrupted_read_is_eintr() {
    let r = run(&["interrupted"], &["--all-errors"]);
    assert_eq!(r.client_step("read")["errno"], 4);
    let ev = single_event(&r);
    assert_label(ev, "EINTR", Some("ESTABLISHED"), "interrupted");
    assert_eq!(ev["ret"], -4);
    assert!(matches!(ev["kernel_ret"].as_i64(), None | Some(-516..=-512)), "{ev:#}");
}

/// Pipes, files and eventfds are never reported; a unix socket only with --all-sockets; a
/// connected UDP socket's ECONNREFUSED, which an ICMP port-unreachable set, by default, as
/// icmp_error (where the kernel has an error-report probe: before 5.14 in tracepoint mode it
/// has none, and the UDP failure stays behind --all-sockets, unexplained).
#[test]
fn only_sockets_are_reported_and_non_tcp_only_on_request() {
    let r = run(&["not-sockets"], &["--all-errors"]);
    for (step, errno) in [
        ("pipe_read", 11),
        ("pipe_write", 32),
        ("eventfd_read", 11),
        ("file_read", 9),
        ("unix_write", 32),
        ("udp_read", 111),
    ] {
        assert_eq!(r.client_step(step)["errno"], errno, "{step}");
    }
    let udp_explained = !socktrace_tests::fact_probe(&r, "error report").is_some_and(|p| p.starts_with("derived/"));
    if udp_explained {
        let udp = single_event(&r);
        assert_eq!(udp["fd"], r.client_step("udp_read")["fd"]);
        assert_label(udp, "ECONNREFUSED", None, "icmp_error");
    } else {
        assert!(r.events.is_empty(), "pipes, files, eventfds, unix and UDP sockets are silent: {:#?}", r.events);
    }

    let r = run(&["not-sockets"], &["--all-errors", "--all-sockets"]);
    assert_eq!(r.events.len(), 2, "{:#?}", r.events);
    let unix = event_for(&r, "unix_write");
    assert_eq!((unix["errno"].as_str(), unix["family"].as_str()), (Some("EPIPE"), Some("unix")));
    assert_eq!(unix["cause"], "unknown", "socktrace explains TCP and UDP-with-ICMP causes only");
    let udp = event_for(&r, "udp_read");
    assert_eq!((udp["errno"].as_str(), udp["family"].as_str()), (Some("ECONNREFUSED"), Some("inet")));
    assert_eq!(udp["cause"], if udp_explained { "icmp_error" } else { "unknown" });
}

#[test]
fn failure_on_a_non_main_thread() {
    let r = run(&["thread-refused"], &[]);
    let step = r.client_step("connect");
    let ev = single_event(&r);
    assert_label(ev, "ECONNREFUSED", Some("SYN_SENT"), "rst_received");
    assert_eq!(ev["tid"], step["tid"]);
    assert_eq!(ev["pid"], json!(r.client_pid));
    assert_ne!(ev["tid"], ev["pid"]);
}

/// Client and peer in two namespaces joined by veth: the peer's RST crosses the veth and is
/// processed in softirq while another task is on the CPU.
#[test]
fn reset_across_veth_is_joined_through_the_socket() {
    let cli = Netns::new("vc");
    let srv = Netns::new("vs");
    cli.veth_to(&srv, "10.199.1.1/24", "10.199.1.2/24");
    let r = in_netns(&cli, &["veth-reset", &srv.name, "10.199.1.2:0"], &[]);
    let step = r.client_step("read");
    assert_eq!(step["errno"], 104);
    let ev = single_event(&r);
    assert_label(ev, "ECONNRESET", Some("ESTABLISHED"), "rst_received");
    assert_eq!((ev["daddr"].as_str(), ev["saddr"].as_str()), (Some("10.199.1.2"), Some("10.199.1.1")));
    assert_ne!(ev["cause_pid"], json!(r.client_pid), "the RST was handled outside the client's context");
}

/// A router on the way has no route to the destination: its ICMP net-unreachable fails the
/// connect. Where socktrace sees ICMP arrive, the router is named as the sender, not the
/// destination.
#[test]
fn a_router_without_a_route_answers_net_unreachable() {
    let cli = Netns::new("rc");
    let router = Netns::new("rr");
    cli.veth_to(&router, "10.199.3.1/24", "10.199.3.2/24");
    cli.ip(&["route", "add", "10.199.4.0/24", "via", "10.199.3.2"]);
    router.exec(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
    let r = in_netns(&cli, &["connect", "10.199.4.5:80"], &[]);
    assert_eq!(r.client_step("connect")["errno"], 101, "ENETUNREACH");
    let ev = single_event(&r);
    assert_label(ev, "ENETUNREACH", Some("SYN_SENT"), "icmp_error");
    assert_icmp_sender(&r, ev, "10.199.3.2", "a router on the way", 3, 0, "net unreachable");
}

/// The process is out of descriptors: its accept4() fails with EMFILE while connections wait
/// in its listener's queue. Not "unknown": the limit and the queue are named.
#[test]
fn accept_out_of_descriptors_is_fd_limit() {
    let r = run(&["fd-limit"], &[]);
    let step = r.client_step("accept4");
    assert_eq!(step["errno"], 24, "EMFILE");
    let ev = single_event(&r);
    assert_label(ev, "EMFILE", Some("LISTEN"), "fd_limit");
    let limit = step["limit"].as_u64().unwrap();
    let explain = ev["explain"].as_str().unwrap();
    assert!(
        explain.contains(&format!(
            "all {limit} descriptors its limit allows open (RLIMIT_NOFILE soft {limit}, hard {limit})"
        )),
        "{explain}"
    );
    assert!(explain.contains(&format!("accept queue of 127.0.0.1:{} (3 queued, backlog", step["port"])), "{explain}");
    assert_eq!(
        (ev["resource"]["nofile_soft"].as_u64(), ev["resource"]["accept_queue"].as_u64()),
        (Some(limit), Some(3))
    );
}

/// The ephemeral ports of a namespace are used up (a 4-port ip_local_port_range): the next
/// connect fails with EADDRNOTAVAIL, explained with the range and who holds the ports.
#[test]
fn ephemeral_ports_used_up_is_no_local_port() {
    let ns = Netns::new("ports");
    ns.exec(&["sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=40000 40003"]);
    let r = in_netns(&ns, &["port-exhaustion", "127.0.0.1:9000"], &[]);
    let step = r.client_step("connect");
    assert_eq!(
        (step["errno"].as_i64(), step["held"].as_u64()),
        (Some(99), Some(4)),
        "EADDRNOTAVAIL after 4 connections"
    );
    let ev = single_event(&r);
    assert_label(ev, "EADDRNOTAVAIL", None, "no_local_port");
    let explain = ev["explain"].as_str().unwrap();
    assert!(
        explain.contains("all 4 ports of 40000-40003 are in use: 4 connections to 127.0.0.1:9000 (4 ESTABLISHED)"),
        "{explain}"
    );
    assert_eq!(ev["resource"]["port_range"], json!([40000, 40003]));
    assert_eq!(ev["resource"]["to_destination"]["ESTABLISHED"], 4);
}

/// The same full listener, started before the trace in a process socktrace does not trace:
/// its queue comes from socket diagnostics, its owner from the host's descriptor tables.
#[test]
fn a_full_listener_older_than_the_trace_is_still_named() {
    let r = run(&["queue-full", "before-trace"], &[]);
    let ev = assert_joined_to_the_full_listener(&r);
    assert!(ev["explain"].as_str().unwrap().contains("capped by net.core.somaxconn "), "{ev:#}");
    assert_eq!(ev["resource"]["listener"]["backlog"], 1);
}

/// The `queue-full` scenario's connect timed out, joined to the listener (backlog 1, two
/// connections waiting) and to its owner, the scenario's peer process. Its one event.
fn assert_joined_to_the_full_listener(r: &Run) -> &Value {
    let step = r.client_step("connect");
    assert_eq!(step["errno"], 110, "ETIMEDOUT");
    let ev = single_event(r);
    assert_label(ev, "ETIMEDOUT", Some("SYN_SENT"), "listen_overflow");
    let explain = ev["explain"].as_str().unwrap();
    let listener = format!("127.0.0.1:{} (pid {} \"scenario\")", step["dport"], step["peer_pid"]);
    assert!(explain.contains(&listener), "{explain}");
    assert!(explain.contains("2 connections wait in an accept queue of 1"), "{explain}");
    assert_eq!(ev["resource"]["listener"]["pid"], step["peer_pid"]);
    ev
}

/// A listener of this host whose queue overflows while a handshake completes, with
/// tcp_abort_on_overflow set: it resets the connection, and the client's read names why.
/// The listener's RST is traced from 6.x kernels on (`tcp_send_reset` with the segment it
/// answers); before, the RST is still named, its sender not.
#[test]
fn a_listener_that_resets_on_overflow_is_named() {
    let ns = Netns::new("abort");
    ns.exec(&["sysctl", "-q", "-w", "net.ipv4.tcp_abort_on_overflow=1"]);
    let r = in_netns(&ns, &["abort-on-overflow"], &[]);
    let step = r.client_step("read");
    assert_eq!(step["errno"], 104, "ECONNRESET");
    let ev = event_for(&r, "read");
    assert_label(ev, "ECONNRESET", Some("ESTABLISHED"), "rst_received");
    let explain = ev["explain"].as_str().unwrap();
    match ev["facts"]["peer_reset"].as_object() {
        Some(p) => {
            assert_eq!(p["state"], "LISTEN", "{p:?}");
            assert_eq!(p["accept_queue"], json!([3, 2]), "{p:?}");
            assert!(
                explain.contains(
                    "the listener of this host reset it: its accept queue was full (3 connections waiting, backlog 2)"
                ),
                "{explain}"
            );
            assert!(explain.contains("net.ipv4.tcp_abort_on_overflow"), "{explain}");
        }
        // Kernels whose tcp_send_reset tracepoint does not fire for a listener's RST.
        None => assert!(!explain.contains("listener"), "{explain}"),
    }
}

/// Restores net.ipv4.tcp_mem when dropped, whatever the test did.
struct TcpMemGuard(String);

impl Drop for TcpMemGuard {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/net/ipv4/tcp_mem", self.0.trim());
    }
}

/// TCP over its memory limit (tcp_mem lowered to one page for a moment, host-wide: there is no
/// per-namespace limit): a non-blocking send fails with EAGAIN, which is not the routine full
/// buffer of a slow reader but socket_memory, with the kernel's numbers at the failure.
#[test]
fn a_send_refused_for_tcp_memory_is_socket_memory() {
    let _restore = TcpMemGuard(std::fs::read_to_string("/proc/sys/net/ipv4/tcp_mem").unwrap());
    // By default, counted in the kernel like the routine EAGAIN, but under its own cause.
    let r = run(&["send-memory"], &[]);
    assert_eq!(r.client_step("send")["errno"], 11, "EAGAIN");
    // No failing call is printed. The scenario then closes the socket with its data unsent:
    // where the peer's window had reached zero by then, that close is rightly reported
    // (abandoned_zero_window), as it was once in a 6.12 VM.
    let calls: Vec<&Value> = r.events.iter().filter(|e| e["ended"].is_null()).collect();
    assert!(calls.is_empty(), "{calls:#?}");
    let rows = r.summary.as_ref().unwrap()["rows"].as_array().unwrap().clone();
    assert!(
        rows.iter().any(|row| row["errno"] == "EAGAIN" && row["cause"] == "socket_memory" && row["count"] == 1),
        "{rows:?}"
    );
    assert!(r.stderr.contains("1 non-blocking send failed with EAGAIN because TCP was out of memory"), "{}", r.stderr);
    // Each one, with the kernel's numbers at the failure, with --all-errors.
    let r = run(&["send-memory"], &["--all-errors"]);
    let step = r.client_step("send");
    assert_eq!(step["errno"], 11, "EAGAIN: {step}");
    let ev = r.events.iter().find(|e| e["fd"] == step["fd"] && e["cause"] == "socket_memory");
    let ev = ev.unwrap_or_else(|| panic!("no socket_memory event: {:#?}", r.events));
    assert_label(ev, "EAGAIN", Some("ESTABLISHED"), "socket_memory");
    let explain = ev["explain"].as_str().unwrap();
    assert!(explain.contains("TCP is out of memory"), "{explain}");
    assert!(explain.contains("(net.ipv4.tcp_mem: pressure at 1, limit 1)"), "{explain}");
    assert_eq!(ev["resource"]["tcp_mem"], json!([1, 1, 1]));
    assert!(ev["resource"]["tcp_mem_pages"].as_u64().unwrap() > 1, "{ev:#}");
}

/// A listener of this host that never accepts: its full queue makes the kernel drop the SYNs,
/// and the client's connect times out. Joined to the listener: its address, process and queue.
#[test]
fn connect_to_a_full_accept_queue_is_listen_overflow() {
    let r = run(&["queue-full"], &[]);
    assert_joined_to_the_full_listener(&r);
    // The summary counts the overflows of the traced process's namespace too.
    let overflows = r.summary.as_ref().unwrap()["listen_overflows"].as_u64().unwrap();
    assert!(overflows >= 2, "the SYN and its retransmission were dropped: {overflows}");
}
