//! Results: the tables on stdout, and the `--json` document.

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
    /// Our p99 at most this many milliseconds.
    MaxP99Ms { ms: f64 },
}

impl Target {
    fn text(&self) -> String {
        match self {
            Target::None => "-".to_owned(),
            Target::MaxRatio { ratio } => format!("<= {ratio}x"),
            Target::MaxP50Ms { ms } => format!("p50 <= {ms} ms"),
            Target::MaxP99Ms { ms } => format!("p99 <= {ms} ms"),
        }
    }
}

/// Which table a timing row belongs to.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// Commands and calls: p50 / p95 (and p99 with enough samples).
    Operations,
    /// Conversation latencies: p50 / p99.
    Conversation,
}

/// One timing row.
#[derive(Debug, Clone, Serialize)]
pub struct OpResult {
    /// Short stable key: `up`, `down`, `resume`, `list`, `exec_link`, `exec_cli`, ...
    pub key: &'static str,
    pub table: Table,
    pub operation: String,
    pub ours_command: String,
    pub baseline_command: Option<String>,
    pub ours: Summary,
    pub baseline: Option<Summary>,
    /// Our p50 divided by the baseline's p50.
    pub ratio: Option<f64>,
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
        OpResult::build(
            key,
            Table::Operations,
            operation.into(),
            ours_command.into(),
            Some((baseline_command.into(), baseline)),
            ours,
            target,
        )
    }

    /// An operations row without a baseline or target, for information.
    pub fn alone(
        key: &'static str,
        operation: impl Into<String>,
        ours_command: impl Into<String>,
        ours: Summary,
    ) -> OpResult {
        OpResult::build(
            key,
            Table::Operations,
            operation.into(),
            ours_command.into(),
            None,
            ours,
            Target::None,
        )
    }

    /// A conversation latency row; the baseline is optional.
    pub fn latency(
        key: &'static str,
        operation: impl Into<String>,
        ours_command: impl Into<String>,
        ours: Summary,
        baseline: Option<(String, Summary)>,
        target: Target,
    ) -> OpResult {
        OpResult::build(
            key,
            Table::Conversation,
            operation.into(),
            ours_command.into(),
            baseline,
            ours,
            target,
        )
    }

    fn build(
        key: &'static str,
        table: Table,
        operation: String,
        ours_command: String,
        baseline: Option<(String, Summary)>,
        ours: Summary,
        target: Target,
    ) -> OpResult {
        let ratio = baseline.as_ref().map(|(_, b)| ours.p50_ms / b.p50_ms);
        let pass = match target {
            Target::None => None,
            Target::MaxRatio { ratio: max } => Some(ratio.is_some_and(|r| r <= max)),
            Target::MaxP50Ms { ms } => Some(ours.p50_ms <= ms),
            Target::MaxP99Ms { ms } => Some(ours.p99_ms <= ms),
        };
        let (baseline_command, baseline) = baseline.unzip();
        OpResult {
            key,
            table,
            operation,
            ours_command,
            baseline_command,
            ours,
            baseline,
            ratio,
            target,
            pass,
        }
    }
}

/// One transfer direction of one way of moving a file, against `docker cp` the same way.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub key: &'static str,
    pub operation: String,
    pub ours_command: String,
    pub baseline_command: String,
    pub bytes: u64,
    /// Wall time of each transfer.
    pub ours: Summary,
    pub baseline: Summary,
    /// Bytes / p50 time, in MB/s (10^6 bytes per second).
    pub ours_mb_s: f64,
    pub baseline_mb_s: f64,
    /// Our MB/s divided by the baseline's.
    pub ratio: f64,
}

impl Throughput {
    pub fn new(
        key: &'static str,
        operation: impl Into<String>,
        ours_command: impl Into<String>,
        baseline_command: impl Into<String>,
        bytes: u64,
        ours: Summary,
        baseline: Summary,
    ) -> Throughput {
        let rate = |s: &Summary| bytes as f64 / 1e6 / (s.p50_ms / 1e3);
        let (ours_mb_s, baseline_mb_s) = (rate(&ours), rate(&baseline));
        Throughput {
            key,
            operation: operation.into(),
            ours_command: ours_command.into(),
            baseline_command: baseline_command.into(),
            bytes,
            ours,
            baseline,
            ours_mb_s,
            baseline_mb_s,
            ratio: ours_mb_s / baseline_mb_s,
        }
    }
}

/// Memory of one process, from `/proc/<pid>/status` and `/proc/<pid>/smaps_rollup` (KiB).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Rss {
    pub vm_rss_kib: u64,
    /// Heap, stacks: what the process allocated itself.
    pub rss_anon_kib: u64,
    /// Mapped files (its binary, shared libraries), shared with other processes.
    pub rss_file_kib: u64,
    /// Proportional set size: shared pages divided among the processes mapping them.
    pub pss_kib: u64,
}

