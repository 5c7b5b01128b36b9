//! Probe modes on the host kernel: every mode that can run here gives the same labels, auto
//! falls back per event and says so, and a mode this kernel cannot serve fails with the
//! missing feature named. (The VM matrix, `cargo xtask vm-test`, runs the scenario suite in
//! each mode on other kernels.)

use serde_json::Value;
use socktrace_tests::{require_root, socktrace_bin, trace_scenario, trace_scenario_with_env, Netns, Run};
use std::path::Path;
use std::process::{Command, Stdio};

const SCENARIO: &str = env!("CARGO_BIN_EXE_scenario");

fn kprobes_here() -> bool {
    Path::new("/sys/bus/event_source/devices/kprobe").exists()
}

/// What a failure's label is made of, minus what differs between runs (times, ports, pids).
fn label(e: &Value) -> (String, String, String, String, String) {
    let s = |k: &str| e[k].to_string();
    let history: Vec<String> = e["history"]
        .as_array()
        .map(|h| h.iter().map(|t| format!("{}>{}", t["from"], t["to"])).collect())
        .unwrap_or_default();
    (s("syscall"), s("errno"), s("state"), s("cause"), history.join(","))
}

fn labels(run: &Run) -> Vec<(String, String, String, String, String)> {
    run.events.iter().map(label).collect()
}

fn probes_in_summary(run: &Run) -> Vec<String> {
    let summary = run.summary.as_ref().expect("a JSON summary");
    summary["probes"].as_array().unwrap().iter().map(|p| p["probe"].as_str().unwrap().to_string()).collect()
}

#[test]
fn every_mode_this_kernel_has_gives_the_same_labels() {
    let mut modes = vec!["tp_btf", "tracepoint"];
    if kprobes_here() {
        modes.push("kprobe");
    }
    let scenarios: [&[&str]; 4] =
        [&["connect", "127.0.0.1:closed"], &["reset", "read", "v4"], &["reset", "write", "v6"], &["premature-exit"]];
    for args in scenarios {
        let mut seen: Vec<(&str, Vec<_>)> = Vec::new();
        for mode in &modes {
            let flag = format!("--probe-mode={mode}");
            let run = trace_scenario(SCENARIO, args, &[&flag]).unwrap();
            assert!(!run.events.is_empty(), "{args:?} in {mode}: no failure seen; stderr: {}", run.stderr);
            let used = probes_in_summary(&run);
            let kind = if *mode == "tp_btf" {
                "tp_btf/"
            } else if *mode == "kprobe" {
                "kprobe/"
            } else {
                "tracepoint/"
            };
            assert!(used.iter().any(|p| p.starts_with(kind)), "{mode} used {used:?}");
            seen.push((mode, labels(&run)));
        }
        for (mode, l) in &seen[1..] {
            assert_eq!(l, &seen[0].1, "{args:?}: {mode} labels differ from {}", seen[0].0);
        }
    }
}

#[test]
fn tracepoint_mode_uses_classic_records_and_raw_tracepoints_only() {
    let run = trace_scenario(SCENARIO, &["connect", "127.0.0.1:closed"], &["--probe-mode=tracepoint", "-v"]).unwrap();
    let used = probes_in_summary(&run);
    // Every TCP event and the syscalls; the ICMP senders are a door beside the modes (fentry,
    // a kprobe, or none on this machine).
    let modal = used.iter().filter(|p| !p.contains("icmp_rcv") && !p.starts_with("none ("));
    assert!(modal.clone().all(|p| p.starts_with("tracepoint/") || p.starts_with("raw_tracepoint/")), "{used:?}");
    assert!(modal.count() >= 7, "{used:?}");
    assert!(used.contains(&"tracepoint/sock:inet_sock_set_state".to_string()), "{used:?}");
    assert!(used.contains(&"tracepoint/tcp:tcp_receive_reset".to_string()), "{used:?}");
    assert!(run.stderr.contains("probe mode tracepoint: tracepoint/sock:inet_sock_set_state"), "{}", run.stderr);
}

#[test]
fn auto_falls_back_per_event_and_says_which_and_why() {
    require_root();
    // Stand-in for a kernel that lacks two BTF tracepoints.
    let disabled = "tp_btf/tcp_receive_reset,tp_btf/inet_sk_error_report";
    let out = Command::new(socktrace_bin())
        .args(["-v", "--json", "--", SCENARIO, "connect", "127.0.0.1:closed"])
        .env("SOCKTRACE_DISABLE_PROBES", disabled)
        .env("SCENARIO_NO_WAIT", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("probe fallback: RST received: using tracepoint/tcp:tcp_receive_reset (tp_btf/tcp_receive_reset: disabled by SOCKTRACE_DISABLE_PROBES)"),
        "{stderr}"
    );
    assert!(stderr.contains("probe fallback: error report: using raw_tracepoint/inet_sk_error_report"), "{stderr}");
    assert!(
        stderr.contains("probe mode auto, 2 events on a fallback probe: tp_btf/inet_sock_set_state, tracepoint/tcp:tcp_receive_reset"),
        "{stderr}"
    );
    let lines: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let failure = lines.iter().find(|v| v["type"] == "failure").expect("the refused connect is reported");
    assert_eq!(
        (failure["errno"].as_str(), failure["state"].as_str(), failure["cause"].as_str()),
        (Some("ECONNREFUSED"), Some("SYN_SENT"), Some("rst_received"))
    );
    let summary = lines.iter().find(|v| v["type"] == "summary").unwrap();
    assert_eq!(summary["probe_mode"], "auto");
    let reset = summary["probes"].as_array().unwrap().iter().find(|p| p["event"] == "RST received").unwrap();
    assert_eq!(reset["probe"], "tracepoint/tcp:tcp_receive_reset");
    assert_eq!(reset["passed_over"][0], "tp_btf/tcp_receive_reset: disabled by SOCKTRACE_DISABLE_PROBES");

    // A forced mode never falls back: it fails and names what is missing.
    let out = Command::new(socktrace_bin())
        .args(["--probe-mode=tp_btf", "-p", &std::process::id().to_string()])
        .env("SOCKTRACE_DISABLE_PROBES", disabled)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("probe mode tp_btf: no usable probe for the kernel's RST received event"), "{stderr}");
    assert!(stderr.contains("--probe-mode auto"), "{stderr}");
}

