//! Who sent an ICMP error, and which: `icmp_rcv`/`icmpv6_rcv` see every ICMP message this host
//! receives (fentry where the kernel has BPF trampolines, a kprobe otherwise). An error about a
//! TCP or UDP packet this host sent is kept by that packet's 4-tuple (as its socket sees it),
//! with the address that sent the message and its type and code; the failing call whose error
//! the message set looks it up (`syscalls::find_icmp_source`). Only ICMP messages run this:
//! no cost to any other packet.

use crate::{global, now_ns, read, zeroed};
use aya_ebpf::{
    macros::{fentry, kprobe, map},
    maps::{Array, LruHashMap},
    programs::{FEntryContext, ProbeContext},
};
use socktrace_common::{net, IcmpSource, SockAddrs, NO_FIELD};

/// The ICMP errors received, by the 4-tuple of the packet they are about.
#[map]
pub(crate) static ICMP_SOURCES: LruHashMap<SockAddrs, IcmpSource> = LruHashMap::with_max_entries(4096, 0);

/// Whether any ICMP error was kept since load: until one is, failing calls skip the lookup
/// (most hosts rarely receive one, and where the kernel refuses the ICMP hook none ever is).
/// Written once, after the first entry, so the flag's line is not bounced between CPUs.
#[map]
static ICMP_KEPT: Array<u32> = Array::with_max_entries(1, 0);

/// Whether `ICMP_SOURCES` may hold anything.
#[inline(always)]
pub(crate) fn icmp_kept() -> bool {
    ICMP_KEPT.get(0).is_some_and(|&k| k != 0)
}

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

#[fentry(function = "icmp_rcv")]
#[inline(always)]
pub fn icmp_rcv(ctx: FEntryContext) -> u32 {
    on_icmp(ctx.arg(0), false)
}

#[fentry(function = "icmpv6_rcv")]
#[inline(always)]
pub fn icmpv6_rcv(ctx: FEntryContext) -> u32 {
    on_icmp(ctx.arg(0), true)
}

#[kprobe]
#[inline(always)]
pub fn kp_icmp_rcv(ctx: ProbeContext) -> u32 {
    on_icmp(ctx.arg(0).unwrap_or(0), false)
}

#[kprobe]
#[inline(always)]
pub fn kp_icmpv6_rcv(ctx: ProbeContext) -> u32 {
    on_icmp(ctx.arg(0).unwrap_or(0), true)
}

/// An ICMP(v6) message in `skb`: its IP header at `network_header`, the ICMP header at
/// `transport_header`, and, for an error, the start of the offending packet 8 bytes after it.
#[inline(always)]
fn on_icmp(skb: u64, v6: bool) -> u32 {
    let head_at = global!(OFFSETS.skb_head);
    if skb == 0 || head_at == NO_FIELD {
        return 0;
    }
    let head: u64 = read(skb, head_at).unwrap_or(0);
    let crate::SkbHeaders { network, transport, .. } = crate::skb_headers(skb);
    if head == 0 || network == 0xffff || transport == 0xffff {
        return 0;
    }
    let icmp = head + transport as u64;
    let [icmp_type, code]: [u8; 2] = read(icmp, 0).unwrap_or([0; 2]);
    // Destination unreachable, time exceeded, parameter problem (and v6's packet too big):
    // the errors that carry the offending packet.
    let error = if v6 { matches!(icmp_type, 1..=4) } else { matches!(icmp_type, 3 | 11 | 12) };
    if !error {
        return 0;
    }
    let inner = icmp + 8;
    let mut key: SockAddrs = zeroed::<SockAddrs, 5>();
    let mut source: IcmpSource = zeroed::<IcmpSource, 4>();
    let (protocol, ports_at) = if v6 {
        key.family = net::AF_INET6;
        key.saddr = read(inner, 8).unwrap_or([0; 16]);
        key.daddr = read(inner, 24).unwrap_or([0; 16]);
        source.from = read(head + network as u64, 8).unwrap_or([0; 16]);
        (read::<u8>(inner, 6).unwrap_or(0), inner + 40)
    } else {
        key.family = net::AF_INET;
        let first: u8 = read(inner, 0).unwrap_or(0);
        let addrs: [u8; 8] = read(inner, 12).unwrap_or([0; 8]);
        key.saddr[..4].copy_from_slice(&addrs[..4]);
        key.daddr[..4].copy_from_slice(&addrs[4..]);
        let from: [u8; 4] = read(head + network as u64, 12).unwrap_or([0; 4]);
        source.from[..4].copy_from_slice(&from);
        (read::<u8>(inner, 9).unwrap_or(0), inner + ((first & 0xf) as u64) * 4)
    };
    if protocol != IPPROTO_TCP && protocol != IPPROTO_UDP {
        return 0;
    }
    let ports: [u16; 2] = read(ports_at, 0).unwrap_or([0; 2]);
    key.sport = u16::from_be(ports[0]);
    key.dport = u16::from_be(ports[1]);
    if key.sport == 0 || key.dport == 0 {
        return 0;
    }
    source.ts_ns = now_ns();
    source.family = key.family;
    source.icmp_type = icmp_type;
    source.code = code;
    source.protocol = protocol;
    let _ = ICMP_SOURCES.insert(key, source, 0);
    if let Some(kept) = ICMP_KEPT.get_ptr_mut(0) {
        // SAFETY: a live map value; every writer writes 1.
        unsafe {
            if core::ptr::read_volatile(kept) == 0 {
                core::ptr::write_volatile(kept, 1);
            }
        }
    }
    0
}
