//! `cargo xtask bench`: the slowdown socktrace causes to the process it traces, beside strace
//! and bpftrace (when installed), on four loopback workloads; measured as the median ratio of
//! interleaved traced/untraced pairs in one run, so machine noise cancels out.
//!
//! Usage: bench SCENARIO_BIN OUT_DIR [PAIRS]
//! Writes OUT_DIR/report.md (the table) and OUT_DIR/slowdown.svg (slowdown vs failure rate).

use anyhow::{anyhow, Context as _, Result};
use serde_json::Value;
use socktrace_tests::{socktrace_bin, wait_timeout, Scenario};
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tool {
    Socktrace,
    Strace,
    BpftracePrint,
    BpftraceCount,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Socktrace => "socktrace",
            Tool::Strace => "strace -f -Z",
            Tool::BpftracePrint => "bpftrace printing each event",
            Tool::BpftraceCount => "bpftrace counting only in kernel",
        }
    }

    fn available(self) -> bool {
        let bin = match self {
            Tool::Socktrace => return true,
            Tool::Strace => "strace",
            Tool::BpftracePrint | Tool::BpftraceCount => "bpftrace",
        };
        Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

struct Workload {
    name: &'static str,
    args: Vec<String>,
}

/// A tracer attached to one workload run.
struct Running {
    child: Child,
    out: PathBuf,
    attach: Duration,
    lines: Option<std::thread::JoinHandle<u64>>,
}

const SYSCALLS: [&str; 9] = ["read", "write", "readv", "writev", "recvfrom", "sendto", "recvmsg", "sendmsg", "connect"];

fn bpftrace_script(pid: u32, print: bool) -> String {
    let probes: Vec<String> = SYSCALLS.iter().map(|s| format!("tracepoint:syscalls:sys_exit_{s}")).collect();
    let action =
        if print { r#"printf("%d %s %d\n", tid, probe, args->ret);"# } else { "@[probe, args->ret] = count();" };
    format!("BEGIN {{ printf(\"ready\\n\"); }} {} /pid == {pid} && args->ret < 0/ {{ {action} }}", probes.join(","))
}

fn start(tool: Tool, pid: u32, out: &Path) -> Result<Running> {
    let started = Instant::now();
    let (mut cmd, marker, marker_on_stderr) = match tool {
        Tool::Socktrace => {
            let mut c = Command::new(socktrace_bin());
            c.args(["-p", &pid.to_string(), "--json", "-o"]).arg(out);
            (c, "socktrace: attached", true)
        }
        Tool::Strace => {
            let mut c = Command::new("strace");
            c.args(["-f", "-Z", "-o"]).arg(out).args(["-p", &pid.to_string()]);
            (c, "attached", true)
        }
        Tool::BpftracePrint | Tool::BpftraceCount => {
            let mut c = Command::new("bpftrace");
            c.args(["-e", &bpftrace_script(pid, tool == Tool::BpftracePrint)]);
            (c, "ready", false)
        }
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", tool.name()))?;
    let (tx, rx) = mpsc::channel::<String>();
    let watched = if marker_on_stderr {
        child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>)
    } else {
        child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>)
    };
    let other: Option<Box<dyn std::io::Read + Send>> = if marker_on_stderr {
        child.stdout.take().map(|s| Box::new(s) as _)
    } else {
        child.stderr.take().map(|s| Box::new(s) as _)
    };
    // Counts the lines after the marker (bpftrace prints events on stdout).
    let lines = std::thread::spawn(move || {
        let mut n = 0u64;
        let mut after = false;
        for line in BufReader::new(watched.unwrap()).lines().map_while(Result::ok) {
            if after {
                n += 1;
            } else if line.contains(marker) {
                after = true;
                let _ = tx.send(line);
            }
        }
        n
    });
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = other.map(|mut o| o.read_to_end(&mut sink));
    });
    rx.recv_timeout(Duration::from_secs(60)).map_err(|_| anyhow!("{} did not attach", tool.name()))?;
    Ok(Running { child, out: out.to_path_buf(), attach: started.elapsed(), lines: Some(lines) })
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Peak resident memory of a process since it started (start-up included), KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

