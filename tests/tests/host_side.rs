//! The host's side of a failure: packets dropped in a namespace other than the traced
//! process's (a router's forward chain, a bridge), listeners socktrace never saw start, NAT.
//! Every network here is namespaces and veth pairs the tests build and remove.

use serde_json::json;
use socktrace_tests::{assert_label, hook_chain, single_event, trace_scenario, Netns, Run};

const SCENARIO: &str = env!("CARGO_BIN_EXE_scenario");

fn in_netns(ns: &Netns, args: &[&str], extra: &[&str]) -> Run {
    let mut full = vec!["--netns", ns.name.as_str()];
    full.extend_from_slice(args);
    trace_scenario(SCENARIO, &full, extra).unwrap()
}

/// A client namespace, a router namespace that forwards between it and a server namespace,
/// and the server namespace: 10.199.7.1 -> (10.199.7.2 | 10.199.8.1) -> 10.199.8.2.
struct Routed {
    client: Netns,
    router: Netns,
    server: Netns,
}

fn routed(tag: &str) -> Routed {
    let client = Netns::new(&format!("{tag}c"));
    let router = Netns::new(&format!("{tag}r"));
    let server = Netns::new(&format!("{tag}s"));
    client.veth_to(&router, "10.199.7.1/24", "10.199.7.2/24");
    router.veth_to(&server, "10.199.8.1/24", "10.199.8.2/24");
    client.ip(&["route", "add", "10.199.8.0/24", "via", "10.199.7.2"]);
    server.ip(&["route", "add", "10.199.7.0/24", "via", "10.199.8.1"]);
    router.exec(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
    client.exec(&["sysctl", "-q", "-w", "net.ipv4.tcp_syn_retries=1"]);
    Routed { client, router, server }
}

/// The router's forward chain drops the SYNs: the connect times out, and the explanation
/// names the drop where it happened: the router's namespace, the forward hook, the rule.
#[test]
fn syns_dropped_in_a_router_namespaces_forward_chain() {
    let net = routed("fwd");
    net.router.nft(&hook_chain("inet", "forward", &["tcp dport 9100 drop".into()]));
    let r = in_netns(&net.client, &["connect", "10.199.8.2:9100"], &[]);
    assert_eq!(r.client_step("connect")["errno"], 110);
    let ev = single_event(&r);
    assert_label(ev, "ETIMEDOUT", Some("SYN_SENT"), "timeout");
    let drops = ev["facts"]["drops"].as_array().unwrap_or_else(|| panic!("no drops: {ev:#}"));
    let sent = drops.iter().find(|d| d["direction"] == "sent").unwrap_or_else(|| panic!("no sent drops: {ev:#}"));
    assert!(sent["count"].as_u64().unwrap() >= 2, "{ev:#}");
    assert_eq!(sent["hook"], "forward", "{ev:#}");
    assert_eq!(
        (sent["netns_owner"]["kind"].as_str(), sent["netns_owner"]["name"].as_str()),
        (Some("named"), Some(net.router.name.as_str())),
        "{ev:#}"
    );
    let explain = ev["explain"].as_str().unwrap();
    assert!(
        explain.contains("were dropped on this host: a netfilter rule (nftables or iptables) dropped them"),
        "{explain}"
    );
    assert!(
        explain.contains(&format!(" in namespace {} (ip netns; netns {}) on ", net.router.name, sent["netns"])),
        "the router's namespace is named: {explain}"
    );
    assert!(explain.contains(", at its forward hook, "), "the hook is named: {explain}");
}

/// The same drop behind a connect the program gives up on itself (its own timeout, 1.5 s:
/// after the first retransmission): `abandoned_connect`, with the drops named where they
/// happened, as for the kernel's timeout.
#[test]
fn an_abandoned_connect_names_a_drop_in_a_router_namespace() {
    let net = routed("abn");
    net.router.nft(&hook_chain("inet", "forward", &["tcp dport 9100 drop".into()]));
    let r = in_netns(&net.client, &["give-up-connect", "10.199.8.2:9100", "1500"], &[]);
    assert_eq!(r.client_step("connect")["errno"], 115, "EINPROGRESS");
    assert_eq!(r.client_step("gave_up")["writable"], false);
    let ev = single_event(&r);
    assert_eq!((ev["cause"].as_str(), ev["syscall"].as_str()), (Some("abandoned_connect"), Some("close")), "{ev:#}");
    let drops = ev["facts"]["drops"].as_array().unwrap_or_else(|| panic!("no drops: {ev:#}"));
    let sent = drops.iter().find(|d| d["direction"] == "sent").unwrap_or_else(|| panic!("no sent drops: {ev:#}"));
    assert!(sent["count"].as_u64().unwrap() >= 2, "the SYN and its retransmission: {ev:#}");
    assert_eq!(sent["hook"], "forward", "{ev:#}");
    assert_eq!(sent["netns_owner"]["name"].as_str(), Some(net.router.name.as_str()), "{ev:#}");
    let explain = ev["explain"].as_str().unwrap();
    assert!(
        explain.contains(&format!(" in namespace {} (ip netns; netns {}) on ", net.router.name, sent["netns"])),
        "the router's namespace is named: {explain}"
    );
    assert!(explain.contains(", at its forward hook, "), "the hook is named: {explain}");
}

/// Runs `args` in the network namespace of process `pid`.
fn in_process_ns(pid: u32, args: &[&str]) {
    let pid = pid.to_string();
    let mut full = vec!["-t", pid.as_str(), "-n"];
    full.extend_from_slice(args);
    let out = std::process::Command::new("nsenter").args(&full).output().expect("nsenter (util-linux)");
    assert!(out.status.success(), "nsenter {full:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A container-like namespace: one process's own (not named in /run/netns), killed at drop.
struct Container(std::process::Child);

impl Container {
    fn start() -> Container {
        let child = std::process::Command::new("unshare")
            .args(["--net", "sleep", "120"])
            .spawn()
            .expect("unshare (util-linux)");
        let me = Container(child);
        // Bounded wait until the process is in its own namespace.
        let own = std::fs::read_link("/proc/self/ns/net").unwrap();
        for _ in 0..200 {
            if std::fs::read_link(format!("/proc/{}/ns/net", me.pid())).is_ok_and(|l| l != own) {
                in_process_ns(me.pid(), &["ip", "link", "set", "lo", "up"]);
                return me;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("unshare --net did not enter a namespace of its own");
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two container-like namespaces on a bridge (in a namespace of its own, as a host's
/// docker0 is): the bridge's own forward hook drops the SYNs to one of them. The drop is
/// named in the bridge's namespace, at the bridge's forward hook.
#[test]
fn syns_dropped_by_a_bridge_rule() {
    let client = Netns::new("brc");
    let bridge = Netns::new("brb");
    let server = Netns::new("brs");
    client.exec(&["sysctl", "-q", "-w", "net.ipv4.tcp_syn_retries=1"]);
    bridge.ip(&["link", "add", "br0", "type", "bridge"]);
    bridge.ip(&["link", "set", "br0", "up"]);
    let id = std::process::id();
    for (ns, port, addr) in
        [(&client, format!("bp{id}a"), "10.199.9.1/24"), (&server, format!("bp{id}b"), "10.199.9.2/24")]
    {
        let inner = format!("{port}i");
        let out = std::process::Command::new("ip")
            .args([
                "link",
                "add",
                &port,
                "netns",
                &bridge.name,
                "type",
                "veth",
                "peer",
                "name",
                &inner,
                "netns",
                &ns.name,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        bridge.ip(&["link", "set", &port, "master", "br0"]);
        bridge.ip(&["link", "set", &port, "up"]);
        ns.ip(&["addr", "add", addr, "dev", &inner]);
        ns.ip(&["link", "set", &inner, "up"]);
    }
    bridge.nft(&hook_chain("bridge", "forward", &["tcp dport 9101 drop".into()]));
    let r = in_netns(&client, &["connect", "10.199.9.2:9101"], &[]);
    assert_eq!(r.client_step("connect")["errno"], 110);
    let ev = single_event(&r);
    assert_label(ev, "ETIMEDOUT", Some("SYN_SENT"), "timeout");
    let sent = ev["facts"]["drops"].as_array().unwrap().iter().find(|d| d["direction"] == "sent").cloned();
    let sent = sent.unwrap_or_else(|| panic!("no sent drops: {ev:#}"));
    assert_eq!(sent["hook"], "bridge forward", "{ev:#}");
    assert_eq!(sent["netns_owner"]["name"], bridge.name.as_str(), "{ev:#}");
    let explain = ev["explain"].as_str().unwrap();
    assert!(explain.contains(&format!(" in namespace {} (ip netns; netns ", bridge.name)), "{explain}");
    assert!(explain.contains(", at its bridge forward hook, "), "{explain}");
}

/// The destination's own firewall drops the SYNs, in a container-like namespace that no
/// `ip netns` name points to: the namespace is named by a process living in it.
#[test]
fn syns_dropped_in_a_containers_namespace_name_a_process_in_it() {
    let client = Netns::new("ctc");
    client.exec(&["sysctl", "-q", "-w", "net.ipv4.tcp_syn_retries=1"]);
    let container = Container::start();
    let pid = container.pid().to_string();
    let (a, b) = (format!("ct{}a", std::process::id()), format!("ct{}b", std::process::id()));
    let out = std::process::Command::new("ip")
        .args(["link", "add", &a, "netns", &client.name, "type", "veth", "peer", "name", &b, "netns", &pid])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    client.ip(&["addr", "add", "10.199.10.1/24", "dev", &a]);
    client.ip(&["link", "set", &a, "up"]);
    in_process_ns(container.pid(), &["ip", "addr", "add", "10.199.10.2/24", "dev", &b]);
    in_process_ns(container.pid(), &["ip", "link", "set", &b, "up"]);
    let rules = socktrace_tests::input_chain("inet", &["tcp dport 9102 drop".into()]);
    let mut nft = std::process::Command::new("nsenter")
        .args(["-t", &pid, "-n", "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut nft.stdin.take().unwrap(), rules.as_bytes()).unwrap();
    assert!(nft.wait().unwrap().success());
    let r = in_netns(&client, &["connect", "10.199.10.2:9102"], &[]);
    assert_eq!(r.client_step("connect")["errno"], 110);
    let ev = single_event(&r);
    assert_label(ev, "ETIMEDOUT", Some("SYN_SENT"), "timeout");
    let sent = ev["facts"]["drops"].as_array().unwrap().iter().find(|d| d["direction"] == "sent").cloned();
    let sent = sent.unwrap_or_else(|| panic!("no sent drops: {ev:#}"));
    assert_eq!(sent["hook"], "input", "{ev:#}");
    let owner = &sent["netns_owner"];
    assert_eq!(
        (owner["kind"].as_str(), owner["pid"].as_u64()),
        (Some("process"), Some(container.pid() as u64)),
        "{ev:#}"
    );
    let explain = ev["explain"].as_str().unwrap();
    assert!(explain.contains(&format!(" in the namespace of pid {} ", container.pid())), "{explain}");
    assert!(explain.contains(", at its input hook, "), "{explain}");
}

/// A helper process that prints one line when it is ready, killed at drop.
struct Helper(std::process::Child);

impl Helper {
    /// `python3 -c CODE` in namespace `ns`; waits (bounded) for its first line.
    fn python(ns: &Netns, code: &str) -> Helper {
        use std::io::BufRead as _;
        let mut child = std::process::Command::new("ip")
            .args(["netns", "exec", &ns.name, "python3", "-c", code])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(std::time::Duration::from_secs(20)).expect("the helper never said it was ready");
        assert_eq!(line.trim(), "ready", "{line}");
        Helper(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A listener in another namespace, started before the trace by a process socktrace does not
/// trace, bound to any address, with listen(1) and never accepting; two connections already
/// fill its queue. The traced client's connect times out, explained by that listener: its
/// namespace, its owner, its queue, and the SYNs that namespace dropped since the attach.
#[test]
fn a_full_listener_in_another_namespace_older_than_the_trace() {
    let client = Netns::new("olc");
    let server = Netns::new("ols");
    client.veth_to(&server, "10.199.11.1/24", "10.199.11.2/24");
    client.exec(&["sysctl", "-q", "-w", "net.ipv4.tcp_syn_retries=1"]);
    let listener = Helper::python(
        &server,
        "import socket,time\n\
         s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('0.0.0.0', 9103)); s.listen(1); print('ready', flush=True); time.sleep(120)",
    );
    // Two handshakes complete into the queue (a backlog of 1 holds two): it is full.
    let _fillers = Helper::python(
        &client,
        "import socket,time\n\
         c=[socket.create_connection(('10.199.11.2', 9103), timeout=5) for _ in range(2)]\n\
         time.sleep(0.3); print('ready', flush=True); time.sleep(120)",
    );
    let r = in_netns(&client, &["connect", "10.199.11.2:9103"], &[]);
    assert_eq!(r.client_step("connect")["errno"], 110);
    let ev = single_event(&r);
    assert_label(ev, "ETIMEDOUT", Some("SYN_SENT"), "listen_overflow");
    let l = &ev["resource"]["listener"];
    assert_eq!((l["queued"].as_u64(), l["backlog"].as_u64()), (Some(2), Some(1)), "{ev:#}");
    assert_eq!(l["pid"].as_u64(), Some(listener.pid() as u64), "{ev:#}");
    assert_eq!(l["netns_owner"]["name"], server.name.as_str(), "{ev:#}");
    assert!(l["syns_dropped_since_attach"].as_u64().is_some_and(|n| n >= 1), "{ev:#}");
    let explain = ev["explain"].as_str().unwrap();
    let want = format!(
        "the listener on 0.0.0.0:9103 (pid {} \"python3\") of this host, in namespace {} (ip netns; netns {}), does not \
         accept fast enough: 2 connections wait in an accept queue of 1",
        listener.pid(),
        server.name,
        l["netns"]
    );
    assert!(explain.contains(&want), "{explain}\nwanted: {want}");
    assert!(explain.contains(" since socktrace attached (ListenDrops)"), "{explain}");
}

/// An untraced listener of another namespace, older than the trace, whose namespace sets
/// tcp_abort_on_overflow: its queue (TCP_DEFER_ACCEPT, backlog 2) overflows while the traced
/// client's handshakes complete, and it resets the last one. The client's read names the
/// listener's overflow, not "no socket".
#[test]
fn an_older_listener_of_another_namespace_that_resets_on_overflow() {
    let client = Netns::new("aoc");
    let server = Netns::new("aos");
    client.veth_to(&server, "10.199.12.1/24", "10.199.12.2/24");
    server.exec(&["sysctl", "-q", "-w", "net.ipv4.tcp_abort_on_overflow=1"]);
    let _listener = Helper::python(
        &server,
        "import socket,time\n\
         s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 10)\n\
         s.bind(('0.0.0.0', 9104)); s.listen(2); print('ready', flush=True); time.sleep(120)",
    );
    let r = in_netns(&client, &["overflow-client", "10.199.12.2:9104"], &[]);
    assert_eq!(r.client_step("read")["errno"], 104, "ECONNRESET");
    let ev = single_event(&r);
    assert_label(ev, "ECONNRESET", Some("ESTABLISHED"), "rst_received");
    let p = ev["facts"]["peer_reset"].as_object().unwrap_or_else(|| panic!("no peer_reset: {ev:#}"));
    assert_eq!((&p["state"], &p["accept_queue"]), (&json!("LISTEN"), &json!([3, 2])), "{ev:#}");
    let explain = ev["explain"].as_str().unwrap();
    assert!(
        explain.contains(
            "the listener of this host reset it: its accept queue was full (3 connections waiting, backlog 2)"
        ),
        "{explain}"
    );
}

/// A router namespace standing in for the host rewrites a service address (DNAT in its
/// prerouting chain, as kube-proxy does for a Service) to ports of the server namespace:
/// 10.96.7.10:81 to one whose SYNs the server's firewall drops, :82 to a listener that resets
/// the connection, :83 to a port where nothing listens. A process lives in the router's
/// namespace, as one does in a host's.
fn natted(tag: &str) -> (Routed, Helper) {
    let net = routed(tag);
    net.client.ip(&["route", "add", "10.96.7.0/24", "via", "10.199.7.2"]);
    net.router.nft(
        "table ip socktrace_test {\n  chain prerouting {\n    type nat hook prerouting priority -100;\n    \
         ip daddr 10.96.7.10 tcp dport 81 dnat to 10.199.8.2:9105\n    \
         ip daddr 10.96.7.10 tcp dport 82 dnat to 10.199.8.2:9106\n    \
         ip daddr 10.96.7.10 tcp dport 83 dnat to 10.199.8.2:9107\n  }\n}\n",
    );
    net.server.input_rules("inet", &["tcp dport 9105 drop".into()]);
    let resident = Helper::python(&net.router, "import time\nprint('ready', flush=True)\ntime.sleep(120)");
    (net, resident)
}

/// The NAT facts of `ev`, checked: the address dialled, the one it went to, the router's
/// namespace; and the explanation that names them.
fn assert_natted(ev: &serde_json::Value, net: &Routed, dialled: &str, translated: &str) {
    let nat = &ev["facts"]["nat"];
    assert_eq!(
        (nat["dialled"].as_str(), nat["translated"].as_str(), nat["netns_owner"]["name"].as_str()),
        (Some(dialled), Some(translated), Some(net.router.name.as_str())),
        "{ev:#}"
    );
    let explain = ev["explain"].as_str().unwrap();
    let want = format!(
        "; the program dialled {dialled}, which this host's NAT, in namespace {} (ip netns; netns {}), sent on to \
         {translated}",
        net.router.name, nat["netns"]
    );
    assert!(explain.contains(&want), "{explain}\nwanted: {want}");
}

/// A connect to the service address times out: the SYNs went, rewritten, to a port whose
/// firewall drops them. Both addresses are named, and the drop in the server's namespace.
#[test]
fn a_dnat_to_a_silent_port_names_both_addresses() {
    let (net, _resident) = natted("natt");
    let r = in_netns(&net.client, &["connect", "10.96.7.10:81"], &[]);
    assert_eq!(r.client_step("connect")["errno"], 110, "ETIMEDOUT");
    let ev = single_event(&r);
    assert_label(ev, "ETIMEDOUT", Some("SYN_SENT"), "timeout");
    assert_natted(ev, &net, "10.96.7.10:81", "10.199.8.2:9105");
}

/// The service's port is closed: the server's kernel refuses the rewritten SYN, and the
/// router's connection tracking deletes the entry with the RST, so no table shows the rewrite
/// at the failure. The refusal names the address that refused, where nothing listens, in
/// the server's namespace (a process lives in it, as one does in a pod), and the address
/// dialled.
#[test]
fn a_dnat_to_a_closed_port_names_both_addresses() {
    let (net, _resident) = natted("natc");
    refused_through_nat(&net.client, &net.server, "10.96.7.10:83", "10.199.8.2:9107");
}

/// A connect from `client` to `dialled`, which this host rewrites to `translated`, a closed
/// port of `server`'s namespace (a process lives in it, as one does in a pod): refused, and
/// the refusal names both addresses and the server's namespace.
fn refused_through_nat(client: &Netns, server: &Netns, dialled: &str, translated: &str) {
    let _server_resident = Helper::python(server, "import time\nprint('ready', flush=True)\ntime.sleep(120)");
    let r = in_netns(client, &["connect", dialled], &[]);
    assert_eq!(r.client_step("connect")["errno"], 111, "ECONNREFUSED");
    let ev = single_event(&r);
    assert_label(ev, "ECONNREFUSED", Some("SYN_SENT"), "rst_received");
    let nat = &ev["facts"]["nat"];
    assert_eq!(
        (nat["dialled"].as_str(), nat["translated"].as_str(), nat["seen"].as_str()),
        (Some(dialled), Some(translated), Some("refusal")),
        "{ev:#}"
    );
    assert_eq!(nat["netns_owner"]["name"].as_str(), Some(server.name.as_str()), "{ev:#}");
    let explain = ev["explain"].as_str().unwrap();
    let want = format!(
        "peer answered the SYN with RST: nothing listens on {translated}, in namespace {} (ip netns; netns {}), \
         where this host's NAT sends connections to {dialled}",
        server.name, nat["netns"]
    );
    assert!(explain.contains(&want), "{explain}\nwanted: {want}");
}

/// A refused connect whose destination nobody rewrote has no NAT, though the kernel kept its
/// refused SYN.
#[test]
fn a_refusal_without_nat_names_no_rewrite() {
    let (net, _resident) = natted("natn");
    let _server_resident = Helper::python(&net.server, "import time\nprint('ready', flush=True)\ntime.sleep(120)");
    let r = in_netns(&net.client, &["connect", "10.199.8.2:9107"], &[]);
    assert_eq!(r.client_step("connect")["errno"], 111, "ECONNREFUSED");
    let ev = single_event(&r);
    assert_label(ev, "ECONNREFUSED", Some("SYN_SENT"), "rst_received");
    assert!(ev["facts"]["nat"].is_null(), "{ev:#}");
    assert!(!ev["explain"].as_str().unwrap().contains("NAT"), "{ev:#}");
}

/// The host's own namespace as a container host's: a client namespace and a server namespace
/// each joined to it by a veth pair, and its prerouting chain rewriting a service address to
/// the server (DNAT, as kube-proxy or Docker do): 10.96.9.10:82 to a listener that resets,
/// :83 to a closed port. Everything it adds to the host's namespace (the two links and their
/// routes, an nftables table, IPv4 forwarding) it removes or restores on drop. One at a time:
/// the host's namespace is shared by the tests of this binary.
struct HostNat {
    client: Netns,
    server: Netns,
    links: Vec<String>,
    table: String,
    forwarding_was: String,
    /// Dropped last: the next test's setup waits for this one's teardown.
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

static HOST_NAMESPACE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn sh(args: &[&str]) {
    let out = std::process::Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn host_natted(tag: &str) -> HostNat {
    let one_at_a_time = HOST_NAMESPACE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let client = Netns::new(&format!("{tag}c"));
    let server = Netns::new(&format!("{tag}s"));
    let id = std::process::id();
    let forwarding_was = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap().trim().to_string();
    let mut host = HostNat {
        links: Vec::new(),
        table: format!("socktrace_test_{tag}_{id}"),
        forwarding_was,
        client,
        server,
        _one_at_a_time: one_at_a_time,
    };
    for (ns, side, host_cidr, ns_cidr, gateway) in [
        (&host.client, "c", "10.199.31.254/24", "10.199.31.1/24", "10.199.31.254"),
        (&host.server, "s", "10.199.32.254/24", "10.199.32.2/24", "10.199.32.254"),
    ] {
        let (ours, theirs) = (format!("sth{side}{id}"), format!("stn{side}{id}"));
        sh(&["ip", "link", "add", &ours, "type", "veth", "peer", "name", &theirs, "netns", &ns.name]);
        host.links.push(ours.clone());
        sh(&["ip", "addr", "add", host_cidr, "dev", &ours]);
        sh(&["ip", "link", "set", &ours, "up"]);
        ns.ip(&["addr", "add", ns_cidr, "dev", &theirs]);
        ns.ip(&["link", "set", &theirs, "up"]);
        ns.ip(&["route", "add", "default", "via", gateway]);
    }
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
    let ruleset = format!(
        "table ip {} {{\n  chain prerouting {{\n    type nat hook prerouting priority -100;\n    \
         ip daddr 10.96.9.10 tcp dport 82 dnat to 10.199.32.2:9106\n    \
         ip daddr 10.96.9.10 tcp dport 83 dnat to 10.199.32.2:9107\n  }}\n}}\n",
        host.table
    );
    let mut nft =
        std::process::Command::new("nft").args(["-f", "-"]).stdin(std::process::Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut nft.stdin.take().unwrap(), ruleset.as_bytes()).unwrap();
    assert!(nft.wait().unwrap().success(), "nft rejected: {ruleset}");
    host.client.exec(&["sysctl", "-q", "-w", "net.ipv4.tcp_syn_retries=1"]);
    host
}

impl Drop for HostNat {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft").args(["delete", "table", "ip", &self.table]).output();
        for l in &self.links {
            let _ = std::process::Command::new("ip").args(["link", "del", l]).output();
        }
        let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", &self.forwarding_was);
    }
}

/// The host's namespace rewrites the service address to a closed port of the server's: the
/// refusal names the address that refused, in the server's namespace (a process lives in
/// it, as one does in a pod), and the address dialled.
#[test]
fn a_dnat_in_the_host_namespace_to_a_closed_port_names_both_addresses() {
    let host = host_natted("hnc");
    refused_through_nat(&host.client, &host.server, "10.96.9.10:83", "10.199.32.2:9107");
}

/// The host's namespace rewrites the service address to a listener that resets: the reset
/// names both addresses and the host's namespace, whose connection tracking holds the entry.
#[test]
fn a_dnat_in_the_host_namespace_to_a_listener_that_resets_names_both_addresses() {
    let host = host_natted("hnr");
    let r = in_netns(&host.client, &["veth-reset", &host.server.name, "10.199.32.2:9106", "10.96.9.10:82"], &[]);
    assert_eq!(r.client_step("read")["errno"], 104, "ECONNRESET");
    let ev = single_event(&r);
    assert_label(ev, "ECONNRESET", Some("ESTABLISHED"), "rst_received");
    let nat = &ev["facts"]["nat"];
    assert_eq!(
        (
            nat["dialled"].as_str(),
            nat["translated"].as_str(),
            nat["seen"].as_str(),
            nat["netns_owner"]["kind"].as_str()
        ),
        (Some("10.96.9.10:82"), Some("10.199.32.2:9106"), Some("conntrack"), Some("host")),
        "{ev:#}"
    );
    let explain = ev["explain"].as_str().unwrap();
    let want = format!(
        "; the program dialled 10.96.9.10:82, which this host's NAT, in the host's namespace (netns {}), sent on to \
         10.199.32.2:9106",
        nat["netns"]
    );
    assert!(explain.contains(&want), "{explain}\nwanted: {want}");
}

/// The service's listener resets the connection: the reset names both addresses.
#[test]
fn a_dnat_to_a_listener_that_resets_names_both_addresses() {
    let (net, _resident) = natted("natr");
    let r = in_netns(&net.client, &["veth-reset", &net.server.name, "10.199.8.2:9106", "10.96.7.10:82"], &[]);
    assert_eq!(r.client_step("read")["errno"], 104, "ECONNRESET");
    let ev = single_event(&r);
    assert_label(ev, "ECONNRESET", Some("ESTABLISHED"), "rst_received");
    assert_natted(ev, &net, "10.96.7.10:82", "10.199.8.2:9106");
}
