//! The probe catalogue: every kernel event the socket history is built from, every way
//! socktrace can reach it (BTF tracepoint, classic tracepoint, kprobe), and which of them this
//! kernel offers. The loader (`load.rs`) picks from here per probe mode; `check` reports it.
//!
//! The failing calls always come from one program on `sys_exit`: a BTF tracepoint where the
//! kernel has one and the mode allows it (5.11+), else a raw tracepoint. The socket history comes
//! from six kernel events (state changes, RSTs received and sent, error reports,
//! retransmissions, socket destruction), plus fork/exit with `-f`. The probe mode says which
//! probe serves each; `auto` decides per event and falls back when one is missing.

use crate::model::Syscall;
use std::fmt;

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
    /// No probe of its own: the event is derived from another one (on kernels that have no
    /// hook for it, e.g. the error report before 5.14), as the description says.
    Derived(&'static str),
}

impl Probe {
    /// The eBPF program that serves this probe (none for a derived event).
    pub fn program(&self) -> Option<String> {
        match self {
            Probe::TpBtf(name) => Some(name.to_string()),
            Probe::Tracepoint { name, .. } => Some(format!("tp_{name}")),
            Probe::RawTracepoint { name, .. } => Some(format!("raw_{name}")),
            Probe::Kprobe(function) => Some(format!("kp_{function}")),
            Probe::Derived(_) => None,
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
            Probe::Derived(how) => write!(f, "derived/{how}"),
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
    /// kprobes, best first: the function that fires the tracepoint, then what older kernels
    /// have instead. Empty where no function can stand in on every kernel (the RST senders are
    /// static per protocol and often inlined).
    pub kprobes: &'static [Probe],
    /// The last resort of every mode, where the kernel has no hook at all for this event.
    pub derived: Option<Probe>,
    /// A probe attached beside the chosen one when that one is the first of the pair: what
    /// the kprobe on tcp_set_state never sees (listen() sets LISTEN without it).
    pub companion: Option<(Probe, Probe)>,
    /// Only with `-f`.
    pub follow_only: bool,
}

const fn event(name: &'static str, tp_btf: Probe, tracepoint: Probe, kprobes: &'static [Probe]) -> KernelEvent {
    KernelEvent { name, tp_btf, tracepoint, kprobes, derived: None, companion: None, follow_only: false }
}

/// How the error report is had where the kernel has no hook for it (before 5.14): the errno
/// the kernel set (`sk_err`) read when the socket closes, which every abort path (RST,
/// timeout, ICMP while connecting, `tcp_abort`) does after setting it.
pub const ERROR_AT_CLOSE: Probe = Probe::Derived("sk_err at the close transition");

/// The history's events, attached in this order (before the syscall exits, so no state change
/// between attach and the first failure is missed).
pub const KERNEL_EVENTS: [KernelEvent; 9] = [
    KernelEvent {
        // inet_csk_listen_start() sets LISTEN without tcp_set_state(): the kprobe needs it too.
        companion: Some((Probe::Kprobe("tcp_set_state"), Probe::Kprobe("inet_csk_listen_start"))),
        ..event(
            "state change",
            Probe::TpBtf("inet_sock_set_state"),
            Probe::Tracepoint { category: "sock", name: "inet_sock_set_state" },
            &[Probe::Kprobe("tcp_set_state")],
        )
    },
    event(
        "RST received",
        Probe::TpBtf("tcp_receive_reset"),
        Probe::Tracepoint { category: "tcp", name: "tcp_receive_reset" },
        &[Probe::Kprobe("tcp_reset")],
    ),
    event(
        "RST sent",
        Probe::TpBtf("tcp_send_reset"),
        Probe::Tracepoint { category: "tcp", name: "tcp_send_reset" },
        &[],
    ),
    KernelEvent {
        derived: Some(ERROR_AT_CLOSE),
        // sk_error_report() wraps the socket's callback from 5.14; before, TCP's callback is
        // sock_def_error_report, called through the function pointer.
        ..event(
            "error report",
            Probe::TpBtf("inet_sk_error_report"),
            Probe::RawTracepoint { category: "sock", name: "inet_sk_error_report" },
            &[Probe::Kprobe("sk_error_report"), Probe::Kprobe("sock_def_error_report")],
        )
    },
    event(
        "retransmission",
        Probe::TpBtf("tcp_retransmit_skb"),
        Probe::Tracepoint { category: "tcp", name: "tcp_retransmit_skb" },
        &[Probe::Kprobe("tcp_retransmit_skb")],
    ),
    event(
        "socket destroyed",
        Probe::TpBtf("tcp_destroy_sock"),
        Probe::Tracepoint { category: "tcp", name: "tcp_destroy_sock" },
        &[Probe::Kprobe("tcp_v4_destroy_sock")],
    ),
    KernelEvent {
        follow_only: true,
        ..event(
            "fork",
            Probe::TpBtf("sched_process_fork"),
            Probe::RawTracepoint { category: "sched", name: "sched_process_fork" },
            &[],
        )
    },
    KernelEvent {
        follow_only: true,
        ..event(
            "exit",
            Probe::TpBtf("sched_process_exit"),
            Probe::RawTracepoint { category: "sched", name: "sched_process_exit" },
            &[],
        )
    },
    KernelEvent {
        follow_only: true,
        ..event(
            "process reaped",
            Probe::TpBtf("sched_process_free"),
            Probe::RawTracepoint { category: "sched", name: "sched_process_free" },
            &[],
        )
    },
];

impl KernelEvent {
    /// Every probe that can serve this event, best first.
    fn best_first(&self) -> impl Iterator<Item = Probe> + '_ {
        [self.tp_btf, self.tracepoint].into_iter().chain(self.kprobes.iter().copied()).chain(self.derived)
    }

    /// Every probe this event may use, companions included.
    pub fn all(&self) -> impl Iterator<Item = Probe> + '_ {
        self.best_first().chain(self.companion.map(|(_, c)| c))
    }

