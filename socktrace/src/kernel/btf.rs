//! Struct field offsets of the running kernel, read from its BTF (/sys/kernel/btf/vmlinux).
//!
//! Layouts change between kernels and configs, so they are looked up at start-up (see
//! `offsets`, which decides which fields the programs need); this module only answers
//! questions about the BTF: field offsets, functions, tracepoint signatures.

use anyhow::{anyhow, bail, Context as _, Result};
use btf_rs::{Btf, Type};
use std::path::Path;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The kernel's BTF as aya needs it (BTF-typed programs are loaded against it), parsed from
/// a read-only mapping of the sysfs file rather than a copy of it: the copy (5 MiB on a 6.x
/// kernel) would sit beside the parsed types (19 MiB) at socktrace's memory peak.
pub fn aya_kernel_btf() -> Result<aya::Btf> {
    let mapped = std::fs::File::open(VMLINUX_BTF).and_then(|file| {
        // SAFETY: a read-only private mapping of a file the kernel never changes while it runs.
        unsafe { memmap2::MmapOptions::new().map_copy_read_only(&file) }
    });
    match mapped {
        Ok(map) => aya::Btf::parse(&map, aya::Endianness::default()).context("parsing kernel BTF"),
        // A kernel whose sysfs BTF cannot be mapped: read it whole.
        Err(_) => aya::Btf::from_sys_fs().context("reading kernel BTF"),
    }
}

/// An argument of a BTF tracepoint, as far as telling layouts apart needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TracepointArg {
    /// An integer of this many bytes.
    Int(usize),
    /// A pointer to the struct of this name; "" for `void *` and other pointees.
    Ptr(String),
    Other,
}

impl std::fmt::Display for TracepointArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TracepointArg::Int(n) => write!(f, "int{}", n * 8),
            TracepointArg::Ptr(s) if s.is_empty() => write!(f, "void *"),
            TracepointArg::Ptr(s) => write!(f, "struct {s} *"),
            TracepointArg::Other => write!(f, "?"),
        }
    }
}

pub struct KernelBtf {
    btf: Btf,
    /// Structs already found, by name: each lookup by name scans the whole type section
    /// (the mmap backend keeps no index), and start-up asks for the same dozen structs ~90
    /// times (half of socktrace's attach time before this cache).
    structs: std::cell::RefCell<std::collections::HashMap<String, Type>>,
}

