//! One tracing session: attach, read the ring buffer until told to stop or the traced
//! processes are gone, diagnose and print each failure (`printer`, after `enrich`), and end
//! with the summary.

mod enrich;
mod printer;

use crate::kernel::adopt::Adopted;
use crate::kernel::config::{ProbeOptions, Selection};
use crate::kernel::load::Probes;
use crate::kernel::probes::ProbeMode;
use crate::model::Cause;
use crate::render::{Clock, Sink};
use crate::summary::{ProbeReport, Summary};
use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use enrich::{DropsSeen, Enrichment};
use printer::Printer;
use std::io::Write as _;
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::time::Duration;
use tokio::io::{unix::AsyncFd, Interest};
use tokio::signal::unix::{signal, SignalKind};

/// How long an event may wait in the ring buffer when no batch wakeup came.
const DRAIN_INTERVAL: Duration = Duration::from_millis(50);

/// What to report and how: the session's side of the options (the selection is separate).
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
    /// Text: the evidence on a second line (`-v`).
    pub verbose: bool,
    /// Record kernel stacks at the events behind failures (`--kstack`).
    pub kstack: bool,
    /// Kernel-side log records at this level and above go to stderr (`--debug`).
    pub kernel_log: Option<aya_log::Level>,
    /// `socktrace agent`: run until a signal whatever the traced processes do, print events
    /// only to a JSON or file sink, and outlive a sink that fails.
    pub agent: bool,
    /// Text lines name the container (the selection may cover more than one).
    pub container_column: bool,
    /// Report a connection the process ends after this long without an answer (0: never).
    pub silence: std::time::Duration,
    /// The history map's size (`--max-histories`); None: sized from the host's sockets.
    pub max_histories: Option<u32>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            json: false,
            all_errors: false,
            eof: false,
            all_sockets: false,
            probe_mode: ProbeMode::Auto,
            errnos: Vec::new(),
            causes: Vec::new(),
            wall_clock: false,
            summary_only: false,
            verbose: false,
            kstack: false,
            kernel_log: None,
            agent: false,
            container_column: false,
            silence: DEFAULT_SILENCE,
            max_histories: None,
        }
    }
}

/// `--no-reply-after`'s default: a connection its process ends with nothing received for a
/// second since its last send is reported (`abandoned_no_reply`).
pub const DEFAULT_SILENCE: std::time::Duration = std::time::Duration::from_secs(1);

impl SessionOptions {
    fn probe_options(&self) -> ProbeOptions {
        ProbeOptions {
            report_eof: self.eof,
            silence: self.silence,
            all_sockets: self.all_sockets,
            send_routine: self.all_errors,
            log_level: self.kernel_log,
            kstack: self.kstack,
            max_histories: self.max_histories,
        }
    }
}

pub struct Session {
    probes: Probes,
    /// Sockets the traced processes had open at attach, adopted.
    adopted: Adopted,
    /// Listen overflows in the traced processes' network namespaces, from attach on.
    overflows: crate::host::ListenOverflows,
    pidfds: Vec<OwnedFd>,
    selection: Selection,
    printer: Printer,
}

/// How often the agent copies the kernel's own counters (lost events, routine outcomes,
/// sockets tracked) into its metrics.
const KERNEL_COUNTS_INTERVAL: Duration = Duration::from_secs(2);

/// Why the event loop ended.
pub enum End {
    Exited,
    Interrupted,
    Terminated,
    OutputClosed,
    OutputFailed(std::io::Error),
}

