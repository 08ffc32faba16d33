//! The workspace's SSH server, reached only through the link, and its SFTP server.
//!
//! `POST /v1/ssh` carries one SSH connection: the request body is what the client sends, the
//! response body what the server answers. Nothing listens on a network port. Each session
//! channel runs its command through the daemon's exec machinery (the [`Exec`] trait: pipes
//! or a PTY, privileges dropped to the login user before `exec(2)`, own process group,
//! killed when the client goes away); the `sftp` subsystem is `claude-vm agent sftp-server`
//! ([`sftp`]) run the same way, so it has exactly the login user's rights. `direct-tcpip`
//! channels (`ssh -L`) are connected from inside the workspace; agent forwarding gives each
//! session a socket owned by its user whose connections travel back to the client as
//! `auth-agent@openssh.com` channels.
//!
//! Keys: the host key (ed25519) is made on first start and kept root-only in
//! `/workspace/.claude-vm/ssh/`; the public keys the control side pushed
//! (`PUT /v1/ssh/authorized-keys`) are the only ones accepted. Login names: `agent` (or the
//! image's name for uid 1000) and `root`.
//!
//! This crate knows nothing of the daemon: it gets what it needs to run commands through
//! [`Exec`], so the daemon depends on it and not the other way round.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use claude_vm_protocol::api::{ApiError, AuthorizedKeys, ExecRequest, SshHostKey};
use claude_vm_protocol::frame::Input;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::mpsc;

mod server;
pub mod sftp;

pub use russh;
pub use server::{AGENT_LOGIN, Server, load_or_create_host_key, new_ed25519_key, ssh_dir};

/// Response bodies (the daemon's own body type).
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Who a login runs as, as far as the SSH server needs to know.
#[derive(Debug, Clone)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    /// The login shell from the account database, if any.
    pub shell: Option<String>,
}

/// What the SSH server needs from the daemon: running commands, and recording activity.
pub trait Exec: Send + Sync + 'static {
    /// Run `req` until it exits. It must run as `req.user` (`None`: the agent user) with
    /// privileges dropped before `exec(2)`, in its own process group (or terminal session),
    /// and be killed when `input` says [`Input::Gone`]. Output goes to `output` as frames
    /// of [`claude_vm_protocol::frame`] (started, stdout, stderr, then exit or error).
    fn run(
        &self,
        req: ExecRequest,
        input: mpsc::Receiver<Input>,
        output: mpsc::Sender<Bytes>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;

    /// Who `user` is (`None`: the agent user).
    fn user(&self, user: Option<&str>) -> Result<User, String>;

    /// Something other than a command happened (a forwarded connection).
    fn touch(&self, kind: &str);
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("serializable");
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(
            Full::new(Bytes::from(body))
                .map_err(|n| match n {})
                .boxed_unsync(),
        )
        .expect("valid response")
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json(status, &ApiError::new(message))
}

fn unavailable() -> Response<Body> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the SSH server is not available in this workspace (no host key)",
    )
}

/// Largest `PUT /v1/ssh/authorized-keys` body.
const MAX_KEYS_BODY: usize = 1024 * 1024;

/// The `/v1/ssh` routes; `None` when the path is not one of them. `server` is `None` when
/// the daemon could not make a host key.
pub async fn handle<B>(server: Option<&Arc<Server>>, req: Request<B>) -> Option<Response<Body>>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    Some(match (&method, path.as_str()) {
        (&Method::POST, "/v1/ssh") => match server {
            Some(s) => s.clone().connection(req.into_body()),
            None => unavailable(),
        },
        (&Method::GET, "/v1/ssh/host-key") => match server {
            Some(s) => json(
                StatusCode::OK,
                &SshHostKey {
                    host_key: s.host_public.clone(),
                },
            ),
            None => unavailable(),
        },
        (&Method::PUT, "/v1/ssh/authorized-keys") => {
            let Some(server) = server else {
                return Some(unavailable());
            };
            let body = match http_body_util::Limited::new(req.into_body(), MAX_KEYS_BODY)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return Some(
                        if e.downcast_ref::<http_body_util::LengthLimitError>()
                            .is_some()
                        {
                            error(
                                StatusCode::PAYLOAD_TOO_LARGE,
                                format!("request body larger than {MAX_KEYS_BODY} bytes"),
                            )
                        } else {
                            error(StatusCode::BAD_REQUEST, format!("reading the request: {e}"))
                        },
                    );
                }
            };
            let keys: AuthorizedKeys = match serde_json::from_slice(&body) {
                Ok(k) => k,
                Err(e) => {
                    return Some(error(
                        StatusCode::BAD_REQUEST,
                        format!("invalid authorized keys: {e}"),
                    ));
                }
            };
            match server.set_authorized_keys(&keys.keys) {
                Ok(n) => json(StatusCode::OK, &serde_json::json!({ "keys": n })),
                Err(e) => error(StatusCode::BAD_REQUEST, e),
            }
        }
        (_, "/v1/ssh" | "/v1/ssh/host-key" | "/v1/ssh/authorized-keys") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} not allowed on {path}"),
        ),
        _ => return None,
    })
}
