//! The end-of-session summary: counts by errno x cause x state, and the peers that failed most.
//! Every failing call the kernel reported is counted, printed or not; the kernel's own count of
//! events it could not send (a full ring buffer) is reported beside them, never hidden.

use crate::diagnose::Diagnosis;
use crate::facts::Failure;
use crate::model::{errno, Cause, TcpState};
use crate::render::SCHEMA_VERSION;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// How many peers the summary lists.
pub const TOP_PEERS: usize = 10;
/// Distinct peers counted one by one; the rest share the `OTHER_PEERS` row.
const MAX_PEERS: usize = 10_000;
const OTHER_PEERS: &str = "(other peers)";

/// What failures are counted by, here and in the exporters: the errno's name ("EOF" for an
/// end of file), the cause's code, and the TCP state the error was born in ("-" unknown).
pub type Label = (String, &'static str, &'static str);

/// A diagnosed failure's label.
pub fn label(f: &Failure, d: &Diagnosis) -> Label {
    (f.errno_label(), d.cause.code(), d.state.map(|s| s.name()).unwrap_or("-"))
}

/// The label of routine outcomes the kernel counted without an event: (kind, TCP state).
pub fn routine_label(kind: u32, state: u8) -> Label {
    let errno = socktrace_common::routine::errno_of(kind);
    (
        // A socket ended with no call failing reads as an ended failure's does.
        if errno == 0 { "-".into() } else { errno::name(errno) },
        Cause::of_routine(kind).code(),
        TcpState::from_kernel(state).map(|s| s.name()).unwrap_or("-"),
    )
}

#[derive(Default, Debug)]
pub struct Summary {
    /// (errno name, cause, state) -> count.
    pub by_label: BTreeMap<Label, u64>,
    /// By peer address (None: past `MAX_PEERS`, the others together), named only when the
    /// summary is written: a burst of failures formats no address per failure here.
    pub by_peer: HashMap<Option<std::net::SocketAddr>, u64>,
    /// Failures: every outcome that is not routine.
    pub failures: u64,
    /// Routine outcomes (EAGAIN, EINTR, EINPROGRESS, ...) by errno name: sent as events
    /// (`--all-errors`) or counted in the kernel.
    pub routine: BTreeMap<String, u64>,
    pub printed: u64,
    pub undecodable: u64,
    pub lost: u64,
    /// Socket histories left in the kernel's map at the end.
    pub sockets_tracked: u64,
    /// Sockets that got no history because the kernel's history map was full.
    pub histories_refused: u64,
    /// SYNs dropped for full accept queues in the watched namespaces during the session.
    pub listen_overflows: Option<u64>,
    /// Runs of socktrace's event programs the kernel skipped (events not seen), by event.
    pub missed_runs: Vec<(&'static str, u64)>,
}

#[derive(Serialize)]
struct JsonMissed<'a> {
    event: &'a str,
    runs: u64,
}

#[derive(Serialize)]
struct JsonRow<'a> {
    errno: &'a str,
    cause: &'a str,
    state: &'a str,
    count: u64,
}

#[derive(Serialize)]
struct JsonPeer<'a> {
    peer: &'a str,
    failures: u64,
}

/// Which probe served each kernel event, for the JSON summary (the research user's record of
/// how a run observed the kernel).
#[derive(Clone, Debug, Default)]
pub struct ProbeReport {
    pub mode: &'static str,
    pub used: Vec<ProbeUsed>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProbeUsed {
    pub event: &'static str,
    pub probe: String,
    /// Better probes passed over on this kernel, each with why.
    pub passed_over: Vec<String>,
}

impl ProbeReport {
    pub fn of(probes: &crate::kernel::load::Probes) -> Self {
        let mut used: Vec<ProbeUsed> = probes
            .choices
            .iter()
            .map(|c| ProbeUsed { event: c.event, probe: c.probes(), passed_over: c.passed_over.clone() })
            .collect();
        used.push(ProbeUsed {
            event: "failing call",
            probe: probes.syscall_hook.probe(),
            passed_over: probes.syscall_hook.passed_over.clone(),
        });
        used.push(match &probes.io_uring {
            Ok(door) => ProbeUsed {
                event: "failing io_uring request",
                probe: door.probe().into(),
                passed_over: door.passed_over.clone(),
            },
            Err(why) => ProbeUsed {
                event: "failing io_uring request",
                probe: "none (not watched)".into(),
                passed_over: vec![why.clone()],
            },
        });
        // The facts beside the probe modes: each probe, or none and why.
        for (event, result, without) in [
            ("ICMP error received", &probes.icmp, "none (senders not recorded)"),
            ("RST segment received", &probes.rst_segment, "none (segments not seen)"),
            ("packet dropped", &probes.drops, "none (drops not recorded)"),
        ] {
            used.push(match result {
                Ok(probe) => ProbeUsed { event, probe: (*probe).into(), passed_over: Vec::new() },
                Err(why) => ProbeUsed { event, probe: without.into(), passed_over: vec![why.clone()] },
            });
        }
        ProbeReport { mode: probes.mode.name(), used }
    }
}

/// Whether a cause code is a routine outcome's.
fn is_routine_code(code: &str) -> bool {
    <Cause as clap::ValueEnum>::from_str(code, false).is_ok_and(|c| c.is_routine())
}

/// Where a routine outcome is counted in `routine`: by its errno, or by its cause for a socket
/// ended without a failing call (`superseded`, `closed_at_once`).
fn routine_key(label: &Label) -> String {
    if label.0 == "-" {
        label.1.to_string()
    } else {
        label.0.clone()
    }
}

#[derive(Serialize)]
struct JsonSummary<'a> {
    schema: u32,
    #[serde(rename = "type")]
    kind: &'static str,
    /// Schema 7: failures only; routine outcomes are counted apart in `routine`.
    failures: u64,
    /// Schema 7: routine outcomes by errno name.
    routine: &'a BTreeMap<String, u64>,
    printed: u64,
    lost: u64,
    undecodable: u64,
    sockets_tracked: u64,
    histories_refused: u64,
    listen_overflows: Option<u64>,
    /// Schema 6: runs of the event programs the kernel skipped, by event (none: empty).
    missed_runs: Vec<JsonMissed<'a>>,
    probe_mode: &'a str,
    probes: &'a [ProbeUsed],
    rows: Vec<JsonRow<'a>>,
    top_peers: Vec<JsonPeer<'a>>,
}

