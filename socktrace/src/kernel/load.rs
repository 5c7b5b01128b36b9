//! Loading and attaching: the eBPF object goes into the kernel with this kernel's offsets and
//! the selection, one probe per kernel event is chosen (see `probes`) and attached, and the
//! maps userspace reads are taken, typed, once.

use super::object::{histories_preallocated, object_for_this_kernel, ring_buffer_bytes, EBPF_OBJECT};
use super::{
    btf::KernelBtf,
    config::{traced_config, KernelFacts, ProbeOptions, Selection},
    offsets,
    probes::{disabled_by_env, Choice, Probe, ProbeMode, DISABLE_PROBES_ENV, KERNEL_EVENTS},
    survey::{kprobes_available, unavailable, KernelView, NO_KPROBES},
    tracefs,
    version::kernel_version,
};
use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, FEntry, KProbe, RawTracePoint, TracePoint},
    Ebpf, EbpfLoader,
};
use socktrace_common::{history_stats, names, routine, traced_tgid};

/// Distinct kernel stacks kept with `--kstack` (about 1 KiB of kernel memory each).
const KSTACK_ENTRIES: u32 = 8192;

/// The loaded programs with their links and maps (dropping this detaches everything).
pub struct Probes {
    /// The programs and their links: never read, held so that dropping `Probes` detaches.
    _ebpf: Ebpf,
    pub mode: ProbeMode,
    /// The probe behind each kernel event, in attach order.
    pub choices: Vec<Choice>,
    /// The hook failing io_uring requests come from, or why they are not watched.
    pub io_uring: std::result::Result<IoUringDoor, String>,
    /// The probes that see ICMP errors arrive (who sent them), or why none could be attached.
    pub icmp: std::result::Result<&'static str, String>,
    /// The probe that sees the RST segments sockets receive, or why none could be attached.
    pub rst_segment: std::result::Result<&'static str, String>,
    /// The probe that sees packets this host drops, or why it could not be attached.
    pub drops: std::result::Result<&'static str, String>,
    /// The hook the failing calls come from.
    pub syscall_hook: SyscallHook,
    /// The key of the hashes that place and check sent RSTs (`TracedConfig::hash_seed`): the
    /// decoder needs it to check a `peer_reset` (`event::decode`).
    pub hash_seed: u64,
    /// The kernel's tick rate, measured at load (None: /proc/timer_list could not tell).
    pub kernel_hz: Option<u32>,
    /// The kernel's RST reason (6.10+) and drop reason (5.17+) names, value -> name (the session
    /// takes them).
    pub rst_reasons: Vec<(u32, String)>,
    pub drop_reasons: Vec<(u32, String)>,
    events: Option<RingBuf<MapData>>,
    lost: PerCpuArray<MapData, u64>,
    routine: PerCpuArray<MapData, u64>,
    history_stats: PerCpuArray<MapData, u64>,
    /// The history map's size as loaded (`--max-histories`, or sized from the host).
    max_histories: u32,
    /// Packets dropped on this host, by 4-tuple (`drops.rs`), when the drop probe runs.
    drop_records: Option<HashMap<MapData, socktrace_common::SockAddrs, socktrace_common::DropRecord>>,
    /// The last established connect of each traced process to each port (`CONNECTED`).
    connected: HashMap<MapData, socktrace_common::ConnectKey, socktrace_common::ConnectedTo>,
    /// Bare SYNs no socket owned, by their source (`REFUSED_SYNS`).
    refused_syns: super::mapped::MappedArray<socktrace_common::RefusedSyn>,
    /// The kernel stacks (`--kstack` only).
    stacks: Option<aya::maps::StackTraceMap<MapData>>,
    traced: HashMap<MapData, u32, u8>,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    /// The attached programs that record kernel events, by event: whose skipped runs
    /// (`prog_stats`) are events socktrace did not see.
    recorders: Vec<(&'static str, aya::programs::ProgramFd)>,
}

/// Gives the heap's free pages back to the system: the BTF parses are tens of MiB, freed in
/// small pieces that malloc would otherwise keep.
pub fn release_free_heap() {
    // SAFETY: malloc_trim only releases free heap pages.
    unsafe { libc::malloc_trim(0) };
}

/// The programs that record kernel events, each with the event it serves: the probe modes'
/// choices, the failing-call program and the drop program.
fn recorders(
    ebpf: &Ebpf,
    choices: &[Choice],
    syscall_hook: &SyscallHook,
    io_uring: Option<&IoUringDoor>,
    drops: bool,
) -> Vec<(&'static str, aya::programs::ProgramFd)> {
    let mut programs: Vec<(&'static str, String)> = choices
        .iter()
        .flat_map(|c| [Some(c.probe), c.companion].into_iter().flatten().map(move |p| (c.event, p)))
        .filter_map(|(event, p)| Some((event, p.program()?)))
        .collect();
    programs.push(("failing call", syscall_hook.program.to_string()));
    if let Some(door) = io_uring {
        programs.push(("failing io_uring request", door.programs[1].to_string()));
    }
    if drops {
        programs.push(("packet dropped", names::KFREE_SKB.to_string()));
    }
    programs
        .into_iter()
        .filter_map(|(event, name)| Some((event, ebpf.program(&name)?.fd().ok()?.try_clone().ok()?)))
        .collect()
}

/// Takes a map out of the object, typed; a missing or mistyped map is a build error, said so.
fn take_map<T>(ebpf: &mut Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).with_context(|| format!("map {name} is missing from socktrace's eBPF object"))?;
    T::try_from(map).with_context(|| format!("map {name} in socktrace's eBPF object has an unexpected type"))
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
        if EBPF_OBJECT.is_empty() {
            bail!(
                "this socktrace was built without its eBPF programs (bpf-linker was missing at build \
                 time): run `./x setup`, then `./x build --release`"
            );
        }
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
        let resolved = offsets::resolve(&btf, &tracefs)?;
        let facts = KernelFacts::of(&btf, &resolved.offsets);
        if sel.cgroup.is_some() && facts.cgroup_walk {
            let o = &resolved.offsets;
            let needed = [o.task_cgroups, o.css_set_dfl_cgrp, o.cgroup_level, o.cgroup_ancestors, o.cgroup_kn];
            if needed.contains(&socktrace_common::NO_FIELD) {
                bail!(
                    "--cgroup on this kernel (before 5.14) walks task -> css_set -> cgroup, and this kernel's \
                     BTF lacks one of those fields; select by -p or -c instead"
                );
            }
        }
        // The history map's size, from the host's sockets unless given; preallocated where
        // the kernel requires it of tracing programs (the bound is smaller there: it is all
        // memory at once).
        let preallocate = histories_preallocated(super::version::kernel_version());
        let opts =
            &ProbeOptions { max_histories: Some(super::config::history_map_size(opts, preallocate)), ..opts.clone() };
        let config = traced_config(sel, opts, &facts);
        let log_level: u8 = opts.log_level.map(|l| l as u8).unwrap_or(0);
        raise_memlock_limit();
        // Memory: btf-rs's view has answered what it is asked for (offsets, facts) and goes
        // now; the loader parses the kernel's BTF itself (for its relocations; ~19 MiB on a
        // 6.x kernel) and frees it when done; the copy the BTF-typed programs are loaded with
        // (and the probe choice asks) is parsed only after that, from a mapping of the file,
        // and freed before the ring buffer is mapped (its pages count as resident at once):
        // socktrace's high-water mark is one parse, not three.
        drop(btf);
        release_free_heap();
        let mut ebpf = EbpfLoader::new()
            .override_global(names::OFFSETS, &resolved.offsets, true)
            .override_global(names::CONFIG, &config, true)
            .override_global(names::LOG_LEVEL, &log_level, true)
            .map_max_entries(names::STACKS, if opts.kstack { KSTACK_ENTRIES } else { 1 })
            .map_max_entries(names::SOCKETS, config.max_histories)
            .map_max_entries(names::EVENTS, ring_buffer_bytes())
            .load(&object_for_this_kernel(preallocate))
            .map_err(|e| anyhow!("loading socktrace's eBPF programs: {e}{}", hint_for_load_error()))?;
        // The loader's parse, just freed.
        release_free_heap();
        let aya_btf = super::btf::aya_kernel_btf()?;
        let mut traced: HashMap<MapData, u32, u8> = take_map(&mut ebpf, names::TRACED_TGIDS)?;
        for &tgid in &sel.tgids {
            traced.insert(tgid, traced_tgid::TRACED, 0).context("adding the PID to the filter")?;
        }
        let kernel = KernelView { btf: &aya_btf, tracefs: &tracefs, resolved: &resolved, kprobes };
        let choices = choose_and_attach(&mut ebpf, &kernel, mode, sel, &aya_btf, attach)?;
        let io_uring = attach_io_uring(&mut ebpf, &resolved, mode, &aya_btf, attach).map_err(|e| format!("{e:#}"));
        let icmp = attach_icmp(&mut ebpf, &aya_btf, kprobes, attach);
        let rst_segment = attach_rst_segment(&mut ebpf, facts.tcp_reset_arity, &aya_btf, kprobes, attach);
        let drops = attach_drops(&mut ebpf, facts.kfree_skb_tracepoint, attach);
        let syscall_hook = attach_syscalls(&mut ebpf, &kernel, mode, &aya_btf, attach)?;
        if attach {
            // The fd walk's fast path, learned from sockets of our own now that the exit
            // program sees our calls.
            super::adopt::teach_socket_ops();
        }
        let recorders = if attach {
            recorders(&ebpf, &choices, &syscall_hook, io_uring.as_ref().ok(), drops.is_ok())
        } else {
            Vec::new()
        };
        // Taken only now: a map whose fd closes before the programs using it are loaded
        // would make them fail to load.
        let logger = match opts.log_level {
            Some(_) => Some(aya_log::EbpfLogger::init(&mut ebpf).context("reading kernel-side logs")?),
            None => None,
        };
        drop(aya_btf);
        release_free_heap();
        Ok(Probes {
            mode,
            choices,
            io_uring,
            icmp,
            rst_segment,
            rst_reasons: facts.rst_reasons,
            drop_reasons: facts.drop_reasons,
            drop_records: if drops.is_ok() { Some(take_map(&mut ebpf, names::DROPS)?) } else { None },
            drops,
            syscall_hook,
            hash_seed: config.hash_seed,
            kernel_hz: facts.hz,
            // Mapped last (see the BTF note above).
            events: Some(take_map(&mut ebpf, names::EVENTS)?),
            lost: take_map(&mut ebpf, names::LOST_EVENTS)?,
            routine: take_map(&mut ebpf, names::ROUTINE_COUNTS)?,
            history_stats: take_map(&mut ebpf, names::HISTORY_STATS)?,
            max_histories: config.max_histories,
            connected: take_map(&mut ebpf, names::CONNECTED)?,
            refused_syns: super::mapped::MappedArray::of(
                ebpf.take_map(names::REFUSED_SYNS)
                    .context("map REFUSED_SYNS is missing from socktrace's eBPF object")?,
                socktrace_common::REFUSED_SYN_SLOTS,
            )?,
            stacks: if opts.kstack { Some(take_map(&mut ebpf, names::STACKS)?) } else { None },

            traced,
            logger,
            recorders,
            _ebpf: ebpf,
        })
    }

