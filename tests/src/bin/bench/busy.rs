//! The busy-server workload: what socktrace costs a service that holds many idle keep-alive
//! connections while it answers a steady request load, the case where every socket the tracer
//! keeps, adopts or walks is paid for. Built from `crowd` processes (tests/src/bin/crowd.rs):
//!
//! * a server of WORKERS epoll processes (one thread each, one port each, as a pre-forked
//!   server's workers): the per-process descriptor limit here is 20,000, and root may not raise
//!   it (no CAP_SYS_RESOURCE);
//! * holders: one client process per worker that opens IDLE / WORKERS connections to it and
//!   leaves them idle;
//! * a load generator: LOAD_CONNECTIONS keep-alive connections spread over the workers, each
//!   sending a 64-byte request as soon as the previous answer arrived, for one window; it
//!   reports the requests answered and their latency percentiles.
//!
//! The crowd is set up once; then interleaved windows with and without socktrace, which
//! attaches anew for each traced window (adopting the 100,000 connections: the attach time is
//! measured too). socktrace's CPU is its utime + stime over the window; its memory, the
//! resident size sampled during the window and the high-water mark since start-up.

use super::{median, start, status_kib, stop, Mode, PeakRss, Tool};
use anyhow::{Context as _, Result};
use serde_json::Value;
use socktrace_tests::crowd::Crowd;
use std::path::Path;
use std::time::Duration;

const IDLE: usize = 100_000;
/// Worker processes of the server, each with IDLE / WORKERS idle connections (a divisor).
const WORKERS: usize = 8;
const LOAD_CONNECTIONS: usize = 16;
const WINDOW_MS: u64 = 5_000;
/// The workers' ports (each port's connections share the ephemeral range of 127.0.0.1),
/// above that range.
const PORT_BASE: u16 = 61_300;

/// One load window.
struct Window {
    requests: u64,
    p99_ns: u64,
    /// With socktrace: its CPU over the window (share of one core), its peak and high-water
    /// resident memory, its attach time, and the failures it accounted for and lost.
    tracer: Option<TracerCost>,
}

struct TracerCost {
    cpu: f64,
    peak_kib: u64,
    hwm_kib: u64,
    attach: Duration,
    lost: u64,
}

pub struct BusyCell {
    mode: Mode,
    /// (untraced, traced) windows.
    pairs: Vec<(Window, Window)>,
}

/// Ticks of CPU (user + system) the process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(") ").map(|(_, rest)| rest.split(' ').collect()).unwrap_or_default();
    // After the name: state is field 3, utime 14 and stime 15 (1-based over the whole line).
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    field(14) + field(15)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no memory effects.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as f64
}

/// The server's workers and their idle connections, set up (bounded waits throughout).
struct Crowds {
    workers: Vec<Crowd>,
    _holders: Vec<Crowd>,
}