    /// The probes to try for this event in `mode`, best first: the mode's own (kprobe mode
    /// keeps the tracepoint where no kprobe can stand in), then the derived event where the
    /// kernel has no hook at all.
    pub fn candidates(&self, mode: ProbeMode) -> Vec<Probe> {
        let own: Vec<Probe> = match mode {
            ProbeMode::Auto => return self.best_first().collect(),
            ProbeMode::TpBtf => vec![self.tp_btf],
            ProbeMode::Tracepoint => vec![self.tracepoint],
            ProbeMode::Kprobe if self.kprobes.is_empty() => vec![self.tracepoint],
            ProbeMode::Kprobe => self.kprobes.to_vec(),
        };
        own.into_iter().chain(self.derived).collect()
    }
}

/// The probe used for one event, and the better ones passed over (with why).
#[derive(Clone, Debug)]
pub struct Choice {
    pub event: &'static str,
    pub probe: Probe,
    /// Attached beside `probe` (see `KernelEvent::companion`).
    pub companion: Option<Probe>,
    pub passed_over: Vec<String>,
}

impl Choice {
    /// What serves the event: `kprobe/tcp_set_state+kprobe/inet_csk_listen_start`.
    pub fn probes(&self) -> String {
        match self.companion {
            Some(c) => format!("{}+{c}", self.probe),
            None => self.probe.to_string(),
        }
    }
}

/// Set to a comma-separated list of probes (as printed, e.g. `tp_btf/tcp_receive_reset`) to
/// treat them as missing: how the fallbacks are exercised on a kernel that has everything.
pub const DISABLE_PROBES_ENV: &str = "SOCKTRACE_DISABLE_PROBES";

/// Whether `probe` (as printed) is listed in `SOCKTRACE_DISABLE_PROBES`.
pub fn disabled_by_env(probe: &str) -> bool {
    std::env::var(DISABLE_PROBES_ENV).is_ok_and(|v| v.split(',').any(|p| p.trim() == probe))
}

/// The io_uring door, as the attach line names it: the BTF and raw tracepoints (`typed`) or
/// the classic ones.
pub fn io_uring_probes(typed: bool) -> &'static str {
    if typed {
        "tp_btf/io_uring_complete (+raw_tracepoint/io_uring_file_get)"
    } else {
        "tracepoint/io_uring:io_uring_complete (+io_uring_file_get)"
    }
}

/// What the syscall side attaches to: the BTF tracepoint (`typed`) or the raw one.
pub fn syscall_probes(typed: bool) -> String {
    let hook = if typed { "tp_btf/sys_exit" } else { "raw_tracepoint/sys_exit" };
    format!("{hook} ({} calls)", Syscall::ALL.len())
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
        // The error report: every mode ends with the one derived from the close (pre-5.14).
        let report = KERNEL_EVENTS.iter().find(|e| e.name == "error report").unwrap();
        assert_eq!(
            report.candidates(ProbeMode::Kprobe),
            vec![Probe::Kprobe("sk_error_report"), Probe::Kprobe("sock_def_error_report"), ERROR_AT_CLOSE]
        );
        assert_eq!(report.candidates(ProbeMode::Tracepoint), vec![report.tracepoint, ERROR_AT_CLOSE]);
        assert_eq!(report.candidates(ProbeMode::Auto).last(), Some(&ERROR_AT_CLOSE));
        for ev in KERNEL_EVENTS.iter().filter(|e| e.derived.is_none()) {
            assert_eq!(ev.candidates(ProbeMode::TpBtf), vec![ev.tp_btf]);
            assert_eq!(ev.candidates(ProbeMode::Tracepoint), vec![ev.tracepoint]);
            assert!(!matches!(ev.tracepoint, Probe::TpBtf(_) | Probe::Kprobe(_)));
        }
    }

    #[test]
    fn probes_print_as_kind_slash_name_and_name_their_program() {
        let tp = Probe::Tracepoint { category: "tcp", name: "tcp_receive_reset" };
        assert_eq!(tp.to_string(), "tracepoint/tcp:tcp_receive_reset");
        assert_eq!(tp.program().as_deref(), Some("tp_tcp_receive_reset"));
        assert_eq!(Probe::Kprobe("tcp_reset").program().as_deref(), Some("kp_tcp_reset"));
        assert_eq!(
            Probe::RawTracepoint { category: "sock", name: "inet_sk_error_report" }.program().as_deref(),
            Some("raw_inet_sk_error_report")
        );
        assert_eq!(ERROR_AT_CLOSE.program(), None);
        assert_eq!(ERROR_AT_CLOSE.to_string(), "derived/sk_err at the close transition");
        assert_eq!(Probe::TpBtf("tcp_destroy_sock").to_string(), "tp_btf/tcp_destroy_sock");
    }
}
