//! `socktrace report`: a capture (the NDJSON of `socktrace --json` or `socktrace agent --json`)
//! as one self-contained HTML page for an incident review: failures over time by cause, the
//! errno x cause x state table, who failed, and each connection's timeline.
//!
//! A pure data flow that touches no kernel: `read` (lines -> records or problems) ->
//! `aggregate` (records -> the page's numbers; `timeline` gathers and draws each connection)
//! -> `page` (numbers -> HTML). `names` holds the words they share.

pub mod aggregate;
pub mod names;
pub mod page;
pub mod read;
pub mod timeline;

use anyhow::{bail, Context as _, Result};
use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};

/// Problems printed on stderr one by one; the page lists more.
const PROBLEMS_ON_STDERR: u64 = 20;

/// What `socktrace report` was asked for.
#[derive(Debug, Clone)]
pub struct ReportRequest {
    /// The capture, or `-` for standard input.
    pub capture: PathBuf,
    /// The page; None: the capture's name with `.html` (standard output for standard input);
    /// `-`: standard output.
    pub output: Option<PathBuf>,
    /// Connections drawn as timelines when the page opens.
    pub timelines: usize,
}

/// Reads a capture and aggregates it, telling `on_problem` of every line it could not use.
pub fn build(
    input: impl BufRead,
    opts: &aggregate::Options,
    mut on_problem: impl FnMut(&read::Problem),
) -> Result<aggregate::Report> {
    let mut agg = aggregate::Aggregator::default();
    let lines = read::read_all(input, |line, r| {
        if let Err(p) = &r {
            on_problem(p);
        }
        agg.add(line, r);
    })
    .context("reading the capture")?;
    agg.set_lines(lines);
    Ok(agg.finish(opts))
}

/// The page for a capture read from `input` (named `source` on the page).
pub fn render(
    input: impl BufRead,
    source: &str,
    opts: &aggregate::Options,
    on_problem: impl FnMut(&read::Problem),
) -> Result<(String, aggregate::Report)> {
    let report = build(input, opts, on_problem)?;
    let html = page::render(&report, &page::Meta { source, version: env!("CARGO_PKG_VERSION") });
    Ok((html, report))
}

fn default_output(capture: &Path) -> Option<PathBuf> {
    (capture != Path::new("-")).then(|| capture.with_extension("html"))
}

