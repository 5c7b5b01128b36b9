//! The printer: each record of the ring buffer decoded, enriched, diagnosed, counted (summary,
//! metrics, OTLP), filtered by the display options, and written as a text line or JSON.

use super::enrich::{diagnose_enriched, Enrichment};
use super::{End, SessionOptions};
use crate::diagnose::Diagnosis;
use crate::event::decode;
use crate::facts::Failure;
use crate::kernel::load::Probes;
use crate::render::{self, Clock, Sink, TextStyle};
use crate::summary::Summary;
use aya::maps::{MapData, RingBuf};
use std::io::Write as _;

/// Diagnoses and prints failures; keeps the counts for the summary.
pub struct Printer {
    pub clock: Clock,
    /// The agent's Prometheus counters.
    pub metrics: Option<crate::export::prometheus::Metrics>,
    /// The agent's OTLP exporter.
    pub otlp: Option<crate::export::otlp::OtlpExporter>,
    /// The agent's event sink failed: it goes on without it (the metrics still count).
    pub output_broken: bool,
    pub opts: SessionOptions,
    pub sink: Sink,
    pub summary: Summary,
    pub enrichment: Enrichment,
    /// Failed connects waiting for `FALLBACK_WINDOW_NS` to pass, oldest first: the program
    /// may connect to another address of the service (IPv6 refused, IPv4 answers), which
    /// their lines then say.
    pub held: std::collections::VecDeque<Failure>,
}

/// How long a failed connect is held before it is printed, for the program's fallback to
/// another address to show (Happy Eyeballs tries the next within 250 ms).
const FALLBACK_WINDOW_NS: u64 = 300_000_000;

/// At most this many failed connects are held at once: in a storm of refusals (tens of
/// thousands a second) the oldest goes out early, without waiting out its window, rather
/// than every one of the storm being kept in memory (about 2 KiB each) for 300 ms.
const MAX_HELD: usize = 1024;

/// Whether a failure waits for the program's fallback: a connect to an address that failed.
fn awaits_fallback(f: &Failure) -> bool {
    use crate::model::errno::*;
    f.is_connect()
        && f.remote.is_some()
        && f.errno.is_some_and(|e| matches!(e, ECONNREFUSED | EHOSTUNREACH | ENETUNREACH | ETIMEDOUT | EACCES))
}

impl Printer {
    /// Reads every record now in the ring buffer.
    pub fn drain(&mut self, ring: &mut RingBuf<MapData>, probes: &Probes) -> Result<(), End> {
        while let Some(item) = ring.next() {
            let decoded = decode(&item, probes.hash_seed);
            drop(item);
            let Ok(mut failure) = decoded else {
                self.undecodable();
                continue;
            };
            self.enrichment.enrich(&mut failure, probes);
            if awaits_fallback(&failure) {
                if self.held.len() >= MAX_HELD {
                    self.release_oldest(probes)?;
                }
                self.held.push_back(failure);
                continue;
            }
            self.report(failure, probes)?;
        }
        self.release_held(probes, false)?;
        self.flush()
    }

    /// Diagnoses, counts and (if shown) writes one enriched failure.
    fn report(&mut self, mut failure: Failure, probes: &Probes) -> Result<(), End> {
        let diagnosis = diagnose_enriched(&mut failure, probes);
        self.count(&failure, &diagnosis);
        if self.shown(&failure, &diagnosis) {
            self.write(&failure, &diagnosis)?;
        }
        Ok(())
    }

    /// Reports the held connects whose window has passed (`all`: every one, at the end), each
    /// with the fallback the program made, if the kernel saw one established.
    pub fn release_held(&mut self, probes: &Probes, all: bool) -> Result<(), End> {
        let now = crate::render::clock_ns(libc::CLOCK_MONOTONIC);
        while let Some(f) = self.held.front() {
            if !all && f.ts_ns.saturating_add(FALLBACK_WINDOW_NS) > now {
                break;
            }
            self.release_oldest(probes)?;
        }
        if self.held.is_empty() && self.held.capacity() > MAX_HELD {
            // A storm's queue gives its memory back.
            self.held.shrink_to(MAX_HELD);
        }
        Ok(())
    }