fn vm_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// Stops the tracer and returns how many failing calls it accounted for.
fn stop(tool: Tool, mut r: Running) -> Result<u64> {
    // SAFETY: our own child.
    unsafe { libc::kill(r.child.id() as i32, libc::SIGINT) };
    wait_timeout(&mut r.child, Duration::from_secs(60))?.ok_or_else(|| anyhow!("{} did not stop", tool.name()))?;
    let printed = r.lines.take().unwrap().join().unwrap_or(0);
    Ok(match tool {
        Tool::Socktrace => {
            let text = std::fs::read_to_string(&r.out)?;
            let summary: Value = text
                .lines()
                .rev()
                .find_map(|l| serde_json::from_str::<Value>(l).ok().filter(|v| v["type"] == "summary"))
                .ok_or_else(|| anyhow!("no socktrace summary"))?;
            summary["failures"].as_u64().unwrap_or(0) + summary["lost"].as_u64().unwrap_or(0)
        }
        Tool::Strace => std::fs::read_to_string(&r.out)?.lines().filter(|l| l.contains("= -1 E")).count() as u64,
        Tool::BpftracePrint => printed,
        // The counting script prints its map at exit: "@[tracepoint:..., -11]: 200000".
        Tool::BpftraceCount => 0,
    })
}

struct Sample {
    untraced_ns: u64,
    traced_ns: u64,
    expected: u64,
    seen: u64,
    attach: Duration,
    /// Peak RSS while the workload ran, and the high-water mark since start-up.
    peak_kib: u64,
    hwm_kib: u64,
}

