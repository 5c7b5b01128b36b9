//! A production tool must not make an incident worse: faults of the traced process, of the
//! output and of socktrace itself, each end cleanly and leave nothing in the kernel.

use serde_json::Value;
use socktrace_tests::{require_root, socktrace_bin, trace_scenario, Scenario, Tracer};
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SCENARIO: &str = env!("CARGO_BIN_EXE_scenario");
const END: Duration = Duration::from_secs(20);

/// Names of socktrace's programs and maps as the kernel lists them (truncated to 15 bytes).
/// One of the two syscall programs (the BTF tracepoint here, 6.18) and three TCP ones.
const OUR_PROGRAMS: [&str; 4] = ["sys_exit_btf", "inet_sock_set_s", "tcp_receive_res", "tcp_destroy_soc"];
const OUR_MAPS: [&str; 4] = ["TRACED_TGIDS", "SOCKETS", "EVENTS", "LAST_TRANSITION"];

/// socktrace's programs and maps still loaded in the kernel (the kernel's own listing).
fn ours_in_kernel() -> (Vec<String>, Vec<String>) {
    let progs = aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .filter_map(|p| p.name_as_str().map(str::to_string))
        .filter(|n| OUR_PROGRAMS.contains(&n.as_str()))
        .collect();
    let maps = aya::maps::loaded_maps()
        .filter_map(|m| m.ok())
        .filter_map(|m| m.name_as_str().map(str::to_string))
        .filter(|n| OUR_MAPS.iter().any(|o| o.starts_with(n.as_str()) && n.len() >= 6))
        .collect();
    (progs, maps)
}

/// Waits (bounded) until the kernel has freed everything socktrace loaded.
#[track_caller]
fn assert_nothing_left() {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (progs, maps) = ours_in_kernel();
        if progs.is_empty() && maps.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "left in the kernel: programs {progs:?}, maps {maps:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn loaded_while_running_and_gone_after_sigkill() {
    require_root();
    // The programs are counted by name: an earlier test's socktrace, ended but not yet freed
    // by the kernel (it frees them after the last reference, asynchronously), would count too.
    assert_nothing_left();
    let hold = Scenario::start(SCENARIO, &["connect", "127.0.0.1:closed"]).unwrap();
    let pid = hold.pid.to_string();
    let t = Tracer::start(&["-p", &pid]).unwrap();
    let (progs, maps) = ours_in_kernel();
    assert_eq!(progs.len(), OUR_PROGRAMS.len(), "the listing sees socktrace's programs while it runs: {progs:?}");
    assert!(!maps.is_empty(), "and its maps");
    t.signal(libc::SIGKILL);
    let out = t.wait(END).unwrap();
    assert_eq!(out.status.code(), None, "killed");
    assert_nothing_left();
    drop(hold);
}

#[test]
fn sigint_and_sigterm_end_with_the_summary() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let hold = Scenario::start(SCENARIO, &["connect", "127.0.0.1:closed"]).unwrap();
        let pid = hold.pid.to_string();
        let t = Tracer::start(&["-p", &pid, "--json"]).unwrap();
        t.signal(sig);
        let out = t.wait(END).unwrap();
        assert_eq!(out.status.code(), Some(0), "{sig}: {}", out.stderr);
        let (_, summary) = out.json().unwrap();
        assert!(summary.is_some(), "{sig}: summary printed");
        let why = if sig == libc::SIGINT { "interrupted" } else { "terminated" };
        assert!(out.stderr.contains(&format!("socktrace: {why}; 0 failures")), "{}", out.stderr);
        assert_nothing_left();
        drop(hold);
    }
}

#[test]
fn traced_process_killed_mid_trace() {
    let hold = Scenario::start(SCENARIO, &["connect", "127.0.0.1:closed"]).unwrap();
    let pid = hold.pid.to_string();
    let t = Tracer::start(&["-p", &pid, "--json"]).unwrap();
    // SAFETY: our own child.
    unsafe { libc::kill(hold.pid as i32, libc::SIGKILL) };
    let out = t.wait(END).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(out.json().unwrap().1.is_some(), "summary");
    assert!(out.stderr.contains("the traced process exited"), "{}", out.stderr);
    drop(hold);
}

