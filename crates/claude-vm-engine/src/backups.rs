//! Backups of workspaces (`workspace backup|restore|export|import`, `backup list|forget`,
//! and the backups `down` and `delete` take): the repository from `config.yaml`, opened
//! with the password only this side holds; the workspace read through its link.
//!
//! Every repository operation of this home runs under one named lock (`locks/backups.lock`):
//! pruning deletes unused data at once, which is only safe while nothing else writes.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use claude_vm_backup::scan::Checker;
use claude_vm_backup::source::{Fetched, FetchedIter};
use claude_vm_backup::{
    BackupError, BackupReport, Meter, Opener, Repo, RepoConfig, SNAPSHOT_ROOT, SnapshotInfo,
    SnapshotMeta,
};
use claude_vm_core::backup::Location;
use claude_vm_link::{Download, Link, LinkError};
use claude_vm_store::WorkspaceRecord;
use rustic_core::repofile::Node;
use serde::Serialize;

use crate::{Engine, EngineError, Reporter, Result};

/// What `workspace backup` did.
#[derive(Debug, Clone, Serialize)]
pub struct BackupOutcome {
    pub workspace: String,
    pub workspace_id: String,
    #[serde(flatten)]
    pub report: BackupReport,
}

/// One line of a scan may not be longer than this.
const MAX_SCAN_LINE: usize = 1 << 20;

impl Engine {
    /// Where this home's repository is, and its password file and password.
    fn repository(&self) -> Result<(Location, PathBuf, String)> {
        let b = &self.config.backup;
        let location = Location::parse(b.repository.as_deref(), self.home.root())
            .map_err(|e| EngineError::Backup(BackupError::Config(e)))?;
        let (file, password) = self
            .home
            .backup_password(b.password_file.as_deref())
            .map_err(|e| EngineError::Backup(BackupError::Io(e)))?;
        Ok((location, file, password))
    }

    /// The repository settings of this home.
    pub(crate) fn repo_config(&self) -> Result<RepoConfig> {
        let (location, _, password) = self.repository()?;
        Ok(RepoConfig {
            location,
            s3: self.config.backup.s3.clone(),
            password,
            cache_dir: Some(self.home.backup_cache_dir()),
        })
    }

    /// How the `restic` CLI reaches this home's repository: `-r` and the password file.
    pub fn restic_repository(&self) -> Result<(String, PathBuf)> {
        let (location, file, _) = self.repository()?;
        Ok((location.restic_name(&self.config.backup.s3), file))
    }