    /// Runs of the event-recording programs the kernel skipped since the attach, by event
    /// (only events with some): each one an event socktrace did not see (see `prog_stats`).
    pub fn missed_runs(&self) -> Vec<(&'static str, u64)> {
        let mut by_event: Vec<(&'static str, u64)> = Vec::new();
        for (event, fd) in &self.recorders {
            let Ok(counts) = super::prog_stats::of(std::os::fd::AsFd::as_fd(fd)) else { continue };
            if counts.missed == 0 {
                continue;
            }
            match by_event.iter_mut().find(|(e, _)| e == event) {
                Some((_, n)) => *n += counts.missed,
                None => by_event.push((event, counts.missed)),
            }
        }
        by_event
    }

    /// The probes in use, for the attach line: `tp_btf/inet_sock_set_state, …`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.choices.iter().map(Choice::probes).collect();
        parts.push(self.syscall_hook.probe());
        if let Ok(door) = &self.io_uring {
            parts.push(door.probe().into());
        }
        for extra in [&self.icmp, &self.rst_segment, &self.drops].into_iter().flatten() {
            parts.push(extra.to_string());
        }
        parts.join(", ")
    }

    /// The facts this kernel does not let socktrace record, each with why: failing io_uring
    /// requests, ICMP senders, RST segments, dropped packets.
    pub fn unseen(&self) -> Vec<(&'static str, String)> {
        let io_uring = self.io_uring.as_ref().err().map(|why| ("failing io_uring requests", why.clone()));
        [("ICMP senders", &self.icmp), ("RST segments", &self.rst_segment), ("dropped packets", &self.drops)]
            .into_iter()
            .filter_map(|(what, r)| r.as_ref().err().map(|why| (what, why.clone())))
            .chain(io_uring)
            .collect()
    }

