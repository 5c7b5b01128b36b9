//! Enrichment: what a decoded failure needs from outside its event before it is diagnosed,
//! read only for the failures that need it (never on the hot path): the host's numbers
//! (`host`), the kernel's enum names (RST and drop reasons), the connection's dropped packets
//! and kernel stacks (its maps), the cgroup behind the caller, and what the trace may lack.

use crate::diagnose::{diagnose, Diagnosis};
use crate::facts::{Failure, KernelStack};
use crate::kernel::load::Probes;
use crate::model::Cause;

/// What the session knows that a failure's enrichment needs, prepared at attach.
pub struct Enrichment {
    /// cgroup id -> path and workload (container, pod, service).
    pub cgroups: crate::host::cgroups::CgroupNames,
    /// `enum sk_rst_reason` of this kernel: value -> name.
    pub rst_reasons: Vec<(u32, String)>,
    /// `enum skb_drop_reason` of this kernel: value -> name.
    pub drop_reasons: Vec<(u32, String)>,
    /// Why RST segments are not seen on this kernel, if they are not.
    pub rst_segment_unseen: Option<String>,
    /// Why UDP errors are not recorded on this kernel, if they are not.
    pub udp_errors_unseen: Option<String>,
    /// Processes whose sockets open at attach could not be adopted.
    pub not_adopted: Vec<u32>,
    /// Kernel code addresses -> functions (where packets were dropped).
    pub symbols: crate::kernel::kallsyms::Symbols,
    /// Where a failure's host numbers are read (see `crate::host::enrich`).
    pub namespaces: crate::host::Namespaces,
    /// Whose namespace a packet was dropped in.
    pub netns_names: crate::host::netns::NetnsNames,
    /// The kernel's HZ, measured at load.
    pub kernel_hz: Option<u32>,
    /// What the drop counter said when last read (see `drops_possible`).
    pub drops: DropsSeen,
    /// `--kstack`: symbolize the kernel stacks of each failure's events.
    pub kstack: bool,
}

impl Enrichment {
    /// Adds to `failure` what its diagnosis needs from the host and the kernel's maps.
    pub fn enrich(&mut self, failure: &mut Failure, probes: &Probes) {
        // The host's numbers, for the few failures that need them (read now, close to the
        // failure; never for the others).
        crate::host::enrich(failure, &mut self.namespaces, &|| crate::render::clock_ns(libc::CLOCK_MONOTONIC));
        // A refused connect's rewrite shows only in the kernel's record of the refused SYN.
        if failure.host.nat.is_none() {
            failure.host.nat =
                crate::host::nat_of_refusal(failure, |local| probes.refused_syn(local), &mut self.namespaces);
        }
        if let Some(l) = failure.host.listener.as_mut() {
            l.netns_owner = l.netns.and_then(|ns| self.netns_names.owner(ns, failure.pid));
        }
        if let Some(n) = failure.host.nat.as_mut() {
            n.netns_owner = n.netns.and_then(|ns| self.netns_names.owner(ns, failure.pid));
        }
        if failure.history.at_attach.is_some()
            || failure.timers.is_some_and(|t| t.keepalive != 0)
            || failure.ended.is_some()
        {
            failure.kernel_hz = self.kernel_hz;
        }
        failure.name_rst_reasons(&self.rst_reasons);
        self.trace_gaps(failure, probes);
        // The packets of the connection this host dropped, read from the kernel's map (for
        // timeouts and resets only): what happened before the failure.
        if failure.needs_drops() && self.drops_possible(probes, failure.ts_ns) {
            if let (Some(local), Some(remote)) = (failure.local, failure.remote) {
                failure.drops = probes
                    .packet_drops(local, remote)
                    .iter()
                    .filter(|(_, d)| d.first_ns <= failure.ts_ns)
                    .filter_map(|(sent, d)| crate::event::decode_drops(d, *sent))
                    .collect();
            }
        }
        if failure.history.rst_received.is_some() && failure.history.rst_segment.is_none() {
            failure.rst_segment_unseen = self.rst_segment_unseen.clone();
        }
        if !failure.drops.is_empty() {
            let frames: Vec<u64> =
                failure.drops.iter().flat_map(|d| d.frames.iter().chain([&d.location])).copied().collect();
            self.symbols.prefetch(&frames);
            failure.name_drops(&self.drop_reasons, |at| self.symbols.function_at(at));
            for d in &mut failure.drops {
                d.netns_owner = d.netns.and_then(|ns| self.netns_names.owner(ns, failure.pid));
            }
        }
        if self.kstack {
            failure.kstacks = failure
                .stack_ids()
                .into_iter()
                .filter_map(|(event, id)| {
                    let ips = probes.kernel_stack(id)?;
                    Some(KernelStack { event, frames: ips.iter().map(|&ip| self.symbols.name(ip)).collect() })
                })
                .collect();
        }
        failure.cgroup = self.cgroups.lookup(failure.cgroup_id).cloned();
    }

