//! A connection's timeline: the failing calls, state changes and kernel facts of one socket,
//! gathered line by line, then placed on one time axis with its calls binned by cause, so a
//! connection with 100,000 of them still draws a few hundred marks.

use super::names::{is_routine, plural, Names};
use super::read;
use crate::model::errno;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Kernel facts and state changes kept per connection, the latest (a socket's own history is
/// short; a connection's many lines may bring many).
const MAX_MARKS: usize = 64;
const MAX_TRANSITIONS: usize = 64;
/// State changes and kernel facts drawn for a connection (the latest): drawn on load, and not.
pub(super) const DETAILED_FACTS: usize = 32;
pub(super) const COMPACT_FACTS: usize = 16;
/// A connection whose events all lie closer together than this is drawn over this span.
const MIN_SPAN_NS: u64 = 10_000;
/// Kernel marks closer than this fraction of the timeline's width share no lane.
const MARK_GAP: (u128, u128) = (12, 1000);
pub const LANES: u8 = 3;

/// Identifies a connection: one process's socket, by its addresses, or by its descriptor when
/// it has no local port yet (a connect that failed before one was bound, a listener's accept).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(super) struct ConnKey {
    pub(super) clock: i128,
    pub(super) pid: u32,
    pub(super) family: Option<String>,
    pub(super) local: Option<String>,
    pub(super) peer: Option<String>,
    pub(super) fd: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MarkKind {
    RstReceived,
    RstSent,
    ErrorReport,
    AtAttach,
    PeerReset,
    Icmp,
    Drops,
}

impl MarkKind {
    /// The short name the page's data and classes use.
    pub fn code(self) -> &'static str {
        match self {
            MarkKind::RstReceived => "rst_in",
            MarkKind::RstSent => "rst_out",
            MarkKind::ErrorReport => "err",
            MarkKind::AtAttach => "attach",
            MarkKind::PeerReset => "peer_rst",
            MarkKind::Icmp => "icmp",
            MarkKind::Drops => "drop",
        }
    }
}

/// A kernel fact on a connection's timeline, in CLOCK_MONOTONIC ns (a range for drops).
#[derive(Clone, Debug, PartialEq, Eq)]
struct RawMark {
    kind: MarkKind,
    at: u64,
    end: u64,
    text: String,
}

#[derive(Clone, Debug)]
struct RawCall {
    mono_ns: u64,
    cause: u32,
    errno: u32,
    syscall: u32,
    state: u32,
    age_ns: Option<u64>,
    explain: String,
    line: u64,
}

/// What the lines of one connection brought so far.
#[derive(Debug)]
pub(super) struct ConnAcc {
    key: ConnKey,
    pub(super) comm: u32,
    pub(super) container: Option<String>,
    pub(super) pod: Option<String>,
    /// wall - monotonic of this connection's lines.
    offset: i128,
    calls: Vec<RawCall>,
    transitions: Vec<(u64, Option<String>, Option<String>)>,
    seen_transitions: HashSet<(u64, Option<String>, Option<String>)>,
    marks: Vec<RawMark>,
    seen_marks: HashSet<(MarkKind, u64)>,
    /// State changes and facts left out, the earliest first, to bound what a connection keeps.
    facts_dropped: usize,
    retransmits: u32,
}

impl ConnAcc {
    pub(super) fn new(key: ConnKey, comm: u32, offset: i128) -> ConnAcc {
        ConnAcc {
            key,
            comm,
            container: None,
            pod: None,
            offset,
            calls: Vec::new(),
            transitions: Vec::new(),
            seen_transitions: HashSet::new(),
            marks: Vec::new(),
            seen_marks: HashSet::new(),
            facts_dropped: 0,
            retransmits: 0,
        }
    }

    /// Adds a failure line of this connection (its strings as `Names` ids): its call, and the
    /// state changes and kernel facts not seen yet, the latest kept.
    pub(super) fn add(&mut self, line: u64, f: read::Failure, cause: u32, errno: u32, syscall: u32, state: u32) {
        self.retransmits = self.retransmits.max(f.facts.retransmits);
        for t in f.history {
            let k = (t.mono_ns, t.from, t.to);
            if self.seen_transitions.insert(k.clone()) {
                self.transitions.push(k);
            }
        }
        if self.transitions.len() > 2 * MAX_TRANSITIONS {
            self.facts_dropped += keep_latest(&mut self.transitions, MAX_TRANSITIONS, |t| t.0);
        }
        for m in marks_of(&f.facts) {
            if self.seen_marks.insert((m.kind, m.at)) {
                self.marks.push(m);
            }
        }
        if self.marks.len() > 2 * MAX_MARKS {
            self.facts_dropped += keep_latest(&mut self.marks, MAX_MARKS, |m| m.at);
        }
        self.calls.push(RawCall {
            mono_ns: f.mono_ns,
            cause,
            errno,
            syscall,
            state,
            age_ns: f.cause_age_ns,
            explain: f.explain,
            line,
        });
    }
}

