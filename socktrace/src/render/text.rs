//! A diagnosed failure as text. For a pipe or a file: one aligned line per failure, so grep
//! and awk keep working. For a terminal: a head line (time, task, call, errno, addresses,
//! state, cause, age) and the explanation wrapped and indented under it, like a compiler's
//! note, no line wider than the terminal.

use super::{human_ns, json::tcp_flags, Clock};
use crate::diagnose::Diagnosis;
use crate::facts::Failure;
use crate::model::Cause;
use crate::text::{escape_bytes, escape_controls};

/// How text lines look.
#[derive(Clone, Copy, Debug, Default)]
pub struct TextStyle {
    pub color: bool,
    /// UTC wall-clock timestamps instead of seconds since attach.
    pub wall_clock: bool,
    /// A column naming the container (`runtime:id`), or `-`: for selections that may span
    /// several.
    pub container_column: bool,
    /// `-v`: the evidence (and kernel stacks) on indented lines under the failure.
    pub verbose: bool,
    /// The terminal's width: wrap to it. None: one line per failure.
    pub width: Option<usize>,
}

/// ANSI colour of each cause (SGR parameter).
fn cause_color(c: Cause) -> &'static str {
    match c {
        Cause::RstReceived | Cause::RstSent => "1;31",
        Cause::IcmpError | Cause::NoRoute => "1;33",
        Cause::Timeout => "1;35",
        Cause::PeerFin | Cause::LocalShutdown => "36",
        Cause::Aborted => "1;31",
        Cause::WouldBlock | Cause::Interrupted | Cause::InProgress | Cause::Cancelled => "2",
        Cause::FdLimit | Cause::NoLocalPort | Cause::ListenOverflow | Cause::SocketMemory => "1;34",
        Cause::AbandonedConnect | Cause::AbandonedNoReply | Cause::AbandonedUnacked | Cause::AbandonedZeroWindow => {
            "1;35"
        }
        Cause::Superseded | Cause::ClosedAtOnce => "2",
        Cause::Unknown => "1",
    }
}