    /// One line per event where a better probe was passed over: what, and why.
    pub fn fallbacks(&self) -> Vec<String> {
        let hook = &self.syscall_hook;
        let io_uring =
            self.io_uring.as_ref().ok().map(|d| ("failing io_uring request", d.probe().into(), &d.passed_over));
        self.choices
            .iter()
            .map(|c| (c.event, c.probe.to_string(), &c.passed_over))
            .chain(std::iter::once(("failing call", hook.probe(), &hook.passed_over)))
            .chain(io_uring)
            .filter(|(_, _, passed_over)| !passed_over.is_empty())
            .map(|(event, probe, passed_over)| {
                let why: Vec<&str> = passed_over.iter().map(|p| crate::text::first_line(p)).collect();
                format!("{event}: using {probe} ({})", why.join("; "))
            })
            .collect()
    }

    /// Programs loaded (each passed the verifier).
    pub fn programs_loaded(&self) -> usize {
        self.choices.len()
            + 1
            + if self.io_uring.is_ok() { 2 } else { 0 }
            + if self.icmp.is_ok() { 2 } else { 0 }
            + usize::from(self.rst_segment.is_ok())
            + usize::from(self.drops.is_ok())
    }

    /// Why errors reported on UDP sockets are not recorded here: the error report is derived
    /// from TCP's close on this kernel (no error-report probe in this mode), and UDP sockets
    /// do not close that way.
    pub fn udp_errors_unseen(&self) -> Option<String> {
        self.choices.iter().find(|c| c.probe == super::probes::ERROR_AT_CLOSE).map(|c| {
            let why = c.passed_over.first().map(|w| crate::text::first_line(w)).unwrap_or("no error-report probe");
            format!("this kernel's error reports are taken from TCP's close in probe mode {} ({why})", self.mode.name())
        })
    }

