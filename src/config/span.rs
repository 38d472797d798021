//! Spans of time as people write them in config and on the command line: `90s`, `15m`, `24h`,
//! `7d`.

use std::fmt;

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};

/// A positive span of whole seconds, written with a unit (`s`, `m`, `h`, `d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Span {
    seconds: i64,
    unit: char,
}

impl Span {
    /// `text` as a span, if it is one.
    pub fn parse(text: &str) -> Option<Span> {
        let text = text.trim();
        let unit = text.chars().last()?;
        let amount: i64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
        let per_unit = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            _ => return None,
        };
        let seconds = amount.checked_mul(per_unit).filter(|s| *s > 0)?;
        // Beyond this, adding it to a timestamp would overflow.
        TimeDelta::try_seconds(seconds)?;
        Some(Span { seconds, unit })
    }

    pub fn as_delta(self) -> TimeDelta {
        TimeDelta::try_seconds(self.seconds).unwrap_or(TimeDelta::MAX)
    }

    pub fn as_seconds(self) -> i64 {
        self.seconds
    }
}

impl TryFrom<String> for Span {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Span::parse(&text).ok_or_else(|| format!("`{text}` is not a span of time (e.g. 90s, 15m, 24h, 7d)"))
    }
}

impl From<Span> for String {
    fn from(span: Span) -> Self {
        span.to_string()
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per_unit = match self.unit {
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            _ => 1,
        };
        write!(f, "{}{}", self.seconds / per_unit, self.unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_parse_and_print_back() {
        for (text, seconds) in [("90s", 90), ("15m", 900), ("24h", 86_400), ("7d", 604_800)] {
            let span = Span::parse(text).unwrap();
            assert_eq!(span.as_seconds(), seconds);
            assert_eq!(span.to_string(), text);
        }
        for bad in ["", "7", "d", "-1d", "0h", "1w", "1.5h", "99999999999999999d", "ü"] {
            assert!(Span::parse(bad).is_none(), "{bad}");
        }
    }
}
