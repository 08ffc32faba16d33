//! Backups of workspaces as snapshots in a restic-format repository (`rustic_core`), so the
//! `restic` CLI can always list and restore them without claude-vm.
//!
//! Two halves: [`scan`] runs inside a workspace (what is there, as restic nodes); the rest
//! runs on the control side, which alone holds the repository password and the storage
//! credentials: [`Repo`] opens (or creates) the repository, backs a scanned workspace up
//! reading only changed files through an [`Opener`], lists, forgets, purges, and writes a
//! snapshot back out as a tar stream for a new workspace. Everything here blocks (rustic
//! is synchronous): async callers run it on the blocking pool.

pub mod restore;
pub mod scan;
pub mod source;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use claude_vm_core::backup::{self as model, Location, S3Settings};
use rustic_backend::BackendOptions;
use rustic_core::repofile::{Node, SnapshotFile};
use rustic_core::{
    BackupOptions, ConfigOptions, Credentials, ForgetGroups, Grouped, KeepOptions, KeyOptions,
    LimitOption, OpenStatus, ParentOptions, Progress, ProgressBars, ProgressType, PruneOptions,
    Repository, RepositoryOptions, RusticError, RusticProgress, SnapshotGroupCriterion,
    SnapshotOptions,
};
use serde::Serialize;

pub use source::Opener;

/// Where the workspace's files are inside it: the root of every snapshot.
pub const SNAPSHOT_ROOT: &str = "/workspace";

/// Everything that can go wrong, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot reach the backup repository: {detail}")]
    Unreachable { detail: String },
    #[error("the backup repository refused the credentials: {detail}")]
    Denied { detail: String },
    #[error("the bucket of the backup repository does not exist: {detail}")]
    NoBucket { detail: String },
    #[error("wrong password for the backup repository")]
    WrongPassword,
    #[error("the backup repository's disk is full: {detail}")]
    Full { detail: String },
    #[error("no snapshot {id} in the backup repository")]
    UnknownSnapshot { id: String },
    #[error(
        "the backup missed {count} file(s) it could not read, e.g. {example}; no snapshot was kept"
    )]
    Incomplete { count: usize, example: String },
    #[error("the workspace's file list is not valid: {0}")]
    BadScan(scan::BadScan),
    #[error("the scan of the workspace's files was stopped: {0}")]
    ScanStopped(String),
    #[error("invalid backup settings: {0}")]
    Config(String),
    #[error("{0}")]
    Io(std::io::Error),
    #[error("backup repository error: {detail}")]
    Other { detail: String },
}

impl BackupError {
    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            BackupError::Unreachable { .. } => "check `backup.repository` and `backup.s3.endpoint` in config.yaml, and that the store is up".to_owned(),
            BackupError::Denied { .. } => "check the S3 credentials (`backup.s3.access_key_id`/`secret_access_key`, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)".to_owned(),
            BackupError::NoBucket { .. } => "create the bucket, or point `backup.repository` at an existing one".to_owned(),
            BackupError::WrongPassword => "the password file (`backup.password_file`, default ~/.claude-vm/backup-password) must be the one the repository was created with".to_owned(),
            BackupError::Full { .. } => "free space where the repository is, or move it (`backup.repository`)".to_owned(),
            BackupError::UnknownSnapshot { .. } => "`claude-vm backup list` shows the snapshots".to_owned(),
            BackupError::Incomplete { .. } => "try again; if it keeps failing, check the workspace's disk with `claude-vm exec`".to_owned(),
            _ => return None,
        })
    }

    /// Sort a rustic error into what the user can act on.
    pub(crate) fn classify(e: &RusticError) -> BackupError {
        Self::classify_text(&e.display_log(), e.is_incorrect_password())
    }

    fn classify_text(text: &str, incorrect_password: bool) -> BackupError {
        let detail = one_line(text);
        let low = detail.to_lowercase();
        let any = |words: &[&str]| words.iter().any(|w| low.contains(w));
        if any(&[
            "nosuchbucket",
            "bucket does not exist",
            "specified bucket does not exist",
        ]) {
            BackupError::NoBucket { detail }
        } else if any(&[
            "invalidaccesskeyid",
            "signaturedoesnotmatch",
            "accessdenied",
            "access denied",
            "permissiondenied",
            "forbidden",
        ]) {
            BackupError::Denied { detail }
        } else if any(&["no space left", "disk quota", "storage full"]) {
            BackupError::Full { detail }
        } else if incorrect_password
            || any(&["password", "no suitable key", "keys could not be decrypted"])
        {
            BackupError::WrongPassword
        } else if any(&[
            "connection refused",
            "error sending request",
            "dns error",
            "timed out",
            "connect error",
            "tcp connect",
            "unexpected eof",
            "connection reset",
        ]) {
            BackupError::Unreachable { detail }
        } else if any(&["no suitable id found", "no snapshot found", "not found"])
            && any(&["snapshot", "id"])
        {
            BackupError::UnknownSnapshot { id: String::new() }
        } else {
            BackupError::Other { detail }
        }
    }
}

