//! Applications that enforce their own timeouts, end to end: nginx, curl, CPython, Java, Go
//! and Node give up on a blackholed connect or a silent server and close the socket (no
//! system call fails), traced by the real socktrace, which must name the abandonment on the
//! call that ended the socket. Then what must stay quiet (a complete exchange, an idle
//! keep-alive connection closed, Happy Eyeballs) and a peer killed with SIGKILL.
//!
//! Each test first checks that the program did what the fixture promises (exit code, message,
//! about one second: see socktrace_tests::apps), then socktrace's account. What socktrace
//! must say is written once, in the helpers below.
//!
//! Every test builds its own namespaces, on a subnet of its own (10.77.N.0/24).

use serde_json::Value;
use socktrace_tests::apps::{self, AppRun, Lab, Mode, BLACKHOLE_PORT, KILLED_COMM, SILENT_PORT};

// ---------------------------------------------------------------------------------------
// What socktrace promises for these programs.

/// Causes socktrace counts but never prints by default.
const ROUTINE_CAUSES: &[&str] = &["would_block", "interrupted", "in_progress", "cancelled"];

/// `got` is the address `want` (IPv4), or the same IPv4-mapped (Java connects IPv4 through
/// an IPv6 socket).
fn is_addr(got: &Value, want: &str) -> bool {
    got == want || got.as_str() == Some(&format!("::ffff:{want}"))
}

fn dump(run: &AppRun) -> String {
    let counted =
        run.summary.as_ref().map(|s| format!("{} failing calls counted, {} printed", s["failures"], s["printed"]));
    format!(
        "socktrace printed {:#?}\n{}\nstderr:\n{}",
        run.events,
        counted.unwrap_or_else(|| "no summary".into()),
        run.stderr
    )
}

/// The one line socktrace printed with `cause` for the socket to `daddr:dport`: on the call
/// `syscall` that ended it, by the process `pid`.
#[track_caller]
fn abandoned<'a>(run: &'a AppRun, cause: &str, syscall: &str, pid: u32, daddr: &str, dport: u16) -> &'a Value {
    let hits: Vec<&Value> = run
        .events
        .iter()
        .filter(|e| e["cause"] == cause && is_addr(&e["daddr"], daddr) && e["dport"] == dport)
        .collect();
    assert_eq!(hits.len(), 1, "expected one {cause} line for {daddr}:{dport}; {}", dump(run));
    let ev = hits[0];
    assert_eq!(ev["syscall"], syscall, "the call that ended the socket: {ev:#}");
    assert_eq!(ev["pid"], pid, "{ev:#}");
    assert!(ev["explain"].as_str().is_some_and(|s| !s.is_empty()), "explain in {ev:#}");
    ev
}

/// A connect to the blackhole, given up by the program: `abandoned_connect` in SYN_SENT,
/// with the SYNs named as dropped on this host by a netfilter rule.
#[track_caller]
fn assert_abandoned_connect_to_blackhole(run: &AppRun, syscall: &str, pid: u32, lab: &Lab) -> Value {
    let ev = abandoned(run, "abandoned_connect", syscall, pid, &lab.upstream_addr(), BLACKHOLE_PORT);
    assert_eq!(ev["state"], "SYN_SENT", "{ev:#}");
    let explain = ev["explain"].as_str().unwrap();
    assert!(explain.contains("SYN"), "how many SYNs were sent: {explain}");
    assert!(explain.contains("dropped on this host") && explain.contains("netfilter"), "why no answer: {explain}");
    ev.clone()
}

/// A request to the silent server, given up by the program: `abandoned_no_reply` on an
/// ESTABLISHED socket, saying the peer acknowledged and sent nothing.
#[track_caller]
fn assert_abandoned_no_reply(run: &AppRun, syscall: &str, pid: u32, lab: &Lab) -> Value {
    let ev = abandoned(run, "abandoned_no_reply", syscall, pid, &lab.upstream_addr(), SILENT_PORT);
    assert_eq!(ev["state"], "ESTABLISHED", "{ev:#}");
    let explain = ev["explain"].as_str().unwrap();
    assert!(explain.contains("sent nothing") || explain.contains("no reply"), "{explain}");
    ev.clone()
}

/// Nothing abandoned, nothing failed: no line beyond the routine ones (which socktrace does
/// not print by default anyway).
#[track_caller]
fn assert_no_failure_lines(run: &AppRun) {
    let printed: Vec<&Value> =
        run.events.iter().filter(|e| !ROUTINE_CAUSES.contains(&e["cause"].as_str().unwrap_or(""))).collect();
    assert!(printed.is_empty(), "expected no failure line; {}", dump(run));
}

