//! The other doors a socket call fails through: io_uring requests (no syscall of their own),
//! the copy paths (sendfile, splice) and shutdown, and an error read with SO_ERROR on a socket
//! that never connected. Each is made to happen for real and checked like a syscall.

use serde_json::Value;
use socktrace_tests::{assert_icmp_sender, assert_label, single_event, trace_scenario, Run};

const SCENARIO: &str = env!("CARGO_BIN_EXE_scenario");

fn run(args: &[&str], extra: &[&str]) -> Run {
    trace_scenario(SCENARIO, args, extra).unwrap()
}

/// The event for the scenario's step `step`, matched by errno (and fd where it has one).
fn event_for<'a>(run: &'a Run, step: &str) -> &'a Value {
    let c = run.client_step(step);
    run.events
        .iter()
        .find(|e| {
            let fd = if e["fixed_file"] == true { &c["fixed_index"] } else { &c["fd"] };
            e["ret"].as_i64() == c["errno"].as_i64().map(|n| -n) && (e["fd"].is_null() || e["fd"] == *fd)
        })
        .unwrap_or_else(|| panic!("no event for step {step} ({c}); events: {:#?}\nstderr: {}", run.events, run.stderr))
}

/// Whether this kernel's io_uring records carry the request (about 5.19+): the io_uring door
/// can be watched. Read from the format file, as a user would check.
fn kernel_has_io_uring_door() -> bool {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"].iter().any(|t| {
        std::fs::read_to_string(format!("{t}/events/io_uring/io_uring_complete/format"))
            .is_ok_and(|f| f.contains(" req;"))
    })
}

/// The io_uring door is watched where the kernel has it and the attach line says so; where it
/// has not (5.10), socktrace says why it is not watched, and reports nothing it cannot see.
/// Returns whether the door is watched.
fn io_uring_door(r: &Run) -> bool {
    if kernel_has_io_uring_door() {
        // No trace record wherever the mode allows: every kernel with the door has the BTF and
        // raw tracepoints, with a layout socktrace knows; the classic ones in the other modes.
        let mode = std::env::var("SOCKTRACE_TEST_PROBE_MODE").unwrap_or_else(|_| "auto".into());
        let probe = match mode.as_str() {
            "auto" | "tp_btf" => "tp_btf/io_uring_complete (+raw_tracepoint/io_uring_file_get)",
            _ => "tracepoint/io_uring:io_uring_complete (+io_uring_file_get)",
        };
        let used = socktrace_tests::fact_probe(r, "failing io_uring request");
        assert_eq!(used.as_deref(), Some(probe), "probe mode {mode}: {:#?}", r.summary);
        let door = r.summary.as_ref().and_then(|s| s["probes"].as_array().cloned()).unwrap_or_default();
        let door = door.iter().find(|p| p["event"] == "failing io_uring request").unwrap();
        assert_eq!(door["passed_over"], serde_json::json!([]), "no fallback: {door}");
        assert!(!r.stderr.contains("io_uring requests"), "{}", r.stderr);
        true
    } else {
        assert!(
            r.stderr.contains("failing io_uring requests") && r.stderr.contains("not visible on this kernel"),
            "the unwatched door must be named: {}",
            r.stderr
        );
        assert!(
            r.events.iter().all(|e| !e["syscall"].as_str().unwrap_or("").starts_with("io_uring:")),
            "{:#?}",
            r.events
        );
        false
    }
}

#[test]
fn io_uring_connect_refused() {
    let r = run(&["uring-refused"], &[]);
    if !io_uring_door(&r) {
        return;
    }
    let step = r.client_step("connect");
    assert_eq!(step["errno"], 111, "the completion's own result");
    let ev = single_event(&r);
    assert_eq!(ev["syscall"], "io_uring:connect");
    assert_eq!(ev["fd"], step["fd"], "the fd the request was made on");
    assert_label(ev, "ECONNREFUSED", Some("SYN_SENT"), "rst_received");
    assert_eq!(ev["dport"], step["dport"]);
    assert!(ev["explain"].as_str().unwrap().contains("nothing listens on 127.0.0.1:"), "{ev:#}");
}

