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
//! Both exit when stdin closes. Every wait is bounded by the driver, which owns the clock.

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

fn server(port: u16) {
    // SAFETY: plain socket calls on a descriptor this function owns.
    let listener = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    if listener < 0 {
        fail("socket");
    }
    let one: libc::c_int = 1;
    let sa = sockaddr(std::net::Ipv4Addr::UNSPECIFIED, port);
    // SAFETY: valid pointers and lengths.
    unsafe {
        libc::setsockopt(listener, libc::SOL_SOCKET, libc::SO_REUSEADDR, (&raw const one).cast(), 4);
        if libc::bind(listener, (&raw const sa).cast(), SA_LEN) != 0 {
            fail("bind");
        }
        if libc::listen(listener, 4096) != 0 {
            fail("listen");
        }
    }
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

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    match arg(0) {
        "server" => server(arg(1).parse().expect("PORT")),
        "client" => client(arg(1).parse().expect("ADDR"), arg(2).parse().expect("PORT"), arg(3).parse().expect("N")),
        _ => {
            eprintln!("usage: crowd server PORT | crowd client ADDR PORT N");
            std::process::exit(2);
        }
    }
}
