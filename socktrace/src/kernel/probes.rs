//! Loading and attaching the eBPF programs: the one place that knows which probes exist on
//! which kernel and which probe mode is in use.

use super::{btf::KernelBtf, tracefs};
use crate::model::Syscall;
use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    maps::{HashMap, MapData, RingBuf},
    programs::{BtfTracePoint, TracePoint},
    Ebpf, EbpfLoader,
};
use socktrace_common::{config_flags, KernelOffsets, TracedConfig};
use std::path::Path;

/// How socktrace reaches the kernel's TCP events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeMode {
    /// Pick the best available on this kernel.
    Auto,
    /// Syscall tracepoints plus BTF-typed TCP/socket tracepoints (tp_btf, 5.5+).
    Tracepoint,
}

/// The TCP/socket tracepoints the history is built from, with the program for each.
pub const SOCKET_TRACEPOINTS: [&str; 6] = [
    "inet_sock_set_state",
    "tcp_receive_reset",
    "tcp_send_reset",
    "inet_sk_error_report",
    "tcp_retransmit_skb",
    "tcp_destroy_sock",
];

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
    /// What was attached, one entry per probe, for the attach line and `check`.
    pub attached: Vec<String>,
}

static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/socktrace"));

impl Probes {
    pub fn load_and_attach(mode: ProbeMode, opts: &ProbeOptions, sel: &Selection) -> Result<Self> {
        Self::load(mode, opts, sel, true)
    }

    fn load(mode: ProbeMode, opts: &ProbeOptions, sel: &Selection, attach: bool) -> Result<Self> {
        let tracefs = tracefs::ensure_mounted()?;
        let btf = KernelBtf::load()?;
        let mut offsets = btf.kernel_offsets()?;
        syscall_record_layout(&tracefs, &mut offsets)?;

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
        let aya_btf = aya::Btf::from_sys_fs().context("reading kernel BTF for tp_btf programs")?;
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
        let mut attached = Vec::new();
        // History first, so no state change between attach and the first failure is missed.
        let follow: &[&str] = if sel.follow { &["sched_process_fork", "sched_process_exit"] } else { &[] };
        for &tp in SOCKET_TRACEPOINTS.iter().chain(follow) {
            let prog: &mut BtfTracePoint = ebpf
                .program_mut(tp)
                .with_context(|| format!("program {tp} missing from the object"))?
                .try_into()?;
            prog.load(tp, &aya_btf)
                .with_context(|| format!("loading BTF tracepoint {tp} (needs kernel 5.5+ with BTF)"))?;
            if !attach {
                continue;
            }
            prog.attach()
                .with_context(|| format!("attaching BTF tracepoint {tp}: this kernel may lack it"))?;
            attached.push(format!("tp_btf/{tp}"));
        }
        for name in ["sys_exit_receive", "sys_exit_getsockopt", "sys_exit_connect", "sys_exit_other"] {
            let prog: &mut TracePoint = ebpf.program_mut(name).context(name)?.try_into()?;
            prog.load().with_context(|| format!("loading {name}"))?;
        }
        for s in Syscall::ALL.into_iter().filter(|_| attach) {
            for (prog_name, tp) in [(exit_program(s), format!("sys_exit_{}", s.name()))] {
                let prog: &mut TracePoint = ebpf.program_mut(prog_name).context(prog_name)?.try_into()?;
                prog.attach("syscalls", &tp).with_context(|| {
                    format!("attaching tracepoint syscalls:{tp} (needs CONFIG_FTRACE_SYSCALLS)")
                })?;
            }
        }
        attached.push(format!("tracepoint/syscalls:sys_exit_* ({} calls)", Syscall::ALL.len()));

        let mode = match mode {
            ProbeMode::Auto => ProbeMode::Tracepoint,
            m => m,
        };
        Ok(Probes { ebpf, mode, attached })
    }

    /// Loads every program through the verifier without attaching any: the real test of
    /// whether socktrace can run on this kernel. Returns how many programs were accepted.
    pub fn verify_load() -> Result<usize> {
        let probes = Self::load(ProbeMode::Auto, &ProbeOptions::default(), &Selection::default(), false)?;
        Ok(probes.ebpf.programs().count())
    }

    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            ProbeMode::Auto | ProbeMode::Tracepoint => "tracepoint",
        }
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
