//! `cargo xtask bench`: what socktrace costs, beside strace and bpftrace (when installed), on
//! loopback workloads, measured as the median ratio of interleaved traced/untraced pairs in
//! one run, so machine noise cancels out. Each tool is measured three ways:
//!
//! * traced: the tool traces the workload's process;
//! * collateral: the tool traces another, idle process while the workload runs untraced (what
//!   every other process on a production box pays);
//! * system-wide (socktrace only): no selector, every process traced.
//!
//! Then one more traced run per workload with the kernel's BPF statistics on
//! (`kernel.bpf_stats_enabled`, which itself costs time, so never during the timed pairs): the
//! time each socktrace program spends in the kernel, per run and per failing call.
//!
//! And a busy server (busy.rs): 100,000 idle keep-alive connections and a steady request load,
//! traced and with the system-wide agent.
//!
//! Usage: bench SCENARIO_BIN OUT_DIR [PAIRS] (the `crowd` binary beside SCENARIO_BIN)
//! Writes OUT_DIR/report.md (the tables) and OUT_DIR/slowdown.svg (slowdown vs failure rate).

mod busy;

use anyhow::{anyhow, Context as _, Result};
use serde_json::Value;
use socktrace_tests::{socktrace_bin, wait_timeout, Scenario};
use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tool {
    Socktrace,
    /// Another socktrace binary (`BENCH_PEER=PATH`), run in the same pairs as this one's: an
    /// older tree's, to compare two versions in one run rather than across runs.
    SocktracePeer,
    Strace,
    BpftracePrint,
    BpftraceCount,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Socktrace => "socktrace",
            Tool::SocktracePeer => "socktrace (BENCH_PEER)",
            Tool::Strace => "strace -f -Z",
            Tool::BpftracePrint => "bpftrace printing each event",
            Tool::BpftraceCount => "bpftrace counting only in kernel",
        }
    }

    fn available(self) -> bool {
        let bin = match self {
            Tool::Socktrace => return true,
            Tool::SocktracePeer => return peer_bin().is_some(),
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

/// `BENCH_PEER`: the socktrace binary to compare with, if any.
fn peer_bin() -> Option<PathBuf> {
    std::env::var_os("BENCH_PEER").map(PathBuf::from)
}

/// Whom the tool traces while the workload runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// The workload's own process.
    Traced,
    /// Another, idle process: the workload runs untraced beside it.
    Collateral,
    /// Everything (socktrace with no selector).
    SystemWide,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Traced => "traced",
            Mode::Collateral => "collateral",
            Mode::SystemWide => "system-wide",
        }
    }
}