    /// Reports the oldest held connect with the fallback the program made so far, if any.
    fn release_oldest(&mut self, probes: &Probes) -> Result<(), End> {
        let Some(mut f) = self.held.pop_front() else { return Ok(()) };
        let port = f.remote.map_or(0, |r| r.port());
        f.fallback = probes
            .connected(f.pid, port)
            .and_then(|c| Some((c.ts_ns, crate::event::remote_endpoint(&c.addr)?)))
            .filter(|&(ts, addr)| ts > f.ts_ns && Some(addr) != f.remote);
        self.report(f, probes)
    }

    pub fn flush(&mut self) -> Result<(), End> {
        match self.sink.out.flush() {
            Err(e) if !self.output_broken => self.output_failed(e),
            _ => Ok(()),
        }
    }

    fn undecodable(&mut self) {
        self.summary.undecodable += 1;
        if let Some(m) = &self.metrics {
            m.record_undecodable();
        }
    }

    /// Every failure is counted, shown or not: the summary, the metrics, the OTLP logs.
    fn count(&mut self, failure: &Failure, diagnosis: &Diagnosis) {
        self.summary.add(failure, diagnosis);
        if let Some(m) = &self.metrics {
            m.record(failure, diagnosis);
        }
        if let Some(o) = &self.otlp {
            o.record(failure, diagnosis, self.clock.wall_ns(failure.ts_ns));
        }
    }

    /// Whether the display options print it (`--summary`, `--all-errors`, `-e`, `--cause`).
    fn shown(&self, failure: &Failure, diagnosis: &Diagnosis) -> bool {
        let opts = &self.opts;
        !opts.summary_only
            && !self.output_broken
            && (opts.all_errors || !diagnosis.cause.is_routine())
            && (opts.errnos.is_empty() || failure.errno.is_some_and(|e| opts.errnos.contains(&e)))
            && (opts.causes.is_empty() || opts.causes.contains(&diagnosis.cause))
    }

    fn write(&mut self, failure: &Failure, diagnosis: &Diagnosis) -> Result<(), End> {
        let line = if self.opts.json {
            render::json_line(failure, diagnosis, &self.clock)
        } else {
            let style = TextStyle {
                color: self.sink.color,
                wall_clock: self.opts.wall_clock,
                container_column: self.opts.container_column,
                verbose: self.opts.verbose,
                width: self.sink.width,
            };
            render::text_line(failure, diagnosis, &self.clock, style)
        };
        match writeln!(self.sink.out, "{line}") {
            Ok(()) => {
                self.summary.printed += 1;
                Ok(())
            }
            Err(e) => self.output_failed(e),
        }
    }

    /// A session ends when its output fails; the agent goes on counting without it.
    fn output_failed(&mut self, e: std::io::Error) -> Result<(), End> {
        if !self.opts.agent {
            return Err(output_error(e));
        }
        if !self.output_broken {
            crate::text::say(&format!(
                "socktrace: agent: writing events to {} failed ({e}); events are no longer written there, the \
                 metrics go on",
                self.sink.name
            ));
            self.output_broken = true;
        }
        Ok(())
    }

    /// Copies the kernel's own counters into the metrics.
    pub fn export_kernel_counts(&mut self, probes: &Probes, overflows: &mut crate::host::ListenOverflows) {
        let Some(m) = self.metrics.as_mut() else { return };
        let sockets_tracked = probes.sockets_tracked();
        m.update_kernel_counts(crate::export::prometheus::KernelCounts {
            routine: probes.routine_counts().unwrap_or_default(),
            lost: probes.lost_events().unwrap_or(0),
            histories_refused: probes.histories_refused().unwrap_or(0),
            listen_overflows: overflows.since_start().unwrap_or(0),
            sockets_tracked,
        });
    }
}

fn output_error(e: std::io::Error) -> End {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        End::OutputClosed
    } else {
        End::OutputFailed(e)
    }
}