fn one_line(s: &str) -> String {
    let joined = s
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if joined.len() > 600 {
        let mut cut = 600;
        while !joined.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}…", &joined[..cut])
    } else {
        joined
    }
}

/// How to open a repository.
#[derive(Clone)]
pub struct RepoConfig {
    pub location: Location,
    pub s3: S3Settings,
    pub password: String,
    /// Local cache of index and tree data (speeds up every backup after the first).
    pub cache_dir: Option<PathBuf>,
}

impl std::fmt::Debug for RepoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoConfig")
            .field("location", &self.location)
            .field("s3", &self.s3)
            .field("password", &claude_vm_core::provider::MASK)
            .finish()
    }
}

/// Bytes done out of a total, updated by rustic's progress calls and read by whoever
/// shows progress.
#[derive(Debug, Default)]
pub struct Meter {
    done: AtomicU64,
    total: AtomicU64,
}

impl Meter {
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
    pub(crate) fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct MeterProgress(Arc<Meter>, bool);

impl RusticProgress for MeterProgress {
    fn is_hidden(&self) -> bool {
        !self.1
    }
    fn set_length(&self, len: u64) {
        if self.1 {
            self.0.total.store(len, Ordering::Relaxed);
        }
    }
    fn set_title(&self, _title: &str) {}
    fn inc(&self, inc: u64) {
        if self.1 {
            self.0.add(inc);
        }
    }
    fn finish(&self) {}
}

#[derive(Debug, Clone)]
struct MeterBars(Arc<Meter>);

impl ProgressBars for MeterBars {
    fn progress(&self, kind: ProgressType, _prefix: &str) -> Progress {
        // Only byte counts (the backup itself) are shown.
        Progress::new(MeterProgress(
            self.0.clone(),
            matches!(kind, ProgressType::Bytes),
        ))
    }
}

/// A snapshot, as `backup list` shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct SnapshotInfo {
    /// Full id (what `restic` shows shortened to 8 characters).
    pub id: String,
    pub short_id: String,
    /// RFC 3339.
    pub time: String,
    pub workspace_id: Option<String>,
    pub workspace_name: Option<String>,
    pub provider: Option<String>,
    /// Where the workspace came from (folder or git URL).
    pub source: Option<String>,
    pub version: Option<String>,
    /// The image the workspace ran.
    pub image: Option<String>,
    pub tags: Vec<String>,
    /// Bytes this snapshot added to the repository (before compression).
    pub bytes_added: u64,
    /// Files new or changed since the previous snapshot.
    pub files_changed: u64,
    pub files_new: u64,
    pub files_unmodified: u64,
    /// Total size of the files in the snapshot.
    pub total_bytes: u64,
    pub total_files: u64,
}

