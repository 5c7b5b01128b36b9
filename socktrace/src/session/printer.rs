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
            let diagnosis = diagnose_enriched(&mut failure, probes);
            self.count(&failure, &diagnosis);
            if self.shown(&failure, &diagnosis) {
                self.write(&failure, &diagnosis)?;
            }
        }
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
            histories_evicted: probes.histories_evicted(sockets_tracked).unwrap_or(0),
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