struct Workload {
    name: &'static str,
    args: Vec<String>,
    /// Only socktrace sees it (io_uring requests make no syscall of their own: strace and the
    /// syscall-tracepoint bpftrace scripts would see nothing to count).
    socktrace_only: bool,
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

/// Starts `tool` tracing `pids` (none: everything; the peers trace the first) and waits for it
/// to be attached.
fn start(tool: Tool, pids: &[u32], out: &Path) -> Result<Running> {
    let pid = pids.first().copied();
    let started = Instant::now();
    let (mut cmd, marker, marker_on_stderr) = match tool {
        Tool::Socktrace | Tool::SocktracePeer => {
            let bin = if tool == Tool::Socktrace { socktrace_bin() } else { peer_bin().context("BENCH_PEER")? };
            let mut c = Command::new(bin);
            for pid in pids {
                c.args(["-p", &pid.to_string()]);
            }
            c.args(["--json", "-o"]).arg(out);
            (c, "socktrace: attached", true)
        }
        Tool::Strace => {
            let mut c = Command::new("strace");
            c.args(["-f", "-Z", "-o"]).arg(out).args(["-p", &pid.context("strace traces a PID")?.to_string()]);
            (c, "attached", true)
        }
        Tool::BpftracePrint | Tool::BpftraceCount => {
            let mut c = Command::new("bpftrace");
            c.args(["-e", &bpftrace_script(pid.context("bpftrace filters a PID")?, tool == Tool::BpftracePrint)]);
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
    socktrace_tests::proc_status_kib(pid, key).unwrap_or(0)
}

/// A process's peak resident memory, sampled on a thread until `peak_kib` (0 without a
/// process).
struct PeakRss {
    stop: mpsc::Sender<()>,
    sampler: std::thread::JoinHandle<u64>,
}

impl PeakRss {
    fn sample(pid: Option<u32>, every: Duration) -> PeakRss {
        let (stop, stop_rx) = mpsc::channel::<()>();
        let sampler = std::thread::spawn(move || {
            let mut peak = 0;
            while let Some(pid) = pid {
                peak = peak.max(status_kib(pid, "VmRSS:"));
                if stop_rx.recv_timeout(every).is_ok() {
                    break;
                }
            }
            peak
        });
        PeakRss { stop, sampler }
    }

    fn peak_kib(self) -> u64 {
        let _ = self.stop.send(());
        self.sampler.join().unwrap_or(0)
    }
}

/// Stops the tracer and returns how many failing calls it accounted for.
fn stop(tool: Tool, mut r: Running) -> Result<u64> {
    // SAFETY: our own child.
    unsafe { libc::kill(r.child.id() as i32, libc::SIGINT) };
    wait_timeout(&mut r.child, Duration::from_secs(120))?.ok_or_else(|| anyhow!("{} did not stop", tool.name()))?;
    let printed = r.lines.take().unwrap().join().unwrap_or(0);
    Ok(match tool {
        Tool::Socktrace | Tool::SocktracePeer => {
            let text = std::fs::read_to_string(&r.out)?;
            let summary: Value = text
                .lines()
                .rev()
                .find_map(|l| serde_json::from_str::<Value>(l).ok().filter(|v| v["type"] == "summary"))
                .ok_or_else(|| anyhow!("no socktrace summary"))?;
            // Failing calls: the failures but the sockets the process ended while they waited
            // (errno "-": no call failed), and the routine outcomes (EAGAIN, EINPROGRESS),
            // counted apart (schema 7).
            let routine: u64 = summary["routine"].as_object().map_or(0, |r| r.values().filter_map(Value::as_u64).sum());
            let ended: u64 = summary["rows"]
                .as_array()
                .map_or(0, |rows| rows.iter().filter(|r| r["errno"] == "-").filter_map(|r| r["count"].as_u64()).sum());
            (summary["failures"].as_u64().unwrap_or(0) + routine + summary["lost"].as_u64().unwrap_or(0))
                .saturating_sub(ended)
        }
        Tool::Strace => std::fs::read_to_string(&r.out)?.lines().filter(|l| l.contains("= -1 E")).count() as u64,
        Tool::BpftracePrint => printed,
        // The counting script prints its map at exit: not an event count.
        Tool::BpftraceCount => 0,
    })
}

/// One timed run of a workload.
struct RunResult {
    ns: u64,
    failures: u64,
    /// What the tool accounted for (0 when untraced).
    seen: u64,
    attach: Duration,
    /// socktrace's peak RSS while the workload ran, and its high-water mark since start-up.
    peak_kib: u64,
    hwm_kib: u64,
    /// Per socktrace program: (runs, ns in the kernel), when BPF statistics were on.
    bpf: BTreeMap<String, (u64, u64)>,
    /// What the statistics reported per run for an empty program on the same hook in the
    /// same run (their own cost), when they were on.
    floor_ns: f64,
}

/// An idle process for the collateral runs: traced, it makes no calls at all.
fn idle_process() -> Result<Child> {
    Command::new("sleep").arg("3600").spawn().context("starting an idle process (sleep)")
}

/// The names the kernel lists socktrace's programs under.
fn is_socktrace_program(name: &str) -> bool {
    name == "sys_exit"
        || name == "sys_exit_btf"
        || [
            "inet_sock_set_s",
            "tcp_receive_res",
            "tcp_send_reset",
            "inet_sk_error_r",
            "tcp_retransmit_",
            "tcp_destroy_soc",
            "tp_",
            "kp_",
            "raw_inet_sk_err",
            "raw_kfree_skb",
            "rst_segment",
            "btf_io_uring",
            "raw_io_uring",
        ]
        .iter()
        .any(|p| name.starts_with(p))
}

/// (runs, ns) of each socktrace program loaded now (kernel.bpf_stats_enabled must be on).
fn bpf_stats() -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    for p in aya::programs::loaded_programs().flatten() {
        let Some(name) = p.name_as_str().map(str::to_string) else { continue };
        if is_socktrace_program(&name) {
            let e = out.entry(name).or_insert((0, 0));
            e.0 += p.run_count();
            e.1 += p.run_time().as_nanos() as u64;
        }
    }
    out
}

/// An empty program on the `sys_exit` hook (`socktrace stats-floor`), beside socktrace's
/// during a statistics run: what the statistics report for it per run is their own cost (two
/// clock reads) plus the cache misses of running a program at all under that workload (an
/// echo's context switches cost more than a storm's tight loop), subtracted from every
/// program's figure so the table shows the time socktrace's programs really take.
struct StatsFloor(Child);

impl StatsFloor {
    fn start() -> Result<Self> {
        let mut child = Command::new(socktrace_bin())
            .arg("stats-floor")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting socktrace stats-floor")?;
        let mut line = String::new();
        BufReader::new(child.stderr.take().context("stderr")?).read_line(&mut line)?;
        let floor = StatsFloor(child);
        anyhow::ensure!(line.contains("attached"), "socktrace stats-floor said {line:?}");
        Ok(floor)
    }

    /// ns per run reported for the empty program so far.
    fn ns_per_run(&self) -> Result<f64> {
        let (runs, ns) = aya::programs::loaded_programs()
            .flatten()
            .find(|p| p.name_as_str() == Some("stats_floor"))
            .map(|p| (p.run_count(), p.run_time().as_nanos() as u64))
            .context("stats_floor was not loaded")?;
        anyhow::ensure!(runs > 0, "stats_floor never ran");
        Ok(ns as f64 / runs as f64)
    }
}

impl Drop for StatsFloor {
    fn drop(&mut self) {
        // SAFETY: our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let _ = self.0.wait();
    }
}

fn set_bpf_stats(on: bool) -> Result<()> {
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", if on { "1" } else { "0" })
        .context("switching kernel.bpf_stats_enabled")
}

fn run_workload(
    scenario: &str,
    w: &Workload,
    tracer: Option<(Tool, Mode)>,
    out: &Path,
    stats: bool,
) -> Result<RunResult> {
    let args: Vec<&str> = w.args.iter().map(String::as_str).collect();
    // The empty program first: attached before socktrace's, it runs first on the hook, so the
    // misses of the first program after a context switch are the floor's, not socktrace's.
    let floor = if stats { Some(StatsFloor::start()?) } else { None };
    let mut s = Scenario::start(scenario, &args)?;
    let mut idle = None;
    let running = match tracer {
        None => None,
        Some((tool, mode)) => {
            let pid = match mode {
                Mode::Traced => Some(s.pid),
                Mode::Collateral => {
                    let p = idle_process()?;
                    let pid = p.id();
                    idle = Some(p);
                    Some(pid)
                }
                Mode::SystemWide => None,
            };
            Some(start(tool, &Vec::from_iter(pid), out)?)
        }
    };
    // The tracer's resident memory while the workload runs (start-up excluded), sampled.
    let sampler = PeakRss::sample(running.as_ref().map(|r| r.child.id()), Duration::from_millis(10));
    if stats {
        set_bpf_stats(true)?;
    }
    s.go()?;
    // strace slows the storm a hundredfold and more: minutes, not the tests' one.
    let report = s.finish_within(Duration::from_secs(900))?;
    let bpf = if stats { bpf_stats() } else { BTreeMap::new() };
    let floor_ns = match &floor {
        Some(f) => f.ns_per_run()?,
        None => 0.0,
    };
    if stats {
        set_bpf_stats(false)?;
    }
    drop(floor);
    let peak_kib = sampler.peak_kib();
    let r = report.iter().find(|v| v["step"] == "bench").ok_or_else(|| anyhow!("no bench report"))?;
    let (ns, failures) = (r["ns"].as_u64().unwrap_or(0), r["failures"].as_u64().unwrap_or(0));
    let (seen, attach, hwm_kib) = match (tracer, running) {
        (Some((t, _)), Some(running)) => {
            let attach = running.attach;
            let hwm = status_kib(running.child.id(), "VmHWM:");
            (stop(t, running)?, attach, hwm)
        }
        _ => (0, Duration::ZERO, 0),
    };
    if let Some(mut p) = idle {
        let _ = p.kill();
        let _ = p.wait();
    }
    Ok(RunResult { ns, failures, seen, attach, peak_kib, hwm_kib, bpf, floor_ns })
}

/// One (traced or collateral or system-wide) run beside its untraced twin, and with
/// `BENCH_PEER` the peer binary's run in the same mode.
struct Pair {
    untraced: RunResult,
    traced: RunResult,
    peer: Option<RunResult>,
}

impl Pair {
    fn ratio(&self) -> f64 {
        self.traced.ns as f64 / self.untraced.ns as f64
    }
}

struct Cell {
    workload: usize,
    tool: Tool,
    mode: Mode,
    pairs: Vec<Pair>,
}

impl Cell {
    /// (median, min, max) slowdown.
    fn slowdown(&self) -> (f64, f64, f64) {
        let mut r: Vec<f64> = self.pairs.iter().map(Pair::ratio).collect();
        r.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let m = if r.is_empty() { f64::NAN } else { r[r.len() / 2] };
        (m, r.first().copied().unwrap_or(f64::NAN), r.last().copied().unwrap_or(f64::NAN))
    }

    /// With `BENCH_PEER`: the peer's (median, min, max) slowdown over the same untraced runs,
    /// and the median of this binary's time over the peer's, pair by pair.
    fn against_peer(&self) -> Option<((f64, f64, f64), f64)> {
        let mut peer: Vec<f64> = self
            .pairs
            .iter()
            .map(|p| Some(p.peer.as_ref()?.ns as f64 / p.untraced.ns as f64))
            .collect::<Option<_>>()?;
        let mut ours_over_peer: Vec<f64> =
            self.pairs.iter().filter_map(|p| Some(p.traced.ns as f64 / p.peer.as_ref()?.ns as f64)).collect();
        let (lo, hi) = (
            peer.iter().copied().fold(f64::INFINITY, f64::min),
            peer.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        );
        Some(((median(&mut peer), lo, hi), median(&mut ours_over_peer)))
    }

    /// The workload's own failing calls against what the tool accounted for.
    fn accounting(&self) -> (u64, u64) {
        let expected = match self.mode {
            Mode::Collateral => 0,
            _ => self.pairs.iter().map(|p| p.traced.failures).sum(),
        };
        (expected, self.pairs.iter().map(|p| p.traced.seen).sum())
    }

    fn failure_rate(&self) -> f64 {
        self.pairs.first().map(|p| p.untraced.failures as f64 / (p.untraced.ns as f64 / 1e9)).unwrap_or(0.0)
    }
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

    // The servers live in their own, untraced processes for the whole run (killed on any
    // exit, an error included).
    struct Servers(Vec<Child>);
    impl Drop for Servers {
        fn drop(&mut self) {
            for s in &mut self.0 {
                let _ = s.kill();
                let _ = s.wait();
            }
        }
    }
    let mut servers = Servers(Vec::new());
    let mut port_of = |mode: &str| -> Result<u16> {
        let mut c = Command::new(&scenario).arg(mode).stdout(Stdio::piped()).spawn()?;
        let mut line = String::new();
        BufReader::new(c.stdout.take().unwrap()).read_line(&mut line)?;
        servers.0.push(c);
        line.trim().strip_prefix("port ").and_then(|p| p.parse().ok()).ok_or_else(|| anyhow!("server said {line:?}"))
    };
    let echo = format!("127.0.0.1:{}", port_of("echo-server")?);
    let abort = format!("127.0.0.1:{}", port_of("abort-server")?);
    let workloads = [
        Workload {
            name: "echo: 64-byte request/response, nothing fails",
            args: vec!["bench-echo".into(), echo, "60000".into()],
            socktrace_only: false,
        },
        Workload {
            name: "error storm: non-blocking read on an empty socket (EAGAIN)",
            args: vec!["bench-storm".into(), "1000000".into()],
            socktrace_only: false,
        },
        Workload {
            name: "refused connects",
            args: vec!["bench-refused".into(), "30000".into()],
            socktrace_only: false,
        },
        Workload {
            name: "connections reset by the peer",
            args: vec!["bench-reset".into(), abort, "12000".into()],
            socktrace_only: false,
        },
        Workload {
            name: "dropped SYNs: non-blocking connects whose SYN a netfilter rule drops",
            args: vec!["bench-dropped".into(), "60000".into()],
            socktrace_only: false,
        },
        Workload {
            name: "io_uring error storm: recv MSG_DONTWAIT on an empty socket (EAGAIN), 32 per submit",
            args: vec!["bench-uring-storm".into(), "1000000".into()],
            socktrace_only: true,
        },
    ];
    // BENCH_WORKLOADS=uring (a comma list of name prefixes, or args[0] prefixes) measures a
    // subset of the workloads.
    let only_workloads = std::env::var("BENCH_WORKLOADS").ok();
    let workloads: Vec<Workload> = workloads
        .into_iter()
        .filter(|w| {
            only_workloads.as_deref().is_none_or(|o| {
                o.split(',').any(|n| w.name.starts_with(n) || w.args[0].trim_start_matches("bench-").starts_with(n))
            })
        })
        .collect();
    // BENCH_ONLY=socktrace (a comma list of tool names) measures a subset; BENCH_MODES=traced
    // (a comma list of traced, collateral, system-wide) likewise.
    let only = std::env::var("BENCH_ONLY").ok();
    let only_modes = std::env::var("BENCH_MODES").ok();
    let with_peer = Tool::SocktracePeer.available();
    let tools: Vec<Tool> = [Tool::Socktrace, Tool::Strace, Tool::BpftracePrint, Tool::BpftraceCount]
        .into_iter()
        .filter(|t| t.available())
        .filter(|t| only.as_deref().is_none_or(|o| o.split(',').any(|n| t.name().starts_with(n))))
        .collect();
    let modes_of = |t: Tool| -> Vec<Mode> {
        let all = if t == Tool::Socktrace {
            vec![Mode::Traced, Mode::Collateral, Mode::SystemWide]
        } else {
            vec![Mode::Traced, Mode::Collateral]
        };
        all.into_iter().filter(|m| only_modes.as_deref().is_none_or(|o| o.split(',').any(|n| n == m.name()))).collect()
    };
    let tmp = out_dir.join("tracer.out");

    let mut cells: Vec<Cell> = Vec::new();
    let mut bpf_runs: Vec<(usize, Mode, RunResult)> = Vec::new();
    for (wi, w) in workloads.iter().enumerate() {
        for &tool in tools.iter().filter(|&&t| t == Tool::Socktrace || !w.socktrace_only) {
            for mode in modes_of(tool) {
                let mut cell = Cell { workload: wi, tool, mode, pairs: Vec::new() };
                // The runs of a pair: untraced, traced, and the peer's with BENCH_PEER.
                let runs: Vec<Option<Tool>> = if tool == Tool::Socktrace && with_peer {
                    vec![None, Some(tool), Some(Tool::SocktracePeer)]
                } else {
                    vec![None, Some(tool)]
                };
                for i in 0..pairs {
                    // Interleaved, rotating which goes first, and every other cycle of
                    // rotations backwards: each run precedes each other one as often.
                    let mut results: Vec<Option<RunResult>> = (0..runs.len()).map(|_| None).collect();
                    let n = runs.len();
                    for k in 0..n {
                        let at = if (i / n).is_multiple_of(2) { (i + k) % n } else { (i + n - k) % n };
                        results[at] = Some(run_workload(&scenario, w, runs[at].map(|t| (t, mode)), &tmp, false)?);
                    }
                    let mut results = results.into_iter().map(|r| r.expect("every run made"));
                    let (untraced, traced) = (results.next().unwrap(), results.next().unwrap());
                    cell.pairs.push(Pair { untraced, traced, peer: results.next() });
                }
                let vs_peer = cell
                    .against_peer()
                    .map(|((p, _, _), ratio)| format!("  peer {p:.2}x, ours/peer {ratio:.3}"))
                    .unwrap_or_default();
                eprintln!(
                    "bench: {:<58} {:<33} {:<11} {:.2}x{vs_peer}",
                    w.name,
                    tool.name(),
                    mode.name(),
                    cell.slowdown().0
                );
                cells.push(cell);
                if tool == Tool::Socktrace && mode != Mode::SystemWide {
                    bpf_runs.push((wi, mode, run_workload(&scenario, w, Some((tool, mode)), &tmp, true)?));
                }
            }
        }
    }
    drop(servers);
    // The busy server (BENCH_WORKLOADS=busy, or every workload): socktrace only.
    let busy_selected =
        only_workloads.as_deref().is_none_or(|o| o.split(',').any(|n| n.starts_with("busy") || "busy".starts_with(n)));
    let busy = if busy_selected && tools.contains(&Tool::Socktrace) {
        let crowd = Path::new(&scenario).with_file_name("crowd");
        busy::measure(&crowd, &modes_of(Tool::Socktrace), pairs, &tmp)?
    } else {
        Vec::new()
    };

    let mut report =
        if cells.is_empty() { String::new() } else { render_report(&workloads, &tools, &cells, &bpf_runs, pairs) };
    if !busy.is_empty() {
        report.push_str(&busy::render(&busy, pairs));
    }
    println!("{report}");
    std::fs::write(out_dir.join("report.md"), &report)?;
    std::fs::write(out_dir.join("slowdown.svg"), render_svg(&cells))?;
    eprintln!("bench: wrote {} and {}", out_dir.join("report.md").display(), out_dir.join("slowdown.svg").display());
    let _ = std::fs::remove_file(&tmp);
    Ok(())
}

fn render_report(
    workloads: &[Workload],
    tools: &[Tool],
    cells: &[Cell],
    bpf_runs: &[(usize, Mode, RunResult)],
    pairs: usize,
) -> String {
    let mut out = format!(
        "Slowdown: median traced/untraced ratio of {pairs} interleaved pairs [min–max]; events accounted for / the \
         workload's own count of failing calls (collateral: the tool traces another, idle process, so 0 are \
         expected).\n\n| workload | failing calls/s (untraced) | tool | traced | collateral | system-wide |\n|---|---|---|---|---|---|\n"
    );
    for (wi, w) in workloads.iter().enumerate() {
        for t in tools.iter().filter(|&&t| t == Tool::Socktrace || !w.socktrace_only) {
            let rate = cells.iter().find(|c| c.workload == wi).map(Cell::failure_rate).unwrap_or(0.0);
            out.push_str(&format!("| {} | {:.0} | {} |", w.name, rate, t.name()));
            for mode in [Mode::Traced, Mode::Collateral, Mode::SystemWide] {
                match cells.iter().find(|c| c.workload == wi && c.tool == *t && c.mode == mode) {
                    Some(c) => {
                        let (m, lo, hi) = c.slowdown();
                        let (expected, seen) = c.accounting();
                        let acct = if *t == Tool::BpftraceCount {
                            String::new()
                        } else {
                            format!("; {seen}/{expected} events")
                        };
                        out.push_str(&format!(" {m:.2}x [{lo:.2}–{hi:.2}]{acct} |"));
                    }
                    None => out.push_str(" – |"),
                }
            }
            out.push('\n');
        }
    }
    if cells.iter().any(|c| c.against_peer().is_some()) {
        out.push_str(&format!(
            "\nAgainst the peer binary (`BENCH_PEER={}`), run in the same interleaved pairs: each one's median \
             slowdown over the same untraced runs [min–max], and the median of socktrace's time over the peer's, \
             pair by pair (below 1: socktrace is faster).\n\n| workload | mode | socktrace | peer | socktrace/peer |\n\
             |---|---|---|---|---|\n",
            peer_bin().map(|p| p.display().to_string()).unwrap_or_default()
        ));
        for c in cells {
            let Some(((p, plo, phi), ratio)) = c.against_peer() else { continue };
            let (m, lo, hi) = c.slowdown();
            out.push_str(&format!(
                "| {} | {} | {m:.2}x [{lo:.2}–{hi:.2}] | {p:.2}x [{plo:.2}–{phi:.2}] | {ratio:.3} |\n",
                workloads[c.workload].name,
                c.mode.name()
            ));
        }
    }
    if !bpf_runs.is_empty() {
        out.push_str(
            "\nTime socktrace's programs spent in the kernel (`kernel.bpf_stats_enabled`, one extra run per cell), \
             less the statistics' own cost per run (the floor: what they report, in the same run, for an empty \
             program on the sys_exit hook): runs and ns per run of each program, and the total per failing call of \
             the workload (per call made, for echo, where every call succeeds).\n\n\
             | workload | mode | floor | program: runs, ns/run | total per failing call |\n|---|---|---|---|---|\n",
        );
        for (wi, mode, r) in bpf_runs {
            let floor = r.floor_ns;
            let net = |runs: u64, ns: u64| (ns as f64 - floor * runs as f64).max(0.0);
            let progs: Vec<String> = r
                .bpf
                .iter()
                .filter(|(_, (runs, _))| *runs > 0)
                .map(|(name, (runs, ns))| format!("{name}: {runs}, {:.0}", net(*runs, *ns) / *runs as f64))
                .collect();
            let total: f64 = r.bpf.values().map(|(runs, ns)| net(*runs, *ns)).sum();
            let calls = match r.failures {
                0 => r.bpf.iter().filter(|(p, _)| p.starts_with("sys_exit")).map(|(_, v)| v.0).sum(),
                n => n,
            };
            out.push_str(&format!(
                "| {} | {} | {floor:.0} ns | {} | {:.0} ns |\n",
                workloads[*wi].name,
                mode.name(),
                progs.join("; "),
                total / calls.max(1) as f64
            ));
        }
    }
    let socktrace_runs = || cells.iter().filter(|c| c.tool == Tool::Socktrace).flat_map(|c| c.pairs.iter());
    if socktrace_runs().next().is_some() {
        let mut attach: Vec<f64> = socktrace_runs().map(|p| p.traced.attach.as_secs_f64() * 1e3).collect();
        let peak = socktrace_runs().map(|p| p.traced.peak_kib).max().unwrap_or(0);
        let hwm = socktrace_runs().map(|p| p.traced.hwm_kib).max().unwrap_or(0);
        out.push_str(&format!(
            "\nsocktrace: attach time (start to the attached line) median {:.0} ms over {} runs; peak RSS while a \
             workload ran {:.1} MiB; high-water mark including start-up {:.1} MiB.\n",
            median(&mut attach),
            attach.len(),
            peak as f64 / 1024.0,
            hwm as f64 / 1024.0
        ));
    }
    out
}

fn render_svg(cells: &[Cell]) -> String {
    // Slowdown (log scale) against failing calls per second (log scale), one series per tool
    // and mode: solid for the traced process, dashed for the collateral one.
    let (w, h, left, bottom) = (820.0, 480.0, 70.0, 60.0);
    let colors = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"];
    let x_of = |rate: f64| left + (rate.max(1.0).log10() / 7.0) * (w - left - 20.0);
    let y_of = |ratio: f64| (h - bottom) - (ratio.max(1.0).log10() / 2.0) * (h - bottom - 20.0);
    let mut svg = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
    svg.push_str(&format!("<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{left}\" y1=\"20\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>\n", h - bottom, w - 20.0, h - bottom, h - bottom));
    for p in 0..=7 {
        let x = x_of(10f64.powi(p));
        svg.push_str(&format!("<text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">1e{p}</text>\n", h - bottom + 16.0));
    }
    for r in [1.0, 1.1, 1.5, 2.0, 5.0, 10.0, 50.0, 100.0] {
        let y = y_of(r);
        svg.push_str(&format!("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{r}x</text>\n<line x1=\"{left}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#eee\"/>\n", left - 6.0, y + 4.0, w - 20.0));
    }
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">failing calls per second (untraced workload)</text>\n",
        (w + left) / 2.0,
        h - 20.0
    ));
    svg.push_str(&format!(
        "<text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">slowdown (median)</text>\n",
        (h - bottom) / 2.0,
        (h - bottom) / 2.0
    ));
    let mut series: Vec<(Tool, Mode)> = Vec::new();
    for c in cells {
        if c.mode != Mode::SystemWide && !series.contains(&(c.tool, c.mode)) {
            series.push((c.tool, c.mode));
        }
    }
    let mut tools: Vec<Tool> = Vec::new();
    for (si, (tool, mode)) in series.iter().enumerate() {
        if !tools.contains(tool) {
            tools.push(*tool);
        }
        let color = colors[tools.iter().position(|t| t == tool).unwrap_or(0) % colors.len()];
        let dash = if *mode == Mode::Collateral { " stroke-dasharray=\"6 4\"" } else { "" };
        let mut pts: Vec<(f64, f64)> = cells
            .iter()
            .filter(|c| c.tool == *tool && c.mode == *mode)
            .map(|c| (x_of(c.failure_rate()), y_of(c.slowdown().0)))
            .collect();
        pts.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        let path: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash} points=\"{}\"/>\n",
            path.join(" ")
        ));
        for (x, y) in &pts {
            let fill = if *mode == Mode::Collateral { "white" } else { color };
            svg.push_str(&format!(
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"{fill}\" stroke=\"{color}\" stroke-width=\"2\"/>\n"
            ));
        }
        svg.push_str(&format!(
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{color}\" stroke-width=\"2\"{dash}/><text x=\"{}\" y=\"{}\">{} ({})</text>\n",
            left + 20.0,
            34.0 + 18.0 * si as f64,
            left + 40.0,
            34.0 + 18.0 * si as f64,
            left + 46.0,
            38.0 + 18.0 * si as f64,
            tool.name(),
            mode.name()
        ));
    }
    svg.push_str("</svg>\n");
    svg
}