#[test]
fn traced_process_execs_and_is_still_traced() {
    let r = trace_scenario(SCENARIO, &["exec", "connect", "127.0.0.1:closed"], &[]).unwrap();
    assert!(r.socktrace_status.success());
    assert_eq!(r.events.len(), 1, "the failure after exec is seen: {:#?}", r.events);
    assert_eq!(r.events[0]["pid"], serde_json::json!(r.client_pid), "same PID across exec");
    assert_eq!(r.events[0]["errno"], "ECONNREFUSED");
}

#[test]
fn stdout_closed_early_ends_quietly() {
    require_root();
    // `socktrace ... | head -1`: the reader goes away after one line.
    let mut s = Scenario::start(SCENARIO, &["refused-many", "50"]).unwrap();
    let pid = s.pid.to_string();
    let mut child =
        Command::new(socktrace_bin()).args(["-p", &pid]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut err_lines = BufReader::new(stderr).lines();
    loop {
        let line = err_lines.next().expect("attach line").unwrap();
        if line.contains("attached") {
            break;
        }
    }
    let mut out = BufReader::new(child.stdout.take().unwrap());
    s.go().unwrap();
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.contains("ECONNREFUSED"), "{first}");
    drop(out);
    s.finish().unwrap();
    let status = socktrace_tests::wait_timeout(&mut child, END).unwrap().expect("socktrace ended");
    let rest: Vec<String> = err_lines.map_while(Result::ok).collect();
    let rest = rest.join("\n");
    assert!(status.success(), "{status}: {rest}");
    assert!(!rest.contains("panicked") && !rest.contains("error"), "{rest}");
    assert_nothing_left();
}

#[test]
fn full_output_device_is_a_clear_error_and_detaches() {
    let mut s = Scenario::start(SCENARIO, &["connect", "127.0.0.1:closed"]).unwrap();
    let pid = s.pid.to_string();
    let t = Tracer::start(&["-p", &pid, "-o", "/dev/full"]).unwrap();
    s.go().unwrap();
    s.finish().unwrap();
    let out = t.wait(END).unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("writing to /dev/full failed: No space left on device"), "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"));
    assert_nothing_left();
}

#[test]
fn two_instances_on_one_pid_both_see_every_failure() {
    let mut s = Scenario::start(SCENARIO, &["refused-many", "20"]).unwrap();
    let pid = s.pid.to_string();
    let a = Tracer::start(&["-p", &pid, "--json"]).unwrap();
    let b = Tracer::start(&["-p", &pid, "--json"]).unwrap();
    s.go().unwrap();
    let client = s.finish().unwrap();
    let refused = client.iter().filter(|c| c["errno"] == 111).count();
    assert_eq!(refused, 20);
    for t in [a, b] {
        let out = t.wait(END).unwrap();
        let (events, summary): (Vec<Value>, _) = out.json().unwrap();
        assert_eq!(events.len(), refused, "{}", out.stderr);
        assert_eq!(summary.unwrap()["failures"], refused as u64);
    }
}

#[test]
fn pid_vanishing_around_attach_is_handled() {
    require_root();
    // A zombie still has a /proc entry but will never make a call again; a PID that exits
    // between the lookup and the attach is the same race. Either outcome is a clean one.
    let mut child = Command::new("true").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(100)); // now a zombie: exited, not reaped
    let out = Command::new(socktrace_bin()).args(["-p", &child.id().to_string()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let _ = child.wait();
    assert!(!err.contains("panicked"), "{err}");
    match out.status.code() {
        Some(0) => assert!(err.contains("the traced process exited; 0 failures"), "{err}"),
        Some(1) => assert!(err.contains("no such process"), "{err}"),
        other => panic!("unexpected status {other:?}: {err}"),
    }
}

#[test]
fn capabilities_are_dropped_after_attach() {
    let s = Scenario::start(SCENARIO, &["connect", "127.0.0.1:closed"]).unwrap();
    let pid = s.pid.to_string();
    let t = Tracer::start(&["-p", &pid]).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", t.pid())).unwrap();
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).unwrap().trim().to_string();
    assert_eq!(field("CapEff:"), "0000000000000000", "{status}");
    assert_eq!(field("CapPrm:"), "0000000000000000", "{status}");
    assert_eq!(field("NoNewPrivs:"), "1");
    t.signal(libc::SIGINT);
    assert!(t.wait(END).unwrap().status.success());
    drop(s);
}

