//! The command line: parsing, checking what the user asked for, turning it into domain types
//! (`TraceRequest`), and dispatching. No orchestration lives here.
//!
//! Exit statuses: 0 done (or the traced command's own status), 1 socktrace could not run
//! (privileges, PID, kernel, output file), 2 bad arguments.

use crate::kernel::{config::Selection, probes::ProbeMode};
use crate::model::{errno, Cause};
use crate::orchestrate::TraceRequest;
use crate::render::ColorChoice;
use crate::session::SessionOptions;
use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};
use socktrace_common::TASK_COMM_MAX;
use std::path::{Path, PathBuf};

/// Exit status when socktrace itself fails (bad arguments exit with clap's 2).
pub const EXIT_FAILURE: i32 = 1;

const EXAMPLES: &str = "\
Examples:
  sudo socktrace -p 1234                 explain failing socket calls of PID 1234 (all threads)
  sudo socktrace -p 1234 --json          one JSON object per failure (NDJSON)
  sudo socktrace -- curl http://127.0.0.1:9/
                                         start a command and trace it from its first call
  sudo socktrace -f -- ./server          ... and the children it forks
  sudo socktrace -c nginx -e ECONNRESET,EPIPE
                                         every process named nginx, only these errnos
  sudo socktrace --cgroup /system.slice/foo.service --summary
                                         a container or service; counts only
  sudo socktrace --container 3f4e9c1a2b7d
                                         a container, by (the start of) its id
  sudo socktrace agent --metrics 127.0.0.1:9464
                                         every process, as counters for Prometheus
  socktrace report capture.ndjson -o report.html
                                         a JSON capture as one self-contained HTML page
  sudo socktrace check                   what this kernel supports
  sudo socktrace demo                    watch socktrace explain real failures

Exit status: 0 when done (with a command: the command's own status), 1 when socktrace cannot
run (privileges, PID, kernel features, output file), 2 for bad arguments.";

#[derive(Parser, Debug)]
#[command(
    name = "socktrace",
    version,
    about = "Explains every failing socket call of a process: the errno and the TCP cause",
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub select: SelectArgs,

    #[command(flatten)]
    pub output: OutputArgs,

    /// A command to start and trace (after `--`), as strace does.
    #[arg(last = true, value_name = "COMMAND")]
    pub command_line: Vec<String>,
}

#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Selection (all filtering happens in the kernel)")]
pub struct SelectArgs {
    /// Trace this process, every thread of it. Repeat for several.
    #[arg(short = 'p', long = "pid", value_name = "PID", allow_negative_numbers = true)]
    pub pids: Vec<String>,

    /// Also trace children forked by traced processes after attach.
    #[arg(short = 'f', long)]
    pub follow: bool,

    /// Only tasks with this name, or whose process has it (a thread's own name as in
    /// /proc/PID/task/TID/comm, or its process's as in /proc/PID/comm; 15 bytes at most):
    /// `-c java` traces every thread of a JVM.
    #[arg(short = 'c', long, value_name = "NAME")]
    pub comm: Option<String>,

    /// Only processes in this cgroup v2 (e.g. a container's), or below it.
    #[arg(long, value_name = "PATH", conflicts_with = "container")]
    pub cgroup: Option<PathBuf>,

    /// Only this container (docker, containerd, CRI-O, podman), by its id or the id's first
    /// characters: its cgroup, found under the cgroup2 mount.
    #[arg(long, value_name = "ID")]
    pub container: Option<String>,
}

#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Output")]
pub struct OutputArgs {
    /// One JSON object per line (NDJSON) instead of text.
    #[arg(long)]
    pub json: bool,

    /// Only these errnos, e.g. `-e ECONNRESET,EPIPE` (names or numbers).
    #[arg(short = 'e', long = "errno", value_name = "LIST", value_delimiter = ',')]
    pub errnos: Vec<String>,