fn set_up(crowd: &Path) -> Result<Crowds> {
    let mut workers = Vec::new();
    let mut holders = Vec::new();
    for i in 0..WORKERS {
        let port = (PORT_BASE + i as u16).to_string();
        let w = Crowd::start(crowd, &["busy-server", &port, "1"]);
        w.expect("listening", Duration::from_secs(10));
        workers.push(w);
        let h = Crowd::start(crowd, &["client", "127.0.0.1", &port, &(IDLE / WORKERS).to_string()]);
        h.expect("ready", Duration::from_secs(10));
        holders.push(h);
    }
    for h in holders.iter_mut() {
        h.send("go");
    }
    for h in &holders {
        h.expect("connected", Duration::from_secs(240));
    }
    let mut crowds = Crowds { workers, _holders: holders };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let held: usize = crowds.workers.iter_mut().map(|w| w.count("count", "connections ")).sum();
        if held >= IDLE {
            return Ok(crowds);
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "the workers hold {held} of {IDLE} connections");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One window of load, with socktrace attached in `mode` or without it.
fn window(crowd: &Path, workers: &[u32], mode: Option<Mode>, out: &Path) -> Result<Window> {
    let running = match mode {
        None => None,
        Some(Mode::Traced) => Some(start(Tool::Socktrace, workers, out)?),
        Some(Mode::SystemWide) => Some(start(Tool::Socktrace, &[], out)?),
        Some(Mode::Collateral) => anyhow::bail!("the busy server is measured traced and system-wide"),
    };
    let tracer_pid = running.as_ref().map(|r| r.child.id());
    let ticks_before = tracer_pid.map(cpu_ticks).unwrap_or(0);
    let sampler = PeakRss::sample(tracer_pid, Duration::from_millis(50));
    let load = Crowd::start(
        crowd,
        &[
            "load",
            "127.0.0.1",
            &PORT_BASE.to_string(),
            &WORKERS.to_string(),
            &LOAD_CONNECTIONS.to_string(),
            &WINDOW_MS.to_string(),
        ],
    );
    let done = load.expect("done", Duration::from_millis(WINDOW_MS + 30_000));
    let cpu_secs = tracer_pid.map(|pid| (cpu_ticks(pid) - ticks_before) as f64 / clock_ticks_per_second());
    let peak_kib = sampler.peak_kib();
    let numbers: Vec<u64> = done.split_whitespace().skip(1).filter_map(|n| n.parse().ok()).collect();
    let [requests, _p50, p99_ns] = numbers[..] else { anyhow::bail!("the load generator said {done:?}") };
    let tracer = match running {
        None => None,
        Some(r) => {
            let hwm_kib = status_kib(r.child.id(), "VmHWM:");
            let attach = r.attach;
            stop(Tool::Socktrace, r)?;
            let text = std::fs::read_to_string(out)?;
            let summary: Value = text
                .lines()
                .rev()
                .find_map(|l| serde_json::from_str::<Value>(l).ok().filter(|v| v["type"] == "summary"))
                .context("no socktrace summary")?;
            Some(TracerCost {
                cpu: cpu_secs.unwrap_or(0.0) / (WINDOW_MS as f64 / 1e3),
                peak_kib,
                hwm_kib,
                attach,
                lost: summary["lost"].as_u64().unwrap_or(0),
            })
        }
    };
    Ok(Window { requests, p99_ns, tracer })
}

/// Sets the crowd up, measures `pairs` interleaved pairs of windows in each mode, and tears
/// the crowd down.
pub fn measure(crowd: &Path, modes: &[Mode], pairs: usize, out: &Path) -> Result<Vec<BusyCell>> {
    let crowds = set_up(crowd)?;
    let server: Vec<u32> = crowds.workers.iter().map(Crowd::pid).collect();
    // A warm-up window: the first after set-up is slower (caches, the holders' last work).
    window(crowd, &server, None, out)?;
    let mut cells = Vec::new();
    for &mode in modes.iter().filter(|m| **m != Mode::Collateral) {
        let mut cell = BusyCell { mode, pairs: Vec::new() };
        for i in 0..pairs {
            let pair = if i % 2 == 0 {
                let untraced = window(crowd, &server, None, out)?;
                (untraced, window(crowd, &server, Some(mode), out)?)
            } else {
                let traced = window(crowd, &server, Some(mode), out)?;
                (window(crowd, &server, None, out)?, traced)
            };
            cell.pairs.push(pair);
        }
        let (ratio, _, _) = throughput_ratio(&cell);
        eprintln!("bench: busy server ({IDLE} idle connections) {:<11} throughput {ratio:.2}x", mode.name());
        cells.push(cell);
    }
    drop(crowds);
    Ok(cells)
}

/// (median, min, max) of traced / untraced requests answered.
fn throughput_ratio(cell: &BusyCell) -> (f64, f64, f64) {
    let mut r: Vec<f64> = cell.pairs.iter().map(|(u, t)| t.requests as f64 / u.requests.max(1) as f64).collect();
    let m = median(&mut r);
    (m, r.first().copied().unwrap_or(f64::NAN), r.last().copied().unwrap_or(f64::NAN))
}

pub fn render(cells: &[BusyCell], pairs: usize) -> String {
    let mut out = format!(
        "\nBusy server: {WORKERS} epoll worker processes (one thread each) holding {IDLE} idle keep-alive loopback \
         connections while {LOAD_CONNECTIONS} connections send 64-byte requests back to back, in {:.0} s windows; median of {pairs} \
         interleaved pairs [min–max]. socktrace attaches anew for each traced window (adopting every connection) \
         and its CPU is its own user + system time over the window, as a share of one core.\n\n\
         | mode | requests/s untraced | throughput traced/untraced | p99 untraced → traced | socktrace CPU | \
         socktrace RSS peak / high-water | attach | events lost |\n|---|---|---|---|---|---|---|---|\n",
        WINDOW_MS as f64 / 1e3
    );
    let window_secs = WINDOW_MS as f64 / 1e3;
    for c in cells {
        let (m, lo, hi) = throughput_ratio(c);
        let costs: Vec<&TracerCost> = c.pairs.iter().filter_map(|(_, t)| t.tracer.as_ref()).collect();
        let mut rate: Vec<f64> = c.pairs.iter().map(|(u, _)| u.requests as f64 / window_secs).collect();
        let mut p99_u: Vec<f64> = c.pairs.iter().map(|(u, _)| u.p99_ns as f64 / 1e3).collect();
        let mut p99_t: Vec<f64> = c.pairs.iter().map(|(_, t)| t.p99_ns as f64 / 1e3).collect();
        let mut cpu: Vec<f64> = costs.iter().map(|t| t.cpu * 100.0).collect();
        let mut attach: Vec<f64> = costs.iter().map(|t| t.attach.as_secs_f64()).collect();
        let peak = costs.iter().map(|t| t.peak_kib).max().unwrap_or(0) as f64 / 1024.0;
        let hwm = costs.iter().map(|t| t.hwm_kib).max().unwrap_or(0) as f64 / 1024.0;
        let lost: u64 = costs.iter().map(|t| t.lost).sum();
        out.push_str(&format!(
            "| {} | {:.0} | {m:.2}x [{lo:.2}–{hi:.2}] | {:.0} µs → {:.0} µs | {:.1}% | {peak:.1} / {hwm:.1} MiB | {:.2} s \
             | {lost} |\n",
            match c.mode {
                Mode::Traced => "traced (-p each worker)",
                _ => "system-wide agent",
            },
            median(&mut rate),
            median(&mut p99_u),
            median(&mut p99_t),
            median(&mut cpu),
            median(&mut attach),
        ));
    }
    out
}
