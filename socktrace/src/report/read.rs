//! Reading a capture: one NDJSON line at a time into a `Record`, or a `Problem` that says which
//! line, what was wrong with it, and what was expected. A bad line never stops the reading.
//!
//! The reader accepts every schema up to the one this socktrace writes, and any key it does not
//! know (a newer writer's optional keys); a cause code it does not know stays a string.

use serde::Deserialize;
use std::io::BufRead;

/// The newest schema this reader knows: the one this socktrace writes.
pub const MAX_SCHEMA: u64 = crate::render::SCHEMA_VERSION as u64;

/// How much of a bad line a problem quotes.
const EXCERPT_CHARS: usize = 60;

/// A line that could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line number in the capture.
    pub line: u64,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// One usable line.
#[derive(Debug)]
pub enum Record {
    Failure(Box<Failure>),
    Summary(Summary),
}

/// A failure line (`"type":"failure"`), every key but the few the report cannot do without
/// optional, so older schemas read too.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(default)]
pub struct Failure {
    pub schema: u64,
    pub ts_ns: u64,
    pub mono_ns: u64,
    pub pid: u32,
    pub tid: Option<u32>,
    pub comm: String,
    pub container: Option<Container>,
    pub pod: Option<Pod>,
    pub syscall: String,
    pub fd: Option<i64>,
    pub errno: Option<String>,
    pub state: Option<String>,
    pub state_now: Option<String>,
    pub cause: String,
    pub saddr: Option<String>,
    pub sport: Option<u16>,
    pub daddr: Option<String>,
    pub dport: Option<u16>,
    pub family: Option<String>,
    pub cause_age_ns: Option<u64>,
    pub history: Vec<Transition>,
    pub facts: Facts,
    pub from_snapshot: bool,
    pub explain: String,
}

#[derive(Deserialize, Debug, Default, Clone, PartialEq, Eq)]
#[serde(default)]
pub struct Container {
    pub runtime: String,
    pub id: String,
}

#[derive(Deserialize, Debug, Default, Clone, PartialEq, Eq)]
#[serde(default)]
pub struct Pod {
    pub uid: String,
    pub qos: Option<String>,
}

#[derive(Deserialize, Debug, Default, Clone, PartialEq, Eq)]
#[serde(default)]
pub struct Transition {
    pub mono_ns: u64,
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(default)]
pub struct Facts {
    pub rst_received: Option<Stamp>,
    pub rst_sent: Option<Stamp>,
    pub error_report: Option<Stamp>,
    pub retransmits: u32,
    pub at_attach: Option<Stamp>,
    pub peer_reset: Option<PeerReset>,
    pub icmp: Option<Icmp>,
    pub rst_segment: Option<RstSegment>,
    pub drops: Vec<Drops>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(default)]
pub struct Stamp {
    pub mono_ns: u64,
    pub state: Option<String>,
    pub pid: u32,
    pub value: Option<i64>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(default)]
pub struct PeerReset {
    pub mono_ns: u64,
    pub state: Option<String>,
    pub pid: u32,
    pub comm: String,
    pub reason_name: Option<String>,
    pub no_socket: bool,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(default)]
pub struct Icmp {
    pub mono_ns: u64,
    pub from: String,
    pub from_destination: bool,
    pub message: String,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(default)]
pub struct RstSegment {
    pub origin: String,
    pub flags: Vec<String>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(default)]
pub struct Drops {
    pub direction: String,
    pub count: u32,
    pub first_mono_ns: u64,
    pub last_mono_ns: u64,
    pub reason_name: Option<String>,
    pub function: Option<String>,
    pub flags: Vec<String>,
}

/// The summary line that ends a run (`"type":"summary"`): what the report shows beside its own
/// counts.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(default)]
pub struct Summary {
    pub failures: u64,
    pub printed: u64,
    pub lost: u64,
    pub undecodable: u64,
    /// Schema 8; before it, `histories_evicted` (an LRU's evictions), read the same way.
    #[serde(alias = "histories_evicted")]
    pub histories_refused: u64,
    pub rows: Vec<SummaryRow>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(default)]
