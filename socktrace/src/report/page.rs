//! The page: one self-contained HTML file (styles, script and data inline; no network) built
//! with maud, which escapes every string it is given: the capture is untrusted input.
//!
//! The charts and the most interesting connections' timelines are SVG drawn here; the other
//! connections are embedded as compact JSON that the page's script draws the same way when a
//! search matches them (`report.js` mirrors `timeline_svg`: keep the two in step).

use super::aggregate::{CauseTotal, Ranked, Report, Series};
use super::names::{is_routine, known_cause, plural};
use super::timeline::{CallMark, Connection, MarkKind, Timeline};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;

const CSS: &str = include_str!("report.css");
const JS: &str = include_str!("report.js");

/// What the embedded data of the connections not drawn on load may weigh; past it, the rest
/// are named in the page but not embedded.
pub const DATA_BUDGET: usize = 4_500_000;
/// Positions in the embedded timelines: ten-thousandths of the connection's span (the picture
/// is a thousand units wide).
const QUANTUM: u128 = 10_000;

/// The timeline's geometry (mirrored in report.js).
const TL_WIDTH: f64 = 1000.0;
const TL_LEFT: f64 = 86.0;
const TL_RIGHT: f64 = 14.0;
const TL_HEIGHT: f64 = 120.0;
const ROW_STATE: f64 = 20.0;
const ROW_KERNEL: f64 = 40.0;
/// The kernel row's lanes, this far apart.
const LANE_STEP: f64 = 10.0;
const ROW_CALLS: f64 = 80.0;
const ROW_AGES: f64 = 100.0;
const MIN_BAND: f64 = 0.25;

/// Where the page came from.
pub struct Meta<'a> {
    /// The capture's name as the user gave it.
    pub source: &'a str,
    pub version: &'a str,
}

/// A cause's colour: fixed for the causes this socktrace knows, and stable for others (from
/// the code's hash), so a cause has one colour on every chart and timeline.
pub fn cause_color(code: &str) -> &'static str {
    use crate::model::Cause::*;
    const OTHERS: [&str; 8] = ["#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#31a354", "#756bb1"];
    match known_cause(code) {
        Some(c) => match c {
            RstReceived => "#d62728",
            RstSent => "#ff7f0e",
            Aborted => "#8c1c13",
            IcmpError => "#e6ab02",
            NoRoute => "#a6761d",
            Timeout => "#6a3d9a",
            PeerFin => "#17becf",
            LocalShutdown => "#1f77b4",
            FdLimit => "#2ca02c",
            NoLocalPort => "#0b6e4f",
            ListenOverflow => "#e377c2",
            SocketMemory => "#8c564b",
            Unknown => "#505050",
            WouldBlock => "#a8a8a8",
            Interrupted => "#c4c4c4",
            InProgress => "#8f8f8f",
            Cancelled => "#d6d6d6",
            AbandonedConnect => "#9467bd",
            AbandonedNoReply => "#bc80bd",
            AbandonedUnacked => "#5e3c99",
            AbandonedZeroWindow => "#b2abd2",
            Superseded => "#b8b8b8",
            ClosedAtOnce => "#9c9c9c",
        },
        None => OTHERS[fnv1a(code) as usize % OTHERS.len()],
    }
}

fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ b as u32).wrapping_mul(0x0100_0193))
}

/// A TCP state's band colour (pale: the marks go on top).
pub fn state_color(state: &str) -> &'static str {
    match state {
        "ESTABLISHED" => "#cfe8cf",
        "SYN_SENT" | "SYN_RECV" | "NEW_SYN_RECV" => "#fff0b3",
        "CLOSE" => "#e2e2e2",
        "CLOSE_WAIT" => "#cde3f5",
        "FIN_WAIT1" | "FIN_WAIT2" => "#e3d4f0",
        "TIME_WAIT" => "#efefef",
        "LAST_ACK" | "CLOSING" => "#f4d9e6",
        "LISTEN" => "#d3eee8",
        _ => "#eeeeee",
    }
}