fn paint(text: &str, sgr: &str, on: bool) -> String {
    if on {
        format!("\x1b[{sgr}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// A failure's time: UTC wall clock, or seconds since the attach (negative for an event from
/// the attach window, before every probe was in place and the clock was read).
pub fn timestamp(mono_ns: u64, clock: &Clock, wall_clock: bool) -> String {
    if wall_clock {
        let wall = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(clock.wall_ns(mono_ns));
        humantime::format_rfc3339_micros(wall).to_string()
    } else {
        let (sign, rel) = if mono_ns >= clock.attach_mono_ns {
            ('+', mono_ns - clock.attach_mono_ns)
        } else {
            ('-', clock.attach_mono_ns - mono_ns)
        };
        format!("{sign}{}.{:06}", rel / 1_000_000_000, (rel % 1_000_000_000) / 1_000)
    }
}

fn addr(a: Option<std::net::SocketAddr>) -> String {
    a.map(|a| a.to_string()).unwrap_or_else(|| "?".into())
}

/// The parts of a failure's text, escaped, before they are laid out.
struct Parts {
    time: String,
    /// `pid/tid`.
    ids: String,
    /// The task's name, quoted.
    comm: String,
    container: Option<String>,
    call: String,
    ret: String,
    errno: String,
    local: String,
    remote: String,
    state: &'static str,
    cause: &'static str,
    age: String,
    explain: String,
    color: &'static str,
    /// `-v`: the evidence and kernel stacks, one entry a line.
    details: Vec<String>,
}

fn parts(f: &Failure, d: &Diagnosis, clock: &Clock, style: TextStyle) -> Parts {
    let mut details = Vec::new();
    if style.verbose {
        let evidence = evidence(f);
        if !evidence.is_empty() {
            details.push(format!("evidence: {}", escape_controls(&evidence.join("; "))));
        }
        for k in &f.kstacks {
            details.push(format!("kstack {}: {}", k.event, escape_bytes(k.frames.join(" <- ").as_bytes())));
        }
    }
    Parts {
        time: timestamp(f.ts_ns, clock, style.wall_clock),
        ids: format!("{}/{}", f.pid, f.tid),
        comm: format!("\"{}\"", escape_bytes(&f.comm)),
        container: style.container_column.then(|| container_label(f)),
        call: f.call_display(),
        ret: f.ret.to_string(),
        errno: f.errno_label(),
        local: addr(f.local),
        remote: addr(f.remote),
        state: d.state.map(|s| s.name()).unwrap_or("-"),
        cause: d.cause.code(),
        age: d.cause_age_ns(f.ts_ns).map(human_ns).unwrap_or_else(|| "-".into()),
        // The diagnosis built the sentence from escaped names: only what could still move the
        // cursor is escaped here, and quotes stay plain.
        explain: escape_controls(&d.explain),
        color: cause_color(d.cause),
        details,
    }
}

/// A failure as text: one line (`style.width` None) or wrapped to the terminal.
pub fn text_line(f: &Failure, d: &Diagnosis, clock: &Clock, style: TextStyle) -> String {
    let p = parts(f, d, clock, style);
    match style.width {
        None => one_line(&p, style.color),
        Some(width) => wrapped(&p, style.color, width),
    }
}

/// One aligned line per failure:
/// `+0.000295    13235/13235 "demo-client"      connect(fd=3)    =  -111 ECONNREFUSED  127.0.0.1:39622 -> 127.0.0.1:36757  SYN_SENT  rst_received  12.8us  peer answered ...`
fn one_line(p: &Parts, color: bool) -> String {
    let comm = match &p.container {
        Some(c) => format!("{:<18} {c:<20}", p.comm),
        None => p.comm.clone(),
    };
    let mut line = format!(
        "{:<10} {:>13} {:<18} {:<16} = {:>5} {} {:>21} -> {:<21} {:<11} {} {:>8}  {}",
        p.time,
        p.ids,
        comm,
        p.call,
        p.ret,
        paint(&format!("{:<13}", p.errno), p.color, color),
        p.local,
        p.remote,
        p.state,
        paint(&format!("{:<14}", p.cause), p.color, color),
        p.age,
        p.explain,
    );
    for detail in &p.details {
        line.push_str("\n    ");
        line.push_str(detail);
    }
    line
}

/// Indent of the head line's continuation rows, and of the explanation under it.
const HEAD_INDENT: usize = 2;
const NOTE_INDENT: usize = 4;
const DETAIL_INDENT: usize = 6;

/// The head line (continued where it does not fit), then the explanation and any details,
/// each word-wrapped: no row wider than `width`.
fn wrapped(p: &Parts, color: bool, width: usize) -> String {
    let mut w = Wrap::new(width, color);
    let mut head: Vec<Vec<(String, Option<&str>)>> =
        vec![vec![(p.time.clone(), None)], vec![(p.ids.clone(), None), (p.comm.clone(), None)]];
    if let Some(c) = &p.container {
        head.push(vec![(c.clone(), None)]);
    }
    head.push(vec![
        (p.call.clone(), None),
        ("=".into(), None),
        (p.ret.clone(), None),
        (p.errno.clone(), Some(p.color)),
    ]);
    head.push(vec![(p.local.clone(), None), ("->".into(), None), (p.remote.clone(), None)]);
    head.push(vec![(p.state.into(), None), (p.cause.into(), Some(p.color)), (p.age.clone(), None)]);
    w.line(0, HEAD_INDENT);
    for group in &head {
        w.group(group);
    }
    w.line(NOTE_INDENT, NOTE_INDENT);
    for word in p.explain.split(' ').filter(|s| !s.is_empty()) {
        w.word(word, None);
    }
    for detail in &p.details {
        w.line(DETAIL_INDENT, DETAIL_INDENT + 2);
        for word in detail.split(' ').filter(|s| !s.is_empty()) {
            w.word(word, None);
        }
    }
    w.finish()
}

/// Rows of words, none wider than `width` (colour escapes take no room).
struct Wrap {
    width: usize,
    color: bool,
    rows: Vec<String>,
    row: String,
    /// Visible characters in `row`.
    used: usize,
    /// Where the row's first word starts, and where a continuation row's does.
    start: usize,
    next: usize,
}

impl Wrap {
    fn new(width: usize, color: bool) -> Wrap {
        Wrap {
            width: width.max(NOTE_INDENT + 8),
            color,
            rows: Vec::new(),
            row: String::new(),
            used: 0,
            start: 0,
            next: 0,
        }
    }

    /// Starts a new row at `indent`; its continuation rows start at `next`.
    fn line(&mut self, indent: usize, next: usize) {
        self.flush();
        self.row = " ".repeat(indent);
        self.used = indent;
        self.start = indent;
        self.next = next;
    }

    fn flush(&mut self) {
        if self.used > self.start {
            self.rows.push(std::mem::take(&mut self.row));
        }
        self.row.clear();
        self.used = 0;
    }

    fn continuation(&mut self) {
        self.flush();
        self.row = " ".repeat(self.next);
        self.used = self.next;
        self.start = self.next;
    }

    /// Room left on this row for a word after a separating space.
    fn room(&self) -> usize {
        let sep = usize::from(self.used > self.start);
        self.width.saturating_sub(self.used + sep)
    }

    /// Words that stay on one row where they can: on this row if they all fit, else on a row
    /// of their own, else word by word.
    fn group(&mut self, words: &[(String, Option<&str>)]) {
        let len = words.iter().map(|(t, _)| t.chars().count()).sum::<usize>() + words.len().saturating_sub(1);
        if len > self.room() && len <= self.width - self.next && self.used > self.start {
            self.continuation();
        }
        for (text, sgr) in words {
            self.word(text, *sgr);
        }
    }

    fn word(&mut self, text: &str, sgr: Option<&str>) {
        let len = text.chars().count();
        if len > self.room() && self.used > self.start {
            self.continuation();
        }
        if len > self.room() {
            // Longer than a whole row: split it where the row ends.
            let chars: Vec<char> = text.chars().collect();
            for chunk in chars.chunks(self.width - self.next) {
                let piece: String = chunk.iter().collect();
                if piece.chars().count() > self.room() {
                    self.continuation();
                }
                self.put(&piece, sgr);
            }
            return;
        }
        self.put(text, sgr);
    }

    fn put(&mut self, text: &str, sgr: Option<&str>) {
        if self.used > self.start {
            self.row.push(' ');
            self.used += 1;
        }
        match sgr {
            Some(sgr) => self.row.push_str(&paint(text, sgr, self.color)),
            None => self.row.push_str(text),
        }
        self.used += text.chars().count();
    }

    fn finish(mut self) -> String {
        self.flush();
        self.rows.join("\n")
    }
}

/// The raw facts behind a failure, for `-v`: what JSON carries under `facts`, short.
fn evidence(f: &Failure) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(seg) = f.history.rst_segment {
        out.push(format!(
            "RST segment {} seq {} ack {} (our rcv_nxt {}, snd_nxt {}, snd_una {})",
            tcp_flags(seg.flags).join("|"),
            seg.seq,
            seg.ack_seq,
            seg.rcv_nxt,
            seg.snd_nxt,
            seg.snd_una
        ));
    }
    if let Some(p) = &f.peer_reset {
        let who = if p.no_socket {
            "no socket".to_string()
        } else {
            format!(
                "{} socket, pid {} \"{}\" on the CPU",
                p.state.map(|s| s.name()).unwrap_or("?"),
                p.tgid,
                escape_bytes(&p.comm)
            )
        };
        let reason = p.reason_name.as_deref().map(|r| format!(", reason {r}")).unwrap_or_default();
        out.push(format!("RST sent on this host by {who}{reason}"));
    }
    for d in &f.drops {
        out.push(format!(
            "{} {} dropped ({}) in {}{}{}",
            d.count,
            if d.sent { "sent" } else { "received" },
            tcp_flags(d.last_flags).join("|"),
            d.function.as_deref().unwrap_or("?"),
            d.reason_name.as_deref().map(|r| format!(", {r}")).unwrap_or_default(),
            d.netns.map(|n| format!(", netns {n}")).unwrap_or_default(),
        ));
    }
    if let Some(m) = &f.icmp {
        out.push(format!("ICMP type {} code {} from {}", m.icmp_type, m.code, m.from));
    }
    if let Some(t) = &f.timers {
        out.push(format!(
            "timers: retransmits {}, probes out {}, snd_wnd {}, keepalive {}, user timeout {} ms",
            f.history.retransmits,
            t.probes_out,
            t.snd_wnd,
            if t.keepalive != 0 { "on" } else { "off" },
            t.user_timeout_ms
        ));
    }
    out
}

/// `docker:3f4e9c1a2b7d`, `systemd:nginx.service`, or `-`.
fn container_label(f: &Failure) -> String {
    match f.cgroup.as_ref().and_then(|c| c.workload.container.as_ref()) {
        Some(c) => format!("{}:{}", c.runtime.name(), escape_bytes(c.short_id().as_bytes())),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::History;
    use crate::model::{Syscall, TcpState};

    fn golden_failure() -> (Failure, Diagnosis) {
        let f = Failure {
            ts_ns: 1_004_512_000,
            pid: 1234,
            tid: 1235,
            comm: b"cu\x1brl\n".to_vec(),
            ret: -111,
            errno: Some(111),
            local: Some("127.0.0.1:40122".parse().unwrap()),
            ..Failure::for_test(Syscall::Connect, Some(111), TcpState::Close, History::default())
        };
        let d = Diagnosis::new(
            Cause::RstReceived,
            Some(TcpState::SynSent),
            Some(1_004_499_200),
            "peer answered the SYN with RST: nothing listens on 127.0.0.1:9".into(),
        );
        (f, d)
    }

    const CLOCK: Clock = Clock { realtime_offset_ns: 1_700_000_000_000_000_000, attach_mono_ns: 1_000_000_000 };

    #[test]
    fn golden_one_line() {
        let (f, d) = golden_failure();
        assert_eq!(
            text_line(&f, &d, &CLOCK, TextStyle::default()),
            "+0.004512      1234/1235 \"cu\\x1brl\\x0a\"     connect(fd=3)    =  -111 ECONNREFUSED        \
             127.0.0.1:40122 -> 127.0.0.1:9           SYN_SENT    rst_received     12.8us  peer answered the SYN \
             with RST: nothing listens on 127.0.0.1:9"
        );
        let wall = TextStyle { color: true, wall_clock: true, ..TextStyle::default() };
        assert_eq!(
            text_line(&f, &d, &CLOCK, wall),
            "2023-11-14T22:13:21.004512Z     1234/1235 \"cu\\x1brl\\x0a\"     connect(fd=3)    =  -111 \
             \u{1b}[1;31mECONNREFUSED \u{1b}[0m       127.0.0.1:40122 -> 127.0.0.1:9           SYN_SENT    \
             \u{1b}[1;31mrst_received  \u{1b}[0m   12.8us  peer answered the SYN with RST: nothing listens on 127.0.0.1:9"
        );
    }

    /// A terminal: the head line and the explanation under it, no row wider than the terminal
    /// (colour escapes take no room), every word kept.
    #[test]
    fn wrapped_to_the_terminal() {
        let (mut f, mut d) = golden_failure();
        d.explain = "pid 4242 \"python3\" on this host reset it: it closed the socket with unread data (kernel \
                     reason TCP_ABORT_ON_CLOSE)"
            .into();
        f.remote = Some("[2001:db8:1234:5678:9abc:def0:1234:5678]:8080".parse().unwrap());
        for width in [40, 60, 80, 100, 120] {
            for color in [false, true] {
                let style = TextStyle { width: Some(width), color, ..TextStyle::default() };
                let text = text_line(&f, &d, &CLOCK, style);
                let plain = text.replace("\u{1b}[1;31m", "").replace("\u{1b}[0m", "");
                for row in plain.lines() {
                    assert!(row.chars().count() <= width, "{width}: {row:?} in\n{plain}");
                }
                let words: Vec<&str> = plain.split_whitespace().collect();
                assert!(plain.starts_with("+0.004512 1234/1235"), "{plain}");
                assert!(plain.contains("\"python3\"") && !plain.contains("\\\""), "{plain}");
                let joined = words.join(" ");
                assert!(joined.contains("reset it: it closed the socket with unread data"), "{joined}");
            }
        }
        // Wide enough: the head on one row, the explanation indented under it.
        let text = text_line(&f, &d, &CLOCK, TextStyle { width: Some(200), ..TextStyle::default() });
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows.len(), 2, "{text}");
        assert!(rows[1].starts_with("    pid 4242 \"python3\""), "{text}");
    }

    /// Before the attach: a negative time, never a run of zeros.
    #[test]
    fn events_before_the_attach_have_negative_times() {
        assert_eq!(timestamp(999_000_000, &CLOCK, false), "-0.001000");
        assert_eq!(timestamp(1_000_000_000, &CLOCK, false), "+0.000000");
        assert_eq!(timestamp(3_500_000_000, &CLOCK, false), "+2.500000");
    }
}
