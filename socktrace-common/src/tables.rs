//! The kernel's direct-mapped tables, each slot checked by a hash so a reader never takes
//! another key's record or a torn one: RSTs sent on this host (`SENT_RESETS`), SYNs this host
//! refused for want of a listener (`REFUSED_SYNS`) and the fds of io_uring requests
//! (`IO_URING_FDS`).

use crate::{SockAddrs, TASK_COMM_LEN};

/// An RST a socket of this host sent (any socket, any process: `tcp_send_reset`), kept by the
/// connection's 4-tuple as the sender sees it, so that the socket that received it can name
/// who reset it and why.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SentReset {
    pub ts_ns: u64,
    /// The task on the CPU when the RST was sent: the closing or aborting process for an RST
    /// sent from a call (close with unread data, SO_LINGER 0, `ss -K`); softirq otherwise.
    pub tgid: u32,
    /// The kernel's RST reason (`enum sk_rst_reason`, 6.10+); -1 when the kernel has none.
    pub reason: i32,
    /// A listener's accept queue when it sent the RST (it resets a connection it cannot
    /// queue when `tcp_abort_on_overflow` is set): connections waiting, and its backlog.
    pub ack_backlog: u32,
    pub max_ack_backlog: u32,
    /// The sender's state when it sent the RST; 0: no socket of this host owned the segment.
    pub state: u8,
    /// The task on the CPU was exiting (`PF_EXITING`): its death closed the socket, and
    /// `comm` is its process's name (not the thread's that happened to close it).
    pub exiting: u8,
    pub _pad: [u8; 2],
    /// That task's `exit_code`: the signal that killed it, or its exit status shifted by 8.
    pub exit_code: u32,
    pub comm: [u8; TASK_COMM_LEN],
}
assert_size!(SentReset, 48);

/// The table of RSTs sent on this host (`SENT_RESETS`): a plain array of sets of
/// `SENT_RESET_WAYS` slots, the set chosen by a hash of the sender's 4-tuple; not an LRU hash
/// map, whose insert cost about 0.9 us per RST (its free list and eviction), paid by every RST
/// any socket of the host sends. An RST takes its 4-tuple's slot in the set, else an empty
/// one, else the oldest: a mass reset of 15,000 connections at once fills about a quarter of
/// the table and loses almost none (a direct-mapped table of 8,192 lost half). A lost record
/// leaves the receiver with no sender ("cannot tell"), never another one's, because of
/// `SentResetSlot::check`. 64 bytes a slot: 4 MiB.
pub const SENT_RESET_SLOTS: u32 = 65_536;
pub const SENT_RESET_WAYS: u32 = 4;

/// One slot of `SENT_RESETS`. Writers on two CPUs, or a reader while a writer writes, can
/// leave or see a mix of two records: the writer stores `check` (`sent_reset_check` of the
/// 4-tuple and the record) after the record, and the failure event carries the slot as it was
/// copied; userspace takes the record only if it and the 4-tuple looked for give the same
/// check. No locks, no atomics (5.10 has no fetching ones), nothing to verify per path in the
/// failing call's program, and a slot holding another connection's RST is told apart the
/// same way.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SentResetSlot {
    pub reset: SentReset,
    /// 0: never written.
    pub check: u64,
    /// Which 4-tuple the slot holds (`sent_reset_tag`): how the kernel finds it in its set,
    /// without the check's cost. 0: never written.
    pub tag: u64,
}
assert_size!(SentResetSlot, 64);