    /// What the trace may lack, for the failures nothing recorded explains (a read of the
    /// kernel's per-CPU counters: the same cost however many sockets there are).
    fn trace_gaps(&self, failure: &mut Failure, probes: &Probes) {
        if failure.history_started_here {
            failure.trace_gaps.histories_refused = probes.histories_refused().ok();
            failure.trace_gaps.max_histories = probes.max_histories();
            failure.trace_gaps.not_adopted = self.not_adopted.contains(&failure.pid);
        }
        if !failure.is_tcp && failure.protocol == socktrace_common::net::IPPROTO_UDP {
            failure.trace_gaps.udp_errors_unseen = self.udp_errors_unseen.clone();
        }
    }

    /// Whether the drop probe may have recorded a dropped packet before a failure at `ts_ns`.
    /// Each lookup of a connection's drops is two map syscalls, and on most hosts nothing is
    /// ever dropped: the counter of recorded drops is read instead, at most once per failure
    /// newer than its last read, so a burst of resets costs one read per batch. The time is
    /// taken before the counter: a drop recorded before a failure that happened before that
    /// time is already counted.
    fn drops_possible(&mut self, probes: &Probes, ts_ns: u64) -> bool {
        self.drops.possible(ts_ns, || crate::render::clock_ns(libc::CLOCK_MONOTONIC), || probes.drops_recorded())
    }
}

/// The diagnosis of an enriched failure; when nothing explains it, whether the kernel skipped
/// runs of socktrace's programs is asked too (a syscall per program: only then).
pub fn diagnose_enriched(failure: &mut Failure, probes: &Probes) -> Diagnosis {
    let diagnosis = diagnose(failure);
    if diagnosis.cause != Cause::Unknown {
        return diagnosis;
    }
    failure.trace_gaps.missed_runs = probes.missed_runs();
    if failure.trace_gaps.missed_runs.is_empty() {
        diagnosis
    } else {
        diagnose(failure)
    }
}

/// What is known of the packets the drop probe recorded: some, or none before a time.
#[derive(Clone, Copy, Debug, Default)]
pub struct DropsSeen {
    /// Some were: every timeout and reset looks its connection up from now on.
    some: bool,
    /// None was recorded before this kernel monotonic time (when the counter read 0).
    none_before_ns: u64,
}

impl DropsSeen {
    /// Whether a drop may have been recorded before `ts_ns`, reading the clock (`now`) and
    /// then the counter (`recorded`) only when what is known does not tell. The kernel counts
    /// a drop before it stamps it, so a count of 0 read after `now` means no drop stamped
    /// before `now`.
    fn possible(&mut self, ts_ns: u64, now: impl FnOnce() -> u64, recorded: impl FnOnce() -> bool) -> bool {
        if self.some {
            return true;
        }
        if ts_ns < self.none_before_ns {
            return false;
        }
        let now = now();
        if recorded() {
            self.some = true;
            return true;
        }
        self.none_before_ns = now;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::DropsSeen;
    use std::cell::Cell;

    /// The counter is read only for a failure newer than its last read of 0, and once it is
    /// not 0 every failure is looked up without reading it again.
    #[test]
    fn drops_are_looked_up_only_once_some_were_counted() {
        let reads = Cell::new(0);
        let mut seen = DropsSeen::default();
        let mut ask = |ts: u64, now: u64, count: u64| {
            seen.possible(
                ts,
                || now,
                || {
                    reads.set(reads.get() + 1);
                    count != 0
                },
            )
        };
        // A batch of failures at 100..110, read at 200 with nothing counted: one read.
        assert!(!ask(100, 200, 0));
        assert!(!ask(105, 201, 0));
        assert!(!ask(199, 202, 0));
        assert_eq!(reads.get(), 1);
        // A failure after that read: read again (at 300, still nothing).
        assert!(!ask(250, 300, 0));
        assert_eq!(reads.get(), 2);
        // One after 300, when a drop was counted: looked up, and every later one too, even
        // one stamped before, with no more reads.
        assert!(ask(301, 400, 1));
        assert!(ask(150, 401, 0));
        assert!(ask(500, 501, 0));
        assert_eq!(reads.get(), 3);
    }
}
