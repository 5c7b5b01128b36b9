//! Packets this host dropped: `skb:kfree_skb` (a raw tracepoint: no record is built) sees every
//! packet the kernel frees as dropped, in any network namespace. A TCP packet to or from a
//! traced socket's peer is counted by its 4-tuple, with the kernel's reason (5.17+), where it
//! was dropped and the namespace and device; userspace looks a failing connection up there
//! (which keeps the one program that sees every failing call small). Any other packet leaves
//! after reading its protocol, or its addresses and one map lookup per end.

use crate::{global, now_ns, read, read_or_zero, zeroed};
use aya_ebpf::{helpers::generated::bpf_get_stack, EbpfContext as _};
use aya_ebpf::{
    macros::{map, raw_tracepoint},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::RawTracePointContext,
};
use socktrace_common::{config_flags, net, DropRecord, PeerKey, SockAddrs, DROP_FRAMES, NO_FIELD};

/// Dropped TCP packets, by their 4-tuple as the packet has it (source = `saddr`/`sport`).
#[map]
pub(crate) static DROPS: LruHashMap<SockAddrs, DropRecord> = LruHashMap::with_max_entries(4096, 0);

/// One all-zero record, never written: what a new `DROPS` entry starts from (a record is too
/// large to build on the BPF stack beside the packet's headers).
#[map]
static DROP_ZERO: Array<DropRecord> = Array::with_max_entries(1, 0);

/// The ports of traced sockets' peers, one byte each (set, never cleared): the first, cheap
/// filter (an array lookup the verifier inlines) before the peers' hash map.
#[map]
static TRACED_PORTS: Array<u8> = Array::with_max_entries(65536, 0);

/// The peers of traced sockets, filled as their connections start (`history::on_state_change`).
#[map]
pub(crate) static TRACED_PEERS: LruHashMap<PeerKey, u8> = LruHashMap::with_max_entries(16384, 0);

/// `ETH_P_IP` and `ETH_P_IPV6` as `sk_buff.protocol` holds them (network order, read as a
/// little-endian u16).
const ETH_P_IP_BE: u16 = 0x0800u16.to_be();
const ETH_P_IPV6_BE: u16 = 0x86ddu16.to_be();
const IPPROTO_TCP: u8 = 6;

#[raw_tracepoint(tracepoint = "kfree_skb")]
#[inline(always)]
pub fn raw_kfree_skb(ctx: RawTracePointContext) -> u32 {
    // Arguments: skb, location, and from 5.17 the reason (read only where the kernel passes
    // it: userspace checked the tracepoint's arity).
    let skb: u64 = ctx.arg(0);
    let location: u64 = ctx.arg(1);
    let reason =
        if global!(CONFIG.flags) & config_flags::DROP_HAS_REASON != 0 { ctx.arg::<u64>(2) as u32 } else { u32::MAX };
    on_drop(&ctx, skb, location, reason);
    0
}