/// A number for an SVG attribute: one decimal, no trailing ".0".
fn n(x: f64) -> String {
    let s = format!("{:.1}", x);
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

/// A duration for the page: "0", "850 ns", "12.5 µs", "3 ms", "1.25 s", "2 min 5 s".
pub fn dur(ns: u64) -> String {
    fn trim(x: f64, decimals: usize) -> String {
        let s = format!("{x:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    }
    match ns {
        0 => "0".into(),
        1..=999 => format!("{ns} ns"),
        1_000..=999_999 => format!("{} µs", trim(ns as f64 / 1e3, 1)),
        1_000_000..=999_999_999 => format!("{} ms", trim(ns as f64 / 1e6, 1)),
        1_000_000_000..=59_999_999_999 => format!("{} s", trim(ns as f64 / 1e9, 2)),
        60_000_000_000..=3_599_999_999_999 => {
            format!("{} min {} s", ns / 60_000_000_000, (ns % 60_000_000_000) / 1_000_000_000)
        }
        _ => format!("{} h {} min", ns / 3_600_000_000_000, (ns % 3_600_000_000_000) / 60_000_000_000),
    }
}

/// A round step for about `ticks` ticks over `span` (1, 2 or 5 times a power of ten, ns).
pub fn tick_step(span: u64, ticks: u64) -> u64 {
    let raw = (span / ticks.max(1)).max(1);
    let mut p = 1u64;
    while p.saturating_mul(10) <= raw {
        p *= 10;
    }
    [1, 2, 5, 10].iter().map(|m| m * p).find(|&s| s >= raw).unwrap_or(10 * p)
}

/// Wall-clock ns as "2024-05-01 12:00:01.123 UTC" (`date: false`: without the day).
pub fn wall(ns: u64, date: bool, micros: bool) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns);
    let s = if micros {
        humantime::format_rfc3339_micros(t).to_string()
    } else {
        humantime::format_rfc3339_millis(t).to_string()
    };
    let s = s.trim_end_matches('Z').replacen('T', " ", 1);
    if date {
        format!("{s} UTC")
    } else {
        s.split_once(' ').map(|(_, time)| time.to_string()).unwrap_or(s)
    }
}

/// JSON that is safe inside a `<script>` element: no `<`, `>` or `&` (so no `</script>` and no
/// comment opener), and no U+2028/2029 line separators.
pub fn script_json(v: &Value) -> String {
    let s = serde_json::to_string(v).unwrap_or_else(|_| "null".into());
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// The Content-Security-Policy source of the page's one script: nothing else may run, even if
/// some text of the capture got through as markup.
fn script_hash(script: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(script.as_bytes());
    format!("'sha256-{}'", base64(&digest))
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let v = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(v >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The whole page.
pub fn render(r: &Report, meta: &Meta) -> String {
    let (data, embedded) = data(r);
    let csp = format!(
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src {}; base-uri 'none'; form-action 'none'",
        script_hash(JS)
    );
    let drawn = r.connections.iter().filter(|c| c.id < drawn_count(r)).count();
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="Content-Security-Policy" content=(csp);
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="generator" content={ "socktrace " (meta.version) };
                title { "socktrace report: " (meta.source) }
                style { (PreEscaped(CSS)) }
            }
            body {
                (header(r, meta))
                @if r.problems_total > 0 { (problems(r)) }
                (overview(r))
                (table(r))
                (rankings(r))
                (connections(r, drawn, embedded))
                aside #details hidden {
                    button #details-close type="button" title="close" { "×" }
                    h4 #details-title {}
                    pre #details-text {}
                }
                script #data type="application/json" { (PreEscaped(data)) }
                script { (PreEscaped(JS)) }
            }
        }
    };
    page.into_string()
}

/// How many connections are drawn when the page opens.
fn drawn_count(r: &Report) -> usize {
    r.connections.iter().filter(|c| c.timeline.detailed).count()
}

fn header(r: &Report, meta: &Meta) -> Markup {
    let span = match (r.first_wall_ns, r.last_wall_ns) {
        (Some(a), Some(b)) => Some((a, b)),
        _ => None,
    };
    let first_failure = r
        .connections
        .iter()
        .flat_map(|c| c.timeline.calls.iter().filter(|m| !m.routine).map(move |m| c.timeline.wall0_ns + m.at))
        .min();
    let peak = r.series_peak();
    html! {
        header {
            h1 { "socktrace report" }
            p.source { "Capture " code { (meta.source) } ", " (r.lines) " line" (plural(r.lines)) " read"
                @if !r.schemas.is_empty() {
                    " (schema " (r.schemas.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")) ")"
                }
                "; made by socktrace " (meta.version) "."
            }
            @if let Some((a, b)) = span {
                p.range {
                    "From " strong { (wall(a, true, false)) } " to " strong { (wall(b, a / 86_400_000_000_000 != b / 86_400_000_000_000, false)) }
                    " (" (dur(b - a)) ")."
                    @if let Some(t) = first_failure { " First failure (not routine) at " strong { (wall(t, false, true)) } "." }
                    @if let Some((t, count, width)) = peak {
                        " Busiest: " strong { (count) } " failure" (plural(count)) " in the " (dur(width)) " from " (wall(t, false, width < 1_000_000)) "."
                    }
                }
            }
            div.cards {
                (card("failures", r.failures, "failing calls that are not routine outcomes"))
                (card("routine outcomes", r.routine, "EAGAIN, EINTR, EINPROGRESS, cancelled: the program's own doing"))
                (card("connections", r.connections.len() as u64, "sockets with failing calls: a process's connection by its addresses"))
                (card("peers", r.peers_total as u64, "remote addresses"))
                (card("processes", r.processes_total as u64, "by PID and task name"))
                @if r.problems_total > 0 {
                    a.card.bad href="#problems" title="lines of the capture that could not be read" {
                        span.num { (r.problems_total) } span.what { "lines not read" }
                    }
                }
            }
            @if let Some((s, count)) = &r.summary {
                p.summary {
                    @if *count > 1 { (count) " runs' summaries: " } @else { "socktrace's summary: " }
                    (s.failures) " failing call" (plural(s.failures)) " seen, " (s.printed) " written as lines"
                    @if s.failures > s.printed { " (the rest are routine outcomes counted in the kernel, or calls the run's filters left out)" }
                    "."
                    @if s.lost > 0 { " " strong.warn { (s.lost) " lost" } " (the ring buffer was full): failures happened that are in no line." }
                    @if s.undecodable > 0 { " " (s.undecodable) " undecodable kernel records." }
                    @if s.histories_refused > 0 { " " (s.histories_refused) " sockets got no history (the history map was full): their failures may be unknown." }
                }
            } @else if r.failures + r.routine > 0 {
                p.summary.muted { "No summary line: the capture was cut before socktrace ended (or comes from an agent still running)." }
            }
        }
    }
}