impl KernelBtf {
    pub fn load() -> Result<Self> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.exists() {
            bail!(
                "{} is missing: this kernel was built without BTF (CONFIG_DEBUG_INFO_BTF=y). \
                 socktrace needs BTF to find socket fields; use a kernel with BTF \
                 (most distribution kernels since 5.4 have it)",
                path.display()
            );
        }
        // Mmap parses only the types looked up: much faster and smaller than parsing all of
        // vmlinux's BTF up front; kernels that cannot mmap the file get the full parse.
        let btf = Btf::from_file_with_backend(path, btf_rs::Backend::Mmap)
            .or_else(|_| Btf::from_file(path))
            .with_context(|| format!("parsing BTF {}", path.display()))?;
        Ok(Self { btf, structs: Default::default() })
    }

    /// The byte offset of `path` (dot-separated, e.g. `__sk_common.skc_state`) inside the
    /// struct `outer`. Anonymous unions and structs are searched through, as C does.
    pub fn offset_of(&self, outer: &str, path: &str) -> Result<u32> {
        let mut ty = self.struct_named(outer)?;
        let mut offset_bits = 0u32;
        let parts: Vec<&str> = path.split('.').collect();
        for (i, field) in parts.iter().enumerate() {
            let (bits, member_ty) = self
                .find_member(&ty, field)?
                .ok_or_else(|| anyhow!("struct {outer} has no field {path} in this kernel's BTF"))?;
            offset_bits += bits;
            if i + 1 < parts.len() {
                ty = self.strip(member_ty)?;
            }
        }
        if !offset_bits.is_multiple_of(8) {
            bail!("{outer}.{path} is a bitfield in this kernel; socktrace cannot read it yet");
        }
        Ok(offset_bits / 8)
    }

    /// Whether the kernel has a function `name` that can be probed (BTF lists the functions
    /// that have a symbol; fully inlined ones have none and cannot take a kprobe).
    pub fn has_function(&self, name: &str) -> bool {
        self.btf
            .resolve_types_by_name(name)
            .map(|types| types.iter().any(|t| matches!(t, Type::Func(_))))
            .unwrap_or(false)
    }

    /// Number of parameters of the kernel function `name`, if BTF lists it.
    pub fn function_arity(&self, name: &str) -> Option<usize> {
        let types = self.btf.resolve_types_by_name(name).ok()?;
        let func = types.into_iter().find(|t| matches!(t, Type::Func(_)))?;
        match self.btf.resolve_chained_type(func.as_btf_type()?).ok()? {
            Type::FuncProto(f) => Some(f.parameters.len()),
            _ => None,
        }
    }

    /// The names of the values of the enum `name` (e.g. `sk_rst_reason`, 6.10+), by value.
    pub fn enum_names(&self, name: &str) -> Vec<(u32, String)> {
        let Ok(types) = self.btf.resolve_types_by_name(name) else { return Vec::new() };
        let Some(Type::Enum(e)) = types.into_iter().find(|t| matches!(t, Type::Enum(_))) else { return Vec::new() };
        e.members.iter().filter_map(|m| Some((m.val(), self.btf.resolve_name(m).ok()?))).collect()
    }

    /// Number of parameters of the BTF tracepoint `name` (its `btf_trace_<name>` typedef).
    pub fn tracepoint_arity(&self, name: &str) -> Option<usize> {
        Some(self.tracepoint_proto(name)?.parameters.len().saturating_sub(1))
    }

    /// The prototype of the BTF tracepoint `name`: its `btf_trace_<name>` typedef, a pointer to
    /// a function whose first parameter is the probe's `__data`.
    fn tracepoint_proto(&self, name: &str) -> Option<btf_rs::FuncProto> {
        let types = self.btf.resolve_types_by_name(&format!("btf_trace_{name}")).ok()?;
        let typedef = types.into_iter().find(|t| matches!(t, Type::Typedef(_)))?;
        let mut ty = self.btf.resolve_chained_type(typedef.as_btf_type()?).ok()?;
        loop {
            match ty {
                Type::Ptr(ref p) => ty = self.btf.resolve_chained_type(p).ok()?,
                Type::FuncProto(f) => return Some(f),
                _ => return None,
            }
        }
    }

    /// The arguments of the BTF tracepoint `name` (its `btf_trace_<name>` typedef, without
    /// the leading `__data`), as far as socktrace tells layouts apart.
    pub fn tracepoint_args(&self, name: &str) -> Option<Vec<TracepointArg>> {
        let proto = self.tracepoint_proto(name)?;
        let args = proto.parameters.iter().skip(1).map(|p| {
            let Ok(ty) = self.btf.resolve_chained_type(p) else { return TracepointArg::Other };
            match self.unqualified(ty) {
                Ok(Type::Int(i)) => TracepointArg::Int(i.size()),
                Ok(Type::Ptr(p)) => {
                    let pointee =
                        self.btf.resolve_chained_type(&p).map_err(Into::into).and_then(|t| self.unqualified(t));
                    match pointee {
                        Ok(Type::Struct(s)) => TracepointArg::Ptr(self.btf.resolve_name(&s).unwrap_or_default()),
                        _ => TracepointArg::Ptr(String::new()),
                    }
                }
                _ => TracepointArg::Other,
            }
        });
        Some(args.collect())
    }

    /// `ty` without its typedefs and qualifiers.
    fn unqualified(&self, mut ty: Type) -> Result<Type> {
        for _ in 0..16 {
            ty = match ty {
                Type::Typedef(ref t) => self.btf.resolve_chained_type(t)?,
                Type::Const(ref t) | Type::Volatile(ref t) | Type::Restrict(ref t) => {
                    self.btf.resolve_chained_type(t)?
                }
                Type::TypeTag(ref t) => self.btf.resolve_chained_type(t)?,
                other => return Ok(other),
            };
        }
        bail!("type chain too deep")
    }

    fn struct_named(&self, name: &str) -> Result<Type> {
        if let Some(t) = self.structs.borrow().get(name) {
            return Ok(t.clone());
        }
        let found = self.find_struct(name)?;
        self.structs.borrow_mut().insert(name.to_string(), found.clone());
        Ok(found)
    }

    fn find_struct(&self, name: &str) -> Result<Type> {
        self.btf
            .resolve_types_by_name(name)
            .with_context(|| format!("struct {name} is not in this kernel's BTF"))?
            .into_iter()
            .find(|t| matches!(t, Type::Struct(s) if !s.members.is_empty()))
            .ok_or_else(|| anyhow!("struct {name} is not in this kernel's BTF"))
    }

    /// Follows typedefs and qualifiers to the underlying struct or union.
    fn strip(&self, ty: Type) -> Result<Type> {
        match self.unqualified(ty)? {
            ty @ (Type::Struct(_) | Type::Union(_)) => Ok(ty),
            other => bail!("expected a struct or union, found {}", other.name()),
        }
    }

    /// (bit offset, member type) of `name` in `ty`, searching anonymous members.
    fn find_member(&self, ty: &Type, name: &str) -> Result<Option<(u32, Type)>> {
        let members = match ty {
            Type::Struct(s) | Type::Union(s) => &s.members,
            _ => return Ok(None),
        };
        for m in members {
            let mname = self.btf.resolve_name(m).unwrap_or_default();
            // A member's type is resolved only when it matters (the one named, or an anonymous
            // member to search): task_struct has hundreds, and this runs at every start.
            if mname == name {
                return Ok(Some((m.bit_offset(), self.btf.resolve_chained_type(m)?)));
            }
            if mname.is_empty() {
                let mty = self.btf.resolve_chained_type(m)?;
                if let Ok(inner) = self.strip(mty) {
                    if let Some((bits, t)) = self.find_member(&inner, name)? {
                        return Ok(Some((m.bit_offset() + bits, t)));
                    }
                }
            }
        }
        Ok(None)
    }
}

