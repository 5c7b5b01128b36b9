//! A BPF array map mapped into socktrace's memory (`BPF_F_MMAPABLE`): a slot is read with a
//! load instead of a system call. Used for a table read once per failure of a kind that comes
//! in storms (a refused connect's record: a `bpf(MAP_LOOKUP_ELEM)` each cost about 2 µs of
//! socktrace's CPU here, a third of what a refused connect costs it in all).

use anyhow::{anyhow, Context as _, Result};
use std::os::fd::{AsFd as _, AsRawFd as _};

/// The array's values, read-only, as the kernel writes them. A value read while a program
/// writes it can be torn: the table's own check tells (see `socktrace_common::RefusedSyn`).
pub struct MappedArray<T> {
    base: *const T,
    slots: usize,
    bytes: usize,
    /// Keeps the map alive as long as the mapping.
    _map: aya::maps::MapData,
}

// SAFETY: a read-only shared mapping, only read through volatile copies of plain values.
unsafe impl<T: Send> Send for MappedArray<T> {}
// SAFETY: as above: `get` takes `&self` and copies.
unsafe impl<T: Sync> Sync for MappedArray<T> {}

impl<T: aya::Pod> MappedArray<T> {
    /// Maps the array `map` of `slots` values of `T`: checked against what the kernel made of
    /// it (the value size, unpadded: the kernel lays values out 8 bytes apart; the entries).
    pub fn of(map: aya::maps::Map, slots: u32) -> Result<Self> {
        let aya::maps::Map::Array(data) = map else { return Err(anyhow!("not an array map")) };
        let info = data.info().context("reading a BPF array's description")?;
        let size = std::mem::size_of::<T>();
        if info.value_size() as usize != size || !size.is_multiple_of(8) || info.max_entries() < slots {
            return Err(anyhow!(
                "a BPF array of {} values of {} bytes cannot be read as {slots} values of {size}",
                info.max_entries(),
                info.value_size()
            ));
        }
        // SAFETY: sysconf reads a constant of the system.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(1);
        let bytes = (slots as usize * std::mem::size_of::<T>()).div_ceil(page) * page;
        // SAFETY: a fresh read-only shared mapping of the map's fd, no address hint; checked
        // below.
        let at = unsafe {
            libc::mmap(std::ptr::null_mut(), bytes, libc::PROT_READ, libc::MAP_SHARED, data.fd().as_fd().as_raw_fd(), 0)
        };
        if at == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mapping a BPF array (BPF_F_MMAPABLE)");
        }
        Ok(MappedArray { base: at.cast(), slots: slots as usize, bytes, _map: data })
    }

    /// The value in slot `i`, as it is now.
    pub fn get(&self, i: u32) -> Option<T> {
        let i = i as usize;
        // SAFETY: within the mapping (i < slots), which lives as long as `self`; a volatile
        // copy, since a program may write the slot at any time.
        (i < self.slots).then(|| unsafe { std::ptr::read_volatile(self.base.add(i)) })
    }
}

impl<T> Drop for MappedArray<T> {
    fn drop(&mut self) {
        // SAFETY: our own mapping, of `bytes` bytes, unmapped once.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.bytes) };
    }
}