/// Keeps the `cap` latest entries of `v` (by `key`); returns how many it dropped.
fn keep_latest<T>(v: &mut Vec<T>, cap: usize, key: impl Fn(&T) -> u64) -> usize {
    if v.len() <= cap {
        return 0;
    }
    v.sort_by_key(key);
    let drop = v.len() - cap;
    v.drain(..drop);
    drop
}

/// The kernel facts of one failure line, as timeline marks with their words.
fn marks_of(facts: &read::Facts) -> Vec<RawMark> {
    let mut out = Vec::new();
    let mut mark = |kind: MarkKind, at: u64, end: u64, text: String| out.push(RawMark { kind, at, end, text });
    let in_state = |s: &Option<String>| s.as_deref().map(|s| format!(" in {s}")).unwrap_or_default();
    if let Some(s) = &facts.rst_received {
        let origin = match facts.rst_segment.as_ref().map(|seg| seg.origin.as_str()) {
            Some("refused") => ": the answer to our SYN (refused)",
            Some("aborted") => ": an RST+ACK, the peer aborted the connection",
            Some("no_connection") => ": an RST without ACK, the peer has no such connection",
            _ => "",
        };
        mark(MarkKind::RstReceived, s.mono_ns, s.mono_ns, format!("RST received{}{origin}", in_state(&s.state)));
    }
    if let Some(s) = &facts.rst_sent {
        mark(MarkKind::RstSent, s.mono_ns, s.mono_ns, format!("RST sent by this socket{}", in_state(&s.state)));
    }
    if let Some(s) = &facts.error_report {
        let e = s.value.map(|v| errno::name(v as i32)).unwrap_or_else(|| "?".into());
        mark(
            MarkKind::ErrorReport,
            s.mono_ns,
            s.mono_ns,
            format!("error {e} reported on the socket{}", in_state(&s.state)),
        );
    }
    if let Some(s) = &facts.at_attach {
        let pending = match s.value {
            Some(v) if v != 0 => format!(", error {} pending", errno::name(v as i32)),
            _ => String::new(),
        };
        mark(
            MarkKind::AtAttach,
            s.mono_ns,
            s.mono_ns,
            format!("snapshot at attach: the socket was open before the trace{}{pending}", in_state(&s.state)),
        );
    }
    if let Some(p) = &facts.peer_reset {
        let who = if p.no_socket {
            "with no socket owning the connection".to_string()
        } else {
            format!("by a {} socket, pid {} \"{}\" on the CPU", p.state.as_deref().unwrap_or("?"), p.pid, p.comm)
        };
        let reason = p.reason_name.as_deref().map(|r| format!(", reason {r}")).unwrap_or_default();
        mark(MarkKind::PeerReset, p.mono_ns, p.mono_ns, format!("the RST was sent on this host {who}{reason}"));
    }
    if let Some(i) = &facts.icmp {
        let who = if i.from_destination { "the destination" } else { "a router" };
        mark(MarkKind::Icmp, i.mono_ns, i.mono_ns, format!("ICMP from {} ({who}): {}", i.from, i.message));
    }
    for d in &facts.drops {
        let what = if d.flags.is_empty() { String::new() } else { format!(" ({})", d.flags.join("|")) };
        let place = d.function.as_deref().map(|f| format!(" in {f}")).unwrap_or_default();
        let reason = d.reason_name.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        mark(
            MarkKind::Drops,
            d.first_mono_ns,
            d.last_mono_ns.max(d.first_mono_ns),
            format!(
                "{} {} packet{} dropped on this host{what}{place}{reason}",
                d.count,
                d.direction,
                plural(d.count as u64)
            ),
        );
    }
    out
}

