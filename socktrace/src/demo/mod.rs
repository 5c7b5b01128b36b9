//! `socktrace demo`: a client that makes every failure of the catalogue this machine can make
//! happen, traced by socktrace, so a newcomer sees real labels without a PID of their own.
//!
//! Each failure runs in a thread named after it (the name shows in socktrace's output). The
//! ones that need another network (SYN timeout, ICMP errors, no route) run in a network
//! namespace of their own thread (`unshare(CLONE_NEWNET)`): nothing is named or mounted, so
//! the kernel removes it when the thread ends, however the demo ends. Those need root and
//! `nft`; without them they are skipped with a note on stderr. The descriptor limit is the
//! whole process's: that case runs last, alone.

mod netns;

use crate::orchestrate::TraceRequest;
use anyhow::{Context as _, Result};
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd as _, RawFd};
use std::time::Duration;

/// Traces the demo client with the request's reporting options.
pub fn run(mut req: TraceRequest) -> Result<i32> {
    let exe = std::env::current_exe().context("locating socktrace's own binary")?;
    // The demo shows every kind of label, the routine ones and end of file too.
    req.session.all_errors = true;
    req.session.eof = true;
    req.command = vec![exe.to_string_lossy().into_owned(), "demo-client".into()];
    // The client builds network namespaces: it keeps root (it is socktrace's own code).
    req.keep_privileges = true;
    crate::orchestrate::trace(req)
}

/// One failure of the catalogue, made to happen in its own thread.
struct Case {
    /// The thread's name (at most 15 bytes: the kernel's limit), shown as socktrace's `comm`.
    name: &'static str,
    /// Needs a network namespace of its own (root and `nft`).
    isolated: bool,
    run: fn() -> Result<()>,
}

const CASES: &[Case] = &[
    Case { name: "refused", isolated: false, run: refused },
    Case { name: "refused-async", isolated: false, run: refused_nonblocking },
    Case { name: "peer-reset", isolated: false, run: peer_reset },
    Case { name: "peer-exited", isolated: false, run: peer_exited },
    Case { name: "peer-fin", isolated: false, run: peer_fin },
    Case { name: "shut-wr", isolated: false, run: write_after_shutdown },
    Case { name: "reset-queued", isolated: false, run: reset_before_accept },
    Case { name: "would-block", isolated: false, run: would_block },
    Case { name: "interrupted", isolated: false, run: interrupted },
    Case { name: "ss-kill", isolated: false, run: killed },
    Case { name: "icmp-port", isolated: true, run: icmp_port_unreachable },
    Case { name: "icmp-host", isolated: true, run: icmp_host_unreachable },
    Case { name: "syn-timeout", isolated: true, run: syn_timeout },
    Case { name: "data-timeout", isolated: true, run: established_timeout },
    Case { name: "no-route", isolated: true, run: no_route },
    Case { name: "ports-used-up", isolated: true, run: ports_used_up },
    Case { name: "queue-full", isolated: true, run: queue_full },
    Case { name: "gave-up-connect", isolated: true, run: gave_up_connecting },
    Case { name: "gave-up-reply", isolated: false, run: gave_up_waiting },
];

/// The workload, started by `run` once socktrace is attached: fails on purpose, every case
/// at once (the slowest, the SYN timeout, takes about 3 s).
pub fn client() -> Result<i32> {
    set_thread_name("demo-client");
    // SAFETY: ignoring SIGPIPE (writes after a reset fail with EPIPE instead of killing us),
    // and a do-nothing SIGUSR1 handler without SA_RESTART, so it interrupts a blocking read.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
    let isolation = netns::available();
    if let Err(why) = &isolation {
        crate::text::say(&format!("demo: skipping the cases that need a network namespace ({why})"));
    }
    let threads: Vec<_> = CASES
        .iter()
        .filter(|c| !c.isolated || isolation.is_ok())
        .map(|c| {
            std::thread::Builder::new().name(c.name.into()).spawn(move || {
                set_thread_name(c.name);
                let result = if c.isolated { netns::enter().and_then(|()| (c.run)()) } else { (c.run)() };
                if let Err(e) = result {
                    crate::text::say(&format!("demo: {}: {e:#}", c.name));
                }
            })
        })
        .collect::<std::io::Result<_>>()?;
    for t in threads {
        let _ = t.join();
    }
    // Last, alone: the descriptor limit is the whole process's.
    set_thread_name("fd-limit");
    if let Err(e) = out_of_descriptors() {
        crate::text::say(&format!("demo: fd-limit: {e:#}"));
    }
    Ok(0)
}