pub struct SummaryRow {
    pub errno: String,
    pub cause: String,
    pub state: String,
    pub count: u64,
}

/// What every socktrace line starts with; read first so that a newer schema is named as such
/// before any of its keys can fail to parse.
#[derive(Deserialize)]
struct Head {
    schema: Option<serde_json::Value>,
    #[serde(rename = "type")]
    kind: Option<serde_json::Value>,
    // The keys a failure cannot do without, seen or not (a typed parse would let them default).
    mono_ns: Option<serde::de::IgnoredAny>,
    ts_ns: Option<serde::de::IgnoredAny>,
    pid: Option<serde::de::IgnoredAny>,
    cause: Option<serde::de::IgnoredAny>,
}

/// Reads one line (without its newline). Blank lines are `Ok(None)`.
pub fn parse_line(line_no: u64, text: &str) -> Result<Option<Record>, Problem> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    let problem = |message: String| Problem { line: line_no, message };
    if !trimmed.starts_with('{') {
        // Valid JSON that is not an object, or not JSON at all.
        return Err(problem(match serde_json::from_str::<serde::de::IgnoredAny>(trimmed) {
            Ok(_) => format!(
                "not socktrace's JSON: {}, expected an object with \"schema\" and \"type\" keys: {}",
                json_kind(trimmed),
                excerpt(trimmed)
            ),
            Err(e) => json_error(&e, trimmed),
        }));
    }
    let head: Head = match serde_json::from_str(trimmed) {
        Ok(h) => h,
        Err(e) => return Err(problem(json_error(&e, trimmed))),
    };
    let (schema, kind) = match (&head.schema, &head.kind) {
        (Some(s), Some(k)) => (s, k),
        _ => {
            let missing: Vec<&str> = [("\"schema\"", head.schema.is_none()), ("\"type\"", head.kind.is_none())]
                .iter()
                .filter(|(_, m)| *m)
                .map(|(k, _)| *k)
                .collect();
            return Err(problem(format!(
                "not socktrace's JSON: an object without {} (socktrace's lines carry \"schema\" and \"type\"): {}",
                missing.join(" and "),
                excerpt(trimmed)
            )));
        }
    };
    let Some(schema) = schema.as_u64().filter(|&s| s >= 1) else {
        return Err(problem(format!("not socktrace's JSON: \"schema\" is {schema}, expected a version number")));
    };
    if schema > MAX_SCHEMA {
        return Err(problem(format!(
            "schema {schema} is newer than this socktrace reads (schema 1 to {MAX_SCHEMA}): line skipped; \
             a newer socktrace's report reads it"
        )));
    }
    let Some(kind) = kind.as_str() else {
        return Err(problem(format!("not socktrace's JSON: \"type\" is {kind}, expected \"failure\" or \"summary\"")));
    };
    match kind {
        "failure" => {
            let required = [
                ("mono_ns", head.mono_ns.is_some()),
                ("ts_ns", head.ts_ns.is_some()),
                ("pid", head.pid.is_some()),
                ("cause", head.cause.is_some()),
            ];
            if let Some((key, _)) = required.iter().find(|(_, seen)| !seen) {
                return Err(problem(format!("a failure without \"{key}\": line skipped")));
            }
            let f: Failure = typed(trimmed).map_err(problem)?;
            Ok(Some(Record::Failure(Box::new(f))))
        }
        "summary" => Ok(Some(Record::Summary(typed(trimmed).map_err(problem)?))),
        "error" => {
            let v: serde_json::Value = serde_json::from_str(trimmed).unwrap_or_default();
            let error = v.get("error").and_then(|e| e.as_str()).unwrap_or("(no message)");
            Err(problem(format!("socktrace could not write an event here: {}", excerpt(error))))
        }
        other => Err(problem(format!(
            "a line of type {}, which this socktrace does not know (it reads \"failure\" and \"summary\"): skipped",
            excerpt(other)
        ))),
    }
}