    /// Run `f` with the repository opened (created on first use), under the home's
    /// backup lock, on the blocking pool; `progress` is told the bytes done meanwhile.
    pub(crate) async fn with_repo<T: Send + 'static>(
        &self,
        progress: Option<&dyn Reporter>,
        f: impl FnOnce(Repo) -> std::result::Result<T, BackupError> + Send + 'static,
    ) -> Result<T> {
        let cfg = self.repo_config()?;
        let home = self.home.clone();
        let (meter_tx, meter_rx) = tokio::sync::oneshot::channel::<Arc<Meter>>();
        let job = tokio::task::spawn_blocking(move || {
            let _lock = home
                .lock_named("backups")
                .map_err(|e| BackupError::Io(std::io::Error::other(e.to_string())))?;
            let repo = Repo::open(&cfg)?;
            let _ = meter_tx.send(repo.meter());
            f(repo)
        });
        tokio::pin!(job);
        let mut meter: Option<Arc<Meter>> = None;
        let mut meter_rx = Some(meter_rx);
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let result = loop {
            tokio::select! {
                r = &mut job => break r,
                m = async { meter_rx.as_mut().expect("polled only while present").await }, if meter_rx.is_some() => {
                    meter_rx = None;
                    meter = m.ok();
                }
                _ = tick.tick() => {
                    if let (Some(r), Some(m)) = (progress, &meter)
                        && m.total() > 0
                    {
                        r.progress(m.done().min(m.total()), m.total());
                    }
                }
            }
        };
        result
            .map_err(|e| EngineError::InvalidInput(format!("the backup task failed: {e}")))?
            .map_err(EngineError::Backup)
    }

    /// `workspace backup`: a snapshot of a running workspace now.
    pub async fn backup(&self, target: &str, reporter: &dyn Reporter) -> Result<BackupOutcome> {
        let w = self.find_workspace(target)?;
        let _lock = self.lock_workspace(&w.id).await?;
        let report = self.backup_locked(&w, false, reporter).await?;
        Ok(BackupOutcome {
            workspace: w.name.to_string(),
            workspace_id: w.id.to_string(),
            report,
        })
    }

    /// A snapshot of `w`, which must be running; the caller holds its lock. `clean`: it is
    /// about to stop, so this snapshot will hold all of it. The outcome is recorded.
    pub(crate) async fn backup_locked(
        &self,
        w: &WorkspaceRecord,
        clean: bool,
        reporter: &dyn Reporter,
    ) -> Result<BackupReport> {
        let result = self.take_backup(w, reporter).await;
        match &result {
            Ok(r) => {
                let id = r.snapshot.id.clone();
                self.store(|s| s.backup_succeeded(&w.id, &id, clean))?;
            }
            Err(e) => {
                let text = e.to_string();
                self.store(|s| s.backup_failed(&w.id, &text))?;
            }
        }
        result
    }

    async fn take_backup(
        &self,
        w: &WorkspaceRecord,
        reporter: &dyn Reporter,
    ) -> Result<BackupReport> {
        let started = std::time::Instant::now();
        let (_, link) = self.link(w.id.as_str()).await?;
        reporter.step(&format!("listing what {} holds", w.name));
        let include_ignored = self.config.backup.include_ignored;
        let state_dir = PathBuf::from(claude_vm_protocol::STATE_DIR);
        let scan_failed = |e: EngineError| match e {
            EngineError::Link(l) => EngineError::Workspace {
                name: w.name.to_string(),
                message: format!(
                    "the scan of its files for the backup failed ({l}); a file the scan must read (a .gitignore) may be unreadable or endless"
                ),
            },
            other => other,
        };
        let opener: Arc<dyn Opener> = Arc::new(LinkOpener {
            link: link.clone(),
            runtime: tokio::runtime::Handle::current(),
        });
        let meta = SnapshotMeta {
            workspace_id: w.id.to_string(),
            workspace_name: w.name.to_string(),
            provider: w.provider.clone(),
            source: w.source.location().to_owned(),
            image: w.image.clone(),
            version: claude_vm_protocol::VERSION.to_owned(),
        };
        // Both parts of the scan at once, while the repository opens (its key derivation
        // and index take as long as a scan).
        let scan = async {
            let ((state, state_errors), (agent, agent_errors)) = tokio::try_join!(
                async {
                    read_scan(link.backup_scan("state", false, None).await?, |p| {
                        p.starts_with(&state_dir)
                    })
                    .await
                },
                async {
                    read_scan(
                        link.backup_scan("agent", include_ignored, scan_stall_secs())
                            .await?,
                        |p| !p.starts_with(&state_dir),
                    )
                    .await
                },
            )
            .map_err(scan_failed)?;
            let entries = claude_vm_backup::scan::merge(state, agent);
            let mut unreadable = state_errors;
            unreadable.extend(agent_errors);
            let files = entries.iter().filter(|(_, n)| n.is_file()).count();
            tracing::debug!(
                entries = entries.len(),
                ms = started.elapsed().as_millis() as u64,
                "backup: workspace scanned"
            );
            let bytes: u64 = entries
                .iter()
                .filter(|(_, n)| n.is_file())
                .map(|(_, n)| n.meta.size)
                .sum();
            reporter.progress_start(
                &format!(
                    "backing up {} ({files} files, {})",
                    w.name,
                    crate::human_bytes(bytes)
                ),
                bytes,
            );
            Ok::<_, EngineError>((entries, unreadable))
        };
        let (scanned_tx, scanned_rx) = tokio::sync::oneshot::channel();
        let archive = self.with_repo(Some(reporter), move |repo| {
            let Ok((entries, unreadable)) = scanned_rx.blocking_recv() else {
                // The scan failed; its error is the one reported.
                return Err(BackupError::Other {
                    detail: "the workspace's scan did not finish".to_owned(),
                });
            };
            repo.backup(Path::new(SNAPSHOT_ROOT), entries, unreadable, opener, &meta)
        });
        let scan = async {
            let scanned = scan.await?;
            let _ = scanned_tx.send(scanned);
            Ok::<_, EngineError>(())
        };
        let (scanned, result) = tokio::join!(scan, archive);
        if let Err(e) = scanned {
            reporter.progress_end();
            return Err(e);
        }
        reporter.progress_end();
        let report = result?;
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            "backup: snapshot {} saved",
            report.snapshot.short_id
        );
        for v in report.vanished.iter().take(3) {
            reporter.warn(&format!("deleted while the backup ran, left out: {v}"));
        }
        for u in report.unreadable.iter().take(3) {
            reporter.warn(&format!("could not be read, left out: {u}"));
        }
        Ok(report)
    }

    /// Snapshots of this home's repository: all claude-vm ones, or those of one workspace
    /// (existing, or deleted and named by its old name or id).
    pub async fn backups(&self, target: Option<&str>) -> Result<Vec<SnapshotInfo>> {
        let all = self.with_repo(None, |repo| repo.snapshots(None)).await?;
        let Some(t) = target else {
            return Ok(all);
        };
        let id = match self.backup_owner(t, &all) {
            Ok(id) => id,
            // An existing workspace simply has none yet.
            Err(EngineError::NoBackups(_)) if self.find_workspace(t).is_ok() => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
        };
        Ok(all
            .into_iter()
            .filter(|s| s.workspace_id.as_deref() == Some(id.as_str()))
            .collect())
    }

    /// The workspace id a target names: an existing workspace that has snapshots, else
    /// the snapshots' own names and ids (of a deleted workspace, or of the original of a
    /// restored one that has none yet; the newest first).
    pub(crate) fn backup_owner(&self, target: &str, snaps: &[SnapshotInfo]) -> Result<String> {
        match self.find_workspace(target) {
            Ok(w) => {
                let id = w.id.to_string();
                if snaps
                    .iter()
                    .any(|s| s.workspace_id.as_deref() == Some(id.as_str()))
                {
                    return Ok(id);
                }
            }
            Err(EngineError::UnknownWorkspace(_)) => {}
            Err(e) => return Err(e),
        }
        let by = |f: &dyn Fn(&SnapshotInfo) -> bool| {
            snaps
                .iter()
                .rev()
                .find(|s| f(s))
                .and_then(|s| s.workspace_id.clone())
        };
        by(&|s| s.workspace_id.as_deref() == Some(target))
            .or_else(|| by(&|s| s.workspace_name.as_deref() == Some(target)))
            .or_else(|| {
                let ids: std::collections::BTreeSet<&str> = snaps
                    .iter()
                    .filter_map(|s| s.workspace_id.as_deref())
                    .filter(|id| id.starts_with(target))
                    .collect();
                (ids.len() == 1).then(|| ids.into_iter().next().expect("one").to_owned())
            })
            .ok_or_else(|| EngineError::NoBackups(target.to_owned()))
    }

    /// `backup forget`: keep the newest `keep_last` and one a day for `keep_daily` days of
    /// a workspace's snapshots (the config's retention when both are `None`); remove the
    /// rest and the data only they used. Returns the ids removed.
    pub async fn forget_backups(
        &self,
        target: &str,
        keep_last: Option<u32>,
        keep_daily: Option<u32>,
    ) -> Result<Vec<String>> {
        let all = self.with_repo(None, |repo| repo.snapshots(None)).await?;
        let id = self.backup_owner(target, &all)?;
        let (last, daily) = match (keep_last, keep_daily) {
            (None, None) => (self.config.backup.keep_last, self.config.backup.keep_daily),
            (l, d) => (l.unwrap_or(0), d.unwrap_or(0)),
        };
        if last == 0 && daily == 0 {
            return Err(EngineError::InvalidInput(
                "that would keep nothing; to remove every snapshot of a workspace, use `workspace delete --purge`".to_owned(),
            ));
        }
        self.with_repo(None, move |repo| repo.forget(&id, last, daily))
            .await
    }

    /// Remove every snapshot of workspace `id` (existing or deleted) and the data only
    /// they use; returns how many snapshots.
    pub async fn purge_backups(&self, id: &str) -> Result<usize> {
        let id = id.to_owned();
        self.with_repo(None, move |repo| repo.purge(&id)).await
    }

    /// Every backup of a deleted workspace (named by its old name or id) removed: its id and
    /// how many snapshots went. A workspace that still exists is refused: `delete` with
    /// `purge` removes it with its backups.
    pub async fn purge_deleted(&self, target: &str) -> Result<(String, usize)> {
        if let Ok(w) = self.find_workspace(target) {
            return Err(EngineError::InvalidInput(format!(
                "workspace {} still exists; `claude-vm workspace delete --purge {}` deletes it with its backups",
                w.name, w.name
            )));
        }
        let snaps = self.backups(Some(target)).await?;
        let Some(id) = snaps.last().and_then(|s| s.workspace_id.clone()) else {
            return Err(EngineError::NoBackups(target.to_owned()));
        };
        let n = self.purge_backups(&id).await?;
        Ok((id, n))
    }

    /// Does the repository (if it exists: this never creates one) hold snapshots of a
    /// deleted workspace called `name`? For the hint of `up <name>`.
    pub(crate) async fn deleted_with_backups(&self, name: &str) -> Option<SnapshotInfo> {
        if let Ok(Location::Local(p)) =
            Location::parse(self.config.backup.repository.as_deref(), self.home.root())
            && !p.join("config").exists()
        {
            return None;
        }
        let snaps = tokio::time::timeout(
            Duration::from_secs(10),
            self.with_repo(None, |repo| repo.snapshots(None)),
        )
        .await
        .ok()?
        .ok()?;
        snaps.into_iter().rev().find(|s| {
            s.workspace_name.as_deref() == Some(name) || s.workspace_id.as_deref() == Some(name)
        })
    }
}

