//! Text from outside (an aggregator's `referenceNo` or message, a reader's name) made safe to
//! print on one line of a log or a terminal.

/// `s` with every control character written as an escape (`\n`, `\r`, `\t`, `\x1b`,
/// `\u{9b}`), and the Unicode line separators and bidirectional overrides too: text from
/// outside (an aggregator's `referenceNo` or message, a reader's name) can then neither start
/// a forged log line nor drive a terminal. Everything else is kept as it is.
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    let needs = |c: char| {
        c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(needs) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        use std::fmt::Write as _;
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < '\u{80}' && needs(c) => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if needs(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}
