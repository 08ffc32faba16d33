//! Conversations with a stand-in agent (`echo-agent`, copied in as the `claude` binary):
//! the latency claude-vm adds between a client and the agent, and the daemon's memory per
//! idle conversation.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use claude_vm_engine::NullReporter;
use claude_vm_protocol::api::{ConversationStatus, Event, EventBody, PermissionMode};
use tokio::sync::mpsc;

use crate::exec::{Tools, check_interrupted, describe, run};
use crate::inside::{Inside, STEP_TIMEOUT, Ws, now_ns};
use crate::report::{MemoryPoint, Process, Role, Rss};

/// Where the engine installs the agent binary configured as `agents.claude.binary`.
fn agent_path(binary_name: &str) -> String {
    format!("/opt/claude-vm/agents/claude/{binary_name}")
}

/// The timestamps `echo-agent` put in its answer to `marker`: (read, wrote), in ns.
fn stamps(text: &str, marker: &str) -> Option<(i128, i128)> {
    let rest = text.strip_prefix(marker)?.strip_prefix(" read=")?;
    let (read, wrote) = rest.split_once(" wrote=")?;
    Some((read.trim().parse().ok()?, wrote.trim().parse().ok()?))
}

/// Per-message samples, milliseconds.
#[derive(Default)]
pub struct ChatSamples {
    /// Client about to call `send_message` → the agent has read the line.
    pub send_to_agent: Vec<f64>,
    /// The agent about to write its answer → the follower has the assistant event.
    pub agent_to_follower: Vec<f64>,
    /// Client about to send → the follower has the answer.
    pub round_trip: Vec<f64>,
    /// `send_message` until its acknowledgement (the message is on disk).
    pub send_ack: Vec<f64>,
    /// The same three through a plain `docker exec -i` pipe to the same agent.
    pub base_send_to_agent: Vec<f64>,
    pub base_agent_to_follower: Vec<f64>,
    pub base_round_trip: Vec<f64>,
}

/// `docker exec -i CTR echo-agent`: the agent behind a plain docker attach stream.
struct Pipe {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Pipe {
    fn start(tools: &Tools, ws: &Ws, agent: &str) -> Result<Pipe> {
        let uid = claude_vm_protocol::AGENT_UID;
        let mut cmd = tools.docker(["exec", "-i", "-u"]);
        cmd.arg(format!("{uid}:{uid}"))
            .args(["-w", &ws.project_dir, &ws.container, agent])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot run `{}`", describe(&cmd)))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut pipe = Pipe {
            child,
            stdin,
            stdout,
        };
        let init = pipe.line()?;
        if !init.contains("\"init\"") {
            bail!("the agent behind `docker exec -i` started with {init:?}");
        }
        Ok(pipe)
    }

    fn line(&mut self) -> Result<String> {
        let mut l = String::new();
        if self.stdout.read_line(&mut l)? == 0 {
            bail!("the agent behind `docker exec -i` exited");
        }
        Ok(l)
    }