fn run_workload(
    scenario: &str,
    w: &Workload,
    tracer: Option<Tool>,
    out: &Path,
) -> Result<(u64, u64, u64, Duration, u64, u64)> {
    let args: Vec<&str> = w.args.iter().map(String::as_str).collect();
    let mut s = Scenario::start(scenario, &args)?;
    let running = tracer.map(|t| start(t, s.pid, out)).transpose()?;
    // socktrace's resident memory while the workload runs (start-up excluded), sampled.
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let tracer_pid = running.as_ref().map(|r| r.child.id());
    let sampler = std::thread::spawn(move || {
        let mut peak = 0;
        while let Some(pid) = tracer_pid {
            peak = peak.max(vm_rss_kib(pid));
            if stop_rx.recv_timeout(Duration::from_millis(10)).is_ok() {
                break;
            }
        }
        peak
    });
    s.go()?;
    let report = s.finish()?;
    let _ = stop_tx.send(());
    let running_peak = sampler.join().unwrap_or(0);
    let r = report.iter().find(|v| v["step"] == "bench").ok_or_else(|| anyhow!("no bench report"))?;
    let (ns, failures) = (r["ns"].as_u64().unwrap_or(0), r["failures"].as_u64().unwrap_or(0));
    let (seen, attach, hwm) = match (tracer, running) {
        (Some(t), Some(running)) => {
            let attach = running.attach;
            let hwm = vm_hwm_kib(running.child.id());
            (stop(t, running)?, attach, hwm)
        }
        _ => (0, Duration::ZERO, 0),
    };
    Ok((ns, failures, seen, attach, running_peak, hwm))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scenario = args.first().cloned().context("usage: bench SCENARIO_BIN OUT_DIR [PAIRS]")?;
    let out_dir = PathBuf::from(args.get(1).cloned().unwrap_or_else(|| "target/bench".into()));
    let pairs: usize = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(7);
    std::fs::create_dir_all(&out_dir)?;
    socktrace_tests::require_root();

    // The servers live in their own, untraced processes for the whole run.
    let mut servers = Vec::new();
    let mut port_of = |mode: &str| -> Result<u16> {
        let mut c = Command::new(&scenario).arg(mode).stdout(Stdio::piped()).spawn()?;
        let mut line = String::new();
        BufReader::new(c.stdout.take().unwrap()).read_line(&mut line)?;
        servers.push(c);
        line.trim().strip_prefix("port ").and_then(|p| p.parse().ok()).ok_or_else(|| anyhow!("server said {line:?}"))
    };
    let echo = format!("127.0.0.1:{}", port_of("echo-server")?);
    let abort = format!("127.0.0.1:{}", port_of("abort-server")?);
    let workloads = [
        Workload {
            name: "echo: 64-byte request/response, nothing fails",
            args: vec!["bench-echo".into(), echo, "60000".into()],
        },
        Workload {
            name: "error storm: non-blocking read on an empty socket (EAGAIN)",
            args: vec!["bench-storm".into(), "1000000".into()],
        },
        Workload { name: "refused connects", args: vec!["bench-refused".into(), "30000".into()] },
        Workload { name: "connections reset by the peer", args: vec!["bench-reset".into(), abort, "12000".into()] },
    ];
    // BENCH_ONLY=socktrace (a comma list of tool names) measures a subset.
    let only = std::env::var("BENCH_ONLY").ok();
    let tools: Vec<Tool> = [Tool::Socktrace, Tool::Strace, Tool::BpftracePrint, Tool::BpftraceCount]
        .into_iter()
        .filter(|t| t.available())
        .filter(|t| only.as_deref().is_none_or(|o| o.split(',').any(|n| t.name().starts_with(n))))
        .collect();
    let tmp = out_dir.join("tracer.out");

    let mut results: Vec<(usize, Tool, Vec<Sample>)> = Vec::new();
    for (wi, w) in workloads.iter().enumerate() {
        for &tool in &tools {
            let mut samples = Vec::new();
            for i in 0..pairs {
                // Interleaved, alternating which goes first.
                let (untraced, traced) = if i % 2 == 0 {
                    let u = run_workload(&scenario, w, None, &tmp)?;
                    (u, run_workload(&scenario, w, Some(tool), &tmp)?)
                } else {
                    let t = run_workload(&scenario, w, Some(tool), &tmp)?;
                    (run_workload(&scenario, w, None, &tmp)?, t)
                };
                samples.push(Sample {
                    untraced_ns: untraced.0,
                    traced_ns: traced.0,
                    expected: traced.1,
                    seen: traced.2,
                    attach: traced.3,
                    peak_kib: traced.4,
                    hwm_kib: traced.5,
                });
            }
            let mut ratios: Vec<f64> = samples.iter().map(|s| s.traced_ns as f64 / s.untraced_ns as f64).collect();
            eprintln!("bench: {:<58} {:<33} {:.2}x", w.name, tool.name(), median(&mut ratios));
            results.push((wi, tool, samples));
        }
    }
    for mut s in servers {
        let _ = s.kill();
        let _ = s.wait();
    }

    let report = render_report(&workloads, &tools, &results, pairs);
    println!("{report}");
    std::fs::write(out_dir.join("report.md"), &report)?;
    std::fs::write(out_dir.join("slowdown.svg"), render_svg(&workloads, &tools, &results))?;
    eprintln!("bench: wrote {} and {}", out_dir.join("report.md").display(), out_dir.join("slowdown.svg").display());
    let _ = std::fs::remove_file(&tmp);
    Ok(())
}

fn stats(samples: &[Sample]) -> (f64, f64, f64) {
    let mut r: Vec<f64> = samples.iter().map(|s| s.traced_ns as f64 / s.untraced_ns as f64).collect();
    let m = median(&mut r);
    (m, r.first().copied().unwrap_or(f64::NAN), r.last().copied().unwrap_or(f64::NAN))
}

