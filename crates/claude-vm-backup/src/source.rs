//! The control side's view of a workspace being backed up: the scanned entries, and file
//! contents read on demand through whatever reaches the workspace ([`Opener`]). The
//! archiver compares each entry with the parent snapshot and opens only files whose size,
//! mtime, ctime or inode changed, so an unchanged file never travels.
//!
//! Reading thousands of small files one request each would make a first backup a round
//! trip per file. So the files the comparison with the parent predicts the archiver will
//! open (all of them, without a parent) are fetched ahead, many per request
//! ([`Opener::read_many`]), in the order the archiver walks, into a bounded window
//! ([`Prefetch`]). A prediction that turns out wrong costs only speed: a file fetched but
//! never opened is dropped once the archiver has walked past it, and a file opened but not
//! fetched (or fetched after a failure) is read on its own.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use rustic_core::repofile::Node;
use rustic_core::{ReadSource, ReadSourceEntry, RusticResult};

/// One file of a [`Opener::read_many`] answer.
#[derive(Debug)]
pub enum Fetched {
    /// Its whole content.
    Content(Vec<u8>),
    /// Too large to come this way: open it on its own.
    Large,
    /// Gone since the scan.
    Gone(String),
    /// Could not be read.
    Failed(String),
}

/// Files of many small files, as they arrive, one item per path asked, in order; an `Err`
/// ends the answer early (the rest are then opened one by one).
pub type FetchedIter = Box<dyn Iterator<Item = io::Result<Fetched>> + Send>;

/// Reads files of the workspace (by their absolute paths there).
pub trait Opener: Send + Sync + 'static {
    /// One file, streamed.
    fn open(&self, path: &Path) -> io::Result<Box<dyn Read + Send>>;

    /// Many small files in one request; `None` if this opener cannot (each is then opened
    /// on its own).
    fn read_many(&self, _paths: &[PathBuf]) -> Option<io::Result<FetchedIter>> {
        None
    }
}

/// Files up to this size are fetched ahead, many per request.
pub const SMALL_FILE: u64 = 1 << 20;
/// Most files fetched ahead but not yet opened, in bytes.
const WINDOW: usize = 64 << 20;
/// Most paths, and bytes (by the scan's sizes), asked in one request.
const BATCH_PATHS: usize = 4096;
const BATCH_BYTES: u64 = 32 << 20;
/// How far behind the file being opened a fetched one may lie before it counts as passed
/// over (the archiver's threads open files nearly, not exactly, in order).
const SLACK: usize = 64;

/// What went wrong while reading files (the archiver itself only logs and skips them).
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// Files that failed to read: the snapshot would miss them.
    pub(crate) failed: Mutex<Vec<String>>,
    /// Files that vanished between the scan and their reading (deleted meanwhile).
    pub(crate) vanished: Mutex<Vec<String>>,
}

/// A scanned workspace as rustic's archiver reads it.
pub(crate) struct WorkspaceSource {
    pub(crate) entries: Vec<(PathBuf, Node)>,
    pub(crate) opener: Arc<dyn Opener>,
    pub(crate) faults: Arc<Faults>,
    /// Files fetched ahead: for each entry, its place in the plan.
    prefetch: Option<(Arc<Prefetch>, HashMap<usize, usize>)>,
}

impl WorkspaceSource {
    /// `predicted`: the entries (by index) the archiver is expected to open.
    pub(crate) fn new(
        entries: Vec<(PathBuf, Node)>,
        opener: Arc<dyn Opener>,
        faults: Arc<Faults>,
        predicted: impl Fn(usize, &Path, &Node) -> bool,
    ) -> Self {
        let plan: Vec<(usize, PathBuf)> = entries
            .iter()
            .enumerate()
            .filter(|(i, (p, n))| n.is_file() && n.meta.size <= SMALL_FILE && predicted(*i, p, n))
            .map(|(i, (p, _))| (i, p.clone()))
            .collect();
        let prefetch = (!plan.is_empty()).then(|| {
            let sizes: Vec<u64> = plan.iter().map(|(i, _)| entries[*i].1.meta.size).collect();
            let slots = plan
                .iter()
                .enumerate()
                .map(|(pos, (i, _))| (*i, pos))
                .collect();
            let paths = plan.into_iter().map(|(_, p)| p).collect();
            (Prefetch::start(opener.clone(), paths, sizes), slots)
        });
        WorkspaceSource {
            entries,
            opener,
            faults,
            prefetch,
        }
    }
}

