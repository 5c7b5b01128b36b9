//! Sockets the application ended while they waited: its own connect or read timeout, which no
//! system call reports. nginx, curl, CPython, Java, Go and Node start a non-blocking connect,
//! wait with their own timer, and close the socket when it fires; the kernel never fails a
//! call. What the socket was doing then (`facts::Ended`) says what happened on the wire: a
//! connect no SYN-ACK answered (and why, where this host knows), data the peer stopped
//! acknowledging, a peer that stopped reading, a peer that acknowledged and never answered.
//! The words state what was sent, acknowledged and received, for how long, and who ended it;
//! never a guess at the program's intent. A connect that lost a race to another address of
//! the same service (Happy Eyeballs) is routine.

use super::history::{count, peer, secs};
use super::{drops, icmp, resource, Diagnosis};
use crate::facts::{describe_exit, Ended, EndingCall, Failure};
use crate::model::{Cause, TcpState};

/// The diagnosis of a socket the process ended.
pub fn ended(f: &Failure, e: &Ended) -> Diagnosis {
    if matches!(e.from, Some(TcpState::SynSent | TcpState::SynRecv)) {
        if let Some(dg) = superseded(f, e) {
            return dg;
        }
        return connect(f, e);
    }
    if e.unacked > 0 && e.rto_retransmits > 0 {
        return unacked(f, e);
    }
    if e.snd_wnd == 0 && (e.unacked > 0 || e.unsent > 0) {
        return zero_window(f, e);
    }
    no_reply(f, e)
}

/// For a failed connect the program followed with one to another address of the same port
/// that was established: "; the program then connected to 127.0.0.1:8003 (0.4 ms later)".
pub fn fallback(f: &Failure) -> Option<String> {
    let (at, to) = f.fallback?;
    Some(format!(
        "; the program then connected to {to} instead ({} later): its fallback worked",
        crate::text::human_ns(at.saturating_sub(f.ts_ns))
    ))
}

/// How the process ended it: "the process closed the socket (close(fd=5))", "the process
/// exited (killed by SIGKILL)".
fn who_ended(f: &Failure, e: &Ended) -> String {
    if let Some(code) = e.exit_code {
        return format!("the process exited ({}) with it open", describe_exit(code));
    }
    let call = f.call_display();
    match e.call {
        EndingCall::Close(_) | EndingCall::Dup(_) => format!("the process closed the socket ({call})"),
        EndingCall::Shutdown(_) => format!("the process shut the socket down ({call})"),
        EndingCall::Connect(_) => format!("the process disconnected the socket ({call})"),
        EndingCall::Exit => "the process exited with it open".into(),
        EndingCall::Other(_) => format!("the process ended the socket ({call})"),
        EndingCall::Unknown => "the process closed the socket (this kernel does not say with which call)".into(),
    }
}

/// When the last connect on this socket began (its CLOSE -> SYN_SENT).
fn connect_started(f: &Failure) -> Option<u64> {
    f.history.transitions.iter().rev().find(|t| t.new == Some(TcpState::SynSent)).map(|t| t.ts_ns)
}

/// Another connect of the same process to the same port was established while this one
/// waited: the program went with it and dropped this one (Happy Eyeballs). Routine.
fn superseded(f: &Failure, e: &Ended) -> Option<Diagnosis> {
    let (won_at, winner) = e.sibling?;
    let started = connect_started(f)?;
    if won_at < started || won_at > f.ts_ns || f.remote == Some(winner) {
        return None;
    }
    let explain = format!(
        "another connect of this process to port {}, to {winner}, was established {} before; {} with this one to {} \
         still in SYN_SENT: it lost the race (Happy Eyeballs), nothing failed",
        winner.port(),
        secs(f.ts_ns.saturating_sub(won_at)),
        who_ended(f, e),
        peer(f.remote)
    );
    Some(Diagnosis::new(Cause::Superseded, Some(TcpState::SynSent), Some(won_at), explain))
}

/// A connect no SYN-ACK answered, given up by the program: how long, how many SYNs, and what
/// this host knows of why none was answered.
fn connect(f: &Failure, e: &Ended) -> Diagnosis {
    let started = connect_started(f);
    let waited = started.map(|t| format!(" for {}", secs(f.ts_ns.saturating_sub(t)))).unwrap_or_default();
    let syns = u64::from(f.history.retransmits) + 1;
    let state = e.from.unwrap_or(TcpState::SynSent);
    let what = if state == TcpState::SynRecv { "no ACK completed the handshake" } else { "no SYN-ACK" };
    let mut explain = format!(
        "{what} from {}{waited} after {} ({} retransmitted), and {}",
        peer(f.remote),
        count(syns, "SYN"),
        syns - 1,
        who_ended(f, e)
    );
    explain.push_str(&why_unanswered(f));
    let dg = Diagnosis::new(Cause::AbandonedConnect, Some(state), started, explain);
    dg.with_retransmits(f.history.retransmits)
}

