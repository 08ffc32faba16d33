//! Conversations: one agent process per conversation, run by the daemon (not the CLI), so
//! they keep working with nobody connected.
//!
//! Each conversation lives in `/workspace/.claude-vm/conversations/<id>/`:
//! `meta.json` (what `GET` shows), `spec.json` (how to run the agent; holds secrets, root
//! only, never served), `transcript.jsonl` (append-only events, the source of truth) and
//! `agent.pid`. A message is appended to the transcript (and synced) before it is
//! acknowledged, then delivered: at once when the agent accepts messages mid-turn (Claude
//! Code does), otherwise when the turn ends. After a daemon restart, conversations that were
//! working are resumed with the agent's own session id, and undelivered messages are sent.
//!
//! Each conversation is an actor: one task owns its state and handles commands (send,
//! interrupt, stop, decide) and agent output in order, so no locks guard the logic.

pub mod acp;
pub mod adapter;
pub mod codex;

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use claude_vm_protocol::api::{
    AgentSpec, Conversation, ConversationStatus as CS, Decision, Event, EventBody, NewConversation,
    Sent,
};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::activity::Activity;
use adapter::{Adapter, Parsed};

#[derive(Debug, thiserror::Error)]
pub enum ConvError {
    #[error("no conversation {0}")]
    NotFound(String),
    #[error("unknown agent kind {0:?}; known: claude, codex, gemini, goose, qwen, acp")]
    UnknownAgent(String),
    #[error("no pending approval {0}")]
    NoApproval(String),
    #[error("message is empty")]
    EmptyMessage,
    #[error("cannot write the conversation's files: {0}")]
    Io(#[from] std::io::Error),
    #[error("the conversation stopped responding")]
    Gone,
}

impl ConvError {
    pub fn status(&self) -> u16 {
        match self {
            ConvError::NotFound(_) | ConvError::NoApproval(_) => 404,
            ConvError::UnknownAgent(_) | ConvError::EmptyMessage => 400,
            ConvError::Io(_) | ConvError::Gone => 500,
        }
    }
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// `len` random lowercase hex digits.
fn new_id(len: usize) -> String {
    let mut s = format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    );
    s.truncate(len);
    s
}

/// Write `data` to `path` atomically with the given mode.
fn write_file(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Read a transcript, skipping a torn last line (the daemon may have died mid-write).
pub fn read_transcript(path: &Path, after: u64) -> Vec<Event> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<Event>(l).ok())
        .filter(|e| e.seq > after)
        .collect()
}

enum Cmd {
    Send {
        text: String,
        reply: oneshot::Sender<Result<Sent, ConvError>>,
    },
    Interrupt {
        reply: oneshot::Sender<bool>,
    },
    Stop {
        reply: oneshot::Sender<()>,
    },
    Decide {
        approval_id: String,
        decision: Decision,
        reply: oneshot::Sender<Result<(), ConvError>>,
    },
    Line {
        generation: u64,
        line: String,
    },
    Exited {
        generation: u64,
        code: Option<i32>,
        stderr: String,
    },
}

/// A handle on one conversation.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Cmd>,
    events: broadcast::Sender<Event>,
    view: Arc<Mutex<Conversation>>,
    transcript: PathBuf,
}

impl Handle {
    pub fn view(&self) -> Conversation {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub fn transcript(&self, after: u64) -> Vec<Event> {
        read_transcript(&self.transcript, after)
    }

    pub async fn send(&self, text: String) -> Result<Sent, ConvError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Send { text, reply })
            .await
            .map_err(|_| ConvError::Gone)?;
        rx.await.map_err(|_| ConvError::Gone)?
    }

    pub async fn interrupt(&self) -> Result<bool, ConvError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Interrupt { reply })
            .await
            .map_err(|_| ConvError::Gone)?;
        rx.await.map_err(|_| ConvError::Gone)
    }

    pub async fn stop(&self) -> Result<(), ConvError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Stop { reply })
            .await
            .map_err(|_| ConvError::Gone)?;
        rx.await.map_err(|_| ConvError::Gone)
    }

    pub async fn decide(&self, approval_id: String, decision: Decision) -> Result<(), ConvError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Decide {
                approval_id,
                decision,
                reply,
            })
            .await
            .map_err(|_| ConvError::Gone)?;
        rx.await.map_err(|_| ConvError::Gone)?
    }
}

