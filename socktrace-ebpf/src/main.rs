//! socktrace's kernel programs. They filter and record facts; they never explain.
//!
//! * `syscalls`: a failing call of a traced thread on a socket fd becomes one `FailureEvent` on
//!   the ring buffer, carrying the history the kernel kept for that socket (arguments come
//!   from the registers saved at entry; routine failures are only counted).
//! * `history`: the TCP/socket events keep that history, keyed by the `struct sock` address,
//!   from whatever context they run in (softirq included): attribution goes through the
//!   socket. Each event has one handler (`on_*`) and up to three thin entry points, one per
//!   probe type; userspace loads one per event (see `kernel/probes.rs`).
//! * `follow`: children of traced processes join the selection (`-f`).
//! * `icmp`: who sent the ICMP errors this host receives, for the failures they cause.
//! * `drops`: TCP packets of traced connections that this host dropped, and why.
//!
//! Every program's body is `#[inline(always)]`: aya's macros wrap it in the real entry point,
//! which otherwise calls it as a BPF subprogram, a call and a return (through the return
//! thunk of this CPU's speculation mitigations) on every run of every hook.
//!
//! Every struct layout comes from userspace (`OFFSETS`), computed from the running kernel.
//! Kernel-side logs (aya-log) mark the rare conditions only; userspace sets their level
//! before load, and at the default (off) the verifier removes them as dead code.
#![no_std]
#![no_main]
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

mod drops;
mod ended;
mod fdwalk;
mod follow;
mod history;
mod icmp;
mod io_uring;
mod resets;
mod resources;
mod syscalls;

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        generated::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_comm, bpf_get_current_task, bpf_ktime_get_ns},
    },
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf, StackTrace},
    programs::tracing::StackIdContext,
};
use socktrace_common::{
    config_flags, history_stats, routine, KernelOffsets, SockHead, SocketHistory, TracedConfig, TASK_COMM_LEN,
};

/// Struct and record field offsets of the running kernel (see `KernelOffsets`).
#[no_mangle]
static OFFSETS: KernelOffsets = KernelOffsets::ZERO;

/// What to trace and report (see `TracedConfig`).
#[no_mangle]
static CONFIG: TracedConfig = TracedConfig::ZERO;

/// Thread-group ids (processes) being traced; the first check of every syscall program.
#[map]
static TRACED_TGIDS: HashMap<u32, u8> = HashMap::with_max_entries(16384, 0);

/// How many socket histories the kernel keeps at most: userspace sizes the map at load.
const MAX_SOCKETS: u32 = socktrace_common::MAX_SOCKETS;

/// What the kernel remembers per socket, from its first traced event until `tcp_destroy_sock`
/// removes it: a plain hash, never evicted from (an LRU would drop the history of the idle
/// connection that fails next; a per-CPU LRU split it by the CPU the socket was born on).
/// Entries are allocated as sockets come (`BPF_F_NO_PREALLOC`): memory follows the sockets
/// traced, not the map's size. When the map is full, a new socket gets no history, and that
/// is counted (`history_stats::REFUSED`).
#[map]
static SOCKETS: HashMap<u64, SocketHistory> = HashMap::with_max_entries(MAX_SOCKETS, BPF_F_NO_PREALLOC);

/// One all-zero `SocketHistory`, never written: the template for new entries (a
/// SocketHistory does not fit on the 512-byte eBPF stack).
#[map]
static EMPTY_HISTORY: Array<SocketHistory> = Array::with_max_entries(1, 0);

/// Routine failures counted instead of sent, by kind and TCP state (see `routine`).
#[map]
static ROUTINE_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(routine::KINDS * routine::STATES, 0);

/// Failures that could not be sent because the ring buffer was full (summed over CPUs).
#[map]
static LOST_EVENTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Socket histories created and destroyed since load (see `history_stats`): what userspace
/// needs to tell how many were evicted, and what the "map full" log is decided on.
#[map]
static HISTORY_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(history_stats::SLOTS, 0);

