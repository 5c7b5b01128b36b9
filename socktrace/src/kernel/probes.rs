//! Loading and attaching the eBPF programs: the one place that knows which probes exist on
//! which kernel and which probe mode is in use.
//!
//! The failing calls always come from the syscall-exit tracepoints. The socket history comes
//! from six kernel events (state changes, RSTs received and sent, error reports,
//! retransmissions, socket destruction), plus fork/exit with `-f`; each can be reached as a
//! BTF tracepoint, a classic tracepoint, or a kprobe on the function that fires it. The probe
//! mode says which; `auto` decides per event and falls back when one is missing.

use super::{btf::KernelBtf, tracefs};
use crate::model::Syscall;
use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    maps::{HashMap, MapData, RingBuf},
    programs::{BtfTracePoint, KProbe, RawTracePoint, TracePoint},
    Ebpf, EbpfLoader,
};
use socktrace_common::{config_flags, KernelOffsets, TracedConfig, NO_FIELD};
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
    Tracepoint { category: &'static str, name: &'static str },
    /// Raw tracepoints get the tracepoint's arguments (pointers) without a record.
    RawTracepoint { category: &'static str, name: &'static str },
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
    /// The probes to try for this event in `mode`, best first. Forced modes have one.
    pub fn candidates(&self, mode: ProbeMode) -> Vec<Probe> {
        match mode {
            ProbeMode::Auto => [Some(self.tp_btf), Some(self.tracepoint), self.kprobe].into_iter().flatten().collect(),
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

/// The syscall-exit programs, loaded in every mode.
const SYSCALL_PROGRAMS: [&str; 4] = ["sys_exit_receive", "sys_exit_getsockopt", "sys_exit_connect", "sys_exit_other"];

/// The syscall-exit program that handles each watched call.
fn exit_program(s: Syscall) -> &'static str {
    match s {
        _ if s.is_receive() => "sys_exit_receive",
        Syscall::Connect => "sys_exit_connect",
        Syscall::Getsockopt => "sys_exit_getsockopt",
        _ => "sys_exit_other",
    }
}

#[derive(Clone, Debug, Default)]
pub struct ProbeOptions {
    pub report_eof: bool,
    pub all_sockets: bool,
    /// Send routine failures as events (--all-errors) instead of counting them in the kernel.
    pub send_benign: bool,
}

/// Which processes are traced; every selector given must match, all filtering in the kernel.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Processes (thread-group ids); empty = any process.
    pub tgids: Vec<u32>,
    /// Also trace children forked by traced processes.
    pub follow: bool,
    /// Task name (at most 15 bytes, as the kernel keeps it).
    pub comm: Option<Vec<u8>>,
    /// cgroup v2 id and its depth below the root.
    pub cgroup: Option<(u64, u32)>,
}

/// The loaded programs with their links (dropping this detaches everything).
pub struct Probes {
    ebpf: Ebpf,
    pub mode: ProbeMode,
    /// The probe behind each kernel event, in attach order.
    pub choices: Vec<Choice>,
}

static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/socktrace"));

/// What the syscall side attaches to, in every mode.
pub fn syscall_probes() -> String {
    format!("tracepoint/syscalls:sys_exit_* ({} calls)", Syscall::ALL.len())
}

impl Probes {
    pub fn load_and_attach(mode: ProbeMode, opts: &ProbeOptions, sel: &Selection) -> Result<Self> {
        Self::load(mode, opts, sel, true)
    }

    /// Loads every program `mode` would use through the verifier, attaching none: the real
    /// test of whether socktrace can run on this kernel, and which probes it would pick.
    pub fn verify(mode: ProbeMode) -> Result<Self> {
        let sel = Selection { follow: true, ..Selection::default() };
        Self::load(mode, &ProbeOptions::default(), &sel, false)
    }

