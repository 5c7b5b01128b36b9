//! What the fleet tests need around socktrace: a real Prometheus server (Debian's package,
//! installed by `./x setup`) scraping the agent, a plain HTTP GET to read both, and cgroups
//! named the way container runtimes name theirs.

use anyhow::{bail, Context as _, Result};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `GET path` on loopback: (status, body). HTTP/1.0 with the connection closed by the
/// server, so the body is whatever comes until EOF. Bounded by a 10 s timeout.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no HTTP status")?;
    Ok((status, body.to_string()))
}

/// The repository's root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace").to_path_buf()
}

/// A program of the Python environment `./x setup` makes for these tests
/// (`SOCKTRACE_PY_BIN` overrides its bin directory).
pub fn python_tool(name: &str) -> PathBuf {
    let bin = std::env::var_os("SOCKTRACE_PY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/tools/py/bin"));
    let tool = bin.join(name);
    assert!(
        tool.exists(),
        "{} is missing: `./x setup` installs it (kubernetes-validate and opentelemetry-proto from PyPI)",
        tool.display()
    );
    tool
}

/// An OTLP/HTTP receiver (tests/tools/otlp_receiver.py: OpenTelemetry's official protobufs
/// decode each request), appending every request it gets, decoded, to a JSON-lines file;
/// the first `fail_first` requests are answered 503. Stopped on drop.
pub struct OtlpReceiver {
    child: Child,
    pub out: PathBuf,
    pub port: u16,
}

impl OtlpReceiver {
    pub fn start(fail_first: u32) -> Result<OtlpReceiver> {
        let out = std::env::temp_dir().join(format!("socktrace-otlp-{}-{}.jsonl", std::process::id(), free_port()));
        let _ = std::fs::remove_file(&out);
        Self::start_with(out, 0, fail_first)
    }

    /// The receiver stops answering (its port refuses connections) until `restart`.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Back on the same port, appending to the same file.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let again = Self::start_with(self.out.clone(), self.port, 0)?;
        let old = std::mem::replace(self, again);
        // The old one is stopped already; its file is the new one's: keep it.
        std::mem::forget(old);
        Ok(())
    }

    fn start_with(out: PathBuf, port: u16, fail_first: u32) -> Result<OtlpReceiver> {
        use std::io::BufRead as _;
        let mut child = Command::new(python_tool("python"))
            .arg(workspace().join("tests/tools/otlp_receiver.py"))
            .arg(&out)
            .args(["--fail-first", &fail_first.to_string(), "--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the OTLP receiver")?;
        let stdout = child.stdout.take().context("its stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).context("the OTLP receiver did not start within 30 s")?;
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("unexpected {line:?}"))?;
        Ok(OtlpReceiver { child, out, port })
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Polls until `pred` holds for the requests received (at most `limit`).
    pub fn wait_for(
        &self,
        limit: Duration,
        what: &str,
        pred: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Result<Vec<serde_json::Value>> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.requests();
            if pred(&got) {
                return Ok(got);
            }
            if Instant::now() > deadline {
                bail!("{what}: not within {limit:?}; received: {got:#?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.out);
    }
}

/// An OTLP attribute's value from a decoded (`MessageToDict`) attribute list: the string,
/// or the integer (protobuf's JSON writes int64 as a string).
pub fn otlp_attr<'a>(attributes: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    let kv = attributes.as_array()?.iter().find(|kv| kv["key"] == key)?;
    kv["value"]["stringValue"].as_str().or_else(|| kv["value"]["intValue"].as_str())
}

/// The address of the metrics endpoint `socktrace agent` announced on stderr.
pub fn metrics_addr(stderr: &str) -> SocketAddr {
    let line =
        stderr.lines().find(|l| l.contains("Prometheus metrics at http://")).unwrap_or_else(|| panic!("{stderr}"));
    line.split("http://")
        .nth(1)
        .and_then(|u| u.trim_end_matches("/metrics").parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("binding an ephemeral port")
}

/// A Prometheus server scraping `target` every second, with its data in a directory of its
/// own; stopped and removed on drop.
pub struct Prometheus {
    child: Child,
    dir: PathBuf,
    pub addr: SocketAddr,
}

impl Prometheus {
    pub fn start(target: SocketAddr) -> Result<Prometheus> {
        let dir = std::env::temp_dir().join(format!("socktrace-prometheus-{}-{}", std::process::id(), target.port()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: socktrace\n    \
                 scrape_interval: 1s\n    scrape_timeout: 1s\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )?;
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting prometheus (./x setup installs Debian's package)")?;
        let p = Prometheus { child, dir, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(p.addr, "/-/ready").ok().map(|(s, _)| s) != Some(200) {
            if Instant::now() > deadline {
                bail!("prometheus not ready within 30 s: {}", p.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(p)
    }

    /// An instant query through the HTTP API: the `data.result` array.
    pub fn query(&self, promql: &str) -> Result<Vec<serde_json::Value>> {
        let (status, body) = http_get(self.addr, &format!("/api/v1/query?query={}", url_encode(promql)))?;
        if status != 200 {
            bail!("query {promql:?}: HTTP {status}: {body}");
        }
        let v: serde_json::Value = serde_json::from_str(&body)?;
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// Polls `promql` until it returns a series (at most `limit`).
    pub fn wait_for(&self, promql: &str, limit: Duration) -> Result<Vec<serde_json::Value>> {
        let deadline = Instant::now() + limit;
        loop {
            let result = self.query(promql)?;
            if !result.is_empty() {
                return Ok(result);
            }
            if Instant::now() > deadline {
                bail!(
                    "no series for {promql:?} within {limit:?}; targets: {:?}; log: {}",
                    http_get(self.addr, "/api/v1/targets").map(|r| r.1),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The cgroup2 mount point.
pub fn cgroup2_root() -> PathBuf {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("reading mountinfo")
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mount = left.split_whitespace().nth(4)?;
            (right.split_whitespace().next() == Some("cgroup2")).then(|| PathBuf::from(mount))
        })
        .expect("a cgroup v2 hierarchy is mounted")
}

/// A cgroup tree the test makes (e.g. `socktrace-test-N/docker-<id>.scope`, the way docker's
/// systemd driver names a container's) and removes on drop, its processes moved back to the
/// root first.
pub struct TestCgroup {
    /// The outermost directory made, absolute.
    top: PathBuf,
    /// The innermost, absolute.
    pub path: PathBuf,
}

impl TestCgroup {
    /// `relative`: below the cgroup2 root, e.g. "socktrace-test-12/docker-<id>.scope".
    pub fn create(relative: &str) -> Result<TestCgroup> {
        let root = cgroup2_root();
        let path = root.join(relative);
        let first = Path::new(relative).components().next().context("an empty cgroup path")?;
        let top = root.join(first);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TestCgroup { top, path })
    }

    pub fn add(&self, pid: u32) -> Result<()> {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("moving {pid} into {}", self.path.display()))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let root = cgroup2_root();
        // Deepest first: every directory below the top, then the top.
        let mut dirs = vec![self.top.clone()];
        let mut i = 0;
        while i < dirs.len() {
            if let Ok(entries) = std::fs::read_dir(&dirs[i]) {
                dirs.extend(entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
            }
            i += 1;
        }
        for dir in dirs.iter().rev() {
            if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs.lines() {
                    let _ = std::fs::write(root.join("cgroup.procs"), pid);
                }
            }
            let _ = std::fs::remove_dir(dir);
        }
    }
}
