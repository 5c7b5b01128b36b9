//! Text that reaches a terminal or a JSON string from untrusted sources (process names,
//! device names, paths, errors quoting them): escaped here, in one place, so it can neither
//! forge nor hide lines. A leaf: every layer that prints may use it.

use std::fmt::Write as _;

/// Escapes bytes for a terminal: printable ASCII stays, everything else becomes `\xNN`
/// (and the backslash and double quote are escaped), so the result is plain printable ASCII.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out
}

/// Escapes only control characters (for messages that may quote untrusted text but are
/// otherwise meant for people: paths, names in errors).
pub fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "\\x{b:02x}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The first line of a (kernel or loader) message, at most 200 characters: what a one-line
/// notice quotes of it.
pub fn first_line(s: &str) -> &str {
    let line = s.lines().next().unwrap_or("");
    match line.char_indices().nth(200) {
        Some((i, _)) => &line[..i],
        None => line,
    }
}

/// The width of the terminal standard error is, if it is one.
pub fn stderr_width() -> Option<usize> {
    use std::io::IsTerminal as _;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    // SAFETY: an all-zero winsize is valid; the ioctl writes at most one into it.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ on standard error with a valid pointer to a winsize.
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col >= 20).then_some(ws.ws_col as usize)
}

/// `text` word-wrapped to `width` columns, continuation rows indented by `indent`; a word
/// longer than a row is split.
pub fn wrap(text: &str, width: usize, indent: usize) -> String {
    let width = width.max(indent + 8);
    let mut rows: Vec<String> = Vec::new();
    let (mut row, mut used, mut start) = (String::new(), 0usize, 0usize);
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let chars: Vec<char> = word.chars().collect();
        let mut rest = chars.as_slice();
        while !rest.is_empty() {
            let sep = usize::from(used > start);
            if used + sep + rest.len() <= width {
                if sep == 1 {
                    row.push(' ');
                }
                row.extend(rest.iter());
                used += sep + rest.len();
                break;
            }
            if used == start {
                // Alone on its row and still too long: split it where the row ends.
                let (head, tail) = rest.split_at(width - used);
                row.extend(head.iter());
                rest = tail;
            }
            rows.push(std::mem::replace(&mut row, " ".repeat(indent)));
            (used, start) = (indent, indent);
        }
    }
    rows.push(row);
    rows.join("\n")
}

/// A message for the person at the terminal: on standard error, wrapped to the terminal's
/// width when it is one (one line for a pipe or a file).
pub fn say(line: &str) {
    match stderr_width() {
        Some(width) => eprintln!("{}", wrap(line, width, 2)),
        None => eprintln!("{line}"),
    }
}

/// A duration for people: `500ns`, `1.5us`, `2.5ms`, `3.00s`.
pub fn human_ns(ns: u64) -> String {
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.1}us", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.1}ms", ns as f64 / 1e6)
    } else {
        format!("{:.2}s", ns as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(human_ns(500), "500ns");
        assert_eq!(human_ns(1_500), "1.5us");
        assert_eq!(human_ns(2_500_000), "2.5ms");
        assert_eq!(human_ns(3_000_000_000), "3.00s");
    }

    #[test]
    fn wraps_words_to_the_width() {
        let text = "socktrace: the traced process exited; 18 failures (aborted 1, fd_limit 1), 21 printed";
        for width in [20, 30, 40, 200] {
            let wrapped = wrap(text, width, 2);
            assert!(wrapped.lines().all(|l| l.chars().count() <= width), "{width}: {wrapped}");
            assert_eq!(wrapped.split_whitespace().collect::<Vec<_>>(), text.split_whitespace().collect::<Vec<_>>());
        }
        assert_eq!(wrap("abcdefghijklmnopqrstuvwxyz", 12, 2), "abcdefghijkl\n  mnopqrstuv\n  wxyz");
    }

    #[test]
    fn escapes_control_bytes_quotes_and_invalid_utf8() {
        assert_eq!(escape_bytes(b"curl"), "curl");
        assert_eq!(escape_bytes(b"a\nb"), "a\\x0ab");
        assert_eq!(escape_bytes(b"\x1b[31mred"), "\\x1b[31mred");
        assert_eq!(escape_bytes(b"q\"\\"), "q\\\"\\\\");
        assert_eq!(escape_bytes(&[0xff, 0xfe]), "\\xff\\xfe");
        assert!(escape_bytes(&(0..=255).collect::<Vec<u8>>()).bytes().all(|b| (0x20..0x7f).contains(&b)));
    }

    #[test]
    fn messages_keep_quotes_but_not_controls() {
        assert_eq!(escape_controls("cannot start \"/x\": gone"), "cannot start \"/x\": gone");
        assert_eq!(escape_controls("a\nb\u{1b}[2J\u{9b}"), "a\\x0ab\\x1b[2J\\xc2\\x9b");
    }
}