    fn load(mode: ProbeMode, opts: &ProbeOptions, sel: &Selection, attach: bool) -> Result<Self> {
        let tracefs = tracefs::ensure_mounted()?;
        let kprobes = kprobes_available(Some(&tracefs));
        if mode == ProbeMode::Kprobe && !kprobes {
            bail!(
                "probe mode kprobe cannot run here: {NO_KPROBES}. Use --probe-mode auto (or \
                 tp_btf / tracepoint), which needs no kprobes; `socktrace check` lists what this \
                 kernel offers"
            );
        }
        let btf = KernelBtf::load()?;
        let mut offsets = btf.kernel_offsets()?;
        syscall_record_layout(&tracefs, &mut offsets)?;
        let record_problems = tcp_record_layouts(&tracefs, &mut offsets);

        let mut flags = 0;
        if opts.report_eof {
            flags |= config_flags::REPORT_EOF;
        }
        if opts.all_sockets {
            flags |= config_flags::ALL_SOCKETS;
        }
        if opts.send_benign {
            flags |= config_flags::SEND_BENIGN;
        }
        if btf.tracepoint_arity("tcp_send_reset").unwrap_or(0) >= 3 {
            flags |= config_flags::SEND_RESET_HAS_REASON;
        }
        let mut config = TracedConfig { flags, ..TracedConfig::default() };
        if let [only] = sel.tgids[..] {
            if !sel.follow {
                // One process, no children: a compare instead of a map lookup per call.
                config.flags |= config_flags::SELECT_ONE_PID;
                config.tgid = only;
            }
        }
        if !sel.tgids.is_empty() && config.flags & config_flags::SELECT_ONE_PID == 0 {
            config.flags |= config_flags::SELECT_PIDS;
        }
        if sel.follow {
            config.flags |= config_flags::FOLLOW_FORKS;
        }
        if let Some(comm) = &sel.comm {
            config.flags |= config_flags::SELECT_COMM;
            let n = comm.len().min(15);
            config.comm[..n].copy_from_slice(&comm[..n]);
        }
        if let Some((id, level)) = sel.cgroup {
            config.flags |= config_flags::SELECT_CGROUP;
            config.cgroup_id = id;
            config.cgroup_level = level;
        }
        raise_memlock_limit();
        let aya_btf = aya::Btf::from_sys_fs().context("reading kernel BTF")?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&aya_btf))
            .override_global("OFFSETS", &offsets, true)
            .override_global("CONFIG", &config, true)
            .load(EBPF_OBJECT)
            .map_err(|e| anyhow!("loading socktrace's eBPF programs: {e}{}", hint_for_load_error()))?;

        {
            let mut traced: HashMap<&mut MapData, u32, u8> =
                HashMap::try_from(ebpf.map_mut("TRACED_TGIDS").context("TRACED_TGIDS map")?)?;
            for &tgid in &sel.tgids {
                traced.insert(tgid, 1, 0).context("adding the PID to the filter")?;
            }
        }

        let disabled: Vec<String> = std::env::var(DISABLE_PROBES_ENV)
            .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        let mut choices = Vec::new();
        // History first, so no state change between attach and the first failure is missed.
        for ev in KERNEL_EVENTS.iter().filter(|e| sel.follow || !e.follow_only) {
            let mut passed_over = Vec::new();
            let mut chosen = None;
            for probe in ev.candidates(mode) {
                let why_not = if disabled.contains(&probe.to_string()) {
                    Some(format!("disabled by {DISABLE_PROBES_ENV}"))
                } else {
                    unavailable(probe, &btf, &tracefs, &record_problems, kprobes)
                };
                if let Some(why) = why_not {
                    passed_over.push(format!("{probe}: {why}"));
                    continue;
                }
                match load_probe(&mut ebpf, probe, &aya_btf, attach) {
                    Ok(()) => {
                        chosen = Some(probe);
                        break;
                    }
                    Err(e) => passed_over.push(format!("{probe}: {e:#}")),
                }
            }
            let Some(probe) = chosen else {
                bail!(
                    "probe mode {}: no usable probe for the kernel's {} event: {}{}",
                    mode.name(),
                    ev.name,
                    passed_over.join("; "),
                    if mode == ProbeMode::Auto {
                        ""
                    } else {
                        " (--probe-mode auto takes whichever probe this kernel has)"
                    }
                );
            };
            choices.push(Choice { event: ev.name, probe, passed_over });
        }

        for name in SYSCALL_PROGRAMS {
            let prog: &mut TracePoint = ebpf.program_mut(name).context(name)?.try_into()?;
            prog.load().with_context(|| format!("loading {name}"))?;
        }
        for s in Syscall::ALL.into_iter().filter(|_| attach) {
            let (prog_name, tp) = (exit_program(s), format!("sys_exit_{}", s.name()));
            let prog: &mut TracePoint = ebpf.program_mut(prog_name).context(prog_name)?.try_into()?;
            prog.attach("syscalls", &tp).with_context(|| {
                format!("attaching tracepoint syscalls:{tp} (needs CONFIG_FTRACE_SYSCALLS)")
            })?;
        }
        Ok(Probes { ebpf, mode, choices })
    }

    /// The probes in use, for the attach line: `tp_btf/inet_sock_set_state, …`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.choices.iter().map(|c| c.probe.to_string()).collect();
        parts.push(syscall_probes());
        parts.join(", ")
    }

    /// One line per event where a better probe was passed over: what, and why.
    pub fn fallbacks(&self) -> Vec<String> {
        self.choices
            .iter()
            .filter(|c| !c.passed_over.is_empty())
            .map(|c| format!("{}: using {} ({})", c.event, c.probe, c.passed_over.iter().map(|p| first_line(p)).collect::<Vec<_>>().join("; ")))
            .collect()
    }

    /// Programs loaded (each passed the verifier).
    pub fn programs_loaded(&self) -> usize {
        self.choices.len() + SYSCALL_PROGRAMS.len()
    }

    /// Failures the kernel could not send because the ring buffer was full.
    pub fn lost_events(&self) -> u64 {
        let Some(map) = self.ebpf.map("LOST_EVENTS") else { return 0 };
        let Ok(arr) = aya::maps::PerCpuArray::<&MapData, u64>::try_from(map) else { return 0 };
        arr.get(&0, 0).map(|v| v.iter().sum()).unwrap_or(0)
    }

    /// Routine failures the kernel counted instead of sending: (kind, TCP state, count).
    pub fn benign_counts(&self) -> Vec<(u32, u8, u64)> {
        use socktrace_common::benign;
        let Some(map) = self.ebpf.map("BENIGN_COUNTS") else { return Vec::new() };
        let Ok(arr) = aya::maps::PerCpuArray::<&MapData, u64>::try_from(map) else { return Vec::new() };
        (0..benign::KINDS * benign::STATES)
            .filter_map(|i| {
                let n: u64 = arr.get(&i, 0).ok()?.iter().sum();
                (n > 0).then_some((i / benign::STATES, (i % benign::STATES) as u8, n))
            })
            .collect()
    }

    /// Socket histories the kernel holds now (bounded: LRU, and removed when sockets die).
    pub fn sockets_tracked(&self) -> u64 {
        let Some(map) = self.ebpf.map("SOCKETS") else { return 0 };
        HashMap::<&MapData, u64, socktrace_common::SocketHistory>::try_from(map)
            .map(|m| m.keys().filter(|k| k.is_ok()).count() as u64)
            .unwrap_or(0)
    }

    /// Processes still selected by PID (they leave the set as they exit when following).
    pub fn traced_processes(&self) -> usize {
        let Some(map) = self.ebpf.map("TRACED_TGIDS") else { return 0 };
        HashMap::<&MapData, u32, u8>::try_from(map).map(|m| m.keys().count()).unwrap_or(0)
    }

    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self.ebpf.take_map("EVENTS").context("EVENTS ring buffer missing")?;
        Ok(RingBuf::try_from(map)?)
    }
}

