//! Packing a project folder into a tar stream for the workspace volume.
//!
//! What is copied follows git: tracked and untracked files plus `.git` itself, minus what
//! `.gitignore` excludes. Outside a git work tree, `.gitignore` files still apply. The tar
//! is produced on a blocking thread and streamed, so a large tree is never held in memory.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use claude_vm_provider::TarStream;
use tokio::sync::mpsc;

/// Why a project folder could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("cannot list the files of {path}: {reason}")]
    List { path: PathBuf, reason: String },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
}

/// One thing to put in the archive, relative to the project root.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Item {
    Dir(PathBuf),
    File(PathBuf),
    Symlink(PathBuf),
}

/// The files of a project, decided before anything is copied.
#[derive(Debug, Clone)]
pub struct Plan {
    root: PathBuf,
    items: Vec<Item>,
    pub files: u64,
    pub bytes: u64,
}

/// Whether `dir` is inside a git work tree and git is installed.
fn in_git_work_tree(dir: &Path) -> bool {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "--is-inside-work-tree"])
        .output()
        .map(|o| o.status.success() && o.stdout.starts_with(b"true"))
        .unwrap_or(false)
}

fn safe_relative(p: &Path) -> bool {
    !p.as_os_str().is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)))
}

/// Walk `dir` (relative `rel` under root) and add everything below it, ignoring nothing.
fn add_tree(root: &Path, rel: &Path, out: &mut BTreeSet<PathBuf>) -> Result<(), PackError> {
    let walker = ignore::WalkBuilder::new(root.join(rel))
        .standard_filters(false)
        .follow_links(false)
        .build();
    for entry in walker {
        let entry = entry.map_err(|e| PackError::List {
            path: root.join(rel),
            reason: e.to_string(),
        })?;
        if let Ok(r) = entry.path().strip_prefix(root)
            && safe_relative(r)
        {
            out.insert(r.to_owned());
        }
    }
    Ok(())
}

/// Decide what to copy from `root`.
pub fn plan(root: &Path) -> Result<Plan, PackError> {
    let mut paths = BTreeSet::new();
    if in_git_work_tree(root) {
        let out = Command::new("git")
            .arg("-C")
            .arg(root)
            .args([
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ])
            .output()
            .map_err(|e| PackError::List {
                path: root.to_owned(),
                reason: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(PackError::List {
                path: root.to_owned(),
                reason: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        for raw in out.stdout.split(|b| *b == 0).filter(|s| !s.is_empty()) {
            use std::os::unix::ffi::OsStrExt;
            let rel = PathBuf::from(std::ffi::OsStr::from_bytes(raw));
            if !safe_relative(&rel) {
                continue;
            }
            match fs::symlink_metadata(root.join(&rel)) {
                // Nested repositories and submodules come as directories: take them whole.
                Ok(m) if m.is_dir() => add_tree(root, &rel, &mut paths)?,
                Ok(_) => {
                    paths.insert(rel);
                }
                // Tracked but deleted in the work tree: nothing to copy.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(PackError::Read {
                        path: root.join(rel),
                        source: e,
                    });
                }
            }
        }
        if root.join(".git").exists() {
            add_tree(root, Path::new(".git"), &mut paths)?;
        }
    } else {
        let walker = ignore::WalkBuilder::new(root)
            .hidden(false)
            .git_ignore(true)
            .require_git(false)
            .git_global(false)
            .git_exclude(false)
            .ignore(false)
            .parents(false)
            .follow_links(false)
            .build();
        for entry in walker {
            let entry = entry.map_err(|e| PackError::List {
                path: root.to_owned(),
                reason: e.to_string(),
            })?;
            if let Ok(r) = entry.path().strip_prefix(root)
                && safe_relative(r)
            {
                paths.insert(r.to_owned());
            }
        }
    }

    // Every parent directory gets its own entry so its mode is kept.
    let mut dirs = BTreeSet::new();
    for p in &paths {
        let mut cur = p.parent();
        while let Some(d) = cur {
            if d.as_os_str().is_empty() {
                break;
            }
            dirs.insert(d.to_owned());
            cur = d.parent();
        }
    }
    let mut items = Vec::with_capacity(paths.len() + dirs.len());
    let (mut files, mut bytes) = (0u64, 0u64);
    for d in &dirs {
        items.push(Item::Dir(d.clone()));
    }
    for p in paths {
        if dirs.contains(&p) {
            continue;
        }
        let meta = fs::symlink_metadata(root.join(&p)).map_err(|e| PackError::Read {
            path: root.join(&p),
            source: e,
        })?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            items.push(Item::Symlink(p));
        } else if ft.is_dir() {
            items.push(Item::Dir(p));
        } else if ft.is_file() {
            files += 1;
            bytes += meta.len();
            items.push(Item::File(p));
        }
        // Sockets, fifos and devices are not project content.
    }
    items.sort_by(|a, b| item_path(a).cmp(item_path(b)));
    Ok(Plan {
        root: root.to_owned(),
        items,
        files,
        bytes,
    })
}

