//! One tracing session: attach, read the ring buffer until told to stop or the traced
//! processes are gone, diagnose and print each failure, and end with the summary.

use crate::diagnose::diagnose;
use crate::event::decode;
use crate::kernel::probes::{ProbeMode, ProbeOptions, Probes, Selection};
use crate::model::Cause;
use crate::render::{self, Clock, Sink, TextStyle};
use crate::summary::{ProbeReport, Summary};
use crate::target::Child;
use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::time::Duration;
use tokio::io::{unix::AsyncFd, Interest};
use tokio::signal::unix::{signal, SignalKind};

/// How long an event may wait in the ring buffer when no batch wakeup came.
const DRAIN_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub json: bool,
    pub all_errors: bool,
    pub eof: bool,
    pub all_sockets: bool,
    pub probe_mode: ProbeMode,
    /// Print only these errnos (empty: all).
    pub errnos: Vec<i32>,
    /// Print only these causes (empty: all).
    pub causes: Vec<Cause>,
    pub wall_clock: bool,
    pub summary_only: bool,
}

pub struct Session {
    probes: Probes,
    events: RingBuf<MapData>,
    pidfds: Vec<OwnedFd>,
    selection: Selection,
    clock: Clock,
    opts: SessionOptions,
    sink: Sink,
    child: Option<Child>,
}

/// Why the event loop ended.
enum End {
    Exited,
    Interrupted,
    Terminated,
    OutputClosed,
    OutputFailed(std::io::Error),
}

impl Session {
    pub fn attach(selection: &Selection, opts: SessionOptions, sink: Sink, child: Option<Child>) -> Result<Self> {
        // Open the pidfds first: a PID that vanished is reported before any probe exists,
        // and one that exits later wakes the loop.
        let pidfds = selection.tgids.iter().map(|&p| pidfd_open(p)).collect::<Result<Vec<_>>>()?;
        let probe_opts = ProbeOptions { report_eof: opts.eof, all_sockets: opts.all_sockets, send_benign: opts.all_errors };
        let mut probes = Probes::load_and_attach(opts.probe_mode, &probe_opts, selection)?;
        let events = probes.take_events()?;
        crate::kernel::privileges::drop_all()?;
        let clock = Clock::now();
        Ok(Session { probes, events, pidfds, selection: selection.clone(), clock, opts, sink, child })
    }