fn card(what: &str, value: u64, title: &str) -> Markup {
    html! { div.card title=(title) { span.num { (value) } span.what { (what) } } }
}

impl Report {
    /// The busiest bucket of failures (not routine): its start, count and width.
    fn series_peak(&self) -> Option<(u64, u64, u64)> {
        let s = &self.series;
        let mut totals = vec![0u64; s.buckets];
        for (cause, counts) in &s.by_cause {
            if !is_routine(cause) {
                for (t, c) in totals.iter_mut().zip(counts) {
                    *t += c;
                }
            }
        }
        let (i, &max) = totals.iter().enumerate().max_by_key(|(i, &c)| (c, std::cmp::Reverse(*i)))?;
        (max > 0).then_some((s.start_ns + i as u64 * s.bucket_ns, max, s.bucket_ns))
    }
}

fn problems(r: &Report) -> Markup {
    html! {
        section #problems.problems {
            h2 { (r.problems_total) " line" (plural(r.problems_total)) " not read" }
            p { "These lines of the capture are not socktrace's JSON, or not in a form this socktrace reads; everything else is on this page." }
            ol.problem-list {
                @for p in &r.problems {
                    li { span.line { "line " (p.line) } ": " (p.message) }
                }
            }
            @if r.problems_total > r.problems.len() as u64 {
                p.muted { "… and " (r.problems_total - r.problems.len() as u64) " more." }
            }
        }
    }
}

fn legend(causes: &[&CauseTotal]) -> Markup {
    html! {
        ul.legend {
            @for c in causes {
                li data-cause=(c.code) {
                    span.swatch style={ "background:" (cause_color(&c.code)) } {}
                    span.cause { (c.code) } " " span.count { (c.count) }
                }
            }
        }
    }
}

fn overview(r: &Report) -> Markup {
    let failing: Vec<&CauseTotal> = r.causes.iter().filter(|c| !c.routine).collect();
    let routine: Vec<&CauseTotal> = r.causes.iter().filter(|c| c.routine).collect();
    html! {
        section #overview {
            h2 { "Failures over time, by cause" }
            @if failing.is_empty() {
                p.muted { "No failing calls other than routine outcomes." }
            } @else {
                (legend(&failing))
                (series_chart(&r.series, &failing, 220.0, "chart failures"))
            }
            h3 { "Routine outcomes" }
            @if routine.is_empty() {
                p.muted { "None in the capture (socktrace writes them with --all-errors; the summary counts them)." }
            } @else {
                (legend(&routine))
                (series_chart(&r.series, &routine, 110.0, "chart routine"))
            }
        }
    }
}