    /// The packets of the connection `local` <-> `remote` this host dropped: those `local`
    /// sent, then those sent to it (each when there were any). A dual-stack socket's IPv4 peer
    /// is looked up as the IPv4 packets carry it.
    pub fn packet_drops(
        &self,
        local: std::net::SocketAddr,
        remote: std::net::SocketAddr,
    ) -> Vec<(bool, socktrace_common::DropRecord)> {
        let Some(map) = &self.drop_records else { return Vec::new() };
        let key = |from: std::net::SocketAddr, to: std::net::SocketAddr| {
            let mut k = socktrace_common::SockAddrs { sport: from.port(), dport: to.port(), ..Default::default() };
            for (addr, out) in [(from.ip(), &mut k.saddr), (to.ip(), &mut k.daddr)] {
                match addr {
                    std::net::IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
                    std::net::IpAddr::V6(a) => *out = a.octets(),
                }
            }
            k.family = if local.is_ipv4() { socktrace_common::net::AF_INET } else { socktrace_common::net::AF_INET6 };
            k
        };
        [(true, key(local, remote)), (false, key(remote, local))]
            .into_iter()
            .filter_map(|(sent, k)| map.get(&k, 0).ok().map(|d| (sent, d)))
            .collect()
    }

    /// The last connect of process `tgid` to port `port` that was established: when, and its
    /// remote end as the kernel keeps it.
    pub fn connected(&self, tgid: u32, port: u16) -> Option<socktrace_common::ConnectedTo> {
        let key = socktrace_common::ConnectKey { tgid, port, _pad: 0 };
        self.connected.get(&key, 0).ok()
    }

    /// The last bare SYN sent from `from` that this host refused for want of a listener, if
    /// its slot still holds it whole: when, the address it reached (after any NAT), and its
    /// sequence number.
    pub fn refused_syn(&self, from: std::net::SocketAddr) -> Option<crate::facts::RefusedSyn> {
        let mut syn = socktrace_common::SockAddrs { sport: from.port(), ..Default::default() };
        match from.ip() {
            std::net::IpAddr::V4(a) => {
                syn.family = socktrace_common::net::AF_INET;
                syn.saddr[..4].copy_from_slice(&a.octets());
            }
            std::net::IpAddr::V6(a) => {
                syn.family = socktrace_common::net::AF_INET6;
                syn.saddr = a.octets();
            }
        }
        let r = self.refused_syns.get(socktrace_common::refused_syn_slot(self.hash_seed, &syn))?;
        let ours = r.syn.family == syn.family && r.syn.sport == syn.sport && r.syn.saddr == syn.saddr;
        if !ours || r.check != socktrace_common::refused_syn_check(self.hash_seed, &r.syn, r.ts_ns, r.seq) {
            return None;
        }
        Some(crate::facts::RefusedSyn { ts_ns: r.ts_ns, reached: crate::event::remote_endpoint(&r.syn)?, seq: r.seq })
    }

    /// The kernel stack `id` (`STACKS` id plus one, as events carry it): its code addresses,
    /// innermost first. The kernel keeps each distinct stack once, so ids repeat; a full map
    /// drops new ones (the event then has none).
    pub fn kernel_stack(&self, id: u32) -> Option<Vec<u64>> {
        let map = self.stacks.as_ref()?;
        let trace = map.get(&id.checked_sub(1)?, 0).ok()?;
        Some(trace.frames().iter().map(|f| f.ip).collect())
    }

    /// Failures the kernel could not send because the ring buffer was full.
    pub fn lost_events(&self) -> Result<u64> {
        Ok(self.lost.get(&0, 0).context("reading LOST_EVENTS")?.iter().sum())
    }

    /// Routine failures the kernel counted instead of sending: (kind, TCP state, count).
    pub fn routine_counts(&self) -> Result<Vec<(u32, u8, u64)>> {
        let mut out = Vec::new();
        for i in 0..routine::KINDS * routine::STATES {
            let n: u64 = self.routine.get(&i, 0).context("reading ROUTINE_COUNTS")?.iter().sum();
            if n > 0 {
                out.push((i / routine::STATES, (i % routine::STATES) as u8, n));
            }
        }
        Ok(out)
    }

