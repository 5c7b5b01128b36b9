//! The probe catalogue: every kernel event the socket history is built from, every way
//! socktrace can reach it (BTF tracepoint, classic tracepoint, kprobe), and which of them this
//! kernel offers. The loader (`load.rs`) picks from here per probe mode; `check` reports it.
//!
//! The failing calls always come from one raw tracepoint on `sys_exit`. The socket history comes
//! from six kernel events (state changes, RSTs received and sent, error reports,
//! retransmissions, socket destruction), plus fork/exit with `-f`. The probe mode says which
//! probe serves each; `auto` decides per event and falls back when one is missing.

use super::{btf::KernelBtf, offsets::Resolved};
use crate::model::Syscall;
use std::fmt;
use std::path::Path;

/// How socktrace reaches the kernel's TCP events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeMode {
    /// Per event, the best this kernel has: BTF tracepoint, else classic tracepoint, else
    /// kprobe; says what it picked and why.
    Auto,
    /// BTF tracepoints (tp_btf: 5.5+, needs BTF): typed arguments, exact socket pointers.
    #[value(name = "tp_btf")]
    TpBtf,
    /// Classic tracepoints, their records read at offsets from the kernel's format files
    /// (raw tracepoints where the record lacks the socket or process).
    Tracepoint,
    /// kprobes on tcp_set_state, tcp_reset, sk_error_report, tcp_retransmit_skb and
    /// tcp_v4_destroy_sock (CONFIG_KPROBES); RSTs sent and fork/exit stay tracepoints.
    Kprobe,
}

impl ProbeMode {
    pub fn name(self) -> &'static str {
        match self {
            ProbeMode::Auto => "auto",
            ProbeMode::TpBtf => "tp_btf",
            ProbeMode::Tracepoint => "tracepoint",
            ProbeMode::Kprobe => "kprobe",
        }
    }
}

/// One way into the kernel. The eBPF program for each is named after it (see `program`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    TpBtf(&'static str),
    Tracepoint {
        category: &'static str,
        name: &'static str,
    },
    /// Raw tracepoints get the tracepoint's arguments (pointers) without a record.
    RawTracepoint {
        category: &'static str,
        name: &'static str,
    },
    Kprobe(&'static str),
}

impl Probe {
    /// The eBPF program that serves this probe.
    pub fn program(&self) -> String {
        match self {
            Probe::TpBtf(name) => name.to_string(),
            Probe::Tracepoint { name, .. } => format!("tp_{name}"),
            Probe::RawTracepoint { name, .. } => format!("raw_{name}"),
            Probe::Kprobe(function) => format!("kp_{function}"),
        }
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::TpBtf(name) => write!(f, "tp_btf/{name}"),
            Probe::Tracepoint { category, name } => write!(f, "tracepoint/{category}:{name}"),
            Probe::RawTracepoint { name, .. } => write!(f, "raw_tracepoint/{name}"),
            Probe::Kprobe(function) => write!(f, "kprobe/{function}"),
        }
    }
}

/// A kernel event the socket history is built from, with every way socktrace can reach it.
#[derive(Clone, Copy, Debug)]
pub struct KernelEvent {
    pub name: &'static str,
    pub tp_btf: Probe,
    /// The classic tracepoint, or a raw one where the record lacks what is needed.
    pub tracepoint: Probe,
    /// None where no function can stand in for the tracepoint on every kernel (the RST senders
    /// are static per protocol and often inlined).
    pub kprobe: Option<Probe>,
    /// Only with `-f`.
    pub follow_only: bool,
}

const fn event(
    name: &'static str,
    tp_btf: Probe,
    tracepoint: Probe,
    kprobe: Option<Probe>,
    follow_only: bool,
) -> KernelEvent {
    KernelEvent { name, tp_btf, tracepoint, kprobe, follow_only }
}

/// The history's events, attached in this order (before the syscall exits, so no state change
/// between attach and the first failure is missed).
pub const KERNEL_EVENTS: [KernelEvent; 8] = [
    event(
        "state change",
        Probe::TpBtf("inet_sock_set_state"),
        Probe::Tracepoint { category: "sock", name: "inet_sock_set_state" },
        Some(Probe::Kprobe("tcp_set_state")),
        false,
    ),
    event(
        "RST received",
        Probe::TpBtf("tcp_receive_reset"),
        Probe::Tracepoint { category: "tcp", name: "tcp_receive_reset" },
        Some(Probe::Kprobe("tcp_reset")),
        false,
    ),
    event(
        "RST sent",
        Probe::TpBtf("tcp_send_reset"),
        Probe::Tracepoint { category: "tcp", name: "tcp_send_reset" },
        None,
        false,
    ),
    event(
        "error report",
        Probe::TpBtf("inet_sk_error_report"),
        Probe::RawTracepoint { category: "sock", name: "inet_sk_error_report" },
        Some(Probe::Kprobe("sk_error_report")),
        false,
    ),
    event(
        "retransmission",
        Probe::TpBtf("tcp_retransmit_skb"),
        Probe::Tracepoint { category: "tcp", name: "tcp_retransmit_skb" },
        Some(Probe::Kprobe("tcp_retransmit_skb")),
        false,
    ),
    event(
        "socket destroyed",
        Probe::TpBtf("tcp_destroy_sock"),
        Probe::Tracepoint { category: "tcp", name: "tcp_destroy_sock" },
        Some(Probe::Kprobe("tcp_v4_destroy_sock")),
        false,
    ),
    event(
        "fork",
        Probe::TpBtf("sched_process_fork"),
        Probe::RawTracepoint { category: "sched", name: "sched_process_fork" },
        None,
        true,
    ),
    event(
        "exit",
        Probe::TpBtf("sched_process_exit"),
        Probe::RawTracepoint { category: "sched", name: "sched_process_exit" },
        None,
        true,
    ),
];