/// One connection: who, which addresses, what failed, and its timeline.
#[derive(Debug)]
pub struct Connection {
    /// Its rank: 0 is the most interesting.
    pub id: usize,
    pub pid: u32,
    pub comm: String,
    pub family: Option<String>,
    pub local: Option<String>,
    pub peer: Option<String>,
    pub fd: Option<i64>,
    pub container: Option<String>,
    pub pod: Option<String>,
    pub failures: u64,
    pub routine: u64,
    pub by_cause: Vec<(String, u64)>,
    pub retransmits: u32,
    pub first_wall_ns: u64,
    pub timeline: Timeline,
    pub(super) raw: RawTimeline,
}

#[derive(Debug, Default)]
pub(super) struct RawTimeline {
    offset: i128,
    calls: Vec<RawCall>,
    transitions: Vec<(u64, Option<String>, Option<String>)>,
    marks: Vec<RawMark>,
    facts_dropped: usize,
}

impl RawTimeline {
    /// How much the kernel recorded on the connection: its state changes and facts.
    pub(super) fn evidence(&self) -> usize {
        self.transitions.len() + self.marks.len() + self.facts_dropped
    }
}

impl Connection {
    pub(super) fn of(a: ConnAcc, names: &Names) -> Connection {
        let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
        for c in &a.calls {
            *counts.entry(c.cause).or_default() += 1;
        }
        let by_cause = names.by_cause(&counts);
        let routine: u64 = by_cause.iter().filter(|(c, _)| is_routine(c)).map(|(_, n)| n).sum();
        let first_mono = a.calls.iter().map(|c| c.mono_ns).min().unwrap_or(0);
        Connection {
            id: 0,
            pid: a.key.pid,
            comm: names.get(a.comm).to_string(),
            family: a.key.family,
            local: a.key.local,
            peer: a.key.peer,
            fd: a.key.fd,
            container: a.container,
            pod: a.pod,
            failures: a.calls.len() as u64 - routine,
            routine,
            by_cause,
            retransmits: a.retransmits,
            first_wall_ns: (first_mono as i128 + a.offset).max(0) as u64,
            timeline: Timeline::default(),
            raw: RawTimeline {
                offset: a.offset,
                calls: a.calls,
                transitions: a.transitions,
                marks: a.marks,
                facts_dropped: a.facts_dropped,
            },
        }
    }

    /// What the search box matches: pid, task name, addresses, causes, errnos, container, pod.
    pub fn search_text(&self) -> String {
        let mut parts = vec![format!("pid {}", self.pid), self.comm.clone()];
        parts.extend(self.family.iter().cloned());
        parts.extend(self.local.iter().cloned());
        parts.extend(self.peer.iter().cloned());
        parts.extend(self.container.iter().cloned());
        parts.extend(self.pod.iter().cloned());
        parts.extend(self.by_cause.iter().map(|(c, _)| c.clone()));
        parts.extend(self.timeline.errnos.iter().cloned());
        parts.join(" ").to_lowercase()
    }
}

/// A connection's timeline: offsets in ns from `t0` (monotonic), over `span_ns`.
#[derive(Debug, Default, Clone)]
pub struct Timeline {
    /// Wall-clock time of `t0`.
    pub wall0_ns: u64,
    pub span_ns: u64,
    pub bands: Vec<Band>,
    pub marks: Vec<Mark>,
    pub calls: Vec<CallMark>,
    /// The state changes (offset, from, to), in order.
    pub changes: Vec<(u64, Option<String>, Option<String>)>,
    pub errnos: Vec<String>,
    /// Drawn when the page opens, each group of calls with its own explanation.
    pub detailed: bool,
    /// The earliest state changes and kernel facts left out (a connection of many lines).
    pub facts_dropped: usize,
}

/// The socket in one TCP state from `start` to `end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Band {
    pub start: u64,
    pub end: u64,
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub kind: MarkKind,
    pub at: u64,
    pub end: u64,
    pub text: String,
    /// Which of the kernel row's `LANES` it is drawn in (0 first), so close marks stay apart.
    pub lane: u8,
}

/// Failing calls of one cause in one bin of the timeline, described by the first of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallMark {
    pub at: u64,
    pub last: u64,
    pub count: u64,
    pub cause: String,
    pub routine: bool,
    pub errno: String,
    pub syscall: String,
    pub state: String,
    pub age_ns: Option<u64>,
    pub explain: String,
    /// The capture's line of the first call.
    pub line: u64,
}