/// Parses a line whose head was fine into its full shape; a key of an unexpected type is named
/// with its path.
fn typed<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        format!("key \"{path}\": {}: line skipped", strip_position(&e.into_inner().to_string()))
    })
}

/// What a JSON error says, for a person: cut short, not JSON, or JSON but not an object.
fn json_error(e: &serde_json::Error, text: &str) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Eof => format!(
            "cut short: the line ends inside a JSON object (a capture truncated while it was written?): {}",
            excerpt(text)
        ),
        Category::Syntax | Category::Io => {
            format!("not JSON ({} at column {}): {}", strip_position(&e.to_string()), e.column(), excerpt(text))
        }
        Category::Data => format!(
            "not socktrace's JSON: expected an object with \"schema\" and \"type\" keys, found {}: {}",
            strip_position(&e.to_string()).trim_start_matches("invalid type: "),
            excerpt(text)
        ),
    }
}

/// What a JSON value that is not an object is, by its first character.
fn json_kind(text: &str) -> &'static str {
    match text.as_bytes().first() {
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// serde_json's message without its " at line 1 column N" (every line is one line here).
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// The start of a line, quoted, for a message.
fn excerpt(text: &str) -> String {
    let mut out: String = text.chars().take(EXCERPT_CHARS).collect();
    if text.chars().count() > EXCERPT_CHARS {
        out.push('…');
    }
    format!("{out:?}")
}

/// Reads a whole capture, calling `each` with every record or problem in order, and its line
/// number. Lines that are not UTF-8 are problems too. Returns the number of lines read.
pub fn read_all(mut input: impl BufRead, mut each: impl FnMut(u64, Result<Record, Problem>)) -> std::io::Result<u64> {
    let mut buf = Vec::with_capacity(4096);
    let mut line_no = 0u64;
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            return Ok(line_no);
        }
        line_no += 1;
        match std::str::from_utf8(&buf) {
            Ok(text) => match parse_line(line_no, text) {
                Ok(Some(r)) => each(line_no, Ok(r)),
                Ok(None) => {}
                Err(p) => each(line_no, Err(p)),
            },
            Err(e) => each(
                line_no,
                Err(Problem {
                    line: line_no,
                    message: format!("not UTF-8 text (invalid byte at offset {}): skipped", e.valid_up_to()),
                }),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"schema":6,"type":"failure","ts_ns":1700000000000000000,"mono_ns":5000,"pid":7,"tid":7,"comm":"curl","syscall":"connect","fd":3,"ret":-111,"errno":"ECONNREFUSED","state":"SYN_SENT","state_now":"CLOSE","cause":"rst_received","saddr":"127.0.0.1","sport":40000,"daddr":"127.0.0.1","dport":9,"family":"inet","cause_age_ns":900,"history":[{"mono_ns":1000,"from":"CLOSE","to":"SYN_SENT"}],"facts":{"rst_received":{"mono_ns":4100,"state":"SYN_SENT","pid":7},"retransmits":0,"drops":[]},"explain":"peer answered the SYN with RST"}"#;

    fn problem(text: &str) -> String {
        match parse_line(3, text) {
            Err(p) => {
                assert_eq!(p.line, 3);
                p.message
            }
            Ok(r) => panic!("{text} was accepted: {r:?}"),
        }
    }

    #[test]
    fn reads_a_failure_and_ignores_unknown_keys_and_causes() {
        let Ok(Some(Record::Failure(f))) = parse_line(1, GOOD) else { panic!() };
        assert_eq!((f.pid, f.cause.as_str(), f.facts.rst_received.unwrap().mono_ns), (7, "rst_received", 4100));
        // A newer writer's extra keys and a cause code this socktrace has never heard of.
        let newer = GOOD
            .replace("\"cause\":\"rst_received\"", "\"cause\":\"abandoned_connect\",\"new_key\":{\"x\":[1,2]}")
            .replace("\"retransmits\":0", "\"retransmits\":0,\"new_fact\":null");
        let Ok(Some(Record::Failure(f))) = parse_line(1, &newer) else { panic!() };
        assert_eq!(f.cause, "abandoned_connect");
        // An older schema without the newer keys.
        let old = r#"{"schema":1,"type":"failure","ts_ns":1,"mono_ns":2,"pid":3,"cause":"timeout"}"#;
        assert!(matches!(parse_line(1, old), Ok(Some(Record::Failure(_)))));
        assert!(matches!(parse_line(1, "   "), Ok(None)));
    }

    #[test]
    fn the_known_maximum_follows_the_writer() {
        assert_eq!(MAX_SCHEMA, crate::render::SCHEMA_VERSION as u64);
        let current = GOOD.replace("\"schema\":6", &format!("\"schema\":{MAX_SCHEMA}"));
        assert!(parse_line(1, &current).is_ok());
        let next = GOOD.replace("\"schema\":6", &format!("\"schema\":{}", MAX_SCHEMA + 1));
        let msg = problem(&next);
        assert!(msg.contains(&format!("schema {} is newer", MAX_SCHEMA + 1)), "{msg}");
        assert!(msg.contains(&format!("schema 1 to {MAX_SCHEMA}")), "{msg}");
    }

    #[test]
    fn bad_lines_say_what_was_expected() {
        let m = problem("garbage here");
        assert!(m.starts_with("not JSON (expected value at column 1)") && m.contains("\"garbage here\""), "{m}");
        let m = problem(&GOOD[..GOOD.len() / 2]);
        assert!(m.starts_with("cut short"), "{m}");
        let m = problem(r#"{"level":"info","msg":"hello"}"#);
        assert!(m.contains("without \"schema\" and \"type\""), "{m}");
        let m = problem(r#"{"schema":6,"msg":"hello"}"#);
        assert!(m.starts_with("not socktrace's JSON: an object without \"type\" ("), "{m}");
        let m = problem("[1,2,3]");
        assert!(m.starts_with("not socktrace's JSON: an array, expected an object with"), "{m}");
        let m = problem("42");
        assert!(m.starts_with("not socktrace's JSON: a number"), "{m}");
        let m = problem(r#"{"schema":"six","type":"failure"}"#);
        assert!(m.contains("\"schema\" is \"six\""), "{m}");
        let m = problem(r#"{"schema":6,"type":"failure","ts_ns":1,"pid":3,"cause":"timeout"}"#);
        assert_eq!(m, "a failure without \"mono_ns\": line skipped");
        let m = problem(&GOOD.replace("\"retransmits\":0", "\"retransmits\":\"many\""));
        assert!(m.starts_with("key \"facts.retransmits\": invalid type: string \"many\", expected u32"), "{m}");
        let m = problem(r#"{"schema":6,"type":"heartbeat"}"#);
        assert!(m.contains("type \"heartbeat\""), "{m}");
        let m = problem(r#"{"schema":6,"type":"error","error":"boom"}"#);
        assert!(m.contains("could not write an event here: \"boom\""), "{m}");
    }

    #[test]
    fn reading_goes_on_past_bad_lines_with_their_numbers() {
        let capture = format!("{GOOD}\nnot json\n\n{GOOD}\n\u{1}x\n{}", &GOOD[..40]);
        let mut bytes = capture.into_bytes();
        // An invalid UTF-8 byte on line 5.
        let at = bytes.iter().position(|&b| b == 1).unwrap();
        bytes[at] = 0xff;
        let mut good = 0;
        let mut bad = Vec::new();
        let lines = read_all(&bytes[..], |_, r| match r {
            Ok(_) => good += 1,
            Err(p) => bad.push(p.line),
        })
        .unwrap();
        assert_eq!((lines, good, bad), (6, 2, vec![2, 5, 6]));
    }
}