/// Everything under `root`, ignoring nothing (a git directory to clone from).
pub fn plan_all(root: &Path) -> Result<Plan, PackError> {
    let mut paths = BTreeSet::new();
    add_tree(root, Path::new(""), &mut paths)?;
    let mut items = Vec::new();
    let (mut files, mut bytes) = (0, 0);
    for p in paths {
        let meta = fs::symlink_metadata(root.join(&p)).map_err(|e| PackError::Read {
            path: root.join(&p),
            source: e,
        })?;
        if meta.is_dir() {
            items.push(Item::Dir(p));
        } else if meta.file_type().is_symlink() {
            items.push(Item::Symlink(p));
        } else if meta.is_file() {
            files += 1;
            bytes += meta.len();
            items.push(Item::File(p));
        }
    }
    Ok(Plan {
        root: root.to_owned(),
        items,
        files,
        bytes,
    })
}

fn item_path(i: &Item) -> &Path {
    match i {
        Item::Dir(p) | Item::File(p) | Item::Symlink(p) => p,
    }
}

/// A file to add to the archive besides the project (e.g. the claude-vm binary).
#[derive(Debug, Clone)]
pub struct Extra {
    /// Path in the archive, relative to the upload destination.
    pub path: PathBuf,
    pub content: ExtraContent,
    pub mode: u32,
    pub mtime: u64,
}

#[derive(Debug, Clone)]
pub enum ExtraContent {
    /// Copy this local file.
    File(PathBuf),
    /// These bytes.
    Bytes(Vec<u8>),
    /// An empty directory.
    Dir,
}

/// Writes into the channel in chunks; blocks when the consumer is behind.
/// Bytes written on the blocking pool, read as a [`TarStream`] (see [`channel`]). The
/// stream is complete only once [`ChannelWriter::finish`] was called: a writer dropped
/// before (its producer failed or panicked, or never ran) ends the stream with an error,
/// so an upload never takes a cut-off archive for a whole one.
pub(crate) struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    buf: Vec<u8>,
    counter: Option<Arc<AtomicU64>>,
}

impl ChannelWriter {
    /// Send what is buffered and mark the stream complete.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        self.flush()?;
        self.tx
            .blocking_send(Ok(Bytes::new()))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "upload was abandoned"))
    }

    /// Something that ends the stream with an error (the upload then fails instead of
    /// ending short), usable after the writer itself was handed on.
    pub(crate) fn failer(&self) -> impl Fn(io::Error) + Send + 'static {
        let tx = self.tx.clone();
        move |e| {
            let _ = tx.blocking_send(Err(e));
        }
    }
}

/// A writer for the blocking pool and the stream of what it wrote; `counter` (if any)
/// counts the bytes passed on.
pub(crate) fn channel(counter: Option<Arc<AtomicU64>>) -> (ChannelWriter, TarStream) {
    let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(8);
    let writer = ChannelWriter {
        tx,
        buf: Vec::with_capacity(CHUNK),
        counter,
    };
    // Data chunks are never empty; the empty one `finish` sends marks the end.
    let stream = Box::pin(futures_util::stream::unfold(
        (rx, false),
        |(mut rx, mut complete)| async move {
            loop {
                match rx.recv().await {
                    Some(Ok(b)) if b.is_empty() => complete = true,
                    Some(item) => return Some((item, (rx, complete))),
                    None if complete => return None,
                    None => {
                        let e = io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the archive ended before it was complete",
                        );
                        // Reported once; the next poll ends the stream.
                        return Some((Err(e), (rx, true)));
                    }
                }
            }
        },
    ));
    (writer, stream)
}