/// The kernel's BTF, as far as choosing probes asks: which functions and BTF tracepoints it
/// has. Answered by either parser: `socktrace check` keeps btf-rs's view; a session asks aya's
/// parse (which the BTF-typed programs need anyway), so that only one is in memory at a time.
pub trait KernelTypes {
    fn has_function(&self, name: &str) -> bool;
    /// Whether the BTF tracepoint `name` exists (its `btf_trace_<name>` typedef).
    fn has_btf_tracepoint(&self, name: &str) -> bool;
}

impl KernelTypes for KernelBtf {
    fn has_function(&self, name: &str) -> bool {
        KernelBtf::has_function(self, name)
    }

    fn has_btf_tracepoint(&self, name: &str) -> bool {
        self.tracepoint_arity(name).is_some()
    }
}

impl KernelTypes for aya::Btf {
    fn has_function(&self, name: &str) -> bool {
        self.id_by_type_name_kind(name, aya_obj::btf::BtfKind::Func).is_ok()
    }

    fn has_btf_tracepoint(&self, name: &str) -> bool {
        self.id_by_type_name_kind(&format!("btf_trace_{name}"), aya_obj::btf::BtfKind::Typedef).is_ok()
    }
}

/// Checks of this machine's kernel BTF (6.18 here): they read /sys/kernel/btf/vmlinux.
#[cfg(all(test, feature = "host-kernel-tests"))]
mod tests {
    use super::*;

    #[test]
    fn tracepoint_signatures_on_this_kernel() {
        let btf = KernelBtf::load().expect("this machine has BTF");
        assert_eq!(btf.tracepoint_arity("inet_sock_set_state"), Some(3));
        assert_eq!(btf.tracepoint_arity("tcp_receive_reset"), Some(1));
        assert!(btf.has_function("tcp_set_state"));
        assert!(!btf.has_function("no_such_function_here"));
    }

    #[test]
    fn tracepoint_args_tell_pointers_from_integers() {
        use TracepointArg::{Int, Ptr};
        let btf = KernelBtf::load().unwrap();
        // inet_sock_set_state(const struct sock *sk, const int oldstate, const int newstate).
        assert_eq!(btf.tracepoint_args("inet_sock_set_state"), Some(vec![Ptr("sock".into()), Int(4), Int(4)]));
        // sys_exit(struct pt_regs *regs, long ret).
        assert_eq!(btf.tracepoint_args("sys_exit"), Some(vec![Ptr("pt_regs".into()), Int(8)]));
        assert_eq!(btf.tracepoint_args("no_such_tracepoint_here"), None);
    }

    #[test]
    fn function_arity_reads_the_prototype() {
        let btf = KernelBtf::load().unwrap();
        // tcp_reset(sk, skb) since 5.14; this machine runs a newer kernel.
        assert_eq!(btf.function_arity("tcp_reset"), Some(2));
        assert_eq!(btf.function_arity("no_such_function_here"), None);
    }

    #[test]
    fn rst_reasons_come_from_the_kernel() {
        let btf = KernelBtf::load().unwrap();
        let names = btf.enum_names("sk_rst_reason");
        // 6.10+ (this machine runs 6.18): the reasons are there, named as the kernel names them.
        assert!(names.iter().any(|(_, n)| n == "SK_RST_REASON_NOT_SPECIFIED"), "{names:?}");
        assert!(names.iter().any(|(_, n)| n == "SK_RST_REASON_TCP_ABORT_ON_CLOSE"), "{names:?}");
        assert!(btf.enum_names("no_such_enum_here").is_empty());
    }

    #[test]
    fn missing_field_is_a_clear_error() {
        let btf = KernelBtf::load().unwrap();
        let err = btf.offset_of("sock", "no_such_field").unwrap_err().to_string();
        assert!(err.contains("struct sock has no field no_such_field"), "{err}");
    }
}