/// Kernel stacks at the events behind failures, with `--kstack` (userspace sizes it then; one
/// entry otherwise, never written).
#[map]
static STACKS: StackTrace = StackTrace::with_max_entries(1, 0);

/// The kernel stack at this event, as its `STACKS` id plus one; 0 without `--kstack` (a
/// constant the verifier prunes: no cost then) or when the map could not take it.
#[inline(always)]
fn kstack<C: StackIdContext>(ctx: &C) -> u32 {
    if global!(CONFIG.flags) & config_flags::KSTACK == 0 {
        return 0;
    }
    match ctx.get_stackid(&STACKS, 0) {
        Ok(id) => (id as u32).wrapping_add(1),
        Err(_) => 0,
    }
}

/// Reads a field of a global that userspace rewrites before load; volatile so the compiler
/// cannot fold the placeholder zero (the verifier still sees the frozen value).
macro_rules! global {
    ($g:ident . $field:ident) => {{
        // SAFETY: an aligned read of a field of a static that lives for the whole program.
        #[allow(unused_unsafe)]
        let v = unsafe { core::ptr::read_volatile(&raw const crate::$g.$field) };
        v
    }};
}
pub(crate) use global;

/// Zeroes `*p` with word stores. A plain zero-initialisation (`Default`, `[0; N]`) compiles to
/// a call to a byte-loop `memset`, which verifiers before about 6.4 walk byte by byte on every
/// path: on 6.1 that alone exhausted the one-million-instruction budget. Volatile stores are
/// never turned back into a `memset`.
///
/// # Safety
/// `p` must be valid for writes of a `T` and 8-byte aligned.
#[inline(always)]
unsafe fn zero<T>(p: *mut T) {
    let size = core::mem::size_of::<T>();
    let words = p.cast::<u64>();
    let mut i = 0;
    while i < size / 8 {
        // SAFETY: within `*p` (i < size / 8), aligned as the caller promised.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
        i += 1;
    }
    let bytes = p.cast::<u8>();
    let mut j = size / 8 * 8;
    while j < size {
        // SAFETY: within `*p` (j < size).
        unsafe { core::ptr::write_volatile(bytes.add(j), 0) };
        j += 1;
    }
}

/// A `T` that starts all-zero, built without a `memset` (see `zero`); `T` must be plain data
/// for which zero is valid, at most `8 * N` bytes.
#[inline(always)]
fn zeroed<T: Copy, const N: usize>() -> T {
    const { assert!(core::mem::size_of::<T>() <= 8 * N) };
    let mut words = [0u64; N];
    // SAFETY: a local array, 8-byte aligned.
    unsafe { zero(&raw mut words) };
    // SAFETY: every caller's T is plain data (integers) for which zero is valid, and it fits.
    unsafe { core::mem::transmute_copy::<[u64; N], T>(&words) }
}

/// The current task's name (the helper zeroes it on failure).
#[inline(always)]
fn current_comm() -> [u64; 2] {
    let mut comm = zeroed::<[u64; 2], 2>();
    // SAFETY: the helper writes at most TASK_COMM_LEN (16) bytes into a 16-byte buffer.
    unsafe { bpf_get_current_comm(comm.as_mut_ptr().cast(), TASK_COMM_LEN as u32) };
    comm
}

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: a helper with no arguments.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// The name of the current process (its thread group leader), not of the current thread.
#[inline(always)]
fn leader_comm() -> [u8; TASK_COMM_LEN] {
    // SAFETY: a helper without arguments; the task is only read through bpf_probe_read_kernel.
    let task = unsafe { bpf_get_current_task() };
    let leader: u64 = read(task, global!(OFFSETS.task_group_leader)).unwrap_or(0);
    read(leader, global!(OFFSETS.task_comm)).unwrap_or([0; TASK_COMM_LEN])
}

/// Whether the current task is selected. Every selector given must match (pids, name,
/// cgroup); with none, every process is.
#[inline(always)]
fn is_traced(tgid: u32) -> bool {
    is_selected(tgid, current_comm)
}

