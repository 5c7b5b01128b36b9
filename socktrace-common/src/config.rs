//! What userspace tells the kernel programs: the read-only configuration and offsets written
//! before load, the names of maps and programs, and the switches and counters it reads back.

use crate::TASK_COMM_LEN;

/// Slots of the `RUNTIME` map: switches userspace sets after load, once it knows which probes
/// it attached (the read-only config is fixed before).
pub mod runtime {
    /// 1: no probe reports errors on this kernel (before 5.14): the state-change handler
    /// records `sk_err` as the error report when a socket closes.
    pub const ERROR_AT_CLOSE: u32 = 0;
    pub const SLOTS: u32 = 1;
}

/// Slots of the per-CPU `HISTORY_STATS` map: socket histories created and destroyed since
/// load (the difference, less the histories still in the map, is how many the LRU evicted),
/// and packet drops recorded.
pub mod history_stats {
    pub const CREATED: u32 = 0;
    pub const DESTROYED: u32 = 1;
    /// Drops of traced connections' packets, counted before each one's time is taken: while it
    /// reads 0, no failure before that read has a dropped packet to look up, and userspace
    /// skips the two map lookups per timeout or reset it would make.
    pub const DROPS_RECORDED: u32 = 2;
    /// Sockets that got no history because the map was full (its size: `--max-histories`).
    pub const REFUSED: u32 = 3;
    pub const SLOTS: u32 = 4;
}

/// The names userspace finds the kernel side by. Map and program names are the eBPF crate's
/// item names (the eBPF object keeps them); a unit test checks every one is in the object.
pub mod names {
    /// Maps.
    pub const EVENTS: &str = "EVENTS";
    pub const LISTENERS: &str = "LISTENERS";
    pub const SOCKETS: &str = "SOCKETS";
    pub const TRACED_TGIDS: &str = "TRACED_TGIDS";
    pub const ROUTINE_COUNTS: &str = "ROUTINE_COUNTS";
    pub const LOST_EVENTS: &str = "LOST_EVENTS";
    pub const HISTORY_STATS: &str = "HISTORY_STATS";
    /// aya-log's ring buffer of kernel-side log records.
    pub const LOGS: &str = "AYA_LOGS";
    pub const RUNTIME: &str = "RUNTIME";
    /// The fds traced processes' io_uring requests looked their files up by, direct-mapped
    /// by request (`RequestFd`).
    pub const IO_URING_FDS: &str = "IO_URING_FDS";
    /// UDP sockets -> the last error the kernel reported on them (`UdpError`).
    pub const UDP_ERRORS: &str = "UDP_ERRORS";
    /// RSTs sent on this host, by a hash of the sender's 4-tuple (`SentResetSlot`).
    pub const SENT_RESETS: &str = "SENT_RESETS";
    /// ICMP errors received, by the 4-tuple of the packet they are about (`IcmpSource`).
    pub const ICMP_SOURCES: &str = "ICMP_SOURCES";
    /// Packets dropped on this host, by their 4-tuple (`DropRecord`).
    pub const DROPS: &str = "DROPS";
    /// The peers of traced sockets (`PeerKey`): the drop probe keeps only their packets.
    pub const TRACED_PEERS: &str = "TRACED_PEERS";
    /// Kernel stacks at the events behind failures (`--kstack`; one entry otherwise).
    pub const STACKS: &str = "STACKS";
    /// The last established connect of each traced process to each port (`ConnectedTo`).
    pub const CONNECTED: &str = "CONNECTED";
    /// Bare SYNs no socket owned, by their source (`RefusedSyn`).
    pub const REFUSED_SYNS: &str = "REFUSED_SYNS";
    pub const MAPS: [&str; 18] = [
        EVENTS,
        SOCKETS,
        TRACED_TGIDS,
        LISTENERS,
        ROUTINE_COUNTS,
        LOST_EVENTS,
        HISTORY_STATS,
        RUNTIME,
        LOGS,
        IO_URING_FDS,
        UDP_ERRORS,
        SENT_RESETS,
        ICMP_SOURCES,
        DROPS,
        TRACED_PEERS,
        STACKS,
        CONNECTED,
        REFUSED_SYNS,
    ];
    /// The one program that sees every failing call.
    pub const SYS_EXIT: &str = "sys_exit";
    /// The same as a BTF tracepoint (5.11+), where the probe mode allows it.
    pub const SYS_EXIT_BTF: &str = "sys_exit_btf";
    /// The io_uring door: failing completions, and the fd each request's file came from.
    pub const IO_URING_COMPLETE: &str = "tp_io_uring_complete";
    pub const IO_URING_FILE_GET: &str = "tp_io_uring_file_get";
    /// The same without a trace record, where the probe mode allows and the layout is known:
    /// one program per layout of the arguments, each taking them at constant indexes (the
    /// verifier allows no other context access). BTF tracepoints `io_uring_complete(ctx, req,
    /// cqe)` (6.13+) or `(ctx, req, user_data, res, ...)` (before); the raw tracepoint
    /// `io_uring_file_get(req, fd)` (5.19+).
    pub const IO_URING_COMPLETE_CQE: &str = "btf_io_uring_complete_cqe";
    pub const IO_URING_COMPLETE_RES: &str = "btf_io_uring_complete_res";
    pub const IO_URING_FILE_GET_RAW: &str = "raw_io_uring_file_get";
    /// Every packet the kernel drops (`skb:kfree_skb`, as a raw tracepoint).
    pub const KFREE_SKB: &str = "raw_kfree_skb";
    /// The RST segment a socket receives (`tcp_reset(sk, skb)`, 5.14+): fentry, else kprobe.
    pub const RST_SEGMENT: &str = "rst_segment";
    pub const KP_RST_SEGMENT: &str = "kp_rst_segment";
    /// Read-only globals userspace writes before load.
    pub const OFFSETS: &str = "OFFSETS";
    pub const CONFIG: &str = "CONFIG";
    /// aya-log's level: 0 turns every kernel-side log statement into dead code.
    pub const LOG_LEVEL: &str = "AYA_LOG_LEVEL";
}

