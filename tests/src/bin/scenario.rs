//! The traced side of the end-to-end tests: a client that makes one kind of socket failure
//! happen for real, and reports what it saw itself, so the tests can check socktrace's
//! account against the program's own.
//!
//! Protocol: `scenario NAME [ARGS]` sets up, prints `ready` on stdout, waits for a line on
//! stdin (socktrace is attached), runs, prints one JSON line per call it made
//! (`{"step":..,"fd":..,"errno":..}`), and exits 0.

use serde_json::json;
use std::io::{BufRead as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd as _;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args.first().map(String::as_str).unwrap_or("");
    let result = match name {
        "connect-refused-and-ok" => connect_refused_and_ok(),
        _ => {
            eprintln!("scenario: unknown scenario {name:?}");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("scenario {name}: {e:#}");
        std::process::exit(1);
    }
}

/// Prints `ready` and blocks until the test says go (one line on stdin).
fn ready_then_wait() {
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
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn sockaddr_v4(addr: SocketAddr) -> libc::sockaddr_in {
    let SocketAddr::V4(v4) = addr else { panic!("IPv4 only here") };
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
        sin_zero: [0; 8],
    }
}

/// A blocking connect on a fresh socket; returns (fd, errno or 0). The fd stays open.
fn connect_blocking(addr: SocketAddr) -> (i32, i32) {
    // SAFETY: plain socket calls with valid arguments.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket: {}", errno());
        let sin = sockaddr_v4(addr);
        let rc = libc::connect(fd, (&sin as *const libc::sockaddr_in).cast(), std::mem::size_of_val(&sin) as u32);
        (fd, if rc == 0 { 0 } else { errno() })
    }
}

fn closed_port() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let a = l.local_addr()?;
    drop(l);
    Ok(a)
}

/// A connect to a closed loopback port (refused: RST in SYN_SENT), then one that succeeds.
fn connect_refused_and_ok() -> anyhow::Result<()> {
    let closed = closed_port()?;
    let open = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    ready_then_wait();
    let (fd, e) = connect_blocking(closed);
    report("refused", fd, e, json!({ "dport": closed.port() }));
    let (fd, e) = connect_blocking(open.local_addr()?);
    report("ok", fd, e, json!({ "dport": open.local_addr()?.port(), "listener_fd": open.as_raw_fd() }));
    Ok(())
}