    /// One exchange: (send → agent read, agent write → received, round trip) in ms.
    fn exchange(&mut self, marker: &str) -> Result<(f64, f64, f64)> {
        let mut msg = serde_json::to_vec(&serde_json::json!({
            "type": "user",
            "message": {"role": "user", "content": marker},
        }))?;
        msg.push(b'\n');
        let t0 = now_ns();
        self.stdin.write_all(&msg)?;
        self.stdin.flush()?;
        let answer = self.line()?;
        let t1 = now_ns();
        let v: serde_json::Value = serde_json::from_str(&answer)?;
        let text = v
            .pointer("/message/content/0/text")
            .and_then(|t| t.as_str())
            .ok_or_else(|| anyhow!("unexpected answer from the agent: {answer}"))?;
        let (read, wrote) =
            stamps(text, marker).ok_or_else(|| anyhow!("no timestamps in {text:?}"))?;
        let _result = self.line()?;
        Ok((
            ms_between(t0, read),
            ms_between(wrote, t1),
            ms_between(t0, t1),
        ))
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ms_between(from_ns: i128, to_ns: i128) -> f64 {
    (to_ns - from_ns) as f64 / 1e6
}

/// Start a conversation with the configured agent (copying it in on first use).
fn new_chat(inside: &Inside, ws: &Ws, message: Option<String>) -> Result<String> {
    inside.block("starting a conversation", async {
        let chat = inside
            .engine
            .new_chat(
                &ws.name,
                Some("claude"),
                message,
                PermissionMode::Skip,
                &NullReporter,
            )
            .await?;
        Ok(chat.id)
    })
}

/// Wait for the next event the follower passes on that satisfies `want`.
fn wait_event(
    inside: &Inside,
    rx: &mut mpsc::UnboundedReceiver<(Event, i128)>,
    what: &str,
    mut want: impl FnMut(&Event) -> bool,
) -> Result<(Event, i128)> {
    inside.block(what, async {
        loop {
            let Some((e, t)) = rx.recv().await else {
                bail!("the event stream ended");
            };
            if let EventBody::Status {
                status: ConversationStatus::Failed,
                reason,
            } = &e.body
            {
                bail!(
                    "the conversation failed: {}",
                    reason.as_deref().unwrap_or("?")
                );
            }
            if want(&e) {
                return Ok((e, t));
            }
        }
    })
}

/// `messages` messages, one at a time, each through claude-vm (send_message, answer read
/// by an `events(follow)` subscriber) and then through the `docker exec -i` pipe.
pub fn latency(
    inside: &Inside,
    tools: &Tools,
    ws: &Ws,
    agent_name: &str,
    messages: usize,
    warmup: usize,
    pause: Duration,
) -> Result<ChatSamples> {
    let conv = new_chat(inside, ws, None)?;
    let (tx, mut rx) = mpsc::unbounded_channel::<(Event, i128)>();
    let mut events = inside.block("following the conversation", async {
        Ok(ws.link.events(&conv, 0, true).await?)
    })?;
    let follower = inside.rt.spawn(async move {
        while let Ok(Some(e)) = events.next().await {
            let t = now_ns();
            if tx.send((e, t)).is_err() {
                break;
            }
        }
    });
    let mut pipe = Pipe::start(tools, ws, &agent_path(agent_name))?;
    let mut s = ChatSamples::default();
    let total = warmup + messages;
    for i in 0..total {
        check_interrupted()?;
        let measured = i >= warmup;
        let marker = format!("message-{i}");
        // Ours: send, then wait for the echo and for the turn to end.
        let t0 = now_ns();
        let sent = inside.block("sending a message", async {
            Ok(ws.link.send_message(&conv, &marker).await?)
        })?;
        let t_ack = now_ns();
        let (event, t1) = wait_event(inside, &mut rx, "waiting for the echo", |e| {
            e.seq > sent.seq
                && matches!(&e.body, EventBody::Assistant { text } if stamps(text, &marker).is_some())
        })?;
        let EventBody::Assistant { text } = &event.body else {
            unreachable!("matched an assistant event");
        };
        let (read, wrote) =
            stamps(text, &marker).ok_or_else(|| anyhow!("no timestamps in {text:?}"))?;
        wait_event(inside, &mut rx, "waiting for the end of the turn", |e| {
            matches!(
                e.body,
                EventBody::Status {
                    status: ConversationStatus::Idle,
                    ..
                }
            )
        })?;
        // The baseline: the same agent behind `docker exec -i`.
        let (b_send, b_back, b_rt) = pipe.exchange(&marker)?;
        if measured {
            s.send_to_agent.push(ms_between(t0, read));
            s.agent_to_follower.push(ms_between(wrote, t1));
            s.round_trip.push(ms_between(t0, t1));
            s.send_ack.push(ms_between(t0, t_ack));
            s.base_send_to_agent.push(b_send);
            s.base_agent_to_follower.push(b_back);
            s.base_round_trip.push(b_rt);
        }
        let done = i + 1;
        if done % 50 == 0 || done == total {
            eprintln!(
                "conversation: {done}/{total} messages (incl. {warmup} warm-up); last: send→agent {:.2} ms, agent→follower {:.2} ms (docker exec -i: {b_send:.2} / {b_back:.2} ms)",
                ms_between(t0, read),
                ms_between(wrote, t1),
            );
        }
        std::thread::sleep(pause);
    }
    follower.abort();
    Ok(s)
}

/// Read `VmRSS`, `RssAnon`, `RssFile` (from `status`) and `Pss` (from `smaps_rollup`), in
/// kB, from the text of both files.
fn parse_rss(text: &str) -> Rss {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Rss {
        vm_rss_kib: field("VmRSS:"),
        rss_anon_kib: field("RssAnon:"),
        rss_file_kib: field("RssFile:"),
        pss_kib: field("Pss:"),
    }
}

fn role(cmdline: &str) -> Role {
    let daemon = format!("{} agent serve", claude_vm_protocol::BINARY_PATH);
    let init = format!("{} agent init", claude_vm_protocol::BINARY_PATH);
    if cmdline == daemon {
        Role::Daemon
    } else if cmdline == init {
        Role::Init
    } else if cmdline.starts_with("/opt/claude-vm/agents/") {
        Role::Agent
    } else if cmdline.starts_with("tmux") || cmdline.contains(" agent chat-tty ") {
        Role::Viewer
    } else {
        Role::Other
    }
}

/// Every process of the workspace with its memory, via one `docker exec`.
fn memory_point(tools: &Tools, ws: &Ws, conversations: usize) -> Result<MemoryPoint> {
    // Each process: "== pid", its command line, then status and smaps_rollup. The shell
    // running this skips itself; the `cat`s it starts are not in the list it walks.
    let script = "for d in /proc/[0-9]*; do p=${d#/proc/}; [ \"$p\" = \"$$\" ] && continue; \
        c=$(tr '\\0' ' ' < $d/cmdline 2>/dev/null) || continue; [ -n \"$c\" ] || continue; \
        echo \"== $p\"; echo \"$c\"; cat $d/status $d/smaps_rollup 2>/dev/null; done; exit 0";
    // smaps_rollup of another user's process takes CAP_SYS_PTRACE, which `docker exec`
    // does not have (and --privileged exec fails on this engine): read as root, then the
    // agents' (which run as the agent user) as that user.
    let uid = claude_vm_protocol::AGENT_UID;
    let mut processes: Vec<Process> = Vec::new();
    for user in ["0:0".to_owned(), format!("{uid}:{uid}")] {
        let out = run(tools.docker(["exec", "-u", &user, &ws.container, "sh", "-c", script]))
            .context("reading the workspace's processes")?;
        for section in out.split("== ").skip(1) {
            let mut lines = section.lines();
            let (Some(pid), Some(cmdline)) = (lines.next(), lines.next()) else {
                continue;
            };
            let Ok(pid) = pid.trim().parse() else {
                continue;
            };
            let mem = parse_rss(section);
            if let Some(known) = processes.iter_mut().find(|p| p.pid == pid) {
                known.mem.pss_kib = known.mem.pss_kib.max(mem.pss_kib);
                continue;
            }
            let cmdline = cmdline.trim().to_owned();
            processes.push(Process {
                pid,
                role: role(&cmdline),
                mem,
                cmdline,
            });
        }
    }
    // The second reader's shell and `cat`s are not the workspace's.
    processes.retain(|p| p.role != Role::Other || !p.cmdline.starts_with("sh -c for d in"));
    if !processes.iter().any(|p| p.role == Role::Daemon) {
        bail!("no daemon process found in {}", ws.container);
    }
    Ok(MemoryPoint {
        conversations,
        processes,
    })
}

/// Wait until a conversation's first turn has ended and it is idle.
fn wait_idle(inside: &Inside, ws: &Ws, conv: &str) -> Result<()> {
    let deadline = std::time::Instant::now() + STEP_TIMEOUT;
    loop {
        let done = inside.block("reading a transcript", async {
            let mut events = ws.link.events(conv, 0, false).await?;
            let (mut turn_end, mut idle_after) = (false, false);
            while let Some(e) = events.next().await? {
                match e.body {
                    EventBody::TurnEnd { .. } => turn_end = true,
                    EventBody::Status {
                        status: ConversationStatus::Idle,
                        ..
                    } if turn_end => idle_after = true,
                    EventBody::Status {
                        status: ConversationStatus::Failed,
                        reason,
                    } => bail!("the conversation failed: {}", reason.unwrap_or_default()),
                    _ => {}
                }
            }
            Ok(idle_after)
        })?;
        if done {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("conversation {conv} did not finish its first turn");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Memory with no conversation, then with `n / 2` and `n` idle conversations, each after
/// one exchanged message. Readings are taken after `settle`.
pub fn memory(
    inside: &Inside,
    tools: &Tools,
    ws: &Ws,
    n: usize,
    settle: Duration,
) -> Result<Vec<MemoryPoint>> {
    std::thread::sleep(settle);
    let mut points = vec![memory_point(tools, ws, 0)?];
    eprintln!(
        "memory: daemon {} KiB with no conversation",
        points[0].of(Role::Daemon).0.vm_rss_kib
    );
    for k in 1..=n {
        let conv = new_chat(inside, ws, Some(format!("hello from conversation {k}")))?;
        wait_idle(inside, ws, &conv)?;
        if k == n || (k == n / 2 && k > 0) {
            std::thread::sleep(settle);
            let p = memory_point(tools, ws, k)?;
            let (agents, count) = p.of(Role::Agent);
            if count != k {
                bail!("{count} agent processes running with {k} conversations");
            }
            eprintln!(
                "memory: daemon {} KiB with {k} idle conversations; agents {} KiB, tmux and viewers {} KiB in all",
                p.of(Role::Daemon).0.vm_rss_kib,
                agents.vm_rss_kib,
                p.of(Role::Viewer).0.vm_rss_kib,
            );
            points.push(p);
        }
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_come_back_from_the_echo() {
        assert_eq!(
            stamps("message-3 read=17 wrote=19", "message-3"),
            Some((17, 19))
        );
        assert_eq!(stamps("message-30 read=17 wrote=19", "message-3"), None);
        assert_eq!(stamps("other", "message-3"), None);
    }

    #[test]
    fn rss_fields_from_proc_status() {
        let text = "Name:\tclaude-vm\nVmRSS:\t    6392 kB\nRssAnon:\t    1200 kB\nRssFile:\t    5192 kB\n\
            00400000-7ffd0000 ---p 00000000 00:00 0    [rollup]\nRss:   6392 kB\nPss:   3100 kB\nPss_Anon:   1200 kB\n";
        assert_eq!(
            parse_rss(text),
            Rss {
                vm_rss_kib: 6392,
                rss_anon_kib: 1200,
                rss_file_kib: 5192,
                pss_kib: 3100,
            }
        );
    }

    #[test]
    fn processes_by_role() {
        assert_eq!(
            role("/opt/claude-vm/bin/claude-vm agent serve"),
            Role::Daemon
        );
        assert_eq!(role("/opt/claude-vm/bin/claude-vm agent init"), Role::Init);
        assert_eq!(
            role("/opt/claude-vm/agents/claude/echo-agent -p --input-format stream-json"),
            Role::Agent
        );
        assert_eq!(
            role(
                "tmux new-session -d -s 190ba1637185 -x 160 -y 48 /opt/claude-vm/bin/claude-vm agent chat-tty 190ba1637185"
            ),
            Role::Viewer
        );
        assert_eq!(
            role("/opt/claude-vm/bin/claude-vm agent chat-tty 190ba1637185"),
            Role::Viewer
        );
        assert_eq!(role("sleep 1000"), Role::Other);
    }
}