/// recv and send through the ring on a connection the peer aborted; then a send: EPIPE. The
/// forced-async recv completes in an io-wq worker thread (`iou-wrk-*`), which is still the
/// traced process; the fixed-file recv names its registered file's index, marked as one.
#[test]
fn io_uring_requests_on_a_reset_connection() {
    for (how, name) in [
        ("recv", "io_uring:recv"),
        ("send", "io_uring:send"),
        ("recv-async", "io_uring:recv"),
        ("recv-fixed", "io_uring:recv"),
    ] {
        let r = run(&["uring-reset", how], &[]);
        if !io_uring_door(&r) {
            return;
        }
        let step = r.client_step(how);
        assert_eq!(step["errno"], 104, "{how}: ECONNRESET");
        let ev = event_for(&r, how);
        assert_eq!(ev["syscall"], name, "{how}");
        assert_label(ev, "ECONNRESET", Some("ESTABLISHED"), "rst_received");
        assert_eq!(ev["dport"], step["dport"], "{how}");
        assert_eq!(ev["comm"], "scenario", "{how}: the process's name, not the worker's");
        if how == "recv-fixed" {
            assert!(ev["fd"] == 2 && ev["fixed_file"] == true, "{how}: the registered file's index: {ev:#}");
        } else {
            assert_eq!(ev["fd"], step["fd"], "{how}");
            assert!(ev.get("fixed_file").is_none(), "{how}");
        }
        assert_eq!(r.client_step("after")["errno"], 32, "{how}: then EPIPE");
        let after = event_for(&r, "after");
        assert_eq!(after["syscall"], "io_uring:send");
        assert_label(after, "EPIPE", Some("ESTABLISHED"), "rst_received");
    }
}

/// `-c` selects by the process's name: a request completed in an io-wq worker (named
/// `iou-wrk-<pid>`) is still selected, and named after the process.
#[test]
fn io_uring_worker_completions_are_selected_by_process_name() {
    if !kernel_has_io_uring_door() {
        return; // io_uring_door() checks the notice in the other tests
    }
    let mut scenario =
        socktrace_tests::Scenario::start(SCENARIO, &["--comm", "uringcomm", "uring-reset", "recv-async"]).unwrap();
    let tracer = socktrace_tests::Tracer::start(&["-c", "uringcomm", "--json"]).unwrap();
    scenario.go().unwrap();
    let client = scenario.finish().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    tracer.signal(libc::SIGINT);
    let out = tracer.wait(std::time::Duration::from_secs(15)).unwrap();
    let (events, _) = out.json().unwrap();
    let want = client.iter().find(|c| c["step"] == "recv-async").unwrap();
    let ev = events
        .iter()
        .find(|e| e["syscall"] == "io_uring:recv" && e["fd"] == want["fd"])
        .unwrap_or_else(|| panic!("no io_uring:recv event: {events:#?}\n{}", out.stderr));
    assert_eq!(ev["comm"], "uringcomm");
    assert_label(ev, "ECONNRESET", Some("ESTABLISHED"), "rst_received");
}

/// The io_uring accept of a process out of descriptors: fd_limit, with its numbers.
#[test]
fn io_uring_accept_out_of_descriptors() {
    let r = run(&["uring-accept-fd-limit"], &[]);
    if !io_uring_door(&r) {
        return;
    }
    let step = r.client_step("accept");
    assert_eq!(step["errno"], 24, "EMFILE");
    let ev = single_event(&r);
    assert_eq!(ev["syscall"], "io_uring:accept");
    assert_label(ev, "EMFILE", Some("LISTEN"), "fd_limit");
    let limit = step["limit"].as_u64().unwrap();
    assert_eq!(ev["resource"]["nofile_soft"].as_u64(), Some(limit), "{ev:#}");
    let explain = ev["explain"].as_str().unwrap();
    assert!(explain.contains(&format!("accept queue of 127.0.0.1:{} (2 queued", step["port"])), "{explain}");
}