impl SnapshotInfo {
    fn of(s: &SnapshotFile) -> SnapshotInfo {
        let tags: Vec<String> = s.tags.iter().cloned().collect();
        let tag = |p: &str| model::tag_value(tags.iter().map(String::as_str), p).map(str::to_owned);
        let sum = s.summary.clone().unwrap_or_default();
        let id = s.id.to_hex().to_string();
        SnapshotInfo {
            short_id: id.chars().take(8).collect(),
            id,
            time: s.time.timestamp().to_string(),
            workspace_id: tag(model::TAG_ID),
            workspace_name: tag(model::TAG_NAME),
            provider: tag(model::TAG_PROVIDER),
            version: tag(model::TAG_VERSION),
            image: tag(model::TAG_IMAGE),
            source: s.description.clone(),
            tags,
            bytes_added: sum.data_added,
            files_changed: sum.files_changed,
            files_new: sum.files_new,
            files_unmodified: sum.files_unmodified,
            total_bytes: sum.total_bytes_processed,
            total_files: sum.total_files_processed,
        }
    }
}

/// Who a snapshot belongs to.
#[derive(Debug, Clone)]
pub struct SnapshotMeta {
    pub workspace_id: String,
    pub workspace_name: String,
    pub provider: String,
    pub source: String,
    pub image: String,
    pub version: String,
}

/// The outcome of a backup.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub snapshot: SnapshotInfo,
    /// Files deleted in the workspace while the backup ran (left out).
    pub vanished: Vec<String>,
    /// Entries the scan could not read (left out).
    pub unreadable: Vec<String>,
    /// Nothing changed since `snapshot`, the previous one, which stands for this backup
    /// (no new snapshot was written).
    pub unchanged: bool,
}

/// An open repository.
pub struct Repo {
    repo: Repository<OpenStatus>,
    meter: Arc<Meter>,
}

fn backend_options(cfg: &RepoConfig) -> BackendOptions {
    match &cfg.location {
        Location::Local(p) => BackendOptions::default().repository(p.display().to_string()),
        Location::S3 { bucket, prefix } => {
            let mut o = BTreeMap::new();
            o.insert("bucket".to_owned(), bucket.clone());
            o.insert("root".to_owned(), format!("/{prefix}"));
            if let Some(e) = &cfg.s3.endpoint {
                o.insert("endpoint".to_owned(), e.clone());
            }
            o.insert(
                "region".to_owned(),
                cfg.s3
                    .region
                    .clone()
                    .unwrap_or_else(|| "us-east-1".to_owned()),
            );
            if let Some(k) = &cfg.s3.access_key_id {
                o.insert("access_key_id".to_owned(), k.clone());
            }
            if let Some(k) = &cfg.s3.secret_access_key {
                o.insert("secret_access_key".to_owned(), k.clone());
            }
            // Fail in seconds, not minutes, when the store is down.
            o.insert("retry".to_owned(), "2".to_owned());
            BackendOptions::default()
                .repository("opendal:s3")
                .options(o)
        }
    }
}

/// A store may create a missing bucket on the first write (restic itself creates one); a
/// mistyped bucket name must be an error, not a new bucket. Listing fails on a missing one.
fn check_bucket(cfg: &RepoConfig) -> Result<(), BackupError> {
    let options = backend_options(cfg)
        .options
        .into_iter()
        .filter(|(k, _)| k != "retry");
    let op = opendal::Operator::via_iter("s3", options)
        .map_err(|e| BackupError::classify_text(&e.to_string(), false))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(BackupError::Io)?;
    rt.block_on(async { op.list_with("/").limit(1).await })
        .map(|_| ())
        .map_err(|e| BackupError::classify_text(&e.to_string(), false))
}