    /// Whether the drop probe has counted any drop of a traced connection's packet since the
    /// attach (`history_stats::DROPS_RECORDED`): while not, `packet_drops` would find nothing
    /// for any failure before the read.
    pub fn drops_recorded(&self) -> bool {
        self.drop_records.is_some()
            && self
                .history_stats
                .get(&history_stats::DROPS_RECORDED, 0)
                // Unreadable: look, as before.
                .map_or(true, |per_cpu| per_cpu.iter().any(|&n| n != 0))
    }

    fn history_stat(&self, slot: u32) -> Result<u64> {
        Ok(self.history_stats.get(&slot, 0).context("reading HISTORY_STATS")?.iter().sum())
    }

    /// Socket histories the kernel holds now: created, less those removed as their sockets
    /// died (the map is never evicted from), counted in the kernel: no walk of the map.
    pub fn sockets_tracked(&self) -> u64 {
        let created = self.history_stat(history_stats::CREATED).unwrap_or(0);
        created.saturating_sub(self.history_stat(history_stats::DESTROYED).unwrap_or(0))
    }

    /// Sockets that got no history because the map was full (`--max-histories`).
    pub fn histories_refused(&self) -> Result<u64> {
        self.history_stat(history_stats::REFUSED)
    }

    /// The history map's size as loaded.
    pub fn max_histories(&self) -> u32 {
        self.max_histories
    }

    /// A map socktrace holds (the ring buffer, before the session takes it), to probe whether
    /// the bpf() syscall needs a capability here.
    pub fn a_map_fd(&self) -> Result<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd as _;
        Ok(self.events.as_ref().context("the ring buffer was already taken")?.as_fd())
    }

    /// Processes still selected by PID (they leave the set as they exit when following).
    /// Traced processes still running (an exited one stays in the filter until it is reaped).
    pub fn traced_processes(&self) -> usize {
        self.traced.iter().filter(|e| matches!(e, Ok((_, v)) if *v == traced_tgid::TRACED)).count()
    }

    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        self.events.take().context("the ring buffer was already taken")
    }

    /// The kernel-side logger, when logs were asked for (`--debug`).
    pub fn take_logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        self.logger.take()
    }
}

/// Loads and attaches only `stats_floor`, an empty program on the `sys_exit` hook, and holds it
/// until dropped: the benchmark's calibration of the kernel's BPF statistics.
pub fn stats_floor() -> Result<Ebpf> {
    if EBPF_OBJECT.is_empty() {
        bail!("this socktrace was built without its eBPF programs");
    }
    raise_memlock_limit();
    let mut ebpf = EbpfLoader::new().load(EBPF_OBJECT).map_err(|e| anyhow!("loading the eBPF object: {e}"))?;
    let prog: &mut RawTracePoint = ebpf.program_mut("stats_floor").context("program stats_floor")?.try_into()?;
    prog.load()?;
    prog.attach("sys_exit")?;
    Ok(ebpf)
}

/// For every kernel event (those of `-f` only when following), the first probe of `mode`'s
/// candidates that this kernel offers and that loads (and attaches, if asked), with the better
/// ones passed over and why. History first, so no state change between attach and the first
/// failure is missed.
fn choose_and_attach(
    ebpf: &mut Ebpf,
    kernel: &KernelView,
    mode: ProbeMode,
    sel: &Selection,
    aya_btf: &aya::Btf,
    attach: bool,
) -> Result<Vec<Choice>> {
    let mut choices = Vec::new();
    for ev in KERNEL_EVENTS.iter().filter(|e| sel.follow || !e.follow_only) {
        let mut passed_over = Vec::new();
        let mut chosen = None;
        for probe in ev.candidates(mode) {
            let why_not = if disabled_by_env(&probe.to_string()) {
                Some(format!("disabled by {DISABLE_PROBES_ENV}"))
            } else {
                unavailable(probe, kernel)
            };
            if let Some(why) = why_not {
                passed_over.push(format!("{probe}: {why}"));
                continue;
            }
            match load_probe(ebpf, probe, aya_btf, attach) {
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
                if mode == ProbeMode::Auto { "" } else { " (--probe-mode auto takes whichever probe this kernel has)" }
            );
        };
        let companion = match ev.companion {
            Some((with, companion)) if with == probe => {
                load_probe(ebpf, companion, aya_btf, attach)
                    .with_context(|| format!("{}: {companion}, which {probe} needs beside it", ev.name))?;
                Some(companion)
            }
            _ => None,
        };
        choices.push(Choice { event: ev.name, probe, companion, passed_over });
    }
    Ok(choices)
}