/// The values of the traced-process filter map (`TRACED_TGIDS`): a process traced, and one
/// whose leader has exited, still traced while its last threads close its files (the closes
/// a program leaves to its exit) and forgotten once it is reaped.
pub mod traced_tgid {
    pub const TRACED: u8 = 1;
    pub const EXITED: u8 = 2;
}

/// `TracedConfig::flags` bits.
pub mod config_flags {
    /// Report `read`/`recv*` returning 0 on a TCP socket (end of file after the peer's FIN).
    pub const REPORT_EOF: u32 = 1 << 0;
    /// Report failures on sockets that are not TCP (UDP, unix, ...).
    pub const ALL_SOCKETS: u32 = 1 << 1;
    /// The kernel's `tcp_send_reset` BTF tracepoint carries a `reason` argument (about 6.10+).
    pub const SEND_RESET_HAS_REASON: u32 = 1 << 2;
    /// Only processes in the TRACED_TGIDS map are traced (-p, a started command).
    pub const SELECT_PIDS: u32 = 1 << 3;
    /// Only tasks whose name equals `TracedConfig::comm` (-c).
    pub const SELECT_COMM: u32 = 1 << 4;
    /// Only tasks in the cgroup v2 `cgroup_id` or below it (at `cgroup_level`) (--cgroup).
    pub const SELECT_CGROUP: u32 = 1 << 5;
    /// Children forked by a traced process join TRACED_TGIDS (-f).
    pub const FOLLOW_FORKS: u32 = 1 << 6;
    /// Send routine failures (EAGAIN, EINTR, EINPROGRESS) as events instead of counting them.
    pub const SEND_ROUTINE: u32 = 1 << 7;
    /// Only the process `TracedConfig::tgid` (one -p, no -f): no map lookup needed.
    pub const SELECT_ONE_PID: u32 = 1 << 8;
    /// No selector: every process, so every TCP socket's history is kept.
    pub const TRACE_ALL: u32 = 1 << 9;
    /// `struct sock_common` starts as every kernel since 4.x lays it out (`SockHead`): the
    /// addresses, ports, family and state are one read instead of six.
    pub const SOCK_HEAD: u32 = 1 << 10;
    /// `sk_type` and `sk_protocol` are adjacent u16s: one read for both, at the lower of the
    /// two offsets (`PROTOCOL_FIRST`: `sk_protocol` is the first of them, as on 6.x).
    pub const TYPE_PROTOCOL_PAIR: u32 = 1 << 11;
    pub const PROTOCOL_FIRST: u32 = 1 << 12;
    /// `--cgroup` by walking task -> css_set -> cgroup (tracing programs may not call
    /// bpf_get_current_ancestor_cgroup_id before 5.14); with `CGROUP_ANCESTOR_IDS` the
    /// cgroup keeps its ancestors' ids (before 6.0), else pointers to them.
    pub const CGROUP_WALK: u32 = 1 << 13;
    pub const CGROUP_ANCESTOR_IDS: u32 = 1 << 14;
    /// `ip_local_ports.range` is `int[2]` (before it was packed into one u32).
    pub const PORT_RANGE_INTS: u32 = 1 << 15;
    /// The `kfree_skb` tracepoint carries the kernel's drop reason (5.17+).
    pub const DROP_HAS_REASON: u32 = 1 << 16;
    /// `--kstack`: record the kernel stack at each event that causes a failure.
    pub const KSTACK: u32 = 1 << 17;
    /// `sk_buff.protocol`, `.transport_header`, `.network_header` are adjacent (be16, u16,
    /// u16): the drop, RST and ICMP probes read them at once.
    pub const SKB_HEADERS_PACKED: u32 = 1 << 18;
    /// The syscall number sits in `struct pt_regs` right after the first argument (x86_64:
    /// di, orig_ax; arm64: orig_x0, syscallno): the exit reads both at once.
    pub const NR_AFTER_ARG0: u32 = 1 << 19;
    /// `fdtable.fd` follows `fdtable.max_fds` (a u32 and its padding): one read for both.
    pub const FDTABLE_PAIR: u32 = 1 << 20;
    /// `file.private_data` is two words after `file.f_op` (6.12+'s layout): one read for
    /// both.
    pub const FILE_OP_DATA_SPAN: u32 = 1 << 21;
    /// `socket.ops` follows `socket.sk` (every kernel since 2.6): one read for both.
    pub const SOCKET_SK_OPS_PAIR: u32 = 1 << 22;
    /// `files_struct.fdtab` follows `files_struct.fdt`, and starts with `max_fds`, then `fd`:
    /// while `fdt` points at it (up to 64 fds), one read gives the pointer and the table.
    pub const FDTAB_AFTER_FDT: u32 = 1 << 23;
    /// `bpf_task_pt_regs` (5.15+): a socket a traced process ends is reported with the call
    /// that ended it, read from the task's saved registers.
    pub const TASK_PT_REGS: u32 = 1 << 24;
}