extern "C" fn on_signal(_: libc::c_int) {}

fn set_thread_name(name: &str) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr()) };
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// A loopback port with no listener (bound, then released).
fn closed_port() -> Result<SocketAddr> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let addr = l.local_addr()?;
    drop(l);
    Ok(addr)
}

/// A connected pair on loopback: (our end, the peer's end).
fn pair() -> Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let ours = TcpStream::connect(listener.local_addr()?)?;
    let (theirs, _) = listener.accept()?;
    Ok((ours, theirs))
}

fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) {
    // SAFETY: valid fd and a 4-byte option buffer.
    unsafe {
        libc::setsockopt(fd, level, name, (&value as *const i32).cast(), 4);
    }
}

fn set_linger_zero(fd: RawFd) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: valid fd and option buffer.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// connect() to a port nobody listens on: RST in SYN_SENT.
fn refused() -> Result<()> {
    let _ = TcpStream::connect(closed_port()?);
    Ok(())
}

/// The same, non-blocking, the way event loops connect: EINPROGRESS, then SO_ERROR.
fn refused_nonblocking() -> Result<()> {
    let SocketAddr::V4(v4) = closed_port()? else { unreachable!("bound on 127.0.0.1") };
    nonblocking_connect(v4, 1000);
    Ok(())
}

/// Connects without blocking, waits up to `wait_ms` for the result, reads it with SO_ERROR.
fn nonblocking_connect(to: SocketAddrV4, wait_ms: i32) {
    // SAFETY: plain socket calls on a descriptor owned here and closed at the end.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
        if fd < 0 {
            return;
        }
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: to.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(*to.ip()).to_be() },
            sin_zero: [0; 8],
        };
        libc::connect(fd, (&sin as *const libc::sockaddr_in).cast(), std::mem::size_of_val(&sin) as u32);
        let mut pfd = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
        libc::poll(&mut pfd, 1, wait_ms);
        let mut err: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, (&mut err as *mut libc::c_int).cast(), &mut len);
        libc::close(fd);
    }
}

/// The peer aborts (SO_LINGER 0): our read gets ECONNRESET, the write after it EPIPE.
fn peer_reset() -> Result<()> {
    let (mut ours, theirs) = pair()?;
    set_linger_zero(theirs.as_raw_fd());
    drop(theirs);
    sleep_ms(20);
    let _ = ours.read(&mut [0u8; 16]);
    let _ = ours.write(b"after reset");
    Ok(())
}

/// The peer exits (FIN), we write anyway, its closed socket answers RST: the next write EPIPE.
fn peer_exited() -> Result<()> {
    let (mut ours, theirs) = pair()?;
    drop(theirs);
    sleep_ms(20);
    let _ = ours.write(b"first write goes out");
    sleep_ms(20);
    let _ = ours.write(b"second write hits the RST");
    Ok(())
}

/// The peer closes its side: our read returns 0 (end of file).
fn peer_fin() -> Result<()> {
    let (mut ours, theirs) = pair()?;
    theirs.shutdown(std::net::Shutdown::Write)?;
    sleep_ms(20);
    let _ = ours.read(&mut [0u8; 16]);
    Ok(())
}

/// Our own shutdown(SHUT_WR), then a write: EPIPE.
fn write_after_shutdown() -> Result<()> {
    let (mut ours, _theirs) = pair()?;
    ours.shutdown(std::net::Shutdown::Write)?;
    let _ = ours.write(b"too late");
    Ok(())
}

/// A client resets a connection still in our accept queue: accept() returns it, the read fails.
fn reset_before_accept() -> Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    set_linger_zero(client.as_raw_fd());
    drop(client);
    sleep_ms(20);
    let (mut accepted, _) = listener.accept()?;
    let _ = accepted.read(&mut [0u8; 16]);
    Ok(())
}

/// A non-blocking read with nothing to read: EAGAIN (routine).
fn would_block() -> Result<()> {
    let (ours, _theirs) = pair()?;
    ours.set_nonblocking(true)?;
    let _ = (&ours).read(&mut [0u8; 16]);
    Ok(())
}