impl std::ops::Add for Rss {
    type Output = Rss;
    fn add(self, o: Rss) -> Rss {
        Rss {
            vm_rss_kib: self.vm_rss_kib + o.vm_rss_kib,
            rss_anon_kib: self.rss_anon_kib + o.rss_anon_kib,
            rss_file_kib: self.rss_file_kib + o.rss_file_kib,
            pss_kib: self.pss_kib + o.pss_kib,
        }
    }
}

impl std::iter::Sum for Rss {
    fn sum<I: Iterator<Item = Rss>>(iter: I) -> Rss {
        iter.fold(Rss::default(), |a, b| a + b)
    }
}

/// What a process in the workspace is, for the memory tables.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// `claude-vm agent serve`.
    Daemon,
    /// `claude-vm agent init` (PID 1).
    Init,
    /// A conversation's agent (the stand-in).
    Agent,
    /// The tmux server and the `claude-vm agent chat-tty` viewer the daemon starts for each
    /// conversation.
    Viewer,
    Other,
}

#[derive(Debug, Clone, Serialize)]
pub struct Process {
    pub pid: u32,
    pub role: Role,
    pub cmdline: String,
    pub mem: Rss,
}

/// The processes of the workspace with a number of idle conversations.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryPoint {
    pub conversations: usize,
    pub processes: Vec<Process>,
}

impl MemoryPoint {
    /// The sum over the processes of one role, and their number.
    pub fn of(&self, role: Role) -> (Rss, usize) {
        let ps: Vec<&Process> = self.processes.iter().filter(|p| p.role == role).collect();
        (ps.iter().map(|p| p.mem).sum(), ps.len())
    }
}

/// Growth per conversation between two points, KiB.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct PerConversation {
    pub vm_rss_kib: f64,
    pub rss_anon_kib: f64,
    pub pss_kib: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    pub points: Vec<MemoryPoint>,
    /// The daemon's growth per idle conversation, from no conversation to the most.
    pub daemon: PerConversation,
    /// The stand-in agents per conversation (one process each).
    pub agents: PerConversation,
    /// tmux and the chat-tty viewers per conversation.
    pub viewers: PerConversation,
}

