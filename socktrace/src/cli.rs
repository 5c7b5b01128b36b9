//! The command line: parsing, checking what the user asked for, and dispatching.

use crate::kernel::{privileges, probes::ProbeMode};
use crate::session::{Session, SessionOptions};
use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

/// Exit status when socktrace itself fails (bad arguments exit with clap's 2).
pub const EXIT_FAILURE: i32 = 1;

#[derive(Parser, Debug)]
#[command(
    name = "socktrace",
    version,
    about = "Explains every failing socket call of a process: the errno and the TCP cause",
    after_help = "Examples:\n  sudo socktrace -p 1234            explain failing connect/read/write/accept of PID 1234\n  sudo socktrace -p 1234 --json     one JSON object per failure\n  sudo socktrace demo               watch socktrace explain a refused connect"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Trace this process (every thread of it). Repeat for several processes.
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pids: Vec<i64>,

    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(clap::Args, Debug, Clone)]
pub struct OutputArgs {
    /// One JSON object per line (NDJSON) instead of text.
    #[arg(long)]
    pub json: bool,

    /// Also print routine outcomes: EAGAIN (would_block), EINTR (interrupted), EINPROGRESS.
    #[arg(long)]
    pub all_errors: bool,

    /// Also report reads that return 0 on a TCP socket (end of file after the peer's FIN).
    #[arg(long)]
    pub eof: bool,

    /// Also report failures on non-TCP sockets (UDP, unix), with errno and family only.
    #[arg(long)]
    pub all_sockets: bool,

    /// Which kernel probes to use.
    #[arg(long, value_enum, default_value = "auto")]
    pub probe_mode: ProbeMode,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start a small client whose connects are refused on loopback, and trace it.
    Demo {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// The demo's workload (run by `socktrace demo`; not for direct use).
    #[command(hide = true)]
    DemoClient,
}

pub fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Some(Command::Demo { output }) => crate::demo::run(output),
        Some(Command::DemoClient) => crate::demo::client(),
        None => {
            if cli.pids.is_empty() {
                bail!("nothing to trace: give -p PID (see --help), or try `socktrace demo`");
            }
            let pids = cli.pids.iter().map(|&p| validate_pid(p)).collect::<Result<Vec<_>>>()?;
            trace(pids, cli.output)
        }
    }
}

pub fn trace(pids: Vec<u32>, output: OutputArgs) -> Result<i32> {
    if let Some(missing) = privileges::missing() {
        bail!("socktrace needs {missing} to load its eBPF programs: run it as root, e.g. `sudo socktrace ...`");
    }
    let opts = SessionOptions {
        json: output.json,
        all_errors: output.all_errors,
        eof: output.eof,
        all_sockets: output.all_sockets,
        probe_mode: output.probe_mode,
    };
    let session = Session::attach(&pids, opts)?;
    session.run()
}

/// A PID the user typed, checked: positive, existing, and a user process.
pub fn validate_pid(pid: i64) -> Result<u32> {
    if pid <= 0 || pid > i32::MAX as i64 {
        bail!("invalid PID {pid}: PIDs are positive integers");
    }
    let pid = pid as u32;
    let proc = std::path::PathBuf::from(format!("/proc/{pid}"));
    if !proc.exists() {
        bail!("no such process: PID {pid} (is it running? in another PID namespace?)");
    }
    // Kernel threads have an empty cmdline and no memory map: they make no socket calls.
    let stat = std::fs::read_to_string(proc.join("stat")).unwrap_or_default();
    if let Some(flags) = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().nth(6)) {
        const PF_KTHREAD: u64 = 0x0020_0000;
        if flags.parse::<u64>().is_ok_and(|f| f & PF_KTHREAD != 0) {
            bail!("PID {pid} is a kernel thread: it makes no socket calls to trace");
        }
    }
    // Trace the process, also when given a thread id.
    let status = std::fs::read_to_string(proc.join("status")).unwrap_or_default();
    let tgid = status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(pid);
    Ok(tgid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_impossible_pids() {
        for bad in [0, -1, i64::MAX, 1 << 40] {
            let err = validate_pid(bad).unwrap_err().to_string();
            assert!(err.contains("invalid PID"), "{err}");
        }
    }

    #[test]
    fn accepts_this_process_and_rejects_kernel_threads() {
        assert_eq!(validate_pid(std::process::id() as i64).unwrap(), std::process::id());
        // PID 2 is kthreadd on Linux (in the initial PID namespace).
        if std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd") {
            assert!(validate_pid(2).unwrap_err().to_string().contains("kernel thread"));
        }
    }

    #[test]
    fn help_parses() {
        Cli::command_for_test();
    }

    impl Cli {
        fn command_for_test() {
            use clap::CommandFactory;
            Cli::command().debug_assert();
        }
    }
}
