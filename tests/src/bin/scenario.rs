//! The traced side of the end-to-end tests: a client that makes one kind of socket failure
//! happen for real, and reports what it saw itself, so the tests can check socktrace's
//! account against the program's own.
//!
//! Protocol: `scenario [--netns NAME] NAME [ARGS]` sets up, prints `ready` on stdout, waits
//! for a line on stdin (socktrace is attached), runs, prints one JSON line per call it made
//! (`{"step":..,"fd":..,"errno":..}`), and exits 0.
//!
//! The other end of a connection is a separate, untraced process (`scenario peer ...`), so
//! its packets are handled while *it* is on the CPU: attribution must go through the socket.

use anyhow::{bail, Context as _, Result};
use serde_json::json;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--netns") {
        if args.len() < 2 {
            fail("--netns needs a name");
        }
        let ns = args.remove(1);
        args.remove(0);
        if let Err(e) = enter_netns(&ns) {
            fail(&format!("{e:#}"));
        }
    }
    if args.first().map(String::as_str) == Some("--comm") && args.len() >= 2 {
        // The task name socktrace sees (and must escape): any bytes, as a hostile program would.
        let name = unescape(&args.remove(1));
        args.remove(0);
        let mut buf = [0u8; 16];
        let n = name.len().min(15);
        buf[..n].copy_from_slice(&name[..n]);
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr()) };
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match a.as_slice() {
        ["peer", addr] => peer(addr),
        ["connect-refused-and-ok"] => connect_refused_and_ok(),
        ["connect", addr] => connect_once(addr),
        ["nonblocking-connect", addr] => nonblocking_connect(addr),
        ["give-up-connect", addr, ms] => give_up_connect(addr, ms.parse().unwrap_or(1000)),
        ["reset", call, ip] => reset_then(call, ip),
        ["forgotten"] => forgotten(),
        ["zero-window"] => zero_window(),
        ["unread-close"] => unread_close(),
        ["disconnect"] => disconnect(),
        ["borrowed-socket"] => borrowed_socket(),
        ["blind-reset"] => blind_reset(),
        ["premature-exit"] => premature_exit(),
        ["copy-reset", call] => copy_reset(call),
        ["uring-refused"] => uring::refused(),
        ["uring-reset", how] => uring::reset(how),
        ["uring-accept-fd-limit"] => uring::accept_fd_limit(),
        ["uring-cancel"] => uring::cancel(),
        ["so-error-accepted"] => so_error_accepted(),
        ["before-trace", what] => before_trace(what),
        ["udp-refused", call] => udp_refused(call),
        ["udp-too-big"] => udp_too_big(),
        ["connector", addr] => connector(addr),
        ["shut-wr"] => shut_wr(),
        ["peer-fin"] => peer_fin(),
        ["established-timeout", ip] => established_timeout(ip),
        ["keepalive-timeout"] => keepalive_timeout(),
        ["ss-kill"] => ss_kill(false),
        ["ss-kill-peer"] => ss_kill(true),
        ["accept-after-reset"] => accept_after_reset(),
        ["would-block"] => would_block(),
        ["interrupted"] => interrupted(),
        ["not-sockets"] => not_sockets(),
        ["thread-refused"] => thread_refused(),
        ["veth-reset", peer_netns, addr] => veth_reset(peer_netns, addr, None),
        ["veth-reset", peer_netns, addr, dial] => veth_reset(peer_netns, addr, Some(dial)),
        ["fork-refused"] => fork_refused(),
        ["refused-many", n] => refused_many(n.parse().unwrap_or(1)),
        ["refused-while-attaching", sockets, every_ms] => {
            refused_while_attaching(sockets.parse().unwrap_or(0), every_ms.parse().unwrap_or(10))
        }
        ["spread", peers, cgroups] => spread(peers.parse().unwrap_or(1), cgroups),
        ["bench-echo", addr, n] => bench_echo(addr, n.parse().unwrap_or(1000)),
        ["bench-storm", n] => bench_storm(n.parse().unwrap_or(1000)),
        ["bench-uring-storm", n] => uring::bench_storm(n.parse().unwrap_or(1000)),
        ["bench-refused", n] => bench_refused(n.parse().unwrap_or(1000)),
        ["bench-reset", addr, n] => bench_reset(addr, n.parse().unwrap_or(1000)),
        ["bench-dropped", n] => bench_dropped(n.parse().unwrap_or(1000)),
        ["echo-server"] => serve(false),
        ["abort-server"] => serve(true),
        ["overflow", n] => overflow(n.parse().unwrap_or(1000)),
        ["fd-limit"] => fd_limit(),
        ["socket-fd-limit"] => socket_fd_limit(),
        ["port-exhaustion", addr] => port_exhaustion(addr),
        ["queue-full"] => queue_full(false),
        ["queue-full", "before-trace"] => queue_full(true),
        ["abort-on-overflow"] => abort_on_overflow(),
        ["overflow-client", addr] => parse_addr(addr).and_then(|dest| {
            ready_then_wait();
            overflow_client(dest)
        }),
        ["send-memory"] => send_memory(),
        ["storm", rate, seconds] => storm(rate.parse().unwrap_or(1000), seconds.parse().unwrap_or(10)),
        ["exec", rest @ ..] => exec_into(rest),
        ["whoami-refused"] => whoami_refused(),
        ["exit", code] => {
            ready_then_wait();
            std::process::exit(code.parse().unwrap_or(1))
        }
        _ => fail(&format!("unknown scenario {a:?}")),
    };
    if let Err(e) = result {
        fail(&format!("{a:?}: {e:#}"));
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("scenario: {msg}");
    std::process::exit(1);
}

fn enter_netns(name: &str) -> Result<()> {
    let path = format!("/run/netns/{name}");
    let f = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: valid fd of a network namespace; affects this (still single-threaded) process.
    if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) } != 0 {
        bail!("setns({name}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// `\xNN` escapes to bytes, so a test can pass any name on the command line.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1] == b'x' {
            if let Ok(v) = u8::from_str_radix(&s[i + 2..i + 4], 16) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Prints `ready` and blocks until the test says go (one line on stdin). With
/// SCENARIO_NO_WAIT set (started by `socktrace -- ...`, already traced), runs at once.
fn ready_then_wait() {
    if std::env::var_os("SCENARIO_NO_WAIT").is_some() {
        return;
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
}

fn report(step: &str, fd: i32, errno: i32, extra: serde_json::Value) {
    let mut v = json!({ "step": step, "fd": fd, "errno": errno });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    println!("{v}");
    let _ = std::io::stdout().flush();
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// errno of a libc call's result (0 when it succeeded).
fn check(rc: isize) -> i32 {
    if rc < 0 {
        errno()
    } else {
        0
    }
}

fn gettid() -> i32 {
    // SAFETY: no arguments.
    unsafe { libc::gettid() }
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

// ------------------------------------------------------------------------------------------
// Raw sockets: every call is made by hand so the test knows exactly which syscall ran.

struct SockAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
    family: i32,
}

fn sockaddr(addr: SocketAddr) -> SockAddr {
    // SAFETY: zeroed sockaddr_storage is valid; we fill the matching variant.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            SockAddr { storage, len: std::mem::size_of::<libc::sockaddr_in>() as u32, family: libc::AF_INET }
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: v6.ip().octets() },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            SockAddr { storage, len: std::mem::size_of::<libc::sockaddr_in6>() as u32, family: libc::AF_INET6 }
        }
    }
}

fn tcp_socket(family: i32, flags: i32) -> i32 {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | flags, 0) };
    assert!(fd >= 0, "socket: {}", errno());
    fd
}

fn connect_fd(fd: i32, addr: SocketAddr) -> i32 {
    let sa = sockaddr(addr);
    // SAFETY: valid fd and address.
    check(unsafe { libc::connect(fd, (&sa.storage as *const libc::sockaddr_storage).cast(), sa.len) } as isize)
}

/// A blocking connect on a fresh socket: (fd, errno or 0). The fd stays open.
fn connect_blocking(addr: SocketAddr) -> (i32, i32) {
    let fd = tcp_socket(sockaddr(addr).family, 0);
    (fd, connect_fd(fd, addr))
}

fn setsockopt_int(fd: i32, level: i32, opt: i32, v: i32) {
    // SAFETY: valid fd and option buffer.
    let rc = unsafe { libc::setsockopt(fd, level, opt, (&v as *const i32).cast(), 4) };
    assert_eq!(rc, 0, "setsockopt({level},{opt}): {}", errno());
}

fn local_port(fd: i32) -> u16 {
    // SAFETY: valid fd; the storage is large enough for any address.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    unsafe { libc::getsockname(fd, (&mut ss as *mut libc::sockaddr_storage).cast(), &mut len) };
    // Both sockaddr_in and sockaddr_in6 keep the port right after the family.
    let port = unsafe { *((&ss as *const libc::sockaddr_storage as *const u8).add(2) as *const u16) };
    u16::from_be(port)
}

