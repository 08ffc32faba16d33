//! The control side's view of a workspace being backed up: the scanned entries, and file
//! contents read on demand through whatever reaches the workspace ([`Opener`]). The
//! archiver compares each entry with the parent snapshot and opens only files whose size,
//! mtime, ctime or inode changed, so an unchanged file never travels.

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rustic_core::repofile::Node;
use rustic_core::{ReadSource, ReadSourceEntry, RusticResult};

/// Reads one file of the workspace (by its absolute path there).
pub trait Opener: Send + Sync + 'static {
    fn open(&self, path: &std::path::Path) -> io::Result<Box<dyn Read + Send>>;
}

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
            .map(|(path, node)| {
                let open = node.is_file().then(|| LazyFile {
                    path: path.clone(),
                    opener: self.opener.clone(),
                    faults: self.faults.clone(),
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

/// A file of the workspace, fetched when first read.
pub struct LazyFile {
    path: PathBuf,
    opener: Arc<dyn Opener>,
    faults: Arc<Faults>,
    reader: Option<Box<dyn Read + Send>>,
}

impl Read for LazyFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let result = match &mut self.reader {
            Some(r) => r.read(buf),
            None => match self.opener.open(&self.path) {
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
