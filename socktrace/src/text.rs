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

#[cfg(test)]
mod tests {
    use super::*;

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
