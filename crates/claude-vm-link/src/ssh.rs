//! `POST /v1/ssh` from the control side: one SSH connection to the workspace's embedded
//! server, as a byte stream (the request body carries what the client sends, the response
//! body what the server answers), plus the key routes.

use bytes::Bytes;
use claude_vm_protocol::api::{AuthorizedKeys, SshHostKey};
use http_body_util::BodyExt;
use hyper::{Method, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

use crate::{Link, LinkError, channel_body, check};

/// Buffer between the caller's stream and the HTTP bodies, each way.
const PIPE: usize = 256 * 1024;

impl Link {
    /// Open an SSH connection to the workspace's server: read and write the returned
    /// stream as if it were a TCP connection to port 22. It ends when the server closes
    /// the connection or the link drops.
    pub async fn ssh_stream(&self) -> Result<DuplexStream, LinkError> {
        let (ours, theirs) = tokio::io::duplex(PIPE);
        let (mut from_client, mut to_client) = tokio::io::split(theirs);
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        let req = Request::post("/v1/ssh")
            .header("content-type", "application/octet-stream")
            .body(channel_body(rx))
            .map_err(|e| LinkError::Invalid(e.to_string()))?;
        let res = check(self.within("POST /v1/ssh", self.send(req)).await?).await?;
        tokio::spawn(async move {
            let mut buf = vec![0u8; PIPE];
            loop {
                match from_client.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let mut body = res.into_body();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data()
                    && to_client.write_all(&data).await.is_err()
                {
                    break;
                }
            }
            let _ = to_client.shutdown().await;
        });
        Ok(ours)
    }

    /// The workspace's SSH host key (one OpenSSH public key line).
    pub async fn ssh_host_key(&self) -> Result<String, LinkError> {
        let k: SshHostKey = self
            .call(Method::GET, "/v1/ssh/host-key", None::<&()>)
            .await?;
        Ok(k.host_key)
    }

    /// Replace the public keys the workspace's SSH server accepts.
    pub async fn ssh_set_authorized_keys(&self, keys: &[String]) -> Result<(), LinkError> {
        let _: serde_json::Value = self
            .call(
                Method::PUT,
                "/v1/ssh/authorized-keys",
                Some(&AuthorizedKeys {
                    keys: keys.to_vec(),
                }),
            )
            .await?;
        Ok(())
    }
}
