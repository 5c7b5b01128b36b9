//! Real applications that enforce their own timeouts, run against networks the tests build:
//! nginx as a reverse proxy, curl, CPython, Java's HttpClient, Go's net/http and Node. Each
//! starts a non-blocking connect (EINPROGRESS), waits in poll/epoll with its own timer, and
//! when the timer fires closes the socket: no system call fails. Also the cases where nothing
//! was abandoned (a complete exchange, a keep-alive pool closing idle connections, Happy
//! Eyeballs) and a peer killed with SIGKILL while holding unread data.
//!
//! The network ([`Lab`]): a client namespace and an upstream namespace joined by a veth pair,
//! 10.77.N.1/24 and 10.77.N.2/24 (N distinct per test, so tests cannot collide), no other
//! route. In the upstream namespace:
//! - the blackhole port ([`BLACKHOLE_PORT`]): an nftables rule in its input chain drops every
//!   SYN (`tcp dport P drop`), so nothing ever answers;
//! - the silent server ([`SILENT_PORT`], `tests/tools/apps/servers.py silent`): accepts, reads
//!   the request, never answers, and keeps the connection open until killed;
//! - a normal HTTP/1.1 server ([`HTTP_PORT`], `servers.py http`), for the negative cases;
//! - the peer that gets killed ([`KILLED_PORT`], `servers.py killed`, named `redis-like`).
//!
//! Programs run inside the client namespace through `ip netns exec NS PROG ...`, which execs,
//! so the pid is the program's. A [`Mode`] says how: plainly, under the real socktrace
//! (`socktrace --json -o FILE -f -- ip netns exec ...`, which holds the program until its
//! probes are attached), or under strace (what proves how each program ends the socket:
//! [`socket_end`]).
//!
//! How each program ends the abandoned socket, as strace shows it (`-f -e
//! trace=connect,close,shutdown,poll,epoll_wait,...`):
//! - nginx 1.22 (worker): `close(fd)` on the upstream connection, then the 504 to its client;
//! - curl 7.88: `close(fd)` after poll() timeouts (connect timeout: exit code 28);
//! - CPython 3.11: `close(fd)` after poll(fd, POLLOUT, 1000) or poll(fd, POLLIN, 1000);
//! - Java 17 HttpClient: `close(fd)` by the client's selector thread (epoll_wait, then
//!   EPOLL_CTL_DEL and close); the socket is IPv6 with an IPv4-mapped address
//!   (`::ffff:10.77.N.2`);
//! - Go 1.19 net/http: `close(fd)` from another thread of the runtime than the one that
//!   connected (epoll_pwait in the netpoller);
//! - Node (libuv): `close(fd)` from the event loop after `destroy()` (epoll_pwait).
//!
//! None shuts the socket down first. Build outputs (the Go client, the Java classes) are
//! cached under `target/apps/`; every temporary file lives in a directory [`Lab`] removes.

use crate::fleet::workspace;
use crate::{wait_timeout, KillOnDrop, Netns, Tracer, TracerOutput};
use anyhow::{anyhow, bail, ensure, Context as _, Result};
use serde_json::Value;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// SYNs to this port of the upstream address are dropped by the upstream's input chain.
pub const BLACKHOLE_PORT: u16 = 8001;
/// The silent server: accepts and reads, never answers.
pub const SILENT_PORT: u16 = 8002;
/// A normal HTTP/1.1 server.
pub const HTTP_PORT: u16 = 8003;
/// The server killed with SIGKILL.
pub const KILLED_PORT: u16 = 8004;
/// nginx's listener, on 127.0.0.1 in the client namespace.
pub const NGINX_PORT: u16 = 8080;
/// The killed server's process name (/proc/PID/comm); its helper thread's is `bio_close_file`.
pub const KILLED_COMM: &str = "redis-like";

/// Debian's interpreter, whatever else is on PATH (`./x test` installs python3).
pub const PYTHON: &str = "/usr/bin/python3";

/// How long one program may run before its fixture fails (they take about a second).
const PROGRAM_LIMIT: Duration = Duration::from_secs(30);
/// How long a server may take to listen.
const SERVER_LIMIT: Duration = Duration::from_secs(15);

/// How a fixture runs its program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// As is: the fixture's own checks only.
    Plain,
    /// Under the real socktrace (`--json -o FILE -f -- ...`), held until it has attached.
    Socktrace,
    /// Under `strace -f -ttt` with the calls that show how the socket ends.
    Strace,
}

/// The syscalls strace records in [`Mode::Strace`].
pub const STRACE_CALLS: &str =
    "trace=execve,clone,clone3,fork,vfork,socket,connect,getsockopt,close,shutdown,poll,ppoll,epoll_wait,epoll_pwait,\
     write,writev,sendto,sendmsg";

fn apps_file(name: &str) -> PathBuf {
    workspace().join("tests/tools/apps").join(name)
}

/// Where build outputs are cached: `target/apps/` (`SOCKTRACE_APPS_DIR` overrides).
pub fn apps_target() -> PathBuf {
    std::env::var_os("SOCKTRACE_APPS_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target/apps"))
}

/// The two namespaces of one test, joined by a veth pair, with the blackhole rule loaded, and
/// a scratch directory; all removed on drop. The servers a fixture starts are its own, killed
/// when it returns.
pub struct Lab {
    pub client: Netns,
    pub upstream: Netns,
    pub subnet: u8,
    pub dir: PathBuf,
}