fn close(fd: i32) {
    // SAFETY: fd owned by the caller.
    unsafe { libc::close(fd) };
}

fn loopback(ip: &str) -> IpAddr {
    match ip {
        "v6" => "::1".parse().unwrap(),
        _ => "127.0.0.1".parse().unwrap(),
    }
}

fn parse_addr(addr: &str) -> Result<SocketAddr> {
    addr.parse().with_context(|| format!("bad address {addr:?}"))
}

// ------------------------------------------------------------------------------------------
// The peer: a separate process that listens, accepts, and closes or aborts on command.

fn peer(addr: &str) -> Result<()> {
    let addr = parse_addr(addr)?;
    let sa = sockaddr(addr);
    let l = tcp_socket(sa.family, 0);
    setsockopt_int(l, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
    // SAFETY: valid fd and address.
    if unsafe { libc::bind(l, (&sa.storage as *const libc::sockaddr_storage).cast(), sa.len) } != 0 {
        bail!("peer bind {addr}: {}", std::io::Error::last_os_error());
    }
    unsafe { libc::listen(l, 16) };
    println!("port {} pid {}", local_port(l), std::process::id());
    let _ = std::io::stdout().flush();
    let mut conns: Vec<i32> = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        match line.trim() {
            "accept" => {
                // SAFETY: valid listening fd.
                let c = unsafe { libc::accept(l, std::ptr::null_mut(), std::ptr::null_mut()) };
                assert!(c >= 0, "peer accept: {}", errno());
                conns.push(c);
            }
            "abort" => {
                let c = conns.pop().expect("a connection to abort");
                set_linger_zero(c);
                close(c);
            }
            "close" => close(conns.pop().expect("a connection to close")),
            "exit" => return Ok(()),
            // A new backlog for the listener (listen() again changes it).
            cmd if cmd.starts_with("backlog ") => {
                let n: i32 = cmd["backlog ".len()..].parse()?;
                // SAFETY: valid listening fd.
                unsafe { libc::listen(l, n) };
            }
            other => bail!("peer: unknown command {other:?}"),
        }
        println!("ok");
        let _ = std::io::stdout().flush();
    }
    Ok(())
}

struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    addr: SocketAddr,
    pid: u32,
}

impl Peer {
    fn start(ip: IpAddr) -> Result<Peer> {
        Self::start_at(SocketAddr::new(ip, 0))
    }

    fn start_at(addr: SocketAddr) -> Result<Peer> {
        Self::start_in(None, addr)
    }

    /// Starts the peer listening at `addr`, in network namespace `netns` if given.
    fn start_in(netns: Option<&str>, addr: SocketAddr) -> Result<Peer> {
        let mut cmd = Command::new(std::env::current_exe()?);
        if let Some(ns) = netns {
            cmd.args(["--netns", ns]);
        }
        let mut child = cmd.args(["peer", &addr.to_string()]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let parts: Vec<&str> = line.split_whitespace().collect();
        let (Some(port), Some(pid)) = (parts.get(1), parts.get(3)) else {
            bail!("peer did not start: {line:?}");
        };
        let addr = SocketAddr::new(addr.ip(), port.parse()?);
        Ok(Peer { child, stdin, stdout, addr, pid: pid.parse()? })
    }

    fn cmd(&mut self, c: &str) -> Result<()> {
        writeln!(self.stdin, "{c}")?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        if line.trim() != "ok" {
            bail!("peer answered {line:?} to {c}");
        }
        Ok(())
    }

    /// A connection to the peer, accepted on its side: our fd.
    fn connected(&mut self) -> Result<i32> {
        let (fd, e) = connect_blocking(self.addr);
        if e != 0 {
            bail!("connect to peer {}: errno {e}", self.addr);
        }
        self.cmd("accept")?;
        Ok(fd)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "exit");
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------------------------------
// Scenarios

/// A connect to a closed loopback port (refused: RST in SYN_SENT), then one that succeeds.
fn connect_refused_and_ok() -> Result<()> {
    let closed = closed_port(loopback("v4"))?;
    let open = std::net::TcpListener::bind("127.0.0.1:0")?;
    ready_then_wait();
    let (fd, e) = connect_blocking(closed);
    report("refused", fd, e, json!({ "dport": closed.port() }));
    let (fd, e) = connect_blocking(open.local_addr()?);
    report("ok", fd, e, json!({ "dport": open.local_addr()?.port() }));
    Ok(())
}

fn closed_port(ip: IpAddr) -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind(SocketAddr::new(ip, 0))?;
    let a = l.local_addr()?;
    drop(l);
    Ok(a)
}

/// One blocking connect to ADDR (`closed` as the port picks a closed loopback one).
fn connect_once(addr: &str) -> Result<()> {
    let addr = match addr.strip_suffix(":closed") {
        Some(ip) => closed_port(ip.trim_matches(|c| c == '[' || c == ']').parse()?)?,
        None => parse_addr(addr)?,
    };
    ready_then_wait();
    let started = std::time::Instant::now();
    let (fd, e) = connect_blocking(addr);
    report(
        "connect",
        fd,
        e,
        json!({ "dport": addr.port(), "daddr": addr.ip().to_string(), "ms": started.elapsed().as_millis() as u64 }),
    );
    Ok(())
}

/// The event-loop way: EINPROGRESS, wait for writability, read the result with SO_ERROR.
fn nonblocking_connect(addr: &str) -> Result<()> {
    let addr = closed_port(parse_addr(addr)?.ip())?;
    ready_then_wait();
    let fd = tcp_socket(sockaddr(addr).family, libc::SOCK_NONBLOCK);
    let e = connect_fd(fd, addr);
    report("connect", fd, e, json!({ "dport": addr.port() }));
    let mut pfd = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
    // SAFETY: valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, 5000) };
    let mut err: libc::c_int = 0;
    let mut len = 4 as libc::socklen_t;
    // SAFETY: valid fd and buffers.
    unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, (&mut err as *mut i32).cast(), &mut len) };
    report("so_error", fd, err, json!({ "dport": addr.port() }));
    Ok(())
}

/// What a program with its own connect timeout does: a non-blocking connect, writability
/// awaited `ms` milliseconds, then the socket closed with no call failing.
fn give_up_connect(addr: &str, ms: i32) -> Result<()> {
    let addr = parse_addr(addr)?;
    ready_then_wait();
    let fd = tcp_socket(sockaddr(addr).family, libc::SOCK_NONBLOCK);
    let e = connect_fd(fd, addr);
    report("connect", fd, e, json!({ "dport": addr.port() }));
    let mut pfd = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
    // SAFETY: valid pollfd.
    let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
    // SAFETY: this scenario's own descriptor, closed once.
    unsafe { libc::close(fd) };
    report("gave_up", fd, 0, json!({ "writable": ready > 0 }));
    Ok(())
}

/// Makes the call named `call` on `fd` and returns its errno (0 when it succeeded).
fn do_call(call: &str, fd: i32) -> i32 {
    let mut buf = [0u8; 64];
    let data = b"payload";
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let mut out_iov = libc::iovec { iov_base: data.as_ptr() as *mut _, iov_len: data.len() };
    // SAFETY: every pointer below refers to live local buffers of the stated sizes.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        let flags = libc::MSG_NOSIGNAL;
        let rc: isize = match call {
            "read" => libc::read(fd, buf.as_mut_ptr().cast(), buf.len()),
            "readv" => libc::readv(fd, &iov, 1),
            "recvfrom" => {
                libc::recvfrom(fd, buf.as_mut_ptr().cast(), buf.len(), 0, std::ptr::null_mut(), std::ptr::null_mut())
            }
            "recvmsg" => {
                msg.msg_iov = &mut iov;
                msg.msg_iovlen = 1;
                libc::recvmsg(fd, &mut msg, 0)
            }
            "recvmmsg" => {
                let mut mm: libc::mmsghdr = std::mem::zeroed();
                mm.msg_hdr.msg_iov = &mut iov;
                mm.msg_hdr.msg_iovlen = 1;
                libc::recvmmsg(fd, &mut mm, 1, 0, std::ptr::null_mut()) as isize
            }
            "write" => libc::write(fd, data.as_ptr().cast(), data.len()),
            "writev" => libc::writev(fd, &out_iov, 1),
            "sendto" => libc::sendto(fd, data.as_ptr().cast(), data.len(), flags, std::ptr::null(), 0),
            "sendmsg" => {
                msg.msg_iov = &mut out_iov;
                msg.msg_iovlen = 1;
                libc::sendmsg(fd, &msg, flags)
            }
            "sendmmsg" => {
                let mut mm: libc::mmsghdr = std::mem::zeroed();
                mm.msg_hdr.msg_iov = &mut out_iov;
                mm.msg_hdr.msg_iovlen = 1;
                libc::sendmmsg(fd, &mut mm, 1, flags) as isize
            }
            other => panic!("unknown call {other}"),
        };
        check(rc)
    }
}