    /// Only these causes, e.g. `--cause rst_received,timeout`.
    #[arg(long = "cause", value_name = "LIST", value_delimiter = ',', value_enum)]
    pub causes: Vec<Cause>,

    /// Also print routine outcomes: EAGAIN (would_block), EINTR (interrupted), EINPROGRESS.
    #[arg(long)]
    pub all_errors: bool,

    /// Also report reads that return 0 on a TCP socket (end of file after the peer's FIN).
    #[arg(long)]
    pub eof: bool,

    /// Also report failures on non-TCP sockets (UDP, unix), with errno and family only.
    #[arg(long)]
    pub all_sockets: bool,

    /// A connection the process ends after this long with nothing received since its last
    /// send is reported (abandoned_no_reply: the program's own read timeout); 0 turns it off.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub no_reply_after: std::time::Duration,

    /// At most this many socket histories in the kernel (each up to 512 bytes of kernel
    /// memory, allocated as sockets come). Default: twice the TCP sockets on this host at
    /// attach, at least 262144. A socket that finds the map full gets no history, and that
    /// is counted.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1024..))]
    pub max_histories: Option<u32>,

    /// Colour text output by cause: auto (when stdout is a terminal and NO_COLOR is unset).
    #[arg(long, value_enum, default_value = "auto", value_name = "WHEN")]
    pub color: ColorChoice,

    /// Wall-clock timestamps (UTC) instead of seconds since attach.
    #[arg(short = 't', long = "wall-clock")]
    pub wall_clock: bool,

    /// Write events and the summary to FILE instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Print only the summary (counts by errno, cause and state; top peers) at the end.
    #[arg(long)]
    pub summary: bool,

    /// Which kernel probes to use.
    #[arg(long, value_enum, default_value = "auto")]
    pub probe_mode: ProbeMode,

    /// Text: a second line under each failure with the evidence (RST segment, sender, drops,
    /// ICMP, timers) and, with --kstack, the kernel stacks.
    #[arg(short = 'v', long)]
    pub verbose: bool,

    /// Record the kernel stack at each event behind a failure (the RST's receive path, the
    /// timer that gave up, the drop site, the RST sent), symbolized from /proc/kallsyms: in
    /// JSON (`kstack`) and on the -v line. Off by default; costs nothing when off.
    #[arg(long)]
    pub kstack: bool,

    /// Show socktrace's kernel-side log (rare conditions: ring buffer full, history map full,
    /// unreadable records, unexpected transitions) on stderr. RUST_LOG refines it.
    #[arg(long)]
    pub debug: bool,
}

impl Default for OutputArgs {
    fn default() -> Self {
        OutputArgs {
            json: false,
            errnos: Vec::new(),
            causes: Vec::new(),
            all_errors: false,
            eof: false,
            all_sockets: false,
            no_reply_after: crate::session::DEFAULT_SILENCE,
            max_histories: None,
            color: ColorChoice::Auto,
            wall_clock: false,
            output: None,
            summary: false,
            probe_mode: ProbeMode::Auto,
            verbose: false,
            kstack: false,
            debug: false,
        }
    }
}

impl OutputArgs {
    /// The session options these flags ask for (errno names resolved).
    fn session(&self) -> Result<SessionOptions> {
        Ok(SessionOptions {
            json: self.json,
            all_errors: self.all_errors,
            eof: self.eof,
            all_sockets: self.all_sockets,
            probe_mode: self.probe_mode,
            errnos: self.errnos.iter().map(|e| parse_errno(e)).collect::<Result<Vec<_>>>()?,
            causes: self.causes.clone(),
            wall_clock: self.wall_clock,
            summary_only: self.summary,
            verbose: self.verbose,
            kstack: self.kstack,
            kernel_log: self.debug.then_some(aya_log::Level::Debug),
            agent: false,
            container_column: false,
            silence: self.no_reply_after,
            max_histories: self.max_histories,
        })
    }