/// One round of a 64-bit mixer (splitmix64's finalizer) over `h` and the next word `v`: every
/// bit of the result depends on every bit of both. Each round can be undone, so a chain that
/// starts from a known value could be steered by whoever picks the last words (a peer's IPv6
/// interface id); the chains here start from the load's secret `TracedConfig::hash_seed`.
/// Shifts, xors and multiplies only: cheap and verifier-friendly.
#[inline(always)]
const fn mix(h: u64, v: u64) -> u64 {
    let mut x = (h ^ v).wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Eight bytes of `b` from `at`, little-endian (byte by byte: the arrays have no alignment a
/// wider load could rely on).
#[inline(always)]
const fn word_at(b: &[u8; 16], at: usize) -> u64 {
    let mut w = 0u64;
    let mut i = 0;
    while i < 8 {
        w |= (b[at + i] as u64) << (8 * i);
        i += 1;
    }
    w
}

/// The hash of a 4-tuple under `seed`: where its RST is kept (`sent_reset_set`), and the
/// start of its check.
#[inline(always)]
pub const fn sock_addrs_hash(seed: u64, a: &SockAddrs) -> u64 {
    let mut h = mix(seed, a.family as u64 | (a.sport as u64) << 16 | (a.dport as u64) << 32);
    h = mix(h, word_at(&a.saddr, 0));
    h = mix(h, word_at(&a.saddr, 8));
    h = mix(h, word_at(&a.daddr, 0));
    mix(h, word_at(&a.daddr, 8))
}

/// The 4-tuple of the connection whose other end is `ours`, as that end sees it: the key a
/// socket that received an RST looks its sender up by.
#[inline(always)]
pub const fn reversed(ours: &SockAddrs) -> SockAddrs {
    SockAddrs {
        family: ours.family,
        sport: ours.dport,
        dport: ours.sport,
        _pad: 0,
        saddr: ours.daddr,
        daddr: ours.saddr,
    }
}

/// The first slot of the set of `SENT_RESETS` where the RST of the connection `sender` (as
/// its sender sees it) is kept.
#[inline(always)]
pub const fn sent_reset_set(seed: u64, sender: &SockAddrs) -> u32 {
    ((sock_addrs_hash(seed, sender) >> 32) as u32 & (SENT_RESET_SLOTS / SENT_RESET_WAYS - 1)) * SENT_RESET_WAYS
}

/// The tag of the connection `sender` in its set: never 0 (an empty slot's).
#[inline(always)]
pub const fn sent_reset_tag(seed: u64, sender: &SockAddrs) -> u64 {
    sock_addrs_hash(seed, sender) | 1
}

/// The check of a `SentResetSlot`: the 4-tuple and every field of the record. Never 0 for a
/// written slot (0 is mapped to 1), so an empty slot matches nothing.
#[inline(always)]
pub const fn sent_reset_check(seed: u64, sender: &SockAddrs, r: &SentReset) -> u64 {
    let mut h = mix(sock_addrs_hash(seed, sender), r.ts_ns);
    h = mix(h, r.tgid as u64 | (r.reason as u32 as u64) << 32);
    h = mix(h, r.ack_backlog as u64 | (r.max_ack_backlog as u64) << 32);
    h = mix(h, r.state as u64 | (r.exiting as u64) << 8 | (r.exit_code as u64) << 32);
    h = mix(h, word_at(&r.comm, 0));
    h = mix(h, word_at(&r.comm, 8));
    if h == 0 {
        1
    } else {
        h
    }
}

/// A bare SYN that no socket of this host owned, answered with an RST (nothing listens there),
/// as it arrived: `syn.saddr`/`sport` the connecting end, `syn.daddr`/`dport` the address
/// that refused, after any NAT on its way. Kept by the connecting end alone, so that a
/// refused connect whose destination this host rewrote (a Service address DNATed to a pod's
/// closed port) can name the address that refused it: its socket saw the RST come from the
/// address it dialled, and the kernel's TCP tracker deletes a refused connection's entry at
/// once, so no conntrack table shows the rewrite afterwards. Userspace reads the slot of a
/// refused connect's own end (`refused_syn_slot`) and takes the record only if its check
/// matches (`refused_syn_check`) and the RST its socket received acknowledges this SYN's
/// sequence number (another socket may share the end: connect() reuses a local port for
/// other destinations): a slot rewritten for another end or another connection, or torn by
/// two writers, gives no address, never a wrong one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefusedSyn {
    pub ts_ns: u64,
    pub syn: SockAddrs,
    /// The SYN's sequence number (host order).
    pub seq: u32,
    pub _pad: u32,
    /// 0: never written.
    pub check: u64,
}
assert_size!(RefusedSyn, 64);
pod!(RefusedSyn);

/// Slots of `REFUSED_SYNS` (1 MiB): a record is read milliseconds after it is written, so
/// only a storm of refusals from thousands of ends at once can overwrite one first (the
/// refusal is then explained without the rewritten address).
pub const REFUSED_SYN_SLOTS: u32 = 16_384;

/// The slot of `REFUSED_SYNS` of the SYNs sent from `syn`'s source (family, address, port).
#[inline(always)]
pub const fn refused_syn_slot(seed: u64, syn: &SockAddrs) -> u32 {
    let mut h = mix(seed ^ 0x5359_4e00, syn.family as u64 | (syn.sport as u64) << 16);
    h = mix(h, word_at(&syn.saddr, 0));
    h = mix(h, word_at(&syn.saddr, 8));
    (h >> 32) as u32 & (REFUSED_SYN_SLOTS - 1)
}

/// The check of a `RefusedSyn`: its 4-tuple, time and sequence number. Never 0 for a written
/// slot.
#[inline(always)]
pub const fn refused_syn_check(seed: u64, syn: &SockAddrs, ts_ns: u64, seq: u32) -> u64 {
    let h = mix(mix(sock_addrs_hash(seed, syn), ts_ns), seq as u64);
    if h == 0 {
        1
    } else {
        h
    }
}

/// Slots of the io_uring door's table of request fds (a power of two; 1 MiB of kernel memory):
/// with N requests in flight, about N/65536 of them find their slot taken by another.
pub const IO_URING_FD_SLOTS: u32 = 65536;

/// A traced process's io_uring request (its `struct io_kiocb` address) and the fd its file was
/// looked up by, in a direct-mapped table: each request has one slot (`request_fd_slot`), and
/// a lookup by fd costs a traced request a hash and two stores, where an LRU insert cost about
/// 200 ns. The fd shares a word with a check of the request, stored at once: a reader that
/// meets another request's entry, or the halves of two writers' (no locks: 5.10 has no
/// fetching atomics), finds no fd (`request_fd`), never a wrong one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestFd {
    pub req: u64,
    /// The fd in the low half, the request's check in the high half (`request_fd_word`).
    pub fd_check: u64,
}
assert_size!(RequestFd, 16);