/// The peer aborts (SO_LINGER {1,0}: RST); then CALL fails with the reset, and a write after
/// it gets EPIPE.
fn reset_then(call: &str, ip: &str) -> Result<()> {
    let mut peer = Peer::start(loopback(ip))?;
    let fd = peer.connected()?;
    ready_then_wait();
    peer.cmd("abort")?;
    sleep_ms(50);
    let e = do_call(call, fd);
    report(call, fd, e, json!({ "dport": peer.addr.port(), "sport": local_port(fd), "peer_pid": peer.pid }));
    let e = do_call("sendto", fd);
    report("after", fd, e, json!({}));
    Ok(())
}

/// The peer host forgets the connection: its RST is dropped on the way out (nft, in this
/// namespace) as it aborts the connection, and it exits (no listener left). Our socket still
/// believes in the connection; our next write reaches no socket at all, whose kernel answers
/// with an RST without ACK, and the read after it fails.
fn forgotten() -> Result<()> {
    let mut peer = Peer::start(loopback("v4"))?;
    let fd = peer.connected()?;
    let port = peer.addr.port();
    ready_then_wait();
    nft(&format!(
        "table inet socktrace_forget {{\n chain output {{\n  type filter hook output priority 0;\n  tcp sport {port} tcp flags & rst == rst drop\n }}\n}}\n"
    ))?;
    peer.cmd("abort")?;
    drop(peer);
    nft("delete table inet socktrace_forget\n")?;
    // Long enough that the dropped RST is not taken for the one our write draws.
    sleep_ms(200);
    report("write", fd, do_call("write", fd), json!({ "dport": port }));
    sleep_ms(50);
    report("read", fd, do_call("read", fd), json!({}));
    Ok(())
}

/// The peer closes its socket with our data unread: its kernel resets the connection (RFC
/// 2525), and our read fails with ECONNRESET.
fn unread_close() -> Result<()> {
    let mut peer = Peer::start(loopback("v4"))?;
    let fd = peer.connected()?;
    ready_then_wait();
    report("write", fd, do_call("write", fd), json!({}));
    sleep_ms(50);
    peer.cmd("close")?;
    sleep_ms(50);
    report("read", fd, do_call("read", fd), json!({ "peer_pid": peer.pid }));
    Ok(())
}

/// Our own RST: the process disconnects its connected socket (connect() with AF_UNSPEC), which
/// resets the connection; the write after it fails.
fn disconnect() -> Result<()> {
    let mut peer = Peer::start(loopback("v4"))?;
    let fd = peer.connected()?;
    ready_then_wait();
    let unspec = libc::sockaddr { sa_family: libc::AF_UNSPEC as u16, sa_data: [0; 14] };
    // SAFETY: valid fd and address.
    let rc = unsafe { libc::connect(fd, &unspec, std::mem::size_of::<libc::sockaddr>() as u32) };
    report("disconnect", fd, check(rc as isize), json!({ "dport": peer.addr.port() }));
    sleep_ms(20);
    report("write", fd, do_call("write", fd), json!({}));
    Ok(())
}

/// A socket that came into the process from outside the trace: a child (forked after the
/// attach, so not traced without -f) connects, and the process takes the socket with
/// pidfd_getfd. Nothing was recorded on it; when the peer aborts, the read's cause is unknown,
/// and the explanation says why.
fn borrowed_socket() -> Result<()> {
    let mut peer = Peer::start(loopback("v4"))?;
    let addr = peer.addr;
    ready_then_wait();
    let mut pipe = [0i32; 2];
    // SAFETY: a valid two-int array.
    check(unsafe { libc::pipe(pipe.as_mut_ptr()) } as isize);
    // SAFETY: the child only makes plain syscalls and exits.
    let child = unsafe { libc::fork() };
    if child == 0 {
        let (fd, e) = connect_blocking(addr);
        let msg = if e == 0 { fd } else { -1 };
        // SAFETY: valid fds and buffers; the child waits to be killed.
        unsafe {
            libc::write(pipe[1], (&msg as *const i32).cast(), 4);
            libc::pause();
            libc::_exit(0);
        }
    }
    let mut child_fd = -1i32;
    // SAFETY: a valid fd and a 4-byte buffer.
    unsafe { libc::read(pipe[0], (&mut child_fd as *mut i32).cast(), 4) };
    if child_fd < 0 {
        bail!("the child could not connect");
    }
    // SAFETY: plain syscalls (pidfd_open, pidfd_getfd) with valid arguments.
    let fd = unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, child, 0) as i32;
        libc::syscall(libc::SYS_pidfd_getfd, pidfd, child_fd, 0) as i32
    };
    if fd < 0 {
        bail!("pidfd_getfd: errno {}", errno());
    }
    peer.cmd("accept")?;
    peer.cmd("abort")?;
    sleep_ms(50);
    report("read", fd, do_call("read", fd), json!({}));
    // SAFETY: our own child.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    Ok(())
}

/// The peer stops reading: its receive window closes, our writes fill the send buffer and
/// block, and TCP_USER_TIMEOUT (1 s) ends the zero-window probing (the peer answers every
/// probe with a closed window): the write fails with ETIMEDOUT. Small buffers (the test sets
/// the namespace's tcp_rmem/tcp_wmem) make the window close at once.
fn zero_window() -> Result<()> {
    let mut peer = Peer::start(loopback("v4"))?;
    let fd = peer.connected()?;
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 1000);
    // Bounded wait, on a kernel whose user timeout would not end zero-window probing.
    let limit = libc::timeval { tv_sec: 20, tv_usec: 0 };
    // SAFETY: valid fd and option value.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&limit as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    ready_then_wait();
    let buf = vec![0u8; 65536];
    let started = std::time::Instant::now();
    let mut e = 0;
    for _ in 0..10_000 {
        // SAFETY: valid fd and buffer.
        if unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) } < 0 {
            e = errno();
            break;
        }
    }
    report("write", fd, e, json!({ "ms": started.elapsed().as_millis() as u64 }));
    Ok(())
}

/// A blind reset: an RST for our connection, injected with a raw socket, at a sequence number
/// that is (all but surely) outside our receive window. Linux drops it and the connection
/// lives on; then the peer really aborts it, and the read fails with ECONNRESET.
fn blind_reset() -> Result<()> {
    let mut peer = Peer::start(loopback("v4"))?;
    let fd = peer.connected()?;
    let (ours, theirs) = (local_port(fd), peer.addr.port());
    ready_then_wait();
    // A sequence number half the sequence space away from anything: outside any window.
    let seq = (std::process::id().wrapping_mul(2654435761)) ^ 0x8000_0000;
    inject_rst_v4(theirs, ours, seq)?;
    sleep_ms(50);
    report("alive", fd, 0, json!({ "seq": seq }));
    peer.cmd("abort")?;
    sleep_ms(50);
    report("read", fd, do_call("read", fd), json!({}));
    Ok(())
}