impl Memory {
    pub fn new(points: Vec<MemoryPoint>) -> Memory {
        let per = |role: Role| match (points.first(), points.last()) {
            (Some(a), Some(b)) if b.conversations > a.conversations => {
                let (a, b) = (a.of(role).0, b.of(role).0);
                let n = (points[points.len() - 1].conversations - points[0].conversations) as f64;
                let d = |f: fn(&Rss) -> u64| (f(&b) as f64 - f(&a) as f64) / n;
                PerConversation {
                    vm_rss_kib: d(|r| r.vm_rss_kib),
                    rss_anon_kib: d(|r| r.rss_anon_kib),
                    pss_kib: d(|r| r.pss_kib),
                }
            }
            _ => PerConversation {
                vm_rss_kib: f64::NAN,
                rss_anon_kib: f64::NAN,
                pss_kib: f64::NAN,
            },
        };
        Memory {
            daemon: per(Role::Daemon),
            agents: per(Role::Agent),
            viewers: per(Role::Viewer),
            points,
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
    /// The groups that ran.
    pub groups: Vec<String>,
    pub iterations: usize,
    pub list_repetitions: usize,
    pub list_workspaces: usize,
    pub warmup: usize,
    pub exec_samples: usize,
    pub cli_exec_samples: usize,
    pub file_bytes: u64,
    pub file_repetitions: usize,
    pub messages: usize,
    pub idle_conversations: usize,
    /// 1-minute load average when the run started and when it ended (other work on the
    /// machine shows up here, and as noise in the samples).
    pub loadavg_start: Option<f64>,
    pub loadavg_end: Option<f64>,
    /// Wall time of the whole run, seconds.
    pub duration_s: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub environment: Environment,
    pub results: Vec<OpResult>,
    pub throughput: Vec<Throughput>,
    pub memory: Option<Memory>,
    /// `claude-vm server`'s memory, when the `server` group ran.
    pub server_memory: Option<crate::server::ServerMemory>,
    /// Every target met.
    pub pass: bool,
}

impl Report {
    pub fn new(
        environment: Environment,
        results: Vec<OpResult>,
        throughput: Vec<Throughput>,
        memory: Option<Memory>,
    ) -> Report {
        let pass = results.iter().all(|r| r.pass != Some(false));
        Report {
            environment,
            results,
            throughput,
            memory,
            server_memory: None,
            pass,
        }
    }

    /// The results as Markdown tables (readable as plain text too), one per kind.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let verdict = |r: &OpResult| match r.pass {
            None => "-".to_owned(),
            Some(true) => "PASS".to_owned(),
            Some(false) => "FAIL".to_owned(),
        };
        let ops: Vec<Vec<String>> = self
            .results
            .iter()
            .filter(|r| r.table == Table::Operations)
            .map(|r| {
                vec![
                    r.operation.clone(),
                    r.ours.samples_ms.len().to_string(),
                    spread(&r.ours),
                    r.baseline.as_ref().map_or("-".to_owned(), spread),
                    r.ratio.map_or("-".to_owned(), |x| format!("{x:.2}x")),
                    r.target.text(),
                    verdict(r),
                ]
            })
            .collect();
        if !ops.is_empty() {
            out.push_str(&markdown(
                &[
                    "operation",
                    "n",
                    "ours p50 / p95 / p99",
                    "baseline p50 / p95 / p99",
                    "ratio",
                    "target",
                    "result",
                ],
                &ops,
            ));
        }
        let chat: Vec<Vec<String>> = self
            .results
            .iter()
            .filter(|r| r.table == Table::Conversation)
            .map(|r| {
                vec![
                    r.operation.clone(),
                    r.ours.samples_ms.len().to_string(),
                    p50_p99(&r.ours),
                    r.baseline.as_ref().map_or("-".to_owned(), p50_p99),
                    r.target.text(),
                    verdict(r),
                ]
            })
            .collect();
        if !chat.is_empty() {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&markdown(
                &[
                    "conversation latency",
                    "n",
                    "ours p50 / p99",
                    "baseline p50 / p99",
                    "target",
                    "result",
                ],
                &chat,
            ));
        }
        if !self.throughput.is_empty() {
            if !out.is_empty() {
                out.push('\n');
            }
            let rows: Vec<Vec<String>> = self
                .throughput
                .iter()
                .map(|t| {
                    vec![
                        t.operation.clone(),
                        t.ours.samples_ms.len().to_string(),
                        format!("{:.0} MB/s ({} ms)", t.ours_mb_s, ms(t.ours.p50_ms)),
                        format!("{:.0} MB/s ({} ms)", t.baseline_mb_s, ms(t.baseline.p50_ms)),
                        format!("{:.2}x", t.ratio),
                    ]
                })
                .collect();
            out.push_str(&markdown(
                &[
                    "file transfer",
                    "n",
                    "ours at p50 time",
                    "docker cp at p50 time",
                    "ours / docker",
                ],
                &rows,
            ));
        }
        if let Some(m) = &self.memory {
            if !out.is_empty() {
                out.push('\n');
            }
            let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
            let cell = |(r, n): (Rss, usize), count: bool| {
                let s = format!(
                    "{} / {} / {} MiB",
                    mib(r.vm_rss_kib),
                    mib(r.rss_anon_kib),
                    mib(r.pss_kib)
                );
                if count { format!("{s} ({n})") } else { s }
            };
            let mut rows: Vec<Vec<String>> = m
                .points
                .iter()
                .map(|p| {
                    vec![
                        p.conversations.to_string(),
                        cell(p.of(Role::Daemon), false),
                        cell(p.of(Role::Agent), true),
                        cell(p.of(Role::Viewer), true),
                    ]
                })
                .collect();
            let per = |p: &PerConversation| {
                format!(
                    "{:+.0} / {:+.0} / {:+.0} KiB",
                    p.vm_rss_kib, p.rss_anon_kib, p.pss_kib
                )
            };
            rows.push(vec![
                "per conversation".to_owned(),
                per(&m.daemon),
                per(&m.agents),
                per(&m.viewers),
            ]);
            out.push_str(&markdown(
                &[
                    "idle conversations",
                    "daemon RSS / anon / PSS",
                    "stand-in agents (n)",
                    "tmux + chat-tty viewers (n)",
                ],
                &rows,
            ));
        }
        if let Some(m) = &self.server_memory {
            if !out.is_empty() {
                out.push('\n');
            }
            let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
            out.push_str(&markdown(
                &["claude-vm server", "RSS"],
                &[
                    vec!["no workspaces (baseline)".to_owned(), mib(m.empty_kib)],
                    vec![
                        format!("{} running workspaces listed and linked", m.workspaces),
                        mib(m.linked_kib),
                    ],
                    vec![
                        format!("+ {} SSE clients on one conversation", m.clients),
                        mib(m.with_clients_kib),
                    ],
                ],
            ));
        }
        out
    }
}