const CHUNK: usize = 256 * 1024;

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        if let Some(c) = &self.counter {
            c.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "upload was abandoned"))
    }
}

/// Counts bytes read from project files, for progress.
struct Counting<R> {
    inner: R,
    counter: Arc<AtomicU64>,
}

impl<R: io::Read> io::Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn header_for(kind: tar::EntryType, size: u64, mode: u32, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode & 0o7777);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn write_archive(
    plan: Option<(&Plan, &Path)>,
    extras: &[Extra],
    counter: &Arc<AtomicU64>,
    out: ChannelWriter,
) -> io::Result<()> {
    let mut builder = tar::Builder::new(out);
    for e in extras {
        match &e.content {
            ExtraContent::Dir => {
                let mut h = header_for(tar::EntryType::Directory, 0, e.mode, e.mtime);
                builder.append_data(&mut h, &e.path, io::empty())?;
            }
            ExtraContent::Bytes(b) => {
                let mut h = header_for(tar::EntryType::Regular, b.len() as u64, e.mode, e.mtime);
                builder.append_data(&mut h, &e.path, &b[..])?;
            }
            ExtraContent::File(src) => {
                let f = fs::File::open(src)?;
                let len = f.metadata()?.len();
                let mut h = header_for(tar::EntryType::Regular, len, e.mode, e.mtime);
                builder.append_data(&mut h, &e.path, f)?;
            }
        }
    }
    if let Some((plan, prefix)) = plan {
        let root_meta = fs::metadata(&plan.root)?;
        let mut h = header_for(
            tar::EntryType::Directory,
            0,
            root_meta.mode(),
            root_meta.mtime().max(0) as u64,
        );
        builder.append_data(&mut h, prefix, io::empty())?;
        for item in &plan.items {
            let rel = item_path(item);
            let src = plan.root.join(rel);
            let dest = prefix.join(rel);
            let meta = fs::symlink_metadata(&src)?;
            let mtime = meta.mtime().max(0) as u64;
            match item {
                Item::Dir(_) => {
                    let mut h = header_for(tar::EntryType::Directory, 0, meta.mode(), mtime);
                    builder.append_data(&mut h, &dest, io::empty())?;
                }
                Item::Symlink(_) => {
                    let target = fs::read_link(&src)?;
                    let mut h = header_for(tar::EntryType::Symlink, 0, 0o777, mtime);
                    builder.append_link(&mut h, &dest, &target)?;
                }
                Item::File(_) => {
                    let f = fs::File::open(&src)?;
                    // The size at open time is what we promise the tar header; a file that
                    // grows meanwhile is cut, one that shrinks is an error.
                    let len = f.metadata()?.len();
                    let mut h = header_for(tar::EntryType::Regular, len, meta.mode(), mtime);
                    let reader = Counting {
                        inner: io::Read::take(f, len),
                        counter: counter.clone(),
                    };
                    builder.append_data(&mut h, &dest, reader)?;
                }
            }
        }
    }
    builder.into_inner()?.finish()
}

