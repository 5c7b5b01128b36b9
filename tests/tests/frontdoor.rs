//! What a person meets first: the start-up lines, failure lines on a terminal (wrapped to its
//! width, the explanation under the head line) and in a pipe (one line each), `-c` on a
//! multi-threaded runtime, and the times of failures from the attach window.

use serde_json::Value;
use socktrace_tests::{run_in_pty, socktrace_bin, strip_ansi, Scenario, Tracer};
use std::time::Duration;

const SCENARIO: &str = env!("CARGO_BIN_EXE_scenario");

/// The demo's whole catalogue on terminals of 80 and 100 columns: no row wider than the
/// terminal, every failure's explanation there, indented under its head line.
#[test]
fn failures_wrap_to_the_terminal() {
    for cols in [80u16, 100] {
        let run = run_in_pty(&socktrace_bin(), &["demo"], cols, 50, Duration::from_secs(120)).unwrap();
        let text = strip_ansi(&run.output);
        assert!(run.status.success(), "{cols}: demo failed:\n{text}");
        for row in text.lines() {
            assert!(row.chars().count() <= cols as usize, "{cols} columns: a row of {}:\n{row}\n\n{text}", row.len());
        }
        // Every head line (a time, then pid/tid) has an explanation under it, indented.
        let rows: Vec<&str> = text.lines().collect();
        let heads: Vec<usize> = (0..rows.len()).filter(|&i| is_head(rows[i])).collect();
        assert!(heads.len() >= 12, "{cols}: only {} failures in\n{text}", heads.len());
        for &i in &heads {
            let note = rows[i + 1..].iter().take_while(|r| r.starts_with("  ")).find(|r| r.starts_with("    "));
            assert!(note.is_some_and(|n| n.trim().len() > 10), "{cols}: no explanation under {:?}\n{text}", rows[i]);
        }
        for phrase in ["nothing listens on", "dropped on this host", "no route to host"] {
            let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(joined.contains(phrase), "{cols}: {phrase:?} missing in\n{text}");
        }
    }
}

/// `+1.234567 4242/4243 ...` or `-0.001000 ...`: the first row of a failure.
fn is_head(row: &str) -> bool {
    let mut words = row.split_whitespace();
    let (Some(time), Some(ids)) = (words.next(), words.next()) else { return false };
    (time.starts_with('+') || time.starts_with('-'))
        && time[1..].replace('.', "").chars().all(|c| c.is_ascii_digit())
        && ids.contains('/')
        && ids.split('/').all(|p| p.chars().all(|c| c.is_ascii_digit()))
}

/// Piped: one line per failure, whatever its length, so grep keeps working; plain quotes.
#[test]
fn piped_failures_stay_one_line_each() {
    let out = std::process::Command::new(socktrace_bin()).arg("demo").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let failures: Vec<&str> = text.lines().filter(|l| is_head(l)).collect();
    assert!(failures.len() >= 12, "{text}");
    for line in &failures {
        // The head and the explanation on the same line: a cause code, then words after it.
        assert!(line.split_whitespace().count() > 15, "{line}");
    }
    // No continuation rows (only -v adds indented evidence); the summary's rows start with
    // their counts.
    let continued = |l: &&str| l.starts_with("    ") && l.trim_start().starts_with(|c: char| c.is_ascii_alphabetic());
    assert!(!text.lines().any(|l| continued(&l)), "{text}");
    assert!(text.contains("connect(fd=") && text.contains(", SO_ERROR) "), "an SO_ERROR result is marked:\n{text}");
    assert!(!text.contains("\\\""), "quotes are plain in text:\n{text}");
}

/// Before tracing starts: at most three lines, none over 160 characters; on this kernel
/// (no kprobes, fentry refused) one notice names what is lost and points at `socktrace check`.
#[test]
fn start_up_says_only_what_matters() {
    let mut scenario = Scenario::start(SCENARIO, &["connect", "127.0.0.1:closed"]).unwrap();
    let pid = scenario.pid.to_string();
    let tracer = Tracer::start(&["-p", &pid]).unwrap();
    let start_up: Vec<String> = tracer.stderr.lines().map(String::from).collect();
    scenario.go().unwrap();
    scenario.finish().unwrap();
    let out = tracer.wait(Duration::from_secs(15)).unwrap();
    assert!(start_up.len() <= 3, "{} lines:\n{}", start_up.len(), start_up.join("\n"));
    for line in &start_up {
        assert!(line.chars().count() <= 160, "{} characters: {line}", line.chars().count());
        assert!(!line.contains("Verifier output"), "{line}");
    }
    let attached = start_up.last().unwrap();
    assert!(attached.starts_with(&format!("socktrace: attached to PID {pid} (probe mode auto")), "{attached}");
    let notice = start_up.iter().find(|l| l.contains("notice")).expect("this kernel refuses fentry and has no kprobes");
    assert!(notice.contains("ICMP senders") && notice.contains("RST segments"), "{notice}");
    assert!(notice.contains("socktrace check"), "{notice}");
    // The closing line counts failures and routine outcomes apart.
    assert!(out.stderr.contains("the traced process exited; 1 failure (rst_received 1), 1 printed"), "{}", out.stderr);
    // -v keeps the full detail.
    let mut scenario = Scenario::start(SCENARIO, &["connect", "127.0.0.1:closed"]).unwrap();
    let pid = scenario.pid.to_string();
    let tracer = Tracer::start(&["-v", "-p", &pid]).unwrap();
    let verbose = tracer.stderr.clone();
    scenario.go().unwrap();
    scenario.finish().unwrap();
    tracer.wait(Duration::from_secs(15)).unwrap();
    assert!(verbose.contains("tp_btf/inet_sock_set_state") && verbose.contains("refused"), "{verbose}");
}

