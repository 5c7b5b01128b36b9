//! One tracing session: attach, read the ring buffer until told to stop or the traced
//! processes are gone, diagnose and print each failure, and say what was seen.

use crate::diagnose::diagnose;
use crate::event::decode;
use crate::kernel::probes::{ProbeMode, ProbeOptions, Probes};
use crate::model::Cause;
use crate::render::{self, Clock};
use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::fd::{FromRawFd as _, OwnedFd};
use tokio::io::{unix::AsyncFd, Interest};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Clone, Copy, Debug)]
pub struct SessionOptions {
    pub json: bool,
    pub all_errors: bool,
    pub eof: bool,
    pub all_sockets: bool,
    pub probe_mode: ProbeMode,
}

pub struct Session {
    probes: Probes,
    events: RingBuf<MapData>,
    pidfds: Vec<OwnedFd>,
    pids: Vec<u32>,
    clock: Clock,
    opts: SessionOptions,
}

/// Counts of what was seen, for the closing line.
#[derive(Default, Debug)]
pub struct Counts {
    pub failures: u64,
    pub printed: u64,
    pub by_cause: BTreeMap<Cause, u64>,
    pub undecodable: u64,
}

impl Session {
    pub fn attach(pids: &[u32], opts: SessionOptions) -> Result<Self> {
        // Open the pidfds first: a PID that vanishes now is reported before any probe exists,
        // and one that exits later wakes the loop.
        let pidfds = pids.iter().map(|&p| pidfd_open(p)).collect::<Result<Vec<_>>>()?;
        let probe_opts = ProbeOptions { report_eof: opts.eof, all_sockets: opts.all_sockets };
        let mut probes = Probes::load_and_attach(opts.probe_mode, probe_opts, pids)?;
        let events = probes.take_events()?;
        let clock = Clock::now();
        let list: Vec<String> = pids.iter().map(u32::to_string).collect();
        eprintln!(
            "socktrace: attached to PID {} (probe mode {:?}: {}); Ctrl-C to stop",
            list.join(","),
            probes.mode,
            probes.attached.join(", ")
        );
        Ok(Session { probes, events, pidfds, pids: pids.to_vec(), clock, opts })
    }

    pub fn run(self) -> Result<i32> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the event loop")?;
        rt.block_on(self.event_loop())
    }

    async fn event_loop(self) -> Result<i32> {
        let Session { probes, events, pidfds, pids, clock, opts } = self;
        // SAFETY: the ring buffer's fd stays open while `ring` owns it.
        let mut ring = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("watching the ring buffer: {}", e))?;
        let mut exits = Vec::new();
        for fd in pidfds {
            // SAFETY: the pidfd stays open while the AsyncFd owns it.
            exits.push(
                unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
                    .map_err(|e| anyhow::anyhow!("watching the process: {}", e))?,
            );
        }
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let mut counts = Counts::default();
        let mut exited = vec![false; exits.len()];
        let mut stdout_closed = false;

        let reason = loop {
            let all_exited = async {
                for (i, fd) in exits.iter().enumerate() {
                    if !exited[i] {
                        let _ = fd.readable().await;
                        return i;
                    }
                }
                std::future::pending().await
            };
            tokio::select! {
                guard = ring.readable_mut() => {
                    let mut guard = guard?;
                    if !drain(guard.get_inner_mut(), &clock, &opts, &mut counts, &mut out) {
                        stdout_closed = true;
                        break "stdout closed";
                    }
                    guard.clear_ready();
                }
                i = all_exited => {
                    exited[i] = true;
                    if exited.iter().all(|&e| e) {
                        break if pids.len() == 1 { "the traced process exited" } else { "the traced processes exited" };
                    }
                }
                _ = sigint.recv() => break "interrupted",
                _ = sigterm.recv() => break "terminated",
            }
        };
        // Events the kernel wrote before the end are still in the buffer.
        if !stdout_closed {
            drain(ring.get_mut(), &clock, &opts, &mut counts, &mut out);
            let _ = out.flush();
        }
        drop(probes);
        let causes: Vec<String> = counts.by_cause.iter().map(|(c, n)| format!("{c} {n}")).collect();
        eprintln!(
            "socktrace: {reason}; {} failing call{} seen, {} printed{}{}",
            counts.failures,
            if counts.failures == 1 { "" } else { "s" },
            counts.printed,
            if causes.is_empty() { String::new() } else { format!(" ({})", causes.join(", ")) },
            if counts.undecodable > 0 { format!(", {} undecodable records", counts.undecodable) } else { String::new() },
        );
        Ok(0)
    }
}

/// Reads every record now in the ring buffer. Returns false once stdout is closed.
fn drain(
    ring: &mut RingBuf<MapData>,
    clock: &Clock,
    opts: &SessionOptions,
    counts: &mut Counts,
    out: &mut impl std::io::Write,
) -> bool {
    while let Some(item) = ring.next() {
        let failure = match decode(&item) {
            Ok(f) => f,
            Err(_) => {
                counts.undecodable += 1;
                continue;
            }
        };
        drop(item);
        let diagnosis = diagnose(&failure);
        counts.failures += 1;
        *counts.by_cause.entry(diagnosis.cause).or_default() += 1;
        if diagnosis.cause.is_benign() && !opts.all_errors {
            continue;
        }
        let line = if opts.json {
            render::json_line(&failure, &diagnosis, clock)
        } else {
            render::text_line(&failure, &diagnosis, clock)
        };
        if writeln!(out, "{line}").is_err() {
            return false;
        }
        counts.printed += 1;
    }
    out.flush().is_ok()
}

fn pidfd_open(pid: u32) -> Result<OwnedFd> {
    // SAFETY: plain syscall; the returned fd is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            anyhow::bail!("no such process: PID {pid} exited before socktrace could attach");
        }
        return Err(err).with_context(|| format!("pidfd_open({pid}) (needs Linux 5.3+)"));
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