/// A cancelled request is routine: counted under `cancelled`, not printed (unless
/// --all-errors).
#[test]
fn io_uring_cancelled_request_is_counted_not_printed() {
    let r = run(&["uring-cancel"], &[]);
    assert_eq!(r.client_step("recv")["errno"], 125, "ECANCELED");
    if !io_uring_door(&r) {
        return;
    }
    assert!(r.events.is_empty(), "{:#?}", r.events);
    let rows = r.summary.as_ref().unwrap()["rows"].as_array().unwrap().clone();
    assert!(rows.iter().any(|row| row["errno"] == "ECANCELED" && row["cause"] == "cancelled"), "{rows:#?}");
    let r = run(&["uring-cancel"], &["--all-errors"]);
    let ev = single_event(&r);
    assert_eq!(ev["syscall"], "io_uring:recv");
    assert_label(ev, "ECANCELED", Some("ESTABLISHED"), "cancelled");
}

/// sendfile and splice into a connection the peer aborted, splice out of it, and shutdown
/// after it: each joined to the RST like a write or read.
#[test]
fn copy_paths_and_shutdown_on_a_reset_connection() {
    for (call, syscall, errno) in [
        ("sendfile", "sendfile", "ECONNRESET"),
        ("splice-out", "splice", "ECONNRESET"),
        ("splice-in", "splice", "ECONNRESET"),
        ("shutdown", "shutdown", "ENOTCONN"),
    ] {
        let r = run(&["copy-reset", call], &[]);
        let step = r.client_step(call);
        let ev = event_for(&r, call);
        assert_eq!(ev["syscall"], syscall, "{call}");
        assert_eq!(ev["fd"], step["fd"], "{call}");
        assert_label(ev, errno, Some("ESTABLISHED"), "rst_received");
        assert_eq!(ev.get("socket_is_source").is_some(), call == "splice-in", "{call}: {ev:#}");
    }
}

/// A server reads the error of an accepted connection with getsockopt(SO_ERROR) after the
/// client aborted: reported as that getsockopt, not as a connect the server never made.
#[test]
fn so_error_on_an_accepted_socket_is_not_a_connect() {
    let r = run(&["so-error-accepted"], &[]);
    let step = r.client_step("so_error");
    assert_eq!(step["errno"], 104);
    let ev = single_event(&r);
    assert_eq!(ev["syscall"], "getsockopt");
    assert_eq!(ev["so_error"], true);
    assert_eq!(ev["fd"], step["fd"]);
    assert_label(ev, "ECONNRESET", Some("ESTABLISHED"), "rst_received");
}

/// A connected UDP socket whose peer port is closed: the ICMP port-unreachable its datagram drew
/// makes the next recv (or send) fail with ECONNREFUSED, reported by default (no
/// --all-sockets) with cause icmp_error; the error is reported once.
#[test]
fn udp_refused_by_icmp_port_unreachable() {
    for call in ["recv", "send"] {
        let r = run(&["udp-refused", call], &[]);
        let step = r.client_step(call);
        assert_eq!(step["errno"], 111, "{call}: ECONNREFUSED");
        assert_ne!(r.client_step("after")["errno"], 111, "{call}: reported once");
        if error_report_is_derived(&r) {
            // No probe reports errors on this kernel (before 5.14, tracepoint mode): the UDP
            // error has no recorded cause, so it stays behind --all-sockets.
            assert!(r.events.is_empty(), "{call}: {:#?}", r.events);
            continue;
        }
        let ev = single_event(&r);
        assert_eq!(ev["fd"], step["fd"], "{call}");
        assert_eq!((ev["family"].as_str(), ev["dport"].as_u64()), (Some("inet"), step["dport"].as_u64()), "{call}");
        assert_label(ev, "ECONNREFUSED", None, "icmp_error");
        assert!(ev["explain"].as_str().unwrap().contains("ICMP port-unreachable (type 3 code 3)"), "{ev:#}");
        assert!(ev["cause_age_ns"].as_u64().is_some_and(|a| a > 0), "{ev:#}");
        assert!(!ev["facts"]["error_report"].is_null(), "{ev:#}");
        assert_icmp_sender(&r, ev, "127.0.0.1", "the destination itself", 3, 3, "port unreachable");
    }
}