/// How long the agent's scan may list nothing before its daemon stops it:
/// `CLAUDE_VM_SCAN_STALL_SECS` (1 to 3600; for diagnosis and the tests), else the daemon's
/// default.
fn scan_stall_secs() -> Option<u64> {
    std::env::var("CLAUDE_VM_SCAN_STALL_SECS")
        .ok()?
        .parse()
        .ok()
        .filter(|s| (1..=3600).contains(s))
}

/// Read a whole scan, checking each line; `allowed` says which paths this part may list.
async fn read_scan(
    mut download: Download,
    allowed: impl Fn(&Path) -> bool,
) -> Result<(Vec<(PathBuf, Node)>, Vec<String>)> {
    let mut checker = Checker::new(SNAPSHOT_ROOT);
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut handle =
        |line: &[u8], entries: &mut Vec<(PathBuf, Node)>, errors: &mut Vec<String>| -> Result<()> {
            if line.is_empty() {
                return Ok(());
            }
            match checker.check(line).map_err(BackupError::from)? {
                Ok((path, node)) => {
                    if !allowed(&path) {
                        return Err(EngineError::Backup(BackupError::Config(format!(
                            "the workspace's scan listed {} where it may not",
                            path.display()
                        ))));
                    }
                    entries.push((path, node));
                }
                Err(e) => errors.push(e),
            }
            Ok(())
        };
    while let Some(chunk) = download.chunk().await? {
        pending.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(nl) = pending[start..].iter().position(|b| *b == b'\n') {
            handle(&pending[start..start + nl], &mut entries, &mut errors)?;
            start += nl + 1;
        }
        pending.drain(..start);
        if pending.len() > MAX_SCAN_LINE {
            return Err(EngineError::Backup(BackupError::Config(
                "the workspace's scan sent a line over 1 MiB".to_owned(),
            )));
        }
    }
    handle(&pending, &mut entries, &mut errors)?;
    Ok((entries, errors))
}

