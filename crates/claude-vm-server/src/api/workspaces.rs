//! Workspaces: list with live status, up (create from a git URL or an uploaded folder, or
//! resume), down, delete; providers and agents for pickers.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use claude_vm_api::{
    Agents, BackupTaken, CreateWorkspace, DeleteQuery, Down, Provider, Unreachable, UpOutcome,
    UploadQuery, Workspace, WorkspaceList,
};
use claude_vm_engine::{CancellationToken, DeleteRequest, DownRequest, NullReporter, UpRequest};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{OptionalJson, detached, typed};
use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// Largest project folder accepted as an upload.
pub const MAX_UPLOAD: u64 = 4 * 1024 * 1024 * 1024;

pub async fn list(State(s): State<AppState>) -> ApiResult<Json<WorkspaceList>> {
    let (workspaces, unreachable) = s.engine.list_detailed().await?;
    Ok(Json(WorkspaceList {
        workspaces: typed(&workspaces)?,
        unreachable: unreachable
            .into_iter()
            .map(|(provider, reason)| Unreachable { provider, reason })
            .collect(),
    }))
}

pub async fn show(State(s): State<AppState>, Path(ws): Path<String>) -> ApiResult<Json<Workspace>> {
    Ok(Json(typed(&s.engine.show(&ws).await?)?))
}

pub(super) fn outcome_response(o: claude_vm_engine::UpOutcome) -> ApiResult<Response> {
    let o: UpOutcome = typed(&o)?;
    let status = match o {
        UpOutcome::Created(_) => StatusCode::CREATED,
        _ => StatusCode::OK,
    };
    Ok((status, Json(o)).into_response())
}

async fn run_up(s: &AppState, req: UpRequest) -> ApiResult<claude_vm_engine::UpOutcome> {
    let engine = s.engine.clone();
    detached(async move {
        let cancel = CancellationToken::new();
        Ok(engine.up(&req, &NullReporter, &cancel).await?)
    })
    .await
}

pub async fn create(
    State(s): State<AppState>,
    Query(upload): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("application/x-tar") {
        let q: UploadQuery =
            serde_json::from_value(serde_json::to_value(&upload).unwrap_or_default())
                .map_err(|e| ApiError::bad_request(format!("invalid query for an upload: {e}")))?;
        return create_from_upload(s, q, body).await;
    }
    if !upload.is_empty() {
        return Err(ApiError::bad_request(
            "query parameters are only for tar uploads (Content-Type: application/x-tar)",
        ));
    }
    if !content_type.starts_with("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported Content-Type {content_type:?}"),
        )
        .hint("send JSON (application/json) naming a git URL or a workspace, or a folder as a tar stream (application/x-tar)"));
    }
    let bytes = axum::body::to_bytes(body, 1024 * 1024)
        .await
        .map_err(crate::error::body_error)?;
    let b: CreateWorkspace = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    let Some(target) = b.target.clone() else {
        return Err(ApiError::bad_request("`target` is required: a git URL or a workspace")
            .hint("to create a workspace from a folder, upload it as a tar stream (Content-Type: application/x-tar)"));
    };
    // Never a path: the server's own disk is not the caller's. A workspace is resolved
    // here, once, and passed on by its id.
    let target = if is_remote_git_url(&target) {
        target
    } else {
        match s.engine.find_workspace(&target) {
            Ok(w) => w.id.to_string(),
            Err(e @ claude_vm_engine::EngineError::AmbiguousWorkspace { .. }) => {
                return Err(e.into());
            }
            Err(_) => return Err(not_a_target(&target)),
        }
    };
    let req = UpRequest {
        target: Some(target),
        provider: b.provider,
        image: b.image,
        branch: b.branch,
        name: b.name,
        source_label: None,
        no_local_paths: true,
        idle_stop: idle_stop(b.idle_stop.as_deref())?,
        ..UpRequest::default()
    };
    outcome_response(run_up(&s, req).await?)
}

/// The same answer for every target that is not a remote git URL nor a workspace, so that
/// nothing tells whether some path exists on the server.
fn not_a_target(target: &str) -> ApiError {
    let shown: String = target.chars().take(200).collect();
    ApiError::bad_request(format!(
        "{shown:?} is neither a remote git URL nor a workspace on the server"
    ))
    .hint("give an https://, ssh:// or git@host:repo URL, or an existing workspace; folders on the client are uploaded as a tar stream (Content-Type: application/x-tar), which `claude-vm workspace up <folder>` does")
}

