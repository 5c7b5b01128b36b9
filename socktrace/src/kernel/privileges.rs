//! Which capabilities socktrace has, checked before anything is loaded so the user gets one
//! clear sentence instead of an EPERM from deep inside the loader.

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
/// the traced processes produce.
pub fn drop_all() -> anyhow::Result<()> {
    use caps::CapSet;
    // SAFETY: prctl with constant arguments.
    unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    caps::clear(None, CapSet::Ambient).ok();
    for set in [CapSet::Effective, CapSet::Inheritable, CapSet::Permitted] {
        caps::clear(None, set).map_err(|e| anyhow::anyhow!("dropping capabilities ({set:?}): {e}"))?;
    }
    Ok(())
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