impl Drop for WorkspaceSource {
    fn drop(&mut self) {
        if let Some((p, _)) = &self.prefetch {
            p.cancel();
        }
    }
}

impl ReadSource for WorkspaceSource {
    type Open = LazyFile;
    type Iter = std::vec::IntoIter<RusticResult<ReadSourceEntry<LazyFile>>>;

    fn size(&self) -> RusticResult<Option<u64>> {
        Ok(Some(
            self.entries
                .iter()
                .filter(|(_, n)| n.is_file())
                .map(|(_, n)| n.meta.size)
                .sum(),
        ))
    }

    fn entries(&self) -> Self::Iter {
        self.entries
            .iter()
            .enumerate()
            .map(|(i, (path, node))| {
                let open = node.is_file().then(|| LazyFile {
                    path: path.clone(),
                    opener: self.opener.clone(),
                    faults: self.faults.clone(),
                    ahead: self
                        .prefetch
                        .as_ref()
                        .and_then(|(p, slots)| Some((p.clone(), *slots.get(&i)?))),
                    reader: None,
                });
                Ok(ReadSourceEntry {
                    path: path.clone(),
                    node: node.clone(),
                    open,
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
    }
}

/// A file of the workspace, fetched when first read (or taken from what was fetched
/// ahead).
pub struct LazyFile {
    path: PathBuf,
    opener: Arc<dyn Opener>,
    faults: Arc<Faults>,
    ahead: Option<(Arc<Prefetch>, usize)>,
    reader: Option<Box<dyn Read + Send>>,
}

impl LazyFile {
    fn open(&mut self) -> io::Result<Box<dyn Read + Send>> {
        if let Some((prefetch, slot)) = self.ahead.take() {
            match prefetch.take(slot) {
                Some(Fetched::Content(data)) => return Ok(Box::new(Cursor::new(data))),
                Some(Fetched::Gone(m)) => return Err(io::Error::new(io::ErrorKind::NotFound, m)),
                Some(Fetched::Failed(m)) => return Err(io::Error::other(m)),
                Some(Fetched::Large) | None => {}
            }
        }
        self.opener.open(&self.path)
    }
}

impl Read for LazyFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let result = match &mut self.reader {
            Some(r) => r.read(buf),
            None => match self.open() {
                Ok(r) => self.reader.insert(r).read(buf),
                Err(e) => Err(e),
            },
        };
        if let Err(e) = &result {
            let what = format!("{}: {e}", self.path.display());
            let list = if e.kind() == io::ErrorKind::NotFound {
                &self.faults.vanished
            } else {
                &self.faults.failed
            };
            list.lock().unwrap_or_else(|e| e.into_inner()).push(what);
        }
        result
    }
}

/// Files fetched ahead of the archiver, by their place in the plan, in a bounded window.
pub(crate) struct Prefetch {
    state: Mutex<Window>,
    changed: Condvar,
}

#[derive(Default)]
struct Window {
    /// By place: ordered, so what the archiver passed over is dropped from the front.
    fetched: BTreeMap<usize, Fetched>,
    bytes: usize,
    /// Every place before this one has been fetched (or given up on).
    next: usize,
    /// Nothing more will be fetched.
    finished: bool,
    cancelled: bool,
    /// Threads waiting for a file, and whether the fetcher waits for room: who to wake.
    takers: usize,
    fetcher_waits: bool,
}

fn size_of(f: &Fetched) -> usize {
    match f {
        Fetched::Content(d) => d.len(),
        Fetched::Gone(m) | Fetched::Failed(m) => m.len(),
        Fetched::Large => 0,
    }
}

impl Prefetch {
    /// Start fetching `paths` (with the scan's `sizes`) on a thread of its own.
    fn start(opener: Arc<dyn Opener>, paths: Vec<PathBuf>, sizes: Vec<u64>) -> Arc<Prefetch> {
        let p = Arc::new(Prefetch {
            state: Mutex::new(Window::default()),
            changed: Condvar::new(),
        });
        let fetcher = p.clone();
        let started = std::thread::Builder::new()
            .name("backup-prefetch".to_owned())
            .spawn(move || {
                fetcher.run(&*opener, &paths, &sizes);
                let mut w = fetcher.lock();
                w.finished = true;
                fetcher.changed.notify_all();
            });
        if started.is_err() {
            // No thread: every file is then read on its own.
            p.lock().finished = true;
        }
        p
    }

    fn lock(&self) -> MutexGuard<'_, Window> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self, opener: &dyn Opener, paths: &[PathBuf], sizes: &[u64]) {
        let mut start = 0;
        while start < paths.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < paths.len() && end - start < BATCH_PATHS && bytes < BATCH_BYTES {
                bytes += sizes[end];
                end += 1;
            }
            let Some(Ok(answer)) = opener.read_many(&paths[start..end]) else {
                return;
            };
            let mut place = start;
            for item in answer {
                let Ok(fetched) = item else {
                    return;
                };
                if !self.put(place, fetched) {
                    return;
                }
                place += 1;
                if place == end {
                    break;
                }
            }
            if place < end {
                // A short answer: the rest are read on their own.
                return;
            }
            start = end;
        }
    }