/// Like `is_traced`, with `-c` matched against the process's name: io_uring requests of a
/// traced process complete in its io-wq workers (`iou-wrk-*`) and SQPOLL thread too.
#[inline(always)]
fn is_traced_process(tgid: u32) -> bool {
    // SAFETY: both are 16 plain bytes.
    is_selected(tgid, || unsafe { core::mem::transmute::<[u8; TASK_COMM_LEN], [u64; 2]>(leader_comm()) })
}

#[inline(always)]
fn is_selected(tgid: u32, comm: impl FnOnce() -> [u64; 2]) -> bool {
    // Never socktrace itself, whatever the selectors: tracing every process must not count
    // (or, through its own output, feed) the agent's own sockets.
    let own = global!(CONFIG.self_tgid);
    if tgid == own && own != 0 {
        return false;
    }
    let flags = global!(CONFIG.flags);
    if flags & config_flags::SELECT_ONE_PID != 0 && tgid != global!(CONFIG.tgid) {
        return false;
    }
    // SAFETY: the value is only tested for presence, never read through.
    if flags & config_flags::SELECT_PIDS != 0 && unsafe { TRACED_TGIDS.get(tgid).is_none() } {
        return false;
    }
    if flags & config_flags::SELECT_COMM != 0 {
        let want = global!(CONFIG.comm);
        // SAFETY: both are 16 plain bytes.
        let want: [u64; 2] = unsafe { core::mem::transmute(want) };
        // The thread's name, or its process's (the thread group leader's): a JVM's, Go's or
        // libuv's worker threads have names of their own (`HttpClient-1-Se`), and `-c java`
        // means the process.
        // SAFETY: both are 16 plain bytes.
        if comm() != want && unsafe { core::mem::transmute::<[u8; TASK_COMM_LEN], [u64; 2]>(leader_comm()) } != want {
            return false;
        }
    }
    if flags & config_flags::SELECT_CGROUP != 0 {
        let level = global!(CONFIG.cgroup_level);
        let id = if flags & config_flags::CGROUP_WALK != 0 {
            ancestor_cgroup_id(level, flags)
        } else {
            // SAFETY: a helper taking a plain integer.
            unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) }
        };
        if id != global!(CONFIG.cgroup_id) {
            return false;
        }
    }
    true
}

/// The id of the current task's cgroup v2 ancestor at `level` (0 when it is not that deep),
/// walked from the task: what bpf_get_current_ancestor_cgroup_id answers on 5.14+.
#[inline(always)]
fn ancestor_cgroup_id(level: u32, flags: u32) -> u64 {
    // SAFETY: a helper without arguments; the task is only read through bpf_probe_read_kernel.
    let task = unsafe { bpf_get_current_task() };
    let css_set: u64 = read(task, global!(OFFSETS.task_cgroups)).unwrap_or(0);
    let cgrp: u64 = read(css_set, global!(OFFSETS.css_set_dfl_cgrp)).unwrap_or(0);
    let depth: i32 = read(cgrp, global!(OFFSETS.cgroup_level)).unwrap_or(-1);
    if depth < level as i32 || level > 64 {
        return 0;
    }
    let slot = global!(OFFSETS.cgroup_ancestors) + 8 * level;
    if flags & config_flags::CGROUP_ANCESTOR_IDS != 0 {
        return read(cgrp, slot).unwrap_or(0);
    }
    let ancestor: u64 = read(cgrp, slot).unwrap_or(0);
    let kn: u64 = read(ancestor, global!(OFFSETS.cgroup_kn)).unwrap_or(0);
    read(kn, global!(OFFSETS.kernfs_node_id)).unwrap_or(0)
}

/// Reads a `T` at `base + offset` of kernel memory; None when `base` is NULL or the read
/// faults (the helper checks the address: a wrong offset reads garbage, never crashes).
#[inline(always)]
fn read<T>(base: u64, offset: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel validates the address and fails instead of faulting.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T).ok() }
}

