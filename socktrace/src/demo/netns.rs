//! Throwaway network namespaces for the demo: the calling thread moves into a new, unnamed
//! one (`unshare(CLONE_NEWNET)` affects only that thread). Nothing is left behind: the kernel
//! frees the namespace when its last thread and socket are gone, even if the demo is killed.

use anyhow::{bail, Context as _, Result};
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// Why isolated cases cannot run here, if they cannot.
pub fn available() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("they need root");
    }
    Command::new("nft").arg("--version").stdout(Stdio::null()).status().context("they need nft (nftables)")?;
    Ok(())
}

/// Moves this thread into a new network namespace with loopback up.
pub fn enter() -> Result<()> {
    // SAFETY: plain syscall; it changes only this thread's network namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        bail!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
    }
    loopback_up()
}

/// Sets `lo` up (SIOCSIFFLAGS): a new namespace starts with it down.
fn loopback_up() -> Result<()> {
    // SAFETY: an ioctl socket owned and closed here; `ifreq` is plain data, zeroed, with the
    // interface name NUL-terminated.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            bail!("socket: {}", std::io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        let ok = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) == 0 && {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) == 0
        };
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if !ok {
            bail!("setting lo up: {err}");
        }
    }
    Ok(())
}

/// Adds an input-hook rule to this thread's namespace (`nft`, started from this thread, runs
/// in it).
pub fn nft(rules: &str) -> Result<()> {
    let ruleset =
        format!("table inet demo {{\n chain input {{\n  type filter hook input priority 0;\n  {rules}\n }}\n}}\n");
    let mut child = Command::new("nft").args(["-f", "-"]).stdin(Stdio::piped()).spawn().context("running nft")?;
    child.stdin.take().context("nft stdin")?.write_all(ruleset.as_bytes())?;
    let status = child.wait()?;
    if !status.success() {
        bail!("nft refused the rule {rules:?} ({status})");
    }
    Ok(())
}

/// An `unreachable` route to `net/prefix` in this thread's namespace (SIOCADDRT, RTF_REJECT).
pub fn unreachable_route(net: Ipv4Addr, prefix: u8) -> Result<()> {
    let sin = |a: Ipv4Addr| {
        let s = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from(a).to_be() },
            sin_zero: [0; 8],
        };
        // SAFETY: sockaddr_in and sockaddr have the same size; plain data.
        unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(s) }
    };
    let mask = Ipv4Addr::from(u32::MAX.checked_shl(32 - prefix as u32).unwrap_or(0));
    // SAFETY: rtentry is plain data, zeroed; the device name is a NUL-terminated static.
    unsafe {
        let mut rt: libc::rtentry = std::mem::zeroed();
        rt.rt_dst = sin(net);
        rt.rt_genmask = sin(mask);
        rt.rt_flags = libc::RTF_UP | libc::RTF_REJECT;
        rt.rt_dev = c"lo".as_ptr() as *mut libc::c_char;
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            bail!("socket: {}", std::io::Error::last_os_error());
        }
        let rc = libc::ioctl(fd, libc::SIOCADDRT, &rt);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 {
            bail!("adding an unreachable route to {net}/{prefix}: {err}");
        }
    }
    Ok(())
}