/// Reads files of a running workspace through its link, from the archiver's threads.
struct LinkOpener {
    link: Link,
    runtime: tokio::runtime::Handle,
}

impl Opener for LinkOpener {
    fn open(&self, path: &Path) -> std::io::Result<Box<dyn Read + Send>> {
        let path = path.to_str().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not UTF-8", path.display()),
            )
        })?;
        let download = self
            .runtime
            .block_on(self.link.backup_read(path))
            .map_err(link_io)?;
        Ok(Box::new(DownloadReader {
            download,
            runtime: self.runtime.clone(),
            current: bytes::Bytes::new(),
        }))
    }

    fn read_many(&self, paths: &[PathBuf]) -> Option<std::io::Result<FetchedIter>> {
        Some(self.fetch_many(paths))
    }
}

impl LinkOpener {
    /// [`Opener::read_many`]: one `read-many` request, its frames decoded as they come.
    fn fetch_many(&self, paths: &[PathBuf]) -> std::io::Result<FetchedIter> {
        let paths = paths
            .iter()
            .map(|p| {
                p.to_str().map(str::to_owned).ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{} is not UTF-8", p.display()),
                    )
                })
            })
            .collect::<std::io::Result<Vec<String>>>()?;
        let download = self
            .runtime
            .block_on(self.link.backup_read_many(paths))
            .map_err(link_io)?;
        Ok(Box::new(FrameReader {
            download: Some(download),
            runtime: self.runtime.clone(),
            decoder: claude_vm_protocol::frame::Decoder::default(),
        }))
    }
}

/// The files of a `read-many` answer, decoded from its frames as they arrive.
struct FrameReader {
    download: Option<Download>,
    runtime: tokio::runtime::Handle,
    decoder: claude_vm_protocol::frame::Decoder,
}

impl Iterator for FrameReader {
    type Item = std::io::Result<Fetched>;

    fn next(&mut self) -> Option<Self::Item> {
        use claude_vm_protocol::frame::Kind;
        let text = |p: Vec<u8>| String::from_utf8_lossy(&p).into_owned();
        loop {
            match self.decoder.next_frame() {
                Ok(Some((kind, payload))) => {
                    return Some(Ok(match kind {
                        Kind::File => Fetched::Content(payload),
                        Kind::Missing => Fetched::Gone(text(payload)),
                        Kind::Failed => Fetched::Failed(text(payload)),
                        Kind::Large => Fetched::Large,
                        other => {
                            self.download = None;
                            return Some(Err(std::io::Error::other(format!(
                                "unexpected frame {other:?} in the workspace's answer"
                            ))));
                        }
                    }));
                }
                Ok(None) => {}
                Err(e) => {
                    self.download = None;
                    return Some(Err(std::io::Error::other(e.to_string())));
                }
            }
            let download = self.download.as_mut()?;
            match self.runtime.block_on(download.chunk()) {
                Ok(Some(b)) => self.decoder.push(&b),
                Ok(None) => {
                    self.download = None;
                    return None;
                }
                Err(e) => {
                    self.download = None;
                    return Some(Err(link_io(e)));
                }
            }
        }
    }
}

