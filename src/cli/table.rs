//! Plain-text tables for terminal output: columns padded to their widest cell. Every cell is
//! made terminal-safe first (cells often hold what senders wrote).

use super::terminal::safe;

/// Renders `rows` under `headers`, two spaces between columns.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| safe(cell).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                let width = widths.get(i).copied().unwrap_or(0);
                if i + 1 == cells.len() {
                    (*cell).to_owned()
                } else {
                    format!("{cell:<width$}")
                }
            })
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// Shortens `text` to `max` characters, marking the cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// A duration in the largest sensible unit: `42s`, `5m`, `3h`, `2d`.
pub fn age(seconds: i64) -> String {
    match seconds.max(0) {
        s if s < 120 => format!("{s}s"),
        s if s < 7_200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3_600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let out = render(
            &["ID", "TYPE"],
            &[
                vec!["1".into(), "user.removed".into()],
                vec!["1234".into(), "x".into()],
            ],
        );
        assert_eq!(out, "ID    TYPE\n1     user.removed\n1234  x\n");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(age(90), "90s");
        assert_eq!(age(3 * 86_400), "3d");
    }
}