/// `read`, without a branch: the helper zero-fills its destination when the read faults (a
/// NULL `base` included), so this is `read(..).unwrap_or(zero)` as one straight path. Older
/// verifiers (6.1) walk both sides of every `unwrap_or` separately and never merge a zeroed
/// stack slot with a read one: a run of them doubles the states each time.
#[inline(always)]
fn read_or_zero<T: Copy>(base: u64, offset: u32) -> T {
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: the helper writes all size_of::<T>() bytes of `v` (the value, or zeros when the
    // read faults), so it is initialised either way; every caller's T is plain data.
    unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            v.as_mut_ptr().cast(),
            core::mem::size_of::<T>() as u32,
            (base.wrapping_add(offset as u64)) as *const core::ffi::c_void,
        );
        v.assume_init()
    }
}

#[inline(always)]
fn count_history_created() {
    count(&HISTORY_STATS, history_stats::CREATED);
}

/// A socket got no history: the map was full. Counted: userspace names it in the failures it
/// leaves unexplained, at attach and in the summary.
#[inline(always)]
fn count_history_refused() {
    count(&HISTORY_STATS, history_stats::REFUSED);
}

#[inline(always)]
fn count_history_destroyed() {
    count(&HISTORY_STATS, history_stats::DESTROYED);
}

#[inline(always)]
fn count_drop_recorded() {
    count(&HISTORY_STATS, history_stats::DROPS_RECORDED);
}

/// How a handler reads the `struct sock` its hook passed. A BTF tracepoint's argument is a
/// BTF-typed pointer: a field of `struct sock` (within it: `inet_sock` and `tcp_sock` fields
/// lie beyond the type, and stay probe reads) is a plain load, whose constant offset the
/// verifier checks against the kernel's type, and which the JIT makes read 0 on a fault. Any
/// other hook's socket is a plain number, read with `bpf_probe_read_kernel`, a helper call
/// each (about 25 ns here).
pub(crate) trait SockView {
    const TYPED: bool;
}

/// The socket of a classic tracepoint, a kprobe, an fentry program reading `tcp_sock` fields,
/// or an fd walk: probe reads.
pub(crate) struct ProbedSock;

impl SockView for ProbedSock {
    const TYPED: bool = false;
}

/// The socket argument of a BTF tracepoint: typed loads.
pub(crate) struct TypedSock;

impl SockView for TypedSock {
    const TYPED: bool = true;
}

/// A field of `struct sock` (one whose offset is always resolved: never `NO_FIELD`). A typed
/// load never fails: a bad pointer reads 0, as the probe read's `unwrap_or(0)` does.
#[inline(always)]
fn sk_field<V: SockView, T: Copy + Default>(sk: u64, offset: u32) -> T {
    if V::TYPED {
        syscalls::load(sk, offset)
    } else {
        read(sk, offset).unwrap_or_default()
    }
}

/// The head of `struct sock_common`: addresses, ports, family, state, in one probe read where
/// the layout is the usual one (`SOCK_HEAD`), else field by field (typed loads always are).
#[inline(always)]
fn sock_head<V: SockView>(sk: u64) -> Option<SockHead> {
    if sk == 0 {
        return None;
    }
    if !V::TYPED && global!(CONFIG.flags) & config_flags::SOCK_HEAD != 0 {
        return read(sk, 0);
    }
    let mut h: SockHead = zeroed::<SockHead, 3>();
    h.daddr = sk_field::<V, u32>(sk, global!(OFFSETS.sk_daddr)).to_ne_bytes();
    h.rcv_saddr = sk_field::<V, u32>(sk, global!(OFFSETS.sk_rcv_saddr)).to_ne_bytes();
    h.dport = sk_field::<V, u16>(sk, global!(OFFSETS.sk_dport));
    h.num = sk_field::<V, u16>(sk, global!(OFFSETS.sk_num));
    h.family = sk_field::<V, u16>(sk, global!(OFFSETS.sk_family));
    h.state = sk_field::<V, u8>(sk, global!(OFFSETS.sk_state));
    Some(h)
}