    pub fn run(self) -> Result<i32> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the event loop")?;
        rt.block_on(self.event_loop())
    }

    async fn event_loop(self) -> Result<i32> {
        let Session { probes, events, pidfds, selection, clock, opts, mut sink, mut child } = self;
        // SAFETY: the ring buffer's fd stays open while `ring` owns it.
        let mut ring = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("watching the ring buffer: {e}"))?;
        let mut exits = Vec::new();
        for fd in pidfds {
            // SAFETY: the pidfd stays open while the AsyncFd owns it.
            exits.push(
                unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
                    .map_err(|e| anyhow::anyhow!("watching the process: {e}"))?,
            );
        }
        // Signals are handled from here on; only then is the attach announced (a script that
        // waits for the line and then sends SIGINT must get a clean end).
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        for fallback in probes.fallbacks() {
            eprintln!("socktrace: probe fallback: {fallback}");
        }
        eprintln!(
            "socktrace: attached to {} (probe mode {}: {}); Ctrl-C to stop",
            describe(&selection),
            probes.mode.name(),
            probes.describe()
        );
        // A started command is released only now that every probe is attached.
        if let Some(c) = child.as_mut() {
            c.release()?;
        }
        let mut summary = Summary::default();
        let mut exited = vec![false; exits.len()];
        let by_pid = !selection.tgids.is_empty();
        let mut poll = tokio::time::interval(Duration::from_millis(200));
        // The kernel wakes us only for a batch (WAKEUP_BYTES); this drains the rest promptly.
        let mut drain_tick = tokio::time::interval(DRAIN_INTERVAL);

        let end = loop {
            let next_exit = async {
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
                    if let Err(end) = drain(guard.get_inner_mut(), &clock, &opts, &mut summary, &mut sink) {
                        break end;
                    }
                    guard.clear_ready();
                }
                _ = drain_tick.tick() => {
                    if let Err(end) = drain(ring.get_mut(), &clock, &opts, &mut summary, &mut sink) {
                        break end;
                    }
                }
                i = next_exit => {
                    exited[i] = true;
                    // With -f, the children the kernel added keep the session going.
                    if exited.iter().all(|&e| e) && (!selection.follow || probes.traced_processes() == 0) {
                        break End::Exited;
                    }
                }
                _ = poll.tick(), if by_pid && selection.follow && exited.iter().all(|&e| e) => {
                    if probes.traced_processes() == 0 {
                        break End::Exited;
                    }
                }
                _ = sigint.recv() => break End::Interrupted,
                _ = sigterm.recv() => break End::Terminated,
            }
        };
        // Events the kernel wrote before the end are still in the buffer.
        let end = match end {
            End::OutputClosed | End::OutputFailed(_) => end,
            other => match drain(ring.get_mut(), &clock, &opts, &mut summary, &mut sink) {
                Ok(()) => other,
                Err(e) => e,
            },
        };
        summary.lost = probes.lost_events();
        summary.add_kernel_counts(&probes.benign_counts());
        summary.sockets_tracked = probes.sockets_tracked();
        let probe_report = ProbeReport::of(&probes);
        drop(probes);

        if let End::OutputFailed(e) = &end {
            eprintln!("socktrace: {}; {}", summary.one_line(), "probes detached");
            anyhow::bail!("writing to {} failed: {e}", sink.name);
        }
        if !matches!(end, End::OutputClosed) {
            let text = if opts.json { summary.to_json(&probe_report) + "\n" } else { summary.to_text() };
            if let Err(e) = sink.out.write_all(text.as_bytes()).and_then(|()| sink.out.flush()) {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    anyhow::bail!("writing the summary to {} failed: {e}", sink.name);
                }
            }
        }
        let reason = match end {
            End::Exited if selection.tgids.len() == 1 => "the traced process exited",
            End::Exited => "the traced processes exited",
            End::Interrupted => "interrupted",
            End::Terminated => "terminated",
            End::OutputClosed => "output closed",
            End::OutputFailed(_) => unreachable!(),
        };
        eprintln!("socktrace: {reason}; {}", summary.one_line());
        // With a started command, its exit status is ours (as with strace).
        match child {
            Some(mut c) => c.wait_status(),
            None => Ok(0),
        }
    }
}

/// Reads every record now in the ring buffer.
fn drain(
    ring: &mut RingBuf<MapData>,
    clock: &Clock,
    opts: &SessionOptions,
    summary: &mut Summary,
    sink: &mut Sink,
) -> Result<(), End> {
    let style = TextStyle { color: sink.color, wall_clock: opts.wall_clock };
    while let Some(item) = ring.next() {
        let decoded = decode(&item);
        drop(item);
        let Ok(failure) = decoded else {
            summary.undecodable += 1;
            continue;
        };
        let diagnosis = diagnose(&failure);
        summary.add(&failure, &diagnosis);
        let shown = !opts.summary_only
            && (opts.all_errors || !diagnosis.cause.is_benign())
            && (opts.errnos.is_empty() || failure.errno.is_some_and(|e| opts.errnos.contains(&e)))
            && (opts.causes.is_empty() || opts.causes.contains(&diagnosis.cause));
        if !shown {
            continue;
        }
        let line = if opts.json {
            render::json_line(&failure, &diagnosis, clock)
        } else {
            render::text_line(&failure, &diagnosis, clock, style)
        };
        if let Err(e) = writeln!(sink.out, "{line}") {
            return Err(output_error(e));
        }
        summary.printed += 1;
    }
    sink.out.flush().map_err(output_error)
}

fn output_error(e: std::io::Error) -> End {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        End::OutputClosed
    } else {
        End::OutputFailed(e)
    }
}

fn describe(s: &Selection) -> String {
    let mut parts = Vec::new();
    if !s.tgids.is_empty() {
        let list: Vec<String> = s.tgids.iter().map(u32::to_string).collect();
        parts.push(format!("PID {}", list.join(",")));
    }
    if s.follow {
        parts.push("and its future children".into());
    }
    if let Some(c) = &s.comm {
        parts.push(format!("tasks named \"{}\"", render::escape_bytes(c)));
    }
    if let Some((id, _)) = s.cgroup {
        parts.push(format!("cgroup id {id}"));
    }
    if parts.is_empty() {
        "every process".into()
    } else {
        parts.join(" ")
    }
}

use std::io::Write as _;

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