/// All conversations of the workspace.
pub struct Manager {
    dir: PathBuf,
    project_dir: String,
    activity: Arc<Activity>,
    convs: Mutex<HashMap<String, Handle>>,
}

impl Manager {
    pub fn new(dir: PathBuf, project_dir: String, activity: Arc<Activity>) -> Arc<Manager> {
        Arc::new(Manager {
            dir,
            project_dir,
            activity,
            convs: Mutex::new(HashMap::new()),
        })
    }

    pub fn get(&self, id: &str) -> Result<Handle, ConvError> {
        self.convs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| ConvError::NotFound(id.to_owned()))
    }

    pub fn list(&self) -> Vec<Conversation> {
        let mut v: Vec<Conversation> = self
            .convs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(Handle::view)
            .collect();
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        v
    }

    /// Start a conversation; its first message (if any) is queued before this returns.
    pub async fn create(&self, req: NewConversation) -> Result<Conversation, ConvError> {
        let adapter = adapter::for_kind(&req.agent.kind)
            .ok_or_else(|| ConvError::UnknownAgent(req.agent.kind.clone()))?;
        let id = new_id(12);
        let dir = self.dir.join(&id);
        std::fs::create_dir_all(&dir)?;
        let ts = now();
        let view = Conversation {
            id: id.clone(),
            agent: req.agent.kind.clone(),
            title: req
                .title
                .clone()
                .or_else(|| req.message.as_deref().map(title_from)),
            status: CS::Idle,
            status_reason: None,
            permission_mode: req.permission_mode,
            session_id: None,
            queued: 0,
            last_seq: 0,
            created_at: ts.clone(),
            updated_at: ts,
        };
        write_file(
            &dir.join("spec.json"),
            &serde_json::to_vec(&req.agent).expect("json"),
            0o600,
        )?;
        write_file(
            &dir.join("meta.json"),
            &serde_json::to_vec(&view).expect("json"),
            0o600,
        )?;
        let handle = self.start_actor(dir, view, req.agent, adapter, VecDeque::new(), 0, None)?;
        if let Some(text) = req.message {
            handle.send(text).await?;
        }
        Ok(handle.view())
    }

    /// Load every conversation on disk; resume those that were in the middle of a turn.
    pub fn resume_all(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            if let Err(e) = self.resume_one(&dir) {
                tracing::warn!("cannot load conversation {}: {e}", dir.display());
            }
        }
    }

    fn resume_one(&self, dir: &Path) -> Result<(), String> {
        let view: Conversation = serde_json::from_slice(
            &std::fs::read(dir.join("meta.json")).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        let spec: AgentSpec = serde_json::from_slice(
            &std::fs::read(dir.join("spec.json")).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        let adapter = adapter::for_kind(&spec.kind).ok_or("unknown agent kind")?;
        // An agent left over from a daemon that died belongs to nobody now: stop it.
        if let Some(pid) = std::fs::read_to_string(dir.join("agent.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = std::fs::remove_file(dir.join("agent.pid"));
        }
        let events = read_transcript(&dir.join("transcript.jsonl"), 0);
        let last_seq = events.last().map_or(0, |e| e.seq);
        let delivered: std::collections::HashSet<&str> = events
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::Delivered { message_id } => Some(message_id.as_str()),
                _ => None,
            })
            .collect();
        let pending: VecDeque<(String, String)> = events
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::User { message_id, text }
                    if !delivered.contains(message_id.as_str()) =>
                {
                    Some((message_id.clone(), text.clone()))
                }
                _ => None,
            })
            .collect();
        let interrupted = matches!(
            view.status,
            CS::Working | CS::Starting | CS::WaitingForApproval
        );
        let handle = self
            .start_actor(
                dir.to_owned(),
                view,
                spec,
                adapter,
                pending,
                last_seq,
                Some(interrupted),
            )
            .map_err(|e| e.to_string())?;
        drop(handle);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn start_actor(
        &self,
        dir: PathBuf,
        mut view: Conversation,
        spec: AgentSpec,
        adapter: Box<dyn Adapter>,
        pending: VecDeque<(String, String)>,
        seq: u64,
        resumed: Option<bool>,
    ) -> Result<Handle, ConvError> {
        let transcript_path = dir.join("transcript.jsonl");
        let transcript = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&transcript_path)?
        };
        view.queued = pending.len() as u64;
        let (tx, rx) = mpsc::channel(256);
        let (events, _) = broadcast::channel(1024);
        let view = Arc::new(Mutex::new(view));
        let handle = Handle {
            tx: tx.clone(),
            events: events.clone(),
            view: view.clone(),
            transcript: transcript_path,
        };
        let id = handle.view().id;
        let actor = Actor {
            dir,
            spec,
            adapter,
            view,
            events,
            transcript,
            seq,
            pending,
            agent: None,
            generation: 0,
            tx,
            approvals: HashMap::new(),
            project_dir: self.project_dir.clone(),
            activity: self.activity.clone(),
            interrupts: 0,
            stopping: false,
            last_output: std::time::Instant::now(),
            outbox: Vec::new(),
        };
        self.convs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, handle.clone());
        tokio::spawn(actor.run(rx, resumed));
        ensure_tmux(&handle.view().id);
        Ok(handle)
    }
}

