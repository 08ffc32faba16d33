//! The conversation actor against real processes (`sh -c` scripts standing in for agents),
//! without a daemon.

use super::*;
use crate::transcript::{Repair, Sink, Writer};
use claude_vm_protocol::api::PermissionMode;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// Runs every agent as `sh -c SCRIPT agent ARGS...` in its own process group.
struct Script(&'static str);

impl Host for Script {
    fn command(&self, _program: &str, args: &[String]) -> Result<tokio::process::Command, String> {
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(self.0)
            .arg("agent")
            .args(args)
            .process_group(0);
        Ok(cmd)
    }
}

fn spec(env: &[(&str, &str)], turn_timeout_secs: Option<u64>) -> AgentSpec {
    AgentSpec {
        kind: "claude".into(),
        program: "claude".into(),
        args: Vec::new(),
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        turn_timeout_secs,
        version: None,
    }
}

fn manager(dir: &Path, script: &'static str) -> Arc<Manager> {
    Manager::new(
        dir.join("conversations"),
        dir.display().to_string(),
        Arc::new(Script(script)),
    )
}

async fn create(m: &Manager, spec: AgentSpec, message: Option<&str>) -> Handle {
    let c = m
        .create(NewConversation {
            agent: spec,
            message: message.map(str::to_owned),
            permission_mode: PermissionMode::Skip,
            title: None,
        })
        .await
        .unwrap();
    m.get(&c.id).unwrap()
}

/// Wait until the conversation's view satisfies `f`; panic after `secs`.
async fn wait_for(h: &Handle, secs: u64, what: &str, f: impl Fn(&Conversation) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = h.view();
        if f(&v) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn user_texts(h: &Handle) -> Vec<String> {
    h.transcript(0)
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::User { text, .. } => Some(text),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_works_when_the_agent_never_reads_stdin_nor_prints() {
    let dir = tempfile::tempdir().unwrap();
    // Ignores SIGTERM too, so Stop has to escalate.
    let m = manager(dir.path(), "trap '' TERM; exec sleep 1000");
    let h = create(&m, spec(&[], None), None).await;
    // Far more than a pipe holds: the writes block, the actor must not.
    let big = "x".repeat(1024 * 1024);
    let started = Instant::now();
    for _ in 0..4 {
        tokio::time::timeout(Duration::from_secs(5), h.send(big.clone()))
            .await
            .expect("send answers although the agent reads nothing")
            .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(2), h.interrupt())
        .await
        .expect("interrupt answers")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(2), h.stop())
        .await
        .expect("stop answers at once")
        .unwrap();
    wait_for(&h, 12, "stopped", |v| v.status == CS::Stopped).await;
    assert!(started.elapsed() < Duration::from_secs(12));
    // Nothing reached the agent, so everything is still queued for the next start.
    assert_eq!(h.view().queued, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_watchdog_fires_when_the_agent_never_reads_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path(), "exec sleep 1000");
    let h = create(&m, spec(&[], Some(2)), None).await;
    let big = "x".repeat(1024 * 1024);
    h.send(big.clone()).await.unwrap();
    h.send(big).await.unwrap();
    wait_for(&h, 10, "the watchdog", |v| {
        v.status == CS::Failed
            && v.status_reason
                .as_deref()
                .is_some_and(|r| r.contains("no sign of life for 2s"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_printing_a_100_mib_line_without_newline_is_failed() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(
        dir.path(),
        "head -c 104857600 /dev/zero | tr '\\0' x; exec sleep 1000",
    );
    let h = create(&m, spec(&[], None), Some("hi")).await;
    wait_for(&h, 60, "the conversation to fail", |v| {
        v.status == CS::Failed
            && v.status_reason
                .as_deref()
                .is_some_and(|r| r.contains("a line longer than 16 MiB"))
    })
    .await;
    // The agent was stopped with it.
    assert!(
        !dir.path()
            .join("conversations")
            .join(&h.view().id)
            .join("agent.pid")
            .exists()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_redacted_from_status_reason_and_error_events() {
    let dir = tempfile::tempdir().unwrap();
    let key = "sk-test-0123456789";
    let url = "http://model.internal:8080";
    let m = manager(
        dir.path(),
        r#"read -r _
printf '{"type":"result","is_error":true,"result":"401 for key %s at %s"}\n' "$OPENAI_API_KEY" "$MODEL_URL"
echo "error: key $OPENAI_API_KEY refused by $MODEL_URL" >&2
exit 3"#,
    );
    let h = create(
        &m,
        spec(&[("OPENAI_API_KEY", key), ("MODEL_URL", url)], None),
        Some("hi"),
    )
    .await;
    wait_for(&h, 10, "the agent to fail", |v| v.status == CS::Failed).await;
    let reason = h.view().status_reason.unwrap();
    assert!(
        reason.contains("exited with status 3") && reason.contains("********"),
        "{reason}"
    );
    let conv_dir = dir.path().join("conversations").join(h.view().id);
    for (what, text) in [
        ("status_reason", reason),
        ("events", serde_json::to_string(&h.transcript(0)).unwrap()),
        (
            "transcript.jsonl",
            std::fs::read_to_string(conv_dir.join("transcript.jsonl")).unwrap(),
        ),
        (
            "meta.json",
            std::fs::read_to_string(conv_dir.join("meta.json")).unwrap(),
        ),
    ] {
        assert!(!text.contains(key) && !text.contains(url), "{what}: {text}");
    }
    assert!(
        h.transcript(0).iter().any(|e| matches!(&e.body,
            EventBody::TurnEnd { result: Some(r), is_error: true } if r == "401 for key ******** at ********")),
        "{:?}",
        h.transcript(0)
    );

    // Malformed output echoing the key is shown masked too.
    let m = manager(
        dir.path(),
        r#"echo "junk $OPENAI_API_KEY"; exec sleep 1000"#,
    );
    let h = create(&m, spec(&[("OPENAI_API_KEY", key)], None), Some("hi")).await;
    wait_for(&h, 10, "the agent to fail", |v| v.status == CS::Failed).await;
    let reason = h.view().status_reason.unwrap();
    assert!(
        reason.contains("malformed output") && !reason.contains(key),
        "{reason}"
    );
}

/// A transcript file that fails like a full disk (writing half of a line first) while
/// `full` is set.
struct FillingFile {
    file: std::fs::File,
    full: Arc<AtomicBool>,
}

impl Sink for FillingFile {
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if self.full.load(Ordering::SeqCst) {
            Write::write_all(&mut self.file, &buf[..buf.len() / 2])?;
            return Err(std::io::Error::from_raw_os_error(
                nix::errno::Errno::ENOSPC as i32,
            ));
        }
        Write::write_all(&mut self.file, buf)
    }
    fn sync_data(&mut self) -> std::io::Result<()> {
        self.file.sync_data()
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_gives_the_sender_a_clear_error_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let full = Arc::new(AtomicBool::new(false));
    let opener: OpenTranscript = {
        let full = full.clone();
        Arc::new(move |path: &Path| -> std::io::Result<(Writer, Repair)> {
            let (_, repair) = Writer::open(path)?;
            let file = std::fs::OpenOptions::new().append(true).open(path)?;
            let len = file.metadata()?.len();
            let sink = FillingFile {
                file,
                full: full.clone(),
            };
            Ok((Writer::new(Box::new(sink), len), repair))
        })
    };
    let m = Manager::with_transcripts(
        dir.path().join("conversations"),
        dir.path().display().to_string(),
        Arc::new(Script("exec cat >/dev/null")),
        opener,
    );
    let h = create(&m, spec(&[], None), Some("one")).await;
    full.store(true, Ordering::SeqCst);
    let err = h.send("two".into()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot save the message: the workspace disk is full"
    );
    assert_eq!(err.status(), 507);
    full.store(false, Ordering::SeqCst);
    let sent = h.send("three".into()).await.unwrap();
    // Every acknowledged message is there, the refused one is not, and no line is torn.
    assert_eq!(user_texts(&h), ["one", "three"]);
    let path = dir
        .path()
        .join("conversations")
        .join(h.view().id)
        .join("transcript.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.ends_with('\n'));
    for line in text.lines() {
        serde_json::from_str::<Event>(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    }
    let seqs: Vec<u64> = h.transcript(0).iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert!(seqs.contains(&sent.seq));
    h.stop().await.unwrap();
}

/// A conversation directory as a daemon that died would leave it.
fn leave_conversation(dir: &Path, id: &str, transcript: &[u8], pid: Option<String>) -> PathBuf {
    let conv = dir.join("conversations").join(id);
    std::fs::create_dir_all(&conv).unwrap();
    let ts = "2024-01-01T00:00:00Z".to_owned();
    let view = Conversation {
        id: id.into(),
        agent: "claude".into(),
        title: None,
        status: CS::Idle,
        status_reason: None,
        permission_mode: PermissionMode::Skip,
        session_id: None,
        queued: 0,
        last_seq: 0,
        created_at: ts.clone(),
        updated_at: ts,
        agent_version: None,
    };
    std::fs::write(conv.join("meta.json"), serde_json::to_vec(&view).unwrap()).unwrap();
    std::fs::write(
        conv.join("spec.json"),
        serde_json::to_vec(&spec(&[], None)).unwrap(),
    )
    .unwrap();
    std::fs::write(conv.join("transcript.jsonl"), transcript).unwrap();
    if let Some(pid) = pid {
        std::fs::write(conv.join("agent.pid"), pid).unwrap();
    }
    conv
}

fn event_line(seq: u64, body: EventBody) -> Vec<u8> {
    let mut l = serde_json::to_vec(&Event {
        seq,
        ts: "2024-01-01T00:00:00Z".into(),
        body,
    })
    .unwrap();
    l.push(b'\n');
    l
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_transcript_is_repaired_when_a_conversation_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = event_line(
        1,
        EventBody::User {
            message_id: "m1".into(),
            text: "first".into(),
        },
    );
    bytes.extend(event_line(
        2,
        EventBody::Delivered {
            message_id: "m1".into(),
        },
    ));
    let torn = event_line(3, EventBody::Assistant { text: "cut".into() });
    bytes.extend_from_slice(&torn[..torn.len() - 10]);
    let conv = leave_conversation(dir.path(), "c1", &bytes, None);
    let m = manager(dir.path(), "exec cat >/dev/null");
    m.resume_all();
    let h = m.get("c1").unwrap();
    let sent = h.send("second".into()).await.unwrap();
    assert_eq!(sent.seq, 3);
    assert_eq!(user_texts(&h), ["first", "second"]);
    let text = std::fs::read_to_string(conv.join("transcript.jsonl")).unwrap();
    for line in text.lines() {
        serde_json::from_str::<Event>(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    }
    h.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_agent_pid_is_never_killed_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    // Some other process now has the pid an old agent.pid names.
    let mut other = std::process::Command::new("sleep");
    std::os::unix::process::CommandExt::process_group(&mut other, 0);
    let mut other = other.arg("30").spawn().unwrap();
    let pid = other.id() as i32;
    let start = crate::process::proc_stat(pid).unwrap().start;
    let a = leave_conversation(dir.path(), "a", b"", Some(format!("{pid} {}\n", start + 1)));
    // An old-style record (pid only) of a process that is no session leader.
    let b = leave_conversation(dir.path(), "b", b"", Some(format!("{pid}\n")));
    // Records that would reach killpg(0) or init.
    let c = leave_conversation(dir.path(), "c", b"", Some("0\n".into()));
    let d = leave_conversation(dir.path(), "d", b"", Some("1 1\n".into()));
    let m = manager(dir.path(), "exec cat >/dev/null");
    m.resume_all();
    assert_eq!(m.list().len(), 4);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        other.try_wait().unwrap().is_none(),
        "another process was killed"
    );
    for conv in [a, b, c, d] {
        assert!(!conv.join("agent.pid").exists());
    }
    // The pid with its real start time is the agent left over: that one is stopped.
    let e = leave_conversation(dir.path(), "e", b"", Some(format!("{pid} {start}\n")));
    let m = manager(dir.path(), "exec cat >/dev/null");
    m.resume_all();
    let status = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(s) = other.try_wait().unwrap() {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the leftover agent is killed");
    assert!(!status.success());
    assert!(!e.join("agent.pid").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_twice_under_its_own_id_is_accepted_once_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = event_line(
        1,
        EventBody::User {
            message_id: "held-1".into(),
            text: "first".into(),
        },
    );
    leave_conversation(dir.path(), "c1", &bytes, None);
    let m = manager(dir.path(), "exec cat >/dev/null");
    m.resume_all();
    let h = m.get("c1").unwrap();
    // Accepted before the restart: answered as it was, nothing queued again.
    let again = h
        .send_once("first".into(), Some("held-1".into()))
        .await
        .unwrap();
    assert_eq!((again.message_id.as_str(), again.seq), ("held-1", 1));
    let new = h
        .send_once("second".into(), Some("held-2".into()))
        .await
        .unwrap();
    let repeat = h
        .send_once("second".into(), Some("held-2".into()))
        .await
        .unwrap();
    assert_eq!(new, repeat);
    assert_eq!(user_texts(&h), ["first", "second"]);
    for bad in ["", "has space", &"x".repeat(65), "semi;colon"] {
        let e = h
            .send_once("third".into(), Some(bad.into()))
            .await
            .unwrap_err();
        assert_eq!(e.status(), 400, "{bad:?}: {e}");
    }
    assert_eq!(user_texts(&h), ["first", "second"]);
    h.stop().await.unwrap();
}

/// The results of the conversation's finished turns, in order.
fn results(h: &Handle) -> Vec<String> {
    h.transcript(0)
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::TurnEnd { result, .. } => result,
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_environment_reaches_an_idle_agent_at_once_and_a_busy_one_after_its_turn() {
    let dir = tempfile::tempdir().unwrap();
    // Answers every message with the account it runs with and its pid; "slow" takes a while.
    let m = manager(
        dir.path(),
        r#"while read -r line; do
  case "$line" in *slow*) sleep 2 ;; esac
  printf '{"type":"result","is_error":false,"result":"account=%s key=%s also=sk-old-secret-1 pid=%s"}\n' "$ACCOUNT" "$API_KEY" "$$"
done"#,
    );
    let h = create(
        &m,
        spec(&[("ACCOUNT", "one"), ("API_KEY", "sk-old-secret-1")], None),
        Some("first"),
    )
    .await;
    wait_for(&h, 10, "the first turn", |_| results(&h).len() == 1).await;
    let pid_of = |r: &str| r.rsplit("pid=").next().unwrap().to_owned();
    let first = results(&h)[0].clone();
    assert!(
        first.starts_with("account=one key=******** also=********"),
        "{first}"
    );

    // The same environment again changes nothing.
    let same = h
        .set_env(spec(&[("ACCOUNT", "one"), ("API_KEY", "sk-old-secret-1")], None).env)
        .await
        .unwrap();
    assert!(!same.changed);

    // Idle: the agent is stopped and the next message starts one with the new environment.
    let renewed = h
        .set_env(spec(&[("ACCOUNT", "two"), ("API_KEY", "sk-new-secret-2")], None).env)
        .await
        .unwrap();
    assert!(renewed.changed);
    assert_eq!(renewed.applies, "now");
    let conv_dir = dir.path().join("conversations").join(h.view().id);
    let saved = std::fs::read_to_string(conv_dir.join("spec.json")).unwrap();
    assert!(saved.contains("sk-new-secret-2") && !saved.contains("sk-old-secret-1"));
    h.send("second".into()).await.unwrap();
    wait_for(&h, 10, "the second turn", |_| results(&h).len() == 2).await;
    let second = results(&h)[1].clone();
    // The old secret stays masked as well as the new one.
    assert!(
        second.starts_with("account=two key=******** also=********"),
        "{second}"
    );
    assert_ne!(pid_of(&first), pid_of(&second));
    assert_ne!(h.view().status, CS::Failed, "{:?}", h.view());

    // Busy: the running turn ends with what it had; the next one gets the new environment.
    h.send("slow third".into()).await.unwrap();
    wait_for(&h, 10, "the third turn to start", |v| {
        v.status == CS::Working
    })
    .await;
    let later = h
        .set_env(spec(&[("ACCOUNT", "three")], None).env)
        .await
        .unwrap();
    assert_eq!(later.applies, "after_turn");
    wait_for(&h, 10, "the third turn", |_| results(&h).len() == 3).await;
    assert!(
        results(&h)[2].starts_with("account=two"),
        "{:?}",
        results(&h)
    );
    h.send("fourth".into()).await.unwrap();
    wait_for(&h, 10, "the fourth turn", |_| results(&h).len() == 4).await;
    let fourth = results(&h)[3].clone();
    assert!(fourth.starts_with("account=three"), "{fourth}");
    assert_ne!(pid_of(&second), pid_of(&fourth));
    assert_eq!(
        user_texts(&h),
        ["first", "second", "slow third", "fourth"],
        "nothing lost"
    );
    // No secret of either account was written down anywhere.
    let transcript = std::fs::read_to_string(conv_dir.join("transcript.jsonl")).unwrap();
    assert!(!transcript.contains("sk-old-secret-1") && !transcript.contains("sk-new-secret-2"));
}
