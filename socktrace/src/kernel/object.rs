//! The embedded eBPF object, and what changes in it for the running kernel before it is
//! loaded: the history map's flags (preallocated before 6.1) and the ring buffer's size.

use socktrace_common::names;

/// The eBPF programs, built by `build.rs` from `socktrace-ebpf/`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/socktrace"));

/// Whether the history map must be preallocated: before 6.1, a kprobe, tracepoint or raw
/// tracepoint program that uses a hash map allocated at run time makes the kernel warn
/// (WARN_ONCE: a stack trace in the log, a panic where `panic_on_warn` is set); 6.1 made such
/// maps safe in any context (its BPF memory allocator).
pub fn histories_preallocated(kernel: (u32, u32)) -> bool {
    kernel < (6, 1)
}

/// The eBPF object as embedded, or, for a kernel before 6.1, a copy with the history map's
/// `BPF_F_NO_PREALLOC` flag cleared: its `bpf_map_def` (`map_flags` is its fifth word) found
/// through the symbol table.
pub fn object_for_this_kernel(preallocate: bool) -> AlignedObject {
    let mut object = AlignedObject::copy_of(EBPF_OBJECT);
    if preallocate {
        if let Some(at) = history_map_flags_at(EBPF_OBJECT) {
            object.bytes_mut()[at..at + 4].copy_from_slice(&0u32.to_ne_bytes());
        }
    }
    object
}

/// An object file's bytes, 8-byte aligned as the ELF parser wants them.
pub struct AlignedObject {
    words: Vec<u64>,
    len: usize,
}

impl AlignedObject {
    fn copy_of(bytes: &[u8]) -> AlignedObject {
        let mut object = AlignedObject { words: vec![0; bytes.len().div_ceil(8)], len: bytes.len() };
        object.bytes_mut().copy_from_slice(bytes);
        object
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `words` holds at least `len` initialized bytes; u8 has no alignment.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast(), self.len) }
    }
}

impl std::ops::Deref for AlignedObject {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: as in `bytes_mut`.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast(), self.len) }
    }
}

/// Where the history map's `map_flags` lie in the object file.
fn history_map_flags_at(elf: &[u8]) -> Option<usize> {
    use object::{Object as _, ObjectSection as _, ObjectSymbol as _};
    let file = object::File::parse(elf).ok()?;
    let symbol = file.symbols().find(|s| s.name() == Ok(names::SOCKETS))?;
    let section = file.section_by_index(symbol.section_index()?).ok()?;
    let (start, size) = section.file_range()?;
    let def = usize::try_from(start + symbol.address()).ok()?;
    (symbol.address() + 20 <= size).then_some(def + 16)
}

/// The ring buffer's size: 16 MiB (about 19,600 failure events: a mass reset of 15,000
/// connections at once fits while userspace catches up) where the host has 4 GiB of memory or
/// more, else the eBPF object's 4 MiB. Its pages become resident as events pass through them.
pub fn ring_buffer_bytes() -> u32 {
    const LARGE: u32 = 16 << 20;
    const SMALL: u32 = 4 << 20;
    let mem_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines().find_map(|l| l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
    });
    if mem_kib.is_some_and(|k| k >= 4 << 20) {
        LARGE
    } else {
        SMALL
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Before 6.1 the history map is loaded preallocated: the copy differs from the embedded
    /// object in the map's flags only, and those were BPF_F_NO_PREALLOC.
    #[test]
    fn old_kernels_get_a_preallocated_history_map() {
        assert!(histories_preallocated((5, 10)) && histories_preallocated((6, 0)));
        assert!(!histories_preallocated((6, 1)) && !histories_preallocated((6, 18)));
        let at = history_map_flags_at(EBPF_OBJECT).expect("the history map's definition");
        assert_eq!(EBPF_OBJECT[at..at + 4], 1u32.to_ne_bytes(), "BPF_F_NO_PREALLOC as built");
        let old = object_for_this_kernel(true);
        let new = object_for_this_kernel(false);
        assert_eq!(&*new, EBPF_OBJECT);
        assert_eq!(old.len(), EBPF_OBJECT.len());
        let differing: Vec<usize> = (0..old.len()).filter(|&i| old[i] != EBPF_OBJECT[i]).collect();
        assert_eq!(differing, vec![at], "only the flag's byte");
        let parsed = aya_obj::Object::parse(&old).expect("the copy parses");
        assert_eq!(parsed.maps[names::SOCKETS].map_flags(), 0);
        assert_eq!(aya_obj::Object::parse(EBPF_OBJECT).unwrap().maps[names::SOCKETS].map_flags(), 1);
    }
}
