//! Terminal output: colors (honouring NO_COLOR), tables, progress on stderr.
//!
//! Rule: stdout carries data only (tables, names, JSON) so it can be piped; everything meant
//! for a person watching (progress, confirmations, warnings) goes to stderr.

use std::io::IsTerminal;
use std::sync::Mutex;

use claude_vm_engine::Reporter;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone, Copy)]
pub enum Style {
    Error,
    Hint,
    Good,
    Warn,
    Dim,
    Bold,
}

fn color_enabled(stream_is_tty: bool) -> bool {
    stream_is_tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn code(style: Style) -> &'static str {
    match style {
        Style::Error => "1;31",
        Style::Hint => "1;36",
        Style::Good => "32",
        Style::Warn => "33",
        Style::Dim => "2",
        Style::Bold => "1",
    }
}

/// Paint for stderr.
pub fn paint(text: &str, style: Style) -> String {
    if color_enabled(std::io::stderr().is_terminal()) {
        format!("\x1b[{}m{text}\x1b[0m", code(style))
    } else {
        text.to_owned()
    }
}

/// Paint for stdout.
pub fn paint_out(text: &str, style: Style) -> String {
    if color_enabled(std::io::stdout().is_terminal()) {
        format!("\x1b[{}m{text}\x1b[0m", code(style))
    } else {
        text.to_owned()
    }
}

/// Left-aligned columns separated by two spaces; `cells` may hold ANSI colors, which are not
/// counted in widths.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    fn visible_len(s: &str) -> usize {
        let mut n = 0;
        let mut in_esc = false;
        for c in s.chars() {
            match (in_esc, c) {
                (false, '\x1b') => in_esc = true,
                (true, 'm') => in_esc = false,
                (true, _) => {}
                (false, _) => n += 1,
            }
        }
        n
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(visible_len(c));
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let last = cells.len() - 1;
        for (i, c) in cells.iter().enumerate() {
            out.push_str(c);
            if i != last {
                out.push_str(&" ".repeat(widths[i] - visible_len(c) + 2));
            }
        }
        out.push('\n');
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for r in rows {
        line(r.clone());
    }
    out
}

/// "3m ago" from an RFC 3339 timestamp.
pub fn ago(ts: &str) -> String {
    let Ok(t) = ts.parse::<jiff::Timestamp>() else {
        return ts.to_owned();
    };
    let secs = jiff::Timestamp::now().as_second() - t.as_second();
    match secs {
        s if s < 60 => format!("{}s ago", s.max(0)),
        s if s < 3600 => format!("{}m ago", s / 60),
        s if s < 86400 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86400),
    }
}

/// Draws engine progress on stderr: a bar on a terminal, plain lines otherwise.
pub struct CliReporter {
    quiet: bool,
    tty: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl CliReporter {
    pub fn new(quiet: bool) -> Self {
        CliReporter {
            quiet,
            tty: std::io::stderr().is_terminal(),
            bar: Mutex::new(None),
        }
    }

    fn with_bar(&self, f: impl FnOnce(&ProgressBar)) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            f(bar);
        }
    }
}

impl Reporter for CliReporter {
    fn step(&self, message: &str) {
        if self.quiet {
            return;
        }
        let line = format!("{} {message}", paint("•", Style::Dim));
        let bar = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        match bar.as_ref() {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn progress_start(&self, message: &str, total: u64) {
        self.step(message);
        if self.quiet || !self.tty {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "  {bar:30.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        *self.bar.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
    }

    fn progress(&self, done: u64, total: u64) {
        if self.quiet || !self.tty {
            return;
        }
        let mut guard = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            // A progress without a start (image pulls): make a bar on the fly.
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("  {bar:30.cyan/blue} {bytes}/{total_bytes}")
                    .expect("valid template"),
            );
            *guard = Some(bar);
        }
        drop(guard);
        self.with_bar(|b| {
            b.set_length(total);
            b.set_position(done);
        });
    }

    fn progress_end(&self) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
        }
    }

    fn warn(&self, message: &str) {
        self.progress_end();
        eprintln!("{} {message}", paint("warning:", Style::Warn));
    }
}

/// Ask a yes/no question on the terminal; `None` when there is no terminal to ask on.
pub fn confirm(question: &str) -> Option<bool> {
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return None;
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    if std::io::stdin().read_line(&mut answer).is_err() {
        return Some(false);
    }
    Some(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}