impl KernelEvent {
    /// Every probe that can serve this event, best first.
    pub fn all(&self) -> impl Iterator<Item = Probe> {
        [Some(self.tp_btf), Some(self.tracepoint), self.kprobe].into_iter().flatten()
    }

    /// The probes to try for this event in `mode`, best first. Forced modes have one.
    pub fn candidates(&self, mode: ProbeMode) -> Vec<Probe> {
        match mode {
            ProbeMode::Auto => self.all().collect(),
            ProbeMode::TpBtf => vec![self.tp_btf],
            ProbeMode::Tracepoint => vec![self.tracepoint],
            ProbeMode::Kprobe => vec![self.kprobe.unwrap_or(self.tracepoint)],
        }
    }
}

/// The probe used for one event, and the better ones passed over (with why).
#[derive(Clone, Debug)]
pub struct Choice {
    pub event: &'static str,
    pub probe: Probe,
    pub passed_over: Vec<String>,
}

/// Set to a comma-separated list of probes (as printed, e.g. `tp_btf/tcp_receive_reset`) to
/// treat them as missing: how the fallbacks are exercised on a kernel that has everything.
pub const DISABLE_PROBES_ENV: &str = "SOCKTRACE_DISABLE_PROBES";

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
    pub btf: &'a KernelBtf,
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
        Probe::TpBtf(name) => kernel
            .btf
            .tracepoint_arity(name)
            .is_none()
            .then(|| "not in this kernel's BTF (tp_btf needs 5.5+ with BTF)".to_string()),
        Probe::Tracepoint { name, .. } => kernel.resolved.record_problem(name).map(str::to_string),
        Probe::RawTracepoint { category, name } => (!kernel.tracefs.join("events").join(category).join(name).is_dir())
            .then(|| format!("no tracepoint {category}:{name} in this kernel")),
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

/// What the syscall side attaches to, in every mode.
pub fn syscall_probes() -> String {
    format!("raw_tracepoint/sys_exit ({} calls)", Syscall::ALL.len())
}

pub fn first_line(s: &str) -> &str {
    let line = s.lines().next().unwrap_or("");
    match line.char_indices().nth(200) {
        Some((i, _)) => &line[..i],
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_per_mode() {
        let state = &KERNEL_EVENTS[0];
        assert_eq!(
            state.candidates(ProbeMode::Auto),
            vec![
                Probe::TpBtf("inet_sock_set_state"),
                Probe::Tracepoint { category: "sock", name: "inet_sock_set_state" },
                Probe::Kprobe("tcp_set_state")
            ]
        );
        assert_eq!(state.candidates(ProbeMode::Kprobe), vec![Probe::Kprobe("tcp_set_state")]);
        assert_eq!(KERNEL_EVENTS[1].candidates(ProbeMode::Kprobe), vec![Probe::Kprobe("tcp_reset")]);
        // No kprobe stands in for tcp_send_reset: kprobe mode keeps its tracepoint.
        let sent = KERNEL_EVENTS.iter().find(|e| e.name == "RST sent").unwrap();
        assert_eq!(sent.candidates(ProbeMode::Kprobe), vec![sent.tracepoint]);
        for ev in &KERNEL_EVENTS {
            assert_eq!(ev.candidates(ProbeMode::TpBtf), vec![ev.tp_btf]);
            assert_eq!(ev.candidates(ProbeMode::Tracepoint), vec![ev.tracepoint]);
            assert!(!matches!(ev.tracepoint, Probe::TpBtf(_) | Probe::Kprobe(_)));
        }
    }

    #[test]
    fn probes_print_as_kind_slash_name_and_name_their_program() {
        let tp = Probe::Tracepoint { category: "tcp", name: "tcp_receive_reset" };
        assert_eq!(tp.to_string(), "tracepoint/tcp:tcp_receive_reset");
        assert_eq!(tp.program(), "tp_tcp_receive_reset");
        assert_eq!(Probe::Kprobe("tcp_reset").program(), "kp_tcp_reset");
        assert_eq!(
            Probe::RawTracepoint { category: "sock", name: "inet_sk_error_report" }.program(),
            "raw_inet_sk_error_report"
        );
        assert_eq!(Probe::TpBtf("tcp_destroy_sock").to_string(), "tp_btf/tcp_destroy_sock");
    }
}
