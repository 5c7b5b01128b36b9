//! `KernelOffsets` has one owner: this module resolves, once, every byte offset the eBPF
//! programs read — struct fields from the kernel's BTF, record fields from the tracepoints'
//! format files — or names what is missing. `check` and the loader both call `resolve`.

use super::{
    btf::{KernelBtf, TracepointArg},
    tracefs,
};
use anyhow::{bail, Context as _, Result};
use socktrace_common::{names, KernelOffsets, NO_FIELD};
use std::path::Path;

/// What `resolve` found: the offsets, and the classic tracepoints whose records cannot be read
/// (with why): the probes behind those fall back or are refused.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub offsets: KernelOffsets,
    pub record_problems: Vec<RecordProblem>,
    /// Why failing io_uring requests cannot be watched on this kernel, if they cannot.
    pub io_uring_problem: Option<String>,
    /// The io_uring door's BTF tracepoint programs for this kernel's argument layouts
    /// (`io_uring_file_get`'s, then `io_uring_complete`'s), or why it cannot take them (the
    /// classic tracepoints are used then).
    pub io_uring_btf: std::result::Result<[&'static str; 2], String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordProblem {
    pub tracepoint: &'static str,
    pub why: String,
}

impl Resolved {
    /// Why the classic tracepoint `name`'s record cannot be read, if it cannot.
    pub fn record_problem(&self, name: &str) -> Option<&str> {
        self.record_problems.iter().find(|p| p.tracepoint == name).map(|p| p.why.as_str())
    }
}

/// Every offset the programs need on this kernel. Struct fields are required (an error names
/// the first one missing); a TCP record laid out otherwise is only a problem for the probe
/// that reads it.
pub fn resolve(btf: &KernelBtf, tracefs: &Path) -> Result<Resolved> {
    let mut offsets = struct_offsets(btf)?;
    let record_problems = tcp_record_layouts(tracefs, &mut offsets);
    let io_uring_problem = io_uring_layouts(btf, tracefs, &mut offsets).err().map(|e| format!("{e:#}"));
    let io_uring_btf = io_uring_arguments(btf, &mut offsets).map_err(|e| format!("{e:#}"));
    Ok(Resolved { offsets, record_problems, io_uring_problem, io_uring_btf })
}

