//! What the kernel programs are told before load: the selection (which processes), the
//! options (what to report), and what this kernel's layout allows (`KernelFacts`), turned into
//! the one read-only `TracedConfig`, with the syscall and io_uring tables. Pure: the loader
//! hands it the kernel's BTF, and nothing here loads or attaches.

use super::{btf::KernelBtf, version::kernel_version};
use crate::model::{Direction, IoUringOp, Syscall};
use socktrace_common::{
    config_flags, syscall_kind, TracedConfig, IO_URING_OPS, MAX_SOCKETS, SYSCALL_TABLE_SIZE, TASK_COMM_MAX,
};

/// What the `sys_exit` program is to do with each syscall number of this architecture.
pub fn syscall_kinds() -> [u8; SYSCALL_TABLE_SIZE] {
    let mut kinds = [syscall_kind::NONE; SYSCALL_TABLE_SIZE];
    for s in Syscall::ALL {
        let kind = match s {
            _ if s.is_receive() => syscall_kind::RECEIVE,
            Syscall::Connect => syscall_kind::CONNECT,
            Syscall::Getsockopt => syscall_kind::GETSOCKOPT,
            Syscall::Splice => syscall_kind::SPLICE,
            Syscall::Socket => syscall_kind::SOCKET,
            _ => syscall_kind::OTHER,
        };
        if let Some(slot) = usize::try_from(s.number()).ok().and_then(|n| kinds.get_mut(n)) {
            *slot = kind;
        }
    }
    kinds
}

/// What the io_uring program is to do with each opcode: the requests watched on sockets.
pub fn io_uring_kinds() -> [u8; IO_URING_OPS] {
    let mut kinds = [syscall_kind::NONE; IO_URING_OPS];
    for op in IoUringOp::ALL {
        // A request's result is final: no EOF report and no SO_ERROR to read, so every watched
        // request is `OTHER` except connect, whose failures name their destination.
        kinds[op.opcode() as usize] =
            if op.direction() == Direction::Connect { syscall_kind::CONNECT } else { syscall_kind::OTHER };
    }
    kinds
}

/// What the kernel reports beyond the failures themselves.
#[derive(Clone, Debug, Default)]
pub struct ProbeOptions {
    pub report_eof: bool,
    pub all_sockets: bool,
    /// Send routine failures as events (--all-errors) instead of counting them in the kernel.
    pub send_routine: bool,
    /// Kernel-side log records (aya-log) at this level and above; None: none (the verifier
    /// then removes every log statement).
    pub log_level: Option<aya_log::Level>,
    /// Record kernel stacks at the events behind failures (`--kstack`).
    pub kstack: bool,
    /// A connection its process ends with nothing received for this long since its last send
    /// is reported (`--no-reply-after`); zero: never.
    pub silence: std::time::Duration,
    /// The history map's size (`--max-histories`); None: `history_map_size` of the host.
    pub max_histories: Option<u32>,
}

/// The history map's size when the user gave none: twice the TCP sockets allocated on this
/// host (`/proc/net/sockstat`, every namespace), so that those there at attach and as many
/// again fit, and never below the object's `MAX_SOCKETS`. Entries cost memory only when used.
///
/// Where the map is preallocated (kernels before 6.1, see `load`), its whole size is memory
/// from the start: 65,536 at least, 262,144 at most unless given.
pub fn history_map_size(opts: &ProbeOptions, preallocated: bool) -> u32 {
    if let Some(n) = opts.max_histories {
        return n;
    }
    let allocated = std::fs::read_to_string("/proc/net/sockstat").ok().and_then(|s| tcp_sockets_allocated(&s));
    sized_for(allocated.unwrap_or(0), preallocated)
}

/// Preallocated maps' bounds: about 25 MiB and 100 MiB of kernel memory.
const PREALLOCATED_FLOOR: u32 = 65_536;
const PREALLOCATED_CEILING: u32 = MAX_SOCKETS;

