//! `socktrace check`: what this kernel offers, which probes socktrace would use and why, and
//! whether it can run here at all (exit status 1 when it cannot).

use crate::kernel::{
    btf::KernelBtf,
    load::Probes,
    offsets, privileges,
    probes::ProbeMode,
    survey::{self, KernelView},
    tracefs,
    version::kernel_version,
};
use anyhow::Result;

struct Report {
    failed: bool,
}

impl Report {
    fn line(&mut self, ok: bool, required: bool, what: &str, detail: &str) {
        let mark = if ok {
            "ok"
        } else if required {
            "MISSING"
        } else {
            "absent"
        };
        println!("  {mark:<8} {what:<34} {detail}");
        if !ok && required {
            self.failed = true;
        }
    }
}

pub fn run(mode: ProbeMode) -> Result<i32> {
    let mut r = Report { failed: false };
    let (major, minor) = kernel_version();
    println!("kernel {} ({})", crate::kernel::version::kernel_release(), std::env::consts::ARCH);

    println!("privileges:");
    match privileges::missing() {
        None => r.line(true, true, "CAP_BPF + CAP_PERFMON or CAP_SYS_ADMIN", "effective"),
        Some(m) => {
            r.line(false, true, "CAP_BPF + CAP_PERFMON or CAP_SYS_ADMIN", &format!("missing {m}: run as root (sudo)"))
        }
    }

    println!("kernel features:");
    r.line((major, minor) >= (5, 8), true, "BPF ring buffer (5.8+)", &format!("kernel {major}.{minor}"));
    let btf = KernelBtf::load();
    r.line(
        btf.is_ok(),
        true,
        "BTF (/sys/kernel/btf/vmlinux)",
        &btf.as_ref().err().map(|e| e.to_string()).unwrap_or_default(),
    );
    let tracefs = tracefs::ensure_mounted();
    let tracefs_detail = match &tracefs {
        Ok(p) => p.display().to_string(),
        Err(e) => e.to_string(),
    };
    r.line(tracefs.is_ok(), true, "tracefs", &tracefs_detail);
    if let Ok(tracefs) = &tracefs {
        println!("failing calls (every mode):");
        let present = tracefs.join("events/raw_syscalls/sys_exit").is_dir();
        let detail = if present {
            "the syscall exit hook (one program, no trace record)".to_string()
        } else {
            "missing: the kernel has no syscall tracepoints (CONFIG_FTRACE_SYSCALLS)".into()
        };
        r.line(present, true, "raw_syscalls:sys_exit", &detail);
    }
    let resolved = match (&btf, &tracefs) {
        (Ok(btf), Ok(tracefs)) => match offsets::resolve(btf, tracefs) {
            Ok(resolved) => {
                r.line(
                    true,
                    true,
                    "struct and record layouts",
                    "task, file, socket, sock, pt_regs and tracepoint record fields found",
                );
                Some(resolved)
            }
            Err(e) => {
                r.line(false, true, "struct and record layouts", &format!("{e:#}"));
                None
            }
        },
        _ => None,
    };
    let kprobes = survey::kprobes_available(tracefs.as_deref().ok());
    println!("probe types:");
    r.line(true, false, "tp_btf (BTF tracepoints)", "with BTF, 5.5+");
    r.line(true, false, "tracepoint (classic + raw)", "record layouts from the format files");
    r.line(kprobes, mode == ProbeMode::Kprobe, "kprobe", if kprobes { "available" } else { survey::NO_KPROBES });
    if let (Ok(btf), Ok(tracefs), Some(resolved)) = (&btf, &tracefs, &resolved) {
        println!("kernel events, by probe type:");
        let kernel = KernelView { btf, tracefs, resolved, kprobes };
        for survey::EventSurvey { event, probes: options } in survey::survey(&kernel) {
            let summary: Vec<String> = options
                .iter()
                .map(|(p, why)| match why {
                    None => format!("{p} ok"),
                    Some(why) if why == survey::NO_KPROBES => format!("{p} absent (no kprobes)"),
                    Some(why) => format!("{p} absent ({why})"),
                })
                .collect();
            let usable = options.iter().any(|(_, why)| why.is_none());
            r.line(usable, !event.follow_only, event.name, &summary.join("; "));
        }
    }
    println!("probe mode {}:", mode.name());
    if !r.failed {
        match Probes::verify(mode) {
            Ok(p) => {
                for c in &p.choices {
                    r.line(true, true, c.event, &c.probes());
                    for why in &c.passed_over {
                        println!("  {:<8} {:<34} passed over {why}", "", "");
                    }
                }
                r.line(true, true, "failing calls", &p.syscall_hook.probe());
                for why in &p.syscall_hook.passed_over {
                    println!("  {:<8} {:<34} passed over {why}", "", "");
                }
                match &p.io_uring {
                    Ok(door) => {
                        r.line(true, false, "failing io_uring requests", door.probe());
                        for why in &door.passed_over {
                            println!("  {:<8} {:<34} passed over {why}", "", "");
                        }
                    }
                    Err(why) => r.line(false, false, "failing io_uring requests", &format!("not watched: {why}")),
                }
                match &p.icmp {
                    Ok(probe) => r.line(true, false, "ICMP error senders", probe),
                    Err(why) => r.line(false, false, "ICMP error senders", &format!("not recorded: {why}")),
                }
                match &p.rst_segment {
                    Ok(probe) => r.line(true, false, "RST segments received", probe),
                    Err(why) => r.line(false, false, "RST segments received", &format!("not recorded: {why}")),
                }
                match &p.drops {
                    Ok(probe) => r.line(true, false, "packets dropped", probe),
                    Err(why) => r.line(false, false, "packets dropped", &format!("not recorded: {why}")),
                }
                r.line(true, true, "programs load (verifier)", &format!("{} programs accepted", p.programs_loaded()));
            }
            Err(e) => r.line(false, true, "programs load (verifier)", &format!("{e:#}")),
        }
    }
    if r.failed {
        println!("socktrace cannot run here in probe mode {}: see MISSING above", mode.name());
        Ok(1)
    } else {
        println!("socktrace can run here");
        Ok(0)
    }
}
