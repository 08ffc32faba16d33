//! A snapshot as a tar stream: what a new workspace is filled from (`workspace restore`)
//! and what `workspace export` writes. Contents, modes, owners, times, symlinks and empty
//! folders are kept; device files (which no workspace holds) are not.

use std::io::{self, Read, Write};
use std::path::Path;

use rustic_core::repofile::{Node, NodeType};
use rustic_core::{IndexedFull, LsOptions, Repository};

use crate::{BackupError, Meter};

// Go's `fs.FileMode` bits, which restic stores as a node's mode.
const GO_SETUID: u32 = 1 << 23;
const GO_SETGID: u32 = 1 << 22;
const GO_STICKY: u32 = 1 << 20;

/// The POSIX permission bits (with set-id and sticky) of a node.
pub(crate) fn posix_mode(node: &Node) -> u32 {
    let go = node
        .meta
        .mode
        .unwrap_or(if node.is_dir() { 0o755 } else { 0o644 });
    let mut mode = go & 0o777;
    if go & GO_SETUID != 0 {
        mode |= 0o4000;
    }
    if go & GO_SETGID != 0 {
        mode |= 0o2000;
    }
    if go & GO_STICKY != 0 {
        mode |= 0o1000;
    }
    mode
}

fn header_for(node: &Node, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(posix_mode(node));
    h.set_uid(node.meta.uid.unwrap_or(0).into());
    h.set_gid(node.meta.gid.unwrap_or(0).into());
    // The snapshot's root has no times of its own: it gets the time of the restore.
    let mtime = node.meta.mtime.as_ref().map_or_else(
        || rustic_core::jiff::Timestamp::now().as_second().max(0) as u64,
        |t| t.as_second().max(0) as u64,
    );
    h.set_mtime(mtime);
    h
}

/// A file's content, read from the repository a piece at a time.
struct Content<'a, S: IndexedFull> {
    repo: &'a Repository<S>,
    file: rustic_core::vfs::OpenFile,
    offset: usize,
    size: usize,
    meter: &'a Meter,
}

impl<S: IndexedFull> Read for Content<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.offset >= self.size {
            return Ok(0);
        }
        let want = buf.len().min(self.size - self.offset).min(4 << 20);
        let bytes = self
            .repo
            .read_file_at(&self.file, self.offset, want)
            .map_err(|e| io::Error::other(e.display_log()))?;
        if bytes.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the snapshot holds less data than the file's size",
            ));
        }
        let n = bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        self.offset += n;
        self.meter.add(n as u64);
        Ok(n)
    }
}

/// Write the tree of `snapshot` below `subpath` (e.g. `/workspace`) as a tar stream whose
/// paths start with `prefix` (e.g. `workspace`). Returns the number of entries written.
pub(crate) fn write_tar<S: IndexedFull>(
    repo: &Repository<S>,
    snapshot: &rustic_core::repofile::SnapshotFile,
    subpath: &str,
    prefix: &Path,
    out: impl Write,
    meter: &Meter,
) -> Result<u64, BackupError> {
    let node = repo
        .node_from_snapshot_and_path(snapshot, subpath)
        .map_err(|e| BackupError::classify(&e))?;
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    let mut n = 0u64;
    // The folder itself first, with its own mode and owner.
    {
        let mut h = header_for(&node, tar::EntryType::Directory, 0);
        tar.append_data(&mut h, prefix, io::empty())
            .map_err(BackupError::Io)?;
        n += 1;
    }
    let entries = repo
        .ls(&node, &LsOptions::default())
        .map_err(|e| BackupError::classify(&e))?;
    for item in entries {
        let (path, node) = item.map_err(|e| BackupError::classify(&e))?;
        let path = prefix.join(&path);
        match &node.node_type {
            NodeType::Dir => {
                let mut h = header_for(&node, tar::EntryType::Directory, 0);
                tar.append_data(&mut h, &path, io::empty())
                    .map_err(BackupError::Io)?;
            }
            NodeType::File => {
                let size = node.meta.size;
                let mut h = header_for(&node, tar::EntryType::Regular, size);
                let file = repo
                    .open_file(&node)
                    .map_err(|e| BackupError::classify(&e))?;
                let content = Content {
                    repo,
                    file,
                    offset: 0,
                    size: size as usize,
                    meter,
                };
                tar.append_data(&mut h, &path, content)
                    .map_err(BackupError::Io)?;
            }
            NodeType::Symlink { .. } => {
                let target = node.node_type.to_link().to_owned();
                let mut h = header_for(&node, tar::EntryType::Symlink, 0);
                tar.append_link(&mut h, &path, &target)
                    .map_err(BackupError::Io)?;
            }
            NodeType::Fifo => {
                let mut h = header_for(&node, tar::EntryType::Fifo, 0);
                tar.append_data(&mut h, &path, io::empty())
                    .map_err(BackupError::Io)?;
            }
            NodeType::Dev { .. } | NodeType::Chardev { .. } | NodeType::Socket => continue,
        }
        n += 1;
    }
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(BackupError::Io)?;
    Ok(n)
}