/// The io_uring door's hook: its programs (`io_uring_file_get`'s, then `io_uring_complete`'s),
/// BTF and raw tracepoints or classic ones, and why the first were passed over.
#[derive(Clone, Debug)]
pub struct IoUringDoor {
    programs: [&'static str; 2],
    pub passed_over: Vec<String>,
}

impl IoUringDoor {
    /// The classic tracepoints' programs, the fallback.
    const CLASSIC: [&'static str; 2] = [names::IO_URING_FILE_GET, names::IO_URING_COMPLETE];

    /// The probes, as the attach line names them.
    pub fn probe(&self) -> &'static str {
        super::probes::io_uring_probes(self.programs != Self::CLASSIC)
    }
}

/// The io_uring door: `io_uring_file_get` and `io_uring_complete`, where this kernel's events
/// carry the request. As a raw and a BTF tracepoint where the probe mode allows (auto, tp_btf)
/// and their argument layout is known: no trace record is built for every request of the
/// host, which the classic tracepoints (the fallback) cost every process using io_uring. An
/// error says why the door stays unwatched; socktrace runs without it and says so.
fn attach_io_uring(
    ebpf: &mut Ebpf,
    resolved: &offsets::Resolved,
    mode: ProbeMode,
    btf: &aya::Btf,
    attach: bool,
) -> Result<IoUringDoor> {
    if let Some(why) = &resolved.io_uring_problem {
        bail!("{why}");
    }
    if std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").is_ok_and(|v| v.trim() == "2") {
        bail!("io_uring is disabled on this host (kernel.io_uring_disabled = 2): no process can use it");
    }
    let mut passed_over = Vec::new();
    if matches!(mode, ProbeMode::Auto | ProbeMode::TpBtf) {
        let typed = |ebpf: &mut Ebpf| -> Result<IoUringDoor> {
            if disabled_by_env("tp_btf/io_uring_complete") {
                bail!("disabled by {DISABLE_PROBES_ENV}");
            }
            let programs = resolved.io_uring_btf.clone().map_err(|why| anyhow!(why))?;
            let [file_get, complete] = programs;
            // Both loaded before either is attached, and the first detached if the second
            // cannot be: a fallback must not leave a program of this pair running beside the
            // classic ones (each request would be recorded twice).
            let raw: &mut RawTracePoint = ebpf_program(ebpf, file_get)?.try_into()?;
            raw.load().with_context(|| format!("the kernel refused {file_get}"))?;
            let typed: &mut BtfTracePoint = ebpf_program(ebpf, complete)?.try_into()?;
            typed.load("io_uring_complete", btf).with_context(|| format!("the kernel refused {complete}"))?;
            if attach {
                let raw: &mut RawTracePoint = ebpf_program(ebpf, file_get)?.try_into()?;
                let link = raw.attach("io_uring_file_get").context("attaching raw_tracepoint/io_uring_file_get")?;
                let typed: &mut BtfTracePoint = ebpf_program(ebpf, complete)?.try_into()?;
                if let Err(e) = typed.attach() {
                    let raw: &mut RawTracePoint = ebpf_program(ebpf, file_get)?.try_into()?;
                    let _ = raw.detach(link);
                    return Err(e).context("attaching tp_btf/io_uring_complete");
                }
            }
            Ok(IoUringDoor { programs, passed_over: Vec::new() })
        };
        match typed(ebpf) {
            Ok(door) => return Ok(door),
            Err(e) => passed_over.push(format!("tp_btf/io_uring_complete: {e:#}")),
        }
    }
    let door = IoUringDoor { programs: IoUringDoor::CLASSIC, passed_over };
    for (program, tracepoint) in door.programs.into_iter().zip(["io_uring_file_get", "io_uring_complete"]) {
        let p: &mut TracePoint = ebpf_program(ebpf, program)?.try_into()?;
        p.load().with_context(|| format!("the kernel refused {program}"))?;
        if attach {
            p.attach("io_uring", tracepoint).with_context(|| format!("attaching io_uring:{tracepoint}"))?;
        }
    }
    Ok(door)
}

/// Who sent the ICMP errors this host receives: `icmp_rcv` and `icmpv6_rcv`, by fentry (BPF
/// trampolines, 5.5+ on x86_64) or else a kprobe. Not part of the probe modes: those choose
/// how the TCP events are seen; this is a fact beside them, and socktrace runs without it
/// (the ICMP error is then named without its sender), saying why.
fn attach_icmp(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    kprobes: bool,
    attach: bool,
) -> std::result::Result<&'static str, String> {
    const FUNCTIONS: [(&str, &str, &str); 2] =
        [("icmp_rcv", "icmp_rcv", "kp_icmp_rcv"), ("icmpv6_rcv", "icmpv6_rcv", "kp_icmpv6_rcv")];
    attach_fentry_or_kprobe(
        ebpf,
        btf,
        kprobes,
        attach,
        &FUNCTIONS,
        ("fentry/icmp_rcv+fentry/icmpv6_rcv", "kprobe/icmp_rcv+kprobe/icmpv6_rcv"),
    )
}

