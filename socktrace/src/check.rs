//! `socktrace check`: what this kernel offers, which probes socktrace would use and why, and
//! whether it can run here at all (exit status 1 when it cannot).

use crate::kernel::{btf::KernelBtf, privileges, probes, tracefs};
use crate::model::Syscall;
use anyhow::Result;
use std::path::Path;

struct Report {
    failed: bool,
}

impl Report {
    fn line(&mut self, ok: bool, required: bool, what: &str, detail: &str) {
        let mark = if ok { "ok" } else if required { "MISSING" } else { "absent" };
        println!("  {mark:<8} {what:<34} {detail}");
        if !ok && required {
            self.failed = true;
        }
    }
}

pub fn run(mode: probes::ProbeMode) -> Result<i32> {
    let mut r = Report { failed: false };
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let (major, minor) = probes::kernel_version();
    println!("kernel {} ({})", release.trim(), std::env::consts::ARCH);

    println!("privileges:");
    match privileges::missing() {
        None => r.line(true, true, "CAP_BPF + CAP_PERFMON or CAP_SYS_ADMIN", "effective"),
        Some(m) => r.line(false, true, "CAP_BPF + CAP_PERFMON or CAP_SYS_ADMIN", &format!("missing {m}: run as root (sudo)")),
    }

    println!("kernel features:");
    r.line((major, minor) >= (5, 8), true, "BPF ring buffer (5.8+)", &format!("kernel {major}.{minor}"));
    let btf = KernelBtf::load();
    r.line(btf.is_ok(), true, "BTF (/sys/kernel/btf/vmlinux)", &btf.as_ref().err().map(|e| e.to_string()).unwrap_or_default());
    let tracefs = tracefs::ensure_mounted();
    r.line(tracefs.is_ok(), true, "tracefs", &match &tracefs {
        Ok(p) => p.display().to_string(),
        Err(e) => e.to_string(),
    });
    if let Ok(btf) = &btf {
        match btf.kernel_offsets() {
            Ok(_) => r.line(true, true, "struct layouts from BTF", "task, file, socket, sock fields found"),
            Err(e) => r.line(false, true, "struct layouts from BTF", &e.to_string()),
        }
        println!("TCP/socket events (BTF tracepoints, tp_btf):");
        for tp in probes::SOCKET_TRACEPOINTS.iter().chain(&["sched_process_fork", "sched_process_exit"]) {
            let arity = btf.tracepoint_arity(tp);
            r.line(arity.is_some(), true, tp, &arity.map(|n| format!("{n} arguments")).unwrap_or_else(|| "not in this kernel".into()));
        }
    }
    if let Ok(tracefs) = &tracefs {
        println!("syscall tracepoints:");
        let missing: Vec<String> = Syscall::ALL
            .iter()
            .map(|s| format!("sys_exit_{}", s.name()))
            .filter(|tp| !tracefs.join("events/syscalls").join(tp).is_dir())
            .collect();
        r.line(missing.is_empty(), true, &format!("syscalls:sys_exit_* ({} calls)", Syscall::ALL.len()),
            &if missing.is_empty() { "all present".into() } else { format!("missing: {}", missing.join(", ")) });
    }
    println!("other probe types (not needed in tracepoint mode):");
    let kprobes = Path::new("/sys/bus/event_source/devices/kprobe").exists();
    r.line(kprobes, false, "kprobes", if kprobes { "available" } else { "CONFIG_KPROBES is off" });
    r.line(false, false, "fentry/fexit", "not used by socktrace");

    println!("probe mode:");
    println!("  {:?} -> tracepoint: syscall tracepoints for the failing calls, BTF tracepoints for TCP state, resets, errors and retransmissions (exact socket pointers, no kprobes needed)", mode);
    if !r.failed {
        match probes::Probes::verify_load() {
            Ok(n) => r.line(true, true, "programs load (verifier)", &format!("{n} programs accepted")),
            Err(e) => r.line(false, true, "programs load (verifier)", &format!("{e:#}")),
        }
    }
    if r.failed {
        println!("socktrace cannot run here: see MISSING above");
        Ok(1)
    } else {
        println!("socktrace can run here");
        Ok(0)
    }
}