/// io_uring opcodes below this have an entry in `TracedConfig::io_uring_kinds`.
pub const IO_URING_OPS: usize = 64;

/// Byte offsets of kernel struct fields and tracepoint fields, computed by userspace from the
/// running kernel (BTF and tracefs format files) and handed to the programs as a read-only
/// global, so no layout is compiled into the eBPF object.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    // task -> files -> fdtable -> file -> socket -> sock
    pub task_files: u32,
    pub files_fdt: u32,
    /// `files_struct.fdtab`: the table `fdt` points at until the process outgrows it.
    pub files_fdtab: u32,
    pub fdtable_max_fds: u32,
    pub fdtable_fd: u32,
    pub file_f_inode: u32,
    pub file_private_data: u32,
    pub file_f_op: u32,
    pub inode_i_mode: u32,
    pub socket_file: u32,
    pub socket_sk: u32,
    pub socket_ops: u32,
    // struct sock (through sock_common)
    pub sk_family: u32,
    pub sk_state: u32,
    pub sk_type: u32,
    pub sk_protocol: u32,
    pub sk_shutdown: u32,
    pub sk_err: u32,
    pub sk_daddr: u32,
    pub sk_rcv_saddr: u32,
    pub sk_dport: u32,
    pub sk_num: u32,
    pub sk_v6_daddr: u32,
    pub sk_v6_rcv_saddr: u32,
    /// `struct sock`'s network namespace (`__sk_common.skc_net`): listeners are keyed by it.
    pub sk_net: u32,
    pub task_tgid: u32,
    /// `task_struct.thread_info.status` on x86_64, whose `TS_COMPAT` bit marks a 32-bit
    /// syscall (other numbering); `NO_FIELD` where syscall numbers need no such check.
    pub task_thread_status: u32,
    /// Where the syscall number sits in `struct pt_regs` at syscall exit (x86_64 orig_ax,
    /// arm64 syscallno).
    pub regs_syscall_nr: u32,
    /// Where the first five syscall arguments sit in `struct pt_regs` at syscall exit
    /// (x86_64: di, si, dx, r10, r8; arm64: orig_x0, regs[1..5]).
    pub regs_args: [u32; 5],
    // task -> css_set -> default-hierarchy cgroup -> its ancestors, for `--cgroup` on kernels
    // whose tracing programs may not call bpf_get_current_ancestor_cgroup_id (before 5.14).
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_level: u32,
    /// `cgroup.ancestor_ids` (u64 ids, before 6.0) or `cgroup.ancestors` (pointers).
    pub cgroup_ancestors: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    // The host's numbers behind resource failures.
    pub task_signal: u32,
    /// `signal_struct.rlim[RLIMIT_NOFILE]` (a `struct rlimit`: cur, max).
    pub signal_rlim_nofile: u32,
    pub sk_ack_backlog: u32,
    pub sk_max_ack_backlog: u32,
    pub sk_sndbuf: u32,
    pub sk_wmem_queued: u32,
    /// `struct net`'s `ipv4.ip_local_ports.range`: two u16 in one u32 (6.x), or two ints
    /// (`PORT_RANGE_INTS`, before).
    pub net_local_ports: u32,
    // Classic tracepoint records (tracepoint probe mode), from their format files.
    pub tp_set_state_skaddr: u32,
    pub tp_set_state_oldstate: u32,
    pub tp_set_state_newstate: u32,
    pub tp_receive_reset_skaddr: u32,
    pub tp_send_reset_skaddr: u32,
    /// `NO_FIELD` before the RST reasons (about 6.10).
    pub tp_send_reset_reason: u32,
    pub tp_retransmit_skaddr: u32,
    pub tp_destroy_skaddr: u32,
    // The io_uring door: a request (`struct io_kiocb`) and the classic io_uring records that
    // carry it; `NO_FIELD` where this kernel's records lack the request (before about 5.19).
    pub io_kiocb_opcode: u32,
    pub io_kiocb_file: u32,
    pub io_kiocb_flags: u32,
    pub tp_io_complete_req: u32,
    pub tp_io_complete_res: u32,
    pub tp_io_file_get_req: u32,
    pub tp_io_file_get_fd: u32,
    /// `io_uring_cqe.res`: the result, where the BTF tracepoint `io_uring_complete` passes the
    /// completion entry instead (`NO_FIELD` elsewhere).
    pub io_uring_cqe_res: u32,
    /// io_uring completions run in the owner's io-wq workers too: `-c` matches the process
    /// (its group leader's name), not the worker's `iou-wrk-*`.
    pub task_group_leader: u32,
    pub task_comm: u32,
    // Which timer gave up (`TimerFacts`); `NO_FIELD` where this kernel lacks one.
    pub icsk_user_timeout: u32,
    pub icsk_probes_out: u32,
    pub icsk_syn_retries: u32,
    pub tp_snd_wnd: u32,
    pub tp_keepalive_probes: u32,
    pub sk_flags: u32,
    pub net_syn_retries: u32,
    pub net_retries2: u32,
    pub net_keepalive_probes: u32,
    /// `inet_sock.inet_sport` (network order): a closed socket's local port, which
    /// `skc_num` no longer holds once the port is released (the RST of a close is sent then).
    pub inet_sport: u32,
    /// `sk_buff.head`, `.network_header`, `.transport_header`: the segment an RST answers.
    pub skb_head: u32,
    pub skb_network_header: u32,
    pub skb_transport_header: u32,
    /// The classic `tcp_send_reset` record's `skbaddr`.
    pub tp_send_reset_skbaddr: u32,
    /// `sock.__sk_common.skc_prot`, and the protocol's memory accounting in `struct proto`:
    /// `memory_allocated` (atomic_long_t *), `memory_pressure` (unsigned long *), `sysctl_mem`
    /// (long *).
    pub sk_prot: u32,
    pub proto_memory_allocated: u32,
    pub proto_memory_pressure: u32,
    pub proto_sysctl_mem: u32,
    /// `net.ipv4.sysctl_tcp_wmem`.
    pub net_tcp_wmem: u32,
    /// A registered (fixed) file's index, found by searching the ring's table for the
    /// request's file: `io_kiocb.ctx`; from 6.13 the table holds node pointers
    /// (`io_ring_ctx.file_table.data.{nr,nodes}`, matched against `io_kiocb.file_node`),
    /// before it holds `struct io_fixed_file { file_ptr }` (`file_table.files`,
    /// `io_ring_ctx.nr_user_files`), matched against the file. `io_fixed_files_nodes` is 1
    /// for the node layout. All `NO_FIELD` where neither layout is found.
    pub io_kiocb_ctx: u32,
    pub io_kiocb_file_node: u32,
    pub io_ctx_files_nr: u32,
    pub io_ctx_files: u32,
    pub io_fixed_files_nodes: u32,
    /// `tcp_sock.lsndtime` and `tcp_sock.inet_conn.icsk_ack.lrcvtime` (u32 jiffies): when a
    /// socket last sent and received data, for the snapshot of a socket older than the trace.
    pub tp_lsndtime: u32,
    pub icsk_ack_lrcvtime: u32,
    /// A dropped packet: `sk_buff.protocol` (network order), `.dev`, and its device's
    /// `ifindex`, `name` and namespace (`nd_net`), whose `ns.inum` names it; `sk_buff.sk` for a
    /// packet dropped before it had a device.
    pub skb_protocol: u32,
    pub skb_dev: u32,
    pub skb_sk: u32,
    pub dev_ifindex: u32,
    pub dev_name: u32,
    pub dev_nd_net: u32,
    pub net_ns_inum: u32,
    /// `tcp_sock.rcv_nxt`, `.snd_nxt`, `.snd_una`: the sequence space an RST is judged by.
    pub tp_rcv_nxt: u32,
    pub tp_snd_nxt: u32,
    pub tp_snd_una: u32,
    /// `tcp_sock.keepalive_time`/`keepalive_intvl` and the namespace's sysctls (jiffies).
    pub tp_keepalive_time: u32,
    pub tp_keepalive_intvl: u32,
    pub net_keepalive_time: u32,
    pub net_keepalive_intvl: u32,
    /// What a socket its process ends was doing (`EndFacts`): `tcp_sock.write_seq`,
    /// `copied_seq`, `bytes_sent`, `bytes_retrans`, `bytes_received`, and `icsk_retransmits`.
    pub tp_write_seq: u32,
    pub tp_copied_seq: u32,
    pub tp_bytes_sent: u32,
    pub tp_bytes_received: u32,
    pub icsk_retransmits: u32,
    /// `task_struct.flags` (`PF_EXITING`) and `exit_code`: an RST or a close from a dying
    /// process.
    pub task_flags: u32,
    pub task_exit_code: u32,
    pub tp_bytes_retrans: u32,
    /// `sock.sk_lock.owned`: set while a process's own call holds the socket (connect, close,
    /// listen, shutdown), clear in softirq; what tells a traced process's socket from a
    /// loopback peer's handled while the traced task is on the CPU.
    pub sk_lock_owned: u32,
    pub _pad: u32,
}
assert_size!(KernelOffsets, 114 * 4);
pod!(KernelOffsets);

