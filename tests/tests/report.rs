//! `socktrace report`, end to end: real captures (the demo's whole catalogue, and a live trace
//! made here) rendered into a page, opened in a real headless Chromium (Debian's `chromium`,
//! which `./x test` installs), and checked in the DOM the browser built after the page's script
//! ran; a screenshot must show a picture. A synthesized capture of 200,000 failures from 2,000
//! connections must render under 8 MB; corrupt and truncated lines must be named with their
//! line numbers while the rest of the page renders.

use serde_json::Value;
use socktrace_tests::{require_root, socktrace_bin, wait_timeout};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SCENARIO: &str = env!("CARGO_BIN_EXE_scenario");
/// A browser that has not finished in this long is killed, and the test fails.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(120);
const DEMO_TIMEOUT: Duration = Duration::from_secs(180);
/// The page of 200,000 failures must weigh less than this.
const BIG_PAGE_LIMIT: usize = 8_000_000;

/// A directory of this test's own, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("socktrace-report-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Debian's chromium, or a failure that says how to get it.
fn chromium() -> PathBuf {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("chromium")).find(|p| p.is_file()))
        .unwrap_or_default();
    found.or_else(|| Some(PathBuf::from("/usr/bin/chromium")).filter(|p| p.is_file())).unwrap_or_else(|| {
        panic!("no chromium: these tests open the page in Debian's headless Chromium; `./x test` installs it (apt-get install chromium)")
    })
}

/// Runs headless Chromium on `page` with `args` (a fresh profile, no network services), at
/// most BROWSER_TIMEOUT; returns its standard output. It runs in a process group of its own,
/// killed whole when it is done or out of time.
fn browser(url: &str, args: &[&str], dir: &TempDir, tag: &str) -> String {
    use std::os::unix::process::CommandExt as _;
    let profile = dir.path(&format!("profile-{tag}"));
    let out_path = dir.path(&format!("browser-{tag}.out"));
    let err_path = dir.path(&format!("browser-{tag}.err"));
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .process_group(0)
        .spawn()
        .expect("starting chromium");
    let group = child.id() as i32;
    let status = wait_timeout(&mut child, BROWSER_TIMEOUT).unwrap();
    // SAFETY: signals the process group this test started (chromium and its helpers).
    unsafe { libc::kill(-group, libc::SIGKILL) };
    let _ = child.wait();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let status = status
        .unwrap_or_else(|| panic!("chromium {args:?} did not finish within {BROWSER_TIMEOUT:?}; it said:\n{stderr}"));
    assert!(status.success(), "chromium {args:?} failed: {status}\n{stderr}");
    std::fs::read_to_string(&out_path).unwrap()
}

fn url(page: &Path) -> String {
    format!("file://{}", page.display())
}

/// The page's DOM after its script ran.
fn dump_dom(page: &Path, dir: &TempDir) -> String {
    dump_dom_at(&url(page), dir)
}

fn dump_dom_at(url: &str, dir: &TempDir) -> String {
    let dom = browser(url, &["--dump-dom"], dir, "dom");
    assert!(dom.contains("data-ready=\"1\""), "the page's script did not run to its end (blocked? failed?)");
    dom
}