/// The facts beside the probe modes: each `(function, fentry program, kprobe program)` by
/// fentry (BPF trampolines), all of them, or else by kprobes; `names` is what each way is
/// reported as. `SOCKTRACE_DISABLE_PROBES=fentry/<first function>` makes fentry count as
/// missing. Why neither could be had, when neither could.
fn attach_fentry_or_kprobe(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    kprobes: bool,
    attach: bool,
    functions: &[(&str, &str, &str)],
    names: (&'static str, &'static str),
) -> std::result::Result<&'static str, String> {
    let first = functions.first().map(|f| f.0).unwrap_or("");
    let mut fentry = || -> Result<()> {
        if disabled_by_env(&format!("fentry/{first}")) {
            bail!("disabled by {DISABLE_PROBES_ENV}");
        }
        for &(function, program, _) in functions {
            let p: &mut FEntry = ebpf_program(ebpf, program)?.try_into()?;
            p.load(function, btf).with_context(|| format!("fentry/{function}: the kernel refused it"))?;
            if attach {
                p.attach().with_context(|| format!("attaching fentry/{function} (needs BPF trampolines)"))?;
            }
        }
        Ok(())
    };
    let fentry_error = match fentry() {
        Ok(()) => return Ok(names.0),
        Err(e) => format!("{e:#}"),
    };
    if !kprobes {
        return Err(format!("{fentry_error}; and {}", NO_KPROBES));
    }
    let mut kprobe = || -> Result<()> {
        for &(function, _, program) in functions {
            let p: &mut KProbe = ebpf_program(ebpf, program)?.try_into()?;
            p.load().with_context(|| format!("kprobe/{function}: the kernel refused it"))?;
            if attach {
                p.attach(function, 0).with_context(|| format!("attaching kprobe/{function}"))?;
            }
        }
        Ok(())
    };
    match kprobe() {
        Ok(()) => Ok(names.1),
        Err(e) => Err(format!("{fentry_error}; {e:#}")),
    }
}

/// The RST segments sockets receive: `tcp_reset(sk, skb)` (5.14+; before, it takes no
/// segment) by fentry, or else a kprobe. Beside the probe modes, like `attach_icmp`: without
/// it an RST's origin is told only where its sender is on this host.
fn attach_rst_segment(
    ebpf: &mut Ebpf,
    tcp_reset_arity: Option<usize>,
    btf: &aya::Btf,
    kprobes: bool,
    attach: bool,
) -> std::result::Result<&'static str, String> {
    const FUNCTION: &str = "tcp_reset";
    match tcp_reset_arity {
        Some(2) => {}
        Some(_) => return Err("tcp_reset takes no segment on this kernel (it does from 5.14)".into()),
        None => return Err("no function tcp_reset in this kernel's BTF".into()),
    }
    attach_fentry_or_kprobe(
        ebpf,
        btf,
        kprobes,
        attach,
        &[(FUNCTION, names::RST_SEGMENT, names::KP_RST_SEGMENT)],
        ("fentry/tcp_reset", "kprobe/tcp_reset"),
    )
}

/// Packets this host drops: the raw tracepoint `kfree_skb` (every kernel socktrace runs on;
/// the drop reason from 5.17). Beside the probe modes: without it a timeout is explained
/// without the drops behind it.
fn attach_drops(ebpf: &mut Ebpf, tracepoint_in_btf: bool, attach: bool) -> std::result::Result<&'static str, String> {
    let mut go = || -> Result<()> {
        if disabled_by_env("raw_tracepoint/kfree_skb") {
            bail!("disabled by {DISABLE_PROBES_ENV}");
        }
        if !tracepoint_in_btf {
            bail!("no tracepoint skb:kfree_skb in this kernel's BTF");
        }
        let p: &mut RawTracePoint = ebpf_program(ebpf, names::KFREE_SKB)?.try_into()?;
        p.load().context("raw_tracepoint/kfree_skb: the kernel refused it")?;
        if attach {
            p.attach("kfree_skb").context("attaching raw_tracepoint/kfree_skb")?;
        }
        Ok(())
    };
    match go() {
        Ok(()) => Ok("raw_tracepoint/kfree_skb"),
        Err(e) => Err(format!("{e:#}")),
    }
}

fn ebpf_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name).with_context(|| format!("program {name} missing from the object"))
}

/// The hook the failing calls come from: the program, and why the faster one was passed over.
#[derive(Clone, Debug)]
pub struct SyscallHook {
    pub program: &'static str,
    pub passed_over: Vec<String>,
}