impl Session {
    /// `exporters`: the agent's sinks (the metrics endpoint is bound already; its registry is
    /// filled once the probes are known, then it serves).
    pub fn attach(
        selection: &Selection,
        opts: SessionOptions,
        sink: Sink,
        exporters: crate::export::Exporters,
    ) -> Result<Self> {
        // Open the pidfds first: a PID that vanished is reported before any probe exists,
        // and one that exits later wakes the loop.
        let pidfds = selection.tgids.iter().map(|&p| pidfd_open(p)).collect::<Result<Vec<_>>>()?;
        let mut probes = Probes::load_and_attach(opts.probe_mode, &opts.probe_options(), selection)?;
        // Sockets opened before the trace: adopted now that the probes record their events.
        let mut adopted = crate::kernel::adopt::existing_sockets(selection);
        // The kernel counts the sockets the full map refused; at attach, those are adopted ones.
        adopted.without_history = probes.histories_refused().unwrap_or(0);
        let overflows = crate::host::ListenOverflows::start(&selection.tgids);
        // Which namespace each process lives in: readable only while socktrace may ptrace.
        let by_namespace = crate::host::netns::processes_by_namespace(std::path::Path::new("/proc"));
        let namespaces = crate::host::Namespaces::open(&selection.tgids, &by_namespace, &adopted);
        // Who held which socket served the namespaces' index: not kept for the session.
        adopted.held = Vec::new();
        let netns_names = crate::host::netns::NetnsNames::open(&selection.tgids, by_namespace);
        // Opened before the capabilities go: the kernel shows code addresses to an opener with
        // CAP_SYSLOG only.
        let symbols = if opts.kstack {
            crate::kernel::kallsyms::Symbols::load_all()
        } else {
            crate::kernel::kallsyms::Symbols::open()
        };
        if let Some(kept) = crate::kernel::privileges::drop_all(probes.a_map_fd()?)? {
            crate::text::say(&format!("socktrace: notice: every capability dropped but {kept}"));
        }
        // What adoption, the namespaces and the symbols left freed: given back, as loading does.
        crate::kernel::load::release_free_heap();
        // The kernel's RST reason (6.10+) and drop reason (5.17+) names, read with its BTF.
        let (rst_reasons, drop_reasons) =
            (std::mem::take(&mut probes.rst_reasons), std::mem::take(&mut probes.drop_reasons));
        let mut metrics = match exporters.metrics {
            Some(request) => Some(request.start(&ProbeReport::of(&probes))?),
            None => None,
        };
        let otlp = match &exporters.otlp {
            Some(url) => {
                let stats = std::sync::Arc::new(crate::export::otlp::ExportStats::default());
                if let Some(m) = metrics.as_mut() {
                    m.watch_otlp(stats.clone())?;
                }
                let exporter = crate::export::otlp::OtlpExporter::start(url, crate::export::host_name(), stats)?;
                crate::text::say(&format!("socktrace: agent: OTLP logs and metrics to {url}"));
                Some(exporter)
            }
            None => None,
        };
        let enrichment = Enrichment {
            cgroups: crate::host::cgroups::CgroupNames::new(),
            rst_reasons,
            drop_reasons,
            rst_segment_unseen: probes.rst_segment.as_ref().err().map(|why| crate::text::first_line(why).to_string()),
            udp_errors_unseen: probes.udp_errors_unseen(),
            not_adopted: adopted.refused.iter().map(|(pid, _)| *pid).collect(),
            symbols,
            namespaces,
            netns_names,
            kernel_hz: probes.kernel_hz,
            drops: DropsSeen::default(),
            kstack: opts.kstack,
        };
        let printer = Printer {
            clock: Clock::now(),
            metrics,
            otlp,
            output_broken: false,
            opts,
            sink,
            summary: Summary::default(),
            enrichment,
            held: Default::default(),
        };
        Ok(Session { probes, pidfds, selection: selection.clone(), printer, adopted, overflows })
    }

    /// Runs until the traced processes are gone, a signal, or the output closes. `attached`
    /// runs once the attach is announced (a started command is released there).
    pub fn run(self, attached: impl FnOnce() -> Result<()>) -> Result<()> {
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the event loop")?;
        rt.block_on(self.event_loop(attached))
    }