/// A stacked bar chart of `causes` over the series' buckets.
fn series_chart(s: &Series, causes: &[&CauseTotal], height: f64, class: &str) -> Markup {
    let (left, right, top, bottom) = (52.0, 10.0, 8.0, 22.0);
    let plot_w = TL_WIDTH - left - right;
    let plot_h = height - top - bottom;
    let buckets = s.buckets.max(1);
    let mut totals = vec![0u64; buckets];
    for c in causes {
        if let Some(v) = s.by_cause.get(&c.code) {
            for (t, x) in totals.iter_mut().zip(v) {
                *t += x;
            }
        }
    }
    let max = totals.iter().copied().max().unwrap_or(0).max(1);
    let y_step = tick_step(max, 3);
    let y_max = max.div_ceil(y_step) * y_step;
    let bar_w = plot_w / buckets as f64;
    let y = |v: u64| top + plot_h - v as f64 / y_max as f64 * plot_h;
    let x = |i: usize| left + i as f64 * bar_w;
    let micros = s.bucket_ns < 1_000_000;
    let label_every = (buckets as f64 / 6.0).ceil().max(1.0) as usize;
    let mut bars = String::new();
    for i in 0..buckets {
        let mut base = 0u64;
        let from = s.start_ns + i as u64 * s.bucket_ns;
        for c in causes {
            let v = s.by_cause.get(&c.code).map(|v| v[i]).unwrap_or(0);
            if v == 0 {
                continue;
            }
            let tip =
                format!("{} – {}: {v} {}", wall(from, false, micros), wall(from + s.bucket_ns, false, micros), c.code);
            let _ = write!(
                bars,
                "{}",
                html! {
                    rect.bar.tip x=(n(x(i) + 0.5)) y=(n(y(base + v))) width=(n((bar_w - 1.0).max(0.6))) height=(n(y(base) - y(base + v)))
                        fill=(cause_color(&c.code)) data-cause=(c.code) { title { (tip) } }
                }
                .into_string()
            );
            base += v;
        }
    }
    html! {
        svg class=(class) viewBox={ "0 0 " (TL_WIDTH) " " (height) } role="img" aria-label="failures over time, stacked by cause" {
            @for k in 0..=(y_max / y_step) {
                @let v = k * y_step;
                line.grid x1=(left) x2=(TL_WIDTH - right) y1=(n(y(v))) y2=(n(y(v))) {}
                text.ylabel x=(left - 6.0) y=(n(y(v) + 4.0)) text-anchor="end" { (v) }
            }
            (PreEscaped(bars))
            @for i in (0..buckets).step_by(label_every) {
                line.tick x1=(n(x(i))) x2=(n(x(i))) y1=(top + plot_h) y2=(top + plot_h + 4.0) {}
                text.xlabel x=(n(x(i))) y=(height - 6.0) text-anchor="middle" { (wall(s.start_ns + i as u64 * s.bucket_ns, false, micros)) }
            }
            line.axis x1=(left) x2=(TL_WIDTH - right) y1=(top + plot_h) y2=(top + plot_h) {}
        }
        p.caption { "Bars of " (dur(s.bucket_ns)) ", UTC. Click a bar for its count." }
    }
}

fn table(r: &Report) -> Markup {
    let with_summary = r.summary.is_some();
    let total: u64 = r.table.iter().map(|row| row.count).sum::<u64>().max(1);
    html! {
        section #table {
            h2 { "Failures by errno, cause and state" }
            p.caption { "The state is the one the error was born in. Click a column's header to sort." }
            table.sortable.labels {
                thead { tr {
                    th { "errno" } th { "cause" } th { "state" }
                    th.num data-type="num" { "lines" }
                    th.num data-type="num" { "share" }
                    @if with_summary { th.num data-type="num" title="what socktrace's summary counted, routine outcomes counted in the kernel included" { "in the summary" } }
                } }
                tbody {
                    @for row in &r.table {
                        tr.routine[is_routine(&row.cause)] {
                            td { code { (row.errno) } }
                            td { span.swatch style={ "background:" (cause_color(&row.cause)) } {} (row.cause) }
                            td { (row.state) }
                            td.num { (row.count) }
                            td.num { (format!("{:.1}%", row.count as f64 * 100.0 / total as f64)) }
                            @if with_summary { td.num { (row.summary.map(|n| n.to_string()).unwrap_or_else(|| "-".into())) } }
                        }
                    }
                }
            }
        }
    }
}

/// A small bar of a row's causes.
fn cause_bar(by_cause: &[(String, u64)]) -> Markup {
    let total: u64 = by_cause.iter().map(|c| c.1).sum::<u64>().max(1);
    let mut x = 0.0;
    let parts: Vec<(&str, u64, f64, f64)> = by_cause
        .iter()
        .map(|(cause, count)| {
            let w = *count as f64 * 100.0 / total as f64;
            x += w;
            (cause.as_str(), *count, x - w, w)
        })
        .collect();
    html! {
        svg.mini viewBox="0 0 100 10" preserveAspectRatio="none" {
            @for (cause, count, x, w) in parts {
                rect x=(n(x)) y="0" width=(n(w)) height="10" fill=(cause_color(cause)) { title { (cause) " " (count) } }
            }
        }
    }
}