/// Sends one TCP RST 127.0.0.1:`sport` -> 127.0.0.1:`dport` with sequence `seq` (raw socket,
/// our own IPv4 and TCP headers, checksums computed).
fn inject_rst_v4(sport: u16, dport: u16, seq: u32) -> Result<()> {
    let mut pkt = [0u8; 40];
    // IPv4: version 4, 20-byte header, total 40, TTL 64, TCP, 127.0.0.1 -> 127.0.0.1.
    pkt[0] = 0x45;
    pkt[2..4].copy_from_slice(&40u16.to_be_bytes());
    pkt[8] = 64;
    pkt[9] = libc::IPPROTO_TCP as u8;
    pkt[12..16].copy_from_slice(&[127, 0, 0, 1]);
    pkt[16..20].copy_from_slice(&[127, 0, 0, 1]);
    let ip_sum = checksum(&pkt[..20], 0);
    pkt[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    // TCP: ports, sequence, 20-byte header, RST, window 0.
    pkt[20..22].copy_from_slice(&sport.to_be_bytes());
    pkt[22..24].copy_from_slice(&dport.to_be_bytes());
    pkt[24..28].copy_from_slice(&seq.to_be_bytes());
    pkt[32] = 5 << 4;
    pkt[33] = 0x04;
    // The pseudo-header: addresses, protocol, TCP length.
    let pseudo: u32 = 0x7f00 + 0x0001 + 0x7f00 + 0x0001 + libc::IPPROTO_TCP as u32 + 20;
    let tcp_sum = checksum(&pkt[20..], pseudo);
    pkt[36..38].copy_from_slice(&tcp_sum.to_be_bytes());
    // SAFETY: plain syscalls on a socket we own; the buffer and address are valid.
    unsafe {
        let raw = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
        if raw < 0 {
            bail!("raw socket: errno {}", errno());
        }
        let sa = sockaddr("127.0.0.1:0".parse()?);
        let sent = libc::sendto(
            raw,
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            (&sa.storage as *const libc::sockaddr_storage).cast(),
            sa.len,
        );
        libc::close(raw);
        if sent != pkt.len() as isize {
            bail!("raw sendto: errno {}", errno());
        }
    }
    Ok(())
}

/// The Internet checksum of `data`, starting from `sum` (a pseudo-header's words).
fn checksum(data: &[u8], mut sum: u32) -> u16 {
    for pair in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Loads an nftables ruleset in this namespace.
fn nft(rules: &str) -> Result<()> {
    let status = Command::new("nft").args(["-f", "-"]).stdin(Stdio::piped()).spawn().and_then(|mut c| {
        c.stdin.take().unwrap().write_all(rules.as_bytes())?;
        c.wait()
    })?;
    if !status.success() {
        bail!("nft failed: {status}");
    }
    Ok(())
}

/// The copy paths on a connection the peer aborted: `sendfile` (a file into the socket),
/// `splice` into the socket (from a pipe) or out of it (into a pipe), or `shutdown`; then a
/// write.
fn copy_reset(call: &str) -> Result<()> {
    let mut peer = Peer::start(loopback("v4"))?;
    let fd = peer.connected()?;
    let file = std::env::temp_dir().join(format!("socktrace-sendfile-{}", std::process::id()));
    std::fs::write(&file, b"a file served with sendfile")?;
    let src = std::fs::File::open(&file)?;
    std::fs::remove_file(&file)?;
    let mut pipe = [0i32; 2];
    // SAFETY: a valid two-int array.
    check(unsafe { libc::pipe(pipe.as_mut_ptr()) } as isize);
    // SAFETY: valid pipe fd and buffer.
    unsafe { libc::write(pipe[1], b"piped".as_ptr().cast(), 5) };
    ready_then_wait();
    peer.cmd("abort")?;
    sleep_ms(50);
    // SAFETY: valid fds; null offsets mean the files' own positions (pipes have none).
    let rc = unsafe {
        match call {
            "sendfile" => libc::sendfile(fd, std::os::fd::AsRawFd::as_raw_fd(&src), std::ptr::null_mut(), 64),
            "splice-out" => libc::splice(pipe[0], std::ptr::null_mut(), fd, std::ptr::null_mut(), 5, 0),
            "splice-in" => libc::splice(fd, std::ptr::null_mut(), pipe[1], std::ptr::null_mut(), 64, 0),
            "shutdown" => libc::shutdown(fd, libc::SHUT_RDWR) as isize,
            other => bail!("unknown copy call {other}"),
        }
    };
    report(call, fd, check(rc), json!({ "dport": peer.addr.port() }));
    report("after", fd, do_call("sendto", fd), json!({}));
    Ok(())
}

/// An event loop's view of a reset: an accepted connection's peer aborts, and the server
/// reads the error with getsockopt(SO_ERROR), as after EPOLLERR. It never called connect.
fn so_error_accepted() -> Result<()> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    // The client is another, untraced process: its RST is handled while it is on the CPU.
    let mut client = Command::new(std::env::current_exe()?)
        .args(["connector", &addr.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let (conn, _) = l.accept()?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&conn);
    ready_then_wait();
    writeln!(client.stdin.as_mut().context("connector stdin")?, "abort")?;
    let _ = client.wait();
    sleep_ms(50);
    let mut err: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: a valid fd and an int-sized out buffer.
    let rc = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, (&raw mut err).cast(), &mut len) };
    check(rc as isize);
    report("so_error", fd, err, json!({ "port": addr.port() }));
    Ok(())
}

/// A UDP socket connected to a closed port of loopback (the "resolver is down" failure): the
/// first datagram draws an ICMP port-unreachable, and the next call (`recv` or `send`) returns
/// ECONNREFUSED; the one after it no longer does (the error is reported once).
fn udp_refused(call: &str) -> Result<()> {
    let closed = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    sock.connect(closed)?;
    sock.set_nonblocking(true)?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    ready_then_wait();
    sock.send(b"query")?;
    sleep_ms(50);
    let call_once = || -> i32 {
        let mut buf = [0u8; 64];
        // SAFETY: a valid fd and buffer.
        let rc = unsafe {
            match call {
                "recv" => libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0),
                _ => libc::send(fd, b"query".as_ptr().cast(), 5, 0),
            }
        };
        check(rc)
    };
    report(call, fd, call_once(), json!({ "dport": closed.port() }));
    report("after", fd, call_once(), json!({}));
    Ok(())
}

/// A UDP datagram larger than UDP allows: EMSGSIZE, a failure no ICMP error explains.
fn udp_too_big() -> Result<()> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    let big = vec![0u8; 70_000];
    ready_then_wait();
    let e = match sock.send_to(&big, "127.0.0.1:9") {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(0),
    };
    report("sendto", fd, e, json!({}));
    Ok(())
}

/// Something happens to a connection *before* socktrace attaches: the peer resets it
/// (`reset`), or closes its side (`fin`); then, traced, the program reads.
fn before_trace(what: &str) -> Result<()> {
    let mut peer = Peer::start(loopback("v4"))?;
    let fd = peer.connected()?;
    if what == "reset" {
        // Some data first (the peer's abort discards it): the snapshot tells how long before
        // the attach it was sent. (A peer that closes with unread data resets: not for "fin".)
        // SAFETY: a valid fd and buffer.
        unsafe { libc::write(fd, b"hello".as_ptr().cast(), 5) };
        sleep_ms(20);
    }
    peer.cmd(if what == "reset" { "abort" } else { "close" })?;
    sleep_ms(50);
    ready_then_wait();
    let mut buf = [0u8; 16];
    // SAFETY: a valid fd and buffer.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    report("read", fd, check(n), json!({ "ret": n, "dport": peer.addr.port() }));
    Ok(())
}

/// `scenario connector ADDR`: connects to ADDR, then aborts the connection (RST) when told.
fn connector(addr: &str) -> Result<()> {
    let (fd, e) = connect_blocking(parse_addr(addr)?);
    if e != 0 {
        bail!("connector: connect {addr}: errno {e}");
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    set_linger_zero(fd);
    close(fd);
    Ok(())
}

/// The seed's "server terminated prematurely": the peer closes (FIN), our first write goes
/// out, its closed socket answers RST, our next write gets EPIPE.
fn premature_exit() -> Result<()> {
    let mut peer = Peer::start(loopback("v4"))?;
    let fd = peer.connected()?;
    ready_then_wait();
    peer.cmd("close")?;
    sleep_ms(50);
    report("first_write", fd, do_call("write", fd), json!({ "dport": peer.addr.port() }));
    sleep_ms(50);
    report("second_write", fd, do_call("write", fd), json!({}));
    Ok(())
}

/// Our own shutdown(SHUT_WR), then a write: EPIPE.
fn shut_wr() -> Result<()> {
    let mut peer = Peer::start(loopback("v4"))?;
    let fd = peer.connected()?;
    ready_then_wait();
    // SAFETY: valid fd.
    unsafe { libc::shutdown(fd, libc::SHUT_WR) };
    sleep_ms(20);
    report("write", fd, do_call("write", fd), json!({}));
    Ok(())
}

/// The peer closes (FIN); our read returns 0.
fn peer_fin() -> Result<()> {
    let mut peer = Peer::start(loopback("v4"))?;
    let fd = peer.connected()?;
    ready_then_wait();
    peer.cmd("close")?;
    sleep_ms(50);
    let mut buf = [0u8; 16];
    // SAFETY: valid buffer.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    report("read", fd, check(n), json!({ "ret": n }));
    Ok(())
}

/// An established connection whose packets start being dropped (nft in this netns): our
/// data is retransmitted until TCP_USER_TIMEOUT, and the blocked read gets ETIMEDOUT.
fn established_timeout(ip: &str) -> Result<()> {
    let mut peer = Peer::start(loopback(ip))?;
    let fd = peer.connected()?;
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 1000);
    drop_then_read(fd, peer.addr.port(), true)
}

/// An idle connection with keepalive on (1 s idle, 1 s between probes, 2 probes) whose
/// packets start being dropped: the keepalive probes go unanswered, the blocked read gets
/// ETIMEDOUT with nothing retransmitted.
fn keepalive_timeout() -> Result<()> {
    let mut peer = Peer::start(loopback("v4"))?;
    let fd = peer.connected()?;
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 1);
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 1);
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 2);
    drop_then_read(fd, peer.addr.port(), false)
}