impl Lab {
    /// `subnet` (1..=254) must be distinct per test: it names the namespaces and the
    /// addresses (10.77.SUBNET.1 client side, .2 upstream).
    pub fn new(subnet: u8) -> Lab {
        let client = Netns::new(&format!("app{subnet}c"));
        let upstream = Netns::new(&format!("app{subnet}u"));
        client.veth_to(&upstream, &format!("10.77.{subnet}.1/24"), &format!("10.77.{subnet}.2/24"));
        upstream.input_rules("inet", &[format!("tcp dport {BLACKHOLE_PORT} drop")]);
        let dir = std::env::temp_dir().join(format!("socktrace-apps-{}-{subnet}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Lab { client, upstream, subnet, dir }
    }

    pub fn client_addr(&self) -> String {
        format!("10.77.{}.1", self.subnet)
    }

    pub fn upstream_addr(&self) -> String {
        format!("10.77.{}.2", self.subnet)
    }

    /// `http://UPSTREAM:PORT/PATH`
    pub fn upstream_url(&self, port: u16, path: &str) -> String {
        format!("http://{}:{port}/{path}", self.upstream_addr())
    }

    /// A file in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The silent server, listening on the upstream address.
    pub fn silent_server(&self) -> Result<Server> {
        Server::python(&self.upstream, "silent", &self.upstream_addr(), SILENT_PORT)
    }

    /// The HTTP server, listening on the upstream address.
    pub fn http_server(&self) -> Result<Server> {
        Server::python(&self.upstream, "http", &self.upstream_addr(), HTTP_PORT)
    }
}

impl Drop for Lab {
    /// `SOCKTRACE_APPS_KEEP=1` keeps the scratch directory (logs, configurations, traces).
    fn drop(&mut self) {
        if std::env::var_os("SOCKTRACE_APPS_KEEP").is_some() {
            eprintln!("keeping {}", self.dir.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `ip netns exec NS ARGS` to completion (bounded), returning its stdout.
fn exec_output(ns: &Netns, args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .args(args)
        .output()
        .with_context(|| format!("running {args:?} in {}", ns.name))?;
    ensure!(out.status.success(), "{args:?} in {} failed: {}", ns.name, String::from_utf8_lossy(&out.stderr).trim());
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits (at most `limit`) until a TCP socket listens on `port` in `ns`.
pub fn wait_listening(ns: &Netns, port: u16, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let out = exec_output(ns, &["ss", "-Hltn", &format!("sport = :{port}")])?;
        if !out.trim().is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("nothing listens on port {port} in {} after {limit:?}", ns.name);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A server process in a namespace, killed on drop. Its stdout is read line by line.
pub struct Server {
    child: KillOnDrop,
    lines: mpsc::Receiver<String>,
    pub pid: u32,
}

impl Server {
    /// `tests/tools/apps/servers.py MODE ADDR PORT` in `ns`, once it printed `listening`.
    pub fn python(ns: &Netns, mode: &str, addr: &str, port: u16) -> Result<Server> {
        let script = apps_file("servers.py");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, PYTHON])
            .arg(&script)
            .args([mode, addr, &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} {mode}", script.display()))?;
        let pid = child.id();
        let mut child = KillOnDrop(Some(child));
        let stdout = child.0.as_mut().unwrap().stdout.take().context("server stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut s = Server { child, lines, pid };
        s.wait_line("listening", SERVER_LIMIT).with_context(|| format!("the {mode} server on {addr}:{port}"))?;
        Ok(s)
    }

    /// The next line starting with `prefix` (within `limit`), without the prefix.
    pub fn wait_line(&mut self, prefix: &str, limit: Duration) -> Result<String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return Ok(line[prefix.len()..].trim().to_string()),
                Ok(_) => {}
                Err(_) => {
                    let status = self.child.0.as_mut().unwrap().try_wait()?;
                    bail!("the server printed no {prefix:?} line within {limit:?} (status {status:?})")
                }
            }
        }
    }

    /// SIGKILL, and the status it died with.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        let c = self.child.0.as_mut().unwrap();
        c.kill()?;
        let status = c.wait()?;
        self.child.0 = None;
        Ok(status)
    }
}

/// What one run of a program left.
#[derive(Debug)]
pub struct AppRun {
    /// The program's pid (socktrace's or strace's child in those modes).
    pub pid: u32,
    /// The program's exit status (socktrace exits with it).
    pub status: ExitStatus,
    pub stdout: String,
    /// The program's stderr; under socktrace, socktrace's own lines are mixed in.
    pub stderr: String,
    /// Wall time of the whole run (socktrace's attach included in that mode).
    pub elapsed: Duration,
    /// socktrace's failure lines (Mode::Socktrace).
    pub events: Vec<Value>,
    /// socktrace's summary object, when it printed one.
    pub summary: Option<Value>,
    /// strace's log (Mode::Strace).
    pub strace: Option<String>,
}

impl AppRun {
    /// The program's own report: the last JSON line it printed.
    pub fn report(&self) -> Value {
        self.stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| panic!("no JSON report on stdout: {:?}\nstderr: {}", self.stdout, self.stderr))
    }

    /// How the socket to `daddr:dport` ended, from the strace log (Mode::Strace only).
    pub fn socket_end(&self, daddr: &str, dport: u16) -> Result<SocketEnd> {
        socket_end(self.strace.as_deref().context("not run under strace")?, daddr, dport)
    }
}

/// A program started in the client namespace, in one of the [`Mode`]s.
pub struct Launched {
    pub pid: u32,
    started: Instant,
    inner: Inner,
}

enum Inner {
    Child { child: KillOnDrop, out: JoinHandle<String>, err: JoinHandle<String>, strace_log: Option<PathBuf> },
    Traced { tracer: Tracer, events: PathBuf },
}

fn read_all(r: impl std::io::Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(r).read_to_string(&mut s);
        s
    })
}

/// The children of `pid` (of any of its threads).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            out.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
        }
    }
    out
}