fn ranking(id: &str, title: &str, what: &str, rows: &[Ranked], total: usize) -> Markup {
    html! {
        div.ranking #(id) {
            h3 { (title) }
            table.sortable {
                thead { tr { th { (what) } th.num data-type="num" { "failures" } th.num data-type="num" { "routine" } th { "causes" } } }
                tbody {
                    @for row in rows {
                        tr {
                            td.name { (row.name) }
                            td.num { (row.failures) }
                            td.num { (row.routine) }
                            td.causes {
                                (cause_bar(&row.by_cause))
                                span.cause-list { (row.by_cause.iter().map(|(c, k)| format!("{c} {k}")).collect::<Vec<_>>().join(", ")) }
                            }
                        }
                    }
                }
            }
            @if total > rows.len() { p.muted { "… and " (total - rows.len()) " more (search the connections below)." } }
        }
    }
}

fn rankings(r: &Report) -> Markup {
    html! {
        section #rankings {
            h2 { "Who failed" }
            div.grid {
                (ranking("peers", "Top peers", "peer", &r.peers, r.peers_total))
                (ranking("processes", "Top processes", "process (pid)", &r.processes, r.processes_total))
                @if !r.containers.is_empty() { (ranking("containers", "Containers and units", "container", &r.containers, r.containers_total)) }
                @if !r.pods.is_empty() { (ranking("pods", "Kubernetes pods", "pod (QoS)", &r.pods, r.pods_total)) }
            }
            @if r.no_peer > 0 {
                p.muted { (r.no_peer) " failing call" (plural(r.no_peer)) " had no peer address (a listener's accept, or a connect that failed before routing)." }
            }
        }
    }
}

/// `local → peer`, or what stands for them.
pub fn endpoints(c: &Connection) -> String {
    let local = c.local.clone().unwrap_or_else(|| match c.fd {
        Some(fd) => format!("fd {fd}"),
        None => "?".into(),
    });
    match &c.peer {
        Some(p) => format!("{local} → {p}"),
        None => format!("{local} (no peer)"),
    }
}

fn connections(r: &Report, drawn: usize, embedded: usize) -> Markup {
    let total = r.connections.len();
    html! {
        section #connections {
            h2 { "Connections" }
            p.caption {
                @if total > drawn {
                    "The " (drawn) " most interesting of " (total) " connections (most failures that are not routine first) are drawn; search for the others by peer, PID, task name, cause, errno, container or pod."
                } @else {
                    "Every connection with failing calls, most failures first."
                }
                @if embedded < total.saturating_sub(drawn) {
                    " " strong { (total - drawn - embedded) " connections" } " with the fewest failures are beyond the page's size limit: they count in the charts and tables above, but are not searchable here."
                }
            }
            (timeline_legend())
            div.search {
                input #search type="search" placeholder="search connections: 10.0.0.7, 443, nginx, pid 1234, timeout …" autocomplete="off" aria-label="search connections";
                span #search-status.muted {}
            }
            div #found {}
            div #conns {
                @for c in r.connections.iter().take(drawn) { (connection(c)) }
            }
        }
    }
}

fn timeline_legend() -> Markup {
    html! {
        details.legend-box {
            summary { "How to read a timeline" }
            p {
                "Time runs left to right from the connection's first recorded event. "
                b { "state" } ": the socket's TCP states, from the state changes the kernel recorded. "
                b { "kernel" } ": what happened to the socket — "
                svg.sym viewBox="-6 -6 12 12" { (mark_shape(MarkKind::RstReceived, 0.0, 0.0)) } " RST received, "
                svg.sym viewBox="-6 -6 12 12" { (mark_shape(MarkKind::RstSent, 0.0, 0.0)) } " RST sent, "
                svg.sym viewBox="-6 -6 12 12" { (mark_shape(MarkKind::PeerReset, 0.0, 0.0)) } " the peer's RST sent on this host, "
                svg.sym viewBox="-6 -6 12 12" { (mark_shape(MarkKind::ErrorReport, 0.0, 0.0)) } " error reported, "
                svg.sym viewBox="-6 -6 12 12" { (mark_shape(MarkKind::Icmp, 0.0, 0.0)) } " ICMP error, "
                svg.sym viewBox="-6 -6 12 12" { (mark_shape(MarkKind::AtAttach, 0.0, 0.0)) } " snapshot at attach, "
                span.dropsym {} " packets dropped (first to last). "
                b { "calls" } ": the failing calls, coloured by cause (a number: several calls in one place). "
                "A bracket under a call reaches back to its cause: the age in its explanation, as a distance. "
                "Hover over anything for its words; click to keep them in the panel."
            }
        }
    }
}