impl Summary {
    pub fn add(&mut self, f: &Failure, d: &Diagnosis) {
        let label = label(f, d);
        if d.cause.is_routine() {
            *self.routine.entry(routine_key(&label)).or_default() += 1;
            *self.by_label.entry(label).or_default() += 1;
            return;
        }
        self.failures += 1;
        *self.by_label.entry(label).or_default() += 1;
        if let Some(r) = f.remote {
            // Bounded for a session that runs for weeks (the agent): past MAX_PEERS distinct
            // peers, new ones are counted together.
            let key =
                if self.by_peer.len() < MAX_PEERS || self.by_peer.contains_key(&Some(r)) { Some(r) } else { None };
            *self.by_peer.entry(key).or_default() += 1;
        }
    }

    /// Routine failures the kernel counted without sending them.
    pub fn add_kernel_counts(&mut self, counts: &[(u32, u8, u64)]) {
        for &(kind, state, n) in counts {
            let label = routine_label(kind, state);
            if kind == socktrace_common::routine::SEND_MEMORY {
                // Not routine: TCP refused the memory (counted, printed with --all-errors).
                self.failures += n;
            } else {
                *self.routine.entry(routine_key(&label)).or_default() += n;
            }
            *self.by_label.entry(label).or_default() += n;
        }
    }

    fn top_peers(&self) -> Vec<(String, u64)> {
        let name = |p: &Option<std::net::SocketAddr>| p.map_or_else(|| OTHER_PEERS.to_string(), |a| a.to_string());
        let mut peers: Vec<(String, u64)> = self.by_peer.iter().map(|(p, n)| (name(p), *n)).collect();
        peers.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        peers.truncate(TOP_PEERS);
        peers
    }

    /// Rows sorted by count, largest first.
    fn rows(&self) -> Vec<(&(String, &'static str, &'static str), u64)> {
        let mut rows: Vec<_> = self.by_label.iter().map(|(k, v)| (k, *v)).collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        rows
    }

    /// The table as text; rows that do not fit a terminal of `width` columns wrap.
    pub fn to_text(&self, width: Option<usize>) -> String {
        let text = self.table();
        match width {
            // Aligned rows that fit stay as they are.
            Some(w) => text
                .split('\n')
                .map(|l| if l.chars().count() > w { crate::text::wrap(l, w, 10) } else { l.to_string() })
                .collect::<Vec<_>>()
                .join("\n"),
            None => text,
        }
    }

    fn table(&self) -> String {
        let text = self.table_rows();
        // Padding ends no line.
        text.lines().map(str::trim_end).collect::<Vec<_>>().join("\n") + "\n"
    }