    fn request(&self, selection: Selection, command: Vec<String>) -> Result<TraceRequest> {
        if self.debug {
            init_debug_log();
        }
        Ok(TraceRequest {
            selection,
            session: self.session()?,
            output: self.output.clone(),
            color: self.color,
            command,
            keep_privileges: false,
            metrics: None,
            otlp: None,
        })
    }
}

/// `--debug`: kernel-side records (and socktrace's own) at debug level on stderr, unless
/// RUST_LOG says otherwise.
fn init_debug_log() {
    let env = env_logger::Env::default().default_filter_or("debug");
    let _ = env_logger::Builder::from_env(env).format_timestamp_micros().target(env_logger::Target::Stderr).try_init();
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// What this kernel supports, and which probes socktrace would use. Exit 1 if it cannot run.
    Check {
        /// Which probe mode to check for.
        #[arg(long, value_enum, default_value = "auto")]
        probe_mode: ProbeMode,
    },
    /// Start a small client that makes the classic failures happen on loopback, and trace it.
    Demo {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Run as a node agent until stopped: every process (or the selection), as Prometheus
    /// counters (`--metrics`) and/or JSON events (`--json`, `-o`) for a log shipper.
    Agent {
        #[command(flatten)]
        select: SelectArgs,
        #[command(flatten)]
        output: OutputArgs,
        /// Serve Prometheus metrics on ADDR (e.g. 0.0.0.0:9464) at /metrics.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        /// Extra labels on the failure counter: `container` adds the container's runtime and
        /// id and the pod's UID (one series per container: bounded by what runs on the node).
        #[arg(long, value_name = "LIST", value_delimiter = ',', value_enum, requires = "metrics")]
        metrics_labels: Vec<crate::export::prometheus::MetricsLabel>,
        /// Send each failure as an OTLP log record, and the counters as OTLP metrics, to an
        /// OpenTelemetry Collector's OTLP/HTTP receiver (e.g. http://127.0.0.1:4318).
        #[arg(long, value_name = "URL")]
        otlp: Option<String>,
    },
    /// Turn a JSON capture into one self-contained HTML page, for an incident review.
    ///
    /// The capture is what `--json` writes (`-o FILE`), or the agent's. The page shows failures
    /// over time by cause, errno x cause x state, the top peers and processes, and each
    /// connection's timeline; it opens offline in any browser. Needs no privileges and no
    /// kernel support.
    Report {
        /// The capture (NDJSON), or `-` for standard input.
        #[arg(value_name = "CAPTURE")]
        capture: PathBuf,
        /// Where to write the page (default: the capture's name with .html; standard output
        /// for standard input; `-` for standard output).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// How many connections to draw as timelines when the page opens (the others are
        /// drawn when the search box finds them).
        #[arg(long, value_name = "N", default_value_t = 50)]
        timelines: usize,
    },
    /// The demo's workload (run by `socktrace demo`; not for direct use).
    #[command(hide = true)]
    DemoClient,
    /// An empty program on the sys_exit hook until SIGINT: calibrates the kernel's BPF
    /// statistics for `cargo xtask bench` (not for direct use).
    #[command(hide = true)]
    StatsFloor,
    /// Writes shell completions and the man page into DIR (used by `cargo xtask docs`).
    #[command(hide = true)]
    GenerateDocs { dir: PathBuf },
}

pub fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Some(Command::Check { probe_mode }) => crate::check::run(probe_mode),
        Some(Command::Demo { output }) => crate::demo::run(output.request(Selection::default(), Vec::new())?),
        Some(Command::DemoClient) => crate::demo::client(),
        Some(Command::Report { capture, output, timelines }) => {
            crate::report::run(crate::report::ReportRequest { capture, output, timelines })
        }
        Some(Command::Agent { select, output, metrics, metrics_labels, otlp }) => {
            if metrics.is_none() && otlp.is_none() && !output.json && output.output.is_none() {
                bail!(
                    "socktrace agent needs somewhere to send what it sees: --metrics ADDR, --otlp URL, --json, or -o FILE"
                );
            }
            let pids = select.pids.iter().map(|p| validate_pid(p)).collect::<Result<Vec<_>>>()?;
            let selection = selection(pids, &select)?;
            let mut req = output.request(selection, Vec::new())?;
            req.session.agent = true;
            // Events go to a JSON or file sink; without one, stdout gets only the summary
            // at the end (a service's stdout is its journal).
            if !output.json && output.output.is_none() {
                req.session.summary_only = true;
            }
            // An agent's text lines (with -o) come from any container on the node.
            req.session.container_column = true;
            req.metrics =
                metrics.map(|addr| crate::export::prometheus::MetricsOptions { addr, labels: metrics_labels });
            req.otlp = otlp;
            crate::orchestrate::trace(req)
        }
        Some(Command::GenerateDocs { dir }) => generate_docs(&dir).map(|()| 0),
        Some(Command::StatsFloor) => stats_floor(),
        None => {
            let pids = cli.select.pids.iter().map(|p| validate_pid(p)).collect::<Result<Vec<_>>>()?;
            let selection = selection(pids, &cli.select)?;
            // `-p` given beside a command is traced too, as strace does.
            if cli.command_line.is_empty() && selection.is_everything() {
                eprintln!(
                    "socktrace: warning: no -p, -c, --cgroup or command given: tracing every process on this machine"
                );
            }
            // Lines name their container when the selection can span several: anything but
            // processes given by PID or started here.
            let container_column =
                selection.tgids.is_empty() && cli.command_line.is_empty() && cli.select.container.is_none();
            let mut req = cli.output.request(selection, cli.command_line)?;
            req.session.container_column = container_column;
            crate::orchestrate::trace(req)
        }
    }
}