/// What this host knows of why a connect was not answered: its SYNs (or the answers) dropped
/// here, an ICMP error kept as a soft error, a full listener of this host; else that nothing
/// here explains it.
fn why_unanswered(f: &Failure) -> String {
    let mut why = drops::on_this_host(f);
    if let Some(sender) = icmp::sender(f) {
        why.push_str(&sender);
    }
    if let Some(l) = resource::full_listener(f) {
        why.push_str(&format!(
            "; the listener on {}{} of this host{} has {} connections waiting in an accept queue of {}: it does not \
             accept fast enough, and the kernel drops the SYNs it cannot queue{}",
            l.addr,
            l.owner_phrase(),
            l.place_phrase(),
            l.queued,
            l.backlog,
            l.dropped_phrase()
        ));
    }
    if why.is_empty() {
        why = "; nothing on this host dropped them: the path or the peer is silent".into();
    }
    why
}

/// Sent data unacknowledged and being retransmitted when the program ended the connection.
fn unacked(f: &Failure, e: &Ended) -> Diagnosis {
    let since = e.since_sent_j.and_then(|j| f.jiffies_ns(j));
    let explain = format!(
        "{} stopped acknowledging: {} sent to it {} unacknowledged, {} unanswered, and {}",
        peer(f.remote),
        count(e.unacked.into(), "byte"),
        match since {
            Some(ns) => format!("were still, {} after the last send,", secs(ns)),
            None => "were still".into(),
        },
        count(e.rto_retransmits.into(), "retransmission"),
        who_ended(f, e)
    );
    let explain = format!("{explain}{}", drops::on_this_host(f));
    let at = since.map(|ns| f.ts_ns.saturating_sub(ns));
    Diagnosis::new(Cause::AbandonedUnacked, e.from, at, explain).with_retransmits(e.rto_retransmits)
}

/// The peer's window was closed (it stopped reading) with data waiting to be sent.
fn zero_window(f: &Failure, e: &Ended) -> Diagnosis {
    let explain = format!(
        "{} advertised a zero window: it stopped reading, with {} waiting to be sent to it, and {}",
        peer(f.remote),
        count(u64::from(e.unacked) + u64::from(e.unsent), "byte"),
        who_ended(f, e)
    );
    Diagnosis::new(Cause::AbandonedZeroWindow, e.from, None, explain)
}