impl Timeline {
    /// Builds the picture's data: the range covers every call, fact, state change and the
    /// cause of every call (its age back from the call), calls are grouped by bin and cause.
    /// `own_explanations`: each group keeps its first call's explanation; otherwise every group
    /// of a cause shares the first explanation of that cause on the connection.
    /// `facts`: at most this many state changes and kernel facts, the latest.
    pub(super) fn build(
        raw: &mut RawTimeline,
        bins: u64,
        own_explanations: bool,
        facts: usize,
        names: &Names,
    ) -> Timeline {
        raw.calls.sort_by_key(|c| (c.mono_ns, c.line));
        raw.transitions.sort_by_key(|t| t.0);
        raw.marks.sort_by_key(|m| (m.at, m.kind));
        let mut facts_dropped = raw.facts_dropped;
        facts_dropped += keep_latest(&mut raw.transitions, facts, |t| t.0);
        facts_dropped += keep_latest(&mut raw.marks, facts, |m| m.at);
        let mut lo = u64::MAX;
        let mut hi = 0u64;
        let mut see = |t: u64| {
            lo = lo.min(t);
            hi = hi.max(t);
        };
        for c in &raw.calls {
            see(c.mono_ns);
            if let Some(age) = c.age_ns {
                see(c.mono_ns.saturating_sub(age));
            }
        }
        for t in &raw.transitions {
            see(t.0);
        }
        for m in &raw.marks {
            see(m.at);
            see(m.end);
        }
        if lo > hi {
            return Timeline::default();
        }
        // A margin on both sides; events closer together than 10 us are shown in 10 us.
        let width = hi - lo;
        let pad = if width < MIN_SPAN_NS { (MIN_SPAN_NS - width) / 2 } else { width / 40 };
        let t0 = lo.saturating_sub(pad);
        let span = hi + pad - t0;
        let off = |t: u64| t.saturating_sub(t0);

        let mut bands = Vec::new();
        if let Some(first) = raw.transitions.first() {
            if let Some(s) = &first.1 {
                bands.push(Band { start: 0, end: off(first.0), state: s.clone() });
            }
            for (i, t) in raw.transitions.iter().enumerate() {
                let end = raw.transitions.get(i + 1).map(|n| off(n.0)).unwrap_or(span);
                if let Some(s) = &t.2 {
                    bands.push(Band { start: off(t.0), end, state: s.clone() });
                }
            }
        }
        bands.retain(|b| b.end > b.start);

        // Marks closer than MARK_GAP of the width to the last one of a lane go to the next lane.
        let gap = span as u128 * MARK_GAP.0 / MARK_GAP.1;
        let mut lane_ends: [Option<u64>; LANES as usize] = [None; LANES as usize];
        let marks = raw
            .marks
            .iter()
            .map(|m| {
                let (at, end) = (off(m.at), off(m.end));
                let lane = (0..LANES)
                    .find(|&l| lane_ends[l as usize].is_none_or(|e| (at as u128) >= e as u128 + gap))
                    .unwrap_or_else(|| (0..LANES).min_by_key(|&l| lane_ends[l as usize]).unwrap_or(0));
                lane_ends[lane as usize] = Some(end);
                Mark { kind: m.kind, at, end, text: m.text.clone(), lane }
            })
            .collect();

        // Groups of one cause per bin; with many causes, fewer bins, so that a timeline has
        // at most half again as many marks as bins.
        let mut bins = bins.max(1);
        let groups = loop {
            let groups = group_calls(&raw.calls, |t| (off(t) as u128 * bins as u128 / span.max(1) as u128) as u64);
            if groups.len() as u64 <= bins * 3 / 2 || bins <= 4 {
                break groups;
            }
            bins /= 2;
        };
        let mut first_explain: HashMap<u32, usize> = HashMap::new();
        for (i, c) in raw.calls.iter().enumerate() {
            first_explain.entry(c.cause).or_insert(i);
        }
        let calls = groups
            .into_iter()
            .map(|(_, cause, first, count, last)| {
                let c = &raw.calls[first];
                let explain_from = if own_explanations { first } else { first_explain[&cause] };
                CallMark {
                    at: off(c.mono_ns),
                    last: off(last),
                    count,
                    cause: names.get(cause).to_string(),
                    routine: is_routine(names.get(cause)),
                    errno: names.get(c.errno).to_string(),
                    syscall: names.get(c.syscall).to_string(),
                    state: names.get(c.state).to_string(),
                    age_ns: c.age_ns,
                    explain: raw.calls[explain_from].explain.clone(),
                    line: c.line,
                }
            })
            .collect();
        let changes = raw.transitions.iter().map(|(t, from, to)| (off(*t), from.clone(), to.clone())).collect();
        let mut errnos: Vec<String> = raw.calls.iter().map(|c| names.get(c.errno).to_string()).collect();
        errnos.sort();
        errnos.dedup();
        Timeline {
            wall0_ns: (t0 as i128 + raw.offset).max(0) as u64,
            span_ns: span,
            bands,
            marks,
            calls,
            changes,
            errnos,
            detailed: own_explanations,
            facts_dropped,
        }
    }
}

