//! Aggregation: the capture's records in, the page's numbers out. Counts over time by cause,
//! the errno x cause x state table, the top peers, processes, containers and pods, and one
//! timeline per connection, its failing calls binned so a connection with 100,000 of them
//! still draws a few hundred marks.

use super::read::{self, Problem, Record};
use crate::model::errno;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Problems kept word for word (the rest are counted).
pub const MAX_PROBLEMS_KEPT: usize = 200;
/// Rows of the peers, processes, containers and pods tables.
pub const TOP_ROWS: usize = 25;
/// At most this many buckets in the chart of failures over time.
pub const MAX_BUCKETS: u64 = 120;
/// Kernel facts and state changes kept per connection, the latest (a socket's own history is
/// short; a connection's many lines may bring many).
const MAX_MARKS: usize = 64;
const MAX_TRANSITIONS: usize = 64;
/// State changes and kernel facts drawn for a connection (the latest): drawn on load, and not.
const DETAILED_FACTS: usize = 32;
const COMPACT_FACTS: usize = 16;
/// A connection whose events all lie closer together than this is drawn over this span.
const MIN_SPAN_NS: u64 = 10_000;
/// Kernel marks closer than this fraction of the timeline's width share no lane.
const MARK_GAP: (u128, u128) = (12, 1000);
pub const LANES: u8 = 3;
/// Lines from runs whose clocks (wall minus monotonic) differ by more than this are from
/// different boots or hosts: their connections are never merged.
const CLOCK_DOMAIN_NS: i128 = 10_000_000_000;

/// Whether a cause code is a routine outcome (EAGAIN, EINTR, EINPROGRESS, cancelled), by the
/// model's own rule; a code this socktrace does not know is a failure.
pub fn is_routine(cause: &str) -> bool {
    known_cause(cause).is_some_and(|c| c.is_routine())
}

pub fn known_cause(code: &str) -> Option<crate::model::Cause> {
    <crate::model::Cause as clap::ValueEnum>::from_str(code, false).ok()
}

/// Strings seen many times (causes, errnos, states, syscalls, names), stored once.
#[derive(Default, Debug)]
pub struct Names {
    index: HashMap<String, u32>,
    list: Vec<String>,
}

impl Names {
    pub fn id(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.list.len() as u32;
        self.list.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }

    pub fn get(&self, id: u32) -> &str {
        &self.list[id as usize]
    }
}

/// The errno of a failure as the summary names it: "EOF" for an end of file.
fn errno_label(e: &Option<String>) -> &str {
    e.as_deref().unwrap_or("EOF")
}

fn state_label(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("-")
}

/// `addr:port`, IPv6 in brackets, as socktrace's text output writes it.
pub fn endpoint(addr: &Option<String>, port: Option<u16>) -> Option<String> {
    let a = addr.as_deref()?;
    Some(match port {
        Some(p) if a.contains(':') => format!("[{a}]:{p}"),
        Some(p) => format!("{a}:{p}"),
        None => a.to_string(),
    })
}

/// Identifies a connection: one process's socket, by its addresses, or by its descriptor when
/// it has no local port yet (a connect that failed before one was bound, a listener's accept).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct ConnKey {
    clock: i128,
    pid: u32,
    family: Option<String>,
    local: Option<String>,
    peer: Option<String>,
    fd: Option<i64>,
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