/// Nothing received since the last send, for at least the configured silence.
fn no_reply(f: &Failure, e: &Ended) -> Diagnosis {
    let since = e.since_sent_j.and_then(|j| f.jiffies_ns(j));
    let quiet = since.map(|ns| format!(" in the {} since", secs(ns))).unwrap_or_else(|| " since".into());
    let acked = if e.unacked == 0 {
        format!("acknowledged all {} sent to it", count(e.bytes_sent, "byte"))
    } else {
        let acked = e.bytes_sent.saturating_sub(u64::from(e.unacked));
        format!("acknowledged {acked} of the {} sent to it", count(e.bytes_sent, "byte"))
    };
    let before = if e.bytes_received > 0 {
        format!(" (it had sent {} before)", count(e.bytes_received, "byte"))
    } else {
        String::new()
    };
    let explain = format!(
        "{} {acked} and sent nothing{quiet} the last of it{before}; then {}: the peer is alive (it acknowledges) but \
         did not answer",
        peer(f.remote),
        who_ended(f, e)
    );
    let at = since.map(|ns| f.ts_ns.saturating_sub(ns));
    Diagnosis::new(Cause::AbandonedNoReply, e.from.or(Some(TcpState::Established)), at, explain)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use crate::facts::{Ended, EndingCall, Failure, History, PacketDrops};
    use crate::model::{Cause, Syscall, TcpState::*};

    const S: u64 = 1_000_000_000;
    const HZ: u32 = 250;

    fn end(from: crate::model::TcpState) -> Ended {
        Ended {
            call: EndingCall::Close(5),
            from: Some(from),
            exit_code: None,
            unacked: 0,
            unsent: 0,
            unread: 0,
            snd_wnd: 65535,
            since_sent_j: None,
            since_received_j: None,
            rto_retransmits: 0,
            bytes_sent: 0,
            bytes_received: 0,
            sibling: None,
        }
    }

    /// A socket the process ended at 3 s, with `e`; a connect started at 1 s.
    fn ended(e: Ended, retransmits: u32) -> Failure {
        let h = History { transitions: vec![tr(S, Close, SynSent)], retransmits, ..Default::default() };
        let mut f = failure(Syscall::Connect, None, Close, h);
        f.syscall = None;
        f.ts_ns = 3 * S;
        f.fd = 5;
        f.remote = Some("10.77.11.2:9".parse().unwrap());
        f.kernel_hz = Some(HZ);
        f.ended = Some(e);
        f
    }

    fn syn_drops() -> PacketDrops {
        PacketDrops {
            sent: true,
            count: 2,
            first_ns: S,
            last_ns: 2 * S,
            reason: Some(6),
            reason_name: Some("SKB_DROP_REASON_NETFILTER_DROP".into()),
            location: 0,
            function: Some("nft_do_chain+0x47f".into()),
            netns: Some(4026532500),
            ifindex: Some(2),
            dev: b"veth1".to_vec(),
            last_flags: 0x02,
            all_flags: 0x02,
            rsts: 0,
            stack: 0,
            frames: Vec::new(),
            path: Vec::new(),
            netns_owner: None,
        }
    }

    fn rows() -> Vec<Row> {
        let dropped = Failure { drops: vec![syn_drops()], ..ended(end(SynSent), 1) };
        let silent_path = ended(end(SynSent), 2);
        let raced = ended(Ended { sibling: Some((2 * S, "10.77.11.3:9".parse().unwrap())), ..end(SynSent) }, 0);
        let no_reply = ended(
            Ended {
                since_sent_j: Some(2 * HZ),
                since_received_j: Some(2 * HZ + 10),
                bytes_sent: 18,
                ..end(Established)
            },
            0,
        );
        let unacked =
            ended(Ended { unacked: 1200, rto_retransmits: 3, since_sent_j: Some(2 * HZ), ..end(Established) }, 0);
        let closed_window = ended(Ended { unsent: 4096, snd_wnd: 0, ..end(Established) }, 0);
        let killed = ended(Ended { call: EndingCall::Exit, exit_code: Some(9), ..end(SynSent) }, 0);
        vec![
            Row::new("connect given up, SYNs dropped by a rule", dropped, Cause::AbandonedConnect, Some(SynSent)),
            Row::new("connect given up, nothing dropped", silent_path, Cause::AbandonedConnect, Some(SynSent)),
            Row::new("connect that lost the race", raced, Cause::Superseded, Some(SynSent)),
            Row::new("read given up, peer silent", no_reply, Cause::AbandonedNoReply, Some(Established)),
            Row::new("data unacknowledged", unacked, Cause::AbandonedUnacked, Some(Established)),
            Row::new("peer stopped reading", closed_window, Cause::AbandonedZeroWindow, Some(Established)),
            Row::new("process killed while connecting", killed, Cause::AbandonedConnect, Some(SynSent)),
        ]
    }

    #[test]
    fn abandoned_rows() {
        check_rows(&rows());
        assert!(Cause::Superseded.is_routine() && !Cause::AbandonedConnect.is_routine());
    }

    /// What each says: the facts (how long, how many SYNs, what was dropped, acknowledged,
    /// received), and the call that ended the socket.
    #[test]
    fn the_words_state_what_happened() {
        let rows = rows();
        let say = |name: &str| diagnosis_of(&rows, name).explain;
        let dropped = say("connect given up, SYNs dropped by a rule");
        assert!(
            dropped.starts_with("no SYN-ACK from 10.77.11.2:9 for 2.0 s after 2 SYNs (1 retransmitted)"),
            "{dropped}"
        );
        assert!(dropped.contains("the process closed the socket (close(fd=5))"), "{dropped}");
        assert!(dropped.contains("2 SYNs it sent were dropped on this host: a netfilter rule"), "{dropped}");
        let silent = say("connect given up, nothing dropped");
        assert!(silent.ends_with("; nothing on this host dropped them: the path or the peer is silent"), "{silent}");
        let raced = say("connect that lost the race");
        assert!(raced.contains("to 10.77.11.3:9, was established 1.0 s before") && raced.contains("Happy Eyeballs"));
        let quiet = say("read given up, peer silent");
        assert!(quiet.contains("acknowledged all 18 bytes sent to it and sent nothing in the 2.0 s since"), "{quiet}");
        assert!(!quiet.contains("timed out"), "facts, not the program's intent: {quiet}");
        let unacked = say("data unacknowledged");
        assert!(unacked.contains("1200 bytes") && unacked.contains("3 retransmissions unanswered"), "{unacked}");
        let window = say("peer stopped reading");
        assert!(window.contains("zero window: it stopped reading, with 4096 bytes waiting"), "{window}");
        let killed = say("process killed while connecting");
        assert!(killed.contains("the process exited (killed by SIGKILL) with it open"), "{killed}");
    }
}