#[test]
fn forced_kprobe_mode_names_the_missing_kernel_feature() {
    require_root();
    let out = Command::new(socktrace_bin())
        .args(["-v", "--probe-mode", "kprobe", "--", SCENARIO, "connect", "127.0.0.1:closed"])
        .env("SCENARIO_NO_WAIT", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let check = Command::new(socktrace_bin()).args(["check", "--probe-mode", "kprobe"]).output().unwrap();
    let check_text = String::from_utf8_lossy(&check.stdout);
    if kprobes_here() {
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("kprobe/tcp_set_state") && stderr.contains("kprobe/tcp_reset"), "{stderr}");
        assert_eq!(check.status.code(), Some(0), "{check_text}");
    } else {
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
        assert!(
            stderr.contains("probe mode kprobe cannot run here: this kernel has no kprobes (CONFIG_KPROBES is off"),
            "{stderr}"
        );
        assert!(stderr.contains("--probe-mode auto"), "{stderr}");
        assert!(!stderr.contains("ready"), "the command must not run: {stderr}");
        assert_eq!(check.status.code(), Some(1), "{check_text}");
        assert!(check_text.contains("MISSING  kprobe"), "{check_text}");
        assert!(check_text.contains("cannot run here in probe mode kprobe"), "{check_text}");
    }
    // auto needs none of that here.
    let auto = Command::new(socktrace_bin()).args(["check"]).output().unwrap();
    let text = String::from_utf8_lossy(&auto.stdout);
    assert_eq!(auto.status.code(), Some(0), "{text}");
    assert!(
        text.contains("probe mode auto:")
            && text.contains("state change")
            && text.contains("tp_btf/inet_sock_set_state"),
        "{text}"
    );
}

/// Before 5.14 the kernel has no hook that reports socket errors (no `inet_sk_error_report`
/// tracepoint, no `sk_error_report()`): socktrace then takes the error the kernel set when the
/// socket closes. Here, with the hooks treated as absent, every error-driven label must come
/// out as with them: refusals by RST and by ICMP, an abort, a reset, a SYN timeout.
#[test]
fn error_report_derived_from_the_close_as_before_5_14() {
    require_root();
    let without_hooks = [(
        "SOCKTRACE_DISABLE_PROBES",
        "tp_btf/inet_sk_error_report,raw_tracepoint/inet_sk_error_report,kprobe/sk_error_report,kprobe/sock_def_error_report",
    )];
    let icmp = Netns::new("drvicmp");
    icmp.input_rules("inet", &["tcp dport 9999 reject with icmpx type port-unreachable".into()]);
    let syn = Netns::new("drvsyn");
    syn.exec(&["sysctl", "-q", "-w", "net.ipv4.tcp_syn_retries=1"]);
    syn.input_rules("inet", &["tcp dport 9998 drop".into()]);
    let cases: [Vec<&str>; 5] = [
        vec!["connect", "127.0.0.1:closed"],
        vec!["ss-kill"],
        vec!["reset", "read", "v4"],
        vec!["--netns", icmp.name.as_str(), "connect", "127.0.0.1:9999"],
        vec!["--netns", syn.name.as_str(), "connect", "127.0.0.1:9998"],
    ];
    for args in &cases {
        let with = trace_scenario(SCENARIO, args, &[]).unwrap();
        let derived = trace_scenario_with_env(SCENARIO, args, &["-v"], &without_hooks).unwrap();
        assert!(
            derived.stderr.contains("error report: using derived/sk_err at the close transition"),
            "{args:?}: {}",
            derived.stderr
        );
        let summary = derived.summary.as_ref().unwrap();
        assert!(summary["probes"].to_string().contains("derived/sk_err at the close transition"), "{summary}");
        let key = |e: &Value| {
            (e["syscall"].to_string(), e["errno"].to_string(), e["state"].to_string(), e["cause"].to_string())
        };
        let (a, b): (Vec<_>, Vec<_>) =
            (with.events.iter().map(key).collect(), derived.events.iter().map(key).collect());
        assert!(!a.is_empty(), "{args:?}: nothing seen");
        assert_eq!(b, a, "{args:?}: the derived error report labels differently");
    }
}