/// Stream an archive holding `extras` and then, under `prefix`, the planned project.
/// `counter` advances with the project bytes read.
pub fn stream(
    plan: Option<(Plan, PathBuf)>,
    extras: Vec<Extra>,
    counter: Arc<AtomicU64>,
) -> TarStream {
    let (writer, stream) = channel(None);
    let fail = writer.failer();
    tokio::task::spawn_blocking(move || {
        let res = write_archive(
            plan.as_ref().map(|(p, pre)| (p, pre.as_path())),
            &extras,
            &counter,
            writer,
        );
        if let Err(e) = res {
            // The receiver turns this into a failed upload, never a truncated success.
            fail(e);
        }
    });
    stream
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    async fn drain(mut s: TarStream) -> (Vec<u8>, Option<io::Error>) {
        use futures_util::StreamExt;
        let mut data = Vec::new();
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => data.extend_from_slice(&b),
                Err(e) => return (data, Some(e)),
            }
        }
        (data, None)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_stream_is_whole_only_once_finished() {
        let (mut w, s) = channel(None);
        tokio::task::spawn_blocking(move || {
            w.write_all(b"abc").unwrap();
            w.finish().unwrap();
        });
        let (data, err) = drain(s).await;
        assert_eq!(data, b"abc");
        assert!(err.is_none());
        // A producer that stops (fails, panics, never runs) without finishing: an error,
        // never a short archive taken for a whole one.
        let (mut w, s) = channel(None);
        tokio::task::spawn_blocking(move || {
            w.write_all(&[7u8; 300 * 1024]).unwrap();
            drop(w);
        });
        let (data, err) = drain(s).await;
        assert_eq!(data.len(), 300 * 1024, "what was flushed arrives");
        assert_eq!(err.unwrap().kind(), io::ErrorKind::UnexpectedEof);
        let (w, s) = channel(None);
        drop(w);
        assert!(drain(s).await.1.is_some());
    }

    fn names(plan: &Plan) -> Vec<String> {
        plan.items
            .iter()
            .map(|i| match i {
                Item::Dir(p) => format!("{}/", p.display()),
                Item::File(p) => p.display().to_string(),
                Item::Symlink(p) => format!("{}@", p.display()),
            })
            .filter(|s| !s.starts_with(".git/") || s == ".git/")
            .collect()
    }

    fn git(dir: &Path, args: &[&str]) {
        let ok = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.email=t@example.com", "-c", "user.name=t"])
            .args(args)
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    }

    fn tree(dir: &Path) {
        fs::create_dir_all(dir.join("src/deep")).unwrap();
        fs::create_dir_all(dir.join("target")).unwrap();
        fs::write(dir.join(".gitignore"), "target/\n*.log\n").unwrap();
        fs::write(dir.join("src/main.rs"), "fn main() {}\n").unwrap();
        fs::write(dir.join("src/deep/data.bin"), [0u8, 1, 2, 255]).unwrap();
        fs::write(dir.join("target/out"), "built").unwrap();
        fs::write(dir.join("debug.log"), "noise").unwrap();
        fs::write(dir.join("run.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(dir.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("src/main.rs", dir.join("link")).unwrap();
    }

    #[test]
    fn git_projects_copy_tracked_untracked_and_dot_git_but_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path());
        git(dir.path(), &["init", "-q"]);
        git(dir.path(), &["add", ".gitignore", "src/main.rs"]);
        git(dir.path(), &["commit", "-q", "-m", "init"]);
        // tracked despite matching .gitignore: still copied
        fs::write(dir.path().join("keep.log"), "forced").unwrap();
        git(dir.path(), &["add", "-f", "keep.log"]);
        let plan = plan(dir.path()).unwrap();
        assert_eq!(
            names(&plan),
            [
                ".git/",
                ".gitignore",
                "keep.log",
                "link@",
                "run.sh",
                "src/",
                "src/deep/",
                "src/deep/data.bin",
                "src/main.rs"
            ]
        );
        assert!(
            plan.items
                .iter()
                .any(|i| item_path(i) == Path::new(".git/HEAD"))
        );
    }

    #[test]
    fn plain_folders_honour_gitignore() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path());
        let plan = plan(dir.path()).unwrap();
        assert_eq!(
            names(&plan),
            [
                ".gitignore",
                "link@",
                "run.sh",
                "src/",
                "src/deep/",
                "src/deep/data.bin",
                "src/main.rs"
            ]
        );
        assert_eq!(plan.files, 4);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn archive_round_trips() {
        use futures_util::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path());
        let plan = plan(dir.path()).unwrap();
        let counter = Arc::new(AtomicU64::new(0));
        let extras = vec![Extra {
            path: "opt/x".into(),
            content: ExtraContent::Bytes(b"hi".to_vec()),
            mode: 0o755,
            mtime: 1,
        }];
        let mut s = stream(Some((plan.clone(), "p".into())), extras, counter.clone());
        let mut bytes = Vec::new();
        while let Some(chunk) = s.next().await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(counter.load(Ordering::Relaxed), plan.bytes);
        let out = tempfile::tempdir().unwrap();
        tar::Archive::new(&bytes[..]).unpack(out.path()).unwrap();
        assert_eq!(
            fs::read(out.path().join("p/src/deep/data.bin")).unwrap(),
            [0, 1, 2, 255]
        );
        assert_eq!(fs::read(out.path().join("opt/x")).unwrap(), b"hi");
        let mode = fs::metadata(out.path().join("p/run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            fs::read_link(out.path().join("p/link")).unwrap(),
            Path::new("src/main.rs")
        );
        assert!(!out.path().join("p/target").exists());
    }
}
