//! Which kernel is running: its release and version, for the choices that depend on it.

/// The running kernel's release (`uname -r`); empty if /proc cannot tell.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|r| r.trim().to_string()).unwrap_or_default()
}

/// The running kernel's (major, minor).
pub fn kernel_version() -> (u32, u32) {
    let release = kernel_release();
    let mut it = release.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse().ok());
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}