#[inline(always)]
fn on_drop(ctx: &RawTracePointContext, skb: u64, location: u64, reason: u32) {
    // A segment freed for want of a socket was answered with an RST (a refused connect, a
    // forgotten connection), which the RST itself explains: the commonest drop of all, left
    // before anything is read.
    let no_socket = global!(CONFIG.drop_reason_no_socket);
    if no_socket != 0 && reason == no_socket {
        return;
    }
    let crate::SkbHeaders { protocol, network, .. } = crate::skb_headers(skb);
    let v6 = match protocol {
        ETH_P_IP_BE => false,
        ETH_P_IPV6_BE => true,
        _ => return,
    };
    let head: u64 = read(skb, global!(OFFSETS.skb_head)).unwrap_or(0);
    if head == 0 || network == 0xffff {
        return;
    }
    let ip = head + network as u64;
    // The IP header and the TCP header's first 14 bytes (ports to flags) in one read: IPv6's
    // fixed header, or IPv4's without options; IPv4 with options reads the TCP header again.
    let pkt: [u8; 54] = read_or_zero(ip, 0);
    let mut key: SockAddrs = zeroed::<SockAddrs, 5>();
    let mut th = [0u8; 14];
    if v6 {
        // Only a TCP header right after the fixed header: extension headers are not walked.
        if pkt[6] != IPPROTO_TCP {
            return;
        }
        key.family = net::AF_INET6;
        key.saddr.copy_from_slice(&pkt[8..24]);
        key.daddr.copy_from_slice(&pkt[24..40]);
        th.copy_from_slice(&pkt[40..54]);
    } else {
        if pkt[9] != IPPROTO_TCP || pkt[0] >> 4 != 4 {
            return;
        }
        key.family = net::AF_INET;
        key.saddr[..4].copy_from_slice(&pkt[12..16]);
        key.daddr[..4].copy_from_slice(&pkt[16..20]);
        let ihl = pkt[0] & 0xf;
        if ihl == 5 {
            th.copy_from_slice(&pkt[20..34]);
        } else {
            th = read_or_zero(ip + (ihl as u64) * 4, 0);
        }
    }
    key.sport = u16::from_be_bytes([th[0], th[1]]);
    key.dport = u16::from_be_bytes([th[2], th[3]]);
    if key.sport == 0 || key.dport == 0 {
        return;
    }
    if global!(CONFIG.flags) & config_flags::TRACE_ALL == 0 && !to_or_from_traced_peer(&key) {
        return;
    }
    // Counted before its time is taken: a reader that finds the count 0 at some moment knows
    // no drop is stamped before that moment (see `history_stats::DROPS_RECORDED`).
    crate::count_drop_recorded();
    let flags = th[13];
    let now = now_ns();
    // Where: the device it was on, and that device's namespace; a packet dropped before it
    // had a device (on its way out) is in its socket's namespace. Taken for every drop: the
    // record describes the last one.
    let mut dev_name = [0u8; 16];
    let mut ifindex = 0u32;
    let dev: u64 = read(skb, global!(OFFSETS.skb_dev)).unwrap_or(0);
    let net: u64 = if dev != 0 {
        ifindex = read(dev, global!(OFFSETS.dev_ifindex)).unwrap_or(0);
        dev_name = read_or_zero(dev, global!(OFFSETS.dev_name));
        read(dev, global!(OFFSETS.dev_nd_net)).unwrap_or(0)
    } else {
        let sk: u64 = read(skb, global!(OFFSETS.skb_sk)).unwrap_or(0);
        read(sk, global!(OFFSETS.sk_net)).unwrap_or(0)
    };
    let netns: u32 =
        if global!(OFFSETS.net_ns_inum) != NO_FIELD { read(net, global!(OFFSETS.net_ns_inum)).unwrap_or(0) } else { 0 };
    if DROPS.get_ptr_mut(key).is_none() {
        // BPF_NOEXIST: a record another CPU made meanwhile is kept.
        if let Some(zero) = DROP_ZERO.get(0) {
            let _ = DROPS.insert(key, zero, 1);
        }
    }
    let Some(d) = DROPS.get_ptr_mut(key) else { return };
    // SAFETY: `d` points at a live map value; a lost update between CPUs only miscounts.
    unsafe {
        // The flow's packets dropped again where the last was (same code, namespace, device
        // and flags) took the same path: its frames still say where.
        let same_place = (*d).count != 0
            && (*d).location == location
            && (*d).netns == netns
            && (*d).ifindex == ifindex
            && (*d).last_flags == flags
            && (*d).frames[0] != 0;
        if (*d).count == 0 {
            (*d).first_ns = now;
        }
        (*d).count = (*d).count.wrapping_add(1);
        (*d).last_ns = now;
        (*d).location = location;
        (*d).reason = reason;
        (*d).last_flags = flags;
        (*d).all_flags |= flags;
        (*d).rsts = (*d).rsts.wrapping_add(((flags >> 2) & 1) as u16);
        (*d).netns = netns;
        (*d).ifindex = ifindex;
        (*d).dev = dev_name;
        (*d).stack = crate::kstack(ctx);
        if !same_place {
            let path = DropPath {
                location,
                netns,
                ifindex,
                reason,
                family: key.family,
                dport: key.dport,
                saddr: key.saddr,
                daddr: key.daddr,
                flags,
                _pad: [0; 7],
            };
            let last = LAST_STACK.get_ptr_mut(0);
            match last {
                // Another flow of the same path, just walked on this CPU: its frames.
                Some(l)
                    if (*l).frames[0] != 0
                        && now.wrapping_sub((*l).walked_ns) < STACK_REUSE_NS
                        && (*l).path == path =>
                {
                    (*d).frames = (*l).frames
                }
                _ if stack_allowed(now) => {
                    // The helper zero-fills what the stack does not cover, and all of it on
                    // failure.
                    bpf_get_stack(
                        ctx.as_ptr(),
                        (&raw mut (*d).frames).cast(),
                        core::mem::size_of::<[u64; DROP_FRAMES]>() as u32,
                        0,
                    );
                    if let Some(l) = last {
                        (*l).path = path;
                        (*l).walked_ns = now;
                        (*l).frames = (*d).frames;
                    }
                }
                // No frames rather than another drop's: userspace names no hook then.
                _ => crate::zero(&raw mut (*d).frames),
            }
        }
    }
}

/// Where and why a packet was dropped, as far as it decides the hooks it went through: the
/// drop site (every netfilter drop is `nf_hook_slow`'s) and reason, the namespace and device,
/// the addresses and destination port (policy routing can choose by them), and the TCP flags
/// (a rule may drop a SYN in one chain and an invalid ACK in another). Two flows of one path
/// (a storm of SYNs from one client's ports to one service) were dropped by the same hooks.
/// No implicit padding: the whole struct is compared and copied.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C)]
struct DropPath {
    location: u64,
    netns: u32,
    ifindex: u32,
    reason: u32,
    family: u16,
    dport: u16,
    saddr: [u8; 16],
    daddr: [u8; 16],
    flags: u8,
    _pad: [u8; 7],
}
const _: () = assert!(core::mem::size_of::<DropPath>() == 64);

