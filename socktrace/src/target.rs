//! The started command of `socktrace -- COMMAND`: forked and held before its exec until every
//! probe is attached, so it is traced from its first call. Under sudo it runs as the invoking
//! user, as strace -u would.

use anyhow::{bail, Context as _, Result};
use std::ffi::CString;
use std::io::Write as _;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

/// A started command, waiting for `release` before it execs.
pub struct Child {
    pid: libc::pid_t,
    go: Option<OwnedFd>,
    /// Closed by a successful exec (CLOEXEC); carries errno when exec failed.
    exec_error: Option<OwnedFd>,
    program: String,
    status: Option<i32>,
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: valid array; both ends are owned below.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe2: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl Child {
    /// Forks; the child waits for `release`, drops to the invoking user (unless
    /// `keep_privileges`), and execs `argv`. (std's Command cannot do this: its spawn() waits
    /// for the exec to happen.)
    pub fn spawn(argv: &[String], keep_privileges: bool) -> Result<Child> {
        let cargs: Vec<CString> = argv
            .iter()
            .map(|a| CString::new(a.as_bytes()).with_context(|| format!("argument {a:?} contains a NUL byte")))
            .collect::<Result<_>>()?;
        let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        let user = if keep_privileges { None } else { invoking_user() };
        let (wait_end, go_end) = pipe()?;
        let (err_read, err_write) = pipe()?;
        // SAFETY: after fork the child only makes async-signal-safe calls (read, write,
        // setgroups, setgid, setuid, execvp, _exit) on data prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            bail!("fork: {}", std::io::Error::last_os_error());
        }
        if pid == 0 {
            unsafe {
                // The child's copy of the write end must go, or a socktrace that gives up
                // (attach failed) would leave it waiting forever instead of seeing EOF.
                libc::close(go_end.as_raw_fd());
                let mut b = 0u8;
                // Blocks until socktrace has attached (a byte) or gave up (EOF).
                if libc::read(wait_end.as_raw_fd(), (&mut b as *mut u8).cast(), 1) != 1 {
                    libc::_exit(127);
                }
                if let Some((uid, gid, groups)) = &user {
                    if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                        || libc::setgid(*gid) != 0
                        || libc::setuid(*uid) != 0
                    {
                        let e = *libc::__errno_location();
                        libc::write(err_write.as_raw_fd(), (&e as *const i32).cast(), 4);
                        libc::_exit(127);
                    }
                }
                libc::execvp(ptrs[0], ptrs.as_ptr());
                let e = *libc::__errno_location();
                libc::write(err_write.as_raw_fd(), (&e as *const i32).cast(), 4);
                libc::_exit(127);
            }
        }
        drop(wait_end);
        drop(err_write);
        Ok(Child { pid, go: Some(go_end), exec_error: Some(err_read), program: argv[0].clone(), status: None })
    }

    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Lets the command exec: every probe is in place. Fails if the exec failed.
    pub fn release(&mut self) -> Result<()> {
        if let Some(go) = self.go.take() {
            let mut f = std::fs::File::from(go);
            f.write_all(b"g").context("releasing the command")?;
        }
        if let Some(err) = self.exec_error.take() {
            let mut e = [0u8; 4];
            let mut f = std::fs::File::from(err);
            if std::io::Read::read(&mut f, &mut e).unwrap_or(0) == 4 {
                let _ = self.wait_status();
                bail!("cannot start {:?}: {}", self.program, std::io::Error::from_raw_os_error(i32::from_ne_bytes(e)));
            }
        }
        Ok(())
    }

    /// The command's exit status as a shell reports it (128 + signal when killed).
    pub fn wait_status(&mut self) -> Result<i32> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        while unsafe { libc::waitpid(self.pid, &mut status, 0) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e).context("waiting for the command");
            }
        }
        let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
        self.status = Some(code);
        Ok(code)
    }

    /// Gives up before release: the held exec sees EOF and the command never runs.
    pub fn abandon(&mut self) {
        self.go = None;
        let _ = self.wait_status();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.go.is_some() {
            self.abandon();
        }
    }
}

/// Under sudo, the user who ran it: (uid, gid, supplementary groups).
fn invoking_user() -> Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)> {
    let uid: libc::uid_t = std::env::var("SUDO_UID").ok()?.parse().ok()?;
    let gid: libc::gid_t = std::env::var("SUDO_GID").ok()?.parse().ok()?;
    if uid == 0 {
        return None;
    }
    let mut groups = vec![gid];
    if let Some(name) = std::env::var("SUDO_USER").ok().and_then(|n| CString::new(n).ok()) {
        let mut n: libc::c_int = 64;
        let mut buf = vec![0 as libc::gid_t; n as usize];
        // SAFETY: buffer of n entries; n is updated with the count.
        if unsafe { libc::getgrouplist(name.as_ptr(), gid, buf.as_mut_ptr(), &mut n) } >= 0 {
            buf.truncate(n as usize);
            groups = buf;
        }
    }
    Some((uid, gid, groups))
}