/// A UDP failure no ICMP error explains is not reported by default; with --all-sockets it is,
/// as unknown, saying why.
#[test]
fn udp_failure_without_icmp_cause_stays_behind_all_sockets() {
    let r = run(&["udp-too-big"], &[]);
    assert_eq!(r.client_step("sendto")["errno"], 90, "EMSGSIZE");
    assert!(r.events.is_empty(), "{:#?}", r.events);
    let r = run(&["udp-too-big"], &["--all-sockets"]);
    let ev = single_event(&r);
    assert_label(ev, "EMSGSIZE", None, "unknown");
    assert!(ev["explain"].as_str().unwrap().contains("no ICMP error was reported"), "{ev:#}");
}

/// Whether this run's error reports are derived at the socket's close (no error-report probe
/// on this kernel in this mode): UDP sockets never close through TCP's states.
fn error_report_is_derived(r: &Run) -> bool {
    socktrace_tests::fact_probe(r, "error report").is_some_and(|p| p.starts_with("derived/"))
}

/// Sockets older than the trace: the peer reset the connection (or closed its side) before
/// socktrace attached. The snapshot taken at attach explains the failure, and says so.
#[test]
fn sockets_older_than_the_trace_are_explained_by_the_snapshot() {
    let r = run(&["before-trace", "reset"], &[]);
    let step = r.client_step("read");
    assert_eq!(step["errno"], 104);
    assert!(r.stderr.contains(", 1 socket adopted)"), "{}", r.stderr);
    let ev = single_event(&r);
    assert_label(ev, "ECONNRESET", None, "rst_received");
    assert_eq!(ev["from_snapshot"], true, "{ev:#}");
    assert_eq!(ev["facts"]["at_attach"]["state"], "CLOSE", "{ev:#}");
    assert_eq!(ev["facts"]["at_attach"]["value"], 104, "{ev:#}");
    let explain = ev["explain"].as_str().unwrap();
    assert!(explain.contains("before tracing began") && explain.contains("ECONNRESET pending"), "{explain}");
    // How long it had been idle: it sent at least 70 ms before the attach (then the peer
    // aborted and socktrace attached), and received its handshake's answer before that.
    let idle = &ev["facts"]["at_attach_idle_ms"];
    let sent = idle["sent"].as_u64().unwrap_or_else(|| panic!("{ev:#}"));
    assert!((60..60_000).contains(&sent), "{ev:#}");
    assert!(idle["received"].as_u64().is_some_and(|r| r >= sent), "{ev:#}");
    assert!(explain.contains(&format!("it last sent data {:.1} s", sent as f64 / 1000.0)), "{explain}");

    let r = run(&["before-trace", "fin"], &["--eof"]);
    assert_eq!(r.client_step("read")["ret"], 0);
    let ev = single_event(&r);
    assert_eq!((ev["ret"].as_i64(), ev["cause"].as_str()), (Some(0), Some("peer_fin")), "{ev:#}");
    assert_eq!((ev["state"].as_str(), ev["from_snapshot"].as_bool()), (Some("CLOSE_WAIT"), Some(true)), "{ev:#}");
    assert!(ev["explain"].as_str().unwrap().contains("before tracing began"), "{ev:#}");
}

/// socket() with every descriptor the limit allows open: EMFILE with no socket, no fd, still
/// explained with the limit.
#[test]
fn socket_out_of_descriptors() {
    let r = run(&["socket-fd-limit"], &[]);
    let step = r.client_step("socket");
    assert_eq!(step["errno"], 24, "EMFILE");
    let ev = single_event(&r);
    assert_eq!((ev["syscall"].as_str(), ev["family"].as_str()), (Some("socket"), Some("inet")), "{ev:#}");
    assert!(ev["fd"].is_null(), "{ev:#}");
    assert_label(ev, "EMFILE", None, "fd_limit");
    let limit = step["limit"].as_u64().unwrap();
    assert_eq!(ev["resource"]["nofile_soft"].as_u64(), Some(limit), "{ev:#}");
    assert!(ev["explain"].as_str().unwrap().contains(&format!("RLIMIT_NOFILE soft {limit}")), "{ev:#}");
}