/// The last drop whose stack this CPU walked, when, and its frames.
#[repr(C)]
struct StackedDrop {
    path: DropPath,
    walked_ns: u64,
    frames: [u64; DROP_FRAMES],
}

/// A walked stack stands for its path's drops this long: a path's hooks change only with its
/// namespace's routes or addresses, and a storm walks it again each second.
const STACK_REUSE_NS: u64 = 1_000_000_000;

/// This CPU's last walked drop (`StackedDrop`): a drop of the same path within a second
/// copies its frames instead of walking the stack again (about 3 µs), so a storm of drops on
/// one path keeps every record's frames at the cost of a copy.
#[map]
static LAST_STACK: PerCpuArray<StackedDrop> = PerCpuArray::with_max_entries(1, 0);

/// When this CPU last took a drop's kernel stack (CLOCK_MONOTONIC ns).
#[map]
static DROP_STACK_AT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// A drop's kernel stack costs about 3 µs (measured: the dropped-SYN bench, 6.18): each CPU
/// takes at most one per this interval. A storm of drops at new places leaves most records
/// without frames (their hook is not named); a few drops, as behind any one failure, all
/// have theirs.
const DROP_STACK_INTERVAL_NS: u64 = 1_000_000;

/// Whether this CPU may take a drop's stack now (and, if so, that it did).
#[inline(always)]
fn stack_allowed(now: u64) -> bool {
    let Some(at) = DROP_STACK_AT.get_ptr_mut(0) else { return false };
    // SAFETY: this CPU's slot of a per-CPU array; programs on one CPU do not nest here.
    unsafe {
        if *at != 0 && now.wrapping_sub(*at) < DROP_STACK_INTERVAL_NS {
            return false;
        }
        *at = now;
    }
    true
}

/// Whether the packet goes to, or comes from, a traced socket's peer.
#[inline(always)]
fn to_or_from_traced_peer(key: &SockAddrs) -> bool {
    let port_seen = |p: u16| TRACED_PORTS.get(p as u32).is_some_and(|&b| b != 0);
    if !port_seen(key.dport) && !port_seen(key.sport) {
        return false;
    }
    let mut peer: PeerKey = zeroed::<PeerKey, 3>();
    peer.family = key.family;
    peer.port = key.dport;
    peer.addr = key.daddr;
    // SAFETY: the value is only tested for presence.
    if unsafe { TRACED_PEERS.get(peer).is_some() } {
        return true;
    }
    peer.port = key.sport;
    peer.addr = key.saddr;
    // SAFETY: as above.
    unsafe { TRACED_PEERS.get(peer).is_some() }
}

/// A traced socket's connection starts toward `addrs`' remote end: its packets are watched.
#[inline(always)]
pub(crate) fn watch_peer(addrs: &SockAddrs) {
    if addrs.dport == 0 || global!(CONFIG.flags) & config_flags::TRACE_ALL != 0 {
        return;
    }
    let a = as_on_the_wire(addrs);
    let mut peer: PeerKey = zeroed::<PeerKey, 3>();
    peer.family = a.family;
    peer.port = a.dport;
    peer.addr = a.daddr;
    // SAFETY: the value is only tested for presence. A peer seen before costs no insert.
    if unsafe { TRACED_PEERS.get(peer).is_none() } {
        let _ = TRACED_PEERS.insert(peer, 1, 0);
        if let Some(b) = TRACED_PORTS.get_ptr_mut(peer.port as u32) {
            // SAFETY: a byte of a live array; any writer writes 1.
            unsafe { *b = 1 };
        }
    }
}

/// A socket's addresses as its packets carry them: a dual-stack socket talking to an IPv4
/// peer (`::ffff:a.b.c.d`) sends IPv4 packets.
#[inline(always)]
fn as_on_the_wire(a: &SockAddrs) -> SockAddrs {
    let mut out: SockAddrs = zeroed::<SockAddrs, 5>();
    out.family = a.family;
    out.sport = a.sport;
    out.dport = a.dport;
    let mapped = |x: &[u8; 16]| x[..10] == [0u8; 10] && x[10] == 0xff && x[11] == 0xff;
    if a.family == net::AF_INET6 && mapped(&a.daddr) {
        out.family = net::AF_INET;
        out.saddr[..4].copy_from_slice(&a.saddr[12..16]);
        out.daddr[..4].copy_from_slice(&a.daddr[12..16]);
    } else {
        out.saddr = a.saddr;
        out.daddr = a.daddr;
    }
    out
}