/// A JVM's HTTP client thread gets the refusal; `-c java` (the process's name) still sees it.
#[test]
fn dash_c_matches_the_process_of_a_jvm_thread() {
    let dir = java_class();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let tracer = Tracer::start(&["--json", "-c", "java"]).unwrap();
    let status = std::process::Command::new("java")
        .args(["-cp", dir.to_str().unwrap(), "RefusedClient", &closed.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "the Java client failed: {status}");
    tracer.signal(libc::SIGINT);
    let out = tracer.wait(Duration::from_secs(15)).unwrap();
    let (events, _) = out.json().unwrap();
    let refused: Vec<&Value> =
        events.iter().filter(|e| e["errno"] == "ECONNREFUSED" && e["dport"] == closed as u64).collect();
    assert!(!refused.is_empty(), "no refusal seen with -c java; events: {events:#?}\n{}", out.stderr);
    // The thread that failed is not named java: the match was the process's.
    assert!(refused.iter().any(|e| e["comm"] != "java"), "{refused:#?}");
}

/// A Java 11+ client whose HttpClient threads make the connects (compiled once per run).
fn java_class() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("java-refused");
    std::fs::create_dir_all(&dir).unwrap();
    let source = dir.join("RefusedClient.java");
    std::fs::write(
        &source,
        r#"import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;

public class RefusedClient {
    public static void main(String[] args) throws Exception {
        HttpClient client = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(2)).build();
        HttpRequest req = HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + args[0] + "/")).build();
        for (int i = 0; i < 3; i++) {
            try {
                client.send(req, HttpResponse.BodyHandlers.discarding());
            } catch (java.net.ConnectException e) {
                // Refused: what the test wants.
            }
        }
    }
}
"#,
    )
    .unwrap();
    let status = std::process::Command::new("javac").arg("-d").arg(&dir).arg(&source).status().unwrap();
    assert!(status.success(), "javac failed");
    dir
}

/// Failures from the attach window (probes in place, the attach not yet announced, sockets
/// older than the trace being adopted) carry their true times: in step with the program's own
/// clock, negative before the attach, never a run of zeros.
#[test]
fn failures_from_the_attach_window_have_true_times() {
    // 8,000 sockets to adopt keep the window open for a while; a refusal every 5 ms. Text,
    // relative to the attach: the same spacing as the program's clock, before and after.
    let mut scenario = Scenario::start(SCENARIO, &["refused-while-attaching", "8000", "5"]).unwrap();
    let pid = scenario.pid.to_string();
    let tracer = Tracer::start(&["-p", &pid]).unwrap();
    scenario.go().unwrap();
    let client = scenario.finish().unwrap();
    let out = tracer.wait(Duration::from_secs(30)).unwrap();
    let times: Vec<f64> = out
        .stdout
        .lines()
        .filter(|l| is_head(l) && l.contains("ECONNREFUSED"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .collect();
    let mono: Vec<f64> = client.iter().filter_map(|c| c["mono_ns"].as_u64()).map(|n| n as f64 / 1e9).collect();
    assert!(times.len() > 20, "{}", out.stdout);
    assert!(times.iter().any(|&t| t < 0.0), "no failure from before the attach was announced: {times:?}");
    // Every failure's time minus the program's own: one offset (the attach's), within 5 ms.
    let offsets: Vec<f64> = times.iter().zip(mono.iter().skip(mono.len() - times.len())).map(|(t, m)| t - m).collect();
    let (lo, hi) = offsets.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &o| (lo.min(o), hi.max(o)));
    assert!(hi - lo < 0.005, "times drift from the program's clock by {:.4} s: {times:?}", hi - lo);
    let zeros = times.iter().filter(|&&t| t == 0.0).count();
    assert!(zeros <= 1, "{zeros} failures at +0.000000: {times:?}");
}