fn link_io(e: LinkError) -> std::io::Error {
    match e {
        LinkError::Api {
            status: 404,
            message,
        } => std::io::Error::new(std::io::ErrorKind::NotFound, message),
        other => std::io::Error::other(other.to_string()),
    }
}

struct DownloadReader {
    download: Download,
    runtime: tokio::runtime::Handle,
    current: bytes::Bytes,
}

impl Read for DownloadReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self
                .runtime
                .block_on(self.download.chunk())
                .map_err(link_io)?
            {
                Some(b) => self.current = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// What `workspace restore` was asked.
#[derive(Debug, Clone, Default)]
pub struct RestoreRequest {
    /// The workspace (existing, or deleted: its old name or id) whose snapshot to restore.
    pub target: String,
    /// A snapshot id (or unique prefix); default: the workspace's newest.
    pub snapshot: Option<String>,
    /// Name of the new workspace; default: the original's, when it is free.
    pub name: Option<String>,
    pub provider: Option<String>,
    pub image: Option<String>,
}

/// The first entry of an export archive: what the snapshot is of.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ExportManifest {
    /// Always "claude-vm-export".
    pub format: String,
    pub version: u32,
    pub snapshot: String,
    pub time: String,
    pub workspace_id: Option<String>,
    pub workspace_name: Option<String>,
    pub provider: Option<String>,
    pub source: Option<String>,
    pub image: Option<String>,
    /// Bytes of file content in the archive.
    pub total_bytes: u64,
}

/// Name of the manifest entry in an export archive.
pub const EXPORT_MANIFEST: &str = "claude-vm-export.json";

/// What `workspace export` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportOutcome {
    pub file: PathBuf,
    pub bytes: u64,
    pub entries: u64,
    #[serde(flatten)]
    pub manifest: ExportManifest,
}

impl Engine {
    /// The snapshot a restore or export means: `snapshot` if given, else the newest of the
    /// workspace `target` names.
    async fn pick_snapshot(&self, target: &str, snapshot: Option<&str>) -> Result<SnapshotInfo> {
        if let Some(id) = snapshot {
            let id = id.to_owned();
            return self.with_repo(None, move |repo| repo.snapshot(&id)).await;
        }
        let snaps = self.with_repo(None, |repo| repo.snapshots(None)).await?;
        let owner = self.backup_owner(target, &snaps)?;
        snaps
            .into_iter()
            .rev()
            .find(|s| s.workspace_id.as_deref() == Some(owner.as_str()))
            .ok_or_else(|| EngineError::NoBackups(target.to_owned()))
    }

    /// `workspace restore`: a new workspace filled from a snapshot, byte for byte, with
    /// its conversations. A restore that fails half-way removes what it made.
    pub async fn restore(
        &self,
        req: &RestoreRequest,
        reporter: &dyn Reporter,
        cancel: &crate::CancellationToken,
    ) -> Result<crate::UpOutcome> {
        let snap = self
            .pick_snapshot(&req.target, req.snapshot.as_deref())
            .await?;
        reporter.step(&format!(
            "restoring snapshot {} of {} ({})",
            snap.short_id,
            snap.workspace_name.as_deref().unwrap_or("a workspace"),
            snap.time
        ));
        let manifest = manifest_of(&snap);
        let id = snap.id.clone();
        let (writer, fill) = restore_fill(&manifest);
        // If the repository cannot even be opened, the writer is dropped unfinished and
        // the upload fails: nothing half-made survives.
        let write = self.with_repo(None, move |repo| {
            let fail = writer.failer();
            let mut out = std::io::BufWriter::new(writer);
            let res = repo.write_tar(&id, &mut out).and_then(|n| {
                let w = out
                    .into_inner()
                    .map_err(|e| BackupError::Io(e.into_error()))?;
                w.finish().map_err(BackupError::Io)?;
                Ok(n)
            });
            if let Err(e) = &res {
                fail(std::io::Error::other(e.to_string()));
            }
            res
        });
        self.create_from_manifest(&manifest, req, fill, write, reporter, cancel)
            .await
    }