/// Turns the selection flags into what the kernel filters on.
fn selection(tgids: Vec<u32>, s: &SelectArgs) -> Result<Selection> {
    let comm = match &s.comm {
        None => None,
        Some(name) if name.is_empty() => bail!("-c needs a non-empty task name"),
        Some(name) => {
            if name.len() > TASK_COMM_MAX {
                eprintln!(
                    "socktrace: notice: task names are at most {TASK_COMM_MAX} bytes; matching {:?}",
                    String::from_utf8_lossy(&name.as_bytes()[..TASK_COMM_MAX])
                );
            }
            Some(name.as_bytes()[..name.len().min(TASK_COMM_MAX)].to_vec())
        }
    };
    let container = s.container.as_deref().map(crate::host::cgroups::container_cgroup).transpose()?;
    if let (Some(id), Some(path)) = (&s.container, &container) {
        use std::os::unix::ffi::OsStrExt as _;
        eprintln!("socktrace: container {id}: cgroup {}", crate::text::escape_bytes(path.as_os_str().as_bytes()));
    }
    let cgroup = s.cgroup.as_deref().or(container.as_deref()).map(crate::kernel::cgroup::id_and_level).transpose()?;
    Ok(Selection { tgids, follow: s.follow, comm, cgroup })
}

/// An errno given by name (`ECONNRESET`) or number (`104`).
pub fn parse_errno(s: &str) -> Result<i32> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        if n > 0 {
            return Ok(n);
        }
    }
    let upper = s.to_ascii_uppercase();
    (1..4096)
        .find(|&n| errno::name(n) == upper)
        .with_context(|| format!("unknown errno {s:?} (use a name like ECONNRESET or a number)"))
}