fn connection(c: &Connection) -> Markup {
    html! {
        section.conn id={ "c" (c.id) } data-id=(c.id) {
            h3 {
                span.who { "pid " (c.pid) " " q.comm { (c.comm) } }
                " "
                span.ends { (endpoints(c)) }
            }
            p.meta {
                "from " (wall(c.timeline.wall0_ns, false, true)) " UTC, over " (dur(c.timeline.span_ns)) " · "
                (c.failures) " failure" (plural(c.failures))
                @if c.routine > 0 { ", " (c.routine) " routine" }
                ": "
                @for (i, (cause, count)) in c.by_cause.iter().enumerate() {
                    @if i > 0 { ", " }
                    span.swatch style={ "background:" (cause_color(cause)) } {} (cause) " " (count)
                }
                @if c.retransmits > 0 { " · " (c.retransmits) " retransmission" (plural(c.retransmits as u64)) " (times not recorded)" }
                @if c.timeline.facts_dropped > 0 { " · the " (c.timeline.facts_dropped) " earliest state changes and kernel facts are left out" }
                @if let Some(k) = &c.container { " · " (k) }
                @if let Some(p) = &c.pod { " · pod " (p) }
            }
            (timeline_svg(&c.timeline))
            (sequence(&c.timeline))
        }
    }
}

fn x_of(t: &Timeline, off: u64) -> f64 {
    TL_LEFT + off as f64 / t.span_ns.max(1) as f64 * (TL_WIDTH - TL_LEFT - TL_RIGHT)
}

/// A kernel fact's symbol at (x, y).
fn mark_shape(kind: MarkKind, x: f64, y: f64) -> Markup {
    let pts =
        |p: &[(f64, f64)]| p.iter().map(|(a, b)| format!("{},{}", n(x + a), n(y + b))).collect::<Vec<_>>().join(" ");
    match kind {
        MarkKind::RstReceived => html! { polygon.m.rst_in points=(pts(&[(-5.0, -5.0), (5.0, -5.0), (0.0, 5.0)])) {} },
        MarkKind::RstSent => html! { polygon.m.rst_out points=(pts(&[(-5.0, 5.0), (5.0, 5.0), (0.0, -5.0)])) {} },
        MarkKind::PeerReset => html! { polygon.m.peer_rst points=(pts(&[(-5.0, 5.0), (5.0, 5.0), (0.0, -5.0)])) {} },
        MarkKind::ErrorReport => {
            html! { polygon.m.err points=(pts(&[(0.0, -5.0), (4.0, 0.0), (0.0, 5.0), (-4.0, 0.0)])) {} }
        }
        MarkKind::Icmp => html! { rect.m.icmp x=(n(x - 4.0)) y=(n(y - 4.0)) width="8" height="8" {} },
        MarkKind::AtAttach => html! { path.m.attach d={ "M" (n(x)) " " (n(y + 6.0)) "V" (n(y - 6.0)) "h6v5h-6" } {} },
        MarkKind::Drops => html! { rect.m.drop x=(n(x - 3.0)) y=(n(y - 3.0)) width="6" height="6" {} },
    }
}

/// The words of a call mark: its hover text and the details panel's.
pub fn call_text(m: &CallMark) -> String {
    let mut s = if m.count > 1 {
        format!(
            "{} calls from +{} to +{}; the first: {}() = {} ({}), in {}",
            m.count,
            dur(m.at),
            dur(m.last),
            m.syscall,
            m.errno,
            m.cause,
            m.state
        )
    } else {
        format!("+{}: {}() = {} ({}), in {}", dur(m.at), m.syscall, m.errno, m.cause, m.state)
    };
    if let Some(age) = m.age_ns {
        let _ = write!(s, "; its cause {} before", dur(age));
    }
    let _ = write!(s, "\n{}\n(capture line {})", m.explain, m.line);
    s
}