#[derive(Debug)]
struct ConnAcc {
    key: ConnKey,
    comm: u32,
    container: Option<String>,
    pod: Option<String>,
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

/// Collects records; `finish` turns them into a `Report`.
#[derive(Default)]
pub struct Aggregator {
    pub names: Names,
    lines: u64,
    problems: Vec<Problem>,
    problems_total: u64,
    summaries: Vec<read::Summary>,
    schemas: std::collections::BTreeSet<u64>,
    /// (wall ns, cause) of every failure, bucketed at the end once the range is known.
    times: Vec<(u64, u32)>,
    by_label: HashMap<(u32, u32, u32), u64>,
    peers: HashMap<String, Tally>,
    no_peer: u64,
    processes: HashMap<(u32, u32), Tally>,
    containers: HashMap<String, Tally>,
    pods: HashMap<String, Tally>,
    conns: HashMap<ConnKey, usize>,
    accs: Vec<ConnAcc>,
}

/// Failures of one peer, process, container or pod, by cause.
#[derive(Default, Debug, Clone)]
pub struct Tally {
    pub failures: u64,
    pub routine: u64,
    pub by_cause: BTreeMap<u32, u64>,
}

impl Tally {
    fn add(&mut self, cause: u32, routine: bool) {
        if routine {
            self.routine += 1;
        } else {
            self.failures += 1;
        }
        *self.by_cause.entry(cause).or_default() += 1;
    }
}

impl Aggregator {
    pub fn add(&mut self, line: u64, r: Result<Record, Problem>) {
        self.lines = self.lines.max(line);
        match r {
            Ok(Record::Failure(f)) => self.failure(line, *f),
            Ok(Record::Summary(s)) => self.summaries.push(s),
            Err(p) => {
                self.problems_total += 1;
                if self.problems.len() < MAX_PROBLEMS_KEPT {
                    self.problems.push(p);
                }
            }
        }
    }

    /// Lines read (the last line number seen), for inputs whose reader counts them itself.
    pub fn set_lines(&mut self, lines: u64) {
        self.lines = self.lines.max(lines);
    }