/// A blocking read interrupted by a signal: EINTR (routine).
fn interrupted() -> Result<()> {
    let (mut ours, _theirs) = pair()?;
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() };
    let poker = std::thread::spawn(move || {
        sleep_ms(100);
        // SAFETY: the target thread is alive: it is blocked in read() until this signal.
        unsafe { libc::pthread_kill(me, libc::SIGUSR1) };
    });
    let _ = ours.read(&mut [0u8; 16]);
    let _ = poker.join();
    Ok(())
}

/// A connection killed on this host (`ss -K`, SOCK_DESTROY) while we read: ECONNABORTED.
fn killed() -> Result<()> {
    let (mut ours, _theirs) = pair()?;
    let (src, dst) = (ours.local_addr()?, ours.peer_addr()?);
    let killer = std::thread::spawn(move || {
        sleep_ms(100);
        std::process::Command::new("ss")
            .args(["-K", "-t", "src", &src.to_string(), "dst", &dst.to_string()])
            .stdout(std::process::Stdio::null())
            .status()
    });
    let _ = ours.read(&mut [0u8; 16]);
    match killer.join() {
        Ok(Ok(s)) if s.success() => Ok(()),
        Ok(Ok(s)) => anyhow::bail!("ss -K failed ({s}): the kernel may lack CONFIG_INET_DIAG_DESTROY"),
        _ => anyhow::bail!("ss (iproute2) is not installed"),
    }
}

/// A firewall rejects the SYN with ICMP port-unreachable: the same ECONNREFUSED as an RST,
/// told apart by its cause.
fn icmp_port_unreachable() -> Result<()> {
    netns::nft("tcp dport 9999 reject with icmpx type port-unreachable")?;
    let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, 9999));
    Ok(())
}

/// A firewall answers with ICMP host-unreachable: EHOSTUNREACH in SYN_SENT.
fn icmp_host_unreachable() -> Result<()> {
    netns::nft("tcp dport 9997 reject with icmpx type host-unreachable")?;
    let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, 9997));
    Ok(())
}

/// The SYNs are dropped: ETIMEDOUT after one retransmission (TCP_SYNCNT 1, about 3 s).
fn syn_timeout() -> Result<()> {
    netns::nft("tcp dport 9998 drop")?;
    // SAFETY: a fresh socket, owned and closed here.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        anyhow::ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_SYNCNT, 1);
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 9998u16.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be() },
            sin_zero: [0; 8],
        };
        libc::connect(fd, (&sin as *const libc::sockaddr_in).cast(), std::mem::size_of_val(&sin) as u32);
        libc::close(fd);
    }
    Ok(())
}

/// A program's own connect timeout: a non-blocking connect whose SYNs a rule drops, waited
/// for 1.2 s (as curl --connect-timeout or a Java HttpClient would), then closed. No call
/// fails; socktrace reports the abandoned connect on the close.
fn gave_up_connecting() -> Result<()> {
    netns::nft("tcp dport 9997 drop")?;
    // SAFETY: a fresh socket, owned and closed here; poll on it with a stack pollfd.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
        anyhow::ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 9997u16.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be() },
            sin_zero: [0; 8],
        };
        libc::connect(fd, (&sin as *const libc::sockaddr_in).cast(), std::mem::size_of_val(&sin) as u32);
        let mut pfd = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
        libc::poll(&mut pfd, 1, 1200);
        libc::close(fd);
    }
    Ok(())
}

/// A program's own read timeout: a request to a server that acknowledges it and never
/// answers, read with a 1.2 s timeout (SO_RCVTIMEO, as a client library would set), then
/// closed. socktrace reports the silence on the close.
fn gave_up_waiting() -> Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let addr = listener.local_addr()?;
    let silent = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept()?;
        let _ = conn.read(&mut [0u8; 64]);
        sleep_ms(2000);
        Ok::<(), std::io::Error>(())
    });
    let mut client = TcpStream::connect(addr)?;
    client.write_all(b"GET /slow HTTP/1.1\r\n\r\n")?;
    client.set_read_timeout(Some(Duration::from_millis(1200)))?;
    let _ = client.read(&mut [0u8; 64]);
    drop(client);
    let _ = silent.join();
    Ok(())
}