/// The struct fields: task -> files -> fdtable -> file -> socket -> sock, and `struct sock`'s.
pub fn struct_offsets(btf: &KernelBtf) -> Result<KernelOffsets> {
    let sk = |f: &str| btf.offset_of("sock", f);
    Ok(KernelOffsets {
        task_files: btf.offset_of("task_struct", "files")?,
        task_tgid: btf.offset_of("task_struct", "tgid")?,
        task_group_leader: btf.offset_of("task_struct", "group_leader")?,
        task_comm: btf.offset_of("task_struct", "comm")?,
        files_fdt: btf.offset_of("files_struct", "fdt")?,
        files_fdtab: btf.offset_of("files_struct", "fdtab")?,
        fdtable_max_fds: btf.offset_of("fdtable", "max_fds")?,
        fdtable_fd: btf.offset_of("fdtable", "fd")?,
        file_f_inode: btf.offset_of("file", "f_inode")?,
        file_private_data: btf.offset_of("file", "private_data")?,
        file_f_op: btf.offset_of("file", "f_op")?,
        inode_i_mode: btf.offset_of("inode", "i_mode")?,
        socket_file: btf.offset_of("socket", "file")?,
        socket_sk: btf.offset_of("socket", "sk")?,
        socket_ops: btf.offset_of("socket", "ops")?,
        sk_family: sk("__sk_common.skc_family")?,
        sk_state: sk("__sk_common.skc_state")?,
        sk_type: sk("sk_type")?,
        sk_protocol: sk("sk_protocol")?,
        sk_shutdown: sk("sk_shutdown")?,
        sk_err: sk("sk_err")?,
        sk_daddr: sk("__sk_common.skc_daddr")?,
        sk_rcv_saddr: sk("__sk_common.skc_rcv_saddr")?,
        sk_dport: sk("__sk_common.skc_dport")?,
        sk_num: sk("__sk_common.skc_num")?,
        sk_v6_daddr: sk("__sk_common.skc_v6_daddr")?,
        sk_v6_rcv_saddr: sk("__sk_common.skc_v6_rcv_saddr")?,
        // possible_net_t holds the one `struct net *` (nothing without CONFIG_NET_NS, where
        // there is one namespace and any constant will do).
        sk_net: sk("__sk_common.skc_net")?,
        task_thread_status: thread_status(btf)?,
        regs_syscall_nr: syscall_nr_reg(btf)?,
        regs_args: syscall_arg_regs(btf)?,
        task_cgroups: optional(btf.offset_of("task_struct", "cgroups")),
        css_set_dfl_cgrp: optional(btf.offset_of("css_set", "dfl_cgrp")),
        cgroup_level: optional(btf.offset_of("cgroup", "level")),
        cgroup_ancestors: optional(
            btf.offset_of("cgroup", "ancestor_ids").or_else(|_| btf.offset_of("cgroup", "ancestors")),
        ),
        cgroup_kn: optional(btf.offset_of("cgroup", "kn")),
        kernfs_node_id: optional(btf.offset_of("kernfs_node", "id")),
        task_signal: optional(btf.offset_of("task_struct", "signal")),
        // struct rlimit is two unsigned longs; RLIMIT_NOFILE is 7 on every Linux architecture
        // socktrace runs on.
        signal_rlim_nofile: optional(btf.offset_of("signal_struct", "rlim").map(|o| o + 7 * 16)),
        sk_ack_backlog: optional(sk("sk_ack_backlog")),
        sk_max_ack_backlog: optional(sk("sk_max_ack_backlog")),
        sk_sndbuf: optional(sk("sk_sndbuf")),
        sk_wmem_queued: optional(sk("sk_wmem_queued")),
        net_local_ports: optional(btf.offset_of("net", "ipv4.ip_local_ports.range")),
        icsk_user_timeout: optional(btf.offset_of("tcp_sock", "inet_conn.icsk_user_timeout")),
        icsk_probes_out: optional(btf.offset_of("tcp_sock", "inet_conn.icsk_probes_out")),
        icsk_syn_retries: optional(btf.offset_of("tcp_sock", "inet_conn.icsk_syn_retries")),
        tp_snd_wnd: optional(btf.offset_of("tcp_sock", "snd_wnd")),
        tp_keepalive_probes: optional(btf.offset_of("tcp_sock", "keepalive_probes")),
        // `sk_flags` moved into sock_common (`skc_flags`) in 6.x.
        sk_flags: optional(sk("sk_flags").or_else(|_| sk("__sk_common.skc_flags"))),
        net_syn_retries: optional(btf.offset_of("net", "ipv4.sysctl_tcp_syn_retries")),
        net_retries2: optional(btf.offset_of("net", "ipv4.sysctl_tcp_retries2")),
        net_keepalive_probes: optional(btf.offset_of("net", "ipv4.sysctl_tcp_keepalive_probes")),
        inet_sport: optional(btf.offset_of("inet_sock", "inet_sport")),
        skb_head: optional(btf.offset_of("sk_buff", "head")),
        skb_network_header: optional(btf.offset_of("sk_buff", "network_header")),
        skb_transport_header: optional(btf.offset_of("sk_buff", "transport_header")),
        tp_send_reset_skbaddr: NO_FIELD,
        sk_prot: optional(sk("__sk_common.skc_prot")),
        proto_memory_allocated: optional(btf.offset_of("proto", "memory_allocated")),
        proto_memory_pressure: optional(btf.offset_of("proto", "memory_pressure")),
        proto_sysctl_mem: optional(btf.offset_of("proto", "sysctl_mem")),
        net_tcp_wmem: optional(btf.offset_of("net", "ipv4.sysctl_tcp_wmem")),
        tp_lsndtime: optional(btf.offset_of("tcp_sock", "lsndtime")),
        icsk_ack_lrcvtime: optional(btf.offset_of("tcp_sock", "inet_conn.icsk_ack.lrcvtime")),
        skb_protocol: optional(btf.offset_of("sk_buff", "protocol")),
        skb_dev: optional(btf.offset_of("sk_buff", "dev")),
        skb_sk: optional(btf.offset_of("sk_buff", "sk")),
        dev_ifindex: optional(btf.offset_of("net_device", "ifindex")),
        dev_name: optional(btf.offset_of("net_device", "name")),
        // possible_net_t holds the one `struct net *`.
        dev_nd_net: optional(btf.offset_of("net_device", "nd_net")),
        net_ns_inum: optional(btf.offset_of("net", "ns.inum")),
        tp_rcv_nxt: optional(btf.offset_of("tcp_sock", "rcv_nxt")),
        tp_snd_nxt: optional(btf.offset_of("tcp_sock", "snd_nxt")),
        tp_snd_una: optional(btf.offset_of("tcp_sock", "snd_una")),
        tp_keepalive_time: optional(btf.offset_of("tcp_sock", "keepalive_time")),
        tp_keepalive_intvl: optional(btf.offset_of("tcp_sock", "keepalive_intvl")),
        net_keepalive_time: optional(btf.offset_of("net", "ipv4.sysctl_tcp_keepalive_time")),
        net_keepalive_intvl: optional(btf.offset_of("net", "ipv4.sysctl_tcp_keepalive_intvl")),
        tp_write_seq: optional(btf.offset_of("tcp_sock", "write_seq")),
        tp_copied_seq: optional(btf.offset_of("tcp_sock", "copied_seq")),
        tp_bytes_sent: optional(btf.offset_of("tcp_sock", "bytes_sent")),
        tp_bytes_retrans: optional(btf.offset_of("tcp_sock", "bytes_retrans")),
        tp_bytes_received: optional(btf.offset_of("tcp_sock", "bytes_received")),
        icsk_retransmits: optional(btf.offset_of("tcp_sock", "inet_conn.icsk_retransmits")),
        task_flags: optional(btf.offset_of("task_struct", "flags")),
        task_exit_code: optional(btf.offset_of("task_struct", "exit_code")),
        sk_lock_owned: optional(sk("sk_lock.owned")),
        _pad: 0,
        io_kiocb_ctx: NO_FIELD,
        io_kiocb_file_node: NO_FIELD,
        io_ctx_files_nr: NO_FIELD,
        io_ctx_files: NO_FIELD,
        io_fixed_files_nodes: NO_FIELD,
        io_kiocb_opcode: NO_FIELD,
        io_kiocb_file: NO_FIELD,
        io_kiocb_flags: NO_FIELD,
        tp_io_complete_req: NO_FIELD,
        tp_io_complete_res: NO_FIELD,
        tp_io_file_get_req: NO_FIELD,
        tp_io_file_get_fd: NO_FIELD,
        io_uring_cqe_res: NO_FIELD,
        ..KernelOffsets::ZERO
    })
}

