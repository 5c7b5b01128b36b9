//! Rendering: a diagnosed failure as text (`text`: one line for a pipe or file, wrapped to
//! the terminal's width otherwise) or one JSON object (`json`, NDJSON); where it goes (`Sink`)
//! and the clock its timestamps are read on.
//!
//! Anything the traced process controls (its name, above all) is escaped, so it can neither
//! forge nor hide lines on the terminal; JSON output is always valid UTF-8.

mod json;
mod text;

pub use json::json_line;
pub use text::{text_line, TextStyle};

/// JSON schema version: bumped when a key changes meaning or disappears.
pub const SCHEMA_VERSION: u32 = 9;

/// Converts kernel monotonic timestamps to wall-clock and to time since attach.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// realtime - monotonic, in ns, sampled at start-up.
    pub realtime_offset_ns: i128,
    /// Monotonic time when every probe was attached.
    pub attach_mono_ns: u64,
}

impl Clock {
    pub fn now() -> Self {
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Clock { realtime_offset_ns: real as i128 - mono as i128, attach_mono_ns: mono }
    }

    pub fn wall_ns(&self, mono_ns: u64) -> u64 {
        (mono_ns as i128 + self.realtime_offset_ns).max(0) as u64
    }
}

pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec; these clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The output buffer (see `Sink::open`).
const SINK_BUFFER: usize = 64 * 1024;

/// When to colour text output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// Where events and the summary go: stdout or the `-o` file.
pub struct Sink {
    pub out: Box<dyn std::io::Write>,
    pub color: bool,
    /// The terminal's width, when the output is one: text lines wrap to it. None for a pipe or
    /// a file, where each failure stays one line (grep keeps working).
    pub width: Option<usize>,
    /// What to call it in error messages.
    pub name: String,
}

impl Sink {
    /// Opens the output before anything is attached, so a bad path fails early. Written through
    /// a buffer flushed after each batch the ring buffer gives: a burst's JSON lines (about
    /// 1 KiB each) go out in a few large writes, not one per eight lines.
    pub fn open(path: Option<&std::path::Path>, choice: ColorChoice) -> anyhow::Result<Sink> {
        use std::io::IsTerminal as _;
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        match path {
            Some(p) => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(p)
                    .map_err(|e| anyhow::anyhow!("cannot write to {}: {e}", p.display()))?;
                Ok(Sink {
                    out: Box::new(std::io::BufWriter::with_capacity(SINK_BUFFER, file)),
                    color: choice == ColorChoice::Always,
                    width: None,
                    name: p.display().to_string(),
                })
            }
            None => {
                let stdout = std::io::stdout();
                let color = match choice {
                    ColorChoice::Always => true,
                    ColorChoice::Never => false,
                    ColorChoice::Auto => stdout.is_terminal() && !no_color,
                };
                let width = terminal_width(&stdout);
                Ok(Sink {
                    out: Box::new(std::io::BufWriter::with_capacity(SINK_BUFFER, stdout)),
                    color,
                    width,
                    name: "stdout".into(),
                })
            }
        }
    }
}

pub use crate::text::human_ns;

/// The width of the terminal `out` is, if it is one (`TIOCGWINSZ`); `COLUMNS` does not count
/// (a shell sets it for a pipe too).
fn terminal_width(out: &impl std::os::fd::AsRawFd) -> Option<usize> {
    use std::io::IsTerminal as _;
    // SAFETY: an all-zero winsize is valid; the ioctl writes at most one into it.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ on a descriptor with a valid pointer to a winsize.
    let ok = unsafe { libc::ioctl(out.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } == 0;
    let fd = out.as_raw_fd();
    // SAFETY: a borrowed descriptor of a live stdout.
    let is_tty = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }.is_terminal();
    (ok && is_tty && ws.ws_col >= 20).then_some(ws.ws_col as usize)
}
