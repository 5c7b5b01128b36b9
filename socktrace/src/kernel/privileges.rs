//! Which capabilities socktrace has, checked before anything is loaded so the user gets one
//! clear sentence instead of an EPERM from deep inside the loader.

use std::os::fd::{AsRawFd as _, BorrowedFd};

pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// The effective capability set of this process (from /proc/self/status).
pub fn effective_caps() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    parse_cap_eff(&status).unwrap_or(0)
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1u64 << cap) != 0
}

/// Loading tracing programs needs CAP_BPF and CAP_PERFMON (5.8+), or CAP_SYS_ADMIN.
pub fn has_bpf_privileges() -> bool {
    let caps = effective_caps();
    has(caps, CAP_SYS_ADMIN) || (has(caps, CAP_BPF) && has(caps, CAP_PERFMON))
}

/// The missing capabilities, named, or None when socktrace can load its programs.
pub fn missing() -> Option<String> {
    if has_bpf_privileges() {
        return None;
    }
    let caps = effective_caps();
    let names: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(c, _)| !has(caps, *c))
        .map(|(_, n)| n)
        .collect();
    Some(format!("{} (or CAP_SYS_ADMIN)", names.join(" and ")))
}

/// After every probe is attached socktrace needs no privilege at all: the ring buffer is
/// mmapped, the maps and links are fds it already holds, and they go when it exits. So it
/// gives up every capability, for good (no new privileges either), before reading anything
/// the traced processes produce. One exception: kernels that close the whole bpf() syscall to
/// callers without CAP_BPF when unprivileged BPF is disabled (5.10 does; 6.1 lets any holder
/// of a map fd read it) would refuse socktrace its own counters at the end, so there
/// `CAP_BPF` alone is kept, and `what_is_kept` says so. `map_fd` is a map socktrace holds:
/// the probe of whether reads still work without capabilities.
pub fn drop_all(map_fd: BorrowedFd<'_>) -> anyhow::Result<Option<&'static str>> {
    use caps::{CapSet, Capability};
    let keep_bpf = !map_readable_without_capabilities(map_fd);
    // SAFETY: prctl with constant arguments.
    unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    caps::clear(None, CapSet::Ambient).ok();
    caps::clear(None, CapSet::Inheritable).map_err(|e| anyhow::anyhow!("dropping capabilities (Inheritable): {e}"))?;
    for set in [CapSet::Effective, CapSet::Permitted] {
        let keep: caps::CapsHashSet =
            if keep_bpf { [Capability::CAP_BPF].into_iter().collect() } else { Default::default() };
        let now = caps::read(None, set).map_err(|e| anyhow::anyhow!("reading capabilities ({set:?}): {e}"))?;
        caps::set(None, set, &now.intersection(&keep).copied().collect())
            .map_err(|e| anyhow::anyhow!("dropping capabilities ({set:?}): {e}"))?;
    }
    Ok(keep_bpf.then_some("CAP_BPF (this kernel lets no process without it read BPF maps)"))
}

/// Whether a BPF map can still be read through its fd once every capability is gone, tried
/// in a thread of its own (capabilities are per thread) that drops them first.
fn map_readable_without_capabilities(map_fd: BorrowedFd<'_>) -> bool {
    let fd = map_fd.as_raw_fd();
    std::thread::scope(|s| {
        s.spawn(|| {
            for set in [caps::CapSet::Effective, caps::CapSet::Permitted] {
                if caps::clear(None, set).is_err() {
                    return false;
                }
            }
            // BPF_MAP_GET_NEXT_KEY: where the syscall is open, the map answers (a ring buffer
            // with ENOTSUPP); where it is closed to the unprivileged, EPERM comes first.
            #[repr(C)]
            struct Attr {
                map_fd: u32,
                _pad: u32,
                key: u64,
                next_key: u64,
                flags: u64,
            }
            let mut next = 0u64;
            let attr = Attr { map_fd: fd as u32, _pad: 0, key: 0, next_key: (&mut next as *mut u64) as u64, flags: 0 };
            const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
            // SAFETY: a bpf() call with a valid attribute block and an 8-byte output buffer.
            let rc = unsafe {
                libc::syscall(libc::SYS_bpf, BPF_MAP_GET_NEXT_KEY, &attr as *const Attr, std::mem::size_of::<Attr>())
            };
            rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM)
        })
        .join()
        .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_effective_set() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        let caps = parse_cap_eff(status).unwrap();
        assert!(has(caps, CAP_BPF) && has(caps, CAP_PERFMON) && has(caps, CAP_SYS_ADMIN));
        assert_eq!(parse_cap_eff("CapEff:\t0000000000000000\n"), Some(0));
        assert_eq!(parse_cap_eff("nothing"), None);
    }
}