/// A screenshot of the page's first 1280x2000 pixels: it must be a picture, not a blank.
fn assert_screenshot_shows_something(page: &Path, dir: &TempDir) -> PathBuf {
    let png = dir.path("screenshot.png");
    browser(&url(page), &[&format!("--screenshot={}", png.display()), "--window-size=1280,2000"], dir, "shot");
    let file = std::io::BufReader::new(std::fs::File::open(&png).expect("chromium wrote no screenshot"));
    let mut reader = png::Decoder::new(file).read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("a frame size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let channels = info.color_type.samples();
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let pixels: Vec<[u8; 3]> =
        buf[..info.buffer_size()].chunks(channels).map(|p| [p[0], p[1 % channels], p[2 % channels]]).collect();
    let colours: BTreeSet<[u8; 3]> = pixels.iter().copied().collect();
    let inked = pixels.iter().filter(|p| p.iter().any(|&c| c < 200)).count();
    assert!((info.width, info.height) == (1280, 2000), "{}x{}", info.width, info.height);
    assert!(colours.len() >= 64, "a blank page? only {} colours", colours.len());
    assert!(inked * 100 >= pixels.len(), "a blank page? {inked} of {} pixels drawn", pixels.len());
    png
}

/// `socktrace report CAPTURE -o PAGE`: its stderr, checked to have succeeded.
fn render(capture: &Path, page: &Path) -> String {
    let out = Command::new(socktrace_bin())
        .args(["report", capture.to_str().unwrap(), "-o", page.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "socktrace report failed: {}\n{stderr}", out.status);
    assert!(page.is_file(), "{stderr}");
    stderr
}

/// A real capture of the demo's whole catalogue.
fn demo_capture(dir: &TempDir) -> PathBuf {
    require_root();
    let capture = dir.path("demo.ndjson");
    let mut child = Command::new(socktrace_bin())
        .args(["demo", "--json", "-o", capture.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path("demo.err")).unwrap())
        .spawn()
        .unwrap();
    let status = wait_timeout(&mut child, DEMO_TIMEOUT).unwrap();
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stderr = std::fs::read_to_string(dir.path("demo.err")).unwrap_or_default();
    assert!(status.is_some_and(|s| s.success()), "socktrace demo: {status:?}\n{stderr}");
    capture
}

/// `addr:port` as the page writes a peer (IPv6 in brackets).
fn endpoint(addr: &Value, port: &Value) -> Option<String> {
    let a = addr.as_str()?;
    Some(match port.as_u64() {
        Some(p) if a.contains(':') => format!("[{a}]:{p}"),
        Some(p) => format!("{a}:{p}"),
        None => a.to_string(),
    })
}

/// The failure lines of a capture, and its causes and peers.
fn failures_of(capture: &Path) -> (Vec<Value>, BTreeSet<String>, BTreeSet<String>) {
    let text = std::fs::read_to_string(capture).unwrap();
    let failures: Vec<Value> =
        text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|v| v["type"] == "failure").collect();
    let causes = failures.iter().map(|f| f["cause"].as_str().unwrap().to_string()).collect();
    let peers = failures.iter().filter_map(|f| endpoint(&f["daddr"], &f["dport"])).collect();
    (failures, causes, peers)
}

/// The rendered DOM holds every cause (in a legend) and every peer of the capture, the chart
/// of failures over time, and at least one connection's timeline with a failing call on it.
fn assert_page_shows(dom: &str, causes: &BTreeSet<String>, peers: &BTreeSet<String>) {
    assert!(!causes.is_empty() && !peers.is_empty());
    for c in causes {
        assert!(dom.contains(&format!("<li data-cause=\"{c}\">")), "cause {c} is not in a legend");
        assert!(dom.contains(&format!("data-cause=\"{c}\"")), "cause {c} has no mark");
    }
    for p in peers {
        assert!(dom.contains(p), "peer {p} is not on the page");
    }
    assert!(dom.contains("<svg class=\"chart failures\""), "no chart of failures over time");
    assert!(dom.contains("<svg class=\"timeline\""), "no timeline");
    assert!(dom.contains("<g class=\"call tip\""), "no failing call on a timeline");
    assert!(dom.contains("<table class=\"sortable labels\">"), "no errno x cause x state table");
}

#[test]
fn the_demo_catalogue_renders_and_opens_in_chromium() {
    let dir = TempDir::new("demo");
    let capture = demo_capture(&dir);
    let (failures, causes, peers) = failures_of(&capture);
    assert!(causes.len() >= 10, "the demo's catalogue: {causes:?}");
    let page = dir.path("demo.html");
    let stderr = render(&capture, &page);
    assert!(stderr.contains(&format!("{} connections", count_connections(&failures))), "{stderr}");
    let dom = dump_dom(&page, &dir);
    assert_page_shows(&dom, &causes, &peers);
    // Every connection of the demo is drawn, and every failing call counted on the cards.
    assert_eq!(dom.matches("<svg class=\"timeline\"").count(), count_connections(&failures));
    assert!(!dom.contains("lines not read"), "a real capture reads whole");
    assert_screenshot_shows_something(&page, &dir);
}

/// Connections as the report keys them, for a capture of one run: pid and addresses, and the
/// descriptor when there is no local port.
fn count_connections(failures: &[Value]) -> usize {
    let keys: BTreeSet<String> = failures
        .iter()
        .map(|f| {
            let port = f["sport"].as_u64().filter(|&p| p != 0);
            let fd = if port.is_some() { Value::Null } else { f["fd"].clone() };
            format!(
                "{} {} {} {} {} {fd}",
                f["pid"],
                f["family"],
                f["saddr"],
                f["sport"],
                endpoint(&f["daddr"], &f["dport"]).unwrap_or_default()
            )
        })
        .collect();
    keys.len()
}

#[test]
fn a_live_trace_renders_and_a_hostile_task_name_stays_text() {
    require_root();
    let dir = TempDir::new("live");
    let capture = dir.path("live.ndjson");
    // A reset connection (ECONNRESET, then EPIPE) of a task that names itself like markup.
    let out = Command::new(socktrace_bin())
        .args([
            "--json",
            "-o",
            capture.to_str().unwrap(),
            "--",
            SCENARIO,
            "--comm",
            "<img src=x>",
            "reset",
            "read",
            "v4",
        ])
        .env("SCENARIO_NO_WAIT", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let (failures, causes, peers) = failures_of(&capture);
    assert!(failures.iter().any(|f| f["errno"] == "ECONNRESET" && f["cause"] == "rst_received"), "{failures:#?}");
    assert!(failures.iter().all(|f| f["comm"] == "<img src=x>"), "{failures:#?}");
    let page = dir.path("live.html");
    render(&capture, &page);
    let dom = dump_dom(&page, &dir);
    assert_page_shows(&dom, &causes, &peers);
    assert!(dom.contains("&lt;img src=x&gt;"), "the task name is shown as text");
    assert!(!dom.contains("<img"), "the task name became markup");
    // The reset is on the timeline: the RST received, and the call's age reaching back to it.
    assert!(dom.contains("class=\"m rst_in\""), "no RST mark");
    assert!(dom.contains("<g class=\"age tip\">"), "no age bracket");
    assert_screenshot_shows_something(&page, &dir);
}

/// Adds `delta` ns to every timestamp of a failure line (`ts_ns`, `mono_ns`, and the facts').
fn shift_times(v: &mut Value, delta: u64) {
    match v {
        Value::Object(map) => {
            for (k, x) in map.iter_mut() {
                if matches!(k.as_str(), "ts_ns" | "mono_ns" | "first_mono_ns" | "last_mono_ns") {
                    if let Some(t) = x.as_u64() {
                        *x = Value::from(t + delta);
                    }
                } else {
                    shift_times(x, delta);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| shift_times(x, delta)),
        _ => {}
    }
}

#[test]
fn two_hundred_thousand_failures_render_under_the_size_bound() {
    const FAILURES: usize = 200_000;
    const CONNECTIONS: usize = 2_000;
    let dir = TempDir::new("big");
    let (templates, _, _) = failures_of(&demo_capture(&dir));
    // Real lines, made many: each connection repeats one of the demo's failures, from its own
    // process, port and peer, a hundred times over about a minute.
    let capture = dir.path("big.ndjson");
    {
        use std::io::Write as _;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&capture).unwrap());
        for i in 0..FAILURES {
            let conn = i % CONNECTIONS;
            let mut v = templates[conn % templates.len()].clone();
            shift_times(&mut v, (i / CONNECTIONS) as u64 * 600_000_000 + conn as u64 * 100_000);
            v["pid"] = Value::from(20_000 + conn / 20);
            v["fd"] = Value::from(100 + conn);
            if v["sport"].as_u64().is_some() {
                v["sport"] = Value::from(20_000 + conn);
            }
            if v["daddr"].is_string() {
                v["daddr"] = Value::from(format!("10.1.{}.{}", conn / 250, conn % 250));
            }
            writeln!(out, "{v}").unwrap();
        }
        out.flush().unwrap();
    }
    let page = dir.path("big.html");
    let started = Instant::now();
    let stderr = render(&capture, &page);
    let took = started.elapsed();
    let size = std::fs::metadata(&page).unwrap().len() as usize;
    eprintln!("200,000 failures from 2,000 connections: a page of {size} bytes in {took:.1?}; {stderr}");
    assert!(size < BIG_PAGE_LIMIT, "the page weighs {size} bytes");
    assert!(took < Duration::from_secs(60), "rendering took {took:?}");
    assert!(stderr.contains(&format!("{CONNECTIONS} connections from {FAILURES} lines")), "{stderr}");
    // The browser opens it, and its DOM is aggregated: a few marks per connection drawn, never
    // one node per failure.
    let dom = dump_dom(&page, &dir);
    assert_eq!(dom.matches("<svg class=\"timeline\"").count(), 50);
    let nodes = dom.matches('<').count();
    assert!(nodes < FAILURES / 2, "{nodes} elements for {FAILURES} failures");
    // A connection not drawn on load is drawn by the page's script when searched for (a
    // link with #q= opens the page on a search): the last connection with a peer address
    // (some of the demo's failures, fd_limit for one, have none).
    let conn = (0..CONNECTIONS).rev().find(|c| templates[c % templates.len()]["daddr"].is_string()).unwrap();
    assert!(conn + 50 >= CONNECTIONS, "a connection far from the first drawn");
    let peer = format!("10.1.{}.{}", conn / 250, conn % 250);
    let found = dump_dom_at(&format!("{}#q={peer}", url(&page)), &dir);
    let at = found.find("<div id=\"found\">").expect("the search results");
    let end = at + found[at..].find("<div id=\"conns\">").unwrap();
    let drawn = &found[at..end];
    assert_eq!(drawn.matches("<svg class=\"timeline\"").count(), 1, "{drawn}");
    assert!(drawn.contains(&peer) && drawn.contains("<g class=\"call tip\""), "{drawn}");
    assert!(found.contains("1 of 2000 connections match"));
    // Every connection is in the page's data, for the search box.
    let data_start = dom.find("<script id=\"data\" type=\"application/json\">").expect("the page's data");
    let data_end = data_start + dom[data_start..].find("</script>").unwrap();
    let json = &dom[data_start + dom[data_start..].find('>').unwrap() + 1..data_end];
    let data: Value = serde_json::from_str(json).expect("the data is JSON");
    assert_eq!(data["conns"].as_array().unwrap().len(), CONNECTIONS);
}

#[test]
fn corrupt_and_truncated_lines_are_named_and_the_rest_renders() {
    let dir = TempDir::new("corrupt");
    let demo = std::fs::read_to_string(demo_capture(&dir)).unwrap();
    let good: Vec<&str> = demo.lines().collect();
    let half = &good[0][..good[0].len() / 2];
    let mut newer: Value = serde_json::from_str(good[1]).unwrap();
    newer["schema"] = Value::from(99);
    // A line of the capture's kind, from a hostile program (its name and explanation are
    // markup), and one of a cause this socktrace has never heard of.
    let mut hostile: Value = serde_json::from_str(good[2]).unwrap();
    hostile["comm"] = Value::from("<script>alert(1)</script>");
    hostile["explain"] = Value::from("</script><script>alert(2)</script>\u{2028}");
    hostile["cause"] = Value::from("abandoned_connect");
    hostile["pid"] = Value::from(4242);
    let mut lines: Vec<String> = good.iter().map(|l| l.to_string()).collect();
    lines.insert(2, "garbage, not JSON at all".into()); // line 3
    lines.insert(5, half.into()); // line 6
    lines.insert(8, r#"{"level":"info","msg":"a log line of something else"}"#.into()); // line 9
    lines.insert(11, newer.to_string()); // line 12
    lines.insert(13, hostile.to_string()); // line 14, read
    let last = lines.len() + 1;
    let mut text = lines.join("\n");
    text.push('\n');
    text.push_str(&good[3][..good[3].len() - 20]); // cut short, no newline: the last line
    let capture = dir.path("corrupt.ndjson");
    std::fs::write(&capture, text).unwrap();

    let page = dir.path("corrupt.html");
    let stderr = render(&capture, &page);
    let expected = [
        (3, "not JSON (expected value at column 1)"),
        (6, "cut short"),
        (9, "not socktrace's JSON: an object without \"schema\" and \"type\""),
        (12, "schema 99 is newer than this socktrace reads"),
        (last, "cut short"),
    ];
    for (line, what) in expected {
        assert!(stderr.contains(&format!("line {line}: {what}")), "line {line}: {what}\n{stderr}");
    }
    assert!(stderr.contains("5 not read"), "{stderr}");
    let dom = dump_dom(&page, &dir);
    assert!(dom.contains("5 lines not read"), "the page says how many lines it could not read");
    for (line, what) in expected {
        let what = what.replace('"', "&quot;");
        let shown = format!("<span class=\"line\">line {line}</span>: {what}");
        let shown_plain = shown.replace("&quot;", "\"");
        assert!(dom.contains(&shown) || dom.contains(&shown_plain), "the page lacks line {line}: {what}");
    }
    // The rest renders: every cause and peer of the lines that were whole.
    let whole = dir.path("whole.ndjson");
    let whole_lines: Vec<&str> =
        good[..good.len()].iter().enumerate().filter(|(i, _)| *i != 1).map(|(_, l)| *l).collect();
    std::fs::write(&whole, whole_lines.join("\n")).unwrap();
    let (_, mut causes, peers) = failures_of(&whole);
    causes.insert("abandoned_connect".into());
    assert_page_shows(&dom, &causes, &peers);
    // The hostile line is text: no script of its making is in the DOM.
    assert!(dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "the hostile task name is shown as text");
    assert!(!dom.contains("<script>alert"), "markup from the capture reached the DOM");
    assert_eq!(dom.matches("<script").count(), 2, "only the page's data and its script");
}