    async fn event_loop(self, attached: impl FnOnce() -> Result<()>) -> Result<()> {
        let Session { mut probes, pidfds, selection, mut printer, adopted, mut overflows } = self;
        let mut watch = Watch::new(&mut probes, pidfds)?;
        // Signals are handled from here on; only then is the attach announced (a script that
        // waits for the line and then sends SIGINT must get a clean end).
        let mut signals = Signals { int: signal(SignalKind::interrupt())?, term: signal(SignalKind::terminate())? };
        announce(&probes, &selection, &adopted, printer.opts.verbose);
        attached()?;
        let end = watch.until_end(&probes, &selection, &mut printer, &mut signals, &mut overflows).await?;
        // Events the kernel wrote before the end are still in the buffer.
        let end = match end {
            End::OutputClosed | End::OutputFailed(_) => end,
            other => printer
                .drain(watch.ring.get_mut(), &probes)
                .and_then(|()| printer.release_held(&probes, true))
                .and_then(|()| printer.flush())
                .err()
                .unwrap_or(other),
        };
        watch.flush_logs();
        drop(watch);
        printer.summary.listen_overflows = overflows.since_start();
        finish(probes, &selection, printer, end)
    }
}

/// What starts a session on stderr: at most a notice of what this kernel cannot show, one of
/// sockets that could not be adopted, and the attach line (target, probe mode, adopted
/// sockets). With `-v`, every fallback and probe in full (`socktrace check` has them too).
fn announce(probes: &Probes, selection: &Selection, adopted: &Adopted, verbose: bool) {
    for line in start_up_lines(probes, selection, adopted, verbose) {
        crate::text::say(&line);
    }
}

/// The lines `announce` prints.
fn start_up_lines(probes: &Probes, selection: &Selection, adopted: &Adopted, verbose: bool) -> Vec<String> {
    let mut lines = Vec::new();
    if verbose {
        lines.extend(probes.fallbacks().into_iter().map(|f| format!("socktrace: probe fallback: {f}")));
        for (what, why) in probes.unseen() {
            lines.push(format!("socktrace: notice: {what} are not recorded on this kernel: {why}"));
        }
    } else if let Some(notice) = unseen_notice(&probes.unseen()) {
        lines.push(notice);
    }
    if !adopted.refused.is_empty() {
        let pids: Vec<String> = adopted.refused.iter().map(|(pid, _)| pid.to_string()).collect();
        let why = adopted.refused.first().map(|(_, why)| crate::text::first_line(why)).unwrap_or_default();
        let line = format!(
            "socktrace: notice: sockets open before the trace in PID {} were not adopted (needs CAP_SYS_PTRACE: {why}); \
             their failures may lack a cause",
            pids.join(",")
        );
        lines.push(if verbose { line } else { shorten(&line, START_UP_WIDTH) });
    }
    let sockets = match adopted.sockets {
        0 => String::new(),
        1 => ", 1 socket adopted".into(),
        n => format!(", {n} sockets adopted"),
    };
    let sockets = match adopted.without_history {
        0 => sockets,
        n => format!("{sockets}, {n} without a history (map full: --max-histories)"),
    };
    let fallbacks = probes.fallbacks().len();
    let mode = match fallbacks {
        0 => probes.mode.name().to_string(),
        n => format!("{}, {n} event{} on a fallback probe", probes.mode.name(), if n == 1 { "" } else { "s" }),
    };
    let target = shorten(&describe(selection), 60);
    if verbose {
        lines.push(format!(
            "socktrace: attached to {target} (probe mode {mode}: {}){sockets}; Ctrl-C to stop",
            probes.describe()
        ));
    } else {
        lines.push(format!("socktrace: attached to {target} (probe mode {mode}{sockets}); Ctrl-C to stop"));
    }
    lines
}

/// No start-up line is wider than this (without `-v`).
const START_UP_WIDTH: usize = 160;

/// `text`, cut to `max` characters with an ellipsis where it was longer.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(3)).collect();
    out.push_str("...");
    out
}