/// Give the conversation a tmux session (named after its id) that shows it live and sends
/// typed lines as messages, for people who work inside the workspace:
/// `tmux attach -t <id>`. Skipped when the image has no tmux.
fn ensure_tmux(id: &str) {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let id = id.to_owned();
    tokio::spawn(async move {
        let exists = tokio::process::Command::new("tmux")
            .args(["has-session", "-t", &format!("={id}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        match exists {
            Err(_) => {
                tracing::debug!("no tmux in this image; conversation {id} gets no tmux session")
            }
            Ok(s) if s.success() => {}
            Ok(_) => {
                let started = tokio::process::Command::new("tmux")
                    .args(["new-session", "-d", "-s", &id, "-x", "160", "-y", "48"])
                    .arg(format!("{} agent chat-tty {id}", exe.display()))
                    .env("TERM", "xterm-256color")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .await;
                if !matches!(started, Ok(s) if s.success()) {
                    tracing::warn!("cannot start the tmux session of conversation {id}");
                }
            }
        }
    });
}

/// A short title from the first message.
fn title_from(text: &str) -> String {
    let first = text.lines().next().unwrap_or("").trim();
    let mut t: String = first.chars().take(60).collect();
    if first.chars().count() > 60 {
        t.push('…');
    }
    t
}

struct Running {
    stdin: tokio::process::ChildStdin,
    pid: i32,
}

struct Actor {
    dir: PathBuf,
    spec: AgentSpec,
    adapter: Box<dyn Adapter>,
    view: Arc<Mutex<Conversation>>,
    events: broadcast::Sender<Event>,
    transcript: std::fs::File,
    seq: u64,
    /// Accepted, not yet delivered.
    pending: VecDeque<(String, String)>,
    agent: Option<Running>,
    generation: u64,
    tx: mpsc::Sender<Cmd>,
    /// approval id → (agent's request id, tool input)
    approvals: HashMap<String, (String, Value)>,
    project_dir: String,
    activity: Arc<Activity>,
    interrupts: u64,
    stopping: bool,
    /// When the agent last printed anything (for the hang watchdog).
    last_output: std::time::Instant,
    /// Bytes waiting to be written to the agent (handshakes, protocol replies).
    outbox: Vec<Vec<u8>>,
}

/// Default for [`AgentSpec::turn_timeout_secs`].
const DEFAULT_TURN_TIMEOUT: u64 = 30 * 60;

impl Actor {
    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>, resumed: Option<bool>) {
        if resumed == Some(true) {
            // The daemon died during a turn: pick the work up again.
            let text = "(claude-vm) The previous turn was interrupted because the workspace daemon restarted. Continue where you left off.".to_owned();
            let message_id = format!("resume-{}", new_id(8));
            self.record(
                EventBody::User {
                    message_id: message_id.clone(),
                    text: text.clone(),
                },
                true,
            );
            self.pending.push_back((message_id, text));
            self.set_status(CS::Starting, Some("resuming after a daemon restart".into()));
        } else if resumed == Some(false) && !self.pending.is_empty() {
            self.set_status(CS::Starting, Some("resuming after a daemon restart".into()));
        }
        if !self.pending.is_empty() {
            self.deliver().await;
        }
        let mut watchdog = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            let cmd = tokio::select! {
                c = rx.recv() => match c {
                    Some(c) => c,
                    None => break,
                },
                _ = watchdog.tick() => {
                    self.check_hung();
                    continue;
                }
            };
            match cmd {
                Cmd::Send { text, reply } => {
                    let r = self.accept(text);
                    let ok = r.is_ok();
                    let _ = reply.send(r);
                    if ok {
                        self.deliver().await;
                    }
                }
                Cmd::Interrupt { reply } => {
                    let n = self.interrupts;
                    self.interrupts += 1;
                    let sent = match (&mut self.agent, self.adapter.interrupt(n)) {
                        (Some(a), Some(bytes)) => a.stdin.write_all(&bytes).await.is_ok(),
                        _ => false,
                    };
                    let _ = reply.send(sent);
                }
                Cmd::Stop { reply } => {
                    if let Some(a) = &self.agent {
                        self.stopping = true;
                        let _ = nix::sys::signal::killpg(
                            nix::unistd::Pid::from_raw(a.pid),
                            nix::sys::signal::Signal::SIGTERM,
                        );
                        let pid = a.pid;
                        tokio::spawn(async move {
                            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                            let _ = nix::sys::signal::killpg(
                                nix::unistd::Pid::from_raw(pid),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        });
                    } else {
                        self.set_status(CS::Stopped, None);
                    }
                    let _ = reply.send(());
                }
                Cmd::Decide {
                    approval_id,
                    decision,
                    reply,
                } => {
                    let r = self.decide(&approval_id, &decision).await;
                    let _ = reply.send(r);
                }
                Cmd::Line { generation, line } if generation == self.generation => {
                    self.on_line(&line).await
                }
                Cmd::Exited {
                    generation,
                    code,
                    stderr,
                } if generation == self.generation => {
                    self.agent = None;
                    let _ = std::fs::remove_file(self.dir.join("agent.pid"));
                    if self.stopping {
                        self.stopping = false;
                        self.set_status(CS::Stopped, None);
                    } else {
                        let status = code.map_or("a signal".to_owned(), |c| format!("status {c}"));
                        let tail = stderr.trim();
                        let reason = if tail.is_empty() {
                            format!("the agent exited with {status}")
                        } else {
                            format!("the agent exited with {status}: {tail}")
                        };
                        self.set_status(CS::Failed, Some(reason));
                    }
                }
                Cmd::Line { .. } | Cmd::Exited { .. } => {}
            }
        }
    }

    /// Fail a turn that has shown nothing for too long.
    fn check_hung(&mut self) {
        let limit = self.spec.turn_timeout_secs.unwrap_or(DEFAULT_TURN_TIMEOUT);
        let busy = matches!(self.view().status, CS::Working | CS::Starting);
        if !busy || self.agent.is_none() || self.last_output.elapsed().as_secs() < limit {
            return;
        }
        self.abandon_agent(format!(
            "the agent showed no sign of life for {limit}s and was stopped"
        ));
    }

    /// Kill the agent and fail the conversation with `reason`. The dead process's exit is
    /// ignored (new generation), so it cannot overwrite the reason.
    fn abandon_agent(&mut self, reason: String) {
        if let Some(a) = &self.agent {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(a.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        self.generation += 1;
        self.agent = None;
        let _ = std::fs::remove_file(self.dir.join("agent.pid"));
        self.set_status(CS::Failed, Some(reason));
    }

    fn view(&self) -> std::sync::MutexGuard<'_, Conversation> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save_meta(&self) {
        let data = serde_json::to_vec(&*self.view()).expect("json");
        if let Err(e) = write_file(&self.dir.join("meta.json"), &data, 0o600) {
            tracing::warn!("cannot save conversation metadata: {e}");
        }
    }

    /// Append an event to the transcript (synced when `durable`) and tell followers.
    fn record(&mut self, body: EventBody, durable: bool) -> u64 {
        self.seq += 1;
        let event = Event {
            seq: self.seq,
            ts: now(),
            body,
        };
        let mut line = serde_json::to_vec(&event).expect("json");
        line.push(b'\n');
        if let Err(e) = self.transcript.write_all(&line).and_then(|_| {
            if durable {
                self.transcript.sync_data()
            } else {
                Ok(())
            }
        }) {
            tracing::error!("cannot append to the transcript: {e}");
        }
        {
            let mut v = self.view();
            v.last_seq = self.seq;
            v.updated_at = event.ts.clone();
        }
        let _ = self.events.send(event);
        self.activity.touch("agent");
        self.seq
    }

    fn set_status(&mut self, status: CS, reason: Option<String>) {
        {
            let v = self.view();
            if v.status == status && v.status_reason == reason {
                return;
            }
        }
        {
            let mut v = self.view();
            v.status = status;
            v.status_reason = reason.clone();
        }
        self.record(EventBody::Status { status, reason }, false);
        self.save_meta();
    }

    fn accept(&mut self, text: String) -> Result<Sent, ConvError> {
        if text.trim().is_empty() {
            return Err(ConvError::EmptyMessage);
        }
        let message_id = new_id(12);
        let seq = self.record(
            EventBody::User {
                message_id: message_id.clone(),
                text: text.clone(),
            },
            true,
        );
        self.pending.push_back((message_id.clone(), text));
        self.view().queued = self.pending.len() as u64;
        Ok(Sent { message_id, seq })
    }

    /// Hand pending messages to the agent, starting it if needed.
    async fn deliver(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if self.agent.is_none() && !self.spawn() {
            return;
        }
        self.flush_outbox().await;
        if !self.adapter.ready() {
            // The handshake is still running; delivery resumes when the agent answers.
            return;
        }
        while let Some((id, text)) = self.pending.front().cloned() {
            // Read afresh: the message just delivered started a turn.
            let busy = matches!(self.view().status, CS::Working | CS::WaitingForApproval);
            if busy && !self.adapter.accepts_mid_turn() {
                break;
            }
            let bytes = self.adapter.message(&text);
            let Some(agent) = self.agent.as_mut() else {
                break;
            };
            if agent.stdin.write_all(&bytes).await.is_err() || agent.stdin.flush().await.is_err() {
                // The agent is going away; its exit will be reported, the message stays queued.
                break;
            }
            self.pending.pop_front();
            self.last_output = std::time::Instant::now();
            self.view().queued = self.pending.len() as u64;
            self.record(EventBody::Delivered { message_id: id }, true);
            if !matches!(self.view().status, CS::WaitingForApproval) {
                self.set_status(CS::Working, None);
            }
        }
    }

    /// Start the agent process. False (and status failed) when it cannot start.
    fn spawn(&mut self) -> bool {
        let resume = self.view().session_id.clone();
        let mode = self.view().permission_mode;
        // A fresh adapter per process: protocol state never leaks across restarts.
        if let Some(fresh) = adapter::for_kind(&self.spec.kind) {
            self.adapter = fresh;
        }
        let (program, args) = self.adapter.command(&self.spec, resume.as_deref(), mode);
        let who = match crate::exec::identity(None) {
            Ok(w) => w,
            Err(e) => {
                self.set_status(CS::Failed, Some(e.to_string()));
                return false;
            }
        };
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(&args)
            .current_dir(&self.project_dir)
            .env("HOME", &who.home)
            .env("CLAUDE_VM_CONVERSATION", &self.view().id)
            .envs(&self.spec.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(n) = &who.name {
            cmd.env("USER", n).env("LOGNAME", n);
        }
        crate::exec::run_as(&mut cmd, &who, crate::exec::Grouping::Session);
        self.set_status(CS::Starting, None);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                self.set_status(CS::Failed, Some(format!("cannot start {program}: {e}")));
                return false;
            }
        };
        self.generation += 1;
        let generation = self.generation;
        let pid = child.id().unwrap_or(0) as i32;
        let _ = std::fs::write(self.dir.join("agent.pid"), pid.to_string());
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let tail = Arc::new(Mutex::new(VecDeque::<String>::new()));
        {
            let tail = tail.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                    t.push_back(l);
                    if t.len() > 10 {
                        t.pop_front();
                    }
                }
            });
        }
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                        if line.is_empty() {
                            continue;
                        }
                        if tx.send(Cmd::Line { generation, line }).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let code = child.wait().await.ok().and_then(|s| s.code());
            // Let the stderr reader catch the last words.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let stderr = tail
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join("\n");
            let _ = tx
                .send(Cmd::Exited {
                    generation,
                    code,
                    stderr,
                })
                .await;
        });
        self.agent = Some(Running { stdin, pid });
        let hello = self.adapter.startup(resume.as_deref(), &self.project_dir);
        if !hello.is_empty() {
            self.write_later(hello);
        }
        true
    }

    /// Queue bytes for the agent's stdin from a synchronous context.
    fn write_later(&mut self, bytes: Vec<u8>) {
        self.outbox.push(bytes);
    }

    /// Write what [`Actor::write_later`] queued.
    async fn flush_outbox(&mut self) {
        let out = std::mem::take(&mut self.outbox);
        if let Some(a) = self.agent.as_mut() {
            for b in out {
                if a.stdin.write_all(&b).await.is_err() {
                    break;
                }
            }
            let _ = a.stdin.flush().await;
        }
    }

    async fn on_line(&mut self, line: &str) {
        self.last_output = std::time::Instant::now();
        let parsed = match self.adapter.parse(line) {
            Ok(p) => p,
            Err(why) => {
                let shown: String = line.chars().take(200).collect();
                let reason = format!("the agent sent malformed output ({why}): {shown}");
                self.abandon_agent(reason);
                return;
            }
        };
        for p in parsed {
            match p {
                Parsed::Session(s) => {
                    let changed = self.view().session_id.as_deref() != Some(s.as_str());
                    if changed {
                        self.view().session_id = Some(s);
                        self.save_meta();
                    }
                }
                Parsed::Event(body) => {
                    let ends_turn = matches!(body, EventBody::TurnEnd { .. });
                    let working = matches!(
                        body,
                        EventBody::Assistant { .. } | EventBody::ToolCall { .. }
                    );
                    self.record(body, ends_turn);
                    if ends_turn {
                        // A finished turn waits for nothing: approvals it left open (an
                        // interrupt cancelled them) can no longer be answered.
                        self.approvals.clear();
                        self.set_status(CS::Idle, None);
                        self.deliver().await;
                    } else if working && self.view().status != CS::WaitingForApproval {
                        self.set_status(CS::Working, None);
                    }
                }
                Parsed::Reply(bytes) => self.write_later(bytes),
                Parsed::Fail(reason) => {
                    self.outbox.clear();
                    self.abandon_agent(reason);
                    return;
                }
                Parsed::Approval {
                    request_id,
                    tool,
                    input,
                } => {
                    let approval_id = new_id(8);
                    self.approvals
                        .insert(approval_id.clone(), (request_id, input.clone()));
                    self.record(
                        EventBody::ApprovalRequest {
                            approval_id,
                            tool,
                            input,
                        },
                        true,
                    );
                    self.set_status(CS::WaitingForApproval, None);
                }
            }
        }
        self.flush_outbox().await;
        if self.adapter.ready() && !self.pending.is_empty() {
            self.deliver().await;
        }
    }

    async fn decide(&mut self, approval_id: &str, decision: &Decision) -> Result<(), ConvError> {
        let (request_id, input) = self
            .approvals
            .remove(approval_id)
            .ok_or_else(|| ConvError::NoApproval(approval_id.to_owned()))?;
        let bytes = self.adapter.decision(&request_id, &input, decision);
        if let Some(a) = self.agent.as_mut() {
            let _ = a.stdin.write_all(&bytes).await;
        }
        self.record(
            EventBody::ApprovalDecision {
                approval_id: approval_id.to_owned(),
                allow: decision.allow,
            },
            true,
        );
        if self.approvals.is_empty() {
            self.set_status(CS::Working, None);
        }
        Ok(())
    }
}