/// The RST of a peer killed with SIGKILL, named as such with the peer's process name.
#[track_caller]
fn assert_reset_by_killed_peer(ev: &Value, name: &str) {
    assert_eq!(ev["errno"], "ECONNRESET", "{ev:#}");
    assert_eq!(ev["cause"], "rst_received", "{ev:#}");
    let explain = ev["explain"].as_str().unwrap_or("");
    assert!(explain.contains("killed by SIGKILL") && explain.contains(name), "{explain}");
}

/// socktrace itself ran fine (it exits with the program's status, checked by the fixture).
#[track_caller]
fn traced(run: &AppRun) -> &AppRun {
    assert!(run.stderr.contains("socktrace: attached"), "{}", run.stderr);
    run
}

// ---------------------------------------------------------------------------------------
// The programs.

/// The fixture's pid, and the one the program reported itself, agree.
#[track_caller]
fn reported_pid(run: &AppRun) -> u32 {
    let pid = run.report()["pid"].as_u64().unwrap_or(0) as u32;
    assert_eq!(pid, run.pid, "the program's own pid: {}", run.stdout);
    pid
}

#[test]
fn nginx_proxy_connect_and_read_timeouts() {
    let lab = Lab::new(11);
    let r = apps::nginx_proxy(&lab, Mode::Socktrace).unwrap();
    let run = traced(&r.nginx);
    // The worker gave up on both upstream connections, closing them.
    assert_abandoned_connect_to_blackhole(run, "close", r.worker, &lab);
    assert_abandoned_no_reply(run, "close", r.worker, &lab);
}

#[test]
fn curl_connect_timeout() {
    let lab = Lab::new(12);
    let run = apps::curl_connect_timeout(&lab, Mode::Socktrace).unwrap();
    assert_abandoned_connect_to_blackhole(traced(&run), "close", run.pid, &lab);
}

#[test]
fn python_create_connection_timeout() {
    let lab = Lab::new(13);
    let run = apps::python_connect_timeout(&lab, Mode::Socktrace).unwrap();
    let pid = reported_pid(&run);
    assert_abandoned_connect_to_blackhole(traced(&run), "close", pid, &lab);
}

#[test]
fn python_recv_timeout() {
    let lab = Lab::new(14);
    let run = apps::python_read_timeout(&lab, Mode::Socktrace).unwrap();
    let pid = reported_pid(&run);
    let ev = assert_abandoned_no_reply(traced(&run), "close", pid, &lab);
    assert_eq!(ev["fd"], run.report()["fd"], "{ev:#}");
    assert_eq!(ev["sport"], run.report()["sport"], "{ev:#}");
}

#[test]
fn java_http_client_connect_timeout() {
    let lab = Lab::new(15);
    let run = apps::java_connect_timeout(&lab, Mode::Socktrace).unwrap();
    let pid = reported_pid(&run);
    assert_abandoned_connect_to_blackhole(traced(&run), "close", pid, &lab);
}

/// The exit closes what the program left open, after the process's exit was traced: the
/// abandoned connect is still its process's, ended by its exit.
#[test]
fn python_exit_while_connecting() {
    let lab = Lab::new(25);
    let run = apps::python_exit_while_connecting(&lab, Mode::Socktrace).unwrap();
    let pid = reported_pid(&run);
    let ev = assert_abandoned_connect_to_blackhole(traced(&run), "exit", pid, &lab);
    assert_eq!(ev["ended"]["exit"], "status 3", "{ev:#}");
}