impl SyscallHook {
    /// The probe, as the attach line names it.
    pub fn probe(&self) -> String {
        super::probes::syscall_probes(self.program == names::SYS_EXIT_BTF)
    }
}

/// Loads the one program that sees every failing call and attaches it to `sys_exit`: no trace
/// record is built, and it needs no per-syscall tracepoints. The BTF tracepoint (5.11+) where
/// the probe mode allows it (auto, tp_btf): its plain loads of the registers, the task and the
/// fd table cost a fraction of the raw tracepoint's probe reads (4.17+), the fallback.
fn attach_syscalls(
    ebpf: &mut Ebpf,
    kernel: &KernelView,
    mode: ProbeMode,
    btf: &aya::Btf,
    attach: bool,
) -> Result<SyscallHook> {
    let mut passed_over = Vec::new();
    if matches!(mode, ProbeMode::Auto | ProbeMode::TpBtf) {
        let problem = if disabled_by_env("tp_btf/sys_exit") {
            Some(format!("disabled by {DISABLE_PROBES_ENV}"))
        } else {
            super::survey::typed_sys_exit_problem(kernel.btf)
        };
        let typed = || -> Result<()> {
            if let Some(why) = problem {
                bail!(why);
            }
            let p: &mut BtfTracePoint = ebpf_program(ebpf, names::SYS_EXIT_BTF)?.try_into()?;
            p.load("sys_exit", btf).context("the kernel refused the program")?;
            if attach {
                p.attach().context("attaching")?;
            }
            Ok(())
        };
        match typed() {
            Ok(()) => return Ok(SyscallHook { program: names::SYS_EXIT_BTF, passed_over }),
            Err(e) => passed_over.push(format!("tp_btf/sys_exit: {e:#}")),
        }
    }
    let name = names::SYS_EXIT;
    let prog: &mut RawTracePoint = ebpf_program(ebpf, name)?.try_into()?;
    prog.load().with_context(|| format!("loading {name}"))?;
    if attach {
        prog.attach("sys_exit").context("attaching the raw tracepoint sys_exit (needs CONFIG_FTRACE_SYSCALLS)")?;
    }
    Ok(SyscallHook { program: name, passed_over })
}

/// Loads the program serving `probe` and, if asked, attaches it.
fn load_probe(ebpf: &mut Ebpf, probe: Probe, btf: &aya::Btf, attach: bool) -> Result<()> {
    let Some(program) = probe.program() else {
        // A derived event: the handler it comes from is told to record it.
        let mut runtime: aya::maps::Array<&mut MapData, u32> =
            aya::maps::Array::try_from(ebpf.map_mut(names::RUNTIME).context("map RUNTIME")?)?;
        runtime.set(socktrace_common::runtime::ERROR_AT_CLOSE, 1, 0).context("setting the derived error report")?;
        return Ok(());
    };
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
        Probe::Derived(_) => unreachable!("derived events have no program (handled above)"),
    }
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

    /// Every map and program name socktrace uses is in the embedded eBPF object (parsed, not
    /// loaded: no privilege needed), so a rename on either side fails here, not on a user's box.
    #[test]
    fn the_embedded_object_has_every_name_socktrace_uses() {
        let obj = aya_obj::Object::parse(EBPF_OBJECT).expect("the embedded eBPF object parses");
        for map in names::MAPS {
            assert!(
                obj.maps.contains_key(map),
                "map {map} missing; the object has {:?}",
                obj.maps.keys().collect::<Vec<_>>()
            );
        }
        let mut programs: Vec<String> =
            [names::SYS_EXIT, names::SYS_EXIT_BTF, "stats_floor", names::KFREE_SKB, names::RST_SEGMENT]
                .into_iter()
                .chain([names::KP_RST_SEGMENT, names::IO_URING_COMPLETE, names::IO_URING_FILE_GET])
                .chain([names::IO_URING_COMPLETE_CQE, names::IO_URING_COMPLETE_RES])
                .chain([names::IO_URING_FILE_GET_RAW])
                .map(String::from)
                .collect();
        for ev in &KERNEL_EVENTS {
            programs.extend(ev.all().filter_map(|p| p.program()));
        }
        for p in &programs {
            assert!(
                obj.programs.contains_key(p.as_str()),
                "program {p} missing; the object has {:?}",
                obj.programs.keys().collect::<Vec<_>>()
            );
        }
        // The read-only globals userspace overrides before load: their symbols are in the
        // object's string table, NUL-terminated.
        for global in [names::OFFSETS, names::CONFIG, names::LOG_LEVEL] {
            let sym = format!("\0{global}\0");
            assert!(
                EBPF_OBJECT.windows(sym.len()).any(|w| w == sym.as_bytes()),
                "global {global} missing from the object"
            );
        }
    }
}
