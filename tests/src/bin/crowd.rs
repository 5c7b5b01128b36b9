//! A crowd of loopback connections, for the scale tests (tests/tests/scale.rs): many
//! processes each holding thousands of idle connections, and servers that reset the oldest of
//! theirs at once, as an upstream restart does. Driven by lines on stdin, answering on stdout.
//!
//!   crowd server PORT          listens on 0.0.0.0:PORT and accepts, keeping the accepted
//!                              sockets in order; prints `listening`.
//!                              stdin `reset K`: closes the K oldest with SO_LINGER 0 (an
//!                              RST each), prints `reset K`. `count`: prints `accepted N`.
//!   crowd client ADDR PORT N   prints `ready`, waits for `go` on stdin, opens N connections to
//!                              ADDR:PORT (blocking connects), prints `connected N`; then reads
//!                              every socket that becomes readable: a reset is a read that
//!                              fails with ECONNRESET. stdin `count`: prints `resets R`.
//!
//!   crowd busy-server PORT P   an epoll server (one thread) listening on PORT..PORT+P-1: it
//!                              keeps every connection and answers each request with its
//!                              bytes, as a keep-alive service's worker does; prints
//!                              `listening`. stdin `count`: prints `connections N`.
//!   crowd load ADDR PORT P C MS
//!                              a load generator (one thread): C keep-alive connections to
//!                              ADDR:PORT..PORT+P-1 in turn, each sending a 64-byte request as
//!                              soon as the previous answer arrived, for MS milliseconds;
//!                              then prints `done REQUESTS P50_NS P99_NS` and exits.
//!
//! All but `load` exit when stdin closes. Every wait is bounded by the driver, which owns the
//! clock.

use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};

fn fail(what: &str) -> ! {
    eprintln!("crowd: {what}: {}", std::io::Error::last_os_error());
    std::process::exit(1)
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn sockaddr(addr: std::net::Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(addr).to_be() },
        sin_zero: [0; 8],
    }
}

const SA_LEN: libc::socklen_t = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;

/// A listener on `addr`:`port` (SO_REUSEADDR, backlog 4096); `flags` go to socket(2).
fn listen_on(addr: std::net::Ipv4Addr, port: u16, flags: libc::c_int) -> i32 {
    // SAFETY: plain socket calls on a descriptor this function owns.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | flags, 0) };
    if fd < 0 {
        fail("socket");
    }
    let one: libc::c_int = 1;
    let sa = sockaddr(addr, port);
    // SAFETY: valid pointers and lengths.
    unsafe {
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, (&raw const one).cast(), 4);
        if libc::bind(fd, (&raw const sa).cast(), SA_LEN) != 0 {
            fail("bind");
        }
        if libc::listen(fd, 4096) != 0 {
            fail("listen");
        }
    }
    fd
}

fn server(port: u16) {
    raise_fd_limit(65_536);
    let listener = listen_on(std::net::Ipv4Addr::UNSPECIFIED, port, 0);
    let accepted: Arc<Mutex<Vec<i32>>> = Arc::default();
    let keep = Arc::clone(&accepted);
    std::thread::spawn(move || loop {
        // SAFETY: the listener outlives this thread (the process exits first).
        let fd = unsafe { libc::accept(listener, std::ptr::null_mut(), std::ptr::null_mut()) };
        if fd >= 0 {
            keep.lock().unwrap().push(fd);
        } else if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            fail("accept");
        }
    });
    say("listening");
    let mut reset_upto = 0;
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["reset", k] => {
                let k: usize = k.parse().unwrap_or(0);
                let fds = accepted.lock().unwrap();
                let end = (reset_upto + k).min(fds.len());
                let linger = libc::linger { l_onoff: 1, l_linger: 0 };
                for &fd in &fds[reset_upto..end] {
                    // SAFETY: an accepted descriptor this process owns, closed once.
                    unsafe {
                        libc::setsockopt(
                            fd,
                            libc::SOL_SOCKET,
                            libc::SO_LINGER,
                            (&raw const linger).cast(),
                            std::mem::size_of::<libc::linger>() as libc::socklen_t,
                        );
                        libc::close(fd);
                    }
                }
                say(&format!("reset {}", end - reset_upto));
                reset_upto = end;
            }
            ["count"] => say(&format!("accepted {}", accepted.lock().unwrap().len())),
            _ => {}
        }
    }
}

