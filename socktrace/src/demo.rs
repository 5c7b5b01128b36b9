//! `socktrace demo`: a small client that makes the classic socket failures happen on loopback,
//! traced by socktrace, so a newcomer sees real labels without a PID of their own.

use crate::cli::OutputArgs;
use anyhow::{Context as _, Result};
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd as _;
use std::time::Duration;

pub fn run(mut output: OutputArgs) -> Result<i32> {
    let exe = std::env::current_exe().context("locating socktrace's own binary")?;
    // The demo shows every kind of label, the routine ones too.
    output.all_errors = true;
    let argv = vec![exe.to_string_lossy().into_owned(), "demo-client".into()];
    crate::target::run_command(&argv, Vec::new(), crate::cli::SelectArgs::default(), output)
}

/// The workload, started by `run` once socktrace is attached: fails on purpose.
pub fn client() -> Result<i32> {
    // Named so its lines are easy to tell from socktrace's own.
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"demo-client".as_ptr()) };
    let closed = closed_port()?;

    // 1. Blocking connect to a port nobody listens on: RST in SYN_SENT.
    for _ in 0..2 {
        let _ = TcpStream::connect(closed);
    }

    // 2. The same, non-blocking, the way event loops connect: the errno comes via SO_ERROR.
    nonblocking_connect(closed);

    // 3. The peer aborts the connection (SO_LINGER 0): our read gets ECONNRESET, then EPIPE.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let mut client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    set_linger_zero(&server);
    drop(server);
    std::thread::sleep(Duration::from_millis(20));
    let _ = client.read(&mut [0u8; 16]);
    let _ = client.write(b"after reset");

    // 4. The peer exits (FIN), we write anyway, its closed socket answers RST: EPIPE.
    let mut client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    drop(server);
    std::thread::sleep(Duration::from_millis(20));
    let _ = client.write(b"first write goes out");
    std::thread::sleep(Duration::from_millis(20));
    let _ = client.write(b"second write hits the RST");

    // 5. A non-blocking read with nothing to read yet: EAGAIN (routine, shown by the demo).
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (_server, _) = listener.accept()?;
    client.set_nonblocking(true)?;
    let _ = (&client).read(&mut [0u8; 16]);
    Ok(0)
}

/// A loopback port with no listener (bound, then released).
fn closed_port() -> Result<SocketAddr> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let addr = l.local_addr()?;
    drop(l);
    Ok(addr)
}

fn set_linger_zero(s: &TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: valid fd and option buffer.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn nonblocking_connect(addr: SocketAddr) {
    let SocketAddr::V4(v4) = addr else { return };
    // SAFETY: plain socket calls on a descriptor owned here and closed at the end.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
        if fd < 0 {
            return;
        }
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
            sin_zero: [0; 8],
        };
        libc::connect(fd, (&sin as *const libc::sockaddr_in).cast(), std::mem::size_of_val(&sin) as u32);
        let mut pfd = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
        libc::poll(&mut pfd, 1, 1000);
        let mut err: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, (&mut err as *mut libc::c_int).cast(), &mut len);
        libc::close(fd);
    }
}
