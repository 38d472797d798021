//! Text from outside gatehouse (a sender, Slack, a message on the broker) made safe to repeat in
//! logs, the audit trail and error texts: control characters dropped (no forged log lines, no
//! terminal escapes) and cut to a bound.

/// `text` without control characters, at most `max` characters.
pub fn printable(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}