    /// Create a workspace filled by `fill` while `write` (which feeds it) runs; the
    /// creation's error wins over the writer's (which then only lost its reader).
    async fn create_from_manifest<W>(
        &self,
        manifest: &ExportManifest,
        req: &RestoreRequest,
        fill: crate::workspaces::RestoreFill,
        write: W,
        reporter: &dyn Reporter,
        cancel: &crate::CancellationToken,
    ) -> Result<crate::UpOutcome>
    where
        W: std::future::Future<Output = Result<u64>>,
    {
        let name = match &req.name {
            Some(n) => n.clone(),
            None => {
                let original = manifest.workspace_name.clone().ok_or_else(|| {
                    EngineError::InvalidInput(
                        "the snapshot does not say what its workspace was called; give the new one a --name".to_owned(),
                    )
                })?;
                if self.find_workspace(&original).is_ok() {
                    return Err(EngineError::InvalidInput(format!(
                        "a workspace named {original} exists; give the restored one another name with --name"
                    )));
                }
                original
            }
        };
        let provider = req.provider.clone().or_else(|| {
            manifest
                .provider
                .clone()
                .filter(|p| matches!(self.store(|s| s.provider(p)), Ok(Some(_))))
        });
        let location = manifest.source.clone().unwrap_or_default();
        let source = if claude_vm_core::source::is_git_url(&location) {
            claude_vm_core::source::Source::Git(location)
        } else {
            claude_vm_core::source::Source::Path(location)
        };
        let up = crate::UpRequest {
            target: None,
            provider,
            image: req.image.clone().or_else(|| manifest.image.clone()),
            branch: None,
            name: Some(name),
            source_label: None,
            no_local_paths: false,
            idle_stop: None,
            ..crate::UpRequest::default()
        };
        let (created, written) = tokio::join!(
            self.create(&up, source, Some(fill), reporter, cancel),
            write
        );
        let created = created?;
        written?;
        // The workspace exists now: a problem here is reported, never a failed restore.
        let n = match self
            .adopt_conversations(&created.workspace().id, reporter)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                reporter.warn(&format!(
                    "the restored conversations could not be prepared ({e}); `claude-vm chat list` shows them once the workspace answers"
                ));
                0
            }
        };
        if n > 0 {
            reporter.step(&format!(
                "{n} conversation{} restored",
                if n == 1 { "" } else { "s" }
            ));
        }
        Ok(created)
    }

    /// `workspace export`: one portable archive (tar) of a snapshot: a manifest, then the
    /// volume as the snapshot holds it.
    pub async fn export(
        &self,
        target: &str,
        snapshot: Option<&str>,
        file: &Path,
        reporter: &dyn Reporter,
    ) -> Result<ExportOutcome> {
        let snap = self.pick_snapshot(target, snapshot).await?;
        let manifest = manifest_of(&snap);
        let file = std::path::absolute(file)
            .map_err(|e| EngineError::InvalidInput(format!("{}: {e}", file.display())))?;
        let dir = file.parent().unwrap_or(Path::new("/")).to_owned();
        reporter.progress_start(
            &format!(
                "exporting snapshot {} ({})",
                snap.short_id,
                crate::human_bytes(manifest.total_bytes)
            ),
            manifest.total_bytes,
        );
        let (m, id, target_file) = (manifest.clone(), snap.id.clone(), file.clone());
        let result = self
            .with_repo(Some(reporter), move |repo| {
                // Written beside the target and renamed into place only when complete.
                let tmp = tempfile::NamedTempFile::new_in(&dir).map_err(BackupError::Io)?;
                let mut out = std::io::BufWriter::new(tmp);
                let body = serde_json::to_vec_pretty(&m).expect("serializable");
                let mut h = tar::Header::new_gnu();
                h.set_size(body.len() as u64);
                h.set_mode(0o644);
                h.set_mtime(jiff::Timestamp::now().as_second().max(0) as u64);
                h.set_entry_type(tar::EntryType::Regular);
                // The manifest entry without the end-of-archive blocks a finished builder
                // writes: the snapshot's own archive follows, and its end marker ends the file.
                let mut first = tar::Builder::new(Vec::new());
                first
                    .append_data(&mut h, EXPORT_MANIFEST, &body[..])
                    .map_err(BackupError::Io)?;
                let first = first.into_inner().map_err(BackupError::Io)?;
                out.write_all(&first[..first.len() - 1024])
                    .map_err(BackupError::Io)?;
                let entries = repo.write_tar(&id, &mut out)?;
                let tmp = out
                    .into_inner()
                    .map_err(|e| BackupError::Io(e.into_error()))?;
                tmp.as_file().sync_all().map_err(BackupError::Io)?;
                tmp.persist(&target_file)
                    .map_err(|e| BackupError::Io(e.error))?;
                Ok(entries)
            })
            .await;
        reporter.progress_end();
        let entries = result?;
        let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        Ok(ExportOutcome {
            file,
            bytes,
            entries,
            manifest,
        })
    }

    /// `workspace import`: a workspace from an export archive. Only entries under
    /// `workspace/` are taken, and none that climbs out of it.
    pub async fn import(
        &self,
        file: &Path,
        req: &RestoreRequest,
        reporter: &dyn Reporter,
        cancel: &crate::CancellationToken,
    ) -> Result<crate::UpOutcome> {
        let manifest = read_manifest(file)?;
        reporter.step(&format!(
            "importing {} (snapshot {} of {})",
            file.display(),
            &manifest.snapshot.chars().take(8).collect::<String>(),
            manifest.workspace_name.as_deref().unwrap_or("a workspace")
        ));
        let (writer, fill) = restore_fill(&manifest);
        let path = file.to_owned();
        let write = async move {
            tokio::task::spawn_blocking(move || {
                let fail = writer.failer();
                let res = copy_workspace_entries(&path, writer);
                if let Err(e) = &res {
                    fail(std::io::Error::new(e.kind(), e.to_string()));
                }
                res
            })
            .await
            .map_err(|e| EngineError::InvalidInput(format!("reading the archive failed: {e}")))?
            .map_err(|e| {
                EngineError::InvalidInput(format!("{} is not a valid export: {e}", file.display()))
            })
        };
        self.create_from_manifest(&manifest, req, fill, write, reporter, cancel)
            .await
    }
}