    fn failure(&mut self, line: u64, f: read::Failure) {
        self.schemas.insert(f.schema);
        let cause = self.names.id(&f.cause);
        let routine = is_routine(&f.cause);
        let errno = self.names.id(errno_label(&f.errno));
        let state = self.names.id(state_label(&f.state));
        let syscall = self.names.id(if f.syscall.is_empty() { "?" } else { &f.syscall });
        let comm = self.names.id(&f.comm);
        self.times.push((f.ts_ns, cause));
        *self.by_label.entry((errno, cause, state)).or_default() += 1;
        let peer = endpoint(&f.daddr, f.dport);
        match &peer {
            Some(p) => self.peers.entry(p.clone()).or_default().add(cause, routine),
            None => self.no_peer += 1,
        }
        self.processes.entry((f.pid, comm)).or_default().add(cause, routine);
        let container = f.container.as_ref().map(|c| format!("{}:{}", c.runtime, &c.id[..c.id.len().min(12)]));
        if let Some(c) = &container {
            self.containers.entry(c.clone()).or_default().add(cause, routine);
        }
        let pod = f.pod.as_ref().map(|p| match &p.qos {
            Some(q) => format!("{} ({q})", p.uid),
            None => p.uid.clone(),
        });
        if let Some(p) = &pod {
            self.pods.entry(p.clone()).or_default().add(cause, routine);
        }

        let offset = f.ts_ns as i128 - f.mono_ns as i128;
        let local = endpoint(&f.saddr, f.sport);
        let has_port = f.sport.is_some_and(|p| p != 0);
        let key = ConnKey {
            clock: (offset + CLOCK_DOMAIN_NS / 2).div_euclid(CLOCK_DOMAIN_NS),
            pid: f.pid,
            family: f.family.clone(),
            local,
            peer,
            fd: if has_port { None } else { f.fd },
        };
        let idx = match self.conns.get(&key) {
            Some(&i) => i,
            None => {
                let i = self.accs.len();
                self.conns.insert(key.clone(), i);
                self.accs.push(ConnAcc {
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
                });
                i
            }
        };
        let acc = &mut self.accs[idx];
        acc.comm = comm;
        acc.container = container.or(acc.container.take());
        acc.pod = pod.or(acc.pod.take());
        acc.retransmits = acc.retransmits.max(f.facts.retransmits);
        for t in f.history {
            let k = (t.mono_ns, t.from, t.to);
            if acc.seen_transitions.insert(k.clone()) {
                acc.transitions.push(k);
            }
        }
        if acc.transitions.len() > 2 * MAX_TRANSITIONS {
            acc.facts_dropped += keep_latest(&mut acc.transitions, MAX_TRANSITIONS, |t| t.0);
        }
        for m in marks_of(&f.facts) {
            if acc.seen_marks.insert((m.kind, m.at)) {
                acc.marks.push(m);
            }
        }
        if acc.marks.len() > 2 * MAX_MARKS {
            acc.facts_dropped += keep_latest(&mut acc.marks, MAX_MARKS, |m| m.at);
        }
        acc.calls.push(RawCall {
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

    pub fn finish(self, opts: &Options) -> Report {
        let Aggregator {
            names,
            lines,
            problems,
            problems_total,
            summaries,
            schemas,
            times,
            by_label,
            peers,
            no_peer,
            processes,
            containers,
            pods,
            accs,
            ..
        } = self;
        let cause_name = |id: u32| names.get(id).to_string();

        // Causes: failures by count, then the routine outcomes.
        let mut cause_totals: HashMap<u32, u64> = HashMap::new();
        for &(_, c) in &times {
            *cause_totals.entry(c).or_default() += 1;
        }
        let mut causes: Vec<CauseTotal> = cause_totals
            .iter()
            .map(|(&c, &n)| CauseTotal { code: cause_name(c), routine: is_routine(names.get(c)), count: n })
            .collect();
        causes.sort_by(|a, b| a.routine.cmp(&b.routine).then(b.count.cmp(&a.count)).then(a.code.cmp(&b.code)));
        let routine = causes.iter().filter(|c| c.routine).map(|c| c.count).sum();
        let failures = causes.iter().filter(|c| !c.routine).map(|c| c.count).sum();

        let series = Series::of(&times, &names);

        // The table: the lines' counts, and the summary's where the capture ends with one.
        let mut table: BTreeMap<(String, String, String), (u64, Option<u64>)> = BTreeMap::new();
        for (&(e, c, s), &n) in &by_label {
            table.entry((names.get(e).into(), names.get(c).into(), names.get(s).into())).or_default().0 += n;
        }
        for s in &summaries {
            for r in &s.rows {
                let entry = table.entry((r.errno.clone(), r.cause.clone(), r.state.clone())).or_default();
                *entry.1.get_or_insert(0) += r.count;
            }
        }
        let mut table: Vec<Row> = table
            .into_iter()
            .map(|((errno, cause, state), (count, summary))| Row { errno, cause, state, count, summary })
            .collect();
        table.sort_by(|a, b| {
            b.count.cmp(&a.count).then(b.summary.cmp(&a.summary)).then((&a.errno, &a.cause).cmp(&(&b.errno, &b.cause)))
        });

        let rank = |m: HashMap<String, Tally>| -> (Vec<Ranked>, usize) {
            let total = m.len();
            let mut v: Vec<Ranked> = m.into_iter().map(|(name, t)| Ranked::of(name, t, &names)).collect();
            v.sort_by(|a, b| b.failures.cmp(&a.failures).then(b.routine.cmp(&a.routine)).then(a.name.cmp(&b.name)));
            v.truncate(TOP_ROWS);
            (v, total)
        };
        let (peers, peers_total) = rank(peers);
        let (processes, processes_total) =
            rank(processes.into_iter().map(|((pid, comm), t)| (format!("{} ({pid})", names.get(comm)), t)).collect());
        let (containers, containers_total) = rank(containers);
        let (pods, pods_total) = rank(pods);

        let mut connections: Vec<Connection> = accs.into_iter().map(|a| Connection::of(a, &names)).collect();
        // Most failures that are not routine first; then more causes, then more of what the
        // kernel recorded (a richer story), then the earliest.
        connections.sort_by(|a, b| {
            b.failures
                .cmp(&a.failures)
                .then(b.by_cause.len().cmp(&a.by_cause.len()))
                .then(b.routine.cmp(&a.routine))
                .then(b.raw.evidence().cmp(&a.raw.evidence()))
                .then(a.first_wall_ns.cmp(&b.first_wall_ns))
                .then(a.pid.cmp(&b.pid))
        });
        for (i, c) in connections.iter_mut().enumerate() {
            c.id = i;
        }
        // The most interesting connections are drawn with a mark per bin and the explanation
        // of each; the rest with fewer bins (fewer still when they are many) and one
        // explanation per cause.
        let rest = connections.len().saturating_sub(opts.timelines).max(1) as u64;
        let compact_bins = (opts.compact_marks / rest).clamp(4, opts.compact_bins.max(4));
        for (i, c) in connections.iter_mut().enumerate() {
            let detailed = i < opts.timelines;
            c.timeline = if detailed {
                Timeline::build(&mut c.raw, opts.detailed_bins, true, DETAILED_FACTS, &names)
            } else {
                Timeline::build(&mut c.raw, compact_bins, false, COMPACT_FACTS, &names)
            };
        }
        let (first_wall_ns, last_wall_ns) = match (times.iter().map(|t| t.0).min(), times.iter().map(|t| t.0).max()) {
            (Some(a), Some(b)) => (Some(a), Some(b)),
            _ => (None, None),
        };
        let summary = (!summaries.is_empty()).then(|| {
            let mut total = read::Summary::default();
            for s in &summaries {
                total.failures += s.failures;
                total.printed += s.printed;
                total.lost += s.lost;
                total.undecodable += s.undecodable;
                total.histories_evicted += s.histories_evicted;
            }
            (total, summaries.len())
        });
        Report {
            lines,
            problems,
            problems_total,
            schemas: schemas.into_iter().collect(),
            summary,
            failures,
            routine,
            first_wall_ns,
            last_wall_ns,
            causes,
            series,
            table,
            peers,
            peers_total,
            no_peer,
            processes,
            processes_total,
            containers,
            containers_total,
            pods,
            pods_total,
            connections,
        }
    }
}

/// How detailed the connections' timelines are.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// The connections drawn when the page opens, each call bin with its own explanation.
    pub timelines: usize,
    pub detailed_bins: u64,
    pub compact_bins: u64,
    /// About how many call marks all the other connections may have together.
    pub compact_marks: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options { timelines: 50, detailed_bins: 80, compact_bins: 24, compact_marks: 24_000 }
    }
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

pub fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CauseTotal {
    pub code: String,
    pub routine: bool,
    pub count: u64,
}

/// Failures over time: equal buckets of a round width, counts by cause.
#[derive(Debug, Default, Clone)]
pub struct Series {
    pub start_ns: u64,
    pub bucket_ns: u64,
    pub buckets: usize,
    /// cause -> count per bucket.
    pub by_cause: BTreeMap<String, Vec<u64>>,
}

/// Bucket widths the chart may use, ns.
const NICE_WIDTHS: [u64; 37] = [
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    50_000_000,
    100_000_000,
    200_000_000,
    500_000_000,
    1_000_000_000,
    2_000_000_000,
    5_000_000_000,
    10_000_000_000,
    15_000_000_000,
    30_000_000_000,
    60_000_000_000,
    120_000_000_000,
    300_000_000_000,
    600_000_000_000,
    900_000_000_000,
    1_800_000_000_000,
    3_600_000_000_000,
    7_200_000_000_000,
    10_800_000_000_000,
    21_600_000_000_000,
    43_200_000_000_000,
    86_400_000_000_000,
    604_800_000_000_000,
];

/// The smallest round width that puts `span_ns` in at most `max` buckets.
pub fn bucket_width(span_ns: u64, max: u64) -> u64 {
    NICE_WIDTHS.iter().copied().find(|w| span_ns / w < max).unwrap_or_else(|| span_ns / max + 1)
}

impl Series {
    fn of(times: &[(u64, u32)], names: &Names) -> Series {
        let (Some(first), Some(last)) = (times.iter().map(|t| t.0).min(), times.iter().map(|t| t.0).max()) else {
            return Series::default();
        };
        let width = bucket_width(last - first, MAX_BUCKETS);
        let start = first - first % width;
        let buckets = ((last - start) / width + 1) as usize;
        let mut by_id: HashMap<u32, Vec<u64>> = HashMap::new();
        for &(t, c) in times {
            by_id.entry(c).or_insert_with(|| vec![0; buckets])[((t - start) / width) as usize] += 1;
        }
        Series {
            start_ns: start,
            bucket_ns: width,
            buckets,
            by_cause: by_id.into_iter().map(|(c, v)| (names.get(c).to_string(), v)).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub errno: String,
    pub cause: String,
    pub state: String,
    /// Failure lines with this label.
    pub count: u64,
    /// What the capture's summary counted (routine outcomes counted in the kernel included).
    pub summary: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Ranked {
    pub name: String,
    pub failures: u64,
    pub routine: u64,
    /// Causes by count, largest first.
    pub by_cause: Vec<(String, u64)>,
}

impl Ranked {
    fn of(name: String, t: Tally, names: &Names) -> Ranked {
        let mut by_cause: Vec<(String, u64)> =
            t.by_cause.iter().map(|(&c, &n)| (names.get(c).to_string(), n)).collect();
        by_cause.sort_by(|a, b| is_routine(&a.0).cmp(&is_routine(&b.0)).then(b.1.cmp(&a.1)).then(a.0.cmp(&b.0)));
        Ranked { name, failures: t.failures, routine: t.routine, by_cause }
    }
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
    raw: RawTimeline,
}

#[derive(Debug, Default)]
struct RawTimeline {
    offset: i128,
    calls: Vec<RawCall>,
    transitions: Vec<(u64, Option<String>, Option<String>)>,
    marks: Vec<RawMark>,
    facts_dropped: usize,
}

impl RawTimeline {
    /// How much the kernel recorded on the connection: its state changes and facts.
    fn evidence(&self) -> usize {
        self.transitions.len() + self.marks.len() + self.facts_dropped
    }
}

impl Connection {
    fn of(a: ConnAcc, names: &Names) -> Connection {
        let mut by_cause: BTreeMap<u32, u64> = BTreeMap::new();
        for c in &a.calls {
            *by_cause.entry(c.cause).or_default() += 1;
        }
        let ranked = Ranked::of(String::new(), Tally { failures: 0, routine: 0, by_cause }, names);
        let routine: u64 = ranked.by_cause.iter().filter(|(c, _)| is_routine(c)).map(|(_, n)| n).sum();
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
            by_cause: ranked.by_cause,
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
    fn build(raw: &mut RawTimeline, bins: u64, own_explanations: bool, facts: usize, names: &Names) -> Timeline {
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

/// Everything the page shows.
#[derive(Debug)]
pub struct Report {
    pub lines: u64,
    pub problems: Vec<Problem>,
    pub problems_total: u64,
    pub schemas: Vec<u64>,
    /// The capture's summary lines, added up, and how many there were.
    pub summary: Option<(read::Summary, usize)>,
    /// Failure lines that are not routine outcomes, and those that are.
    pub failures: u64,
    pub routine: u64,
    pub first_wall_ns: Option<u64>,
    pub last_wall_ns: Option<u64>,
    pub causes: Vec<CauseTotal>,
    pub series: Series,
    pub table: Vec<Row>,
    pub peers: Vec<Ranked>,
    pub peers_total: usize,
    /// Failure lines without a peer address (a listener's accept, a connect before routing).
    pub no_peer: u64,
    pub processes: Vec<Ranked>,
    pub processes_total: usize,
    pub containers: Vec<Ranked>,
    pub containers_total: usize,
    pub pods: Vec<Ranked>,
    pub pods_total: usize,
    pub connections: Vec<Connection>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::read::parse_line;

    /// A failure line: connection `conn` (its port), at `mono` ns, with `cause`.
    fn line(conn: u16, mono: u64, cause: &str, extra: &str) -> String {
        format!(
            r#"{{"schema":6,"type":"failure","ts_ns":{},"mono_ns":{mono},"pid":{},"tid":1,"comm":"app","syscall":"recvfrom","fd":5,"errno":"ECONNRESET","state":"ESTABLISHED","state_now":"CLOSE","cause":"{cause}","saddr":"127.0.0.1","sport":{conn},"daddr":"10.0.0.1","dport":80,"family":"inet","cause_age_ns":1000,"history":[{{"mono_ns":100,"from":"CLOSE","to":"SYN_SENT"}},{{"mono_ns":200,"from":"SYN_SENT","to":"ESTABLISHED"}}],"facts":{{"rst_received":{{"mono_ns":{},"state":"ESTABLISHED","pid":0}},"retransmits":2,"drops":[]}},"explain":"reset {mono}"{extra}}}"#,
            1_700_000_000_000_000_000u64 + mono,
            100 + conn as u32 % 2,
            mono - 1000
        )
    }

    fn aggregate(lines: &[String], opts: Options) -> Report {
        let mut a = Aggregator::default();
        for (i, l) in lines.iter().enumerate() {
            if let Some(r) = parse_line(i as u64 + 1, l).transpose() {
                a.add(i as u64 + 1, r);
            }
        }
        a.finish(&opts)
    }

    #[test]
    fn buckets_are_round_and_cover_the_range() {
        assert_eq!(bucket_width(0, 120), 1_000);
        assert_eq!(bucket_width(119_999, 120), 1_000);
        assert_eq!(bucket_width(120_000, 120), 2_000);
        assert_eq!(bucket_width(3_600_000_000_000, 120), 60_000_000_000);
        // 5 s of failures: 50 ms buckets, the first starting on a round instant.
        let lines: Vec<String> = (0..=50)
            .map(|i| line(1, 1_000_000 + i * 100_000_000, if i % 5 == 0 { "would_block" } else { "rst_received" }, ""))
            .collect();
        let r = aggregate(&lines, Options::default());
        assert_eq!(r.series.bucket_ns, 50_000_000);
        assert_eq!(r.series.start_ns % 50_000_000, 0);
        assert_eq!(r.series.buckets, 101);
        let total = |c: &str| r.series.by_cause[c].iter().sum::<u64>();
        assert_eq!((total("rst_received"), total("would_block")), (40, 11));
        assert_eq!((r.failures, r.routine), (40, 11));
        // Non-routine causes first, then the routine ones.
        assert_eq!(r.causes.iter().map(|c| c.code.as_str()).collect::<Vec<_>>(), ["rst_received", "would_block"]);
    }

    #[test]
    fn one_timeline_per_connection_with_its_facts_once() {
        let mut lines = Vec::new();
        for i in 0..10u64 {
            lines.push(line(1, 10_000 + i * 10, "rst_received", ""));
        }
        lines.push(line(2, 50_000, "timeout", ""));
        lines.push(line(2, 60_000, "abandoned_connect", r#","new_key":1"#));
        let r = aggregate(&lines, Options::default());
        assert_eq!(r.connections.len(), 2);
        let c = &r.connections[0];
        assert_eq!(
            (c.local.as_deref(), c.peer.as_deref(), c.failures, c.retransmits),
            (Some("127.0.0.1:1"), Some("10.0.0.1:80"), 10, 2)
        );
        let t = &c.timeline;
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
        let again =
            aggregate(&[line(1, 10_000, "rst_received", ""), line(1, 10_000, "rst_received", "")], Options::default());
        assert_eq!(again.connections[0].timeline.marks.len(), 1);
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
        // An unknown cause is kept as it is and counted as a failure.
        let other = &r.connections[1];
        assert_eq!(other.by_cause, [("abandoned_connect".to_string(), 1), ("timeout".to_string(), 1)]);
        assert!(r.causes.iter().any(|c| c.code == "abandoned_connect" && !c.routine));
    }

    #[test]
    fn many_calls_make_few_marks_and_compact_timelines_share_explanations() {
        let lines: Vec<String> = (0..5_000u64).map(|i| line(1, 1_000_000 + i * 1_000, "rst_received", "")).collect();
        let opts = Options { timelines: 0, detailed_bins: 120, compact_bins: 30, compact_marks: 60_000 };
        let r = aggregate(&lines, opts);
        let t = &r.connections[0].timeline;
        assert!(t.calls.len() <= 31, "{}", t.calls.len());
        assert_eq!(t.calls.iter().map(|c| c.count).sum::<u64>(), 5_000);
        assert!(t.calls.iter().all(|c| c.explain == "reset 1000000"), "one explanation per cause");
        let r = aggregate(&lines, Options { timelines: 1, ..opts });
        let t = &r.connections[0].timeline;
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
        let r = aggregate(&lines, Options::default());
        let t = &r.connections[0].timeline;
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
        let r = aggregate(&lines, Options::default());
        let t = &r.connections[0].timeline;
        assert_eq!(t.changes.len(), DETAILED_FACTS);
        assert_eq!(t.marks.len(), DETAILED_FACTS);
        assert_eq!(t.facts_dropped, 600 - DETAILED_FACTS + 300 - DETAILED_FACTS);
        // The latest are kept: the last line's RST is there.
        assert_eq!(
            t.marks.last().unwrap().at + (t.wall0_ns - 1_700_000_000_000_000_000),
            1_000_000 + 299 * 1_000_000 - 1_000
        );
        let compact = aggregate(&lines, Options { timelines: 0, ..Options::default() });
        assert_eq!(compact.connections[0].timeline.marks.len(), COMPACT_FACTS);
    }

    #[test]
    fn connections_without_a_local_port_are_told_apart_by_descriptor() {
        let l = |fd: i32, mono: u64| {
            format!(
                r#"{{"schema":6,"type":"failure","ts_ns":{mono},"mono_ns":{mono},"pid":9,"comm":"c","syscall":"connect","fd":{fd},"errno":"ENETUNREACH","cause":"no_route","saddr":null,"sport":null,"daddr":"10.9.0.1","dport":80,"history":[],"facts":{{}},"explain":"x"}}"#
            )
        };
        let r = aggregate(&[l(3, 1), l(4, 2), l(3, 3)], Options::default());
        assert_eq!(r.connections.len(), 2);
        assert_eq!(r.connections[0].failures, 2);
        assert_eq!(r.connections[0].fd, Some(3));
        assert!(r.connections[0].timeline.bands.is_empty());
        assert_eq!(r.peers[0].name, "10.9.0.1:80");
    }

    #[test]
    fn the_table_and_problems_keep_what_the_capture_said() {
        let mut lines =
            vec![line(1, 5_000, "rst_received", ""), "oops".to_string(), line(1, 6_000, "rst_received", "")];
        lines.push(r#"{"schema":6,"type":"summary","failures":7,"printed":2,"lost":1,"rows":[{"errno":"ECONNRESET","cause":"rst_received","state":"ESTABLISHED","count":2},{"errno":"EAGAIN","cause":"would_block","state":"ESTABLISHED","count":5}]}"#.into());
        let r = aggregate(&lines, Options::default());
        assert_eq!(r.problems.len(), 1);
        assert_eq!(r.problems[0].line, 2);
        assert_eq!(r.lines, 4);
        assert_eq!(
            r.table,
            [
                Row {
                    errno: "ECONNRESET".into(),
                    cause: "rst_received".into(),
                    state: "ESTABLISHED".into(),
                    count: 2,
                    summary: Some(2)
                },
                Row {
                    errno: "EAGAIN".into(),
                    cause: "would_block".into(),
                    state: "ESTABLISHED".into(),
                    count: 0,
                    summary: Some(5)
                },
            ]
        );
        let (s, n) = r.summary.as_ref().unwrap();
        assert_eq!((s.failures, s.lost, *n), (7, 1, 1));
    }
}
