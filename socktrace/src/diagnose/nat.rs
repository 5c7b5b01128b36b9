//! NAT on this host: a connection whose destination this host rewrote (a Service address
//! DNATed to a pod, a published port) is explained with both addresses, the one the program
//! dialled and the one that answered, refused or stayed silent.

use super::drops::namespace;
use crate::facts::{Failure, Nat, NatSeen};

/// Whose connection tracking rewrote it: `this host's NAT, in namespace X (ip netns; netns N)`;
/// just `this host's NAT` when only the refusal showed it.
pub fn by_whom(n: &Nat) -> String {
    match (n.seen, n.netns) {
        (NatSeen::Refusal, _) => "this host's NAT".to_string(),
        (NatSeen::Conntrack, Some(ns)) => format!("this host's NAT,{}", namespace(ns, n.netns_owner.as_ref())),
        (NatSeen::Conntrack, None) => "this host's NAT, in the process's own namespace".to_string(),
    }
}

/// `nothing listens on 10.244.1.5:8080[, in namespace X], where this host's NAT[, in ...]
/// sends connections to 10.96.0.10:80`: a refusal of a rewritten destination.
pub fn refused(n: &Nat) -> String {
    let (refused_in, whom) = match (n.seen, n.netns) {
        (NatSeen::Refusal, Some(ns)) => (format!(",{}", namespace(ns, n.netns_owner.as_ref())), by_whom(n)),
        (NatSeen::Refusal, None) => (String::new(), by_whom(n)),
        // by_whom names the namespace after a comma: one closes it.
        (NatSeen::Conntrack, _) => (String::new(), format!("{},", by_whom(n))),
    };
    format!("nothing listens on {}{refused_in}, where {whom} sends connections to {}", n.translated, n.dialled)
}

/// `; the program dialled 10.96.0.10:80, which this host's NAT (...) sent on to
/// 10.244.1.5:8080`, unless the explanation already names the address it was sent to.
pub fn note(f: &Failure, explain: &str) -> Option<String> {
    let n = f.host.nat.as_ref()?;
    if explain.contains(&n.translated.to_string()) {
        return None;
    }
    Some(format!("; the program dialled {}, which {}, sent on to {}", n.dialled, by_whom(n), n.translated))
}

#[cfg(test)]
mod tests {
    use super::super::diagnose;
    use crate::facts::{Failure, History, Nat, NatSeen, NetnsOwner, Stamp};
    use crate::model::{errno::*, Syscall, TcpState::*};

    #[test]
    fn a_rewritten_destination_is_named_with_both_addresses() {
        let rst = Stamp { ts_ns: 5, state: Some(SynSent), current_tgid: 0 };
        let h = History { rst_received: Some(rst), ..Default::default() };
        let mut f = Failure::for_test(Syscall::Connect, Some(ECONNREFUSED), Close, h);
        f.remote = Some("10.96.0.10:80".parse().unwrap());
        f.host.nat = Some(Nat {
            dialled: "10.96.0.10:80".parse().unwrap(),
            translated: "10.244.1.5:8080".parse().unwrap(),
            seen: NatSeen::Conntrack,
            netns: Some(4026531840),
            netns_owner: Some(NetnsOwner::Host),
        });
        let dg = diagnose(&f);
        assert!(
            dg.explain.contains(
                "nothing listens on 10.244.1.5:8080, where this host's NAT, in the host's namespace (netns 4026531840), \
                 sends connections to 10.96.0.10:80"
            ),
            "{}",
            dg.explain
        );
        assert_eq!(dg.explain.matches("10.244.1.5:8080").count(), 1, "{}", dg.explain);
        // Any other explanation gains the note.
        let mut timed_out = f.clone();
        timed_out.errno = Some(ETIMEDOUT);
        timed_out.history = History::default();
        let dg = diagnose(&timed_out);
        assert!(
            dg.explain.ends_with(
                "; the program dialled 10.96.0.10:80, which this host's NAT, in the host's namespace (netns \
                 4026531840), sent on to 10.244.1.5:8080"
            ),
            "{}",
            dg.explain
        );
        // No NAT: no note.
        f.host.nat = None;
        assert!(!diagnose(&f).explain.contains("NAT"));
    }

    /// A refusal is all that showed the rewrite (the tracker deleted the entry): the namespace
    /// named is the one that refused, not one whose NAT did it.
    #[test]
    fn a_rewrite_seen_only_in_the_refusal_names_where_nothing_listens() {
        let rst = Stamp { ts_ns: 5, state: Some(SynSent), current_tgid: 0 };
        let h = History { rst_received: Some(rst), ..Default::default() };
        let mut f = Failure::for_test(Syscall::Connect, Some(ECONNREFUSED), Close, h);
        f.remote = Some("10.96.7.10:81".parse().unwrap());
        f.host.nat = Some(Nat {
            dialled: "10.96.7.10:81".parse().unwrap(),
            translated: "10.199.8.2:9105".parse().unwrap(),
            seen: NatSeen::Refusal,
            netns: Some(4026532999),
            netns_owner: Some(NetnsOwner::Named("dest".into())),
        });
        let dg = diagnose(&f);
        assert_eq!(
            dg.explain,
            "peer answered the SYN with RST: nothing listens on 10.199.8.2:9105, in namespace dest (ip netns; netns \
             4026532999), where this host's NAT sends connections to 10.96.7.10:81"
        );
        f.host.nat.as_mut().unwrap().netns = None;
        assert_eq!(
            diagnose(&f).explain,
            "peer answered the SYN with RST: nothing listens on 10.199.8.2:9105, where this host's NAT sends \
             connections to 10.96.7.10:81"
        );
    }
}