/// Every probe of every kernel event with why it cannot be used here (None: usable, as far
/// as can be told without loading it), for `socktrace check`.
pub fn survey(btf: &KernelBtf, tracefs: &Path) -> Vec<(&'static KernelEvent, Vec<(Probe, Option<String>)>)> {
    let mut offsets = KernelOffsets::ZERO;
    let problems = tcp_record_layouts(tracefs, &mut offsets);
    let kprobes = kprobes_available(Some(tracefs));
    KERNEL_EVENTS
        .iter()
        .map(|ev| {
            let probes = [Some(ev.tp_btf), Some(ev.tracepoint), ev.kprobe]
                .into_iter()
                .flatten()
                .map(|p| (p, unavailable(p, btf, tracefs, &problems, kprobes)))
                .collect();
            (ev, probes)
        })
        .collect()
}

/// Loads the program serving `probe` and, if asked, attaches it.
fn load_probe(ebpf: &mut Ebpf, probe: Probe, btf: &aya::Btf, attach: bool) -> Result<()> {
    let program = probe.program();
    let prog = ebpf.program_mut(&program).with_context(|| format!("program {program} missing from the object"))?;
    match probe {
        Probe::TpBtf(tp) => {
            let p: &mut BtfTracePoint = prog.try_into()?;
            p.load(tp, btf).context("the kernel refused the program")?;
            if attach {
                p.attach().context("attaching")?;
            }
        }
        Probe::Tracepoint { category, name } => {
            let p: &mut TracePoint = prog.try_into()?;
            p.load().context("the kernel refused the program")?;
            if attach {
                p.attach(category, name).context("attaching")?;
            }
        }
        Probe::RawTracepoint { name, .. } => {
            let p: &mut RawTracePoint = prog.try_into()?;
            p.load().context("the kernel refused the program")?;
            if attach {
                p.attach(name).context("attaching")?;
            }
        }
        Probe::Kprobe(function) => {
            let p: &mut KProbe = prog.try_into()?;
            p.load().context("the kernel refused the program")?;
            if attach {
                p.attach(function, 0).context("attaching")?;
            }
        }
    }
    Ok(())
}