/// With only CAP_BPF, CAP_PERFMON and CAP_DAC_READ_SEARCH (tracefs is root-only), as an
/// unprivileged user, socktrace attaches and labels a failure.
#[test]
fn runs_with_only_the_documented_capabilities() {
    require_root();
    let mut s = Scenario::start(SCENARIO, &["connect", "127.0.0.1:closed"]).unwrap();
    let mut child = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all,+bpf,+perfmon,+dac_read_search",
            "--ambient-caps=-all,+bpf,+perfmon,+dac_read_search",
            "--bounding-set=-all,+bpf,+perfmon,+dac_read_search",
        ])
        .arg(socktrace_bin())
        .args(["-p", &s.pid.to_string(), "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err_lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    loop {
        let Some(Ok(line)) = err_lines.next() else { panic!("socktrace ended before attaching: {seen}") };
        seen.push_str(&line);
        if line.contains("attached") {
            break;
        }
    }
    s.go().unwrap();
    s.finish().unwrap();
    let status = socktrace_tests::wait_timeout(&mut child, END).unwrap().expect("ended");
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(status.success(), "{status}");
    let lines = socktrace_tests::parse_json_lines(&stdout).unwrap();
    assert_eq!(lines[0]["cause"], "rst_received", "{stdout}");
    assert_eq!(lines[0]["state"], "SYN_SENT");
}

/// A tracer that cannot keep up (here: stopped) loses events, but never silently: every
/// failure is either printed or counted as lost, and with `--debug` the kernel says so.
#[test]
fn ring_buffer_overflow_is_counted_and_logged_with_debug() {
    require_root();
    // 16 MiB of ring buffer (4 MiB on a small host) holds about 19,600 events (an event is
    // about 850 bytes): 40,000 failures overflow it.
    let mut scenario = Scenario::start(SCENARIO, &["overflow", "40000"]).unwrap();
    let pid = scenario.pid.to_string();
    let t = Tracer::start(&["-p", &pid, "--json", "--summary", "--debug"]).unwrap();
    t.signal(libc::SIGSTOP);
    scenario.go().unwrap();
    let client = scenario.finish().unwrap();
    t.signal(libc::SIGCONT);
    let out = t.wait(END).unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    let (_, summary) = out.json().unwrap();
    let summary = summary.expect("a summary");
    let failures = client[0]["failures"].as_u64().unwrap();
    assert_eq!(failures, 40000, "every send failed: {client:?}");
    let (seen, lost) = (summary["failures"].as_u64().unwrap(), summary["lost"].as_u64().unwrap());
    assert!(lost > 0, "the stopped tracer lost events: {summary}");
    assert_eq!(seen + lost, failures, "every failure is seen or counted lost: {summary}");
    assert!(out.stderr.contains("LOST (ring buffer full)"), "{}", out.stderr);
    assert!(out.stderr.contains("ring buffer full: a failure of pid"), "the kernel-side log says why: {}", out.stderr);
}

/// Without `--debug` the kernel-side log statements are dead code: nothing is logged.
#[test]
fn kernel_log_is_silent_without_debug() {
    require_root();
    let mut scenario = Scenario::start(SCENARIO, &["overflow", "40000"]).unwrap();
    let pid = scenario.pid.to_string();
    let t = Tracer::start(&["-p", &pid, "--json", "--summary"]).unwrap();
    t.signal(libc::SIGSTOP);
    scenario.go().unwrap();
    scenario.finish().unwrap();
    t.signal(libc::SIGCONT);
    let out = t.wait(END).unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stderr.contains("LOST (ring buffer full)"), "{}", out.stderr);
    assert!(!out.stderr.contains("ring buffer full: a failure of pid"), "{}", out.stderr);
}