/// Drops every packet of the connection on `port` (nft, in this namespace), optionally writes,
/// then reads until the connection times out.
fn drop_then_read(fd: i32, port: u16, write: bool) -> Result<()> {
    let rules = format!(
        "table inet socktrace_drop {{\n chain input {{\n  type filter hook input priority 0;\n  tcp dport {port} drop\n  tcp sport {port} drop\n }}\n}}\n"
    );
    ready_then_wait();
    nft(&rules)?;
    if write {
        report("write", fd, do_call("write", fd), json!({}));
    }
    let started = std::time::Instant::now();
    report("read", fd, do_call("read", fd), json!({ "ms": started.elapsed().as_millis() as u64 }));
    Ok(())
}

/// `ss -K` kills our established socket while we are blocked reading it: ECONNABORTED.
/// With `peer`, `ss -K` kills the peer's socket instead: its kernel resets the connection
/// (tcp_abort) and our read fails with ECONNRESET.
fn ss_kill(peer_side: bool) -> Result<()> {
    let mut peer = Peer::start(loopback("v4"))?;
    let fd = peer.connected()?;
    let (ours, theirs) = (local_port(fd), peer.addr.port());
    let (sport, dport) = if peer_side { (theirs, ours) } else { (ours, theirs) };
    ready_then_wait();
    let killer = std::thread::spawn(move || {
        sleep_ms(200);
        Command::new("ss")
            .args(["-K", "-t", "src", &format!("127.0.0.1:{sport}"), "dst", &format!("127.0.0.1:{dport}")])
            .stdout(Stdio::null())
            .status()
    });
    let e = do_call("read", fd);
    let status = killer.join().expect("killer thread")?;
    report("read", fd, e, json!({ "ss_status": status.code() }));
    Ok(())
}

/// The client resets a connection that still waits in our accept queue. Linux (unlike the
/// BSDs) still hands it to accept(); the read that follows fails with the reset.
fn accept_after_reset() -> Result<()> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = l.local_addr()?.port();
    let lfd = std::os::fd::AsRawFd::as_raw_fd(&l);
    ready_then_wait();
    // The client is another (forked, untraced) process, so the RST is its doing.
    rst_client_inline(port)?;
    sleep_ms(50);
    // SAFETY: valid buffers for the peer address.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let c = unsafe { libc::accept(lfd, (&mut ss as *mut libc::sockaddr_storage).cast(), &mut len) };
    report("accept", lfd, check(c as isize), json!({ "new_fd": c }));
    if c >= 0 {
        report("read", c, do_call("read", c), json!({}));
    }
    Ok(())
}

/// Connects to PORT from a forked child process and resets the connection (SO_LINGER 0).
fn rst_client_inline(port: u16) -> Result<()> {
    // SAFETY: fork in a single-threaded process; the child only makes raw syscalls and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let (fd, e) = connect_blocking(SocketAddr::new(loopback("v4"), port));
        if e == 0 {
            set_linger_zero(fd);
            close(fd);
        }
        unsafe { libc::_exit(if e == 0 { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if status != 0 {
        bail!("rst client failed: {status}");
    }
    Ok(())
}

/// A non-blocking read with nothing to read: EAGAIN.
fn would_block() -> Result<()> {
    let mut peer = Peer::start(loopback("v4"))?;
    let fd = peer.connected()?;
    // SAFETY: valid fd.
    unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
    ready_then_wait();
    report("read", fd, do_call("read", fd), json!({}));
    Ok(())
}

extern "C" fn on_alarm(_: libc::c_int) {}

/// A blocking read interrupted by a signal whose handler has no SA_RESTART: EINTR.
fn interrupted() -> Result<()> {
    let mut peer = Peer::start(loopback("v4"))?;
    let fd = peer.connected()?;
    // SAFETY: installing a handler that does nothing; no SA_RESTART.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_alarm as extern "C" fn(libc::c_int) as usize;
        libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut());
    }
    ready_then_wait();
    // SAFETY: plain syscall.
    unsafe { libc::alarm(1) };
    report("read", fd, do_call("read", fd), json!({}));
    Ok(())
}

/// Failing calls on things that are not TCP sockets: a pipe, an eventfd, a file, a unix
/// socket, a UDP socket. Only the last two are sockets (reported with --all-sockets).
fn not_sockets() -> Result<()> {
    let mut p = [0i32; 2];
    // SAFETY: valid array for pipe2; the rest are plain calls on fds created here.
    unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_NONBLOCK) };
    let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK) };
    let file = std::fs::File::create(std::env::temp_dir().join(format!("socktrace-scenario-{}", std::process::id())))?;
    let ffd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let mut sp = [0i32; 2];
    unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sp.as_mut_ptr()) };
    let udp = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    let closed = closed_port(loopback("v4"))?;
    ready_then_wait();
    report("pipe_read", p[0], do_call("read", p[0]), json!({}));
    close(p[0]);
    report("pipe_write", p[1], do_call("write", p[1]), json!({}));
    let mut v = 0u64;
    let e = check(unsafe { libc::read(efd, (&mut v as *mut u64).cast(), 8) });
    report("eventfd_read", efd, e, json!({}));
    report("file_read", ffd, do_call("read", ffd), json!({}));
    close(sp[1]);
    report("unix_write", sp[0], do_call("write", sp[0]), json!({}));
    connect_fd(udp, closed);
    do_call("write", udp);
    sleep_ms(20);
    report("udp_read", udp, do_call("recvfrom", udp), json!({}));
    let _ = std::fs::remove_file(std::env::temp_dir().join(format!("socktrace-scenario-{}", std::process::id())));
    Ok(())
}

/// A refused connect made on a second thread.
fn thread_refused() -> Result<()> {
    let closed = closed_port(loopback("v4"))?;
    ready_then_wait();
    let (fd, e, tid) = std::thread::spawn(move || {
        let (fd, e) = connect_blocking(closed);
        (fd, e, gettid())
    })
    .join()
    .expect("thread");
    report("connect", fd, e, json!({ "tid": tid, "dport": closed.port() }));
    Ok(())
}

/// Across a veth pair: the peer (in netns PEER_NETNS, at ADDR) aborts; the RST crosses the veth
/// and is handled in softirq while the peer, not us, is on the CPU.
/// `dial`: the address the connect goes to, when not the peer's own (one that NAT on the way
/// rewrites to it).
fn veth_reset(peer_netns: &str, addr: &str, dial: Option<&str>) -> Result<()> {
    let addr = parse_addr(addr)?;
    let mut peer = Peer::start_in(Some(peer_netns), addr)?;
    if let Some(dial) = dial {
        peer.addr = parse_addr(dial)?;
    }
    let fd = peer.connected()?;
    ready_then_wait();
    peer.cmd("abort")?;
    sleep_ms(100);
    report("read", fd, do_call("read", fd), json!({ "peer_pid": peer.pid, "dport": peer.addr.port() }));
    Ok(())
}

/// A forked child makes a refused connect (and reports its pid); the parent waits for it.
fn fork_refused() -> Result<()> {
    let closed = closed_port(loopback("v4"))?;
    ready_then_wait();
    let _ = std::io::stdout().flush();
    // SAFETY: single-threaded; the child makes raw calls, prints, and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let (fd, e) = connect_blocking(closed);
        report("child_connect", fd, e, json!({ "pid": std::process::id(), "dport": closed.port() }));
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let (fd, e) = connect_blocking(closed);
    report("parent_connect", fd, e, json!({ "pid": std::process::id() }));
    Ok(())
}

/// Reports who it runs as, then makes a refused connect.
fn whoami_refused() -> Result<()> {
    let closed = closed_port(loopback("v4"))?;
    ready_then_wait();
    let (fd, e) = connect_blocking(closed);
    // SAFETY: no arguments.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    report("connect", fd, e, json!({ "uid": uid, "gid": gid, "pid": std::process::id() }));
    Ok(())
}

/// N refused connects, each on a new socket (closed afterwards).
fn refused_many(n: usize) -> Result<()> {
    let closed = closed_port(loopback("v4"))?;
    ready_then_wait();
    for _ in 0..n {
        let (fd, e) = connect_blocking(closed);
        report("connect", fd, e, json!({}));
        close(fd);
    }
    Ok(())
}

/// Refused connects every `every_ms` from before socktrace attaches until 0.5 s after, each
/// reported with its CLOCK_MONOTONIC time (the kernel's clock), while `sockets` TCP sockets
/// stay open: socktrace adopts them at attach, which widens the window between the probes
/// being in place and the attach being announced.
fn refused_while_attaching(sockets: usize, every_ms: u64) -> Result<()> {
    let closed = closed_port(loopback("v4"))?;
    // Plain TCP sockets, never bound: nothing can connect to them by chance.
    // SAFETY: socket() takes plain integers; each descriptor is closed below.
    let held: Vec<i32> = (0..sockets).map(|_| unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) }).collect();
    if held.iter().any(|&fd| fd < 0) {
        bail!("socket: {}", std::io::Error::last_os_error());
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let loop_thread = std::thread::spawn(move || {
        let mut done = Vec::new();
        // Bounded: 60 s at most whatever the test does.
        for _ in 0..(60_000 / every_ms.max(1)) {
            if flag.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            let (fd, e) = connect_blocking(closed);
            let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: a valid timespec.
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
            close(fd);
            done.push((fd, e, ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64));
            sleep_ms(every_ms);
        }
        done
    });
    ready_then_wait();
    sleep_ms(500);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for (fd, e, mono_ns) in loop_thread.join().expect("the connect loop") {
        report("connect", fd, e, json!({ "mono_ns": mono_ns, "dport": closed.port() }));
    }
    held.into_iter().for_each(close);
    Ok(())
}