/// A Markdown table with padded columns.
fn markdown(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::from("|");
        for (cell, w) in cells.iter().zip(&widths) {
            let w = *w;
            s.push_str(&format!(" {cell:<w$} |"));
        }
        s.push('\n');
        s
    };
    let mut out = line(&header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>());
    out.push_str(&line(
        &widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>(),
    ));
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

fn ms(v: f64) -> String {
    if v < 1.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// Below this many samples a p99 is just the slowest one: not shown.
const P99_MIN_SAMPLES: usize = 100;

fn spread(s: &Summary) -> String {
    if s.samples_ms.len() >= P99_MIN_SAMPLES {
        format!("{} / {} / {} ms", ms(s.p50_ms), ms(s.p95_ms), ms(s.p99_ms))
    } else {
        format!("{} / {} / - ms", ms(s.p50_ms), ms(s.p95_ms))
    }
}

fn p50_p99(s: &Summary) -> String {
    format!("{} / {} ms", ms(s.p50_ms), ms(s.p99_ms))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn summary(ms: &[u64]) -> Summary {
        let d: Vec<Duration> = ms.iter().map(|m| Duration::from_millis(*m)).collect();
        Summary::of(&d)
    }

    fn proc(role: Role, rss: u64, anon: u64) -> Process {
        Process {
            pid: 1,
            role,
            cmdline: String::new(),
            mem: Rss {
                vm_rss_kib: rss,
                rss_anon_kib: anon,
                rss_file_kib: rss - anon,
                pss_kib: anon + (rss - anon) / 2,
            },
        }
    }

    fn env() -> Environment {
        Environment {
            date: String::new(),
            cpus: 2,
            docker_version: String::new(),
            storage_driver: String::new(),
            kernel: String::new(),
            image: String::new(),
            claude_vm_bin: String::new(),
            claude_vm_bin_bytes: 0,
            groups: vec![],
            iterations: 1,
            list_repetitions: 1,
            list_workspaces: 1,
            warmup: 0,
            exec_samples: 1,
            cli_exec_samples: 1,
            file_bytes: 1,
            file_repetitions: 1,
            messages: 1,
            idle_conversations: 1,
            loadavg_start: None,
            loadavg_end: None,
            duration_s: 0.0,
        }
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
        assert_eq!(r.ratio, Some(1.5));
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
        let r = OpResult::latency(
            "send",
            "send",
            "a",
            summary(&[1, 2, 30]),
            None,
            Target::MaxP99Ms { ms: 20.0 },
        );
        assert_eq!(r.ratio, None);
        assert_eq!(r.pass, Some(false));
    }

    #[test]
    fn tables_have_a_row_per_result() {
        let report = Report::new(
            env(),
            vec![
                OpResult::new(
                    "up",
                    "new workspace up",
                    "a",
                    "b",
                    summary(&[900]),
                    summary(&[450]),
                    Target::MaxRatio { ratio: 1.5 },
                ),
                OpResult::latency(
                    "send",
                    "send to agent",
                    "a",
                    summary(&[2]),
                    Some(("b".into(), summary(&[1]))),
                    Target::MaxP99Ms { ms: 20.0 },
                ),
            ],
            vec![Throughput::new(
                "write",
                "write 100 MB",
                "a",
                "b",
                100_000_000,
                summary(&[1000]),
                summary(&[500]),
            )],
            Some(Memory::new(vec![
                MemoryPoint {
                    conversations: 0,
                    processes: vec![proc(Role::Daemon, 6000, 2000)],
                },
                MemoryPoint {
                    conversations: 2,
                    processes: vec![
                        proc(Role::Daemon, 6400, 2200),
                        proc(Role::Agent, 2000, 100),
                        proc(Role::Agent, 2000, 100),
                    ],
                },
            ])),
        );
        assert!(!report.pass);
        let table = report.table();
        assert!(table.contains("| new workspace up | 1 "), "{table}");
        assert!(table.contains("900 / 900 / - ms"));
        assert!(table.contains("2.00x"));
        assert!(table.contains("FAIL"));
        assert!(table.contains("| send to agent "));
        assert!(table.contains("100 MB/s (1000 ms)"));
        assert!(table.contains("200 MB/s (500 ms)"));
        assert!(table.contains("0.50x"));
        assert!(
            table.contains("| 2                  | 6.2 / 2.1 / 4.2 MiB"),
            "{table}"
        );
        assert!(table.contains("+200 / +100 / +150 KiB"), "{table}");
        assert!(table.contains("+2000 / +100 / +1050 KiB"), "{table}");
        // Four tables: header, rule and rows each, blank lines between them.
        assert_eq!(table.lines().count(), 3 + 1 + 3 + 1 + 3 + 1 + 5);
    }
}
