//! The stand-in agent speaks enough of Claude Code's stream-json for the daemon.

use std::io::Write;
use std::process::{Command, Stdio};

#[test]
fn echoes_each_user_message_with_timestamps_then_ends_the_turn() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_echo-agent"))
        .args(["-p", "--input-format", "stream-json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(
                concat!(
                    r#"{"type":"user","message":{"role":"user","content":"hello"}}"#,
                    "\n",
                    r#"{"type":"control_request","request_id":"r","request":{"subtype":"interrupt"}}"#,
                    "\n",
                    r#"{"type":"user","message":{"role":"user","content":[{"type":"text","text":"again"}]}}"#,
                    "\n",
                )
                .as_bytes(),
            )
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert_eq!(lines[0]["type"], "system");
    assert_eq!(lines[0]["subtype"], "init");
    for (i, word) in [(1, "hello"), (3, "again")] {
        assert_eq!(lines[i]["type"], "assistant");
        let text = lines[i]["message"]["content"][0]["text"].as_str().unwrap();
        let rest = text
            .strip_prefix(word)
            .unwrap()
            .strip_prefix(" read=")
            .unwrap();
        let (read, wrote) = rest.split_once(" wrote=").unwrap();
        let (read, wrote): (u128, u128) = (read.parse().unwrap(), wrote.parse().unwrap());
        assert!(read > 0 && wrote >= read);
        assert_eq!(lines[i + 1]["type"], "result");
        assert_eq!(lines[i + 1]["is_error"], false);
        assert_eq!(lines[i + 1]["result"], text);
    }
}
