//! Text from outside (a sender's payload, an Atlassian display name, an error a server wrote)
//! made safe to print on a terminal: control characters, ANSI escape sequences and bidirectional
//! overrides are shown as visible escapes (`\u{1b}`), never sent raw, so they cannot erase a
//! line, recolour it or reorder it, and a `[ORG-WIDE]` flag cannot be hidden. And stdout
//! written so that a reader that stops early (`| head`) ends nothing with an error.

use std::borrow::Cow;

/// Writes `text` to stdout; a reader that went away (`gatehouse … | head`) is not an error: what
/// it did not want is simply not written.
pub fn print_out(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result,
    }
}

/// Characters that change how a terminal shows what follows rather than showing themselves.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        // Bidirectional embeddings, overrides and isolates, and the invisible marks.
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}')
}

/// `text` with every unsafe character escaped (line breaks too: one value, one line); borrowed
/// when there is none.
pub fn safe(text: &str) -> Cow<'_, str> {
    escape(text, is_unsafe)
}

/// Like [`safe`], but keeps line breaks: for whole multi-line reports built from outside text.
pub fn safe_lines(text: &str) -> Cow<'_, str> {
    escape(text, |c| c != '\n' && is_unsafe(c))
}

fn escape(text: &str, unsafe_char: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !text.chars().any(&unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_a_terminal_would_obey() {
        assert!(matches!(safe("plain text, ünïcode ✓"), Cow::Borrowed(_)));
        assert_eq!(safe("a\u{1b}[2Kb"), "a\\u{1b}[2Kb");
        assert_eq!(safe("x\ry"), "x\\u{d}y");
        assert_eq!(safe("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(safe("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(safe("line\nbreak"), "line\\u{a}break");
        assert_eq!(safe_lines("a\n\u{1b}[2Kb\n"), "a\n\\u{1b}[2Kb\n");
    }
}
