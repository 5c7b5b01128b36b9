//! Aggregation: the capture's records in, the page's numbers out. Counts over time by cause,
//! the errno x cause x state table, the top peers, processes, containers and pods, and the
//! connections, each with its timeline (`timeline` gathers and draws those).

use super::names::{is_routine, Names};
use super::read::{self, Problem, Record};
use super::timeline::{ConnAcc, ConnKey, Connection, Timeline, COMPACT_FACTS, DETAILED_FACTS};
use std::collections::{BTreeMap, HashMap};

/// Problems kept word for word (the rest are counted).
pub const MAX_PROBLEMS_KEPT: usize = 200;
/// Rows of the peers, processes, containers and pods tables.
pub const TOP_ROWS: usize = 25;
/// At most this many buckets in the chart of failures over time.
pub const MAX_BUCKETS: u64 = 120;
/// Lines from runs whose clocks (wall minus monotonic) differ by more than this are from
/// different boots or hosts: their connections are never merged.
const CLOCK_DOMAIN_NS: i128 = 10_000_000_000;

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
                self.accs.push(ConnAcc::new(key, comm, offset));
                i
            }
        };
        let acc = &mut self.accs[idx];
        acc.comm = comm;
        acc.container = container.or(acc.container.take());
        acc.pod = pod.or(acc.pod.take());
        acc.add(line, f, cause, errno, syscall, state);
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
                total.histories_refused += s.histories_refused;
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
        Ranked { name, failures: t.failures, routine: t.routine, by_cause: names.by_cause(&t.by_cause) }
    }
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
    use crate::report::timeline::tests::line;

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
    fn the_lines_of_one_socket_make_one_connection() {
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
        // Its ten RST facts, one per line (the timeline module checks how they are drawn).
        assert_eq!(c.timeline.marks.len(), 10);
        // An unknown cause is kept as it is and counted as a failure.
        let other = &r.connections[1];
        assert_eq!(other.by_cause, [("abandoned_connect".to_string(), 1), ("timeout".to_string(), 1)]);
        assert!(r.causes.iter().any(|c| c.code == "abandoned_connect" && !c.routine));
    }

    #[test]
    fn the_first_connections_are_drawn_in_detail_and_the_rest_compact() {
        // Every line brings a new RST: more facts than either kind of timeline keeps.
        let lines: Vec<String> = (0..5_000u64).map(|i| line(1, 1_000_000 + i * 1_000, "rst_received", "")).collect();
        let opts = Options { timelines: 0, detailed_bins: 120, compact_bins: 30, compact_marks: 60_000 };
        let t = &aggregate(&lines, opts).connections[0].timeline;
        assert!(!t.detailed && t.calls.len() <= 31, "{}", t.calls.len());
        assert!(t.calls.iter().all(|c| c.explain == "reset 1000000"), "one explanation per cause");
        assert_eq!(t.marks.len(), COMPACT_FACTS);
        let t = &aggregate(&lines, Options { timelines: 1, ..opts }).connections[0].timeline;
        assert!(t.detailed && t.calls.len() <= 120 && t.calls.len() > 90, "{}", t.calls.len());
        assert_eq!(t.marks.len(), DETAILED_FACTS);
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