/// A PID the user typed, checked: positive, existing, and a user process.
pub fn validate_pid(text: &str) -> Result<u32> {
    let pid: i64 =
        text.trim().parse().map_err(|_| anyhow::anyhow!("invalid PID {text:?}: PIDs are positive integers"))?;
    if pid <= 0 || pid > i32::MAX as i64 {
        bail!("invalid PID {pid}: PIDs are positive integers");
    }
    let pid = pid as u32;
    let proc = PathBuf::from(format!("/proc/{pid}"));
    if !proc.exists() {
        bail!("no such process: PID {pid} (is it running? in another PID namespace?)");
    }
    // Kernel threads make no socket calls: there would be nothing to see.
    // The task name inside these files is the process's to choose: read them as bytes.
    let read_lossy = |name: &str| std::fs::read(proc.join(name)).map(|b| String::from_utf8_lossy(&b).into_owned());
    let stat = read_lossy("stat").unwrap_or_default();
    if let Some(flags) = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().nth(6)) {
        const PF_KTHREAD: u64 = 0x0020_0000;
        if flags.parse::<u64>().is_ok_and(|f| f & PF_KTHREAD != 0) {
            bail!("PID {pid} is a kernel thread: it makes no socket calls to trace");
        }
    }
    // Trace the process, also when given a thread id.
    let status = read_lossy("status").with_context(|| format!("no such process: PID {pid} exited"))?;
    let tgid = status.lines().find_map(|l| l.strip_prefix("Tgid:")).and_then(|v| v.trim().parse().ok()).unwrap_or(pid);
    Ok(tgid)
}

fn stats_floor() -> Result<i32> {
    crate::orchestrate::require_privileges()?;
    let _held = crate::kernel::load::stats_floor()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        eprintln!("socktrace: attached the empty stats_floor program; Ctrl-C to stop");
        int.recv().await;
        anyhow::Ok(0)
    })
}

fn generate_docs(dir: &Path) -> Result<()> {
    use clap::CommandFactory as _;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cmd = Cli::command();
    for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut cmd, "socktrace", dir)?;
        eprintln!("wrote {}", path.display());
    }
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut page)?;
    let path = dir.join("socktrace.1");
    std::fs::write(&path, page)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn rejects_impossible_pids() {
        for bad in ["0", "-1", "9223372036854775807", "1099511627776", "abc", "", "12x"] {
            let err = validate_pid(bad).unwrap_err().to_string();
            assert!(err.contains("invalid PID"), "{bad}: {err}");
        }
    }

    #[test]
    fn accepts_this_process_and_rejects_kernel_threads() {
        assert_eq!(validate_pid(&std::process::id().to_string()).unwrap(), std::process::id());
        // Some kernel thread exists on every Linux machine (kthreadd and its children).
        let kthread = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| validate_pid(&pid.to_string()).is_err_and(|e| e.to_string().contains("kernel thread")));
        assert!(kthread.is_some(), "no kernel thread was recognised");
    }

    #[test]
    fn errnos_by_name_or_number() {
        assert_eq!(parse_errno("ECONNRESET").unwrap(), 104);
        assert_eq!(parse_errno("epipe").unwrap(), 32);
        assert_eq!(parse_errno("111").unwrap(), 111);
        assert!(parse_errno("ENOTREAL").is_err());
    }

    #[test]
    fn cli_is_consistent_and_parses_the_documented_forms() {
        Cli::command().debug_assert();
        let c = Cli::try_parse_from([
            "socktrace",
            "-p",
            "1",
            "-p",
            "2",
            "-e",
            "ECONNRESET,EPIPE",
            "--cause",
            "rst_received,timeout",
            "--json",
        ])
        .unwrap();
        assert_eq!(c.select.pids, ["1", "2"]);
        assert_eq!(c.output.errnos, ["ECONNRESET", "EPIPE"]);
        assert_eq!(c.output.causes, [Cause::RstReceived, Cause::Timeout]);
        let c = Cli::try_parse_from(["socktrace", "-f", "--", "curl", "-s", "http://x/"]).unwrap();
        assert_eq!(c.command_line, ["curl", "-s", "http://x/"]);
        assert!(c.select.follow);
        assert!(Cli::try_parse_from(["socktrace", "--cause", "nonsense"]).is_err());
        let c = Cli::try_parse_from(["socktrace", "report", "-", "-o", "r.html"]).unwrap();
        assert!(
            matches!(c.command, Some(Command::Report { capture, output: Some(_), timelines: 50 }) if capture == Path::new("-"))
        );
    }
}
