//! Files and diffs over the link: `/v1/files/...` and `/v1/git/diff`.

use bytes::Bytes;
use claude_vm_protocol::api::{Diff, FileInfo};
use futures_util::Stream;
use http_body_util::BodyExt;
use hyper::{Method, Request};

use claude_vm_protocol::encode::query_value as encode_query;

use crate::{Body, Link, LinkError, check, empty, full};

/// A body arriving from the workspace, chunk by chunk.
pub struct Download {
    body: hyper::body::Incoming,
    size: Option<u64>,
    end: crate::ConnEnd,
}

impl Download {
    /// The size of what is sent (of the file read, after following a symlink), as the
    /// daemon measured it when it opened the file.
    pub fn size(&self) -> Option<u64> {
        self.size
    }

    /// The next chunk; `None` at the end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, LinkError> {
        loop {
            match self.body.frame().await {
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        return Ok(Some(data));
                    }
                }
                Some(Err(e)) => return Err(self.end.error(&e).await),
                None => return Ok(None),
            }
        }
    }

    /// As a stream of chunks.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, LinkError>> + Send {
        futures_util::stream::unfold(self, |mut d| async move {
            match d.chunk().await {
                Ok(Some(b)) => Some((Ok(b), d)),
                Ok(None) => None,
                Err(e) => Some((Err(e), d)),
            }
        })
    }
}

impl Link {
    async fn download(&self, uri: String) -> Result<Download, LinkError> {
        let req = Request::get(uri)
            .body(empty())
            .map_err(|e| LinkError::Invalid(e.to_string()))?;
        self.download_request(req).await
    }

    async fn download_request(&self, req: Request<Body>) -> Result<Download, LinkError> {
        let what = format!(
            "{} {}",
            req.method(),
            crate::path_of(&req.uri().to_string())
        );
        let (res, end) = self.within(&what, self.send_tracked(req)).await?;
        let res = check(res).await?;
        let size = res
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ok(Download {
            body: res.into_body(),
            size,
            end,
        })
    }

    async fn upload<T: serde::de::DeserializeOwned>(
        &self,
        uri: String,
        body: Body,
    ) -> Result<T, LinkError> {
        let req = Request::put(uri)
            .header("content-type", "application/octet-stream")
            .body(body)
            .map_err(|e| LinkError::Invalid(e.to_string()))?;
        // No deadline: the daemon answers once it has the whole body, however long that
        // takes to send; keep-alive pings notice a daemon that stopped answering.
        let (res, end) = self.send_tracked(req).await?;
        let res = check(res).await?;
        let bytes = match res.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return Err(end.error(&e).await),
        };
        serde_json::from_slice(&bytes).map_err(|e| LinkError::Invalid(e.to_string()))
    }

    /// Metadata of a path (relative to the project folder, or absolute under /workspace).
    pub async fn stat(&self, path: &str) -> Result<FileInfo, LinkError> {
        self.call(
            Method::GET,
            &format!("/v1/files/stat?path={}", encode_query(path)),
            None::<&()>,
        )
        .await
    }

    /// The entries of a directory.
    pub async fn list(&self, path: &str) -> Result<Vec<FileInfo>, LinkError> {
        self.call(
            Method::GET,
            &format!("/v1/files/list?path={}", encode_query(path)),
            None::<&()>,
        )
        .await
    }

    /// A scan of the workspace for a backup, as lines of JSON: `part` is `state` (the
    /// daemon's state folder) or `agent` (everything else on the volume). `stall_secs`:
    /// how long the agent's scan may list nothing before the daemon stops it (its default,
    /// 120 s, when `None`).
    pub async fn backup_scan(
        &self,
        part: &str,
        include_ignored: bool,
        stall_secs: Option<u64>,
    ) -> Result<Download, LinkError> {
        let stall = stall_secs
            .map(|s| format!("&stall_secs={s}"))
            .unwrap_or_default();
        self.download(format!(
            "/v1/backup/scan?part={}&include_ignored={include_ignored}{stall}",
            encode_query(part)
        ))
        .await
    }

    /// The content of a file a backup scan listed (absolute path; a symlink there is
    /// refused, not followed).
    pub async fn backup_read(&self, path: &str) -> Result<Download, LinkError> {
        self.download(format!("/v1/backup/read?path={}", encode_query(path)))
            .await
    }

    /// The contents of many small files a backup scan listed, in one answer: a stream of
    /// frames, one per path in order ([`claude_vm_protocol::frame`]).
    pub async fn backup_read_many(&self, paths: Vec<String>) -> Result<Download, LinkError> {
        let body = serde_json::to_vec(&claude_vm_protocol::api::ReadMany { paths })
            .map_err(|e| LinkError::Invalid(e.to_string()))?;
        let req = Request::post("/v1/backup/read-many")
            .header("content-type", "application/json")
            .body(full(body))
            .map_err(|e| LinkError::Invalid(e.to_string()))?;
        self.download_request(req).await
    }

    /// A file's content.
    pub async fn read(&self, path: &str) -> Result<Download, LinkError> {
        self.download(format!("/v1/files/read?path={}", encode_query(path)))
            .await
    }

    /// Replace (or create) a file atomically.
    pub async fn write(
        &self,
        path: &str,
        mode: Option<u32>,
        parents: bool,
        body: Body,
    ) -> Result<FileInfo, LinkError> {
        let mut uri = format!(
            "/v1/files/write?path={}&parents={parents}",
            encode_query(path)
        );
        if let Some(m) = mode {
            uri.push_str(&format!("&mode={m:o}"));
        }
        self.upload(uri, body).await
    }

    pub async fn mkdir(&self, path: &str, parents: bool) -> Result<FileInfo, LinkError> {
        self.call(
            Method::POST,
            &format!(
                "/v1/files/mkdir?path={}&parents={parents}",
                encode_query(path)
            ),
            None::<&()>,
        )
        .await
    }

    pub async fn remove(&self, path: &str, recursive: bool) -> Result<(), LinkError> {
        let _: serde_json::Value = self
            .call(
                Method::DELETE,
                &format!(
                    "/v1/files?path={}&recursive={recursive}",
                    encode_query(path)
                ),
                None::<&()>,
            )
            .await?;
        Ok(())
    }

    pub async fn rename(&self, from: &str, to: &str) -> Result<FileInfo, LinkError> {
        self.call(
            Method::POST,
            &format!(
                "/v1/files/rename?from={}&to={}",
                encode_query(from),
                encode_query(to)
            ),
            None::<&()>,
        )
        .await
    }

    /// A tar archive of a file or directory (entries named from its last component).
    pub async fn archive(&self, path: &str) -> Result<Download, LinkError> {
        self.download(format!("/v1/files/archive?path={}", encode_query(path)))
            .await
    }

    /// Extract a tar archive into a directory; returns the number of entries.
    pub async fn extract(&self, dir: &str, tar: Body) -> Result<u64, LinkError> {
        #[derive(serde::Deserialize)]
        struct Extracted {
            entries: u64,
        }
        let r: Extracted = self
            .upload(format!("/v1/files/archive?path={}", encode_query(dir)), tar)
            .await?;
        Ok(r.entries)
    }

    /// The project's changes against HEAD, untracked files included.
    pub async fn diff(&self, stat_only: bool) -> Result<Diff, LinkError> {
        self.call(
            Method::GET,
            &format!("/v1/git/diff?stat={stat_only}"),
            None::<&()>,
        )
        .await
    }
}
