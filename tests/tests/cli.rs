//! The command line, end to end with real probes: selection (-p, -- COMMAND, -f, -c,
//! --cgroup, none), display filters, text/colour/time/-o, JSON schema, summary, check, demo,
//! generated docs, and the errors a user can meet.

use serde_json::{json, Value};
use socktrace_tests::{require_root, socktrace_bin, trace_scenario, Scenario, Tracer};
use std::process::{Command, Stdio};
use std::time::Duration;

const SCENARIO: &str = env!("CARGO_BIN_EXE_scenario");
const END: Duration = Duration::from_secs(20);

fn socktrace(args: &[&str]) -> std::process::Output {
    require_root();
    Command::new(socktrace_bin()).args(args).stdin(Stdio::null()).output().expect("socktrace runs")
}

fn schema_validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/json-schema.json")).unwrap();
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).expect("the schema itself is valid")
}

#[track_caller]
fn assert_schema(v: &jsonschema::Validator, obj: &Value) {
    let errors: Vec<String> = v.iter_errors(obj).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{obj:#}\ndoes not match docs/json-schema.json: {errors:#?}");
}

#[test]
fn json_output_matches_the_documented_schema_and_summary_counts_match() {
    let v = schema_validator();
    // A scenario with several kinds of failure, benign ones included.
    let r = trace_scenario(SCENARIO, &["reset", "recvmsg", "v4"], &["--eof", "--all-errors"]).unwrap();
    assert!(!r.events.is_empty());
    for ev in &r.events {
        assert_schema(&v, ev);
    }
    let summary = r.summary.as_ref().expect("a summary object at the end");
    assert_schema(&v, summary);
    // Failures and routine outcomes are counted apart; every event is one or the other.
    let routine: u64 = summary["routine"].as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum();
    let routine_events = r
        .events
        .iter()
        .filter(|e| ["would_block", "interrupted", "in_progress", "cancelled"].contains(&e["cause"].as_str().unwrap()))
        .count();
    assert_eq!(routine, routine_events as u64, "{summary}");
    assert_eq!(summary["failures"].as_u64().unwrap() + routine, r.events.len() as u64);
    assert_eq!(summary["printed"], json!(r.events.len()));
    assert_eq!(summary["lost"], 0);
    let rows_total: u64 = summary["rows"].as_array().unwrap().iter().map(|row| row["count"].as_u64().unwrap()).sum();
    assert_eq!(rows_total, r.events.len() as u64);
    for ev in &r.events {
        let row = summary["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["errno"] == ev["errno"] && row["cause"] == ev["cause"] && row["state"] == ev["state"]);
        assert!(row.is_some(), "no summary row for {ev}");
    }
    let peer = format!("127.0.0.1:{}", r.client_step("recvmsg")["dport"]);
    assert_eq!(summary["top_peers"][0]["peer"], peer);

    // Schema also holds for the demo's every label and for an IPv6, no-route and EOF event.
    let out = socktrace(&["demo", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = socktrace_tests::parse_json_lines(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let causes: Vec<&str> = lines.iter().filter_map(|l| l["cause"].as_str()).collect();
    for want in ["rst_received", "would_block", "in_progress", "icmp_error", "no_route", "timeout"] {
        assert!(causes.contains(&want), "demo shows {want}: {causes:?}");
    }
    for l in &lines {
        assert_schema(&v, l);
    }
}

#[test]
fn summary_only_counts_everything_and_prints_no_events() {
    let r = trace_scenario(SCENARIO, &["reset", "read", "v4"], &["--summary"]).unwrap();
    assert!(r.events.is_empty(), "{:#?}", r.events);
    let s = r.summary.expect("summary");
    assert_eq!((s["failures"].as_u64(), s["printed"].as_u64()), (Some(2), Some(0)));

    // Benign failures are counted even when not printed.
    let r = trace_scenario(SCENARIO, &["would-block"], &[]).unwrap();
    assert!(r.events.is_empty());
    let s = r.summary.expect("summary");
    assert_eq!((s["failures"].as_u64(), &s["routine"]), (Some(0), &json!({"EAGAIN": 1})));
    assert_eq!(s["rows"][0], json!({"errno": "EAGAIN", "cause": "would_block", "state": "ESTABLISHED", "count": 1}));
}

#[test]
fn errno_and_cause_filters() {
    let r = trace_scenario(SCENARIO, &["reset", "read", "v4"], &["-e", "EPIPE"]).unwrap();
    assert_eq!(r.events.len(), 1, "{:#?}", r.events);
    assert_eq!(r.events[0]["errno"], "EPIPE");
    assert_eq!(r.summary.as_ref().unwrap()["failures"], 2, "filtered events are still counted");

    let r = trace_scenario(SCENARIO, &["reset", "read", "v4"], &["-e", "104,ECONNREFUSED"]).unwrap();
    assert_eq!(r.events.len(), 1);
    assert_eq!(r.events[0]["errno"], "ECONNRESET");

    let r = trace_scenario(SCENARIO, &["reset", "read", "v4"], &["--cause", "timeout,icmp_error"]).unwrap();
    assert!(r.events.is_empty());
    let r = trace_scenario(SCENARIO, &["reset", "read", "v4"], &["--cause", "rst_received"]).unwrap();
    assert_eq!(r.events.len(), 2);
}

#[test]
fn several_pids_at_once() {
    let mut a = Scenario::start(SCENARIO, &["thread-refused"]).unwrap();
    let mut b = Scenario::start(SCENARIO, &["connect", "127.0.0.1:closed"]).unwrap();
    let (pa, pb) = (a.pid.to_string(), b.pid.to_string());
    let t = Tracer::start(&["-p", &pa, "-p", &pb, "--json"]).unwrap();
    assert!(t.stderr.contains(&format!("PID {pa},{pb}")), "{}", t.stderr);
    a.go().unwrap();
    b.go().unwrap();
    a.finish().unwrap();
    b.finish().unwrap();
    let out = t.wait(END).unwrap();
    assert!(out.status.success());
    let (events, _) = out.json().unwrap();
    let mut pids: Vec<u64> = events.iter().map(|e| e["pid"].as_u64().unwrap()).collect();
    pids.sort();
    let mut want = vec![pa.parse::<u64>().unwrap(), pb.parse::<u64>().unwrap()];
    want.sort();
    assert_eq!(pids, want);
    assert!(out.stderr.contains("the traced processes exited"), "{}", out.stderr);
}

#[test]
fn command_is_traced_from_its_first_call_as_the_invoking_user_and_its_status_returned() {
    require_root();
    // As `sudo socktrace -- cmd` run by uid 65534 would.
    let out = Command::new(socktrace_bin())
        .args(["--json", "--", SCENARIO, "whoami-refused"])
        .env("SCENARIO_NO_WAIT", "1")
        .env("SUDO_UID", "65534")
        .env("SUDO_GID", "65534")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines = socktrace_tests::parse_json_lines(&stdout).unwrap();
    let client = lines.iter().find(|l| l["step"] == "connect").expect("the command's own report on stdout");
    assert_eq!((client["uid"].as_u64(), client["gid"].as_u64()), (Some(65534), Some(65534)));
    let ev = lines.iter().find(|l| l["type"] == "failure").expect("its connect was traced");
    assert_eq!((ev["errno"].as_str(), ev["cause"].as_str()), (Some("ECONNREFUSED"), Some("rst_received")));
    assert_eq!(ev["pid"], client["pid"]);

    // The command's exit status is socktrace's.
    let out = Command::new(socktrace_bin())
        .args(["--", SCENARIO, "exit", "7"])
        .env("SCENARIO_NO_WAIT", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", String::from_utf8_lossy(&out.stderr));

    // A command that cannot start is a clear error.
    let out = socktrace(&["--", "/no/such/program"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot start \"/no/such/program\"") && err.contains("No such file"), "{err}");
}

#[test]
fn follow_forks_only_with_f() {
    require_root();
    for (flag, want_child) in [(None, false), (Some("-f"), true)] {
        let mut args = vec!["--json"];
        args.extend(flag);
        args.extend(["--", SCENARIO, "fork-refused"]);
        let out = Command::new(socktrace_bin()).args(&args).env("SCENARIO_NO_WAIT", "1").output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let lines = socktrace_tests::parse_json_lines(&String::from_utf8_lossy(&out.stdout)).unwrap();
        let child = lines.iter().find(|l| l["step"] == "child_connect").unwrap();
        let parent = lines.iter().find(|l| l["step"] == "parent_connect").unwrap();
        let events: Vec<&Value> = lines.iter().filter(|l| l["type"] == "failure").collect();
        assert!(events.iter().any(|e| e["pid"] == parent["pid"]), "{flag:?}: parent traced");
        assert_eq!(events.iter().any(|e| e["pid"] == child["pid"]), want_child, "{flag:?}: {events:#?}");
    }
}

/// Runs socktrace with `selector` (no -p) while two scenarios fail; returns the pids seen.
fn pids_seen_with(selector: &[&str], traced: &mut Scenario, other: &mut Scenario) -> (Vec<u64>, String) {
    pids_seen_with_env(selector, &[], traced, other)
}

fn pids_seen_with_env(
    selector: &[&str],
    env: &[(&str, &str)],
    traced: &mut Scenario,
    other: &mut Scenario,
) -> (Vec<u64>, String) {
    let mut args = vec!["--json"];
    args.extend_from_slice(selector);
    let t = Tracer::start_with(&args, env).unwrap();
    traced.go().unwrap();
    other.go().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    t.signal(libc::SIGINT);
    let out = t.wait(END).unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    let (events, summary) = out.json().unwrap();
    assert!(summary.is_some(), "the summary ends an interrupted session too");
    (events.iter().map(|e| e["pid"].as_u64().unwrap()).collect(), out.stderr)
}

#[test]
fn select_by_task_name_in_the_kernel() {
    let mut named = Scenario::start(SCENARIO, &["--comm", "st-named", "connect", "127.0.0.1:closed"]).unwrap();
    let mut other = Scenario::start(SCENARIO, &["--comm", "st-other", "connect", "127.0.0.1:closed"]).unwrap();
    let (pids, stderr) = pids_seen_with(&["-c", "st-named"], &mut named, &mut other);
    assert!(stderr.contains("tasks named \"st-named\""), "{stderr}");
    assert!(pids.contains(&(named.pid as u64)), "{pids:?}");
    assert!(!pids.contains(&(other.pid as u64)), "{pids:?}");
    named.finish().unwrap();
    other.finish().unwrap();
}

#[test]
fn select_by_cgroup_in_the_kernel() {
    require_root();
    // Removed at the end, any process left in it moved out first.
    let cgroup = socktrace_tests::fleet::TestCgroup::create(&format!("socktrace-test-{}", std::process::id())).unwrap();
    let dir = cgroup.path.to_str().unwrap().to_string();
    // The helper (5.14+), then the walk from the task that kernels before 5.14 need, forced.
    for env in [&[][..], &[("SOCKTRACE_CGROUP_WALK", "1")][..]] {
        let mut inside = Scenario::start(SCENARIO, &["connect", "127.0.0.1:closed"]).unwrap();
        let mut outside = Scenario::start(SCENARIO, &["connect", "127.0.0.1:closed"]).unwrap();
        cgroup.add(inside.pid).unwrap();
        let (pids, stderr) = pids_seen_with_env(&["--cgroup", &dir], env, &mut inside, &mut outside);
        assert!(stderr.contains("cgroup id"), "{stderr}");
        assert!(pids.contains(&(inside.pid as u64)), "{env:?}: {pids:?}");
        assert!(!pids.contains(&(outside.pid as u64)), "{env:?}: {pids:?}");
        inside.finish().unwrap();
        outside.finish().unwrap();
    }
}

#[test]
fn no_selector_traces_every_process_with_a_warning() {
    let mut a = Scenario::start(SCENARIO, &["connect", "127.0.0.1:closed"]).unwrap();
    let mut b = Scenario::start(SCENARIO, &["thread-refused"]).unwrap();
    let (pids, stderr) = pids_seen_with(&[], &mut a, &mut b);
    assert!(stderr.contains("warning: no -p, -c, --cgroup or command given: tracing every process"), "{stderr}");
    assert!(stderr.contains("attached to every process"), "{stderr}");
    assert!(pids.contains(&(a.pid as u64)) && pids.contains(&(b.pid as u64)), "{pids:?}");
    a.finish().unwrap();
    b.finish().unwrap();
}

#[test]
fn hostile_process_name_cannot_forge_lines() {
    // ESC [ 2 J (clear screen), a newline that would start a forged line, and invalid UTF-8.
    let name = "\\x1b[2J\\x0aFAKE\\xff";
    for color in ["never", "always"] {
        let mut s = Scenario::start(SCENARIO, &["--comm", name, "connect", "127.0.0.1:closed"]).unwrap();
        let pid = s.pid.to_string();
        let t = Tracer::start(&["-p", &pid, "--color", color]).unwrap();
        s.go().unwrap();
        s.finish().unwrap();
        let out = t.wait(END).unwrap();
        let event_lines: Vec<&str> = out.stdout.lines().filter(|l| l.contains("connect(fd=")).collect();
        assert_eq!(event_lines.len(), 1, "{}", out.stdout);
        let line = event_lines[0];
        assert!(line.contains("\"\\x1b[2J\\x0aFAKE\\xff\""), "escaped name in {line:?}");
        assert!(!out.stdout.lines().any(|l| l.starts_with("FAKE")), "a forged line appeared");
        let raw_escapes = line.matches('\x1b').count();
        assert_eq!(raw_escapes, if color == "always" { 4 } else { 0 }, "only socktrace's own colour codes: {line:?}");
    }
    let r = trace_scenario(SCENARIO, &["--comm", name, "connect", "127.0.0.1:closed"], &[]).unwrap();
    assert_eq!(r.events[0]["comm"], "\\x1b[2J\\x0aFAKE\\xff", "JSON keeps the same escaped, valid text");
}

#[test]
fn text_output_columns_colour_and_time() {
    let text_of = |extra: &[&str], env: &[(&str, &str)]| -> String {
        let mut s = Scenario::start(SCENARIO, &["connect", "127.0.0.1:closed"]).unwrap();
        let pid = s.pid.to_string();
        let mut args = vec!["-p", pid.as_str()];
        args.extend_from_slice(extra);
        let t = Tracer::start_with(&args, env).unwrap();
        s.go().unwrap();
        s.finish().unwrap();
        t.wait(END).unwrap().stdout
    };
    let plain = text_of(&[], &[]);
    let line = plain.lines().find(|l| l.contains("connect(fd=")).unwrap();
    let re_fields: Vec<&str> = line.split_whitespace().collect();
    assert!(re_fields[0].starts_with("+0.") || re_fields[0].starts_with("+1."), "relative time first: {line}");
    assert!(line.contains("ECONNREFUSED") && line.contains("SYN_SENT") && line.contains("rst_received"), "{line}");
    assert!(!line.contains('\x1b'), "no colour into a pipe by default");
    assert!(plain.contains("  count  errno"), "summary table follows: {plain}");

    let wall = text_of(&["-t"], &[]);
    let first = wall.lines().find(|l| l.contains("connect(fd=")).unwrap().split_whitespace().next().unwrap();
    assert!(first.len() == 27 && first.ends_with('Z') && first.as_bytes()[10] == b'T', "RFC 3339 UTC: {first}");

    let coloured = text_of(&["--color", "always"], &[("NO_COLOR", "")]);
    assert!(coloured.contains("\x1b[1;31mECONNREFUSED"), "{coloured:?}");
    let never = text_of(&["--color", "never"], &[]);
    assert!(!never.contains('\x1b'));
}

/// `--color auto` colours a terminal, and NO_COLOR turns that off.
#[test]
fn auto_colour_on_a_terminal_honours_no_color() {
    require_root();
    for (no_color, want) in [(false, true), (true, false)] {
        let mut cmd = format!("{} --color auto -- {SCENARIO} connect 127.0.0.1:closed", socktrace_bin().display());
        if no_color {
            cmd = format!("NO_COLOR=1 {cmd}");
        }
        // script(1) gives socktrace a pseudo-terminal for stdout.
        let out = Command::new("script")
            .args(["-qec", &format!("SCENARIO_NO_WAIT=1 {cmd}"), "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("ECONNREFUSED"), "{text}");
        assert_eq!(text.contains("\x1b[1;31mECONNREFUSED"), want, "NO_COLOR={no_color}: {text:?}");
    }
}

#[test]
fn output_file_and_its_errors() {
    let dir = std::env::temp_dir().join(format!("socktrace-o-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("events.ndjson");
    let file_s = file.to_str().unwrap().to_string();
    let r = trace_scenario(SCENARIO, &["connect", "127.0.0.1:closed"], &["-o", &file_s]).unwrap();
    assert!(r.events.is_empty() && r.summary.is_none(), "stdout stays empty with -o");
    let lines = socktrace_tests::parse_json_lines(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(lines.len(), 2, "one failure and the summary: {lines:#?}");
    assert_eq!(lines[0]["errno"], "ECONNREFUSED");
    assert_eq!(lines[1]["type"], "summary");
    std::fs::remove_dir_all(&dir).unwrap();

    // Not writable: a clear error, before anything is attached.
    let out = socktrace(&["-p", &std::process::id().to_string(), "-o", "/no/such/dir/x"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot write to /no/such/dir/x") && !err.contains("attached"), "{err}");
}

#[test]
fn usage_errors_exit_2_and_runtime_errors_exit_1() {
    for args in [&["--bogus"][..], &["--cause", "nonsense"], &["--color", "sometimes"], &["-p"]] {
        let out = socktrace(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    for (args, msg) in [
        (&["-p", "0"][..], "invalid PID 0"),
        (&["-p", "-5"], "invalid PID -5"),
        (&["-p", "abc"], "invalid PID \"abc\""),
        (&["-p", "99999999999"], "invalid PID"),
        (&["-p", "4194001"], "no such process: PID 4194001"),
        (&["-p", "2"], "kernel thread"),
        (&["-e", "ENOTREAL", "-p", "1"], "unknown errno \"ENOTREAL\""),
        (&["--cgroup", "/no/such/cgroup"], "no such cgroup"),
    ] {
        let out = socktrace(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(msg) && err.lines().count() == 1 && !err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn check_reports_this_kernel() {
    let out = socktrace(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for want in [
        "BTF",
        "BPF ring buffer",
        "inet_sock_set_state",
        "tcp_receive_reset",
        // 6.18 (this host): the BTF tracepoint, with typed loads.
        "tp_btf/sys_exit (18 calls)",
        "failing io_uring requests",
        "ICMP error senders",
        "kprobes",
        "probe mode",
        "programs load (verifier)",
        "socktrace can run here",
    ] {
        assert!(text.contains(want), "check mentions {want}: {text}");
    }
    // The classic mode keeps to the raw tracepoint (the fallback where tp_btf is missing).
    let out = socktrace(&["check", "--probe-mode", "tracepoint"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("raw_tracepoint/sys_exit (18 calls)") && !text.contains("tp_btf/sys_exit"), "{text}");
    // auto falls back to it when the BTF one is missing, and says why.
    let out = Command::new(socktrace_bin())
        .arg("check")
        .env("SOCKTRACE_DISABLE_PROBES", "tp_btf/sys_exit")
        .output()
        .expect("socktrace runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("raw_tracepoint/sys_exit (18 calls)")
            && text.contains("passed over tp_btf/sys_exit: disabled by SOCKTRACE_DISABLE_PROBES"),
        "{text}"
    );
    // Without privileges it cannot run, and says so with exit status 1.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"])
        .arg(socktrace_bin())
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("MISSING"));
}

#[test]
fn generated_completions_and_man_page() {
    let dir = std::env::temp_dir().join(format!("socktrace-docs-{}", std::process::id()));
    let out = socktrace(&["generate-docs", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let man = std::fs::read_to_string(dir.join("socktrace.1")).unwrap();
    for flag in ["\\-\\-json", "\\-\\-follow", "\\-\\-cgroup", "\\-\\-all\\-errors", "\\-\\-summary", "check", "demo"] {
        assert!(man.contains(flag), "man page documents {flag}");
    }
    assert!(std::fs::read_to_string(dir.join("socktrace.bash")).unwrap().contains("--all-sockets"));
    assert!(std::fs::read_to_string(dir.join("_socktrace")).unwrap().contains("--wall-clock"));
    assert!(std::fs::read_to_string(dir.join("socktrace.fish")).unwrap().contains("probe-mode"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn help_has_examples() {
    let out = socktrace(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("Examples:") && text.contains("sudo socktrace -p 1234") && text.contains("Exit status"),
        "{text}"
    );
}

/// The demo makes every failure of the catalogue this machine can make, each labelled, in
/// under 10 seconds; each case runs in a thread named after it.
#[test]
fn demo_shows_the_whole_catalogue_quickly() {
    let started = std::time::Instant::now();
    let out = socktrace(&["demo", "--json"]);
    let took = started.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(took < Duration::from_secs(10), "the demo took {took:?}");
    let lines = socktrace_tests::parse_json_lines(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let label = |comm: &str, errno: &str| -> (String, String) {
        let ev = lines
            .iter()
            .find(|l| l["comm"] == comm && l["errno"] == errno)
            .unwrap_or_else(|| panic!("no {errno} from {comm} in the demo: {lines:#?}"));
        (ev["cause"].as_str().unwrap().to_string(), ev["state"].as_str().unwrap_or("-").to_string())
    };
    let want = [
        ("refused", "ECONNREFUSED", "rst_received", "SYN_SENT"),
        ("refused-async", "ECONNREFUSED", "rst_received", "SYN_SENT"),
        ("refused-async", "EINPROGRESS", "in_progress", "CLOSE"),
        ("peer-reset", "ECONNRESET", "rst_received", "ESTABLISHED"),
        ("peer-reset", "EPIPE", "rst_received", "ESTABLISHED"),
        ("peer-exited", "EPIPE", "rst_received", "CLOSE_WAIT"),
        ("shut-wr", "EPIPE", "local_shutdown", "FIN_WAIT1"),
        ("reset-queued", "ECONNRESET", "rst_received", "ESTABLISHED"),
        ("would-block", "EAGAIN", "would_block", "ESTABLISHED"),
        ("interrupted", "EINTR", "interrupted", "ESTABLISHED"),
        ("ss-kill", "ECONNABORTED", "aborted", "ESTABLISHED"),
        ("icmp-port", "ECONNREFUSED", "icmp_error", "SYN_SENT"),
        ("icmp-host", "EHOSTUNREACH", "icmp_error", "SYN_SENT"),
        ("syn-timeout", "ETIMEDOUT", "timeout", "SYN_SENT"),
        ("data-timeout", "ETIMEDOUT", "timeout", "ESTABLISHED"),
        ("no-route", "EHOSTUNREACH", "no_route", "-"),
        ("no-route", "ENETUNREACH", "no_route", "-"),
        ("ports-used-up", "EADDRNOTAVAIL", "no_local_port", "-"),
        ("queue-full", "ETIMEDOUT", "listen_overflow", "SYN_SENT"),
        ("fd-limit", "EMFILE", "fd_limit", "LISTEN"),
    ];
    for (comm, errno, cause, state) in want {
        assert_eq!(label(comm, errno), (cause.to_string(), state.to_string()), "{comm} {errno}");
    }
    let eof = lines.iter().find(|l| l["comm"] == "peer-fin").expect("the end of file");
    assert_eq!((eof["ret"].as_i64(), eof["cause"].as_str()), (Some(0), Some("peer_fin")));
}

/// Network namespaces the demo made, counted by the kernel's own listing of namespaces in use.
fn net_namespaces() -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for proc in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(tasks) = std::fs::read_dir(proc.path().join("task")) else { continue };
        for task in tasks.flatten() {
            if let Ok(link) = std::fs::read_link(task.path().join("ns/net")) {
                out.insert(link.to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// Interrupted in the middle (socktrace stopped, the client killed), the demo leaves no
/// process and no network namespace behind.
#[test]
fn demo_killed_midway_leaves_nothing_behind() {
    require_root();
    let before = net_namespaces();
    let t = Tracer::start(&["demo"]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let client = std::fs::read_to_string(format!("/proc/{}/task/{}/children", t.pid(), t.pid())).unwrap_or_default();
    let client: i32 = client.split_whitespace().next().expect("the demo client runs").parse().unwrap();
    // SAFETY: signalling a process we started.
    unsafe { libc::kill(client, libc::SIGKILL) };
    t.signal(libc::SIGINT);
    let out = t.wait(END).unwrap();
    assert!(out.status.success() || out.status.code() == Some(137), "{out:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<String> = net_namespaces().difference(&before).cloned().collect();
        if left.is_empty() && !std::path::Path::new(&format!("/proc/{client}")).exists() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "left behind: namespaces {left:?}, client alive");
        std::thread::sleep(Duration::from_millis(100));
    }
}
