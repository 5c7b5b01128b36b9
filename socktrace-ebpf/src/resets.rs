//! RSTs this host sends, whoever sends them: which connection each is on and who sent it
//! (`SENT_RESETS`, for the socket that receives one to name its sender), and the bare SYNs
//! refused for want of a listener (`REFUSED_SYNS`, for a refused connect whose destination
//! this host rewrote). Fed by the send-reset hook (`history::on_send_reset`).

use crate::history::read_addrs;
use crate::{current_tgid, global, now_ns, read, zeroed};
use aya_ebpf::{bindings::BPF_F_MMAPABLE, helpers::generated::bpf_get_current_comm, macros::map, maps::Array};
use socktrace_common::{
    net, refused_syn_check, refused_syn_slot, reversed, sent_reset_check, sent_reset_set, sent_reset_tag, tcp_state,
    RefusedSyn, SentReset, SentResetSlot, SockAddrs, SockHead, NO_FIELD, REFUSED_SYN_SLOTS, SENT_RESET_SLOTS,
    SENT_RESET_WAYS,
};

/// RSTs sent by any socket of this host, by the sender's addresses (`SockAddrs`, local
/// first): the socket that receives one (over loopback, or from another namespace, a container)
/// looks its sender up by the reversed 4-tuple. A direct-mapped table (see
/// `socktrace_common::SentResetSlot`): a write is a hash and a few stores, where an LRU insert
/// cost about 0.9 us for every RST of the host.
#[map]
pub(crate) static SENT_RESETS: Array<SentResetSlot> = Array::with_max_entries(SENT_RESET_SLOTS, 0);

/// Bare SYNs no socket of this host owned (refused: nothing listens), by their source: a
/// refused connect whose destination this host rewrote names the address that refused it
/// (see `socktrace_common::RefusedSyn`). Read by userspace only, through a mapping of it.
#[map]
pub(crate) static REFUSED_SYNS: Array<RefusedSyn> = Array::with_max_entries(REFUSED_SYN_SLOTS, BPF_F_MMAPABLE);

/// Who sent an RST on which connection, before it is kept (`keep_sent_reset`).
pub(crate) struct Sent {
    /// The connection's 4-tuple as the sender sees it.
    addrs: SockAddrs,
    state: u8,
    /// A listener's accept queue: connections waiting, and its backlog.
    queued: u32,
    backlog: u32,
}

/// An RST sent by a full socket (or a time-wait or request sock): its own addresses.
#[inline(always)]
pub(crate) fn sent_by_socket(sk: u64, head: &SockHead) -> Sent {
    let mut addrs = read_addrs(sk, head);
    // close() and disconnect() release the local port (skc_num = 0) before they send the RST;
    // the full socket keeps it in inet_sport.
    let sport_at = global!(OFFSETS.inet_sport);
    if addrs.sport == 0 && head.state == tcp_state::CLOSE && sport_at != NO_FIELD {
        addrs.sport = u16::from_be(read::<u16>(sk, sport_at).unwrap_or(0));
    }
    Sent { addrs, state: head.state, queued: 0, backlog: 0 }
}

/// An RST sent for a segment that no full connection of this host owns (a listener's, or none
/// at all): the connection's 4-tuple, as the sender sees it, is the segment's reversed. With a
/// listener, its accept queue then.
#[inline(always)]
pub(crate) fn sent_for_segment(listener: u64, state: u8, skb: u64) -> Option<Sent> {
    let head_at = global!(OFFSETS.skb_head);
    if skb == 0 || head_at == NO_FIELD {
        return None;
    }
    let data: u64 = read(skb, head_at).unwrap_or(0);
    let crate::SkbHeaders { network, transport, .. } = crate::skb_headers(skb);
    if data == 0 || network == 0xffff || transport == 0xffff {
        return None;
    }
    let ip = data + network as u64;
    // The TCP header up to its flags: ports (bytes 0-3), then the flags (byte 13).
    let tcp: [u8; 14] = crate::read_or_zero(data + transport as u64, 0);
    let version: u8 = read::<u8>(ip, 0).unwrap_or(0) >> 4;
    // The segment as it arrived: from the peer to the sender of the RST.
    let mut syn: SockAddrs = zeroed::<SockAddrs, 5>();
    syn.sport = u16::from_be_bytes([tcp[0], tcp[1]]);
    syn.dport = u16::from_be_bytes([tcp[2], tcp[3]]);
    if version == 4 {
        syn.family = net::AF_INET;
        let addrs: [u8; 8] = read(ip, 12).unwrap_or([0; 8]);
        syn.saddr[..4].copy_from_slice(&addrs[..4]);
        syn.daddr[..4].copy_from_slice(&addrs[4..]);
    } else if version == 6 {
        syn.family = net::AF_INET6;
        syn.saddr = read(ip, 8).unwrap_or([0; 16]);
        syn.daddr = read(ip, 24).unwrap_or([0; 16]);
    } else {
        return None;
    }
    // No socket answering a bare SYN: a refused connect, which explains itself ("nothing
    // listens") unless this host rewrote its destination. Kept apart, by its source only (a
    // store, no search): it is the commonest RST of all, and a storm of refused connects would
    // push the RSTs that need naming out of their slots.
    use socktrace_common::tcp_flags::{ACK, SYN};
    if listener == 0 && tcp[13] & (SYN | ACK) == SYN {
        keep_refused_syn(&syn, u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]));
        return None;
    }
    let (queued, backlog) = if listener != 0 {
        (
            read(listener, global!(OFFSETS.sk_ack_backlog)).unwrap_or(0),
            read(listener, global!(OFFSETS.sk_max_ack_backlog)).unwrap_or(0),
        )
    } else {
        (0, 0)
    };
    Some(Sent { addrs: reversed(&syn), state, queued, backlog })
}