fn render_report(
    workloads: &[Workload],
    tools: &[Tool],
    results: &[(usize, Tool, Vec<Sample>)],
    pairs: usize,
) -> String {
    let mut out = format!(
        "Slowdown of the traced process: median traced/untraced ratio of {pairs} interleaved pairs [min–max]; \
         events accounted for / the workload's own count of failing calls.\n\n| workload | failing calls/s (untraced) |"
    );
    for t in tools {
        out.push_str(&format!(" {} |", t.name()));
    }
    out.push_str("\n|---|---|");
    for _ in tools {
        out.push_str("---|");
    }
    out.push('\n');
    for (wi, w) in workloads.iter().enumerate() {
        let first = results.iter().find(|r| r.0 == wi).map(|r| &r.2[0]);
        let rate = first.map(|s| s.expected as f64 / (s.untraced_ns as f64 / 1e9)).unwrap_or(0.0);
        out.push_str(&format!("| {} | {:.0} |", w.name, rate));
        for t in tools {
            let samples = &results.iter().find(|r| r.0 == wi && r.1 == *t).unwrap().2;
            let (m, lo, hi) = stats(samples);
            let expected: u64 = samples.iter().map(|s| s.expected).sum();
            let seen: u64 = samples.iter().map(|s| s.seen).sum();
            let acct = if *t == Tool::BpftraceCount { String::new() } else { format!("; {seen}/{expected} events") };
            out.push_str(&format!(" {m:.2}x [{lo:.2}–{hi:.2}]{acct} |"));
        }
        out.push('\n');
    }
    if tools.contains(&Tool::Socktrace) {
        let mut attach: Vec<f64> = results
            .iter()
            .filter(|r| r.1 == Tool::Socktrace)
            .flat_map(|r| r.2.iter())
            .map(|s| s.attach.as_secs_f64() * 1e3)
            .collect();
        let storm = || results.iter().filter(|r| r.1 == Tool::Socktrace && r.0 == 1).flat_map(|r| r.2.iter());
        let peak = storm().map(|s| s.peak_kib).max().unwrap_or(0);
        let hwm = storm().map(|s| s.hwm_kib).max().unwrap_or(0);
        out.push_str(&format!(
            "\nsocktrace: attach time (start to the attached line) median {:.0} ms over {} runs; peak RSS during the error storm {:.1} MiB (high-water mark including start-up: {:.1} MiB).\n",
            median(&mut attach),
            attach.len(),
            peak as f64 / 1024.0,
            hwm as f64 / 1024.0
        ));
    }
    out
}

fn render_svg(workloads: &[Workload], tools: &[Tool], results: &[(usize, Tool, Vec<Sample>)]) -> String {
    // Slowdown (log scale) against failing calls per second (log scale), one series per tool.
    let (w, h, left, bottom) = (760.0, 440.0, 70.0, 60.0);
    let colors = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"];
    let x_of = |rate: f64| left + (rate.max(1.0).log10() / 7.0) * (w - left - 20.0);
    let y_of = |ratio: f64| (h - bottom) - (ratio.max(1.0).log10() / 2.0) * (h - bottom - 20.0);
    let mut svg = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
    svg.push_str(&format!("<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{left}\" y1=\"20\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>\n", h - bottom, w - 20.0, h - bottom, h - bottom));
    for p in 0..=7 {
        let x = x_of(10f64.powi(p));
        svg.push_str(&format!("<text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">1e{p}</text>\n", h - bottom + 16.0));
    }
    for r in [1.0, 1.5, 2.0, 5.0, 10.0, 50.0, 100.0] {
        let y = y_of(r);
        svg.push_str(&format!("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{r}x</text>\n<line x1=\"{left}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#eee\"/>\n", left - 6.0, y + 4.0, w - 20.0));
    }
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">failing calls per second (untraced workload)</text>\n",
        (w + left) / 2.0,
        h - 20.0
    ));
    svg.push_str(&format!("<text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">slowdown of the traced process (median)</text>\n", (h - bottom) / 2.0, (h - bottom) / 2.0));
    for (ti, t) in tools.iter().enumerate() {
        let color = colors[ti % colors.len()];
        let mut pts: Vec<(f64, f64)> = Vec::new();
        for (wi, _) in workloads.iter().enumerate() {
            if let Some(r) = results.iter().find(|r| r.0 == wi && r.1 == *t) {
                let s0 = &r.2[0];
                let rate = s0.expected as f64 / (s0.untraced_ns as f64 / 1e9);
                pts.push((x_of(rate), y_of(stats(&r.2).0)));
            }
        }
        pts.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        let path: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n",
            path.join(" ")
        ));
        for (x, y) in &pts {
            svg.push_str(&format!("<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"{color}\"/>\n"));
        }
        svg.push_str(&format!(
            "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\">{}</text>\n",
            left + 20.0,
            28.0 + 18.0 * ti as f64,
            left + 38.0,
            38.0 + 18.0 * ti as f64,
            t.name()
        ));
    }
    svg.push_str("</svg>\n");
    svg
}