/// A git URL that names another machine: `https://`, `http://`, `ssh://`, `git+ssh://`,
/// `git://` with a host, or scp-like `user@host:path`. Never `file://` or a local path
/// (those would be read from the server's own disk), nor anything git could read as an
/// option.
pub fn is_remote_git_url(t: &str) -> bool {
    if t.is_empty()
        || t.len() > 4096
        || t.starts_with('-')
        || t.chars().any(|c| c.is_control() || c.is_whitespace())
        || !claude_vm_core::source::is_git_url(t)
    {
        return false;
    }
    const SCHEMES: &[&str] = &["https://", "http://", "ssh://", "git+ssh://", "git://"];
    if let Some(rest) = SCHEMES.iter().find_map(|s| t.strip_prefix(s)) {
        let authority = rest.split('/').next().unwrap_or("");
        let host = authority.rsplit('@').next().unwrap_or("");
        let host = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => host.split(':').next().unwrap_or(""),
        };
        return !host.is_empty() && !host.starts_with('-');
    }
    if t.contains("://") {
        return false;
    }
    // scp-like: user@host:path, no slash before the colon.
    match t.split_once(':') {
        Some((before, path)) => match before.split_once('@') {
            Some((user, host)) => {
                !user.is_empty()
                    && !host.is_empty()
                    && !host.starts_with('-')
                    && !before.contains('/')
                    && !path.is_empty()
            }
            None => false,
        },
        None => false,
    }
}

/// A folder uploaded as a tar stream: received into a private scratch folder, then (in a
/// task of its own that owns the folder, so a client hanging up cannot remove it under
/// `up`) unpacked, entries that would land outside it refused, and used like a local
/// folder.
async fn create_from_upload(s: AppState, q: UploadQuery, body: Body) -> ApiResult<Response> {
    let p = q.project.as_str();
    if p.is_empty() || p == "." || p == ".." || p.contains(['/', '\0']) || p.len() > 200 {
        return Err(ApiError::bad_request(format!(
            "invalid project name {p:?}: one folder name, without `/`"
        )));
    }
    let idle_stop = idle_stop(q.idle_stop.as_deref())?;
    let (scratch, tar_path) = receive(body, "claude-vm-upload-", "upload.tar").await?;
    let engine = s.engine.clone();
    let result = detached(async move {
        let project_dir = scratch.path().join(&q.project);
        let unpack_to = project_dir.clone();
        tokio::task::spawn_blocking(move || unpack(&tar_path, &unpack_to))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| ApiError::bad_request(format!("invalid tar upload: {e}")))?;
        let req = UpRequest {
            target: Some(project_dir.to_string_lossy().into_owned()),
            provider: q.provider,
            image: q.image,
            branch: q.branch,
            name: q.name,
            source_label: Some(match q.source {
                Some(s) if !s.trim().is_empty() && s.len() <= 4096 => s,
                _ => format!("(uploaded)/{}", q.project),
            }),
            // The server's own scratch copy of the upload.
            no_local_paths: false,
            idle_stop,
            ..UpRequest::default()
        };
        let cancel = CancellationToken::new();
        let outcome = engine.up(&req, &NullReporter, &cancel).await;
        // The copy is in the workspace now (or `up` failed): the scratch folder goes.
        drop(scratch);
        Ok(outcome?)
    })
    .await;
    outcome_response(result?)
}

/// A private scratch folder of the server's.
pub(super) fn scratch_dir(prefix: &str) -> ApiResult<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// A request body (at most [`MAX_UPLOAD`]) written to `name` in a new scratch folder.
pub(super) async fn receive(
    body: Body,
    prefix: &str,
    name: &str,
) -> ApiResult<(tempfile::TempDir, std::path::PathBuf)> {
    let scratch = scratch_dir(prefix)?;
    let path = scratch.path().join(name);
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("the upload broke off: {e}")))?;
        total += chunk.len() as u64;
        if total > MAX_UPLOAD {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the upload is larger than {}",
                    claude_vm_engine::human_bytes(MAX_UPLOAD)
                ),
            ));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiError::new(StatusCode::INSUFFICIENT_STORAGE, e.to_string()))?;
    }
    file.flush()
        .await
        .map_err(|e| ApiError::new(StatusCode::INSUFFICIENT_STORAGE, e.to_string()))?;
    Ok((scratch, path))
}

/// Unpack an uploaded tar into `to` (made here), refusing entries that would land outside.
fn unpack(tar_path: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir(to)?;
    let f = std::fs::File::open(tar_path)?;
    let mut archive = tar::Archive::new(f);
    archive.set_preserve_permissions(true);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !entry.unpack_in(to)? {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "entry {:?} points outside the folder",
                    entry.path().unwrap_or_default()
                ),
            ));
        }
    }
    std::fs::remove_file(tar_path)
}