    fn table_rows(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("\n{:>8}  {:<16} {:<15} {:<12}\n", "count", "errno", "cause", "state"));
        for ((errno, cause, state), n) in self.rows() {
            out.push_str(&format!("{n:>8}  {errno:<16} {cause:<15} {state:<12}\n"));
        }
        out.push_str(&format!(
            "{:>8}  {} ({} printed, {} lost{}){}\n",
            self.failures,
            if self.failures == 1 { "failure" } else { "failures" },
            self.printed,
            self.lost,
            if self.undecodable > 0 { format!(", {} undecodable", self.undecodable) } else { String::new() },
            self.routine_text().map(|r| format!("; routine: {r}")).unwrap_or_default()
        ));
        if !self.missed_runs.is_empty() {
            let n = crate::facts::missed_total(&self.missed_runs);
            out.push_str(&format!(
                "{n:>8}  probe runs the kernel skipped (events not seen: {})\n",
                crate::facts::describe_missed(&self.missed_runs)
            ));
        }
        if let Some(n) = self.listen_overflows.filter(|&n| n > 0) {
            out.push_str(&format!(
                "{n:>8}  SYNs dropped for full accept queues (listen overflows) in the traced processes' network namespaces\n"
            ));
        }
        let peers = self.top_peers();
        if !peers.is_empty() {
            out.push_str(&format!("\n{:>8}  {}\n", "failures", "peer"));
            for (peer, n) in peers {
                out.push_str(&format!("{n:>8}  {peer}\n"));
            }
        }
        out
    }

    pub fn to_json(&self, probes: &ProbeReport) -> String {
        let rows = self.rows();
        let peers = self.top_peers();
        let s = JsonSummary {
            schema: SCHEMA_VERSION,
            kind: "summary",
            failures: self.failures,
            routine: &self.routine,
            printed: self.printed,
            lost: self.lost,
            undecodable: self.undecodable,
            sockets_tracked: self.sockets_tracked,
            histories_refused: self.histories_refused,
            listen_overflows: self.listen_overflows,
            missed_runs: self.missed_runs.iter().map(|(event, runs)| JsonMissed { event, runs: *runs }).collect(),
            probe_mode: probes.mode,
            probes: &probes.used,
            rows: rows.iter().map(|((errno, cause, state), n)| JsonRow { errno, cause, state, count: *n }).collect(),
            top_peers: peers.iter().map(|(peer, n)| JsonPeer { peer, failures: *n }).collect(),
        };
        serde_json::to_string(&s).unwrap_or_default()
    }

    /// Routine outcomes by errno, most first: `EINPROGRESS 40, EAGAIN 1`.
    fn routine_text(&self) -> Option<String> {
        let mut routine: Vec<(&String, &u64)> = self.routine.iter().filter(|(_, n)| **n > 0).collect();
        routine.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        (!routine.is_empty()).then(|| routine.iter().map(|(e, n)| format!("{e} {n}")).collect::<Vec<_>>().join(", "))
    }

    /// The one-line count for stderr: failures (by cause) and routine outcomes apart.
    pub fn one_line(&self) -> String {
        let mut by_cause: BTreeMap<&str, u64> = BTreeMap::new();
        for ((_, cause, _), n) in self.by_label.iter().filter(|((_, cause, _), _)| !is_routine_code(cause)) {
            *by_cause.entry(cause).or_default() += n;
        }
        let causes: Vec<String> = by_cause.iter().map(|(c, n)| format!("{c} {n}")).collect();
        format!(
            "{} failure{}{}, {} printed{}{}{}{}{}",
            self.failures,
            if self.failures == 1 { "" } else { "s" },
            if causes.is_empty() { String::new() } else { format!(" ({})", causes.join(", ")) },
            self.printed,
            self.routine_text().map(|r| format!("; routine: {r}")).unwrap_or_default(),
            if self.lost > 0 { format!(", {} LOST (ring buffer full)", self.lost) } else { String::new() },
            if self.undecodable > 0 { format!(", {} undecodable records", self.undecodable) } else { String::new() },
            if self.histories_refused > 0 {
                format!(", {} sockets got no history (history map full: --max-histories)", self.histories_refused)
            } else {
                String::new()
            },
            match crate::facts::missed_total(&self.missed_runs) {
                0 => String::new(),
                n => format!(", {n} probe runs skipped by the kernel (events not seen)"),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{Failure, History};
    use crate::model::Syscall;

    /// Peers are counted one by one up to `MAX_PEERS`, the rest together, and named (sorted by
    /// count, then by name) only when the summary is written.
    #[test]
    fn peers_are_counted_then_named() {
        let mut s = Summary::default();
        let mut f = Failure::for_test(Syscall::Connect, Some(111), TcpState::Close, History::default());
        let d = crate::diagnose::diagnose(&f);
        let peer = |i: usize| std::net::SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 80));
        for i in 0..MAX_PEERS + 3 {
            f.remote = Some(peer(i));
            s.add(&f, &d);
        }
        // A peer already counted keeps its own row past the bound.
        f.remote = Some(peer(7));
        s.add(&f, &d);
        assert_eq!(s.by_peer.len(), MAX_PEERS + 1);
        let top = s.top_peers();
        assert_eq!(top[0], (OTHER_PEERS.to_string(), 3));
        assert_eq!(top[1], ("10.0.0.7:80".to_string(), 2));
        assert_eq!(top[2], ("10.0.0.0:80".to_string(), 1));
        assert_eq!(s.failures, MAX_PEERS as u64 + 4);
    }
}