/// A field only one feature needs: `NO_FIELD` when this kernel lacks it (the feature then says so).
fn optional(offset: Result<u32>) -> u32 {
    offset.unwrap_or(NO_FIELD)
}

/// x86_64 runs 32-bit (compat) syscalls with their own numbers through the same exit: the
/// program skips those, told by `thread_info.status & TS_COMPAT`. Elsewhere: no check.
fn thread_status(btf: &KernelBtf) -> Result<u32> {
    match std::env::consts::ARCH {
        "x86_64" => btf.offset_of("task_struct", "thread_info.status"),
        _ => Ok(NO_FIELD),
    }
}

/// Where `struct pt_regs` keeps the syscall number at exit.
fn syscall_nr_reg(btf: &KernelBtf) -> Result<u32> {
    match std::env::consts::ARCH {
        "x86_64" => btf.offset_of("pt_regs", "orig_ax"),
        "aarch64" => btf.offset_of("pt_regs", "syscallno"),
        other => bail!("socktrace does not know where {other} keeps the syscall number yet"),
    }
}

/// Where this architecture's `struct pt_regs` keeps the first five syscall arguments when
/// the syscall returns (the return value has overwritten the first register on arm64).
fn syscall_arg_regs(btf: &KernelBtf) -> Result<[u32; 5]> {
    match std::env::consts::ARCH {
        "x86_64" => Ok([
            btf.offset_of("pt_regs", "di")?,
            btf.offset_of("pt_regs", "si")?,
            btf.offset_of("pt_regs", "dx")?,
            btf.offset_of("pt_regs", "r10")?,
            btf.offset_of("pt_regs", "r8")?,
        ]),
        "aarch64" => {
            let regs = btf.offset_of("pt_regs", "regs")?;
            Ok([btf.offset_of("pt_regs", "orig_x0")?, regs + 8, regs + 16, regs + 24, regs + 32])
        }
        other => bail!("socktrace does not know where {other} keeps syscall arguments yet"),
    }
}

