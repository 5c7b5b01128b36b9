//! Rendering: a diagnosed failure as one text line or one JSON object (NDJSON).
//!
//! Anything the traced process controls (its name, above all) is escaped here, so it can
//! neither forge nor hide lines on the terminal; JSON output is always valid UTF-8.

use crate::diagnose::Diagnosis;
use crate::event::Failure;
use serde::Serialize;
use std::fmt::Write as _;

/// JSON schema version: bumped when a key changes meaning or disappears.
pub const SCHEMA_VERSION: u32 = 1;

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

/// Escapes bytes for a terminal: printable ASCII stays, everything else becomes `\xNN`
/// (and the backslash and double quote are escaped), so the result is plain printable ASCII.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out
}

#[derive(Serialize, Debug, PartialEq)]
pub struct JsonFailure {
    pub schema: u32,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Wall-clock time of the failing call's return, ns since the Unix epoch.
    pub ts_ns: u64,
    /// The same instant in CLOCK_MONOTONIC ns (the kernel's clock).
    pub mono_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub syscall: String,
    pub fd: i32,
    pub ret: i64,
    pub errno: Option<String>,
    pub state: Option<&'static str>,
    pub state_now: Option<&'static str>,
    pub cause: &'static str,
    pub saddr: Option<String>,
    pub sport: Option<u16>,
    pub daddr: Option<String>,
    pub dport: Option<u16>,
    pub family: &'static str,
    pub cause_age_ns: Option<u64>,
    /// The process on the CPU when the causing event ran (softirq: often the peer, or none).
    pub cause_pid: Option<u32>,
    /// The kernel's own return value when it was a restart code folded into EINTR.
    pub kernel_ret: Option<i64>,
    pub retransmits: Option<u32>,
    pub history: Vec<JsonTransition>,
    /// The raw TCP facts the kernel recorded on this socket, for those who want to check.
    pub facts: JsonFacts,
    pub explain: String,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct JsonFacts {
    pub rst_received: Option<JsonStamp>,
    pub rst_sent: Option<JsonStamp>,
    pub error_report: Option<JsonStamp>,
    pub retransmits: u32,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct JsonStamp {
    pub mono_ns: u64,
    pub state: Option<&'static str>,
    /// The process on the CPU when it happened.
    pub pid: u32,
    /// errno for an error report, the kernel's reason code for a sent RST.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<i32>,
}

fn json_stamp(s: &crate::event::Stamp, value: Option<i32>) -> JsonStamp {
    JsonStamp { mono_ns: s.ts_ns, state: s.state.map(|st| st.name()), pid: s.current_tgid, value }
}

#[derive(Serialize, Debug, PartialEq)]
pub struct JsonTransition {
    pub mono_ns: u64,
    pub from: Option<&'static str>,
    pub to: Option<&'static str>,
}

fn family_name(f: u16) -> &'static str {
    match f {
        crate::event::AF_INET => "inet",
        crate::event::AF_INET6 => "inet6",
        crate::event::AF_UNIX => "unix",
        _ => "other",
    }
}

pub fn to_json(f: &Failure, d: &Diagnosis, clock: &Clock) -> JsonFailure {
    JsonFailure {
        schema: SCHEMA_VERSION,
        kind: "failure",
        ts_ns: clock.wall_ns(f.ts_ns),
        mono_ns: f.ts_ns,
        pid: f.pid,
        tid: f.tid,
        comm: escape_bytes(&f.comm),
        syscall: f.syscall_name(),
        fd: f.fd,
        ret: f.ret,
        errno: f.errno_name(),
        state: d.state.map(|s| s.name()),
        state_now: f.state_now.map(|s| s.name()),
        cause: d.cause.code(),
        saddr: f.local.map(|a| a.ip().to_string()),
        sport: f.local.map(|a| a.port()),
        daddr: f.remote.map(|a| a.ip().to_string()),
        dport: f.remote.map(|a| a.port()),
        family: family_name(f.family),
        cause_age_ns: d.cause_age_ns(f.ts_ns),
        cause_pid: d.cause_ts_ns.and_then(|t| f.task_at(t)),
        kernel_ret: f.kernel_ret,
        retransmits: d.retransmits,
        history: f
            .history
            .transitions
            .iter()
            .map(|t| JsonTransition {
                mono_ns: t.ts_ns,
                from: t.old.map(|s| s.name()),
                to: t.new.map(|s| s.name()),
            })
            .collect(),
        facts: JsonFacts {
            rst_received: f.history.rst_received.as_ref().map(|s| json_stamp(s, None)),
            rst_sent: f.history.rst_sent.as_ref().map(|(s, r)| json_stamp(s, *r)),
            error_report: f.history.error_report.as_ref().map(|(s, e)| json_stamp(s, Some(*e))),
            retransmits: f.history.retransmits,
        },
        explain: d.explain.clone(),
    }
}

pub fn json_line(f: &Failure, d: &Diagnosis, clock: &Clock) -> String {
    serde_json::to_string(&to_json(f, d, clock)).unwrap_or_else(|e| {
        format!("{{\"schema\":{SCHEMA_VERSION},\"type\":\"error\",\"error\":\"{e}\"}}")
    })
}

fn addr(a: Option<std::net::SocketAddr>) -> String {
    a.map(|a| a.to_string()).unwrap_or_else(|| "?".into())
}

/// `+0.004512 1234/1235 "curl" connect(fd=3) = -111 ECONNREFUSED 127.0.0.1:40122 -> 127.0.0.1:9
/// state SYN_SENT cause rst_received: peer answered the SYN with RST ...`
pub fn text_line(f: &Failure, d: &Diagnosis, clock: &Clock) -> String {
    let rel = f.ts_ns.saturating_sub(clock.attach_mono_ns);
    let mut line = format!(
        "+{}.{:06} {}/{} \"{}\" {}(fd={}) = {}",
        rel / 1_000_000_000,
        (rel % 1_000_000_000) / 1_000,
        f.pid,
        f.tid,
        escape_bytes(&f.comm),
        f.syscall_name(),
        f.fd,
        f.ret,
    );
    if let Some(name) = f.errno_name() {
        let _ = write!(line, " {name}");
    }
    let _ = write!(
        line,
        " {} -> {} state {} cause {}",
        addr(f.local),
        addr(f.remote),
        d.state.map(|s| s.name()).unwrap_or("?"),
        d.cause.code()
    );
    if let Some(age) = d.cause_age_ns(f.ts_ns) {
        let _ = write!(line, " ({} ago)", human_ns(age));
    }
    let _ = write!(line, ": {}", escape_bytes(d.explain.as_bytes()));
    line
}

pub fn human_ns(ns: u64) -> String {
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.1}us", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.1}ms", ns as f64 / 1e6)
    } else {
        format!("{:.2}s", ns as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_control_bytes_quotes_and_invalid_utf8() {
        assert_eq!(escape_bytes(b"curl"), "curl");
        assert_eq!(escape_bytes(b"a\nb"), "a\\x0ab");
        assert_eq!(escape_bytes(b"\x1b[31mred"), "\\x1b[31mred");
        assert_eq!(escape_bytes(b"q\"\\"), "q\\\"\\\\");
        assert_eq!(escape_bytes(&[0xff, 0xfe]), "\\xff\\xfe");
        assert!(escape_bytes(&(0..=255).collect::<Vec<u8>>()).bytes().all(|b| (0x20..0x7f).contains(&b)));
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_ns(500), "500ns");
        assert_eq!(human_ns(1_500), "1.5us");
        assert_eq!(human_ns(2_500_000), "2.5ms");
        assert_eq!(human_ns(3_000_000_000), "3.00s");
    }
}
