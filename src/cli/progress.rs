//! Progress of long commands: a bar on a terminal, plain lines otherwise (logs, pipes, CI).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// Reports progress through `total` items.
#[derive(Debug)]
pub struct CommandProgress {
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
    label: String,
}

impl CommandProgress {
    pub fn new(label: &str, total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta})") {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(label.to_owned());
            bar
        });
        CommandProgress {
            bar,
            total,
            done: 0,
            label: label.to_owned(),
        }
    }

    /// One more item done, described by `line` (printed as is when there is no bar).
    pub fn step(&mut self, line: &str) {
        self.done += 1;
        match &self.bar {
            Some(bar) => {
                bar.inc(1);
                bar.set_message(format!("{}: {line}", self.label));
            }
            None => eprintln!("{} {}/{}: {line}", self.label, self.done, self.total),
        }
    }

    /// One more item done, without a line of its own: without a bar, a line every `every` items.
    pub fn tick(&mut self, every: u64) {
        self.done += 1;
        match &self.bar {
            Some(bar) => bar.inc(1),
            None if self.done.is_multiple_of(every.max(1)) => {
                eprintln!("{} {}/{}", self.label, self.done, self.total)
            }
            None => {}
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