/// The slot of request `req`.
#[inline(always)]
pub const fn request_fd_slot(req: u64) -> u32 {
    mix(0, req) as u32 & (IO_URING_FD_SLOTS - 1)
}

/// The check of request `req`: the high half of its `RequestFd::fd_check`.
#[inline(always)]
const fn request_check(req: u64) -> u64 {
    mix(1, req) >> 32
}

/// `RequestFd::fd_check` for request `req` and its `fd`.
#[inline(always)]
pub const fn request_fd_word(req: u64, fd: i32) -> u64 {
    fd as u32 as u64 | request_check(req) << 32
}

/// The fd request `req` looked its file up by, if `slot` holds it whole.
#[inline(always)]
pub const fn request_fd(slot: &RequestFd, req: u64) -> Option<i32> {
    if slot.req == req && slot.fd_check >> 32 == request_check(req) {
        Some(slot.fd_check as u32 as i32)
    } else {
        None
    }
}
const _: () = assert!(IO_URING_FD_SLOTS.is_power_of_two() && REFUSED_SYN_SLOTS.is_power_of_two());
const _: () = assert!(SENT_RESET_SLOTS.is_power_of_two() && SENT_RESET_WAYS.is_power_of_two());

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: u64 = 0x5eed_1234_abcd_0042;

    fn tuple(sport: u16, dport: u16) -> SockAddrs {
        let mut a = SockAddrs { family: 2, sport, dport, ..Default::default() };
        a.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        a.daddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        a
    }

    fn reset() -> SentReset {
        let mut r = SentReset { ts_ns: 123_456_789, tgid: 42, reason: 3, state: 1, ..Default::default() };
        r.comm[..5].copy_from_slice(b"nginx");
        r
    }

    /// Every field of the 4-tuple and of the record is in the check: a reader looking for
    /// another connection, or holding a copy mixed from two records, never matches.
    #[test]
    fn the_check_covers_every_field() {
        let (a, r) = (tuple(40000, 8080), reset());
        let base = sent_reset_check(SEED, &a, &r);
        let mut keys = vec![];
        for i in 0..16 {
            let mut k = a;
            k.saddr[i] ^= 1;
            keys.push(k);
            let mut k = a;
            k.daddr[i] ^= 0x80;
            keys.push(k);
        }
        keys.push(SockAddrs { family: 10, ..a });
        keys.push(SockAddrs { sport: 40001, ..a });
        keys.push(SockAddrs { dport: 8081, ..a });
        // The reversed tuple is another connection's view.
        keys.push(reversed(&a));
        for k in &keys {
            assert_ne!(sent_reset_check(SEED, k, &r), base, "{k:?}");
        }
        let mut records = vec![
            SentReset { ts_ns: r.ts_ns + 1, ..r },
            SentReset { tgid: 43, ..r },
            SentReset { reason: -1, ..r },
            SentReset { ack_backlog: 1, ..r },
            SentReset { max_ack_backlog: 128, ..r },
            SentReset { state: 0, ..r },
            SentReset { exiting: 1, ..r },
            SentReset { exit_code: 9, ..r },
        ];
        for i in 0..TASK_COMM_LEN {
            let mut c = r;
            c.comm[i] ^= 0x20;
            records.push(c);
        }
        for c in &records {
            assert_ne!(sent_reset_check(SEED, &a, c), base, "{c:?}");
        }
        // A record mixed from two writes: the first half of one, the second of another.
        let other = SentReset { ts_ns: 987, tgid: 7, reason: 1, state: 4, ..Default::default() };
        let torn = SentReset { ts_ns: r.ts_ns, tgid: r.tgid, reason: r.reason, ..other };
        assert_ne!(sent_reset_check(SEED, &a, &torn), base);
        assert_ne!(sent_reset_check(SEED, &a, &torn), sent_reset_check(SEED, &a, &other));
    }

    /// The seed keys both hashes: another load's records neither land nor check alike.
    #[test]
    fn the_seed_keys_the_slot_and_the_check() {
        let (a, r) = (tuple(40000, 8080), reset());
        assert_ne!(sent_reset_check(SEED, &a, &r), sent_reset_check(SEED ^ 1, &a, &r));
        let moved = (0..64u16).filter(|&p| {
            let k = tuple(40000 + p, 8080);
            sent_reset_set(SEED, &k) != sent_reset_set(SEED ^ 1, &k)
        });
        assert!(moved.count() >= 60);
    }

    /// An empty slot (check 0) matches no lookup; the check is a function of its inputs.
    #[test]
    fn an_empty_slot_matches_nothing() {
        let empty = SentResetSlot::default();
        for p in 0..2000 {
            let a = tuple(p, 80);
            assert_ne!(sent_reset_check(SEED, &a, &empty.reset), empty.check);
            assert_eq!(sent_reset_check(SEED, &a, &reset()), sent_reset_check(SEED, &a, &reset()));
        }
    }

    /// A refused SYN's slot depends on its source alone (the connecting end is all a refused
    /// connect knows of it when its destination was rewritten); its check on every field.
    #[test]
    fn a_refused_syn_is_placed_by_its_source_and_checked_whole() {
        let syn = tuple(40000, 9105);
        let r = RefusedSyn { ts_ns: 77, syn, seq: 1000, ..Default::default() };
        let check = |r: &RefusedSyn| refused_syn_check(SEED, &r.syn, r.ts_ns, r.seq);
        let mut rewritten = syn;
        rewritten.daddr[..4].copy_from_slice(&[10, 96, 7, 10]);
        rewritten.dport = 81;
        assert_eq!(refused_syn_slot(SEED, &syn), refused_syn_slot(SEED, &rewritten));
        assert!(refused_syn_slot(SEED, &syn) < REFUSED_SYN_SLOTS);
        let base = check(&r);
        for other in [
            RefusedSyn { syn: rewritten, ..r },
            RefusedSyn { ts_ns: 78, ..r },
            RefusedSyn { seq: 1001, ..r },
            RefusedSyn { syn: tuple(40001, 9105), ..r },
        ] {
            assert_ne!(check(&other), base);
        }
        assert_ne!(refused_syn_check(SEED ^ 1, &r.syn, r.ts_ns, r.seq), base);
        assert_ne!(base, 0);
        // The ports of one client spread over the slots.
        let slots: std::collections::HashSet<u32> =
            (0..1000u16).map(|p| refused_syn_slot(SEED, &tuple(30_000 + p, 80))).collect();
        assert!(slots.len() > 950, "{}", slots.len());
    }

    /// Connections of one client differ only in the source port: they spread over the sets,
    /// and a mass reset of 15,000 at once (more than any set of four can hold only where the
    /// hash piles them up) keeps at least 99.5% of its senders; every set is in range.
    #[test]
    fn a_mass_reset_fits_the_sets() {
        let sets = (SENT_RESET_SLOTS / SENT_RESET_WAYS) as usize;
        let mut fill = vec![0u32; sets];
        let mut lost = 0;
        for p in 0..15_000u16 {
            let first = sent_reset_set(SEED, &tuple(20_000 + p, 8080));
            assert!(first.is_multiple_of(SENT_RESET_WAYS) && first < SENT_RESET_SLOTS);
            let f = &mut fill[(first / SENT_RESET_WAYS) as usize];
            if *f == SENT_RESET_WAYS {
                lost += 1;
            } else {
                *f += 1;
            }
        }
        assert!(lost <= 75, "{lost} of 15000 found their set full");
        let mut load = vec![0u32; sets];
        for p in 0..u16::MAX {
            load[(sent_reset_set(SEED, &tuple(p, 443)) / SENT_RESET_WAYS) as usize] += 1;
        }
        // 65535 over 16384 sets: 4 on average; a poor hash would pile them up.
        assert!(*load.iter().max().unwrap() <= 16, "max load {}", load.iter().max().unwrap());
        // A tag is never an empty slot's.
        assert!((0..1000u16).all(|p| sent_reset_tag(SEED, &tuple(p, 1)) != 0));
    }

    /// A request's fd is found whole; another request's entry, two writers' halves and an
    /// empty slot give none.
    #[test]
    fn a_request_fd_is_taken_only_whole() {
        // Requests are slab objects: addresses 256 bytes apart.
        let (x, y) = (0xffff_8881_0a2b_3c00u64, 0xffff_8881_0a2b_3d00u64);
        let written = |req: u64, fd: i32| RequestFd { req, fd_check: request_fd_word(req, fd) };
        assert_eq!(request_fd(&written(x, 7), x), Some(7));
        assert_eq!(request_fd(&written(x, -1), x), Some(-1));
        assert_eq!(request_fd(&written(y, 7), x), None);
        let torn = RequestFd { req: x, fd_check: written(y, 9).fd_check };
        assert_eq!(request_fd(&torn, x), None);
        assert_eq!(request_fd(&RequestFd::default(), x), None);
        // Requests in flight at once keep their own slots: 1024 in 65536 slots, about 8 collide
        // on average (the fd of a request whose slot another took is unknown, never wrong).
        let slots: std::collections::HashSet<u32> = (0..1024u64).map(|i| request_fd_slot(x + 256 * i)).collect();
        assert!(slots.len() >= 1000, "{} distinct slots of 1024", slots.len());
    }
}
