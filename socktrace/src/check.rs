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
    println!("kernel {} ({})", crate::kernel::version::kernel_release(), std::env::consts::ARCH);
    privileges_section(&mut r);
    let (btf, tracefs) = kernel_features(&mut r);
    let resolved = layouts(&mut r, &btf, &tracefs);
    let kprobes = probe_types(&mut r, mode, &tracefs);
    if let (Ok(btf), Ok(tracefs), Some(resolved)) = (&btf, &tracefs, &resolved) {
        kernel_events(&mut r, &KernelView { btf, tracefs, resolved, kprobes });
    }
    println!("probe mode {}:", mode.name());
    if !r.failed {
        probe_mode(&mut r, mode);
    }
    if r.failed {
        println!("socktrace cannot run here in probe mode {}: see MISSING above", mode.name());
        Ok(1)
    } else {
        println!("socktrace can run here");
        Ok(0)
    }
}

fn privileges_section(r: &mut Report) {
    println!("privileges:");
    match privileges::missing() {
        None => r.line(true, true, "CAP_BPF + CAP_PERFMON or CAP_SYS_ADMIN", "effective"),
        Some(m) => {
            r.line(false, true, "CAP_BPF + CAP_PERFMON or CAP_SYS_ADMIN", &format!("missing {m}: run as root (sudo)"))
        }
    }
}

/// The ring buffer, BTF, tracefs and the syscall exit hook: what every mode needs.
fn kernel_features(r: &mut Report) -> (Result<KernelBtf>, Result<std::path::PathBuf>) {
    let (major, minor) = kernel_version();
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
    (btf, tracefs)
}

/// The struct and record layouts the programs read.
fn layouts(r: &mut Report, btf: &Result<KernelBtf>, tracefs: &Result<std::path::PathBuf>) -> Option<offsets::Resolved> {
    let (Ok(btf), Ok(tracefs)) = (btf, tracefs) else { return None };
    match offsets::resolve(btf, tracefs) {
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
    }
}

/// Which probe types this kernel takes; whether kprobes are among them.
fn probe_types(r: &mut Report, mode: ProbeMode, tracefs: &Result<std::path::PathBuf>) -> bool {
    let kprobes = survey::kprobes_available(tracefs.as_deref().ok());
    println!("probe types:");
    r.line(true, false, "tp_btf (BTF tracepoints)", "with BTF, 5.5+");
    r.line(true, false, "tracepoint (classic + raw)", "record layouts from the format files");
    r.line(kprobes, mode == ProbeMode::Kprobe, "kprobe", if kprobes { "available" } else { survey::NO_KPROBES });
    kprobes
}

/// Every kernel event with every probe that could serve it, and why each cannot.
fn kernel_events(r: &mut Report, kernel: &KernelView) {
    println!("kernel events, by probe type:");
    for survey::EventSurvey { event, probes: options } in survey::survey(kernel) {
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

/// What the mode picks, loaded for real (the verifier's say), with what it passed over.
fn probe_mode(r: &mut Report, mode: ProbeMode) {
    let p = match Probes::verify(mode) {
        Ok(p) => p,
        Err(e) => return r.line(false, true, "programs load (verifier)", &format!("{e:#}")),
    };
    let passed_over = |why: &str| println!("  {:<8} {:<34} passed over {why}", "", "");
    for c in &p.choices {
        r.line(true, true, c.event, &c.probes());
        c.passed_over.iter().for_each(|w| passed_over(w));
    }
    r.line(true, true, "failing calls", &p.syscall_hook.probe());
    p.syscall_hook.passed_over.iter().for_each(|w| passed_over(w));
    match &p.io_uring {
        Ok(door) => {
            r.line(true, false, "failing io_uring requests", door.probe());
            door.passed_over.iter().for_each(|w| passed_over(w));
        }
        Err(why) => r.line(false, false, "failing io_uring requests", &format!("not watched: {why}")),
    }
    let optional =
        [("ICMP error senders", &p.icmp), ("RST segments received", &p.rst_segment), ("packets dropped", &p.drops)];
    for (what, probe) in optional {
        match probe {
            Ok(probe) => r.line(true, false, what, probe),
            Err(why) => r.line(false, false, what, &format!("not recorded: {why}")),
        }
    }
    r.line(true, true, "programs load (verifier)", &format!("{} programs accepted", p.programs_loaded()));
}