/// An established connection whose packets start being dropped: the data is retransmitted
/// until TCP_USER_TIMEOUT (1 s) gives up, and the read fails with ETIMEDOUT.
fn established_timeout() -> Result<()> {
    let (mut ours, _theirs) = pair()?;
    setsockopt_int(ours.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 1000);
    let port = ours.peer_addr()?.port();
    netns::nft(&format!("tcp dport {port} drop\n  tcp sport {port} drop"))?;
    let _ = ours.write(b"never acknowledged");
    let _ = ours.read(&mut [0u8; 16]);
    Ok(())
}

/// connect() through an `unreachable` route (EHOSTUNREACH), and with no route at all
/// (ENETUNREACH): refused locally, before any packet.
fn no_route() -> Result<()> {
    netns::unreachable_route(Ipv4Addr::new(10, 77, 0, 0), 24)?;
    let _ = TcpStream::connect((Ipv4Addr::new(10, 77, 0, 1), 80));
    let _ = TcpStream::connect((Ipv4Addr::new(10, 78, 0, 1), 80));
    Ok(())
}

/// The namespace's ephemeral range cut to four ports, four connections to one listener: the
/// fifth connect fails with EADDRNOTAVAIL.
fn ports_used_up() -> Result<()> {
    std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "40000 40003")
        .context("setting this namespace's ip_local_port_range")?;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 9000))?;
    let mut held = Vec::new();
    for _ in 0..5 {
        match TcpStream::connect((Ipv4Addr::LOCALHOST, 9000)) {
            Ok(s) => held.push((s, listener.accept()?)),
            Err(_) => break,
        }
    }
    // Held a moment, as a real client would be: socktrace reads who holds the ports then.
    sleep_ms(300);
    Ok(())
}

/// A listener with a backlog of 1 that never accepts: two connections fill its queue, the
/// kernel drops the third's SYNs, and its connect times out (TCP_SYNCNT 1, about 3 s).
fn queue_full() -> Result<()> {
    // SAFETY: plain socket calls on descriptors owned here (the listener is closed at the end).
    let l = unsafe {
        let l = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        anyhow::ensure!(l >= 0, "socket: {}", std::io::Error::last_os_error());
        let sin = sockaddr_in(Ipv4Addr::LOCALHOST, 9001);
        anyhow::ensure!(
            libc::bind(l, (&sin as *const libc::sockaddr_in).cast(), std::mem::size_of_val(&sin) as u32) == 0,
            "bind: {}",
            std::io::Error::last_os_error()
        );
        libc::listen(l, 1);
        l
    };
    let waiting: Vec<TcpStream> =
        (0..2).map(|_| TcpStream::connect((Ipv4Addr::LOCALHOST, 9001))).collect::<std::io::Result<_>>()?;
    std::thread::sleep(Duration::from_millis(20));
    // SAFETY: a fresh socket, owned and closed here.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_SYNCNT, 1);
        let sin = sockaddr_in(Ipv4Addr::LOCALHOST, 9001);
        libc::connect(fd, (&sin as *const libc::sockaddr_in).cast(), std::mem::size_of_val(&sin) as u32);
        // The listener stays a moment, its queue still full: socktrace looks at it then.
        sleep_ms(300);
        libc::close(fd);
        libc::close(l);
    }
    drop(waiting);
    Ok(())
}

/// Clients wait in the accept queue while the process has every descriptor its
/// RLIMIT_NOFILE allows open: accept4() fails with EMFILE. The limit is the whole process's,
/// so this runs last, and puts the limit back.
fn out_of_descriptors() -> Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let addr = listener.local_addr()?;
    let _queued: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr)).collect::<std::io::Result<_>>()?;
    std::thread::sleep(Duration::from_millis(20));
    let mut saved = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with valid pointers; dup only finds the lowest free fd.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut saved);
        let d = libc::dup(0);
        libc::close(d);
        let tight = libc::rlimit { rlim_cur: d as u64, rlim_max: saved.rlim_max };
        libc::setrlimit(libc::RLIMIT_NOFILE, &tight);
        libc::accept4(listener.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC);
        libc::setrlimit(libc::RLIMIT_NOFILE, &saved);
    }
    Ok(())
}

fn sockaddr_in(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    }
}