fn manifest_of(s: &SnapshotInfo) -> ExportManifest {
    ExportManifest {
        format: "claude-vm-export".to_owned(),
        version: 1,
        snapshot: s.id.clone(),
        time: s.time.clone(),
        workspace_id: s.workspace_id.clone(),
        workspace_name: s.workspace_name.clone(),
        provider: s.provider.clone(),
        source: s.source.clone(),
        image: s.image.clone(),
        total_bytes: s.total_bytes,
    }
}

/// An export archive read through to its end (blocking): its manifest and how many entries
/// follow it. For an archive that arrived over the network, whose every entry must be there.
pub fn inspect_export(file: &Path) -> Result<(ExportManifest, u64)> {
    let manifest = read_manifest(file)?;
    let bad = |e: std::io::Error| {
        EngineError::InvalidInput(format!("{} is not a whole export: {e}", file.display()))
    };
    let f = std::fs::File::open(file).map_err(bad)?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(f));
    let mut entries = 0u64;
    for entry in archive.entries().map_err(bad)? {
        entry.map_err(bad)?;
        entries += 1;
    }
    Ok((manifest, entries.saturating_sub(1)))
}

/// The manifest of an export archive (its first entry).
pub fn read_manifest(file: &Path) -> Result<ExportManifest> {
    let bad = |why: String| {
        EngineError::InvalidInput(format!(
            "{} is not a claude-vm export: {why}",
            file.display()
        ))
    };
    let f = std::fs::File::open(file).map_err(|e| bad(e.to_string()))?;
    let mut archive = tar::Archive::new(f);
    let mut entries = archive.entries().map_err(|e| bad(e.to_string()))?;
    let mut first = entries
        .next()
        .ok_or_else(|| bad("it is empty".to_owned()))?
        .map_err(|e| bad(e.to_string()))?;
    let path = first.path().map_err(|e| bad(e.to_string()))?.into_owned();
    if path != Path::new(EXPORT_MANIFEST) || first.size() > 1 << 20 {
        return Err(bad(format!("it does not start with {EXPORT_MANIFEST}")));
    }
    let mut body = Vec::new();
    first
        .read_to_end(&mut body)
        .map_err(|e| bad(e.to_string()))?;
    let m: ExportManifest = serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
    if m.format != "claude-vm-export" || m.version != 1 {
        return Err(bad(format!(
            "unknown format {} version {}",
            m.format, m.version
        )));
    }
    Ok(m)
}

/// Copy the `workspace/` entries of an export archive into a new tar stream, refusing any
/// path that is absolute, climbs with `..`, or lies elsewhere.
fn copy_workspace_entries(file: &Path, writer: crate::pack::ChannelWriter) -> std::io::Result<u64> {
    let f = std::fs::File::open(file)?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(f));
    let mut out = tar::Builder::new(writer);
    out.follow_symlinks(false);
    let mut n = 0;
    for (i, entry) in archive.entries()?.enumerate() {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        if i == 0 && path == Path::new(EXPORT_MANIFEST) {
            continue;
        }
        let plain = path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !plain || !path.starts_with(SNAPSHOT_ROOT.trim_start_matches('/')) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("entry {} lies outside workspace/", path.display()),
            ));
        }
        let mut header = entry.header().clone();
        match header.entry_type() {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name()?
                    .ok_or_else(|| std::io::Error::other("a link without a target"))?
                    .into_owned();
                if header.entry_type() == tar::EntryType::Link
                    && !target.starts_with(SNAPSHOT_ROOT.trim_start_matches('/'))
                {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("hard link {} leads outside workspace/", path.display()),
                    ));
                }
                out.append_link(&mut header, &path, &target)?;
            }
            tar::EntryType::Regular
            | tar::EntryType::Directory
            | tar::EntryType::Fifo
            | tar::EntryType::Continuous => {
                out.append_data(&mut header, &path, &mut entry)?;
            }
            // Devices and anything else have no place in a workspace.
            _ => continue,
        }
        n += 1;
    }
    out.into_inner()?.finish()?;
    Ok(n)
}