fn client(addr: std::net::Ipv4Addr, port: u16, n: usize) {
    raise_fd_limit(n as u64 + 64);
    say("ready");
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    if stdin.read_line(&mut line).unwrap_or(0) == 0 || line.trim() != "go" {
        return;
    }
    // SAFETY: plain epoll and socket calls on descriptors this function owns.
    let ep = unsafe { libc::epoll_create1(0) };
    if ep < 0 {
        fail("epoll_create1");
    }
    let sa = sockaddr(addr, port);
    for _ in 0..n {
        // SAFETY: as above.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            if fd < 0 {
                fail("socket");
            }
            if libc::connect(fd, (&raw const sa).cast(), SA_LEN) != 0 {
                fail("connect");
            }
            let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: fd as u64 };
            if libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) != 0 {
                fail("epoll_ctl");
            }
        }
    }
    // Stdin joins the epoll set: `count` and its end are read between the sockets' events.
    // SAFETY: as above.
    unsafe {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: u64::MAX };
        libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, 0, &mut ev);
    }
    say(&format!("connected {n}"));
    let mut resets = 0u64;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    loop {
        // SAFETY: `events` has room for 1024 entries.
        let ready = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 1000) };
        for ev in &events[..ready.max(0) as usize] {
            let key = ev.u64;
            if key == u64::MAX {
                line.clear();
                if stdin.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if line.trim() == "count" {
                    say(&format!("resets {resets}"));
                }
                continue;
            }
            let fd = key as i32;
            let mut buf = [0u8; 64];
            // SAFETY: `buf` is 64 bytes; `fd` is this process's.
            let got = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if got > 0 {
                continue;
            }
            if got < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECONNRESET) {
                resets += 1;
            }
            // SAFETY: closed once; closing removes it from the epoll set.
            unsafe { libc::close(fd) };
        }
    }
}

/// Room for `n` descriptors (a guest's init starts with 1,024): raised up to the hard limit,
/// and past it where socktrace's tests may (CAP_SYS_RESOURCE, which a container may lack:
/// the hard limit then bounds what one process holds). Never lowered.
fn raise_fd_limit(n: u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a valid rlimit to fill, then to set.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur >= n {
            return;
        }
        let wanted = libc::rlimit { rlim_cur: n, rlim_max: lim.rlim_max.max(n) };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                fail("setrlimit(RLIMIT_NOFILE)");
            }
        }
    }
}

fn epoll_add(ep: i32, fd: i32, key: u64) {
    let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: key };
    // SAFETY: valid descriptors and event.
    if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
        fail("epoll_ctl");
    }
}

/// Epoll keys above every descriptor: stdin, and the listeners (LISTENER_KEY + index).
const STDIN_KEY: u64 = u64::MAX;
const LISTENER_KEY: u64 = 1 << 32;

fn busy_server(port: u16, ports: u16) {
    raise_fd_limit(1 << 20);
    // SAFETY: plain epoll and socket calls on descriptors this function owns.
    let ep = unsafe { libc::epoll_create1(0) };
    if ep < 0 {
        fail("epoll_create1");
    }
    let mut listeners = Vec::new();
    for i in 0..ports {
        let fd = listen_on(std::net::Ipv4Addr::LOCALHOST, port + i, libc::SOCK_NONBLOCK);
        epoll_add(ep, fd, LISTENER_KEY + u64::from(i));
        listeners.push(fd);
    }
    epoll_add(ep, 0, STDIN_KEY);
    say("listening");
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    let mut connections = 0u64;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: `events` has room for 1024 entries.
        let ready = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 1000) };
        for ev in &events[..ready.max(0) as usize] {
            // Copied out: epoll_event is packed.
            let key = ev.u64;
            match key {
                STDIN_KEY => {
                    line.clear();
                    if stdin.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line.trim() == "count" {
                        say(&format!("connections {connections}"));
                    }
                }
                key if key >= LISTENER_KEY => {
                    let listener = listeners[(key - LISTENER_KEY) as usize];
                    // A bounded batch per wakeup, so the requests of the others wait no longer.
                    for _ in 0..256 {
                        // SAFETY: a listener this process owns.
                        let fd = unsafe {
                            libc::accept4(listener, std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_NONBLOCK)
                        };
                        if fd < 0 {
                            break;
                        }
                        epoll_add(ep, fd, fd as u64);
                        connections += 1;
                    }
                }
                key => {
                    let fd = key as i32;
                    // SAFETY: `buf` is 4096 bytes; `fd` is this process's.
                    let got = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                    if got > 0 {
                        // SAFETY: as above; an answer this small fits the send buffer.
                        unsafe { libc::write(fd, buf.as_ptr().cast(), got as usize) };
                    } else if got == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN) {
                        // SAFETY: closed once; closing removes it from the epoll set.
                        unsafe { libc::close(fd) };
                        connections -= 1;
                    }
                }
            }
        }
    }
}

