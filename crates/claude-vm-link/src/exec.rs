//! `POST /v1/exec` from the control side: a full-duplex stream of frames.

use bytes::Bytes;
use claude_vm_protocol::api::ExecRequest;
use claude_vm_protocol::frame::{self, Decoder, Kind};
use http_body_util::BodyExt;
use hyper::Request;
use tokio::sync::mpsc;

use crate::{Link, LinkError, channel_body, check};

/// What a running command reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Started(u32),
    Stdout(Bytes),
    Stderr(Bytes),
    /// The last event: the exit code (128+n when killed by signal n).
    Exit(i32),
    /// The command could not be started.
    Error(String),
}

/// A command running in the workspace.
pub struct ExecSession {
    input: mpsc::Sender<Bytes>,
    output: hyper::body::Incoming,
    decoder: Decoder,
    done: bool,
    end: crate::ConnEnd,
}

impl Link {
    /// Start a command in the workspace.
    pub async fn exec(&self, req: &ExecRequest) -> Result<ExecSession, LinkError> {
        let start = serde_json::to_vec(req).map_err(|e| LinkError::Invalid(e.to_string()))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (tx, rx) = mpsc::channel::<Bytes>(64);
            tx.send(Bytes::from(frame::encode(Kind::Start, &start)))
                .await
                .map_err(|_| LinkError::Dropped("exec input closed".into()))?;
            let http = Request::post("/v1/exec")
                .header("content-type", "application/x-claude-vm-frames")
                .body(channel_body(rx))
                .map_err(|e| LinkError::Invalid(e.to_string()))?;
            // Nothing but the start frame has been sent, so a connection that died under
            // the request can be replaced and the request made again.
            match self.within("POST /v1/exec", self.send_tracked(http)).await {
                Ok((res, end)) => {
                    let res = check(res).await?;
                    return Ok(ExecSession {
                        input: tx,
                        output: res.into_body(),
                        decoder: Decoder::default(),
                        done: false,
                        end,
                    });
                }
                Err(LinkError::Dropped(_)) if attempt < 3 => self.invalidate().await,
                Err(e) => return Err(e),
            }
        }
    }
}

impl ExecSession {
    /// Feed stdin (see [`ExecInput`] for the rest: resizes, signals, other tasks).
    pub async fn stdin(&self, data: &[u8]) -> Result<(), LinkError> {
        self.input().stdin(data).await
    }

    pub async fn close_stdin(&self) -> Result<(), LinkError> {
        self.input().close_stdin().await
    }

    /// A sender usable from other tasks to feed stdin, resizes and signals.
    pub fn input(&self) -> ExecInput {
        ExecInput {
            tx: self.input.clone(),
        }
    }

    /// The next event; `None` after the exit (or error) event.
    pub async fn next(&mut self) -> Result<Option<ExecEvent>, LinkError> {
        loop {
            if self.done {
                return Ok(None);
            }
            match self.decoder.next_frame() {
                Ok(Some((kind, payload))) => {
                    let event = match kind {
                        Kind::Started if payload.len() == 4 => {
                            ExecEvent::Started(u32::from_be_bytes([
                                payload[0], payload[1], payload[2], payload[3],
                            ]))
                        }
                        Kind::Stdout => ExecEvent::Stdout(Bytes::from(payload)),
                        Kind::Stderr => ExecEvent::Stderr(Bytes::from(payload)),
                        Kind::Exit if payload.len() == 4 => {
                            self.done = true;
                            ExecEvent::Exit(i32::from_be_bytes([
                                payload[0], payload[1], payload[2], payload[3],
                            ]))
                        }
                        Kind::Error => {
                            self.done = true;
                            ExecEvent::Error(String::from_utf8_lossy(&payload).into_owned())
                        }
                        other => {
                            return Err(LinkError::Invalid(format!("unexpected frame {other:?}")));
                        }
                    };
                    return Ok(Some(event));
                }
                Ok(None) => {}
                Err(e) => return Err(LinkError::Invalid(e.to_string())),
            }
            match self.output.frame().await {
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        self.decoder.push(&data);
                    }
                }
                Some(Err(e)) => return Err(self.end.error(&e).await),
                None => {
                    return Err(LinkError::Dropped(
                        "the command's output ended without an exit status".into(),
                    ));
                }
            }
        }
    }
}

/// Feeds a running command from another task.
#[derive(Clone)]
pub struct ExecInput {
    tx: mpsc::Sender<Bytes>,
}

impl ExecInput {
    async fn send(&self, kind: Kind, payload: &[u8]) -> Result<(), LinkError> {
        self.tx
            .send(Bytes::from(frame::encode(kind, payload)))
            .await
            .map_err(|_| LinkError::Dropped("the command's input is closed".into()))
    }

    pub async fn stdin(&self, data: &[u8]) -> Result<(), LinkError> {
        for chunk in data.chunks(frame::MAX_FRAME) {
            self.send(Kind::Stdin, chunk).await?;
        }
        Ok(())
    }

    pub async fn close_stdin(&self) -> Result<(), LinkError> {
        self.send(Kind::StdinEof, b"").await
    }

    pub async fn resize(&self, rows: u16, cols: u16) -> Result<(), LinkError> {
        let mut p = rows.to_be_bytes().to_vec();
        p.extend_from_slice(&cols.to_be_bytes());
        self.send(Kind::Resize, &p).await
    }

    pub async fn signal(&self, signal: u8) -> Result<(), LinkError> {
        self.send(Kind::Signal, &[signal]).await
    }
}