impl Repo {
    /// Open the repository, creating it first when there is none yet.
    pub fn open(cfg: &RepoConfig) -> Result<Repo, BackupError> {
        if let Location::Local(p) = &cfg.location {
            std::fs::create_dir_all(p).map_err(|e| {
                if e.raw_os_error() == Some(28) {
                    BackupError::Full {
                        detail: e.to_string(),
                    }
                } else {
                    BackupError::Io(std::io::Error::new(
                        e.kind(),
                        format!("cannot create the backup repository {}: {e}", p.display()),
                    ))
                }
            })?;
        }
        let backends = backend_options(cfg)
            .to_backends()
            .map_err(|e| BackupError::classify(&e))?;
        let mut opts = RepositoryOptions::default();
        match &cfg.cache_dir {
            Some(d) => opts.cache_dir = Some(d.clone()),
            None => opts.no_cache = true,
        }
        let meter = Arc::new(Meter::default());
        let bars = MeterBars(meter.clone());
        let fresh = || {
            Repository::new_with_progress(&opts, &backends, bars.clone())
                .map_err(|e| BackupError::classify(&e))
        };
        let repo = fresh()?;
        let credentials = Credentials::password(&cfg.password);
        let exists = repo
            .config_id()
            .map_err(|e| BackupError::classify(&e))?
            .is_some();
        if !exists && matches!(cfg.location, Location::S3 { .. }) {
            check_bucket(cfg)?;
        }
        let repo = if exists {
            repo.open(&credentials)
        } else {
            repo.init(
                &credentials,
                &KeyOptions::default(),
                &ConfigOptions::default(),
            )
        }
        .map_err(|e| BackupError::classify(&e))?;
        Ok(Repo { repo, meter })
    }

    /// Progress of the running operation.
    pub fn meter(&self) -> Arc<Meter> {
        self.meter.clone()
    }

    /// All claude-vm snapshots, or those of one workspace (by id), oldest first.
    pub fn snapshots(&self, workspace_id: Option<&str>) -> Result<Vec<SnapshotInfo>, BackupError> {
        Ok(self
            .snapshot_files(workspace_id)?
            .iter()
            .map(SnapshotInfo::of)
            .collect())
    }

    fn snapshot_files(&self, workspace_id: Option<&str>) -> Result<Vec<SnapshotFile>, BackupError> {
        let mut all = self
            .repo
            .get_all_snapshots()
            .map_err(|e| BackupError::classify(&e))?;
        all.retain(|s| {
            let tags: Vec<&str> = s.tags.iter().map(String::as_str).collect();
            tags.contains(&model::TAG)
                && workspace_id.is_none_or(|id| {
                    model::tag_value(tags.iter().copied(), model::TAG_ID) == Some(id)
                })
        });
        all.sort_by(|a, b| a.time.cmp(&b.time));
        Ok(all)
    }

    /// The snapshot with this id (or unique id prefix).
    pub fn snapshot(&self, id: &str) -> Result<SnapshotInfo, BackupError> {
        Ok(SnapshotInfo::of(&self.find(id)?))
    }