/// Calls (sorted by time) grouped by (bin, cause): (bin, cause, first call, count, last time).
fn group_calls(calls: &[RawCall], bin_of: impl Fn(u64) -> u64) -> Vec<(u64, u32, usize, u64, u64)> {
    let mut groups: Vec<(u64, u32, usize, u64, u64)> = Vec::new();
    let mut index: HashMap<(u64, u32), usize> = HashMap::new();
    for (i, c) in calls.iter().enumerate() {
        let k = (bin_of(c.mono_ns), c.cause);
        match index.get(&k) {
            Some(&g) => {
                groups[g].3 += 1;
                groups[g].4 = c.mono_ns;
            }
            None => {
                index.insert(k, groups.len());
                groups.push((k.0, k.1, i, 1, c.mono_ns));
            }
        }
    }
    groups
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::report::read::{parse_line, Record};

    /// A failure line: connection `conn` (its port), at `mono` ns, with `cause`.
    pub(crate) fn line(conn: u16, mono: u64, cause: &str, extra: &str) -> String {
        format!(
            r#"{{"schema":6,"type":"failure","ts_ns":{},"mono_ns":{mono},"pid":{},"tid":1,"comm":"app","syscall":"recvfrom","fd":5,"errno":"ECONNRESET","state":"ESTABLISHED","state_now":"CLOSE","cause":"{cause}","saddr":"127.0.0.1","sport":{conn},"daddr":"10.0.0.1","dport":80,"family":"inet","cause_age_ns":1000,"history":[{{"mono_ns":100,"from":"CLOSE","to":"SYN_SENT"}},{{"mono_ns":200,"from":"SYN_SENT","to":"ESTABLISHED"}}],"facts":{{"rst_received":{{"mono_ns":{},"state":"ESTABLISHED","pid":0}},"retransmits":2,"drops":[]}},"explain":"reset {mono}"{extra}}}"#,
            1_700_000_000_000_000_000u64 + mono,
            100 + conn as u32 % 2,
            mono - 1000
        )
    }

    /// The lines of one connection gathered and drawn as the aggregation draws them: `bins`,
    /// `detailed` and `facts` as it gives them to a connection drawn on load (80, true,
    /// `DETAILED_FACTS` by default) or not (24, false, `COMPACT_FACTS`).
    fn timeline(lines: &[String], bins: u64, detailed: bool, facts: usize) -> Timeline {
        let mut names = Names::default();
        let mut acc: Option<ConnAcc> = None;
        for (i, l) in lines.iter().enumerate() {
            let n = i as u64 + 1;
            let Ok(Some(Record::Failure(f))) = parse_line(n, l) else { panic!("not a failure line: {l}") };
            let (cause, errno, syscall, state) = (
                names.id(&f.cause),
                names.id(f.errno.as_deref().unwrap_or("EOF")),
                names.id(&f.syscall),
                names.id(f.state.as_deref().unwrap_or("-")),
            );
            let key = ConnKey { clock: 0, pid: f.pid, family: None, local: None, peer: None, fd: None };
            let (comm, offset) = (names.id(&f.comm), f.ts_ns as i128 - f.mono_ns as i128);
            acc.get_or_insert_with(|| ConnAcc::new(key, comm, offset)).add(n, *f, cause, errno, syscall, state);
        }
        let mut c = Connection::of(acc.expect("at least one line"), &names);
        Timeline::build(&mut c.raw, bins, detailed, facts, &names)
    }

    #[test]
    fn a_timeline_has_its_states_its_facts_once_and_its_calls_in_bins() {
        let lines: Vec<String> = (0..10u64).map(|i| line(1, 10_000 + i * 10, "rst_received", "")).collect();
        let t = timeline(&lines, 80, true, DETAILED_FACTS);
        // CLOSE before the first transition, then SYN_SENT, then ESTABLISHED to the end.
        let states: Vec<&str> = t.bands.iter().map(|b| b.state.as_str()).collect();
        assert_eq!(states, ["CLOSE", "SYN_SENT", "ESTABLISHED"]);
        assert_eq!(t.bands.last().unwrap().end, t.span_ns);
        // Ten RST facts, one per line, all different instants: ten marks; the same fact
        // repeated on every line of a connection is one mark.
        assert_eq!(t.marks.len(), 10);
        // Ten marks 10 ns apart on a 10 us span: all lanes used, the first mark in the first.
        assert_eq!(t.marks[0].lane, 0);
        assert!((0..LANES).all(|l| t.marks.iter().any(|m| m.lane == l)));
        let again = timeline(
            &[line(1, 10_000, "rst_received", ""), line(1, 10_000, "rst_received", "")],
            80,
            true,
            DETAILED_FACTS,
        );
        assert_eq!(again.marks.len(), 1);
        // The calls, 90 ns apart over a span of at least 10 us, fall in a handful of bins.
        let counted: u64 = t.calls.iter().map(|m| m.count).sum();
        assert_eq!(counted, 10);
        assert!(t.calls.len() < 10, "{:?}", t.calls);
        // Every call and the cause behind it lie inside the range.
        for m in &t.calls {
            assert!(m.at >= m.age_ns.unwrap() && m.last <= t.span_ns, "{m:?}");
        }
        // Wall-clock time of the start: the earliest event (the first state change at 100 ns,
        // less the margin) on the lines' clock.
        assert!(t.wall0_ns <= 1_700_000_000_000_000_100, "{}", t.wall0_ns);
    }

    #[test]
    fn many_calls_make_few_marks_and_compact_timelines_share_explanations() {
        let lines: Vec<String> = (0..5_000u64).map(|i| line(1, 1_000_000 + i * 1_000, "rst_received", "")).collect();
        let t = timeline(&lines, 30, false, COMPACT_FACTS);
        assert!(t.calls.len() <= 31, "{}", t.calls.len());
        assert_eq!(t.calls.iter().map(|c| c.count).sum::<u64>(), 5_000);
        assert!(t.calls.iter().all(|c| c.explain == "reset 1000000"), "one explanation per cause");
        let t = timeline(&lines, 120, true, DETAILED_FACTS);
        // The calls take the last 5/6 of the range (the first state change is at 100 ns).
        assert!(t.calls.len() <= 120 && t.calls.len() > 90, "{}", t.calls.len());
        assert_eq!(t.calls[1].explain, format!("reset {}", 1_000_000 + t.calls[0].count * 1_000));
        // The first call's line number describes each group.
        assert_eq!((t.calls[0].line, t.calls[1].line), (1, 1 + t.calls[0].count));
    }

    #[test]
    fn many_causes_on_one_connection_make_fewer_bins() {
        let lines: Vec<String> =
            (0..4_000u64).map(|i| line(1, 1_000_000 + i * 1_000, &format!("cause_{}", i % 40), "")).collect();
        let t = timeline(&lines, 80, true, DETAILED_FACTS);
        // Forty causes: the bins shrink to the fewest (4), one mark per cause in each.
        assert!(t.calls.len() <= 4 * 40, "{}", t.calls.len());
        assert_eq!(t.calls.iter().map(|c| c.count).sum::<u64>(), 4_000);
    }

    #[test]
    fn a_long_connection_keeps_its_latest_facts_and_says_so() {
        // Every line brings two new state changes and a new RST: far more than a timeline keeps.
        let lines: Vec<String> = (0..300u64)
            .map(|i| {
                line(1, 1_000_000 + i * 1_000_000, "rst_received", "")
                    .replace("\"mono_ns\":100,", &format!("\"mono_ns\":{},", 1_000 + i * 1_000_000))
                    .replace("\"mono_ns\":200,", &format!("\"mono_ns\":{},", 2_000 + i * 1_000_000))
            })
            .collect();
        let t = timeline(&lines, 80, true, DETAILED_FACTS);
        assert_eq!(t.changes.len(), DETAILED_FACTS);
        assert_eq!(t.marks.len(), DETAILED_FACTS);
        assert_eq!(t.facts_dropped, 600 - DETAILED_FACTS + 300 - DETAILED_FACTS);
        // The latest are kept: the last line's RST is there.
        assert_eq!(
            t.marks.last().unwrap().at + (t.wall0_ns - 1_700_000_000_000_000_000),
            1_000_000 + 299 * 1_000_000 - 1_000
        );
        let compact = timeline(&lines, 24, false, COMPACT_FACTS);
        assert_eq!(compact.marks.len(), COMPACT_FACTS);
    }
}