impl KernelOffsets {
    /// The placeholder compiled into the eBPF object; userspace overrides it before load.
    // SAFETY: all fields are integers, for which zero is valid.
    pub const ZERO: Self = unsafe { core::mem::zeroed() };
}

/// Global configuration the userspace writes before loading.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TracedConfig {
    pub flags: u32,
    /// Depth of the selected cgroup below the root (for bpf_get_current_ancestor_cgroup_id).
    pub cgroup_level: u32,
    pub cgroup_id: u64,
    /// Task name to select, NUL-padded.
    pub comm: [u8; TASK_COMM_LEN],
    /// The one process selected with SELECT_ONE_PID.
    pub tgid: u32,
    /// The size of the history map (`SOCKETS`) as loaded: the kernel's log says when it is full.
    pub max_histories: u32,
    /// socktrace's own process: never selected (its calls and sockets are not traced), and
    /// its marked `getsockopt` calls adopt sockets (see `adopt`).
    pub self_tgid: u32,
    /// This kernel's `SKB_DROP_REASON_NO_SOCKET` (0: none): a bare SYN freed for want of a
    /// socket is a refused connect, which explains itself; the drop probe skips it.
    pub drop_reason_no_socket: u32,
    /// A random number of this load, the key of the hashes that place and check the records of
    /// `SENT_RESETS` (`sent_reset_set`, `sent_reset_check`): without it, a 4-tuple cannot be
    /// crafted to hash like another connection's.
    pub hash_seed: u64,
    /// A socket its traced process ends while waiting is reported when nothing was received
    /// for this long since the last send (jiffies; 0: never).
    pub silence_jiffies: u32,
    pub _pad: u32,
    /// What each syscall number is to socktrace (`syscall_kind`): the one table the single
    /// `sys_exit` program consults, filled by userspace with this architecture's numbers.
    pub syscall_kinds: [u8; SYSCALL_TABLE_SIZE],
    /// The same for io_uring opcodes (`IORING_OP_*`): which requests are watched, and how.
    pub io_uring_kinds: [u8; IO_URING_OPS],
}
assert_size!(TracedConfig, 64 + SYSCALL_TABLE_SIZE + IO_URING_OPS);
pod!(TracedConfig);

