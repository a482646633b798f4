//! Untrusted text shown to people: the one place that makes it inert. Evidence, descriptions,
//! reasons, rule and tool names come from sidecars, scanners and operators and are stored as sent;
//! wherever a person reads them (the CLI, the logs) control characters, line breaks and
//! direction overrides are shown as escapes (`\n`, `\x1b`, `\u{202e}`), so text can neither drive
//! a terminal (title, screen clearing, colours) nor forge a log line.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Characters that reorder or hide text in a terminal without being control characters.
fn invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// `s` with every control character (C0, DEL, C1), line break and direction override escaped.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() || invisible(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x100 && (c.is_control()) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() || invisible(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Escapes every string in a JSON value (keys included), in place.
pub fn escape_json(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::String(s) => {
            if let Cow::Owned(e) = escape(s) {
                *s = e;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(escape_json),
        Value::Object(m) => {
            let entries = std::mem::take(m);
            for (k, mut val) in entries {
                escape_json(&mut val);
                m.insert(escape(&k).into_owned(), val);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_sequences_and_line_breaks_are_shown_not_obeyed() {
        let hostile = "ok\x1b]0;pwned\x07\x1b[2J\nINFO released by an operator\u{202e}txt.exe\0\u{9b}31m\x7f";
        let shown = escape(hostile);
        assert_eq!(
            shown,
            "ok\\x1b]0;pwned\\x07\\x1b[2J\\nINFO released by an operator\\u{202e}txt.exe\\x00\\x9b31m\\x7f"
        );
        assert!(!shown.chars().any(|c| c.is_control()));
        assert!(matches!(escape("plain text, émoji ✓"), Cow::Borrowed(_)));
    }

    #[test]
    fn every_string_of_a_document_is_escaped() {
        let mut v = serde_json::json!({"a": ["x\ny", {"b\x1b": "\x07"}], "n": 1});
        escape_json(&mut v);
        assert_eq!(v, serde_json::json!({"a": ["x\\ny", {"b\\x1b": "\\x07"}], "n": 1}));
    }
}