/// Failures spread wide, for the bounds of the agent's labels: a refused connect to each of
/// `peers` distinct destinations (127.0.0.1, ports counted down from 60999, skipping any that
/// accept), then one refused connect from inside each cgroup below `cgroups` (the process
/// moves itself into each in turn).
fn spread(peers: usize, cgroups: &str) -> Result<()> {
    let mut dirs: Vec<std::path::PathBuf> = std::fs::read_dir(cgroups)?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    let closed = closed_port(loopback("v4"))?;
    ready_then_wait();
    let (mut refused, mut port) = (0, 60999u16);
    while refused < peers && port > 1024 {
        let (fd, e) = connect_blocking(SocketAddr::new(loopback("v4"), port));
        close(fd);
        refused += usize::from(e == libc::ECONNREFUSED);
        port -= 1;
    }
    report("peers", -1, 0, json!({ "refused": refused }));
    for dir in &dirs {
        std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string())?;
        let (fd, e) = connect_blocking(closed);
        close(fd);
        anyhow::ensure!(e == libc::ECONNREFUSED, "connect from {} gave errno {e}", dir.display());
    }
    report("cgroups", -1, 0, json!({ "visited": dirs.len() }));
    Ok(())
}

/// Replaces itself (same PID) with `scenario REST...`, which then runs at once.
fn exec_into(rest: &[&str]) -> Result<()> {
    ready_then_wait();
    let err = std::os::unix::process::CommandExt::exec(
        Command::new(std::env::current_exe()?).args(rest).env("SCENARIO_NO_WAIT", "1"),
    );
    bail!("exec failed: {err}")
}

/// A connection the peer aborted, then N sends on it as fast as possible: the first fails
/// with ECONNRESET, every later one with EPIPE. Reports `{"step":"overflow","failures":N}`.
fn overflow(n: u64) -> Result<()> {
    let mut peer = Peer::start(loopback("v4"))?;
    let fd = peer.connected()?;
    ready_then_wait();
    peer.cmd("abort")?;
    sleep_ms(50);
    let mut failures = 0u64;
    for _ in 0..n {
        if do_call("sendto", fd) != 0 {
            failures += 1;
        }
    }
    println!("{}", json!({ "step": "overflow", "failures": failures }));
    Ok(())
}

/// Lowers RLIMIT_NOFILE (soft and hard) to the lowest free descriptor: the next descriptor
/// the process asks for fails with EMFILE. Returns that limit.
fn use_up_descriptors() -> Result<i32> {
    // SAFETY: plain syscalls; the duplicate only finds the lowest free descriptor.
    let lowest_free = unsafe {
        let d = libc::dup(0);
        libc::close(d);
        d
    };
    let limit = libc::rlimit { rlim_cur: lowest_free as u64, rlim_max: lowest_free as u64 };
    // SAFETY: a valid rlimit; lowering it needs no privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        bail!("setrlimit: {}", std::io::Error::last_os_error());
    }
    Ok(lowest_free)
}

/// The process runs out of descriptors: clients wait in the accept queue of its listener, its
/// RLIMIT_NOFILE is lowered to its lowest free descriptor, and accept4() fails with EMFILE.
fn fd_limit() -> Result<()> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let queued: Vec<std::net::TcpStream> =
        (0..3).map(|_| std::net::TcpStream::connect(addr)).collect::<std::io::Result<_>>()?;
    sleep_ms(20);
    ready_then_wait();
    let lowest_free = use_up_descriptors()?;
    let lfd = std::os::fd::AsRawFd::as_raw_fd(&l);
    // SAFETY: valid listening fd.
    let rc = unsafe { libc::accept4(lfd, std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC) };
    let e = if rc < 0 { errno() } else { 0 };
    report("accept4", lfd, e, json!({ "limit": lowest_free, "queued": queued.len(), "port": addr.port() }));
    Ok(())
}

/// socket() with every descriptor RLIMIT_NOFILE allows open: EMFILE, with no socket to join.
fn socket_fd_limit() -> Result<()> {
    ready_then_wait();
    let lowest_free = use_up_descriptors()?;
    // SAFETY: a plain syscall.
    let rc = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    let e = if rc < 0 { errno() } else { 0 };
    report("socket", rc, e, json!({ "limit": lowest_free }));
    Ok(())
}

/// Connects to ADDR until connect() fails (at most 64 tries): with a tiny
/// ip_local_port_range (set by the test in this namespace) it fails with EADDRNOTAVAIL.
fn port_exhaustion(addr: &str) -> Result<()> {
    let mut peer = Peer::start_at(parse_addr(addr)?)?;
    let dest = peer.addr;
    ready_then_wait();
    let mut held = Vec::new();
    for _ in 0..64 {
        let (fd, e) = connect_blocking(dest);
        if e != 0 {
            report("connect", fd, e, json!({ "dport": dest.port(), "held": held.len() }));
            // A real client lives on after a failure: its connections are still there when
            // socktrace reads the namespace's sockets.
            sleep_ms(500);
            break;
        }
        peer.cmd("accept")?;
        held.push(fd);
    }
    Ok(())
}

/// A listener of another process with a backlog of 1 that never accepts: two connections fill
/// its queue, the kernel drops the third's SYNs, and its connect times out (TCP_SYNCNT 1).
fn queue_full(before_trace: bool) -> Result<()> {
    // Under the trace, socktrace knows the listener's owner and queue from its listen(); one
    // started before it (in a process not traced: the peer is forked before the attach) is
    // found through the host's socket tables.
    let mut early = if before_trace { Some(Peer::start(loopback("v4"))?) } else { None };
    if let Some(peer) = early.as_mut() {
        peer.cmd("backlog 1")?;
    }
    ready_then_wait();
    let peer = match early {
        Some(peer) => peer,
        None => {
            let mut peer = Peer::start(loopback("v4"))?;
            peer.cmd("backlog 1")?;
            peer
        }
    };
    let dest = peer.addr;
    let waiting: Vec<(i32, i32)> = (0..2).map(|_| connect_blocking(dest)).collect();
    anyhow::ensure!(waiting.iter().all(|&(_, e)| e == 0), "the first connections complete: {waiting:?}");
    sleep_ms(20);
    let fd = tcp_socket(libc::AF_INET, 0);
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_SYNCNT, 1);
    let e = connect_fd(fd, dest);
    report("connect", fd, e, json!({ "dport": dest.port(), "peer_pid": peer.pid }));
    // The listener lives on after the failure, its queue still full, as a real one would.
    sleep_ms(500);
    Ok(())
}

/// A listener whose queue overflows while handshakes are completing, in a namespace with
/// `tcp_abort_on_overflow` set: the kernel resets the connection it cannot queue. With
/// TCP_DEFER_ACCEPT the listener keeps each handshake open until data comes, so the order is
/// ours: backlog 2 admits at most 2 pending handshakes, and the queue is full at 3. A and B
/// connect; A's data queues A; C connects; B's data queues B; D connects; C's data queues C
/// (full); D's data overflows it, and D is reset. D's next read fails with ECONNRESET.
fn abort_on_overflow() -> Result<()> {
    ready_then_wait();
    let l = tcp_socket(libc::AF_INET, 0);
    let any = sockaddr(SocketAddr::new(loopback("v4"), 0));
    // SAFETY: valid fd and address.
    let e = check(unsafe { libc::bind(l, (&any.storage as *const libc::sockaddr_storage).cast(), any.len) } as isize);
    anyhow::ensure!(e == 0, "bind: errno {e}");
    setsockopt_int(l, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, 10);
    // SAFETY: valid fd.
    let e = check(unsafe { libc::listen(l, 2) } as isize);
    anyhow::ensure!(e == 0, "listen: errno {e}");
    let dest = SocketAddr::new(loopback("v4"), local_port(l));
    overflow_client(dest)?;
    close(l);
    Ok(())
}