impl TracedConfig {
    /// The placeholder compiled into the eBPF object; userspace overrides it before load.
    // SAFETY: all fields are integers, for which zero is valid.
    pub const ZERO: Self = unsafe { core::mem::zeroed() };
}

/// Syscall numbers below this have an entry in `TracedConfig::syscall_kinds`; the others are
/// never watched.
pub const SYSCALL_TABLE_SIZE: usize = 512;

/// `TracedConfig::syscall_kinds` values: how the `sys_exit` program treats a call.
pub mod syscall_kind {
    /// Not watched.
    pub const NONE: u8 = 0;
    /// read-like: a return of 0 is end of file (reported with `REPORT_EOF`).
    pub const RECEIVE: u8 = 1;
    /// Any other watched call whose first argument is a socket fd (send*, write*, accept*).
    pub const OTHER: u8 = 2;
    /// connect: the address the program passed is recorded too.
    pub const CONNECT: u8 = 3;
    /// getsockopt: a successful SO_ERROR read carrying an error is a failed async connect;
    /// socktrace's own marked call adopts a socket.
    pub const GETSOCKOPT: u8 = 4;
    /// splice: the socket is `fd_out` (the third argument) or else `fd_in` (the first).
    pub const SPLICE: u8 = 5;
    /// socket: a failure for want of descriptors (EMFILE, ENFILE) is reported with the family,
    /// type and protocol asked for (there is no socket yet).
    pub const SOCKET: u8 = 6;
}

/// socktrace adopts a traced process's sockets that predate the trace by duplicating each
/// (pidfd_getfd) and calling `getsockopt(fd, ADOPT_LEVEL, ADOPT_OPTNAME)` on the copy: the
/// `sys_exit` program, seeing socktrace's own call with this level, starts the socket's
/// history. No protocol has this level, so the call itself fails harmlessly (ENOPROTOOPT).
pub mod adopt {
    pub const ADOPT_LEVEL: u64 = 0x5354_4144;
    pub const ADOPT_OPTNAME: u64 = 0x5354;
    /// The same mark on a TCP socket socktrace opened itself: the kernel learns from it what
    /// every socket's file and every TCP socket of its family look like (the fd walk's fast
    /// path: `socktrace-ebpf` `LEARNED`).
    pub const LEARN_OPTNAME: u64 = 0x5355;
}