/// Keeps a refused SYN (`seq` its sequence number) in its source's slot of `REFUSED_SYNS`,
/// check last. Written field by field: the RST programs' stack is close to its limit.
#[inline(always)]
fn keep_refused_syn(syn: &SockAddrs, seq: u32) {
    if syn.sport == 0 || syn.dport == 0 {
        return;
    }
    let seed = global!(CONFIG.hash_seed);
    let Some(slot) = REFUSED_SYNS.get_ptr_mut(refused_syn_slot(seed, syn)) else { return };
    let ts_ns = now_ns();
    let check = refused_syn_check(seed, syn, ts_ns, seq);
    // SAFETY: `slot` points at a live array element. Another CPU may write it at the same
    // time: the reader takes only a record that matches its check.
    unsafe {
        (*slot).ts_ns = ts_ns;
        (*slot).syn = *syn;
        (*slot).seq = seq;
        (*slot).check = check;
    }
}

/// Keeps who sent an RST on which connection, for the receiving socket to name its sender.
#[inline(always)]
pub(crate) fn keep_sent_reset(s: &Sent, reason: i32) {
    let key = &s.addrs;
    if key.sport == 0 || key.dport == 0 {
        return;
    }
    let mut sent: SentReset = zeroed::<SentReset, 6>();
    sent.ts_ns = now_ns();
    sent.tgid = current_tgid();
    sent.reason = reason;
    sent.state = s.state;
    sent.ack_backlog = s.queued;
    sent.max_ack_backlog = s.backlog;
    // A dying process's RST (its exit closed a socket with unread data): named by its
    // process, whichever of its threads closed the file, with how it died.
    // SAFETY: a helper without arguments; the task is only read through bpf_probe_read_kernel.
    let task = unsafe { aya_ebpf::helpers::generated::bpf_get_current_task() };
    let flags: u32 = crate::read_or_zero(task, global!(OFFSETS.task_flags));
    if flags & crate::ended::PF_EXITING != 0 {
        sent.exiting = 1;
        sent.exit_code = crate::read_or_zero(task, global!(OFFSETS.task_exit_code));
        sent.comm = crate::leader_comm();
    } else {
        // SAFETY: the helper writes at most 16 bytes into the 16-byte name.
        unsafe { bpf_get_current_comm((&raw mut sent.comm).cast(), socktrace_common::TASK_COMM_LEN as u32) };
    }
    let seed = global!(CONFIG.hash_seed);
    let (set, tag) = (sent_reset_set(seed, key), sent_reset_tag(seed, key));
    // The slot of the set that holds this 4-tuple, else an empty one, else the oldest.
    let mut pick = set;
    let mut oldest = u64::MAX;
    for way in 0..SENT_RESET_WAYS {
        let Some(slot) = SENT_RESETS.get_ptr(set + way) else { continue };
        // SAFETY: `slot` points at a live array element; its words are copied out.
        let (held, check, ts) = unsafe { ((*slot).tag, (*slot).check, (*slot).reset.ts_ns) };
        if held == tag {
            pick = set + way;
            break;
        }
        let age_key = if check == 0 { 0 } else { ts };
        if age_key < oldest {
            oldest = age_key;
            pick = set + way;
        }
    }
    let Some(slot) = SENT_RESETS.get_ptr_mut(pick) else { return };
    // SAFETY: `slot` points at a live array element. Another CPU may write it at the same
    // time: a reader takes only a record that matches its check (see `SentResetSlot`).
    unsafe {
        (*slot).reset = sent;
        core::ptr::write_volatile(&raw mut (*slot).check, sent_reset_check(seed, key, &sent));
        core::ptr::write_volatile(&raw mut (*slot).tag, tag);
    }
}