pub fn run(req: ReportRequest) -> Result<i32> {
    let started = std::time::Instant::now();
    let stdin = req.capture == Path::new("-");
    let output = req.output.clone().or_else(|| default_output(&req.capture));
    let to_stdout = output.as_deref().is_none_or(|p| p == Path::new("-"));
    if let Some(out) = output.as_deref().filter(|_| !to_stdout && !stdin) {
        if same_file(out, &req.capture) {
            bail!("the page would overwrite the capture {}: give another file with -o", out.display());
        }
    }
    let source = if stdin { "standard input".to_string() } else { req.capture.display().to_string() };
    let input: Box<dyn BufRead> = if stdin {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(&req.capture)
            .with_context(|| format!("cannot read the capture {}", req.capture.display()))?;
        Box::new(std::io::BufReader::with_capacity(256 * 1024, file))
    };
    let opts = aggregate::Options { timelines: req.timelines, ..aggregate::Options::default() };
    let mut told = 0u64;
    let (html, report) = render(input, &source, &opts, |p| {
        told += 1;
        if told <= PROBLEMS_ON_STDERR {
            eprintln!(
                "socktrace: report: {}: {}",
                crate::text::escape_controls(&source),
                crate::text::escape_controls(&p.to_string())
            );
        }
    })?;
    if told > PROBLEMS_ON_STDERR {
        eprintln!("socktrace: report: ... and {} more lines not read (the page lists them)", told - PROBLEMS_ON_STDERR);
    }
    let written = if to_stdout {
        let mut out = std::io::stdout().lock();
        out.write_all(html.as_bytes()).and_then(|()| out.flush()).context("writing the page to standard output")?;
        "standard output".to_string()
    } else {
        let path = output.expect("a path when not standard output");
        std::fs::write(&path, &html).with_context(|| format!("cannot write the page to {}", path.display()))?;
        path.display().to_string()
    };
    eprintln!(
        "socktrace: report: wrote {} ({:.1} MB) in {:.1} s: {} failures, {} routine outcomes, {} connections from {} lines{}",
        crate::text::escape_controls(&written),
        html.len() as f64 / 1e6,
        started.elapsed().as_secs_f64(),
        report.failures,
        report.routine,
        report.connections.len(),
        report.lines,
        if report.problems_total > 0 { format!(", {} not read", report.problems_total) } else { String::new() },
    );
    Ok(0)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failure line of connection `port`.
    fn failure(port: u16, mono: u64, comm: &str, cause: &str, explain: &str) -> String {
        serde_json::json!({
            "schema": 6, "type": "failure", "ts_ns": 1_700_000_000_000_000_000u64 + mono, "mono_ns": mono,
            "pid": 42, "tid": 42, "comm": comm, "syscall": "connect", "fd": 3, "errno": "ECONNREFUSED",
            "state": "SYN_SENT", "state_now": "CLOSE", "cause": cause, "saddr": "127.0.0.1", "sport": port,
            "daddr": "127.0.0.1", "dport": 9, "family": "inet", "cause_age_ns": 500,
            "history": [{"mono_ns": mono - 2000, "from": "CLOSE", "to": "SYN_SENT"}, {"mono_ns": mono - 100, "from": "SYN_SENT", "to": "CLOSE"}],
            "facts": {"rst_received": {"mono_ns": mono - 500, "state": "SYN_SENT", "pid": 42}, "retransmits": 0, "drops": []},
            "explain": explain,
        })
        .to_string()
    }

    /// The page's embedded data.
    fn data_of(html: &str) -> &str {
        let start = html.find("<script id=\"data\"").expect("the data element");
        &html[start..start + html[start..].find("</script>").unwrap()]
    }

    fn page(capture: &str, opts: aggregate::Options) -> (String, aggregate::Report) {
        render(capture.as_bytes(), "t.ndjson", &opts, |_| {}).unwrap()
    }

    #[test]
    fn capture_text_is_escaped_everywhere() {
        let evil = "<script>alert(1)</script>";
        let capture = [
            failure(1000, 10_000, evil, "rst_received", "x <img src=x onerror=alert(2)> & </script>"),
            failure(1001, 20_000, "ok", "<b>cause</b>", "\u{2028}</script><script>alert(3)</script>"),
        ]
        .join("\n");
        // Drawn on load, and embedded for the script: both escaped.
        for timelines in [50, 0] {
            let (html, _) = page(&capture, aggregate::Options { timelines, ..Default::default() });
            assert!(!html.contains("<script>alert"), "{timelines}");
            assert!(!html.contains("<img"), "{timelines}");
            assert!(!html.contains("<b>cause"), "{timelines}");
            assert_eq!(html.matches("<script").count(), 2, "only the data and the page's script");
            assert!(!data_of(&html).contains('\u{2028}'));
        }
        let (html, _) = page(&capture, aggregate::Options::default());
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    }

    #[test]
    fn a_page_holds_its_charts_timelines_and_problems() {
        let mut lines: Vec<String> = (0..30)
            .map(|i| failure(2000 + i % 3, 10_000 + i as u64 * 1_000_000, "app", "rst_received", "refused"))
            .collect();
        lines.push("{\"not\": \"ours\"}".into());
        lines.push(r#"{"schema":99,"type":"failure"}"#.into());
        lines.push(failure(3000, 5_000, "app", "timeout", "gave up")[..50].to_string());
        let (html, r) = page(&lines.join("\n"), aggregate::Options::default());
        assert_eq!((r.failures, r.connections.len(), r.problems_total), (30, 3, 3));
        assert!(html.contains("class=\"chart failures\""));
        assert_eq!(html.matches("<svg class=\"timeline\"").count(), 3);
        assert!(html.contains("line 31</span>: not socktrace's JSON"));
        assert!(html.contains("line 32</span>: schema 99 is newer"));
        assert!(html.contains("line 33</span>: cut short"));
        // Nothing is fetched: no URL in the page but the SVG namespace's name.
        let html = html.replace("'http://www.w3.org/2000/svg'", "");
        for scheme in ["http://", "https://", "src=", "href=\"//", "url("] {
            assert!(!html.contains(scheme), "{scheme}");
        }
    }

    #[test]
    fn an_agents_lines_name_their_containers_and_pods() {
        let mut line: serde_json::Value =
            serde_json::from_str(&failure(4000, 10_000, "nginx", "timeout", "gave up")).unwrap();
        line["container"] = serde_json::json!({"runtime": "containerd", "id": "3f4e9c1a2b7d00112233445566778899"});
        line["pod"] = serde_json::json!({"uid": "0f6a1c2e-1111-2222-3333-444455556666", "qos": "burstable"});
        let (html, r) = page(&line.to_string(), aggregate::Options::default());
        assert_eq!(r.containers[0].name, "containerd:3f4e9c1a2b7d");
        assert_eq!(r.pods[0].name, "0f6a1c2e-1111-2222-3333-444455556666 (burstable)");
        assert!(html.contains("Containers and units") && html.contains("Kubernetes pods"));
        assert!(r.connections[0].search_text().contains("containerd:3f4e9c1a2b7d"));
    }

    #[test]
    fn default_output_is_beside_the_capture() {
        assert_eq!(default_output(Path::new("/tmp/cap.ndjson")), Some(PathBuf::from("/tmp/cap.html")));
        assert_eq!(default_output(Path::new("-")), None);
    }
}