    /// Keep one fetched file, waiting while the window is full. False once cancelled.
    fn put(&self, place: usize, fetched: Fetched) -> bool {
        let mut w = self.lock();
        while w.bytes >= WINDOW && !w.cancelled {
            w.fetcher_waits = true;
            if w.takers > 0 {
                // They may be waiting for room to be made: see `take`.
                self.changed.notify_all();
            }
            w = self.changed.wait(w).unwrap_or_else(|e| e.into_inner());
        }
        w.fetcher_waits = false;
        if w.cancelled {
            return false;
        }
        w.bytes += size_of(&fetched);
        w.fetched.insert(place, fetched);
        w.next = place + 1;
        if w.takers > 0 {
            self.changed.notify_all();
        }
        true
    }

    /// The file at `place`, once fetched; `None` if it will not be (read it on its own).
    fn take(&self, place: usize) -> Option<Fetched> {
        let mut w = self.lock();
        Self::drop_before(&mut w, place.saturating_sub(SLACK));
        let found = loop {
            if let Some(f) = w.fetched.remove(&place) {
                w.bytes -= size_of(&f);
                break Some(f);
            }
            if w.next > place || w.finished || w.cancelled {
                break None;
            }
            if w.bytes >= WINDOW {
                // Full of files the archiver did not open (it found them unchanged after
                // all), all before this one since fetching goes in order: drop them.
                Self::drop_before(&mut w, place);
            }
            if w.fetcher_waits && w.bytes < WINDOW {
                self.changed.notify_all();
            }
            w.takers += 1;
            w = self.changed.wait(w).unwrap_or_else(|e| e.into_inner());
            w.takers -= 1;
        };
        if w.fetcher_waits && w.bytes < WINDOW {
            self.changed.notify_all();
        }
        found
    }

    fn drop_before(w: &mut Window, place: usize) {
        while let Some(entry) = w.fetched.first_entry() {
            if *entry.key() >= place {
                break;
            }
            w.bytes -= size_of(&entry.remove());
        }
    }