/// Connects closed within a millisecond of their SYN are counted (`closed_at_once`), not
/// printed as abandoned: nothing could have answered yet. One kept 50 ms is abandoned, and
/// its wait reads in milliseconds.
#[test]
fn connects_closed_at_once_are_counted_not_printed() {
    let lab = Lab::new(26);
    let run = apps::python_scan(&lab, Mode::Socktrace).unwrap();
    let sport = run.report()["sport"].clone();
    let abandoned: Vec<&Value> = traced(&run).events.iter().filter(|e| e["cause"] == "abandoned_connect").collect();
    let late = abandoned.iter().find(|e| e["sport"] == sport).unwrap_or_else(|| panic!("{}", dump(&run)));
    let explain = late["explain"].as_str().unwrap();
    assert!(explain.contains(" ms after 1 SYN"), "the wait in milliseconds: {explain}");
    let summary = run.summary.as_ref().expect("a summary");
    let at_once: u64 = summary["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["cause"] == "closed_at_once" && r["state"] == "SYN_SENT")
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    // A connect preempted for over a millisecond before its close is abandoned: rare here,
    // and still accounted.
    assert!(at_once >= 90, "closed_at_once {at_once}: {}", dump(&run));
    assert_eq!(at_once + abandoned.len() as u64, 101, "{}", dump(&run));
    assert_eq!(summary["routine"]["closed_at_once"], at_once, "{summary}");
}

#[test]
fn go_http_client_timeout_connecting() {
    let lab = Lab::new(16);
    let run = apps::go_connect_timeout(&lab, Mode::Socktrace).unwrap();
    let pid = reported_pid(&run);
    assert_abandoned_connect_to_blackhole(traced(&run), "close", pid, &lab);
}

#[test]
fn go_http_client_timeout_awaiting_headers() {
    let lab = Lab::new(17);
    let run = apps::go_read_timeout(&lab, Mode::Socktrace).unwrap();
    let pid = reported_pid(&run);
    assert_abandoned_no_reply(traced(&run), "close", pid, &lab);
}

#[test]
fn node_socket_timeout_connecting() {
    let lab = Lab::new(18);
    let run = apps::node_connect_timeout(&lab, Mode::Socktrace).unwrap();
    let pid = reported_pid(&run);
    assert_abandoned_connect_to_blackhole(traced(&run), "close", pid, &lab);
}

#[test]
fn node_socket_timeout_awaiting_reply() {
    let lab = Lab::new(19);
    let run = apps::node_read_timeout(&lab, Mode::Socktrace).unwrap();
    let pid = reported_pid(&run);
    assert_abandoned_no_reply(traced(&run), "close", pid, &lab);
}

#[test]
fn quiet_complete_http_exchange() {
    let lab = Lab::new(20);
    let run = apps::curl_complete_exchange(&lab, Mode::Socktrace).unwrap();
    assert_no_failure_lines(traced(&run));
}

#[test]
fn quiet_keepalive_connection_closed_idle() {
    let lab = Lab::new(21);
    let run = apps::python_keepalive_idle_close(&lab, Mode::Socktrace).unwrap();
    assert_no_failure_lines(traced(&run));
}

/// Happy Eyeballs, ::1 silent: the connect curl drops because 127.0.0.1 answered first is
/// counted as routine (`superseded`), never printed.
#[test]
fn quiet_happy_eyeballs() {
    let lab = Lab::new(22);
    let run = apps::curl_happy_eyeballs_v6_silent(&lab, Mode::Socktrace).unwrap();
    assert_no_failure_lines(traced(&run));
    let routine = run.summary.as_ref().map(|s| s["rows"].clone()).unwrap_or_default();
    assert!(routine.to_string().contains("superseded"), "the lost connect is counted: {}", dump(&run));
}

/// Happy Eyeballs, ::1 refused: a real refusal, printed, whose line says the program's
/// fallback to 127.0.0.1 worked.
#[test]
fn happy_eyeballs_refusal_names_the_fallback() {
    let lab = Lab::new(24);
    let run = apps::curl_happy_eyeballs(&lab, Mode::Socktrace).unwrap();
    let refused: Vec<&Value> = traced(&run).events.iter().filter(|e| e["errno"] == "ECONNREFUSED").collect();
    assert_eq!(refused.len(), 1, "{}", dump(&run));
    let explain = refused[0]["explain"].as_str().unwrap();
    assert_eq!(refused[0]["daddr"], "::1", "{explain}");
    assert!(
        explain.contains("the program then connected to 127.0.0.1:") && explain.contains("its fallback worked"),
        "{explain}"
    );
}

#[test]
fn peer_killed_with_sigkill() {
    let lab = Lab::new(23);
    let k = apps::killed_peer(&lab, Mode::Socktrace).unwrap();
    let run = traced(&k.client);
    let report = run.report();
    let resets: Vec<&Value> = run.events.iter().filter(|e| e["errno"] == "ECONNRESET").collect();
    assert_eq!(resets.len(), 1, "{}", dump(run));
    let ev = resets[0];
    // Python's recv is recvfrom.
    assert_eq!(ev["syscall"], "recvfrom", "{ev:#}");
    assert_eq!((&ev["fd"], &ev["sport"]), (&report["fd"], &report["sport"]), "{ev:#}");
    assert!(is_addr(&ev["daddr"], &lab.upstream_addr()), "{ev:#}");
    assert_reset_by_killed_peer(ev, KILLED_COMM);
}