/// The writer that produces a restored workspace's files, and the fill `create` uploads
/// from it (its bytes counted for progress).
fn restore_fill(
    manifest: &ExportManifest,
) -> (crate::pack::ChannelWriter, crate::workspaces::RestoreFill) {
    let (writer, tar) = crate::pack::channel(None);
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let fill = crate::workspaces::RestoreFill {
        tar: count_stream(tar, counter.clone()),
        total: manifest.total_bytes,
        counter,
    };
    (writer, fill)
}

/// Count the bytes a stream yields.
fn count_stream(
    s: claude_vm_provider::TarStream,
    counter: Arc<std::sync::atomic::AtomicU64>,
) -> claude_vm_provider::TarStream {
    use futures_util::StreamExt;
    Box::pin(s.inspect(move |item| {
        if let Ok(b) = item {
            counter.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }))
}

/// How one workspace fared in a round of continuous backups.
#[derive(Debug, Clone)]
pub struct RoundResult {
    pub workspace: String,
    pub outcome: std::result::Result<String, String>,
}

fn unix(ts: &str) -> Option<i64> {
    ts.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

impl Engine {
    /// One round of `claude-vm server`'s continuous backups: every running workspace in
    /// which something changed is backed up once a turn of its agents ended, or once
    /// `backup.interval` passed ([`claude_vm_core::backup::due`]). Returns what was done.
    pub async fn backup_round(&self) -> Vec<RoundResult> {
        let mut done = Vec::new();
        if !self.config.backup.enabled {
            return done;
        }
        let interval = claude_vm_core::backup::parse_interval(&self.config.backup.interval)
            .unwrap_or(Duration::from_secs(900));
        let Ok((views, _)) = self.list().await else {
            return done;
        };
        for v in views
            .iter()
            .filter(|v| v.status == claude_vm_core::Status::Running)
        {
            let Ok((w, link)) = self.link(&v.id).await else {
                continue;
            };
            let state = self.store(|s| s.backup_state(&w.id)).ok().flatten();
            let activity = tokio::time::timeout(Duration::from_secs(10), link.activity())
                .await
                .ok()
                .and_then(|a| a.ok());
            let convs = tokio::time::timeout(Duration::from_secs(10), link.conversations())
                .await
                .ok()
                .and_then(|c| c.ok())
                .unwrap_or_default();
            use claude_vm_protocol::api::ConversationStatus as C;
            let turn_ended = convs
                .iter()
                .filter(|c| !matches!(c.status, C::Working | C::Starting))
                .filter_map(|c| unix(&c.updated_at))
                .max();
            let last_backup = state
                .as_ref()
                .and_then(|s| s.taken_at.as_deref())
                .and_then(unix);
            let last_error = state
                .as_ref()
                .and_then(|s| s.error_at.as_deref())
                .and_then(unix);
            let moment = claude_vm_core::backup::Moment {
                now: jiff::Timestamp::now().as_second(),
                last_attempt: last_backup.max(last_error),
                last_backup,
                last_change: activity
                    .and_then(|a| a.last_activity)
                    .as_deref()
                    .and_then(unix),
                turn_ended,
            };
            if !claude_vm_core::backup::due(&moment, interval) {
                continue;
            }
            let outcome = match self.backup(w.id.as_str(), &crate::NullReporter).await {
                Ok(o) => {
                    let (last, daily) =
                        (self.config.backup.keep_last, self.config.backup.keep_daily);
                    let id = w.id.to_string();
                    // Retention as configured; a failure here loses nothing.
                    if let Err(e) = self
                        .with_repo(None, move |repo| repo.forget(&id, last, daily))
                        .await
                    {
                        tracing::warn!(workspace = %w.name, "applying the backup retention failed: {e}");
                    }
                    Ok(o.report.snapshot.id)
                }
                Err(e) => {
                    self.notify_backup_failed(w.name.as_str(), &e.to_string());
                    Err(e.to_string())
                }
            };
            done.push(RoundResult {
                workspace: w.name.to_string(),
                outcome,
            });
        }
        done
    }
}
