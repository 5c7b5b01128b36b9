//! NAT on this host: a connection whose destination this host rewrote (a Service address
//! DNATed to a pod, a published port) is explained with both addresses, the one the program
//! dialled and the one that answered, refused or stayed silent.

use super::drops::namespace;
use crate::facts::{Failure, Nat};

/// Whose connection tracking rewrote it: `this host's NAT, in namespace X (ip netns; netns N)`.
pub fn by_whom(n: &Nat) -> String {
    match n.netns {
        Some(ns) => format!("this host's NAT,{}", namespace(ns, n.netns_owner.as_ref())),
        None => "this host's NAT, in the process's own namespace".to_string(),
    }
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
    use crate::facts::{Failure, History, Nat, NetnsOwner, Stamp};
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
}