/// A connection's timeline (mirrored by `drawTimeline` in report.js).
pub fn timeline_svg(t: &Timeline) -> Markup {
    let x = |off: u64| x_of(t, off);
    let step = tick_step(t.span_ns, 6);
    let ticks: Vec<u64> = (0..).map(|k| k * step).take_while(|&v| v <= t.span_ns).collect();
    // Age brackets: every call's when there are few, the first of each cause's otherwise.
    let few = t.calls.len() <= 12;
    let mut bracket_causes = std::collections::HashSet::new();
    html! {
        svg.timeline viewBox={ "0 0 " (TL_WIDTH) " " (TL_HEIGHT) } role="img" aria-label="the connection's timeline" {
            @for v in &ticks {
                line.grid x1=(n(x(*v))) x2=(n(x(*v))) y1="12" y2=(TL_HEIGHT - 4.0) {}
                text.xlabel x=(n(x(*v))) y="9" text-anchor=(if x(*v) > TL_WIDTH - 40.0 { "end" } else { "middle" }) { "+" (dur(*v)) }
            }
            text.row x="4" y=(ROW_STATE + 4.0) { "state" }
            text.row x="4" y=(ROW_KERNEL + LANE_STEP + 4.0) { "kernel" }
            text.row x="4" y=(ROW_CALLS + 4.0) { "calls" }
            @if t.bands.is_empty() {
                text.none x=(TL_LEFT) y=(ROW_STATE + 4.0) { "no state change recorded" }
            }
            // Bands too thin to see or point at are left out (the in-order list has them).
            @for b in t.bands.iter().filter(|b| x(b.end) - x(b.start) >= MIN_BAND) {
                @let (x0, x1) = (x(b.start), x(b.end));
                rect.band.tip x=(n(x0)) y=(ROW_STATE - 8.0) width=(n((x1 - x0).max(0.5))) height="16" fill=(state_color(&b.state)) {
                    title { (b.state) " from +" (dur(b.start)) " to +" (dur(b.end)) }
                }
                @if x1 - x0 > b.state.len() as f64 * 6.2 + 6.0 {
                    text.state x=(n(x0 + 3.0)) y=(ROW_STATE + 4.0) { (b.state) }
                }
            }
            @for m in t.marks.iter().filter(|m| m.kind == MarkKind::Drops) {
                rect.droprange.tip x=(n(x(m.at) - 1.5)) y=(ROW_KERNEL + m.lane as f64 * LANE_STEP - 3.0) width=(n((x(m.end) - x(m.at)).max(0.0) + 3.0)) height="6" {
                    title { "+" (dur(m.at)) (if m.end > m.at { format!(" to +{}", dur(m.end)) } else { String::new() }) ": " (m.text) }
                }
            }
            @for m in t.marks.iter().filter(|m| m.kind != MarkKind::Drops) {
                g.tip { title { "+" (dur(m.at)) ": " (m.text) } (mark_shape(m.kind, x(m.at), ROW_KERNEL + m.lane as f64 * LANE_STEP)) }
            }
            @for m in &t.calls {
                @if let Some(age) = m.age_ns.filter(|_| few || bracket_causes.insert(m.cause.clone())) {
                    @let (xa, xc) = (x(m.at.saturating_sub(age)), x(m.at));
                    g.age.tip {
                        title { "its cause " (dur(age)) " before the call (from the explanation)" }
                        path d={ "M" (n(xc)) " " (ROW_CALLS + 8.0) "V" (ROW_AGES) "H" (n(xa)) "V" (ROW_KERNEL + 6.0) } {}
                        @if xc - xa > 44.0 {
                            text x=(n((xa + xc) / 2.0)) y=(ROW_AGES + 11.0) text-anchor="middle" { (dur(age)) }
                        }
                    }
                }
            }
            @for m in &t.calls {
                @let r = 4.0 + (m.count as f64).log2().min(5.0);
                @let cy = ROW_CALLS;
                g.call.tip data-cause=(m.cause) {
                    title { (call_text(m)) }
                    circle cx=(n(x(m.at))) cy=(n(cy)) r=(n(r)) fill=(cause_color(&m.cause)) {}
                    @if m.count > 1 {
                        text.count x=(n(x(m.at))) y=(n(cy - r - 2.0)) text-anchor="middle" { (m.count) }
                    }
                }
            }
        }
    }
}

/// Entries of the in-order list, at most this many.
const SEQUENCE_MAX: usize = 40;

/// What happened in what order: state changes, kernel facts and calls, by time.
fn sequence(t: &Timeline) -> Markup {
    let mut items: Vec<(u64, u8, String)> = Vec::new();
    for c in &t.changes {
        items.push((c.0, 0, format!("{} → {}", c.1.as_deref().unwrap_or("?"), c.2.as_deref().unwrap_or("?"))));
    }
    for m in &t.marks {
        items.push((m.at, 1, m.text.clone()));
    }
    for m in &t.calls {
        let what = format!(
            "{}() = {} — {}{}",
            m.syscall,
            m.errno,
            m.cause,
            if m.count > 1 { format!(" (×{}, to +{})", m.count, dur(m.last)) } else { String::new() }
        );
        items.push((m.at, 2, what));
    }
    items.sort_by_key(|i| (i.0, i.1));
    let more = items.len().saturating_sub(SEQUENCE_MAX);
    html! {
        details.seq {
            summary { "In order (" (items.len()) ")" }
            ol {
                @for (at, kind, text) in items.iter().take(SEQUENCE_MAX) {
                    li class=(["state", "kernel", "call"][*kind as usize]) { span.t { "+" (dur(*at)) } " " (text) }
                }
            }
            @if more > 0 { p.muted { "… and " (more) " more." } }
        }
    }
}