/// The client's half of `abort-on-overflow`, against a listener with TCP_DEFER_ACCEPT and a
/// backlog of 2 at `dest` (this process's, or an older one's of another namespace): four
/// connections complete their handshakes with data, one by one, into a queue that holds
/// three; the fourth's read meets the listener's RST.
fn overflow_client(dest: SocketAddr) -> Result<()> {
    let connect = || -> Result<i32> {
        let (fd, e) = connect_blocking(dest);
        anyhow::ensure!(e == 0, "connect: errno {e}");
        Ok(fd)
    };
    let send = |fd: i32| {
        // SAFETY: valid fd and buffer.
        unsafe { libc::send(fd, b"x".as_ptr().cast(), 1, 0) };
        sleep_ms(20);
    };
    let (a, b) = (connect()?, connect()?);
    send(a);
    let c = connect()?;
    send(b);
    let d = connect()?;
    send(c);
    send(d);
    sleep_ms(50);
    let e = do_call("read", d);
    report("read", d, e, json!({ "dport": dest.port() }));
    for fd in [a, b, c, d] {
        close(fd);
    }
    Ok(())
}

const TCP_MEM: &str = "/proc/sys/net/ipv4/tcp_mem";

/// Pages of memory TCP has in use by the kernel's global counter (/proc/net/sockstat).
fn tcp_mem_pages() -> u64 {
    let text = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let line = text.lines().find(|l| l.starts_with("TCP:")).unwrap_or("");
    let words: Vec<&str> = line.split_whitespace().collect();
    words.iter().position(|w| *w == "mem").and_then(|i| words.get(i + 1)?.parse().ok()).unwrap_or(0)
}

/// A non-blocking send of `n` bytes: the bytes queued, or the errno as a negative number.
fn send_nonblocking(fd: i32, n: usize) -> i64 {
    let buf = vec![0x5au8; n];
    // SAFETY: valid fd and buffer.
    let rc = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if rc < 0 {
        -(errno() as i64)
    } else {
        rc as i64
    }
}

/// TCP over its memory limit: unread connections hold TCP memory until the kernel's global
/// counter shows it (per-CPU reserves hide up to a megabyte per CPU), then `tcp_mem` is
/// lowered to one page host-wide (there is no per-namespace limit; the test restores it too).
/// A connection whose reader has a small, full window then sends: each send over the limit
/// makes the kernel shrink its send buffer (to about 4.5 KiB) until a send fails with EAGAIN.
fn send_memory() -> Result<()> {
    let original = std::fs::read_to_string(TCP_MEM)?;
    let l = tcp_socket(libc::AF_INET, 0);
    // A small receive buffer (inherited by the connections it queues): its window closes soon.
    setsockopt_int(l, libc::SOL_SOCKET, libc::SO_RCVBUF, 4096);
    let any = sockaddr(SocketAddr::new(loopback("v4"), 0));
    // SAFETY: valid fd and address.
    let e = check(unsafe { libc::bind(l, (&any.storage as *const libc::sockaddr_storage).cast(), any.len) } as isize);
    anyhow::ensure!(e == 0, "bind: errno {e}");
    // SAFETY: valid fd.
    let e = check(unsafe { libc::listen(l, 1024) } as isize);
    anyhow::ensure!(e == 0, "listen: errno {e}");
    let dest = SocketAddr::new(loopback("v4"), local_port(l));
    let big = std::net::TcpListener::bind(SocketAddr::new(loopback("v4"), 0))?;
    ready_then_wait();
    let mut held = Vec::new();
    // Each unread connection holds its receive buffer and the sender's queue; bounded.
    for _ in 0..256 {
        if tcp_mem_pages() > 2 {
            break;
        }
        let (fd, e) = connect_blocking(big.local_addr()?);
        anyhow::ensure!(e == 0, "connect: errno {e}");
        for _ in 0..64 {
            if send_nonblocking(fd, 256 * 1024) < 0 {
                break;
            }
        }
        held.push(fd);
    }
    let before = tcp_mem_pages();
    anyhow::ensure!(before > 2, "TCP memory did not show in the global counter: {before} pages");
    let (fd, e) = connect_blocking(dest);
    anyhow::ensure!(e == 0, "connect: errno {e}");
    std::fs::write(TCP_MEM, "1 1 1")?;
    let mut result = 0;
    let mut sent = 0;
    for _ in 0..64 {
        result = send_nonblocking(fd, 4096);
        if result < 0 {
            break;
        }
        sent += result;
    }
    std::fs::write(TCP_MEM, original.trim())?;
    let e = if result < 0 { (-result) as i32 } else { 0 };
    report("send", fd, e, json!({ "sent": sent, "pages": before }));
    for fd in held.into_iter().chain([fd, l]) {
        close(fd);
    }
    Ok(())
}

/// Refused connects at RATE per second for SECONDS, each on a new, short-lived socket.
/// Reports only the total: `{"step":"storm","failures":N,"other":M}`.
fn storm(rate: u64, seconds: u64) -> Result<()> {
    let closed = closed_port(loopback("v4"))?;
    ready_then_wait();
    let start = std::time::Instant::now();
    let total = rate * seconds;
    let (mut failures, mut other) = (0u64, 0u64);
    for i in 0..total {
        // Paced: call i is due at i/rate seconds; ahead of schedule, sleep.
        let due = Duration::from_secs_f64(i as f64 / rate as f64);
        if i % 256 == 0 {
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let (fd, e) = connect_blocking(closed);
        if e == libc::ECONNREFUSED {
            failures += 1
        } else {
            other += 1
        }
        close(fd);
        if start.elapsed() > Duration::from_secs(seconds * 2 + 5) {
            break; // bounded even if the machine cannot keep the rate
        }
    }
    println!(
        "{}",
        json!({ "step": "storm", "failures": failures, "other": other, "ms": start.elapsed().as_millis() as u64 })
    );
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Benchmark workloads: each times itself between `go` and its end, and counts its failures.

fn bench_report(started: std::time::Instant, calls: u64, failures: u64) {
    println!(
        "{}",
        json!({ "step": "bench", "ns": started.elapsed().as_nanos() as u64, "calls": calls, "failures": failures })
    );
}

/// A server for the benchmarks, in its own (untraced) process: echoes, or aborts every
/// connection it accepts (SO_LINGER {1,0}). Prints its port, serves until killed.
fn serve(abort: bool) -> Result<()> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    println!("port {}", l.local_addr()?.port());
    let _ = std::io::stdout().flush();
    for conn in l.incoming() {
        let Ok(mut c) = conn else { continue };
        if abort {
            set_linger_zero(std::os::fd::AsRawFd::as_raw_fd(&c));
            drop(c);
            continue;
        }
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok(n) = std::io::Read::read(&mut c, &mut buf) {
                if n == 0 || std::io::Write::write_all(&mut c, &buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}

fn set_linger_zero(fd: i32) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: valid fd and option buffer.
    unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_LINGER, (&linger as *const libc::linger).cast(), 8) };
}

/// N request/response round trips of 64 bytes; nothing fails.
fn bench_echo(addr: &str, n: u64) -> Result<()> {
    let mut s = std::net::TcpStream::connect(parse_addr(addr)?)?;
    s.set_nodelay(true)?;
    let msg = [7u8; 64];
    let mut buf = [0u8; 64];
    ready_then_wait();
    let started = std::time::Instant::now();
    for _ in 0..n {
        std::io::Write::write_all(&mut s, &msg)?;
        std::io::Read::read_exact(&mut s, &mut buf)?;
    }
    bench_report(started, n * 2, 0);
    Ok(())
}

/// N non-blocking reads on a connected socket with nothing to read: N x EAGAIN.
fn bench_storm(n: u64) -> Result<()> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let c = std::net::TcpStream::connect(l.local_addr()?)?;
    let _server = l.accept()?;
    c.set_nonblocking(true)?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&c);
    let mut buf = [0u8; 16];
    ready_then_wait();
    let started = std::time::Instant::now();
    let mut failures = 0;
    for _ in 0..n {
        // SAFETY: valid fd and buffer.
        if unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } < 0 {
            failures += 1;
        }
    }
    bench_report(started, n, failures);
    Ok(())
}

/// N refused connects, each on a new socket.
fn bench_refused(n: u64) -> Result<()> {
    let closed = closed_port(loopback("v4"))?;
    ready_then_wait();
    let started = std::time::Instant::now();
    let mut failures = 0;
    for _ in 0..n {
        let (fd, e) = connect_blocking(closed);
        if e != 0 {
            failures += 1;
        }
        close(fd);
    }
    bench_report(started, n, failures);
    Ok(())
}

/// N connections that the server aborts: the read on each fails with ECONNRESET.
fn bench_reset(addr: &str, n: u64) -> Result<()> {
    let addr = parse_addr(addr)?;
    ready_then_wait();
    let started = std::time::Instant::now();
    let mut failures = 0;
    for _ in 0..n {
        let (fd, e) = connect_blocking(addr);
        // Usually the read fails with the reset; now and then the RST beats the connect.
        if e != 0 || do_call("read", fd) != 0 {
            failures += 1;
        }
        close(fd);
    }
    bench_report(started, n * 2, failures);
    Ok(())
}