    fn find(&self, id: &str) -> Result<SnapshotFile, BackupError> {
        let unknown = || BackupError::UnknownSnapshot { id: id.to_owned() };
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(unknown());
        }
        let matching: Vec<SnapshotFile> = self
            .snapshot_files(None)?
            .into_iter()
            .filter(|s| s.id.to_hex().starts_with(&id.to_ascii_lowercase()))
            .collect();
        match matching.len() {
            1 => Ok(matching.into_iter().next().expect("one")),
            0 => Err(unknown()),
            _ => Err(BackupError::Config(format!(
                "snapshot id {id} is ambiguous; give more of it"
            ))),
        }
    }

    /// Back up a scanned workspace. Only files that differ from the workspace's previous
    /// snapshot (size, mtime, ctime, inode) are read through `opener`. A file that fails to
    /// read fails the backup: the incomplete snapshot is removed again, so every snapshot
    /// kept holds the whole workspace.
    pub fn backup(
        self,
        root: &Path,
        entries: Vec<(PathBuf, Node)>,
        unreadable: Vec<String>,
        opener: Arc<dyn Opener>,
        meta: &SnapshotMeta,
    ) -> Result<BackupReport, BackupError> {
        let parent_snap = self.snapshot_files(Some(&meta.workspace_id))?.pop();
        let parent = parent_snap.as_ref().map(|s| s.id.to_hex().to_string());
        let tags = model::tags(
            &meta.workspace_id,
            &meta.workspace_name,
            &meta.provider,
            &meta.image,
            &meta.version,
        )
        .join(",");
        let mut snap_opts = SnapshotOptions::default()
            .add_tags(&tags)
            .map_err(|e| BackupError::classify(&e))?;
        snap_opts.host = Some(format!("claude-vm-{}", meta.workspace_id));
        snap_opts.description = Some(meta.source.clone());
        let snap = snap_opts
            .to_snapshot()
            .map_err(|e| BackupError::classify(&e))?;
        let mut parent_opts = ParentOptions::default();
        match parent {
            Some(p) => parent_opts.parents = vec![p],
            None => parent_opts.force = true,
        }
        let mut opts = BackupOptions::default().parent_opts(parent_opts);
        if root != Path::new(SNAPSHOT_ROOT) {
            // Scanned elsewhere (a test, an export): stored where a workspace keeps it.
            opts.as_path = Some(PathBuf::from(SNAPSHOT_ROOT));
        }
        let repo = self
            .repo
            .to_indexed_ids()
            .map_err(|e| BackupError::classify(&e))?;
        let started = std::time::Instant::now();
        let previous = parent_snap
            .as_ref()
            .map(|p| nodes_of(&repo, p))
            .unwrap_or_default();
        tracing::debug!(
            entries = previous.len(),
            ms = started.elapsed().as_millis() as u64,
            "backup: previous snapshot's entries read"
        );
        let rel = |path: &Path| path.strip_prefix(root).unwrap_or(path).to_owned();
        if let Some(parent) = &parent_snap
            && unreadable.is_empty()
            && entries.len() == previous.len()
            && entries
                .iter()
                .all(|(p, n)| previous.get(&rel(p)).is_some_and(|old| same_entry(old, n)))
        {
            // The snapshot would be the previous one again: that one stands.
            return Ok(BackupReport {
                snapshot: SnapshotInfo::of(parent),
                vanished: Vec::new(),
                unreadable,
                unchanged: true,
            });
        }
        let faults = Arc::new(source::Faults::default());
        let src = source::WorkspaceSource::new(entries, opener, faults.clone(), |_, path, node| {
            !previous
                .get(&rel(path))
                .is_some_and(|old| old.is_file() && file_stamp(old) == file_stamp(node))
        });
        self.meter.done.store(0, Ordering::Relaxed);
        let snap = repo
            .archive(&opts, &src, snap, &[root.to_owned()])
            .map_err(|e| BackupError::classify(&e))?;
        let failed = std::mem::take(&mut *faults.failed.lock().unwrap_or_else(|e| e.into_inner()));
        if !failed.is_empty() {
            // Never keep a snapshot that silently lacks files.
            let _ = repo.delete_snapshots(&[snap.id]);
            return Err(BackupError::Incomplete {
                count: failed.len(),
                example: failed[0].clone(),
            });
        }
        let vanished =
            std::mem::take(&mut *faults.vanished.lock().unwrap_or_else(|e| e.into_inner()));
        Ok(BackupReport {
            snapshot: SnapshotInfo::of(&snap),
            vanished,
            unreadable,
            unchanged: false,
        })
    }

    /// Write snapshot `id`'s workspace as a tar stream whose paths start with `workspace/`
    /// (extracted at `/`, it lands where it was). Returns the entries written.
    pub fn write_tar(self, id: &str, out: impl Write) -> Result<u64, BackupError> {
        let snap = self.find(id)?;
        let repo = self
            .repo
            .to_indexed()
            .map_err(|e| BackupError::classify(&e))?;
        self.meter.done.store(0, Ordering::Relaxed);
        let total = snap.summary.as_ref().map_or(0, |s| s.total_bytes_processed);
        self.meter.total.store(total, Ordering::Relaxed);
        restore::write_tar(
            &repo,
            &snap,
            SNAPSHOT_ROOT,
            Path::new(SNAPSHOT_ROOT.trim_start_matches('/')),
            out,
            &self.meter,
        )
    }

    /// Forget a workspace's snapshots beyond what `keep_last`/`keep_daily` keep, then remove
    /// the data only they used. Returns the ids forgotten.
    pub fn forget(
        &self,
        workspace_id: &str,
        keep_last: u32,
        keep_daily: u32,
    ) -> Result<Vec<String>, BackupError> {
        let snaps = self.snapshot_files(Some(workspace_id))?;
        let mut keep = KeepOptions::default();
        if keep_last > 0 {
            keep = keep.keep_last(keep_last as i32);
        }
        if keep_daily > 0 {
            keep = keep.keep_daily(keep_daily as i32);
        }
        let grouped = Grouped::from_items(snaps, SnapshotGroupCriterion::default());
        let now = rustic_core::jiff::Zoned::now();
        let ids = ForgetGroups::from_grouped_snapshots_with_retention(grouped, &keep, &now)
            .map_err(|e| BackupError::classify(&e))?
            .into_forget_ids();
        if !ids.is_empty() {
            self.repo
                .delete_snapshots(&ids)
                .map_err(|e| BackupError::classify(&e))?;
            self.prune()?;
        }
        Ok(ids.iter().map(|i| i.to_hex().to_string()).collect())
    }

    /// Remove every snapshot of a workspace and every piece of data only they used.
    pub fn purge(&self, workspace_id: &str) -> Result<usize, BackupError> {
        let ids: Vec<_> = self
            .snapshot_files(Some(workspace_id))?
            .iter()
            .map(|s| s.id)
            .collect();
        if !ids.is_empty() {
            self.repo
                .delete_snapshots(&ids)
                .map_err(|e| BackupError::classify(&e))?;
        }
        self.prune()?;
        Ok(ids.len())
    }

    /// Remove data no snapshot uses, at once (claude-vm serializes its own operations on a
    /// repository, so the two-phase delete that guards concurrent writers is not needed).
    fn prune(&self) -> Result<(), BackupError> {
        let opts = PruneOptions::default()
            .max_unused(LimitOption::Percentage(0))
            .instant_delete(true);
        let plan = self
            .repo
            .prune_plan(&opts)
            .map_err(|e| BackupError::classify(&e))?;
        self.repo
            .prune(&opts, plan)
            .map_err(|e| BackupError::classify(&e))
    }
}

