//! What this kernel offers of the probe catalogue (`probes`), found without loading anything:
//! which BTF tracepoints and functions it has, which classic records can be read, whether it
//! takes kprobes. `check` reports it probe by probe; the loader skips what cannot work here.

use super::btf::KernelTypes;
use super::offsets::Resolved;
use super::probes::{KernelEvent, Probe, KERNEL_EVENTS};
use std::path::Path;

/// Whether this kernel can take kprobes at all.
pub fn kprobes_available(tracefs: Option<&Path>) -> bool {
    Path::new("/sys/bus/event_source/devices/kprobe").exists()
        || tracefs.is_some_and(|t| t.join("kprobe_events").exists())
}

pub const NO_KPROBES: &str =
    "this kernel has no kprobes (CONFIG_KPROBES is off: /sys/bus/event_source/devices/kprobe is missing)";

/// What socktrace knows about the running kernel before loading anything: its BTF, where
/// tracefs is, the offsets resolved from both, and whether it takes kprobes.
pub struct KernelView<'a> {
    pub btf: &'a dyn KernelTypes,
    pub tracefs: &'a Path,
    pub resolved: &'a Resolved,
    pub kprobes: bool,
}

/// One kernel event's probes, each with why it cannot be used here (None: usable, as far as
/// can be told without loading it).
pub struct EventSurvey {
    pub event: &'static KernelEvent,
    pub probes: Vec<(Probe, Option<String>)>,
}

/// Every probe of every kernel event, for `socktrace check`.
pub fn survey(kernel: &KernelView) -> Vec<EventSurvey> {
    KERNEL_EVENTS
        .iter()
        .map(|event| EventSurvey { event, probes: event.all().map(|p| (p, unavailable(p, kernel))).collect() })
        .collect()
}

/// Why `probe` cannot be used on this kernel, found without loading anything; None if it
/// looks usable (loading may still fail, and then the next candidate is tried).
pub fn unavailable(probe: Probe, kernel: &KernelView) -> Option<String> {
    match probe {
        Probe::TpBtf(name) => (!kernel.btf.has_btf_tracepoint(name))
            .then(|| "not in this kernel's BTF (tp_btf needs 5.5+ with BTF)".to_string()),
        Probe::Tracepoint { name, .. } => kernel.resolved.record_problem(name).map(str::to_string),
        Probe::RawTracepoint { category, name } => (!kernel.tracefs.join("events").join(category).join(name).is_dir())
            .then(|| format!("no tracepoint {category}:{name} in this kernel")),
        Probe::Derived(_) => None,
        Probe::Kprobe(function) => {
            if !kernel.kprobes {
                Some(NO_KPROBES.to_string())
            } else if !kernel.btf.has_function(function) {
                Some(format!("no function {function} to probe (absent or inlined in this kernel)"))
            } else {
                None
            }
        }
    }
}

/// Why this kernel cannot run the BTF tracepoint on `sys_exit`, if it cannot.
pub fn typed_sys_exit_problem(btf: &dyn KernelTypes) -> Option<String> {
    if !btf.has_btf_tracepoint("sys_exit") {
        Some("not in this kernel's BTF (tp_btf needs 5.5+ with BTF)".into())
    } else if !btf.has_function("bpf_get_current_task_btf") {
        Some("no bpf_get_current_task_btf (5.11+)".into())
    } else {
        None
    }
}