/// N connects whose SYNs a netfilter rule drops, in a network namespace of the workload's
/// own (so no rule touches the host's): every SYN is a packet the kernel drops. Each connect
/// is non-blocking (EINPROGRESS, a routine failure) and its socket closed at once. What the
/// drop probe costs per dropped packet, on flows socktrace traces or not.
fn bench_dropped(n: u64) -> Result<()> {
    // SAFETY: a plain syscall; the process moves into a namespace of its own.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        bail!("unshare(CLONE_NEWNET): errno {}", errno());
    }
    let up = Command::new("ip").args(["link", "set", "lo", "up"]).status()?;
    if !up.success() {
        bail!("ip link set lo up: {up}");
    }
    nft("table inet socktrace_bench {\n chain input {\n  type filter hook input priority 0;\n  tcp dport 9 drop\n }\n}\n")?;
    let addr: SocketAddr = "127.0.0.1:9".parse()?;
    ready_then_wait();
    let started = std::time::Instant::now();
    let mut failures = 0;
    for _ in 0..n {
        let fd = tcp_socket(libc::AF_INET, libc::SOCK_NONBLOCK);
        if connect_fd(fd, addr) != 0 {
            failures += 1;
        }
        close(fd);
    }
    bench_report(started, n, failures);
    Ok(())
}

/// io_uring clients (the `io-uring` crate, as tokio-uring uses it): requests that fail without
/// a syscall of their own. Each submits one request, waits for its completion and reports it
/// like a call: the errno is the completion's negative result.
mod uring {
    use super::*;
    use io_uring::{opcode, squeue, types, IoUring};

    fn ring() -> Result<IoUring> {
        IoUring::new(8).context("io_uring_setup (is kernel.io_uring_disabled set?)")
    }

    /// Submits `sqe` and returns the completion's result as (errno, value).
    fn complete(ring: &mut IoUring, sqe: squeue::Entry) -> Result<(i32, i32)> {
        // SAFETY: every buffer the entry refers to outlives the wait below.
        unsafe { ring.submission().push(&sqe.user_data(7)) }.map_err(|_| anyhow::anyhow!("submission queue full"))?;
        ring.submit_and_wait(1)?;
        let cqe = ring.completion().next().context("no completion")?;
        let res = cqe.result();
        Ok(if res < 0 { (-res, res) } else { (0, res) })
    }

    /// IORING_OP_CONNECT to a closed port of loopback: refused by RST.
    pub fn refused() -> Result<()> {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let sa = sockaddr(SocketAddr::new(loopback("v4"), port));
        let fd = tcp_socket(libc::AF_INET, 0);
        let mut ring = ring()?;
        ready_then_wait();
        let sqe =
            opcode::Connect::new(types::Fd(fd), (&sa.storage as *const libc::sockaddr_storage).cast(), sa.len).build();
        let (e, _) = complete(&mut ring, sqe)?;
        report("connect", fd, e, json!({ "dport": port }));
        Ok(())
    }

    /// A connection the peer aborts, then one io_uring request on it: `recv`, `send`, `recv`
    /// on a registered (fixed) file, or `recv` forced into an io-wq worker (IOSQE_ASYNC).
    pub fn reset(how: &str) -> Result<()> {
        let mut peer = Peer::start(loopback("v4"))?;
        let fd = peer.connected()?;
        let mut ring = ring()?;
        // The socket is the third registered file: its index (2) is what the event names.
        let mut fds = [0i32; 2];
        if how == "recv-fixed" {
            // SAFETY: a two-int array for pipe(2).
            anyhow::ensure!(unsafe { libc::pipe(fds.as_mut_ptr()) } == 0, "pipe: errno {}", errno());
            ring.submitter().register_files(&[fds[0], fds[1], fd])?;
        }
        ready_then_wait();
        peer.cmd("abort")?;
        sleep_ms(50);
        let mut buf = [0u8; 64];
        let data = b"payload";
        let sqe = match how {
            "recv" => opcode::Recv::new(types::Fd(fd), buf.as_mut_ptr(), buf.len() as u32).build(),
            "recv-async" => {
                opcode::Recv::new(types::Fd(fd), buf.as_mut_ptr(), buf.len() as u32).build().flags(squeue::Flags::ASYNC)
            }
            "recv-fixed" => opcode::Recv::new(types::Fixed(2), buf.as_mut_ptr(), buf.len() as u32).build(),
            "send" => {
                opcode::Send::new(types::Fd(fd), data.as_ptr(), data.len() as u32).flags(libc::MSG_NOSIGNAL).build()
            }
            other => bail!("unknown io_uring request {other}"),
        };
        let (e, _) = complete(&mut ring, sqe)?;
        let fixed_index = (how == "recv-fixed").then_some(2);
        report(how, fd, e, json!({ "dport": peer.addr.port(), "peer_pid": peer.pid, "fixed_index": fixed_index }));
        // Then a send through the ring: the reset was reported once, so a broken pipe.
        let sqe = opcode::Send::new(types::Fd(fd), data.as_ptr(), data.len() as u32).flags(libc::MSG_NOSIGNAL).build();
        let (e, _) = complete(&mut ring, sqe)?;
        report("after", fd, e, json!({}));
        Ok(())
    }

    /// IORING_OP_ACCEPT with RLIMIT_NOFILE used up: EMFILE while connections wait.
    pub fn accept_fd_limit() -> Result<()> {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = l.local_addr()?;
        let queued: Vec<std::net::TcpStream> =
            (0..2).map(|_| std::net::TcpStream::connect(addr)).collect::<std::io::Result<_>>()?;
        let mut ring = ring()?;
        sleep_ms(20);
        ready_then_wait();
        let lowest_free = use_up_descriptors()?;
        let lfd = std::os::fd::AsRawFd::as_raw_fd(&l);
        let sqe = opcode::Accept::new(types::Fd(lfd), std::ptr::null_mut(), std::ptr::null_mut()).build();
        let (e, _) = complete(&mut ring, sqe)?;
        report("accept", lfd, e, json!({ "limit": lowest_free, "queued": queued.len(), "port": addr.port() }));
        Ok(())
    }

    /// N io_uring recv requests with MSG_DONTWAIT on an empty socket (each completes with
    /// EAGAIN at once), submitted 32 at a time: the io_uring door's cost, per failing request.
    pub fn bench_storm(n: u64) -> Result<()> {
        const BATCH: u64 = 32;
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        let c = std::net::TcpStream::connect(l.local_addr()?)?;
        let _server = l.accept()?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&c);
        let mut ring = IoUring::new(BATCH as u32 * 2)?;
        let mut buf = [0u8; 16];
        ready_then_wait();
        let started = std::time::Instant::now();
        let (mut done, mut failures) = (0u64, 0u64);
        while done < n {
            let batch = BATCH.min(n - done);
            for _ in 0..batch {
                let sqe = opcode::Recv::new(types::Fd(fd), buf.as_mut_ptr(), buf.len() as u32)
                    .flags(libc::MSG_DONTWAIT)
                    .build();
                // SAFETY: the buffer outlives the completions waited for below.
                unsafe { ring.submission().push(&sqe) }.map_err(|_| anyhow::anyhow!("submission queue full"))?;
            }
            ring.submit_and_wait(batch as usize)?;
            for cqe in ring.completion() {
                done += 1;
                if cqe.result() < 0 {
                    failures += 1;
                }
            }
        }
        bench_report(started, n, failures);
        Ok(())
    }

    /// A recv that waits on an idle connection, cancelled by IORING_OP_ASYNC_CANCEL: ECANCELED,
    /// routine (counted, not printed).
    pub fn cancel() -> Result<()> {
        let mut peer = Peer::start(loopback("v4"))?;
        let fd = peer.connected()?;
        let mut ring = ring()?;
        ready_then_wait();
        let mut buf = [0u8; 64];
        let recv = opcode::Recv::new(types::Fd(fd), buf.as_mut_ptr(), buf.len() as u32).build().user_data(1);
        // SAFETY: the buffer outlives the completions waited for below.
        unsafe { ring.submission().push(&recv) }.map_err(|_| anyhow::anyhow!("submission queue full"))?;
        ring.submit()?;
        sleep_ms(20);
        let cancel = opcode::AsyncCancel::new(1).build().user_data(2);
        // SAFETY: no buffers.
        unsafe { ring.submission().push(&cancel) }.map_err(|_| anyhow::anyhow!("submission queue full"))?;
        ring.submit_and_wait(2)?;
        let mut recv_errno = 0;
        for cqe in ring.completion() {
            if cqe.user_data() == 1 && cqe.result() < 0 {
                recv_errno = -cqe.result();
            }
        }
        report("recv", fd, recv_errno, json!({}));
        Ok(())
    }
}
