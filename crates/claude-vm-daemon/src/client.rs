//! A client of the daemon's socket, used inside the workspace.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use claude_vm_protocol::Health;
use http_body_util::BodyExt;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the daemon at {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("daemon request failed: {0}")]
    Http(String),
    #[error("daemon sent an invalid answer: {0}")]
    Invalid(String),
}

/// `GET /v1/health` once.
pub async fn health(socket: &Path) -> Result<Health, ClientError> {
    let res = request(socket, hyper::Method::GET, "/v1/health", None).await?;
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| ClientError::Invalid(e.to_string()))
}

/// `GET /v1/health`, retrying until `wait` has passed (the daemon may be starting).
pub async fn health_wait(socket: &Path, wait: Duration) -> Result<Health, ClientError> {
    let deadline = Instant::now() + wait;
    loop {
        match health(socket).await {
            Ok(h) => return Ok(h),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Send one request over a fresh connection; the answer's body is left to the caller.
pub async fn request(
    socket: &Path,
    method: hyper::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| ClientError::Connect {
            path: socket.display().to_string(),
            source: e,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "daemon")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from(
            body.unwrap_or_default(),
        )))
        .expect("valid request");
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    if !res.status().is_success() {
        let status = res.status();
        let body = res
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let msg = claude_vm_protocol::api::ApiError::message_of(status.as_u16(), &body);
        return Err(ClientError::Http(msg));
    }
    Ok(res)
}
