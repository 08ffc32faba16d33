//! Conversations: one agent process per conversation, run by the daemon (not the CLI), so
//! they keep working with nobody connected.
//!
//! Each conversation lives in `<dir>/<id>/` (the daemon's `/workspace/.claude-vm/conversations`):
//! `meta.json` (what `GET` shows), `spec.json` (how to run the agent; holds secrets, owner
//! only, never served), `transcript.jsonl` (append-only events, the source of truth) and
//! `agent.pid`. A message is appended to the transcript (and synced) before it is
//! acknowledged, then delivered: at once when the agent accepts messages mid-turn (Claude
//! Code does), otherwise when the turn ends. After a daemon restart, conversations that were
//! working are resumed with the agent's own session id, and undelivered messages are sent.
//!
//! Each conversation is an actor: one task owns its state and handles commands (send,
//! interrupt, stop, decide) and agent output in order, so no locks guard the logic. The
//! actor never waits on the agent: a writer task feeds the agent's stdin from a bounded
//! queue (a message counts as delivered once that task wrote it), a reader task reads its
//! stdout a bounded line at a time, and a waiter task reports its exit. So an agent that
//! stops reading, or floods its output, cannot freeze the hang watchdog or Stop.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use claude_vm_protocol::api::{
    AgentSpec, Conversation, ConversationStatus as CS, Decision, EnvApplied, Event, EventBody,
    NewConversation, Sent,
};
use nix::sys::signal::Signal;
use serde_json::Value;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::adapter::{self, Adapter, Parsed};
use crate::lines::{self, LineError, MAX_LINE};
use crate::process::{AgentPid, Host};
use crate::redact::Redactor;
use crate::transcript::{self, StoreError};

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
    #[error("invalid message id: use 1 to 64 letters, digits, '-' or '_'")]
    BadMessageId,
    #[error("cannot write the conversation's files: {0}")]
    Io(#[from] std::io::Error),
    /// The message could not be made durable, so it was not accepted.
    #[error("cannot save the message: {0}")]
    Store(#[from] StoreError),
    #[error("the conversation stopped responding")]
    Gone,
}

impl ConvError {
    /// The HTTP status that fits.
    pub fn status(&self) -> u16 {
        match self {
            ConvError::NotFound(_) | ConvError::NoApproval(_) => 404,
            ConvError::UnknownAgent(_) | ConvError::EmptyMessage | ConvError::BadMessageId => 400,
            ConvError::Store(StoreError::DiskFull) => 507,
            ConvError::Io(_) | ConvError::Store(_) | ConvError::Gone => 500,
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

/// Write `data` to `path` atomically with the given mode: a temporary file with a random
/// name (concurrent writers never share one), synced, renamed, and the folder synced
/// (`atomic-write-file`, the writer every claude-vm crate uses).
fn write_file(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use atomic_write_file::AtomicWriteFile;
    use atomic_write_file::unix::OpenOptionsExt as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = AtomicWriteFile::options();
    options
        .mode(mode)
        .preserve_mode(false)
        .preserve_owner(false);
    let mut f = options.open(path)?;
    f.write_all(data)?;
    f.commit()
}

/// Read a transcript (events after `after`), skipping lines that are not events.
pub fn read_transcript(path: &Path, after: u64) -> Vec<Event> {
    transcript::read(path, after)
}

/// Bytes for the agent's stdin; `delivers` names the user message they carry.
struct Out {
    bytes: Vec<u8>,
    delivers: Option<String>,
}

enum Cmd {
    Send {
        text: String,
        message_id: Option<String>,
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
    SetEnv {
        env: std::collections::BTreeMap<String, String>,
        reply: oneshot::Sender<Result<EnvApplied, ConvError>>,
    },
    Line {
        generation: u64,
        line: String,
    },
    /// The agent's output cannot be read on (a line too long).
    Broken {
        generation: u64,
        reason: String,
    },
    /// The writer task wrote a user message to the agent.
    Written {
        generation: u64,
        message_id: String,
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

    async fn ask<T>(&self, cmd: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Result<T, ConvError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(cmd(reply))
            .await
            .map_err(|_| ConvError::Gone)?;
        rx.await.map_err(|_| ConvError::Gone)
    }

    /// Accept a message: once this answers `Ok`, it is on disk and will reach the agent.
    pub async fn send(&self, text: String) -> Result<Sent, ConvError> {
        self.send_once(text, None).await
    }

    /// [`Handle::send`] under the sender's own message id: a second send with the same id
    /// answers the first one's acceptance and queues nothing.
    pub async fn send_once(
        &self,
        text: String,
        message_id: Option<String>,
    ) -> Result<Sent, ConvError> {
        self.ask(|reply| Cmd::Send {
            text,
            message_id,
            reply,
        })
        .await?
    }

    pub async fn interrupt(&self) -> Result<bool, ConvError> {
        self.ask(|reply| Cmd::Interrupt { reply }).await
    }

    pub async fn stop(&self) -> Result<(), ConvError> {
        self.ask(|reply| Cmd::Stop { reply }).await
    }

    /// Give the agent a new environment (a renewed account): kept in the conversation's
    /// spec, and taken by the agent process at once when none runs or it is idle (it is
    /// stopped; the next message starts it afresh, resuming its session), else when the
    /// running turn ends.
    pub async fn set_env(
        &self,
        env: std::collections::BTreeMap<String, String>,
    ) -> Result<EnvApplied, ConvError> {
        self.ask(|reply| Cmd::SetEnv { env, reply }).await?
    }

    pub async fn decide(&self, approval_id: String, decision: Decision) -> Result<(), ConvError> {
        self.ask(|reply| Cmd::Decide {
            approval_id,
            decision,
            reply,
        })
        .await?
    }
}

/// Opens a conversation's transcript for writing (replaced in tests by failing sinks).
pub(crate) type OpenTranscript =
    Arc<dyn Fn(&Path) -> std::io::Result<(transcript::Writer, transcript::Repair)> + Send + Sync>;

/// All conversations of the workspace.
pub struct Manager {
    dir: PathBuf,
    project_dir: String,
    host: Arc<dyn Host>,
    convs: Mutex<HashMap<String, Handle>>,
    open_transcript: OpenTranscript,
}

impl Manager {
    /// Conversations kept under `dir`, whose agents run in `project_dir`, started by `host`.
    pub fn new(dir: PathBuf, project_dir: String, host: Arc<dyn Host>) -> Arc<Manager> {
        Self::with_transcripts(dir, project_dir, host, Arc::new(transcript::Writer::open))
    }

    pub(crate) fn with_transcripts(
        dir: PathBuf,
        project_dir: String,
        host: Arc<dyn Host>,
        open_transcript: OpenTranscript,
    ) -> Arc<Manager> {
        Arc::new(Manager {
            dir,
            project_dir,
            host,
            convs: Mutex::new(HashMap::new()),
            open_transcript,
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
            agent_version: req.agent.version.clone(),
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
        let (writer, _) = (self.open_transcript)(&dir.join("transcript.jsonl"))?;
        let handle = self.start_actor(
            dir,
            view,
            req.agent,
            adapter,
            writer,
            VecDeque::new(),
            HashMap::new(),
            0,
            None,
        );
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
        // An agent left over from a daemon that died belongs to nobody now: stop it, if
        // its pid still names it (pids are reused).
        let pid_file = dir.join("agent.pid");
        if let Some(old) = AgentPid::read(&pid_file) {
            if old.still_ours() {
                old.signal_group(Signal::SIGKILL);
            } else {
                tracing::info!(
                    "conversation {}: pid {} is not its agent any more; left alone",
                    view.id,
                    old.pid
                );
            }
        }
        let _ = std::fs::remove_file(&pid_file);
        let transcript_path = dir.join("transcript.jsonl");
        let (writer, repair) =
            (self.open_transcript)(&transcript_path).map_err(|e| e.to_string())?;
        if repair.dropped > 0 {
            tracing::warn!(
                "conversation {}: cut a torn last transcript line ({} bytes)",
                view.id,
                repair.dropped
            );
        }
        let events = read_transcript(&transcript_path, 0);
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
        let accepted: HashMap<String, u64> = events
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::User { message_id, .. } => Some((message_id.clone(), e.seq)),
                _ => None,
            })
            .collect();
        let interrupted = matches!(
            view.status,
            CS::Working | CS::Starting | CS::WaitingForApproval
        );
        self.start_actor(
            dir.to_owned(),
            view,
            spec,
            adapter,
            writer,
            pending,
            accepted,
            last_seq,
            Some(interrupted),
        );
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn start_actor(
        &self,
        dir: PathBuf,
        mut view: Conversation,
        spec: AgentSpec,
        adapter: Box<dyn Adapter>,
        transcript: transcript::Writer,
        pending: VecDeque<(String, String)>,
        accepted: HashMap<String, u64>,
        seq: u64,
        resumed: Option<bool>,
    ) -> Handle {
        view.queued = pending.len() as u64;
        let (tx, rx) = mpsc::channel(256);
        let (events, _) = broadcast::channel(1024);
        let id = view.id.clone();
        let view = Arc::new(Mutex::new(view));
        let handle = Handle {
            tx: tx.clone(),
            events: events.clone(),
            view: view.clone(),
            transcript: dir.join("transcript.jsonl"),
        };
        let actor = Actor {
            id: id.clone(),
            dir,
            redactor: Redactor::new(&spec.env),
            spec,
            adapter,
            view,
            events,
            transcript,
            seq,
            pending,
            accepted,
            in_flight: VecDeque::new(),
            agent: None,
            generation: 0,
            tx,
            approvals: HashMap::new(),
            project_dir: self.project_dir.clone(),
            host: self.host.clone(),
            interrupts: 0,
            stopping: None,
            last_output: Instant::now(),
            outbox: VecDeque::new(),
            renew_after_turn: false,
        };
        self.convs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), handle.clone());
        tokio::spawn(actor.run(rx, resumed));
        self.host.opened(&id);
        handle
    }
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

/// Writes waiting in the writer task's queue, at most.
const WRITE_QUEUE: usize = 64;
/// Writes waiting in the actor for room in that queue, at most, before the agent is
/// considered to have stopped reading its input.
const MAX_OUTBOX: usize = 1024;
const MAX_OUTBOX_BYTES: usize = 64 * 1024 * 1024;
/// Longest stderr line kept for a failure reason.
const MAX_STDERR_LINE: usize = 4096;
/// How long Stop waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long after Stop the conversation is stopped even if the agent's exit was never seen.
const STOP_DEADLINE: Duration = Duration::from_secs(8);

/// The running agent process. Dropping it stops its reader and writer tasks (the waiter
/// task stays until the process is reaped).
struct Running {
    input: mpsc::Sender<Out>,
    pid: AgentPid,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

struct Actor {
    id: String,
    dir: PathBuf,
    spec: AgentSpec,
    redactor: Redactor,
    adapter: Box<dyn Adapter>,
    view: Arc<Mutex<Conversation>>,
    events: broadcast::Sender<Event>,
    transcript: transcript::Writer,
    seq: u64,
    /// Accepted, not yet handed to the writer task.
    pending: VecDeque<(String, String)>,
    /// Ids of the user messages in the transcript, with their sequence numbers.
    accepted: HashMap<String, u64>,
    /// Handed to the writer task, not yet written.
    in_flight: VecDeque<(String, String)>,
    agent: Option<Running>,
    generation: u64,
    tx: mpsc::Sender<Cmd>,
    /// approval id → (agent's request id, tool input)
    approvals: HashMap<String, (String, Value)>,
    project_dir: String,
    host: Arc<dyn Host>,
    interrupts: u64,
    /// When Stop was asked for, until the agent is gone.
    stopping: Option<Instant>,
    /// When the agent last printed anything (for the hang watchdog).
    last_output: Instant,
    /// Bytes waiting for room in the writer task's queue.
    outbox: VecDeque<Out>,
    /// The environment changed during a turn: the agent is restarted when it ends.
    renew_after_turn: bool,
}

/// Add "log in again: ..." to an agent's error that says its account was refused.
fn with_login_hint(text: &mut String, kind: &str) {
    if claude_vm_core::agent::is_auth_failure(text) && !text.contains("agents login") {
        text.push_str(" — ");
        text.push_str(&claude_vm_core::agent::login_again(kind));
    }
}

/// Default for [`AgentSpec::turn_timeout_secs`].
const DEFAULT_TURN_TIMEOUT: u64 = 30 * 60;

impl Actor {
    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>, resumed: Option<bool>) {
        if resumed == Some(true) {
            // The daemon died during a turn: pick the work up again.
            let text = "(claude-vm) The previous turn was interrupted because the workspace daemon restarted. Continue where you left off.".to_owned();
            let message_id = format!("resume-{}", new_id(8));
            let recorded = self.record(
                EventBody::User {
                    message_id: message_id.clone(),
                    text: text.clone(),
                },
                true,
            );
            if recorded.is_ok() {
                self.pending.push_back((message_id, text));
            }
            self.set_status(CS::Starting, Some("resuming after a daemon restart".into()));
        } else if resumed == Some(false) && !self.pending.is_empty() {
            self.set_status(CS::Starting, Some("resuming after a daemon restart".into()));
        }
        self.deliver();
        let mut watchdog = tokio::time::interval(Duration::from_secs(1));
        loop {
            let cmd = tokio::select! {
                c = rx.recv() => match c {
                    Some(c) => c,
                    None => break,
                },
                _ = watchdog.tick() => {
                    self.check_hung();
                    self.check_stop();
                    // Room may have freed up in the writer's queue.
                    self.pump();
                    continue;
                }
            };
            self.handle(cmd);
        }
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Send {
                text,
                message_id,
                reply,
            } => {
                let r = self.accept(text, message_id);
                let ok = r.is_ok();
                let _ = reply.send(r);
                if ok {
                    self.deliver();
                }
            }
            Cmd::Interrupt { reply } => {
                let n = self.interrupts;
                self.interrupts += 1;
                let sent = match (self.agent.is_some(), self.adapter.interrupt(n)) {
                    (true, Some(bytes)) => {
                        self.write(bytes);
                        self.pump();
                        true
                    }
                    _ => false,
                };
                let _ = reply.send(sent);
            }
            Cmd::Stop { reply } => {
                if let Some(a) = &self.agent {
                    self.stopping = Some(Instant::now());
                    a.pid.signal_group(Signal::SIGTERM);
                    let pid = a.pid;
                    tokio::spawn(async move {
                        tokio::time::sleep(STOP_GRACE).await;
                        pid.signal_group(Signal::SIGKILL);
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
                let r = self.decide(&approval_id, &decision);
                let _ = reply.send(r);
            }
            Cmd::SetEnv { env, reply } => {
                let r = self.set_env(env);
                let _ = reply.send(r);
            }
            Cmd::Line { generation, line } if generation == self.generation => self.on_line(&line),
            Cmd::Broken { generation, reason } if generation == self.generation => {
                self.abandon_agent(reason)
            }
            Cmd::Written {
                generation,
                message_id,
            } if generation == self.generation => {
                if let Some(i) = self.in_flight.iter().position(|(id, _)| *id == message_id) {
                    self.in_flight.remove(i);
                }
                self.update_queued();
                // Failing to mark it means it is sent again after a restart: better twice
                // than never.
                let _ = self.record(EventBody::Delivered { message_id }, true);
            }
            Cmd::Exited {
                generation,
                code,
                stderr,
            } if generation == self.generation => {
                self.forget_agent();
                if self.stopping.take().is_some() {
                    self.set_status(CS::Stopped, None);
                } else {
                    let status = code.map_or("a signal".to_owned(), |c| format!("status {c}"));
                    let tail = stderr.trim();
                    let mut reason = if tail.is_empty() {
                        format!("the agent exited with {status}")
                    } else {
                        format!("the agent exited with {status}: {tail}")
                    };
                    with_login_hint(&mut reason, &self.spec.kind);
                    self.set_status(CS::Failed, Some(reason));
                }
            }
            Cmd::Line { .. } | Cmd::Broken { .. } | Cmd::Written { .. } | Cmd::Exited { .. } => {}
        }
    }

    /// Fail a turn that has shown nothing for too long.
    fn check_hung(&mut self) {
        let limit = self.spec.turn_timeout_secs.unwrap_or(DEFAULT_TURN_TIMEOUT);
        let busy = matches!(self.view().status, CS::Working | CS::Starting);
        if !busy
            || self.agent.is_none()
            || self.stopping.is_some()
            || self.last_output.elapsed().as_secs() < limit
        {
            return;
        }
        self.abandon_agent(format!(
            "the agent showed no sign of life for {limit}s and was stopped"
        ));
    }

    /// A Stop whose agent's exit was never seen (it escaped its group, or its pipes are
    /// held open) still stops the conversation.
    fn check_stop(&mut self) {
        if self.stopping.is_some_and(|t| t.elapsed() >= STOP_DEADLINE) {
            if let Some(a) = &self.agent {
                a.pid.signal_group(Signal::SIGKILL);
            }
            self.stopping = None;
            self.forget_agent();
            self.set_status(CS::Stopped, None);
        }
    }

    fn set_env(
        &mut self,
        env: std::collections::BTreeMap<String, String>,
    ) -> Result<EnvApplied, ConvError> {
        if env == self.spec.env {
            return Ok(EnvApplied {
                changed: false,
                applies: "now".into(),
            });
        }
        let mut spec = self.spec.clone();
        spec.env = env;
        // On disk first: a daemon restarted from here on starts the agent with it.
        write_file(
            &self.dir.join("spec.json"),
            &serde_json::to_vec(&spec).expect("json"),
            0o600,
        )?;
        // What the agent saw before stays masked, as does what it sees now.
        let old = std::mem::replace(&mut self.redactor, Redactor::new(&spec.env));
        self.redactor = old.merged(Redactor::new(&spec.env));
        self.spec = spec;
        let busy = matches!(
            self.view().status,
            CS::Working | CS::Starting | CS::WaitingForApproval
        );
        let applies = if self.agent.is_some() && busy {
            self.renew_after_turn = true;
            "after_turn"
        } else {
            self.retire_agent();
            "now"
        };
        tracing::info!(
            "conversation {}: the agent's environment was renewed ({applies})",
            self.id
        );
        Ok(EnvApplied {
            changed: true,
            applies: applies.into(),
        })
    }

    /// Stop an idle agent process without touching the conversation's status: the next
    /// message starts a new one (resuming the session) with the spec as it is now.
    fn retire_agent(&mut self) {
        self.renew_after_turn = false;
        let Some(a) = &self.agent else {
            return;
        };
        let pid = a.pid;
        pid.signal_group(Signal::SIGTERM);
        tokio::spawn(async move {
            tokio::time::sleep(STOP_GRACE).await;
            pid.signal_group(Signal::SIGKILL);
        });
        self.forget_agent();
    }

    /// Drop the agent process (already dead or killed): its later output and exit are
    /// ignored (new generation), and what it was given but did not get is queued again.
    fn forget_agent(&mut self) {
        self.renew_after_turn = false;
        self.generation += 1;
        self.agent = None;
        self.outbox.clear();
        while let Some(m) = self.in_flight.pop_back() {
            self.pending.push_front(m);
        }
        self.update_queued();
        let _ = std::fs::remove_file(self.dir.join("agent.pid"));
    }

    /// Kill the agent and fail the conversation with `reason`. The dead process's exit is
    /// ignored (new generation), so it cannot overwrite the reason.
    fn abandon_agent(&mut self, reason: String) {
        if let Some(a) = &self.agent {
            a.pid.signal_group(Signal::SIGKILL);
        }
        self.stopping = None;
        self.forget_agent();
        self.set_status(CS::Failed, Some(reason));
    }

    fn view(&self) -> std::sync::MutexGuard<'_, Conversation> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update_queued(&mut self) {
        let n = (self.pending.len() + self.in_flight.len()) as u64;
        self.view().queued = n;
    }

    fn save_meta(&self) {
        let data = serde_json::to_vec(&*self.view()).expect("json");
        if let Err(e) = write_file(&self.dir.join("meta.json"), &data, 0o600) {
            tracing::warn!("conversation {}: cannot save its metadata: {e}", self.id);
        }
    }

    /// Append an event (secrets masked) to the transcript, synced when `durable`, then
    /// tell followers. An event that could not be written is not shown either.
    fn record(&mut self, body: EventBody, durable: bool) -> Result<u64, StoreError> {
        let event = Event {
            seq: self.seq + 1,
            ts: now(),
            body: self.redactor.event(body),
        };
        if let Err(e) = self.transcript.append(&event, durable) {
            tracing::error!(
                "conversation {}: cannot append to the transcript: {e}",
                self.id
            );
            return Err(e);
        }
        self.seq = event.seq;
        {
            let mut v = self.view();
            v.last_seq = self.seq;
            v.updated_at = event.ts.clone();
        }
        let _ = self.events.send(event);
        self.host.active();
        Ok(self.seq)
    }

    fn set_status(&mut self, status: CS, reason: Option<String>) {
        let reason = reason.map(|r| self.redactor.error(&r));
        {
            let v = self.view();
            if v.status == status && v.status_reason == reason {
                return;
            }
        }
        if status == CS::Failed {
            tracing::warn!(
                "conversation {} failed: {}",
                self.id,
                reason.as_deref().unwrap_or("")
            );
        }
        {
            let mut v = self.view();
            v.status = status;
            v.status_reason = reason.clone();
        }
        let _ = self.record(EventBody::Status { status, reason }, false);
        self.save_meta();
    }

    /// Make a message durable; only then is it acknowledged.
    fn accept(&mut self, text: String, id: Option<String>) -> Result<Sent, ConvError> {
        if let Some(id) = &id {
            let valid = (1..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid {
                return Err(ConvError::BadMessageId);
            }
            if let Some(&seq) = self.accepted.get(id) {
                return Ok(Sent {
                    message_id: id.clone(),
                    seq,
                    held: false,
                });
            }
        }
        if text.trim().is_empty() {
            return Err(ConvError::EmptyMessage);
        }
        let message_id = id.unwrap_or_else(|| new_id(12));
        let seq = self.record(
            EventBody::User {
                message_id: message_id.clone(),
                text: text.clone(),
            },
            true,
        )?;
        self.pending.push_back((message_id.clone(), text));
        self.accepted.insert(message_id.clone(), seq);
        self.update_queued();
        Ok(Sent {
            message_id,
            seq,
            held: false,
        })
    }

    /// Queue bytes for the agent's stdin.
    fn write(&mut self, bytes: Vec<u8>) {
        self.outbox.push_back(Out {
            bytes,
            delivers: None,
        });
    }

    /// Move what waits in the outbox to the writer task, as far as its queue has room.
    /// An agent that lets far too much pile up has stopped reading its input.
    fn pump(&mut self) {
        let Some(agent) = &self.agent else {
            return;
        };
        while let Some(out) = self.outbox.pop_front() {
            match agent.input.try_reserve() {
                Ok(permit) => permit.send(out),
                Err(_) => {
                    self.outbox.push_front(out);
                    break;
                }
            }
        }
        let bytes: usize = self.outbox.iter().map(|o| o.bytes.len()).sum();
        if self.outbox.len() > MAX_OUTBOX || bytes > MAX_OUTBOX_BYTES {
            self.abandon_agent("the agent stopped reading its input".into());
        }
    }

    /// Hand pending messages to the agent, starting it if needed.
    fn deliver(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if self.agent.is_none() && !self.spawn() {
            return;
        }
        self.pump();
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
            if self.agent.is_none() {
                break;
            }
            let bytes = self.adapter.message(&text);
            self.outbox.push_back(Out {
                bytes,
                delivers: Some(id.clone()),
            });
            self.pending.pop_front();
            self.in_flight.push_back((id, text));
            self.last_output = Instant::now();
            self.update_queued();
            if !matches!(self.view().status, CS::WaitingForApproval) {
                self.set_status(CS::Working, None);
            }
        }
        self.pump();
    }

    /// Start the agent process. False (and status failed) when it cannot start.
    fn spawn(&mut self) -> bool {
        let resume = self.view().session_id.clone();
        let mode = self.view().permission_mode;
        // A fresh adapter per process: protocol state never leaks across restarts.
        if let Some(fresh) = adapter::for_kind(&self.spec.kind) {
            self.adapter = fresh;
        }
        self.outbox.clear();
        let (program, args) = self.adapter.command(&self.spec, resume.as_deref(), mode);
        let mut cmd = match self.host.command(&program, &args) {
            Ok(c) => c,
            Err(e) => {
                self.set_status(CS::Failed, Some(e));
                return false;
            }
        };
        cmd.current_dir(&self.project_dir)
            .env("CLAUDE_VM_CONVERSATION", &self.id)
            .envs(&self.spec.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false);
        self.set_status(CS::Starting, None);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                self.set_status(CS::Failed, Some(format!("cannot start {program}: {e}")));
                return false;
            }
        };
        // A process just started always has a pid; never risk signalling group 0 or 1.
        let Some(pid) = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .filter(|&p| crate::process::signallable(p))
        else {
            let _ = child.start_kill();
            self.set_status(
                CS::Failed,
                Some(format!(
                    "cannot start {program}: it has no usable process id"
                )),
            );
            return false;
        };
        let pid = AgentPid::of(pid);
        if let Err(e) = pid.write(&self.dir.join("agent.pid")) {
            tracing::warn!(
                "conversation {}: cannot record the agent's pid: {e}",
                self.id
            );
        }
        self.generation += 1;
        let generation = self.generation;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");

        let (input, queue) = mpsc::channel(WRITE_QUEUE);
        let writer = tokio::spawn(write_agent(stdin, queue, self.tx.clone(), generation));
        let tail = Arc::new(Mutex::new(VecDeque::<String>::new()));
        let stderr_task = tokio::spawn(read_stderr(stderr, tail.clone()));
        let reader = tokio::spawn(read_agent(stdout, self.tx.clone(), generation));
        let tasks = vec![
            writer.abort_handle(),
            reader.abort_handle(),
            stderr_task.abort_handle(),
        ];
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let code = child.wait().await.ok().and_then(|s| s.code());
            // Let the readers hand over the last lines and words, without waiting forever
            // on pipes something the agent left behind still holds open.
            let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
            let _ = tokio::time::timeout(Duration::from_millis(200), stderr_task).await;
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
        self.agent = Some(Running { input, pid, tasks });
        let hello = self.adapter.startup(resume.as_deref(), &self.project_dir);
        if !hello.is_empty() {
            self.write(hello);
        }
        true
    }

    fn on_line(&mut self, line: &str) {
        self.last_output = Instant::now();
        let parsed = match self.adapter.parse(line) {
            Ok(p) => p,
            Err(why) => {
                let shown: String = self.redactor.error(line).chars().take(200).collect();
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
                Parsed::Event(mut body) => {
                    // A refused account: say how to mend it.
                    if let EventBody::TurnEnd {
                        result: Some(r),
                        is_error: true,
                    } = &mut body
                    {
                        with_login_hint(r, &self.spec.kind);
                    }
                    let ends_turn = matches!(body, EventBody::TurnEnd { .. });
                    let working = matches!(
                        body,
                        EventBody::Assistant { .. } | EventBody::ToolCall { .. }
                    );
                    let _ = self.record(body, ends_turn);
                    if ends_turn {
                        // A finished turn waits for nothing: approvals it left open (an
                        // interrupt cancelled them) can no longer be answered.
                        self.approvals.clear();
                        self.set_status(CS::Idle, None);
                        if self.renew_after_turn {
                            self.retire_agent();
                        }
                        self.deliver();
                    } else if working && self.view().status != CS::WaitingForApproval {
                        self.set_status(CS::Working, None);
                    }
                }
                Parsed::Reply(bytes) => self.write(bytes),
                Parsed::Fail(reason) => {
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
                    let _ = self.record(
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
        self.pump();
        if self.adapter.ready() && !self.pending.is_empty() {
            self.deliver();
        }
    }

    fn decide(&mut self, approval_id: &str, decision: &Decision) -> Result<(), ConvError> {
        let (request_id, input) = self
            .approvals
            .remove(approval_id)
            .ok_or_else(|| ConvError::NoApproval(approval_id.to_owned()))?;
        let bytes = self.adapter.decision(&request_id, &input, decision);
        if self.agent.is_some() {
            self.write(bytes);
            self.pump();
        }
        let _ = self.record(
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

/// Feed the agent's stdin from its queue; report each user message once written.
async fn write_agent(
    mut stdin: tokio::process::ChildStdin,
    mut queue: mpsc::Receiver<Out>,
    tx: mpsc::Sender<Cmd>,
    generation: u64,
) {
    while let Some(out) = queue.recv().await {
        if stdin.write_all(&out.bytes).await.is_err() || stdin.flush().await.is_err() {
            // The agent is going away; its exit will be reported.
            return;
        }
        if let Some(message_id) = out.delivers
            && tx
                .send(Cmd::Written {
                    generation,
                    message_id,
                })
                .await
                .is_err()
        {
            return;
        }
    }
}

/// Hand the agent's stdout to the actor a line at a time; a line longer than
/// [`MAX_LINE`] breaks the conversation.
async fn read_agent(stdout: tokio::process::ChildStdout, tx: mpsc::Sender<Cmd>, generation: u64) {
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);
    let mut buf = Vec::new();
    loop {
        match lines::next_line(&mut reader, &mut buf, MAX_LINE).await {
            Ok(false) | Err(LineError::Io(_)) => return,
            Ok(true) => {
                let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                if line.is_empty() {
                    continue;
                }
                if tx.send(Cmd::Line { generation, line }).await.is_err() {
                    return;
                }
            }
            Err(e @ LineError::TooLong(_)) => {
                let _ = tx
                    .send(Cmd::Broken {
                        generation,
                        reason: e.to_string(),
                    })
                    .await;
                return;
            }
        }
    }
}

/// Keep the agent's last stderr lines (each cut to [`MAX_STDERR_LINE`]).
async fn read_stderr(stderr: tokio::process::ChildStderr, tail: Arc<Mutex<VecDeque<String>>>) {
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    loop {
        match lines::next_line(&mut reader, &mut buf, MAX_STDERR_LINE).await {
            Ok(false) | Err(LineError::Io(_)) => return,
            Ok(true) | Err(LineError::TooLong(_)) => {
                let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                t.push_back(String::from_utf8_lossy(&buf).into_owned());
                if t.len() > 10 {
                    t.pop_front();
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "manager_tests.rs"]
mod tests;