/// Where a record field's offset goes in `KernelOffsets`.
type OffsetSlot = fn(&mut KernelOffsets) -> &mut u32;

/// A field the tracepoint programs read from a classic TCP/socket record.
struct RecordField {
    tracepoint: &'static str,
    field: &'static str,
    /// The size the program reads.
    size: u32,
    /// Optional fields get `NO_FIELD` on kernels without them.
    required: bool,
    slot: OffsetSlot,
}

const fn field(
    tracepoint: &'static str,
    field: &'static str,
    size: u32,
    required: bool,
    slot: OffsetSlot,
) -> RecordField {
    RecordField { tracepoint, field, size, required, slot }
}

/// Every record field the tracepoint programs read, with where its offset goes.
const RECORD_FIELDS: [RecordField; 9] = [
    field("inet_sock_set_state", "skaddr", 8, true, |o| &mut o.tp_set_state_skaddr),
    field("inet_sock_set_state", "oldstate", 4, true, |o| &mut o.tp_set_state_oldstate),
    field("inet_sock_set_state", "newstate", 4, true, |o| &mut o.tp_set_state_newstate),
    field("tcp_receive_reset", "skaddr", 8, true, |o| &mut o.tp_receive_reset_skaddr),
    field("tcp_send_reset", "skaddr", 8, true, |o| &mut o.tp_send_reset_skaddr),
    // Added with the RST reasons (about 6.10); older records have none.
    field("tcp_send_reset", "reason", 4, false, |o| &mut o.tp_send_reset_reason),
    field("tcp_send_reset", "skbaddr", 8, false, |o| &mut o.tp_send_reset_skbaddr),
    field("tcp_retransmit_skb", "skaddr", 8, true, |o| &mut o.tp_retransmit_skaddr),
    field("tcp_destroy_sock", "skaddr", 8, true, |o| &mut o.tp_destroy_skaddr),
];

/// Reads one classic record's layout into `offsets`: the offsets of the fields socktrace
/// reads, checked for the sizes its programs expect. A record laid out otherwise is refused
/// with what differs, never read at a guessed offset.
pub fn record_layout(tracepoint: &str, format: &tracefs::Format, offsets: &mut KernelOffsets) -> Result<()> {
    for f in RECORD_FIELDS.iter().filter(|f| f.tracepoint == tracepoint) {
        let slot = (f.slot)(offsets);
        match format.field(f.field) {
            Some(found) if found.size == f.size => *slot = found.offset,
            Some(found) => bail!(
                "its record's field {} is {} bytes on this kernel, socktrace reads {}",
                f.field,
                found.size,
                f.size
            ),
            None if f.required => bail!("its record has no field {} on this kernel", f.field),
            None => *slot = NO_FIELD,
        }
    }
    Ok(())
}