    fn cancel(&self) {
        self.lock().cancelled = true;
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Files `/w/N` whose content is N's digits; counts requests.
    #[derive(Default)]
    struct Fake {
        opens: AtomicUsize,
        batches: AtomicUsize,
        fail_batches: bool,
        /// Bytes added to each file's content.
        pad: usize,
    }

    impl Opener for Fake {
        fn open(&self, path: &Path) -> io::Result<Box<dyn Read + Send>> {
            self.opens.fetch_add(1, Ordering::SeqCst);
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            Ok(Box::new(Cursor::new(name.into_bytes())))
        }
        fn read_many(&self, paths: &[PathBuf]) -> Option<io::Result<FetchedIter>> {
            self.batches.fetch_add(1, Ordering::SeqCst);
            if self.fail_batches {
                return Some(Err(io::Error::other("link down")));
            }
            let pad = self.pad;
            let owned: Vec<PathBuf> = paths.to_vec();
            let items = owned.into_iter().map(move |p| {
                let mut data = p.file_name().unwrap().to_string_lossy().into_owned();
                data.extend(std::iter::repeat_n(' ', pad));
                Ok(Fetched::Content(data.into_bytes()))
            });
            Some(Ok(Box::new(items)))
        }
    }

    fn paths(n: usize) -> Vec<PathBuf> {
        (0..n).map(|i| PathBuf::from(format!("/w/{i}"))).collect()
    }

    fn read_all(mut f: LazyFile) -> String {
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        s
    }

    fn lazy(fake: &Arc<Fake>, p: &Arc<Prefetch>, i: usize) -> LazyFile {
        LazyFile {
            path: PathBuf::from(format!("/w/{i}")),
            opener: fake.clone(),
            faults: Arc::default(),
            ahead: Some((p.clone(), i)),
            reader: None,
        }
    }

    #[test]
    fn files_fetched_ahead_come_in_few_requests() {
        let fake = Arc::new(Fake::default());
        let n = 10_000;
        let p = Prefetch::start(fake.clone(), paths(n), vec![10; n]);
        for i in 0..n {
            assert_eq!(read_all(lazy(&fake, &p, i)), i.to_string());
        }
        assert_eq!(fake.opens.load(Ordering::SeqCst), 0);
        assert_eq!(fake.batches.load(Ordering::SeqCst), n.div_ceil(BATCH_PATHS));
    }

    #[test]
    fn files_passed_over_do_not_stall_the_rest() {
        // Only every third file is opened; the rest stay fetched until walked past.
        let fake = Arc::new(Fake::default());
        let n = 3000;
        let p = Prefetch::start(fake.clone(), paths(n), vec![10; n]);
        for i in (0..n).step_by(3) {
            assert_eq!(read_all(lazy(&fake, &p, i)), i.to_string());
        }
        assert!(p.lock().fetched.len() <= SLACK + 3);
    }

    #[test]
    fn a_full_window_of_unopened_files_is_dropped_for_a_later_one() {
        // 200 files of 1 MiB fetched ahead, of which only the last is opened: the window
        // fills with the others, which must make way for it.
        let fake = Arc::new(Fake {
            pad: 1 << 20,
            ..Fake::default()
        });
        let n = 200;
        let p = Prefetch::start(fake.clone(), paths(n), vec![1 << 20; n]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while p.lock().bytes < WINDOW {
            assert!(
                std::time::Instant::now() < deadline,
                "the window never filled"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(read_all(lazy(&fake, &p, n - 1)).starts_with("199"));
        assert_eq!(fake.opens.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_failed_batch_falls_back_to_one_request_per_file() {
        let fake = Arc::new(Fake {
            fail_batches: true,
            ..Fake::default()
        });
        let p = Prefetch::start(fake.clone(), paths(5), vec![10; 5]);
        for i in 0..5 {
            assert_eq!(read_all(lazy(&fake, &p, i)), i.to_string());
        }
        assert_eq!(fake.opens.load(Ordering::SeqCst), 5);
    }
}