/// One short notice of what this kernel cannot show, and the gist of why: "ICMP senders and
/// RST segments are not visible on this kernel (no kprobes, fentry refused): `socktrace check`
/// has the details".
fn unseen_notice(unseen: &[(&'static str, String)]) -> Option<String> {
    if unseen.is_empty() {
        return None;
    }
    let what: Vec<&str> = unseen.iter().map(|(what, _)| *what).collect();
    let what = match what.as_slice() {
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
        [] => unreachable!("not empty"),
    };
    let mut why: Vec<String> = Vec::new();
    for (_, reason) in unseen {
        for gist in gist_of(reason) {
            if !why.contains(&gist) {
                why.push(gist);
            }
        }
    }
    let line = format!(
        "socktrace: notice: {what} {} not visible on this kernel ({}): `socktrace check` has the details",
        if unseen.len() == 1 && !what.ends_with('s') { "is" } else { "are" },
        why.join(", ")
    );
    Some(shorten(&line, START_UP_WIDTH))
}

/// The gist of why a probe could not be attached: "no kprobes", "fentry refused", or the
/// start of the kernel's message.
fn gist_of(reason: &str) -> Vec<String> {
    let mut out = Vec::new();
    if reason.contains("no kprobes") {
        out.push("no kprobes".to_string());
    }
    if reason.contains("fentry") && reason.contains("refused") {
        out.push("fentry refused".to_string());
    }
    if out.is_empty() {
        out.push(shorten(crate::text::first_line(reason), 50));
    }
    out
}

/// Adds the kernel's own counts, detaches, prints the summary and the closing line.
fn finish(probes: Probes, selection: &Selection, printer: Printer, end: End) -> Result<()> {
    let Printer { opts, mut sink, mut summary, output_broken, otlp, .. } = printer;
    if let Some(mut exporter) = otlp {
        // What is queued goes out now (within a few seconds), with the last counters.
        exporter.shutdown();
        let stats = exporter.stats();
        use std::sync::atomic::Ordering::Relaxed;
        crate::text::say(&format!(
            "socktrace: agent: OTLP: {} log records delivered, {} dropped, {} retries",
            stats.sent.load(Relaxed),
            stats.dropped.load(Relaxed),
            stats.retries.load(Relaxed)
        ));
    }
    summary.lost = probes.lost_events()?;
    let routine = probes.routine_counts()?;
    let memory: u64 =
        routine.iter().filter(|(kind, _, _)| *kind == socktrace_common::routine::SEND_MEMORY).map(|(_, _, n)| n).sum();
    if memory > 0 {
        crate::text::say(&format!(
            "socktrace: {memory} non-blocking send{} failed with EAGAIN because TCP was out of memory (over \
             net.ipv4.tcp_mem, with send buffers shrunk); counted, not printed: --all-errors shows each with the numbers",
            if memory == 1 { "" } else { "s" }
        ));
    }
    summary.add_kernel_counts(&routine);
    summary.sockets_tracked = probes.sockets_tracked();
    summary.histories_refused = probes.histories_refused()?;
    summary.missed_runs = probes.missed_runs();
    let probe_report = ProbeReport::of(&probes);
    drop(probes);

    if let End::OutputFailed(e) = &end {
        crate::text::say(&format!("socktrace: {}; probes detached", summary.one_line()));
        anyhow::bail!("writing to {} failed: {e}", sink.name);
    }
    if !matches!(end, End::OutputClosed) && !output_broken {
        let text = if opts.json { summary.to_json(&probe_report) + "\n" } else { summary.to_text(sink.width) };
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
        End::OutputFailed(_) => unreachable!("handled above"),
    };
    crate::text::say(&format!("socktrace: {reason}; {}", summary.one_line()));
    Ok(())
}

struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

type KernelLogger = aya_log::EbpfLogger<&'static dyn log::Log>;

/// What the event loop waits on: the ring buffer, the traced processes, the kernel's logs.
struct Watch {
    ring: AsyncFd<RingBuf<MapData>>,
    exits: Vec<AsyncFd<OwnedFd>>,
    exited: Vec<bool>,
    logs: Option<AsyncFd<KernelLogger>>,
}

impl Watch {
    fn new(probes: &mut Probes, pidfds: Vec<OwnedFd>) -> Result<Self> {
        // SAFETY: the ring buffer's fd stays open while the AsyncFd owns it.
        let ring = unsafe { AsyncFd::register_with_interest(probes.take_events()?, Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("watching the ring buffer: {e}"))?;
        let mut exits = Vec::new();
        for fd in pidfds {
            // SAFETY: the pidfd stays open while the AsyncFd owns it.
            let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
                .map_err(|e| anyhow::anyhow!("watching the process: {e}"))?;
            exits.push(fd);
        }
        let logs = match probes.take_logger() {
            // SAFETY: the logger's ring buffer fd stays open while the AsyncFd owns it.
            Some(l) => Some(
                unsafe { AsyncFd::register_with_interest(l, Interest::READABLE) }
                    .map_err(|e| anyhow::anyhow!("watching kernel logs: {e}"))?,
            ),
            None => None,
        };
        let exited = vec![false; exits.len()];
        Ok(Watch { ring, exits, exited, logs })
    }

    /// The loop: prints failures as they come until the traced processes are gone, a signal
    /// arrives, or the output fails.
    async fn until_end(
        &mut self,
        probes: &Probes,
        selection: &Selection,
        printer: &mut Printer,
        signals: &mut Signals,
        overflows: &mut crate::host::ListenOverflows,
    ) -> Result<End> {
        // The agent runs until it is stopped; a session, until its processes are gone.
        let agent = printer.opts.agent;
        let by_pid = !selection.tgids.is_empty() && !agent;
        let mut kernel_counts = tokio::time::interval(KERNEL_COUNTS_INTERVAL);
        let exporting = printer.metrics.is_some();

        let mut poll = tokio::time::interval(Duration::from_millis(200));
        // The kernel wakes us only for a batch (WAKEUP_BYTES); this drains the rest promptly.
        let mut drain_tick = tokio::time::interval(DRAIN_INTERVAL);
        loop {
            let exits = &self.exits;
            let exited = &self.exited;
            let next_exit = async {
                for (i, fd) in exits.iter().enumerate() {
                    if !exited[i] {
                        let _ = fd.readable().await;
                        return i;
                    }
                }
                std::future::pending().await
            };
            let logs = self.logs.as_mut();
            let log_ready = async {
                match logs {
                    Some(l) => {
                        if let Ok(mut guard) = l.readable_mut().await {
                            guard.get_inner_mut().flush();
                            guard.clear_ready();
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                guard = self.ring.readable_mut() => {
                    let mut guard = guard?;
                    if let Err(end) = printer.drain(guard.get_inner_mut(), probes) {
                        return Ok(end);
                    }
                    guard.clear_ready();
                }
                _ = drain_tick.tick() => {
                    if let Err(end) = printer.drain(self.ring.get_mut(), probes) {
                        return Ok(end);
                    }
                }
                () = log_ready => {}
                i = next_exit => {
                    self.exited[i] = true;
                    // With -f, the children the kernel added keep the session going.
                    if !agent && self.exited.iter().all(|&e| e) && (!selection.follow || probes.traced_processes() == 0) {
                        return Ok(End::Exited);
                    }
                }
                _ = poll.tick(), if by_pid && selection.follow && self.exited.iter().all(|&e| e) => {
                    if probes.traced_processes() == 0 {
                        return Ok(End::Exited);
                    }
                }
                _ = kernel_counts.tick(), if exporting => printer.export_kernel_counts(probes, overflows),
                _ = signals.int.recv() => return Ok(End::Interrupted),
                _ = signals.term.recv() => return Ok(End::Terminated),
            }
        }
    }

    /// Prints the kernel-side log records still waiting (`--debug`).
    fn flush_logs(&mut self) {
        if let Some(logs) = self.logs.as_mut() {
            logs.get_mut().flush();
        }
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
        parts.push(format!("tasks named \"{}\"", crate::text::escape_bytes(c)));
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