/// The io_uring door's offsets: the request's opcode, file and flags from BTF, and where the
/// `io_uring_complete` and `io_uring_file_get` records keep the request, its result and the fd.
/// An error says why the door cannot be watched (no io_uring, or records without the request,
/// as before about 5.19); the offsets then stay `NO_FIELD`.
fn io_uring_layouts(btf: &KernelBtf, tracefs: &Path, offsets: &mut KernelOffsets) -> Result<()> {
    let mut o = *offsets;
    o.io_kiocb_opcode = btf.offset_of("io_kiocb", "opcode")?;
    o.io_kiocb_file = btf.offset_of("io_kiocb", "file")?;
    o.io_kiocb_flags = btf.offset_of("io_kiocb", "flags")?;
    fixed_file_table(btf, &mut o);
    for (name, fields) in [
        ("io_uring_complete", [("req", 8, 0usize), ("res", 4, 1)]),
        ("io_uring_file_get", [("req", 8, 2), ("fd", 4, 3)]),
    ] {
        let format = tracefs::Format::read(tracefs, "io_uring", name)?;
        for (field, size, slot) in fields {
            let at = match format.field(field) {
                Some(f) if f.size == size => f.offset,
                Some(f) => bail!("the io_uring:{name} record's {field} is {} bytes, socktrace reads {size}", f.size),
                None => {
                    bail!("the io_uring:{name} record has no {field} field on this kernel (it has from about 5.19)")
                }
            };
            *[
                &mut o.tp_io_complete_req,
                &mut o.tp_io_complete_res,
                &mut o.tp_io_file_get_req,
                &mut o.tp_io_file_get_fd,
            ][slot] = at;
        }
    }
    *offsets = o;
    Ok(())
}

/// The programs for this kernel's BTF tracepoints `io_uring_file_get` and `io_uring_complete`
/// (see `names::IO_URING_COMPLETE_CQE`), from their prototypes in BTF: the arguments moved
/// between kernels (5.18 gave both the request, 5.19 dropped the ring from `file_get`, 6.13
/// passes the completion entry instead of the result). An error names a layout socktrace has
/// no program for (5.18's `file_get` among them); the door then stays on the classic
/// tracepoints.
fn io_uring_arguments(btf: &KernelBtf, o: &mut KernelOffsets) -> Result<[&'static str; 2]> {
    let args = |name: &str| {
        btf.tracepoint_args(name).with_context(|| format!("no BTF tracepoint {name} in this kernel's BTF"))
    };
    let programs = io_uring_programs(&args("io_uring_file_get")?, &args("io_uring_complete")?)?;
    if programs[1] == names::IO_URING_COMPLETE_CQE {
        o.io_uring_cqe_res = btf.offset_of("io_uring_cqe", "res")?;
    }
    Ok(programs)
}

/// The programs for `io_uring_file_get` and `io_uring_complete` taking these arguments.
fn io_uring_programs(file_get: &[TracepointArg], complete: &[TracepointArg]) -> Result<[&'static str; 2]> {
    use TracepointArg::{Int, Ptr};
    let unknown = |name: &str, args: &[TracepointArg]| {
        let list: Vec<String> = args.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("{name}({}) is a layout socktrace does not know", list.join(", "))
    };
    let file_get = match file_get {
        [Ptr(req), Int(4)] if req == "io_kiocb" => names::IO_URING_FILE_GET_RAW,
        other => return Err(unknown("io_uring_file_get", other)),
    };
    // The request must come untyped (`void *`): the program hashes it, which the verifier
    // refuses for a typed pointer.
    let complete = match complete {
        [Ptr(_), Ptr(req), Ptr(cqe)] if req.is_empty() && cqe == "io_uring_cqe" => names::IO_URING_COMPLETE_CQE,
        [Ptr(_), Ptr(req), Int(8), Int(4), ..] if req.is_empty() => names::IO_URING_COMPLETE_RES,
        other => return Err(unknown("io_uring_complete", other)),
    };
    Ok([file_get, complete])
}

/// Where a ring keeps its registered files, for a fixed-file request's index; left
/// `NO_FIELD` (the index is then not known) where neither known layout is found.
fn fixed_file_table(btf: &KernelBtf, o: &mut KernelOffsets) {
    let Ok(ctx) = btf.offset_of("io_kiocb", "ctx") else { return };
    // 6.13+: nodes, and the request keeps the node it took its file from.
    let nodes = (
        btf.offset_of("io_kiocb", "file_node"),
        btf.offset_of("io_ring_ctx", "file_table.data.nr"),
        btf.offset_of("io_ring_ctx", "file_table.data.nodes"),
    );
    if let (Ok(node), Ok(nr), Ok(table)) = nodes {
        (o.io_kiocb_ctx, o.io_kiocb_file_node, o.io_ctx_files_nr, o.io_ctx_files) = (ctx, node, nr, table);
        o.io_fixed_files_nodes = 1;
        return;
    }
    // Before: an array of tagged file pointers.
    if let (Ok(nr), Ok(table)) =
        (btf.offset_of("io_ring_ctx", "nr_user_files"), btf.offset_of("io_ring_ctx", "file_table.files"))
    {
        (o.io_kiocb_ctx, o.io_ctx_files_nr, o.io_ctx_files) = (ctx, nr, table);
        o.io_fixed_files_nodes = 0;
    }
}