/// The first child of `pid`, waiting for it at most 5 s.
fn child_of(pid: u32) -> Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(&c) = children_of(pid).first() {
            return Ok(c);
        }
        if Instant::now() >= deadline {
            bail!("process {pid} started no child");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The child of `pid` that runs `program` (its argv[0], compared by file name), waiting for
/// the exec at most 10 s. strace forks short-lived children of its own at start (to test
/// ptrace's features), and socktrace holds its command before the exec: the first child is
/// not always the program.
fn child_running(pid: u32, program: &str) -> Result<u32> {
    let name = |p: &str| Path::new(p).file_name().map(|n| n.to_os_string());
    let want = name(program);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for c in children_of(pid) {
            let cmdline = std::fs::read(format!("/proc/{c}/cmdline")).unwrap_or_default();
            let argv0 = String::from_utf8_lossy(cmdline.split(|&b| b == 0).next().unwrap_or_default()).into_owned();
            if name(&argv0) == want {
                return Ok(c);
            }
        }
        if Instant::now() >= deadline {
            bail!("process {pid} started no {program}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

impl Launched {
    /// Starts `argv` inside `ns` (through `ip netns exec`) in `mode`; files go to `dir`.
    pub fn start(ns: &Netns, argv: &[&str], mode: Mode, dir: &Path) -> Result<Launched> {
        let mut full: Vec<String> = ["ip", "netns", "exec", &ns.name].iter().map(|s| s.to_string()).collect();
        full.extend(argv.iter().map(|s| s.to_string()));
        let tag = Path::new(argv[0]).file_name().and_then(|n| n.to_str()).unwrap_or("prog").to_string();
        let started = Instant::now();
        match mode {
            Mode::Socktrace => {
                let events = unique_path(dir, &format!("{tag}.socktrace"), "jsonl");
                let events_s = events.to_str().context("non-UTF-8 path")?.to_string();
                let mut args: Vec<&str> = vec!["--json", "-o", &events_s, "-f", "--"];
                args.extend(full.iter().map(String::as_str));
                // Under sudo socktrace would run the command as the invoking user: these
                // programs must stay root to enter the namespace (uid 0 keeps root).
                let tracer = Tracer::start_with(&args, &[("SUDO_UID", "0"), ("SUDO_GID", "0")])?;
                let pid = child_running(tracer.pid(), argv[0])?;
                Ok(Launched { pid, started, inner: Inner::Traced { tracer, events } })
            }
            Mode::Plain | Mode::Strace => {
                let (mut cmd, strace_log) = if mode == Mode::Strace {
                    let log = unique_path(dir, &format!("{tag}.strace"), "log");
                    let mut c = Command::new("strace");
                    c.args(["-f", "-ttt", "-o"]).arg(&log).args(["-e", STRACE_CALLS]).args(&full);
                    (c, Some(log))
                } else {
                    let mut c = Command::new(&full[0]);
                    c.args(&full[1..]);
                    (c, None)
                };
                let mut child = cmd
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .with_context(|| format!("starting {full:?}"))?;
                let pid = if mode == Mode::Strace { child_running(child.id(), argv[0])? } else { child.id() };
                let out = read_all(child.stdout.take().unwrap());
                let err = read_all(child.stderr.take().unwrap());
                Ok(Launched {
                    pid,
                    started,
                    inner: Inner::Child { child: KillOnDrop(Some(child)), out, err, strace_log },
                })
            }
        }
    }

    /// Waits for the program to end (at most `limit`) and collects what it left.
    pub fn wait(self, limit: Duration) -> Result<AppRun> {
        let Launched { pid, started, inner } = self;
        match inner {
            Inner::Traced { tracer, events } => {
                let out = tracer.wait(limit).context("socktrace with its program")?;
                let elapsed = started.elapsed();
                let file = std::fs::read_to_string(&events)
                    .with_context(|| format!("socktrace wrote no {}; stderr:\n{}", events.display(), out.stderr))?;
                let parsed = TracerOutput { status: out.status, stdout: file, stderr: String::new() };
                let (events, summary) = parsed.json()?;
                Ok(AppRun {
                    pid,
                    status: out.status,
                    stdout: out.stdout,
                    stderr: out.stderr,
                    elapsed,
                    events,
                    summary,
                    strace: None,
                })
            }
            Inner::Child { mut child, out, err, strace_log } => {
                let c = child.0.as_mut().unwrap();
                let status =
                    wait_timeout(c, limit)?.ok_or_else(|| anyhow!("pid {pid} still running after {limit:?}"))?;
                child.0 = None;
                let elapsed = started.elapsed();
                let stdout = out.join().map_err(|_| anyhow!("stdout reader panicked"))?;
                let stderr = err.join().map_err(|_| anyhow!("stderr reader panicked"))?;
                let strace = match strace_log {
                    Some(p) => Some(std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?),
                    None => None,
                };
                Ok(AppRun { pid, status, stdout, stderr, elapsed, events: Vec::new(), summary: None, strace })
            }
        }
    }
}

fn unique_path(dir: &Path, stem: &str, ext: &str) -> PathBuf {
    (0..).map(|n| dir.join(format!("{stem}.{n}.{ext}"))).find(|p| !p.exists()).unwrap()
}

/// Runs `argv` in the client namespace to completion.
pub fn run_client(lab: &Lab, argv: &[&str], mode: Mode) -> Result<AppRun> {
    Launched::start(&lab.client, argv, mode, &lab.dir)?.wait(PROGRAM_LIMIT)
}

// ---------------------------------------------------------------------------------------
// curl

/// curl's `-w` report, one JSON line (printed on failures too).
const CURL_REPORT: &str =
    r#"{"http_code":"%{http_code}","exitcode":%{exitcode},"time_total":%{time_total},"remote_ip":"%{remote_ip}"}\n"#;

/// `curl -sS -o /dev/null -w REPORT ARGS` in the client namespace.
pub fn curl(lab: &Lab, args: &[&str], mode: Mode) -> Result<AppRun> {
    let mut argv = vec!["curl", "-sS", "-o", "/dev/null", "-w", CURL_REPORT];
    argv.extend_from_slice(args);
    run_client(lab, &argv, mode)
}

/// Case 2: `curl --connect-timeout 1` to the blackhole. curl polls (POLLOUT) in slices until
/// its timer expires, then close(fd) and exit code 28.
pub fn curl_connect_timeout(lab: &Lab, mode: Mode) -> Result<AppRun> {
    let run = curl(lab, &["--connect-timeout", "1", &lab.upstream_url(BLACKHOLE_PORT, "")], mode)?;
    ensure!(run.status.code() == Some(28), "curl should time out (28): {run:#?}");
    ensure!(run.stderr.contains("Timeout was reached"), "curl's message: {}", run.stderr);
    let total = run.report()["time_total"].as_f64().unwrap_or(0.0);
    ensure!((0.9..3.0).contains(&total), "curl gave up after {total} s");
    Ok(run)
}

// ---------------------------------------------------------------------------------------
// nginx

/// What one nginx run left: nginx's own run (master; its worker did the proxying), the two
/// requests' answers, and its error log.
#[derive(Debug)]
pub struct NginxRun {
    pub nginx: AppRun,
    pub master: u32,
    pub worker: u32,
    /// curl's report for `/blackhole/` and for `/silent/`.
    pub blackhole: Value,
    pub silent: Value,
    pub error_log: String,
}

fn nginx_conf(lab: &Lab, prefix: &Path) -> String {
    let p = prefix.display();
    let up = lab.upstream_addr();
    format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log info;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n    access_log {p}/access.log;\n    client_body_temp_path {p}/client_body;\n    \
         proxy_temp_path {p}/proxy;\n    fastcgi_temp_path {p}/fastcgi;\n    uwsgi_temp_path {p}/uwsgi;\n    \
         scgi_temp_path {p}/scgi;\n    server {{\n        listen 127.0.0.1:{NGINX_PORT};\n        \
         location /blackhole/ {{\n            proxy_pass http://{up}:{BLACKHOLE_PORT};\n            \
         proxy_connect_timeout 1s;\n        }}\n        location /silent/ {{\n            \
         proxy_pass http://{up}:{SILENT_PORT};\n            proxy_read_timeout 1s;\n        }}\n    }}\n}}\n"
    )
}

/// Case 1: nginx as a reverse proxy in the client namespace (`daemon off; master_process on;
/// worker_processes 1`, everything under a scratch prefix). A request to `/blackhole/` proxies
/// to the blackhole with `proxy_connect_timeout 1s`, one to `/silent/` to the silent server
/// with `proxy_read_timeout 1s`; curl gets 504 for both and the error log says "upstream
/// timed out (110: ...)" for each. The worker close()s the upstream connection, then answers
/// 504. nginx is stopped with SIGQUIT (graceful) at the end.
pub fn nginx_proxy(lab: &Lab, mode: Mode) -> Result<NginxRun> {
    let _silent = lab.silent_server()?;
    let prefix = lab.path("nginx");
    std::fs::create_dir_all(&prefix)?;
    let conf = prefix.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(lab, &prefix))?;
    let (prefix_s, conf_s) = (prefix.to_str().context("path")?, conf.to_str().context("path")?);
    let error_log = prefix.join("error.log");
    let error_s = error_log.to_str().context("path")?;
    let launched =
        Launched::start(&lab.client, &["nginx", "-e", error_s, "-p", prefix_s, "-c", conf_s], mode, &lab.dir)?;
    let pid_file = prefix.join("nginx.pid");
    let asked = (|| -> Result<(u32, u32, Value, Value)> {
        wait_listening(&lab.client, NGINX_PORT, SERVER_LIMIT)?;
        let master: u32 = std::fs::read_to_string(&pid_file)?.trim().parse().context("nginx.pid")?;
        ensure!(master == launched.pid, "nginx's master is {master}, not the started {}", launched.pid);
        let worker = child_of(master)?;
        let mut answers = Vec::new();
        for path in ["blackhole/", "silent/"] {
            let url = format!("http://127.0.0.1:{NGINX_PORT}/{path}");
            let r = curl(lab, &["--max-time", "10", &url], Mode::Plain)?;
            ensure!(r.status.success(), "curl {url}: {r:#?}");
            answers.push(r.report());
        }
        let silent = answers.pop().unwrap();
        Ok((master, worker, answers.pop().unwrap(), silent))
    })();
    // SAFETY: signalling the nginx master this fixture started (a graceful stop).
    unsafe { libc::kill(launched.pid as i32, libc::SIGQUIT) };
    let nginx = launched.wait(PROGRAM_LIMIT);
    let (master, worker, blackhole, silent) = asked?;
    let nginx = nginx?;
    let error_log = std::fs::read_to_string(&error_log).unwrap_or_default();
    for (what, answer) in [("blackhole", &blackhole), ("silent", &silent)] {
        ensure!(answer["http_code"] == "504", "nginx should answer 504 for {what}: {answer}\nerror log:\n{error_log}");
        let total = answer["time_total"].as_f64().unwrap_or(0.0);
        ensure!((0.9..3.0).contains(&total), "nginx answered {what} after {total} s");
    }
    for phase in ["while connecting to upstream", "while reading response header from upstream"] {
        ensure!(
            error_log
                .lines()
                .any(|l| l.contains("upstream timed out (110: Connection timed out)") && l.contains(phase)),
            "nginx's error log has no timeout {phase}:\n{error_log}"
        );
    }
    ensure!(nginx.status.success(), "nginx exited with {}: {}", nginx.status, nginx.stderr);
    Ok(NginxRun { nginx, master, worker, blackhole, silent, error_log })
}

// ---------------------------------------------------------------------------------------
// CPython

/// `client.py WHAT UPSTREAM PORT` in the client namespace, whatever its exit status.
fn python_run(lab: &Lab, what: &str, port: u16, mode: Mode) -> Result<AppRun> {
    let script = apps_file("client.py");
    let script = script.to_str().context("path")?;
    run_client(lab, &[PYTHON, script, what, &lab.upstream_addr(), &port.to_string()], mode)
}

fn python_client(lab: &Lab, what: &str, port: u16, mode: Mode) -> Result<AppRun> {
    let run = python_run(lab, what, port, mode)?;
    ensure!(run.status.success(), "client.py {what}: {run:#?}");
    Ok(run)
}

/// Case 3a: `socket.create_connection((blackhole), timeout=1)` raises TimeoutError; CPython
/// polls (POLLOUT, 1000 ms), then close(fd).
pub fn python_connect_timeout(lab: &Lab, mode: Mode) -> Result<AppRun> {
    let run = python_client(lab, "connect", BLACKHOLE_PORT, mode)?;
    let r = run.report();
    ensure!(r["outcome"] == "TimeoutError", "expected TimeoutError: {r}");
    ensure_about_a_second(&r, "elapsed")?;
    Ok(run)
}

/// Case 3b: connects to the silent server, sends a request, `recv` with `settimeout(1)`:
/// TimeoutError after poll(POLLIN, 1000 ms), then close(fd).
pub fn python_read_timeout(lab: &Lab, mode: Mode) -> Result<AppRun> {
    let _silent = lab.silent_server()?;
    let run = python_client(lab, "read", SILENT_PORT, mode)?;
    let r = run.report();
    ensure!(r["outcome"] == "TimeoutError", "expected TimeoutError: {r}");
    ensure_about_a_second(&r, "elapsed")?;
    Ok(run)
}

/// A scanner's pattern: 100 connects to the blackhole closed at once, then one closed after
/// 50 ms (its source port reported).
pub fn python_scan(lab: &Lab, mode: Mode) -> Result<AppRun> {
    let run = python_client(lab, "scan", BLACKHOLE_PORT, mode)?;
    ensure!(run.report()["outcome"] == "closed", "client.py scan: {run:#?}");
    Ok(run)
}

/// A program that exits (status 3) with a connect to the blackhole still waiting: the exit
/// closes the socket, after the process's exit was traced.
pub fn python_exit_while_connecting(lab: &Lab, mode: Mode) -> Result<AppRun> {
    let run = python_run(lab, "exit", BLACKHOLE_PORT, mode)?;
    ensure!(run.status.code() == Some(3), "client.py exit should exit with 3: {run:#?}");
    ensure!(run.report()["outcome"] == "exiting", "client.py exit: {run:#?}");
    Ok(run)
}

/// Negative case: `http.client.HTTPConnection` does two GETs on one keep-alive connection to
/// the HTTP server, stays idle 1.5 s, and closes it, as a pool drops an idle connection.
pub fn python_keepalive_idle_close(lab: &Lab, mode: Mode) -> Result<AppRun> {
    let _http = lab.http_server()?;
    let run = python_client(lab, "keepalive", HTTP_PORT, mode)?;
    let r = run.report();
    ensure!(r["statuses"] == serde_json::json!([200, 200]), "two answers: {r}");
    ensure!(r["sports"][0] == r["sports"][1], "one connection for both requests: {r}");
    Ok(run)
}

fn ensure_about_a_second(report: &Value, key: &str) -> Result<()> {
    let t = report[key].as_f64().unwrap_or(0.0);
    ensure!((0.9..3.0).contains(&t), "gave up after {t} s, not about 1 s: {report}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Java

/// The compiled `JavaClient` (tests/tools/apps/JavaClient.java) under `target/apps/java`,
/// compiled once per run and only when the source is newer than the class.
pub fn java_classes() -> Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let src = apps_file("JavaClient.java");
            let out = apps_target().join("java");
            let class = out.join("JavaClient.class");
            if !is_up_to_date(&class, &[&src]) {
                std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
                let status = Command::new("javac")
                    .args(["-nowarn", "-d"])
                    .arg(&out)
                    .arg(&src)
                    .status()
                    .map_err(|e| format!("javac (default-jdk-headless): {e}"))?;
                if !status.success() {
                    return Err(format!("javac {} failed: {status}", src.display()));
                }
            }
            Ok(out)
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// Whether `out` exists and is newer than every source.
fn is_up_to_date(out: &Path, sources: &[&Path]) -> bool {
    let Ok(built) = std::fs::metadata(out).and_then(|m| m.modified()) else { return false };
    sources.iter().all(|s| std::fs::metadata(s).and_then(|m| m.modified()).is_ok_and(|t| t <= built))
}

/// Case 4: Java 17's `java.net.http.HttpClient` with `connectTimeout(1 s)` to the blackhole:
/// `HttpConnectTimeoutException`. The selector thread closes the channel (close(fd)).
pub fn java_connect_timeout(lab: &Lab, mode: Mode) -> Result<AppRun> {
    let classes = java_classes()?;
    let cp = classes.to_str().context("path")?;
    let url = lab.upstream_url(BLACKHOLE_PORT, "");
    // Quick start, few threads: tests, not a service.
    let argv = ["java", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", cp, "JavaClient", "get", &url];
    let run = run_client(lab, &argv, mode)?;
    ensure!(run.status.success(), "JavaClient: {run:#?}");
    let r = run.report();
    ensure!(r["exception"] == "HttpConnectTimeoutException", "expected HttpConnectTimeoutException: {r}");
    ensure_about_a_second(&r, "elapsed")?;
    Ok(run)
}

// ---------------------------------------------------------------------------------------
// Go

/// The Go client (tests/tools/apps/go), built once per run into `target/apps/goclient` when
/// its source is newer; standard library only, offline (GOPROXY=off), with its caches under
/// target/apps.
pub fn go_client() -> Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let src = apps_file("go");
            let target = apps_target();
            let bin = target.join("goclient");
            if !is_up_to_date(&bin, &[&src.join("main.go"), &src.join("go.mod")]) {
                std::fs::create_dir_all(&target).map_err(|e| e.to_string())?;
                let status = Command::new("go")
                    .args(["build", "-o"])
                    .arg(&bin)
                    .arg(".")
                    .current_dir(&src)
                    .env("GOCACHE", target.join("go-cache"))
                    .env("GOPATH", target.join("go-path"))
                    .env("GOTOOLCHAIN", "local")
                    .env("GOPROXY", "off")
                    .env("GOFLAGS", "")
                    .status()
                    .map_err(|e| format!("go (golang-go): {e}"))?;
                if !status.success() {
                    return Err(format!("go build in {} failed: {status}", src.display()));
                }
            }
            Ok(bin)
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

fn go_get(lab: &Lab, port: u16, mode: Mode) -> Result<AppRun> {
    let bin = go_client()?;
    let run = run_client(lab, &[bin.to_str().context("path")?, "get", &lab.upstream_url(port, "")], mode)?;
    ensure!(run.status.success(), "goclient: {run:#?}");
    let r = run.report();
    ensure!(r["timeout"] == true, "expected a timeout error: {r}");
    let error = r["error"].as_str().unwrap_or("");
    ensure!(error.contains("Client.Timeout exceeded"), "Go's error: {error}");
    ensure_about_a_second(&r, "elapsed")?;
    Ok(run)
}

/// Case 5a: Go's `http.Client{Timeout: 1.5s}` to the blackhole: "context deadline exceeded
/// (Client.Timeout exceeded while awaiting headers)"; a runtime thread close()s the fd.
pub fn go_connect_timeout(lab: &Lab, mode: Mode) -> Result<AppRun> {
    go_get(lab, BLACKHOLE_PORT, mode)
}

/// Case 5b: the same client to the silent server: the request is sent, the answer never
/// comes; the same error and close(fd). The timer covers the whole request, so the socket is
/// closed a little less than 1.5 s after the request was sent.
pub fn go_read_timeout(lab: &Lab, mode: Mode) -> Result<AppRun> {
    let _silent = lab.silent_server()?;
    go_get(lab, SILENT_PORT, mode)
}

// ---------------------------------------------------------------------------------------
// Node

fn node_client(lab: &Lab, what: &str, port: u16, mode: Mode) -> Result<AppRun> {
    let script = apps_file("client.js");
    let argv = ["node", script.to_str().context("path")?, what, &lab.upstream_addr(), &port.to_string()];
    let run = run_client(lab, &argv, mode)?;
    ensure!(run.status.success(), "client.js {what}: {run:#?}");
    let r = run.report();
    ensure!(r["outcome"] == "timeout", "expected the socket's timeout: {r}");
    ensure!(r["connected"] == (what == "read"), "connected: {r}");
    ensure_about_a_second(&r, "elapsed")?;
    Ok(run)
}

/// Case 6a: `net.connect` to the blackhole with `socket.setTimeout(1000)` and `destroy()` on
/// the timeout; libuv close()s the fd.
pub fn node_connect_timeout(lab: &Lab, mode: Mode) -> Result<AppRun> {
    node_client(lab, "connect", BLACKHOLE_PORT, mode)
}

/// Case 6b: the same to the silent server, after writing a request.
pub fn node_read_timeout(lab: &Lab, mode: Mode) -> Result<AppRun> {
    let _silent = lab.silent_server()?;
    node_client(lab, "read", SILENT_PORT, mode)
}

// ---------------------------------------------------------------------------------------
// Negative cases

/// Negative case: a complete HTTP exchange, curl to the HTTP server (exit 0, 200).
pub fn curl_complete_exchange(lab: &Lab, mode: Mode) -> Result<AppRun> {
    let _http = lab.http_server()?;
    let run = curl(lab, &["--max-time", "10", &lab.upstream_url(HTTP_PORT, "")], mode)?;
    ensure!(run.status.success(), "curl: {run:#?}");
    ensure!(run.report()["http_code"] == "200", "curl's answer: {}", run.stdout);
    Ok(run)
}

/// The name Happy Eyeballs resolves (through `--resolve`, no /etc/hosts).
pub const EYEBALLS_NAME: &str = "dual.test";

/// Negative case, Happy Eyeballs: one name with two addresses (`--resolve
/// dual.test:PORT:[::1],127.0.0.1`) and a listener on 127.0.0.1 only, in the client
/// namespace. curl tries ::1 first: its non-blocking connect is refused (POLLERR, then
/// getsockopt(SO_ERROR) = ECONNREFUSED), curl closes that socket and connects to 127.0.0.1,
/// which answers 200.
pub fn curl_happy_eyeballs(lab: &Lab, mode: Mode) -> Result<AppRun> {
    let _http = Server::python(&lab.client, "http", "127.0.0.1", HTTP_PORT)?;
    let resolve = format!("{EYEBALLS_NAME}:{HTTP_PORT}:[::1],127.0.0.1");
    let url = format!("http://{EYEBALLS_NAME}:{HTTP_PORT}/");
    let run = curl(lab, &["--max-time", "10", "--resolve", &resolve, &url], mode)?;
    ensure!(run.status.success(), "curl: {run:#?}");
    let r = run.report();
    ensure!(r["http_code"] == "200" && r["remote_ip"] == "127.0.0.1", "curl's answer: {r}");
    Ok(run)
}

/// Negative case, Happy Eyeballs lost: the same, but ::1's SYNs are dropped in the client
/// namespace (no refusal). curl's connect to ::1 waits; 200 ms later it connects to
/// 127.0.0.1, which answers at once, and curl closes the ::1 socket still in SYN_SENT: a
/// connect given up because another one to the same service won.
pub fn curl_happy_eyeballs_v6_silent(lab: &Lab, mode: Mode) -> Result<AppRun> {
    lab.client.nft(&format!(
        "table ip6 socktrace_eyeballs {{\n chain output {{\n  type filter hook output priority 0;\n  ip6 daddr ::1 \
         tcp dport {HTTP_PORT} drop\n }}\n}}\n"
    ));
    curl_happy_eyeballs(lab, mode)
}

// ---------------------------------------------------------------------------------------
// A peer killed with SIGKILL

/// What the killed-peer case left.
#[derive(Debug)]
pub struct KilledRun {
    /// The client: `client.py unread`, which got ECONNRESET in recv.
    pub client: AppRun,
    pub server_pid: u32,
    /// The server's /proc/PID/comm before it was killed (KILLED_COMM).
    pub server_comm: String,
    /// The server's threads before it was killed: (tid, comm).
    pub server_threads: Vec<(u32, String)>,
    /// Bytes of the client's data the server held unread.
    pub unread: u64,
    pub server_status: ExitStatus,
}

fn threads_of(pid: u32) -> Vec<(u32, String)> {
    let mut out: Vec<(u32, String)> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| {
            let tid = t.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            Some((tid, comm.trim().to_string()))
        })
        .collect();
    out.sort();
    out
}

/// Case 8: the server `redis-like` (servers.py killed) accepts the client's connection and
/// leaves its data unread; its helper thread `bio_close_file` holds the only reference to
/// the socket (its own file table). The client (client.py unread) waits in recv; the server
/// is killed with SIGKILL, its kernel closes the socket in the helper thread's exit and,
/// with unread data, sends an RST: the client's recv fails with ECONNRESET.
pub fn killed_peer(lab: &Lab, mode: Mode) -> Result<KilledRun> {
    let mut server = Server::python(&lab.upstream, "killed", &lab.upstream_addr(), KILLED_PORT)?;
    let script = apps_file("client.py");
    let argv = [PYTHON, script.to_str().context("path")?, "unread", &lab.upstream_addr(), &KILLED_PORT.to_string()];
    let launched = Launched::start(&lab.client, &argv, mode, &lab.dir)?;
    let holding = server.wait_line("holding ", SERVER_LIMIT);
    let server_pid = server.pid;
    let server_comm =
        std::fs::read_to_string(format!("/proc/{server_pid}/comm")).unwrap_or_default().trim().to_string();
    let server_threads = threads_of(server_pid);
    let server_status = server.kill()?;
    let client = launched.wait(PROGRAM_LIMIT)?;
    let unread: u64 = holding?.parse().context("unread byte count")?;
    ensure!(unread > 0, "the server should hold unread data");
    ensure!(server_comm == KILLED_COMM, "the server's name: {server_comm:?}");
    ensure!(
        server_threads.iter().any(|(_, c)| c == "bio_close_file"),
        "the server's helper thread: {server_threads:?}"
    );
    use std::os::unix::process::ExitStatusExt as _;
    ensure!(server_status.signal() == Some(libc::SIGKILL), "the server died of {server_status}");
    ensure!(client.status.success(), "client.py unread: {client:#?}");
    let r = client.report();
    ensure!(r["outcome"] == "ConnectionResetError" && r["errno"] == libc::ECONNRESET, "the client's recv: {r}");
    Ok(KilledRun { client, server_pid, server_comm, server_threads, unread, server_status })
}

// ---------------------------------------------------------------------------------------
// strace

/// How a program ended the socket it connected to some address, from an strace log
/// (`strace -f -ttt`, [`STRACE_CALLS`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SocketEnd {
    /// `close` or `shutdown`.
    pub syscall: String,
    pub fd: i64,
    /// The thread that connected, and the one that ended the socket.
    pub connect_tid: u32,
    pub end_tid: u32,
    /// Whether the connect returned EINPROGRESS.
    pub in_progress: bool,
    /// The first poll-family call (any thread) between the connect and the end.
    pub waited_in: Option<String>,
    /// From the connect to the end.
    pub waited: Duration,
    /// From the last write/send on the socket to the end, if anything was sent.
    pub since_last_send: Option<Duration>,
}

struct StraceLine<'a> {
    tid: u32,
    ts: f64,
    call: &'a str,
}

fn strace_line(line: &str) -> Option<StraceLine<'_>> {
    // `TID  SECONDS.MICROS call(...) = ret`, with one or more spaces between the fields.
    let (tid, rest) = line.trim_start().split_once(' ')?;
    let (ts, call) = rest.trim_start().split_once(' ')?;
    Some(StraceLine { tid: tid.parse().ok()?, ts: ts.parse().ok()?, call: call.trim_start() })
}

/// Whether `call` is `name(FD` followed by `)`, `,` or ` ` (so fd 6 is not fd 61).
fn on_fd(call: &str, name: &str, fd: i64) -> bool {
    call.strip_prefix(name)
        .and_then(|r| r.strip_prefix('('))
        .and_then(|r| r.strip_prefix(&fd.to_string()))
        .is_some_and(|r| r.starts_with([')', ',', ' ']))
}

/// The first connect to `daddr:dport` in `log`, and how that socket ended.
pub fn socket_end(log: &str, daddr: &str, dport: u16) -> Result<SocketEnd> {
    let lines: Vec<StraceLine> = log.lines().filter_map(strace_line).collect();
    let port = format!("htons({dport})");
    let (at, conn) = lines
        .iter()
        .enumerate()
        .find(|(_, l)| l.call.starts_with("connect(") && l.call.contains(&port) && l.call.contains(daddr))
        .with_context(|| format!("no connect to {daddr}:{dport} in the strace log"))?;
    let fd: i64 =
        conn.call["connect(".len()..].split(',').next().and_then(|f| f.parse().ok()).context("connect's fd")?;
    // A connect other threads interrupted in the log ends on a `<... connect resumed>` line.
    let in_progress = if conn.call.contains(" = ") {
        conn.call.contains("EINPROGRESS")
    } else {
        lines[at + 1..]
            .iter()
            .find(|l| l.tid == conn.tid && l.call.starts_with("<... connect resumed>"))
            .is_some_and(|l| l.call.contains("EINPROGRESS"))
    };
    let mut waited_in = None;
    let mut last_send = None;
    for l in &lines[at + 1..] {
        let name = l.call.split('(').next().unwrap_or("");
        if waited_in.is_none() && matches!(name, "poll" | "ppoll" | "epoll_wait" | "epoll_pwait") {
            waited_in = Some(name.to_string());
        }
        if ["write", "writev", "sendto", "sendmsg"].iter().any(|n| on_fd(l.call, n, fd)) {
            last_send = Some(l.ts);
        }
        for end in ["close", "shutdown"] {
            if on_fd(l.call, end, fd) {
                return Ok(SocketEnd {
                    syscall: end.to_string(),
                    fd,
                    connect_tid: conn.tid,
                    end_tid: l.tid,
                    in_progress,
                    waited_in,
                    waited: Duration::from_secs_f64(l.ts - conn.ts),
                    since_last_send: last_send.map(|t| Duration::from_secs_f64(l.ts - t)),
                });
            }
        }
    }
    bail!("the socket (fd {fd}) to {daddr}:{dport} was never closed or shut down in the strace log")
}

/// Every `connect` result in the log for `daddr` (any port), e.g. to see Happy Eyeballs'
/// refused first attempt: (fd, what getsockopt(SO_ERROR) said on that fd next, if anything).
pub fn so_errors_after_connect(log: &str, daddr: &str) -> Vec<(i64, Option<String>)> {
    let lines: Vec<StraceLine> = log.lines().filter_map(strace_line).collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if !(l.call.starts_with("connect(") && l.call.contains(daddr)) {
            continue;
        }
        let Some(fd) = l.call["connect(".len()..].split(',').next().and_then(|f| f.parse::<i64>().ok()) else {
            continue;
        };
        let so_error = lines[i + 1..]
            .iter()
            .take_while(|n| !on_fd(n.call, "close", fd))
            .find(|n| on_fd(n.call, "getsockopt", fd) && n.call.contains("SO_ERROR"))
            .and_then(|n| n.call.split('[').nth(1))
            .and_then(|v| v.split(']').next())
            .map(str::to_string);
        out.push((fd, so_error));
    }
    out
}