pub async fn up(State(s): State<AppState>, Path(ws): Path<String>) -> ApiResult<Response> {
    let record = s.engine.find_workspace(&ws)?;
    let req = UpRequest::existing(&record.id);
    outcome_response(run_up(&s, req).await?)
}

/// An idle stop as the API takes it (`off`, `10m`), refused with the reason.
fn idle_stop(v: Option<&str>) -> ApiResult<Option<claude_vm_core::lifecycle::IdleStop>> {
    v.map(|v| {
        claude_vm_core::lifecycle::IdleStop::parse(v)
            .map_err(|e| ApiError::bad_request(format!("idle_stop: {e}")))
    })
    .transpose()
}

pub async fn set_idle_stop(
    State(s): State<AppState>,
    Path(ws): Path<String>,
    Json(b): Json<claude_vm_api::SetIdleStop>,
) -> ApiResult<Json<claude_vm_api::IdleStopPolicy>> {
    let value = idle_stop(b.idle_stop.as_deref())?;
    let engine = s.engine.clone();
    let set = detached(async move { Ok(engine.set_idle_stop(&ws, value).await?) }).await?;
    Ok(Json(claude_vm_api::IdleStopPolicy {
        workspace: set.workspace,
        idle_stop: set.idle_stop,
        from_config: set.from_config,
        applied: set.applied,
    }))
}

pub async fn down(
    State(s): State<AppState>,
    Path(ws): Path<String>,
    OptionalJson(b): OptionalJson<Down>,
) -> ApiResult<Json<Workspace>> {
    let req = DownRequest {
        target: ws,
        force: b.force,
        grace: Duration::from_secs(b.timeout.unwrap_or(10).min(600)),
        backup: true,
    };
    let engine = s.engine.clone();
    let out = detached(async move { Ok(engine.down(&req, &NullReporter).await?) }).await?;
    Ok(Json(typed(&out.workspace)?))
}

pub async fn backup(
    State(s): State<AppState>,
    Path(ws): Path<String>,
) -> ApiResult<Json<BackupTaken>> {
    let engine = s.engine.clone();
    let out = detached(async move { Ok(engine.backup(&ws, &NullReporter).await?) }).await?;
    let snap = &out.report.snapshot;
    Ok(Json(BackupTaken {
        snapshot: snap.id.clone(),
        time: snap.time.parse().map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("snapshot time {}: {e}", snap.time),
            )
        })?,
        bytes_added: snap.bytes_added,
        files_new: snap.files_new,
        files_changed: snap.files_changed,
        files_unmodified: snap.files_unmodified,
        unchanged: out.report.unchanged,
    }))
}

pub async fn remove(
    State(s): State<AppState>,
    Path(ws): Path<String>,
    q: Result<Query<DeleteQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Workspace>> {
    let Query(q) = q?;
    let engine = s.engine.clone();
    let req = DeleteRequest {
        target: ws,
        purge: q.purge,
        force: q.force,
    };
    let out = detached(async move { Ok(engine.delete(&req, &NullReporter).await?) }).await?;
    Ok(Json(typed(&out.workspace)?))
}

pub async fn providers(State(s): State<AppState>) -> ApiResult<Json<Vec<Provider>>> {
    Ok(Json(typed(&s.engine.provider_list()?)?))
}

pub async fn agents(State(s): State<AppState>) -> Json<Agents> {
    let config = s.engine.config();
    Json(Agents {
        agents: config
            .agents
            .enabled
            .iter()
            .filter(|a| claude_vm_engine::SUPPORTED_AGENTS.contains(&a.as_str()))
            .cloned()
            .collect(),
        default: config.agents.defaults.agent.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::is_remote_git_url;

    #[test]
    fn only_remote_git_urls_are_targets() {
        for ok in [
            "https://github.com/a/b.git",
            "http://git.example/x",
            "ssh://git@host/x.git",
            "ssh://git@[::1]:22/x.git",
            "git+ssh://host/x",
            "git://host/x",
            "git@github.com:a/b.git",
        ] {
            assert!(is_remote_git_url(ok), "{ok}");
        }
        for bad in [
            "file:///etc",
            "file:///work/repo",
            "FILE:///etc",
            "/etc",
            ".",
            "..",
            "3",
            "bold-fire-1234",
            "~/x",
            "https://",
            "https:///etc",
            "ssh://-oProxyCommand=x/y",
            "-u@host:x",
            "git@-host:x",
            "a b@host:x",
            "git@host:",
            "x@y/z:w",
            "https://host/a\nb",
            "ext::sh -c touch% /tmp/pwned",
            "",
        ] {
            assert!(!is_remote_git_url(bad), "{bad:?}");
        }
    }
}
