//! Results: the table on stdout, and the `--json` document.

use serde::Serialize;

use crate::stats::Summary;

/// What an operation must achieve.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// No target: reported for information.
    None,
    /// Our p50 at most this many times the baseline's p50.
    MaxRatio { ratio: f64 },
    /// Our p50 at most this many milliseconds.
    MaxP50Ms { ms: f64 },
}

impl Target {
    fn text(&self) -> String {
        match self {
            Target::None => "-".to_owned(),
            Target::MaxRatio { ratio } => format!("<= {ratio}x"),
            Target::MaxP50Ms { ms } => format!("p50 <= {ms} ms"),
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct OpResult {
    /// Short stable key: `up`, `down`, `resume`, `list`.
    pub key: &'static str,
    pub operation: String,
    pub ours_command: String,
    pub baseline_command: String,
    pub ours: Summary,
    pub baseline: Summary,
    /// Our p50 divided by the baseline's p50.
    pub ratio: f64,
    pub target: Target,
    /// `None` when there is no target.
    pub pass: Option<bool>,
}

impl OpResult {
    pub fn new(
        key: &'static str,
        operation: impl Into<String>,
        ours_command: impl Into<String>,
        baseline_command: impl Into<String>,
        ours: Summary,
        baseline: Summary,
        target: Target,
    ) -> OpResult {
        let ratio = ours.p50_ms / baseline.p50_ms;
        let pass = match target {
            Target::None => None,
            Target::MaxRatio { ratio: max } => Some(ratio <= max),
            Target::MaxP50Ms { ms } => Some(ours.p50_ms <= ms),
        };
        OpResult {
            key,
            operation: operation.into(),
            ours_command: ours_command.into(),
            baseline_command: baseline_command.into(),
            ours,
            baseline,
            ratio,
            target,
            pass,
        }
    }
}

/// Where and how the numbers were taken.
#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    pub date: String,
    pub cpus: usize,
    pub docker_version: String,
    pub storage_driver: String,
    pub kernel: String,
    pub image: String,
    pub claude_vm_bin: String,
    pub claude_vm_bin_bytes: u64,
    pub iterations: usize,
    pub list_repetitions: usize,
    pub list_workspaces: usize,
    pub warmup: usize,
    /// 1-minute load average when the run started and when it ended (other work on the
    /// machine shows up here, and as noise in the samples).
    pub loadavg_start: Option<f64>,
    pub loadavg_end: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub environment: Environment,
    pub results: Vec<OpResult>,
    /// Every target met.
    pub pass: bool,
}

impl Report {
    pub fn new(environment: Environment, results: Vec<OpResult>) -> Report {
        let pass = results.iter().all(|r| r.pass != Some(false));
        Report {
            environment,
            results,
            pass,
        }
    }

    /// The results as a Markdown table (readable as plain text too).
    pub fn table(&self) -> String {
        let header = [
            "operation",
            "ours p50 / p95",
            "baseline p50 / p95",
            "ratio",
            "target",
            "result",
        ];
        let rows: Vec<[String; 6]> = self
            .results
            .iter()
            .map(|r| {
                [
                    r.operation.clone(),
                    pair(&r.ours),
                    pair(&r.baseline),
                    format!("{:.2}x", r.ratio),
                    r.target.text(),
                    match r.pass {
                        None => "-".to_owned(),
                        Some(true) => "PASS".to_owned(),
                        Some(false) => "FAIL".to_owned(),
                    },
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for (cell, w) in cells.iter().zip(widths) {
                s.push_str(&format!(" {cell:<w$} |"));
            }
            s.push('\n');
            s
        };
        let mut out = line(&header.map(str::to_owned));
        out.push_str(&line(&widths.map(|w| "-".repeat(w))));
        for row in &rows {
            out.push_str(&line(row));
        }
        out
    }
}

fn ms(v: f64) -> String {
    if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn pair(s: &Summary) -> String {
    format!("{} / {} ms", ms(s.p50_ms), ms(s.p95_ms))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn summary(ms: &[u64]) -> Summary {
        let d: Vec<Duration> = ms.iter().map(|m| Duration::from_millis(*m)).collect();
        Summary::of(&d)
    }

    #[test]
    fn targets_decide_pass_or_fail() {
        let r = OpResult::new(
            "up",
            "up",
            "a",
            "b",
            summary(&[300]),
            summary(&[200]),
            Target::MaxRatio { ratio: 1.5 },
        );
        assert_eq!(r.ratio, 1.5);
        assert_eq!(r.pass, Some(true));
        let r = OpResult::new(
            "list",
            "list",
            "a",
            "b",
            summary(&[151]),
            summary(&[20]),
            Target::MaxP50Ms { ms: 150.0 },
        );
        assert_eq!(r.pass, Some(false));
        let r = OpResult::new(
            "down",
            "down",
            "a",
            "b",
            summary(&[1]),
            summary(&[1]),
            Target::None,
        );
        assert_eq!(r.pass, None);
    }

    #[test]
    fn table_has_a_row_per_operation() {
        let env = Environment {
            date: String::new(),
            cpus: 2,
            docker_version: String::new(),
            storage_driver: String::new(),
            kernel: String::new(),
            image: String::new(),
            claude_vm_bin: String::new(),
            claude_vm_bin_bytes: 0,
            iterations: 1,
            list_repetitions: 1,
            list_workspaces: 1,
            warmup: 0,
            loadavg_start: None,
            loadavg_end: None,
        };
        let report = Report::new(
            env,
            vec![OpResult::new(
                "up",
                "new workspace up",
                "a",
                "b",
                summary(&[900]),
                summary(&[450]),
                Target::MaxRatio { ratio: 1.5 },
            )],
        );
        assert!(!report.pass);
        let table = report.table();
        assert_eq!(table.lines().count(), 3);
        assert!(table.contains("| new workspace up | 900 / 900 ms"));
        assert!(table.contains("2.00x"));
        assert!(table.contains("FAIL"));
    }
}