fn sized_for(allocated: u64, preallocated: bool) -> u32 {
    let (floor, ceiling) =
        if preallocated { (PREALLOCATED_FLOOR, PREALLOCATED_CEILING) } else { (MAX_SOCKETS, u32::MAX / 2) };
    allocated.saturating_mul(2).clamp(u64::from(floor), u64::from(ceiling)) as u32
}

/// `alloc` of sockstat's `TCP:` line: TCP sockets allocated on the host, all namespaces.
fn tcp_sockets_allocated(sockstat: &str) -> Option<u64> {
    let line = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == "alloc" {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// Which processes are traced; every selector given must match, all filtering in the kernel.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Processes (thread-group ids); empty = any process.
    pub tgids: Vec<u32>,
    /// Also trace children forked by traced processes.
    pub follow: bool,
    /// Task name (at most 15 bytes, as the kernel keeps it).
    pub comm: Option<Vec<u8>>,
    /// cgroup v2 id and its depth below the root.
    pub cgroup: Option<(u64, u32)>,
}

impl Selection {
    /// Nothing selected: every process on the machine is traced.
    pub fn is_everything(&self) -> bool {
        self.tgids.is_empty() && self.comm.is_none() && self.cgroup.is_none()
    }
}

/// Set to 1 to select `--cgroup` by walking from the task, as kernels before 5.14 need: how
/// that path is tested on a kernel that has the helper.
pub const CGROUP_WALK_ENV: &str = "SOCKTRACE_CGROUP_WALK";

/// What the configuration takes from the running kernel.
#[derive(Clone, Debug, Default)]
pub struct KernelFacts {
    /// The `tcp_send_reset` BTF tracepoint carries the RST reason (6.10+).
    pub send_reset_has_reason: bool,
    /// The `kfree_skb` tracepoint passes the drop reason (5.17+).
    pub drop_has_reason: bool,
    /// This kernel's `SKB_DROP_REASON_NO_SOCKET`, if it has drop reasons.
    pub drop_reason_no_socket: u32,
    /// `sk_buff.protocol`, `.transport_header`, `.network_header` are adjacent.
    pub skb_headers_packed: bool,
    /// `struct sock_common` starts as `SockHead` says.
    pub sock_head: bool,
    /// Tracing programs may not call bpf_get_current_ancestor_cgroup_id (before 5.14): the
    /// cgroup is walked from the task instead...
    pub cgroup_walk: bool,
    /// ...and the cgroup keeps its ancestors' ids (`cgroup.ancestor_ids`, before 6.0).
    pub cgroup_ancestor_ids: bool,
    /// `ip_local_ports.range` is two ints (a seqlock beside them; packed into a u32 later).
    pub port_range_ints: bool,
    /// `sk_type` and `sk_protocol` are adjacent u16s...
    pub type_protocol_pair: bool,
    /// ...with `sk_protocol` first.
    pub protocol_first: bool,
    /// The syscall number follows the first argument in `struct pt_regs`.
    pub nr_after_arg0: bool,
    /// `fdtable.fd` follows `fdtable.max_fds`.
    pub fdtable_pair: bool,
    /// `files_struct.fdtab` follows `files_struct.fdt` (and starts with max_fds, fd).
    pub fdtab_after_fdt: bool,
    /// `file.private_data` is two words after `file.f_op` (6.12+).
    pub file_op_data_span: bool,
    /// `socket.ops` follows `socket.sk`.
    pub socket_sk_ops_pair: bool,
    /// Parameters of `tcp_reset` (2 from 5.14: it takes the segment).
    pub tcp_reset_arity: Option<usize>,
    /// The tracepoint `skb:kfree_skb` is in the BTF.
    pub kfree_skb_tracepoint: bool,
    /// `enum sk_rst_reason` (6.10+) and `enum skb_drop_reason` (5.17+): value -> name.
    pub rst_reasons: Vec<(u32, String)>,
    pub drop_reasons: Vec<(u32, String)>,
    /// The kernel's tick rate (`CONFIG_HZ`, measured), for the jiffies socket fields hold.
    pub hz: Option<u32>,
    /// `bpf_task_pt_regs` (5.15+): an ended socket's call is read from the task's registers.
    pub task_pt_regs: bool,
}

impl KernelFacts {
    pub fn of(btf: &KernelBtf, o: &socktrace_common::KernelOffsets) -> Self {
        let head = socktrace_common::SockHead::OFFSETS;
        let drop_reasons = btf.enum_names("skb_drop_reason");
        // Each lookup by name scans the whole BTF: kfree_skb's is made once.
        let kfree_skb_arity = btf.tracepoint_arity("kfree_skb");
        KernelFacts {
            send_reset_has_reason: btf.tracepoint_arity("tcp_send_reset").unwrap_or(0) >= 3,
            drop_has_reason: kfree_skb_arity.unwrap_or(0) >= 3,
            skb_headers_packed: o.skb_protocol != socktrace_common::NO_FIELD
                && o.skb_transport_header == o.skb_protocol + 2
                && o.skb_network_header == o.skb_protocol + 4,
            drop_reason_no_socket: drop_reasons
                .iter()
                .find(|(_, n)| n == "SKB_DROP_REASON_NO_SOCKET")
                .map(|(v, _)| *v)
                .unwrap_or(0),
            sock_head: (o.sk_daddr, o.sk_rcv_saddr, o.sk_dport, o.sk_num, o.sk_family, o.sk_state) == head,
            type_protocol_pair: o.sk_protocol == o.sk_type + 2 || o.sk_type == o.sk_protocol + 2,
            protocol_first: o.sk_type == o.sk_protocol + 2,
            nr_after_arg0: o.regs_syscall_nr == o.regs_args[0] + 8,
            fdtable_pair: o.fdtable_fd == o.fdtable_max_fds + 8,
            fdtab_after_fdt: o.files_fdtab == o.files_fdt + 8 && (o.fdtable_max_fds, o.fdtable_fd) == (0, 8),
            file_op_data_span: o.file_private_data == o.file_f_op + 16,
            socket_sk_ops_pair: o.socket_ops == o.socket_sk + 8,
            cgroup_walk: kernel_version() < (5, 14) || std::env::var_os(CGROUP_WALK_ENV).is_some_and(|v| v == "1"),
            cgroup_ancestor_ids: btf.offset_of("cgroup", "ancestor_ids").is_ok(),
            port_range_ints: btf.offset_of("local_ports", "lock").is_ok(),
            tcp_reset_arity: btf.function_arity("tcp_reset"),
            kfree_skb_tracepoint: kfree_skb_arity.is_some(),
            rst_reasons: btf.enum_names("sk_rst_reason"),
            drop_reasons,
            hz: super::jiffies::hz(),
            task_pt_regs: kernel_version() >= (5, 15),
        }
    }
}

/// The kernel-side configuration for a selection and options: the one place its bits are set.
pub fn traced_config(sel: &Selection, opts: &ProbeOptions, kernel: &KernelFacts) -> TracedConfig {
    let mut c = TracedConfig::ZERO;
    let mut set = |bit: u32, on: bool| {
        if on {
            c.flags |= bit;
        }
    };
    set(config_flags::REPORT_EOF, opts.report_eof);
    set(config_flags::ALL_SOCKETS, opts.all_sockets);
    set(config_flags::SEND_ROUTINE, opts.send_routine);
    set(config_flags::SEND_RESET_HAS_REASON, kernel.send_reset_has_reason);
    set(config_flags::DROP_HAS_REASON, kernel.drop_has_reason);
    set(config_flags::KSTACK, opts.kstack);
    set(config_flags::SKB_HEADERS_PACKED, kernel.skb_headers_packed);
    set(config_flags::SOCK_HEAD, kernel.sock_head);
    set(config_flags::TYPE_PROTOCOL_PAIR, kernel.type_protocol_pair);
    set(config_flags::PROTOCOL_FIRST, kernel.type_protocol_pair && kernel.protocol_first);
    set(config_flags::NR_AFTER_ARG0, kernel.nr_after_arg0);
    set(config_flags::FDTABLE_PAIR, kernel.fdtable_pair);
    set(config_flags::FDTAB_AFTER_FDT, kernel.fdtab_after_fdt);
    set(config_flags::FILE_OP_DATA_SPAN, kernel.file_op_data_span);
    set(config_flags::SOCKET_SK_OPS_PAIR, kernel.socket_sk_ops_pair);
    set(config_flags::CGROUP_WALK, sel.cgroup.is_some() && kernel.cgroup_walk);
    set(config_flags::PORT_RANGE_INTS, kernel.port_range_ints);
    set(config_flags::CGROUP_ANCESTOR_IDS, sel.cgroup.is_some() && kernel.cgroup_ancestor_ids);
    set(config_flags::FOLLOW_FORKS, sel.follow);
    // One process, no children: a compare instead of a map lookup per call.
    let one_pid = sel.tgids.len() == 1 && !sel.follow;
    set(config_flags::SELECT_ONE_PID, one_pid);
    set(config_flags::SELECT_PIDS, !sel.tgids.is_empty() && !one_pid);
    set(config_flags::SELECT_COMM, sel.comm.is_some());
    set(config_flags::SELECT_CGROUP, sel.cgroup.is_some());
    set(config_flags::TRACE_ALL, sel.is_everything());
    set(config_flags::TASK_PT_REGS, kernel.task_pt_regs);
    if one_pid {
        c.tgid = sel.tgids[0];
    }
    if let Some(comm) = &sel.comm {
        let n = comm.len().min(TASK_COMM_MAX);
        c.comm[..n].copy_from_slice(&comm[..n]);
    }
    if let Some((id, level)) = sel.cgroup {
        c.cgroup_id = id;
        c.cgroup_level = level;
    }
    c.max_histories = opts.max_histories.unwrap_or(MAX_SOCKETS);
    c.self_tgid = std::process::id();
    c.drop_reason_no_socket = if kernel.drop_has_reason { kernel.drop_reason_no_socket } else { 0 };
    c.syscall_kinds = syscall_kinds();
    c.io_uring_kinds = io_uring_kinds();
    c.hash_seed = secret_seed();
    c.silence_jiffies = silence_jiffies(opts.silence, kernel.hz);
    c
}

/// `silence` in the kernel's jiffies (at least one); 0, turning the report off, when HZ is not
/// known (a guess would shorten or stretch every threshold).
fn silence_jiffies(silence: std::time::Duration, hz: Option<u32>) -> u32 {
    match hz {
        Some(hz) if !silence.is_zero() => {
            (silence.as_millis() as u64 * u64::from(hz) / 1000).clamp(1, u32::MAX as u64) as u32
        }
        _ => 0,
    }
}

/// A secret of this load: std's `RandomState` keys SipHash with numbers from the OS's random
/// source, so hashing a constant with it gives 64 bits nobody outside this process knows.
fn secret_seed() -> u64 {
    use std::hash::BuildHasher as _;
    std::collections::hash_map::RandomState::new().hash_one("socktrace: the SENT_RESETS hash seed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_syscall_table_names_every_watched_call_and_nothing_else() {
        let kinds = syscall_kinds();
        for s in Syscall::ALL {
            let kind = kinds[s.number() as usize];
            assert_ne!(kind, syscall_kind::NONE, "{}", s.name());
            assert_eq!(kind == syscall_kind::RECEIVE, s.is_receive(), "{}", s.name());
        }
        assert_eq!(kinds[libc::SYS_connect as usize], syscall_kind::CONNECT);
        assert_eq!(kinds[libc::SYS_getsockopt as usize], syscall_kind::GETSOCKOPT);
        assert_eq!(kinds.iter().filter(|&&k| k != syscall_kind::NONE).count(), Syscall::ALL.len());
        assert_eq!(kinds[libc::SYS_close as usize], syscall_kind::NONE);
    }

    #[test]
    fn config_bits_follow_the_selection() {
        let opts = ProbeOptions { report_eof: true, ..ProbeOptions::default() };
        let facts = KernelFacts::default();
        let one = traced_config(&Selection { tgids: vec![42], ..Selection::default() }, &opts, &facts);
        assert_eq!(one.flags, config_flags::REPORT_EOF | config_flags::SELECT_ONE_PID);
        assert_eq!((one.tgid, one.max_histories), (42, MAX_SOCKETS));

        let follow = traced_config(
            &Selection { tgids: vec![42], follow: true, ..Selection::default() },
            &ProbeOptions::default(),
            &KernelFacts { send_reset_has_reason: true, ..KernelFacts::default() },
        );
        assert_eq!(
            follow.flags,
            config_flags::SELECT_PIDS | config_flags::FOLLOW_FORKS | config_flags::SEND_RESET_HAS_REASON
        );
        assert_eq!(follow.tgid, 0);

        let named = traced_config(
            &Selection { comm: Some(b"a-very-long-task-name".to_vec()), cgroup: Some((7, 3)), ..Selection::default() },
            &ProbeOptions::default(),
            &KernelFacts { sock_head: true, type_protocol_pair: true, ..KernelFacts::default() },
        );
        assert_eq!(
            named.flags,
            config_flags::SELECT_COMM
                | config_flags::SELECT_CGROUP
                | config_flags::SOCK_HEAD
                | config_flags::TYPE_PROTOCOL_PAIR
        );
        assert_eq!(&named.comm[..TASK_COMM_MAX], b"a-very-long-tas");
        assert_eq!(named.comm[TASK_COMM_MAX], 0);
        assert_eq!((named.cgroup_id, named.cgroup_level), (7, 3));

        let everything = traced_config(
            &Selection::default(),
            &ProbeOptions { send_routine: true, ..ProbeOptions::default() },
            &facts,
        );
        assert_eq!(everything.flags, config_flags::SEND_ROUTINE | config_flags::TRACE_ALL);
    }
}

/// Checks of this machine's kernel (root: its BTF).
#[cfg(all(test, feature = "host-kernel-tests"))]
mod kernel_tests {
    use super::*;
    use crate::kernel::offsets;

    /// This kernel (6.18, the CI host's) lays out `sock_common`, `sk_type`/`sk_protocol`, the
    /// syscall registers, `fdtable` and `file` as the fast paths expect.
    #[test]
    fn this_kernel_takes_the_one_read_paths() {
        let btf = KernelBtf::load().unwrap();
        let facts = KernelFacts::of(&btf, &offsets::struct_offsets(&btf).unwrap());
        assert!(facts.sock_head && facts.type_protocol_pair && facts.skb_headers_packed, "{facts:?}");
        assert!(facts.nr_after_arg0 && facts.fdtable_pair && facts.fdtab_after_fdt, "{facts:?}");
        assert!(facts.file_op_data_span && facts.socket_sk_ops_pair, "{facts:?}");
    }

    #[test]
    fn the_history_map_fits_twice_the_hosts_tcp_sockets() {
        let sockstat = "sockets: used 412\nTCP: inuse 7 orphan 0 tw 3 alloc 150123 mem 2\nUDP: inuse 4 mem 1\n";
        assert_eq!(tcp_sockets_allocated(sockstat), Some(150_123));
        assert_eq!(sized_for(150_123, false), 300_246);
        assert_eq!(sized_for(12, false), MAX_SOCKETS);
        assert_eq!(sized_for(12, true), 65_536);
        assert_eq!(sized_for(150_123, true), MAX_SOCKETS);
        assert_eq!(tcp_sockets_allocated("UDP: inuse 4 mem 1\n"), None);
        let given = ProbeOptions { max_histories: Some(5000), ..ProbeOptions::default() };
        assert_eq!(history_map_size(&given, true), 5000);
    }
}