/// Why `probe` cannot be used on this kernel, found without loading anything; None if it
/// looks usable (loading may still fail, and then the next candidate is tried).
fn unavailable(
    probe: Probe,
    btf: &KernelBtf,
    tracefs: &Path,
    record_problems: &[(&'static str, String)],
    kprobes: bool,
) -> Option<String> {
    match probe {
        Probe::TpBtf(name) => btf
            .tracepoint_arity(name)
            .is_none()
            .then(|| "not in this kernel's BTF (tp_btf needs 5.5+ with BTF)".to_string()),
        Probe::Tracepoint { name, .. } => {
            record_problems.iter().find(|(n, _)| *n == name).map(|(_, why)| why.clone())
        }
        Probe::RawTracepoint { category, name } => (!tracefs.join("events").join(category).join(name).is_dir())
            .then(|| format!("no tracepoint {category}:{name} in this kernel")),
        Probe::Kprobe(function) => {
            if !kprobes {
                Some(NO_KPROBES.to_string())
            } else if !btf.has_function(function) {
                Some(format!("no function {function} to probe (absent or inlined in this kernel)"))
            } else {
                None
            }
        }
    }
}

fn first_line(s: &str) -> &str {
    let line = s.lines().next().unwrap_or("");
    match line.char_indices().nth(200) {
        Some((i, _)) => &line[..i],
        None => line,
    }
}

/// Where a record field's offset goes in `KernelOffsets`.
type OffsetSlot = fn(&mut KernelOffsets) -> &mut u32;

/// Fields the tracepoint programs read from each classic TCP/socket record: (tracepoint,
/// field, size the program reads, required, where its offset goes).
const RECORD_FIELDS: [(&str, &str, u32, bool, OffsetSlot); 8] = [
    ("inet_sock_set_state", "skaddr", 8, true, |o| &mut o.tp_set_state_skaddr),
    ("inet_sock_set_state", "oldstate", 4, true, |o| &mut o.tp_set_state_oldstate),
    ("inet_sock_set_state", "newstate", 4, true, |o| &mut o.tp_set_state_newstate),
    ("tcp_receive_reset", "skaddr", 8, true, |o| &mut o.tp_receive_reset_skaddr),
    ("tcp_send_reset", "skaddr", 8, true, |o| &mut o.tp_send_reset_skaddr),
    // Added with the RST reasons (about 6.10); older records have none.
    ("tcp_send_reset", "reason", 4, false, |o| &mut o.tp_send_reset_reason),
    ("tcp_retransmit_skb", "skaddr", 8, true, |o| &mut o.tp_retransmit_skaddr),
    ("tcp_destroy_sock", "skaddr", 8, true, |o| &mut o.tp_destroy_skaddr),
];

/// Reads one classic record's layout into `offsets`: the offsets of the fields socktrace
/// reads, checked for the sizes its programs expect. A record laid out otherwise is refused
/// with what differs, never read at a guessed offset.
pub fn record_layout(tracepoint: &str, format: &tracefs::Format, offsets: &mut KernelOffsets) -> Result<()> {
    for &(_, field, size, required, slot_of) in RECORD_FIELDS.iter().filter(|f| f.0 == tracepoint) {
        let slot = slot_of(offsets);
        match format.field(field) {
            Some(f) if f.size == size => *slot = f.offset,
            Some(f) => bail!(
                "its record's field {field} is {} bytes on this kernel, socktrace reads {size}",
                f.size
            ),
            None if required => bail!("its record has no field {field} on this kernel"),
            None => *slot = NO_FIELD,
        }
    }
    Ok(())
}

/// The classic TCP/socket records' layouts, from their format files; the tracepoints that
/// cannot be used, with why.
fn tcp_record_layouts(tracefs: &Path, offsets: &mut KernelOffsets) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    for ev in &KERNEL_EVENTS {
        let Probe::Tracepoint { category, name } = ev.tracepoint else { continue };
        let result = tracefs::Format::read(tracefs, category, name)
            .and_then(|format| record_layout(name, &format, offsets));
        if let Err(e) = result {
            problems.push((name, format!("{e:#}")));
        }
    }
    problems
}

/// The syscall-exit tracepoints' record layout, read from their format files; every watched
/// call must share it, since one program serves them all.
fn syscall_record_layout(tracefs: &Path, o: &mut KernelOffsets) -> Result<()> {
    let mut layout: Option<(u32, u32)> = None;
    for s in Syscall::ALL {
        let exit = tracefs::Format::read(tracefs, "syscalls", &format!("sys_exit_{}", s.name()))?;
        let this = (exit.offset("__syscall_nr")?, exit.offset("ret")?);
        match layout {
            None => layout = Some(this),
            Some(l) if l != this => bail!(
                "syscall tracepoint layouts differ on this kernel (sys_exit_{}: {:?} vs {:?})",
                s.name(),
                this,
                l
            ),
            Some(_) => {}
        }
    }
    let (nr, ret) = layout.ok_or_else(|| anyhow!("no syscalls"))?;
    o.tp_syscall_nr = nr;
    o.tp_exit_ret = ret;
    Ok(())
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; later ones to the cgroup. Raising it
/// can fail in containers (no CAP_SYS_RESOURCE): harmless on 5.11+, so only a notice below it.
fn raise_memlock_limit() {
    let rlim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 && kernel_version() < (5, 11) {
        eprintln!(
            "socktrace: notice: could not raise RLIMIT_MEMLOCK ({}); map creation may fail on this kernel",
            std::io::Error::last_os_error()
        );
    }
}

pub fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = release.trim().split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse().ok());
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

fn hint_for_load_error() -> &'static str {
    if !super::privileges::has_bpf_privileges() {
        " (not enough privilege: run socktrace as root, e.g. with sudo)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(fields: &[(&str, u32, u32)]) -> tracefs::Format {
        let mut text = String::from("name: x\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n");
        for (decl, offset, size) in fields {
            text.push_str(&format!("\tfield:{decl};\toffset:{offset};\tsize:{size};\tsigned:0;\n"));
        }
        tracefs::Format::parse(&text).unwrap()
    }

    #[test]
    fn send_reset_record_with_reason_as_on_6_10_and_later() {
        let f = format(&[
            ("const void * skbaddr", 8, 8),
            ("const void * skaddr", 16, 8),
            ("int state", 24, 4),
            ("enum sk_rst_reason reason", 28, 4),
            ("__u8 saddr[sizeof(struct sockaddr_in6)]", 32, 28),
        ]);
        let mut o = KernelOffsets::ZERO;
        record_layout("tcp_send_reset", &f, &mut o).unwrap();
        assert_eq!((o.tp_send_reset_skaddr, o.tp_send_reset_reason), (16, 28));
    }

    #[test]
    fn send_reset_record_without_reason_as_on_6_1() {
        let f = format(&[
            ("const void * skbaddr", 8, 8),
            ("const void * skaddr", 16, 8),
            ("int state", 24, 4),
            ("__u16 sport", 28, 2),
            ("__u16 dport", 30, 2),
        ]);
        let mut o = KernelOffsets::ZERO;
        record_layout("tcp_send_reset", &f, &mut o).unwrap();
        assert_eq!((o.tp_send_reset_skaddr, o.tp_send_reset_reason), (16, NO_FIELD));
    }

    #[test]
    fn set_state_offsets_come_from_the_record() {
        let f = format(&[("const void * skaddr", 16, 8), ("int oldstate", 24, 4), ("int newstate", 28, 4)]);
        let mut o = KernelOffsets::ZERO;
        record_layout("inet_sock_set_state", &f, &mut o).unwrap();
        assert_eq!((o.tp_set_state_skaddr, o.tp_set_state_oldstate, o.tp_set_state_newstate), (16, 24, 28));
    }

    #[test]
    fn a_record_laid_out_otherwise_is_refused_with_what_differs() {
        let mut o = KernelOffsets::ZERO;
        let narrow = format(&[("const void * skaddr", 8, 4), ("int oldstate", 12, 4), ("int newstate", 16, 4)]);
        let e = record_layout("inet_sock_set_state", &narrow, &mut o).unwrap_err().to_string();
        assert!(e.contains("field skaddr is 4 bytes on this kernel, socktrace reads 8"), "{e}");
        let missing = format(&[("const void * skaddr", 8, 8), ("int newstate", 16, 4)]);
        let e = record_layout("inet_sock_set_state", &missing, &mut o).unwrap_err().to_string();
        assert!(e.contains("no field oldstate"), "{e}");
        let e = record_layout("tcp_receive_reset", &format(&[("__u16 sport", 8, 2)]), &mut o).unwrap_err().to_string();
        assert!(e.contains("no field skaddr"), "{e}");
    }

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
        assert_eq!(Probe::RawTracepoint { category: "sock", name: "inet_sk_error_report" }.program(), "raw_inet_sk_error_report");
        assert_eq!(Probe::TpBtf("tcp_destroy_sock").to_string(), "tp_btf/tcp_destroy_sock");
    }
}