/// The load generator's connections: when each request was sent, and how much of its answer
/// has arrived.
struct Pending {
    fd: i32,
    sent: std::time::Instant,
    received: usize,
}

const REQUEST: usize = 64;

fn load(addr: std::net::Ipv4Addr, port: u16, ports: u16, conns: usize, millis: u64) {
    // SAFETY: plain epoll and socket calls on descriptors this function owns.
    let ep = unsafe { libc::epoll_create1(0) };
    if ep < 0 {
        fail("epoll_create1");
    }
    let request = [b'x'; REQUEST];
    let send = |p: &mut Pending| {
        p.sent = std::time::Instant::now();
        p.received = 0;
        // SAFETY: a 64-byte buffer, this process's descriptor.
        if unsafe { libc::write(p.fd, request.as_ptr().cast(), REQUEST) } != REQUEST as isize {
            fail("write");
        }
    };
    let mut pending: Vec<Pending> = Vec::new();
    for i in 0..conns {
        let sa = sockaddr(addr, port + (i % usize::from(ports.max(1))) as u16);
        // SAFETY: as above.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        // SAFETY: valid pointer and length.
        if fd < 0 || unsafe { libc::connect(fd, (&raw const sa).cast(), SA_LEN) } != 0 {
            fail("connect");
        }
        let one: libc::c_int = 1;
        // SAFETY: valid pointer and length.
        unsafe { libc::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, (&raw const one).cast(), 4) };
        epoll_add(ep, fd, i as u64);
        pending.push(Pending { fd, sent: std::time::Instant::now(), received: 0 });
    }
    let started = std::time::Instant::now();
    let until = started + std::time::Duration::from_millis(millis);
    let mut latencies: Vec<u64> = Vec::with_capacity(1 << 20);
    for p in pending.iter_mut() {
        send(p);
    }
    let mut outstanding = conns;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut buf = [0u8; 4096];
    // Bounded: at most a second past the window for the last answers.
    while outstanding > 0 && started.elapsed() < std::time::Duration::from_millis(millis + 1000) {
        // SAFETY: `events` has room for 1024 entries.
        let ready = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 100) };
        for ev in &events[..ready.max(0) as usize] {
            let key = ev.u64;
            let p = &mut pending[key as usize];
            // SAFETY: `buf` is 4096 bytes; `fd` is this process's.
            let got = unsafe { libc::read(p.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if got <= 0 {
                fail("read");
            }
            p.received += got as usize;
            if p.received < REQUEST {
                continue;
            }
            let now = std::time::Instant::now();
            latencies.push(now.duration_since(p.sent).as_nanos() as u64);
            if now < until {
                send(p);
            } else {
                outstanding -= 1;
            }
        }
    }
    latencies.sort_unstable();
    let at = |q: f64| latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)));
    say(&format!("done {} {} {}", latencies.len(), at(0.50).copied().unwrap_or(0), at(0.99).copied().unwrap_or(0)));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    match arg(0) {
        "server" => server(arg(1).parse().expect("PORT")),
        "client" => client(arg(1).parse().expect("ADDR"), arg(2).parse().expect("PORT"), arg(3).parse().expect("N")),
        "busy-server" => busy_server(arg(1).parse().expect("PORT"), arg(2).parse().expect("P")),
        "load" => load(
            arg(1).parse().expect("ADDR"),
            arg(2).parse().expect("PORT"),
            arg(3).parse().expect("P"),
            arg(4).parse().expect("C"),
            arg(5).parse().expect("MS"),
        ),
        _ => {
            eprintln!(
                "usage: crowd server PORT | crowd client ADDR PORT N | crowd busy-server PORT P | crowd load ADDR PORT P C MS"
            );
            std::process::exit(2);
        }
    }
}
