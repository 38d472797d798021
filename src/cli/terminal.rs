//! Text from outside (a sender's payload, an Atlassian display name, an error a server wrote)
//! made safe to print on a terminal: control characters, ANSI escape sequences and bidirectional
//! overrides are shown as visible escapes (`\u{1b}`), never sent raw, so they cannot erase a
//! line, recolour it or reorder it, and a `[ORG-WIDE]` flag cannot be hidden.

use std::borrow::Cow;

/// Characters that change how a terminal shows what follows rather than showing themselves.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        // Bidirectional embeddings, overrides and isolates, and the invisible marks.
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}')
}

/// `text` with every unsafe character escaped; borrowed when there is none.
pub fn safe(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe(c) {
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
    }
}