/// What an `sk_buff` says of its packet's headers: `protocol` (the ethertype, network order)
/// and where the network and transport headers start (offsets from `head`; 0xffff: unset).
pub(crate) struct SkbHeaders {
    pub protocol: u16,
    pub network: u16,
    pub transport: u16,
}

/// `sk_buff`'s `protocol`, `transport_header` and `network_header`: one read where they sit
/// packed in that order (`SKB_HEADERS_PACKED`, every kernel tested), else three. Shared by the
/// RST, ICMP and drop programs.
#[inline(always)]
fn skb_headers(skb: u64) -> SkbHeaders {
    if global!(CONFIG.flags) & config_flags::SKB_HEADERS_PACKED != 0 {
        // Zeros if unreadable (then so is `head`).
        let h: [u16; 3] = read_or_zero(skb, global!(OFFSETS.skb_protocol));
        return SkbHeaders { protocol: h[0], transport: h[1], network: h[2] };
    }
    SkbHeaders {
        protocol: read(skb, global!(OFFSETS.skb_protocol)).unwrap_or(0),
        network: read(skb, global!(OFFSETS.skb_network_header)).unwrap_or(0xffff),
        transport: read(skb, global!(OFFSETS.skb_transport_header)).unwrap_or(0xffff),
    }
}

/// `sk_type` and `sk_protocol`, in one read where they are adjacent (two loads, typed).
#[inline(always)]
fn sock_type_protocol<V: SockView>(sk: u64) -> (u16, u16) {
    if V::TYPED {
        return (
            sk_field::<V, u16>(sk, global!(OFFSETS.sk_type)),
            sk_field::<V, u16>(sk, global!(OFFSETS.sk_protocol)),
        );
    }
    let flags = global!(CONFIG.flags);
    if flags & config_flags::TYPE_PROTOCOL_PAIR != 0 {
        if flags & config_flags::PROTOCOL_FIRST != 0 {
            let pair: [u16; 2] = read(sk, global!(OFFSETS.sk_protocol)).unwrap_or([0; 2]);
            return (pair[1], pair[0]);
        }
        let pair: [u16; 2] = read(sk, global!(OFFSETS.sk_type)).unwrap_or([0; 2]);
        return (pair[0], pair[1]);
    }
    (read(sk, global!(OFFSETS.sk_type)).unwrap_or(0), read(sk, global!(OFFSETS.sk_protocol)).unwrap_or(0))
}

/// `table[idx]` of a read-only byte table (the syscall and io_uring tables in `CONFIG`), or None
/// when `idx >= len`. The bound check, the pointer arithmetic and the load are one asm block:
/// compiled separately, the compiler may check one copy of the index and add another (spilled
/// and reloaded), whose bounds verifiers before about 6.4 do not know, and they refuse the
/// program ("math between map_value pointer and register with unbounded min value").
#[inline(always)]
fn table_byte(table: *const u8, idx: u64, len: u64) -> Option<u8> {
    #[cfg(target_arch = "bpf")]
    {
        let (mut found, mut value) = (0u64, 0u64);
        // SAFETY: the load happens only when idx < len, and `table` points at `len` bytes.
        unsafe {
            core::arch::asm!(
                "if {i} >= {n} goto +3",
                "{p} += {i}",
                "{v} = *(u8 *)({p} + 0)",
                "{f} = 1",
                i = in(reg) idx,
                n = in(reg) len,
                p = inout(reg) table as u64 => _,
                v = inout(reg) value,
                f = inout(reg) found,
                options(nostack, readonly),
            );
        }
        (found == 1).then_some(value as u8)
    }
    #[cfg(not(target_arch = "bpf"))]
    {
        // SAFETY: as above (the host build only type-checks the kernel side, for clippy).
        (idx < len).then(|| unsafe { core::ptr::read_volatile(table.add(idx as usize)) })
    }
}

/// Adds one to a per-CPU counter.
#[inline(always)]
fn count(counter: &PerCpuArray<u64>, index: u32) {
    if let Some(c) = counter.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot: no other writer while this program runs on this CPU.
        unsafe { *c += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
