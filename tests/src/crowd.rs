//! A driver for `crowd` processes (tests/src/bin/crowd.rs): each is started with its role,
//! talks in lines on stdin/stdout, and is killed when its driver is dropped. Shared by the
//! scale test and the busy-server bench.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// One crowd process, driven by lines; killed on drop.
pub struct Crowd {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Crowd {
    pub fn start(bin: &Path, args: &[&str]) -> Crowd {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Crowd { child, stdin, lines }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("writing to crowd");
        self.stdin.flush().unwrap();
    }

    /// The next line, which must start with `prefix`, within `limit`.
    #[track_caller]
    pub fn expect(&self, prefix: &str, limit: Duration) -> String {
        let line = self.lines.recv_timeout(limit).unwrap_or_else(|e| match e {
            mpsc::RecvTimeoutError::Timeout => {
                panic!("crowd {} said nothing within {limit:?} (waiting for {prefix:?})", self.pid())
            }
            mpsc::RecvTimeoutError::Disconnected => {
                panic!("crowd {} ended (waiting for {prefix:?}); its errors are above", self.pid())
            }
        });
        assert!(line.starts_with(prefix), "crowd {}: expected {prefix:?}, got {line:?}", self.pid());
        line
    }

    /// The number after `prefix` in the answer to `ask`.
    pub fn count(&mut self, ask: &str, prefix: &str) -> usize {
        self.send(ask);
        let line = self.expect(prefix, Duration::from_secs(30));
        line[prefix.len()..].trim().parse().expect("a count")
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
