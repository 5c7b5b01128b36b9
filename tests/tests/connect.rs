//! End to end: a real process's refused connect, traced by the real socktrace.

use serde_json::json;
use socktrace_tests::trace_scenario;

const SCENARIO: &str = env!("CARGO_BIN_EXE_scenario");

#[test]
fn refused_connect_is_labelled_and_successful_connect_is_silent() {
    let run = trace_scenario(SCENARIO, &["connect-refused-and-ok"], &[]).unwrap();
    assert!(run.socktrace_status.success(), "socktrace exit {:?}; stderr:\n{}", run.socktrace_status, run.stderr);

    let refused = run.client_step("refused");
    let ok = run.client_step("ok");
    assert_eq!(refused["errno"], 111, "the scenario's own connect must be refused");
    assert_eq!(ok["errno"], 0, "the scenario's second connect must succeed");

    assert_eq!(run.events.len(), 1, "exactly one failure expected, got {:#?}", run.events);
    let ev = &run.events[0];
    let expect = [
        ("syscall", json!("connect")),
        ("errno", json!("ECONNREFUSED")),
        ("ret", json!(-111)),
        ("state", json!("SYN_SENT")),
        ("cause", json!("rst_received")),
        ("pid", json!(run.client_pid)),
        ("tid", json!(run.client_pid)),
        ("fd", refused["fd"].clone()),
        ("daddr", json!("127.0.0.1")),
        ("dport", refused["dport"].clone()),
        ("saddr", json!("127.0.0.1")),
        ("comm", json!("scenario")),
    ];
    for (key, want) in expect {
        assert_eq!(ev[key], want, "key {key} in {ev:#}");
    }
    let sport = ev["sport"].as_u64().expect("sport is a number");
    assert!(sport > 0 && sport != refused["dport"].as_u64().unwrap(), "sport {sport}");
    assert!(ev["explain"].as_str().unwrap().contains("nothing listens on 127.0.0.1:"), "{ev:#}");
    assert!(ev["ts_ns"].as_u64().unwrap() > 1_600_000_000_000_000_000, "ts_ns is wall-clock ns");
    assert!(ev["cause_age_ns"].as_u64().is_some(), "the RST was seen, so its age is known");
    assert_eq!(ev["schema"], 9);
    // The refusing RST came from no socket, answering a bare SYN: the kernel keeps no record
    // of such RSTs (the refusal explains itself, and they are the commonest of all).
    assert!(ev["facts"]["peer_reset"].is_null(), "{ev:#}");
    // Where the RST segment is seen (fentry or kprobe on tcp_reset, 5.14+): the answer to our
    // SYN, a refusal (it acknowledges the SYN).
    let seg = &ev["facts"]["rst_segment"];
    if !seg.is_null() {
        assert_eq!((&seg["origin"], &seg["flags"]), (&json!("refused"), &json!(["ACK", "RST"])), "{ev:#}");
    }

    // Nothing about the successful connect (or its listener) may appear.
    assert!(run.events_where("dport", &ok["dport"]).is_empty());
    assert!(run.events.iter().all(|e| e["fd"] != ok["fd"]));

    // The closing line counts what was seen.
    assert!(run.stderr.contains("the traced process exited; 1 failure (rst_received 1), 1 printed"), "{}", run.stderr);
}

#[test]
fn missing_pid_is_a_clear_error() {
    socktrace_tests::require_root();
    let out = std::process::Command::new(socktrace_tests::socktrace_bin()).args(["-p", "999999999"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid PID 999999999") || err.contains("no such process"), "{err}");
    let out = std::process::Command::new(socktrace_tests::socktrace_bin()).args(["-p", "4194000"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no such process: PID 4194000"), "{err}");
}

#[test]
fn unprivileged_user_is_told_what_is_missing() {
    socktrace_tests::require_root();
    // Drop to nobody with no capabilities, as a user without sudo would run it.
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"])
        .arg(socktrace_tests::socktrace_bin())
        .args(["-p", &std::process::id().to_string()])
        .output()
        .expect("setpriv (util-linux) runs");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CAP_BPF and CAP_PERFMON") && err.contains("sudo"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