/// The classic TCP/socket records' layouts, from their format files; the tracepoints that
/// cannot be used, with why.
fn tcp_record_layouts(tracefs: &Path, offsets: &mut KernelOffsets) -> Vec<RecordProblem> {
    let mut problems = Vec::new();
    for ev in &super::probes::KERNEL_EVENTS {
        let super::probes::Probe::Tracepoint { category, name } = ev.tracepoint else { continue };
        let result =
            tracefs::Format::read(tracefs, category, name).and_then(|format| record_layout(name, &format, offsets));
        if let Err(e) = result {
            problems.push(RecordProblem { tracepoint: name, why: format!("{e:#}") });
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(fields: &[(&str, u32, u32)]) -> tracefs::Format {
        let mut text =
            String::from("name: x\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n");
        for (decl, offset, size) in fields {
            text.push_str(&format!("\tfield:{decl};\toffset:{offset};\tsize:{size};\tsigned:0;\n"));
        }
        tracefs::Format::parse(&text).unwrap()
    }

    // Reads the BTF of the kernel the tests run on: every offset must resolve, and the
    // sock_common fields must sit where every kernel since 4.x puts them relative to each other.
    #[cfg(feature = "host-kernel-tests")]
    #[test]
    fn struct_offsets_resolve_on_this_kernel() {
        let btf = KernelBtf::load().expect("this machine has BTF");
        let o = struct_offsets(&btf).expect("all offsets");
        // struct sock starts with sock_common, whose first fields are the address pair.
        assert_eq!(o.sk_daddr, 0);
        assert_eq!(o.sk_rcv_saddr, 4);
        assert!(o.sk_dport > o.sk_rcv_saddr && o.sk_num == o.sk_dport + 2);
        assert!(o.sk_state > o.sk_family);
        assert!(o.sk_protocol > o.sk_state && o.sk_type > o.sk_state);
        assert_ne!(o.task_files, 0);
        // What resource failures and `--cgroup` before 5.14 read is all on this kernel.
        for (name, at) in [
            ("task_struct.signal", o.task_signal),
            ("signal_struct.rlim[NOFILE]", o.signal_rlim_nofile),
            ("sock.sk_ack_backlog", o.sk_ack_backlog),
            ("sock.sk_max_ack_backlog", o.sk_max_ack_backlog),
            ("sock.sk_sndbuf", o.sk_sndbuf),
            ("sock.sk_wmem_queued", o.sk_wmem_queued),
            ("net.ipv4.ip_local_ports.range", o.net_local_ports),
            ("tcp_sock.inet_conn.icsk_user_timeout", o.icsk_user_timeout),
            ("tcp_sock.inet_conn.icsk_probes_out", o.icsk_probes_out),
            ("tcp_sock.inet_conn.icsk_syn_retries", o.icsk_syn_retries),
            ("tcp_sock.snd_wnd", o.tp_snd_wnd),
            ("tcp_sock.keepalive_probes", o.tp_keepalive_probes),
            ("sock.sk_flags", o.sk_flags),
            ("net.ipv4.sysctl_tcp_syn_retries", o.net_syn_retries),
            ("net.ipv4.sysctl_tcp_retries2", o.net_retries2),
            ("net.ipv4.sysctl_tcp_keepalive_probes", o.net_keepalive_probes),
            ("sk_buff.head", o.skb_head),
            ("sk_buff.network_header", o.skb_network_header),
            ("sk_buff.transport_header", o.skb_transport_header),
            ("sock.__sk_common.skc_prot", o.sk_prot),
            ("proto.memory_allocated", o.proto_memory_allocated),
            ("proto.memory_pressure", o.proto_memory_pressure),
            ("proto.sysctl_mem", o.proto_sysctl_mem),
            ("net.ipv4.sysctl_tcp_wmem", o.net_tcp_wmem),
            ("tcp_sock.lsndtime", o.tp_lsndtime),
            ("tcp_sock.inet_conn.icsk_ack.lrcvtime", o.icsk_ack_lrcvtime),
            ("sk_buff.protocol", o.skb_protocol),
            ("sk_buff.dev", o.skb_dev),
            ("sk_buff.sk", o.skb_sk),
            ("net_device.ifindex", o.dev_ifindex),
            ("net_device.name", o.dev_name),
            ("net_device.nd_net", o.dev_nd_net),
            ("net.ns.inum", o.net_ns_inum),
            ("tcp_sock.rcv_nxt", o.tp_rcv_nxt),
            ("tcp_sock.snd_nxt", o.tp_snd_nxt),
            ("tcp_sock.snd_una", o.tp_snd_una),
            ("tcp_sock.keepalive_time", o.tp_keepalive_time),
            ("tcp_sock.keepalive_intvl", o.tp_keepalive_intvl),
            ("net.ipv4.sysctl_tcp_keepalive_time", o.net_keepalive_time),
            ("net.ipv4.sysctl_tcp_keepalive_intvl", o.net_keepalive_intvl),
            ("task_struct.cgroups", o.task_cgroups),
            ("cgroup.ancestors", o.cgroup_ancestors),
            ("tcp_sock.write_seq", o.tp_write_seq),
            ("tcp_sock.copied_seq", o.tp_copied_seq),
            ("tcp_sock.bytes_sent", o.tp_bytes_sent),
            ("tcp_sock.bytes_retrans", o.tp_bytes_retrans),
            ("tcp_sock.bytes_received", o.tp_bytes_received),
            ("tcp_sock.inet_conn.icsk_retransmits", o.icsk_retransmits),
            ("task_struct.flags", o.task_flags),
            ("task_struct.exit_code", o.task_exit_code),
            ("sock.sk_lock.owned", o.sk_lock_owned),
        ] {
            assert_ne!(at, NO_FIELD, "{name}");
        }
    }

    #[test]
    fn io_uring_programs_of_each_kernel() {
        use TracepointArg::{Int, Ptr};
        let void = || Ptr(String::new());
        let req = || Ptr("io_kiocb".into());
        // 5.19-6.12 (6.1 and 6.12 in the VMs): io_uring_file_get(struct io_kiocb *req, int fd);
        // io_uring_complete(void *ctx, void *req, u64 user_data, int res, unsigned cflags,
        // u64 extra1, u64 extra2).
        let complete_6_1 = [void(), void(), Int(8), Int(4), Int(4), Int(8), Int(8)];
        assert_eq!(
            io_uring_programs(&[req(), Int(4)], &complete_6_1).unwrap(),
            [names::IO_URING_FILE_GET_RAW, names::IO_URING_COMPLETE_RES]
        );
        // 6.13+ (this host): io_uring_complete(struct io_ring_ctx *ctx, void *req,
        // struct io_uring_cqe *cqe).
        let complete_cqe = [Ptr("io_ring_ctx".into()), void(), Ptr("io_uring_cqe".into())];
        assert_eq!(
            io_uring_programs(&[req(), Int(4)], &complete_cqe).unwrap(),
            [names::IO_URING_FILE_GET_RAW, names::IO_URING_COMPLETE_CQE]
        );
        // 5.18: io_uring_file_get(void *ctx, void *req, u64 user_data, int fd): no program of
        // its own (no such kernel to test it on): the classic tracepoints.
        let complete_5_18 = [void(), void(), Int(8), Int(4), Int(4)];
        let err = io_uring_programs(&[void(), void(), Int(8), Int(4)], &complete_5_18).unwrap_err().to_string();
        assert_eq!(err, "io_uring_file_get(void *, void *, int64, int32) is a layout socktrace does not know");
        // A request typed one day could not be hashed: not taken.
        let typed_req = [void(), req(), Ptr("io_uring_cqe".into())];
        assert!(io_uring_programs(&[req(), Int(4)], &typed_req).is_err());
        // 5.10: io_uring_file_get(void *ctx, int fd): no request to follow.
        let err = io_uring_programs(&[void(), Int(4)], &[void(), Int(8), Int(8)]).unwrap_err().to_string();
        assert_eq!(err, "io_uring_file_get(void *, int32) is a layout socktrace does not know");
    }

    #[cfg(feature = "host-kernel-tests")]
    #[test]
    fn io_uring_programs_on_this_kernel() {
        let btf = KernelBtf::load().unwrap();
        let mut o = KernelOffsets::ZERO;
        let programs =
            io_uring_arguments(&btf, &mut o).expect("this kernel's io_uring tracepoints have a known layout");
        if programs[1] == names::IO_URING_COMPLETE_CQE {
            assert_eq!(o.io_uring_cqe_res, 8, "struct io_uring_cqe {{ __u64 user_data; __s32 res; ... }}");
        }
    }

    #[test]
    fn send_reset_record_with_reason_as_on_6_10_and_later() {
        let f = format(&[
            ("const void * skbaddr", 8, 8),
            ("const void * skaddr", 16, 8),
            ("int state", 24, 4),
            ("enum sk_rst_reason reason", 28, 4),
            ("__u8 saddr[sizeof(struct sockaddr_in6)]", 32, 28),
        ]);
        let mut o = KernelOffsets::ZERO;
        record_layout("tcp_send_reset", &f, &mut o).unwrap();
        assert_eq!((o.tp_send_reset_skaddr, o.tp_send_reset_reason), (16, 28));
    }

    #[test]
    fn send_reset_record_without_reason_as_on_6_1() {
        let f = format(&[
            ("const void * skbaddr", 8, 8),
            ("const void * skaddr", 16, 8),
            ("int state", 24, 4),
            ("__u16 sport", 28, 2),
            ("__u16 dport", 30, 2),
        ]);
        let mut o = KernelOffsets::ZERO;
        record_layout("tcp_send_reset", &f, &mut o).unwrap();
        assert_eq!((o.tp_send_reset_skaddr, o.tp_send_reset_reason), (16, NO_FIELD));
    }

    #[test]
    fn set_state_offsets_come_from_the_record() {
        let f = format(&[("const void * skaddr", 16, 8), ("int oldstate", 24, 4), ("int newstate", 28, 4)]);
        let mut o = KernelOffsets::ZERO;
        record_layout("inet_sock_set_state", &f, &mut o).unwrap();
        assert_eq!((o.tp_set_state_skaddr, o.tp_set_state_oldstate, o.tp_set_state_newstate), (16, 24, 28));
    }

    #[test]
    fn a_record_laid_out_otherwise_is_refused_with_what_differs() {
        let mut o = KernelOffsets::ZERO;
        let narrow = format(&[("const void * skaddr", 8, 4), ("int oldstate", 12, 4), ("int newstate", 16, 4)]);
        let e = record_layout("inet_sock_set_state", &narrow, &mut o).unwrap_err().to_string();
        assert!(e.contains("field skaddr is 4 bytes on this kernel, socktrace reads 8"), "{e}");
        let missing = format(&[("const void * skaddr", 8, 8), ("int newstate", 16, 4)]);
        let e = record_layout("inet_sock_set_state", &missing, &mut o).unwrap_err().to_string();
        assert!(e.contains("no field oldstate"), "{e}");
        let e = record_layout("tcp_receive_reset", &format(&[("__u16 sport", 8, 2)]), &mut o).unwrap_err().to_string();
        assert!(e.contains("no field skaddr"), "{e}");
    }

    #[test]
    fn every_record_field_reads_a_classic_tracepoint_socktrace_uses() {
        for f in &RECORD_FIELDS {
            assert!(
                super::super::probes::KERNEL_EVENTS
                    .iter()
                    .any(|ev| matches!(ev.tracepoint, super::super::probes::Probe::Tracepoint { name, .. } if name == f.tracepoint)),
                "{} is read but no event uses its tracepoint",
                f.tracepoint
            );
        }
    }
}