/// What the archiver compares to decide a file is unchanged (rustic's parent matching).
type Stamp = (
    u64,
    Option<rustic_core::jiff::Timestamp>,
    Option<rustic_core::jiff::Timestamp>,
);

fn file_stamp(node: &Node) -> Stamp {
    (node.meta.size, node.meta.mtime, node.meta.ctime)
}

/// The entries of snapshot `snap` below the snapshot root, by path relative to it; empty
/// if its tree cannot be read (then every file is expected to be read again).
fn nodes_of<S: rustic_core::IndexedTree>(
    repo: &Repository<S>,
    snap: &SnapshotFile,
) -> std::collections::HashMap<PathBuf, Node> {
    let mut out = std::collections::HashMap::new();
    let Ok(node) = repo.node_from_snapshot_and_path(snap, SNAPSHOT_ROOT) else {
        return out;
    };
    let Ok(entries) = repo.ls(&node, &rustic_core::LsOptions::default()) else {
        return out;
    };
    for item in entries {
        let Ok((path, node)) = item else {
            return std::collections::HashMap::new();
        };
        out.insert(path, node);
    }
    out
}

/// Would a snapshot store scanned entry `new` as it stored `old`? Everything the scan
/// records counts but the access time (which reading a file for a backup changes).
fn same_entry(old: &Node, new: &Node) -> bool {
    let mut a = old.meta.clone();
    let mut b = new.meta.clone();
    a.atime = None;
    b.atime = None;
    old.name == new.name && old.node_type == new.node_type && a == b
}

impl From<scan::BadScan> for BackupError {
    fn from(e: scan::BadScan) -> BackupError {
        match e {
            scan::BadScan::Stopped { reason } => BackupError::ScanStopped(reason),
            other => BackupError::BadScan(other),
        }
    }
}