/// The page's data: colours, and every connection for the search box, with the compact timeline
/// of those not drawn on load while they fit the size budget. Returns it (safe for `<script>`)
/// and how many timelines it embeds.
fn data(r: &Report) -> (String, usize) {
    let mut strings: Vec<String> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut s = |text: &str| -> usize {
        if let Some(&i) = index.get(text) {
            return i;
        }
        strings.push(text.to_string());
        index.insert(text.to_string(), strings.len() - 1);
        strings.len() - 1
    };
    let mut conns = Vec::with_capacity(r.connections.len());
    let mut size = 0usize;
    let mut embedded = 0usize;
    for c in &r.connections {
        let search = c.search_text();
        if c.timeline.detailed {
            size += search.len() + 16;
            conns.push(json!([c.id, search, 0]));
            continue;
        }
        let t = &c.timeline;
        let q = |off: u64| (off as u128 * QUANTUM / t.span_ns.max(1) as u128) as u64;
        let entry = json!([
            c.id,
            search,
            {
                "p": c.pid, "n": c.comm, "e": endpoints(c), "f": c.failures, "r": c.routine,
                "bc": c.by_cause, "rt": c.retransmits, "k": c.container, "o": c.pod,
                "w": wall(t.wall0_ns, false, true), "s": t.span_ns, "fd": t.facts_dropped,
                "b": t.bands.iter().map(|b| json!([q(b.start), q(b.end), s(&b.state)])).collect::<Vec<_>>(),
                "ch": t.changes.iter().map(|c| json!([q(c.0), s(c.1.as_deref().unwrap_or("?")), s(c.2.as_deref().unwrap_or("?"))])).collect::<Vec<_>>(),
                "m": t.marks.iter().map(|m| json!([m.kind.code(), q(m.at), q(m.end), s(&m.text), m.lane])).collect::<Vec<_>>(),
                "c": t.calls.iter().map(|m| json!([q(m.at), q(m.last), m.count, s(&m.cause), s(&m.errno), s(&m.syscall), s(&m.state), m.age_ns, s(&m.explain), m.line])).collect::<Vec<_>>(),
            }
        ]);
        let weight = serde_json::to_string(&entry).map(|t| t.len()).unwrap_or(0);
        if size + weight > DATA_BUDGET {
            break;
        }
        size += weight;
        embedded += 1;
        conns.push(entry);
    }
    let mut causes: BTreeMap<&str, Value> = BTreeMap::new();
    for c in &r.causes {
        causes.insert(&c.code, json!([cause_color(&c.code), c.routine]));
    }
    let mut states: BTreeMap<&str, &str> = BTreeMap::new();
    for c in r.connections.iter() {
        for b in &c.timeline.bands {
            states.entry(b.state.as_str()).or_insert_with(|| state_color(&b.state));
        }
    }
    let v = json!({
        "version": 1,
        "quantum": QUANTUM as u64,
        "total": r.connections.len(),
        "causes": causes,
        "states": states,
        "strings": strings,
        "conns": conns,
    });
    (script_json(&v), embedded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_ticks_and_times_read_well() {
        assert_eq!(dur(0), "0");
        assert_eq!(dur(850), "850 ns");
        assert_eq!(dur(12_500), "12.5 µs");
        assert_eq!(dur(20_000_000), "20 ms");
        assert_eq!(dur(1_250_000_000), "1.25 s");
        assert_eq!(dur(125_000_000_000), "2 min 5 s");
        assert_eq!(tick_step(1_000_000, 6), 200_000);
        assert_eq!(tick_step(3_000, 6), 500);
        assert_eq!(tick_step(7, 6), 1);
        assert_eq!(wall(1_700_000_000_123_456_789, true, false), "2023-11-14 22:13:20.123 UTC");
        assert_eq!(wall(1_700_000_000_123_456_789, false, true), "22:13:20.123456");
    }

    #[test]
    fn script_data_cannot_close_its_element() {
        let v = json!({"comm": "</script><script>alert(1)</script>", "x": "a&b\u{2028}"});
        let s = script_json(&v);
        assert!(!s.contains('<') && !s.contains('>') && !s.contains('&') && !s.contains('\u{2028}'), "{s}");
        assert_eq!(serde_json::from_str::<Value>(&s).unwrap(), v);
        // The page's own script neither.
        assert!(!JS.to_ascii_lowercase().contains("</script") && !JS.contains("<!--"));
    }

    #[test]
    fn base64_and_the_script_hash() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        // sha256("") in the CSP form.
        assert_eq!(script_hash(""), "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='");
    }

    #[test]
    fn causes_have_fixed_or_stable_colours() {
        assert_eq!(cause_color("rst_received"), "#d62728");
        assert_eq!(cause_color("abandoned_connect"), cause_color("abandoned_connect"));
        assert!(cause_color("abandoned_connect").starts_with('#'));
    }
}
