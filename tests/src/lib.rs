//! Harness for socktrace's end-to-end tests: start a scenario process, attach the real
//! `socktrace -p` to it, let it fail, and collect both sides' accounts.
//!
//! These tests need root and a BPF-capable kernel. They never skip: without either, they fail
//! and say why.

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::Value;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long socktrace may take to attach, and a scenario to run, before the test fails.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The socktrace binary under test: `SOCKTRACE_BIN`, or the one built next to the tests.
pub fn socktrace_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SOCKTRACE_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test-binary> -> target/<profile>/socktrace
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>");
    let bin = profile_dir.join("socktrace");
    assert!(
        bin.exists(),
        "{} not built: run the suite through `./x test` (or `cargo build -p socktrace` first)",
        bin.display()
    );
    bin
}

/// Fails the test unless we are root: the suite loads real BPF programs.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "the end-to-end tests load BPF programs: run them as root (./x test does)");
}

/// What one traced run produced.
#[derive(Debug)]
pub struct Run {
    /// socktrace's stdout, one parsed JSON object per line.
    pub events: Vec<Value>,
    /// socktrace's stderr.
    pub stderr: String,
    pub socktrace_status: std::process::ExitStatus,
    /// What the scenario reported about its own calls.
    pub client: Vec<Value>,
    pub client_pid: u32,
}

impl Run {
    pub fn client_step(&self, step: &str) -> &Value {
        self.client
            .iter()
            .find(|v| v["step"] == step)
            .unwrap_or_else(|| panic!("scenario reported no step {step:?}: {:?}", self.client))
    }

    pub fn events_where(&self, key: &str, value: &Value) -> Vec<&Value> {
        self.events.iter().filter(|e| &e[key] == value).collect()
    }
}

struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `scenario ARGS` (from `scenario_bin`), attaches `socktrace -p PID --json EXTRA`,
/// lets the scenario run, and returns both accounts once both have exited.
pub fn trace_scenario(scenario_bin: &str, args: &[&str], extra: &[&str]) -> Result<Run> {
    require_root();
    let mut client = KillOnDrop(Some(
        Command::new(scenario_bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {scenario_bin}"))?,
    ));
    let c = client.0.as_mut().unwrap();
    let client_pid = c.id();
    let mut client_out = BufReader::new(c.stdout.take().unwrap());
    let mut first = String::new();
    client_out.read_line(&mut first)?;
    if first.trim() != "ready" {
        bail!("scenario did not get ready: {first:?}");
    }

    let mut tracer = KillOnDrop(Some(
        Command::new(socktrace_bin())
            .arg("-p")
            .arg(client_pid.to_string())
            .arg("--json")
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting socktrace")?,
    ));
    let t = tracer.0.as_mut().unwrap();
    let stderr_lines = spawn_line_reader(t.stderr.take().unwrap());
    let mut stdout = t.stdout.take().unwrap();
    let stdout_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });

    let mut stderr = String::new();
    let deadline = Instant::now() + ATTACH_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match stderr_lines.recv_timeout(left) {
            Ok(line) => {
                stderr.push_str(&line);
                stderr.push('\n');
                if line.contains("socktrace: attached") {
                    break;
                }
            }
            Err(_) => bail!("socktrace did not attach within {ATTACH_TIMEOUT:?}; stderr:\n{stderr}"),
        }
    }

    c.stdin.take().unwrap().write_all(b"go\n")?;
    let client_status = wait_timeout(c, RUN_TIMEOUT)?
        .ok_or_else(|| anyhow!("scenario {args:?} still running after {RUN_TIMEOUT:?}"))?;
    let mut rest = String::new();
    client_out.read_to_string(&mut rest)?;
    if !client_status.success() {
        bail!("scenario {args:?} failed: {client_status}; it printed {rest}");
    }
    client.0 = None;
    let client_report: Vec<Value> = rest
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("scenario line {l:?}")))
        .collect::<Result<_>>()?;

    let t = tracer.0.as_mut().unwrap();
    let status = wait_timeout(t, Duration::from_secs(15))?
        .ok_or_else(|| anyhow!("socktrace did not end within 15 s of the traced process's exit"))?;
    tracer.0 = None;
    while let Ok(line) = stderr_lines.recv_timeout(Duration::from_secs(5)) {
        stderr.push_str(&line);
        stderr.push('\n');
    }
    let out = stdout_reader.join().map_err(|_| anyhow!("stdout reader panicked"))?;
    let events = out
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("socktrace printed a non-JSON line {l:?}")))
        .collect::<Result<Vec<Value>>>()?;
    Ok(Run { events, stderr, socktrace_status: status, client: client_report, client_pid })
}

fn spawn_line_reader(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for `child` at most `limit`; None if it is still running.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Result<Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(Some(s));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
