//! File operations behind the daemon's Files API, confined to one root directory (the
//! workspace volume, `/workspace`).
//!
//! The daemon runs as root while agents (uid 1000) own and may change everything under the
//! root at any moment, so checking a path string and then handing it to `std::fs` is not
//! enough: between the check and the use, an agent can swap a directory for a symlink to
//! `/etc`. Every operation here therefore walks from an open descriptor of the root one
//! component at a time (`openat` with `O_NOFOLLOW`), follows symlinks itself and only while
//! they stay inside the root, and then acts on the last component through its parent's
//! descriptor (`*at` calls). A component swapped for a symlink during the walk makes the
//! operation fail instead of escaping. Archives (`tar`) are written and extracted the same
//! way, never through a symlink, so an archive cannot place `link -> /etc` and then write
//! `link/passwd`.
//!
//! Client paths are either absolute (inside the root: `/workspace/proj/a.txt`) or relative
//! to a base directory inside the root (the project folder) or to the root itself. `..` is
//! refused outright: nothing a client needs requires it, and refusing it is simpler to trust
//! than normalizing it.
//!
//! Everything is synchronous: the server calls it inside `spawn_blocking`.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use claude_vm_protocol::api::{FileInfo, FileKind};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags};

/// Symlinks followed while resolving one path before giving up (the kernel's own limit).
const MAX_SYMLINKS: u32 = 40;

/// Default permissions of a file written without an explicit mode.
const DEFAULT_FILE_MODE: u32 = 0o644;

/// Permissions of directories created here.
const DIR_MODE: u32 = 0o755;

/// What went wrong with a file operation; [`FileError::status`] gives the HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The path, or a symlink on the way, leads outside the root; also a symlink found where
    /// none may be followed (archive extraction, or one that appeared during the operation).
    #[error("path is outside the workspace: {path}")]
    OutsideRoot { path: String },
    #[error("no such file or directory: {path}")]
    NotFound { path: String },
    #[error("invalid path {path:?}: {why}")]
    InvalidPath { path: String, why: &'static str },
    #[error("already exists: {path}")]
    AlreadyExists { path: String },
    #[error("not a directory: {path}")]
    NotADirectory { path: String },
    #[error("is a directory: {path}")]
    IsADirectory { path: String },
    #[error("directory not empty: {path}")]
    DirectoryNotEmpty { path: String },
    /// The tar stream could not be read (corrupt, truncated, or the input failed).
    #[error("invalid archive: {why}")]
    InvalidArchive { why: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl FileError {
    /// HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            FileError::InvalidPath { .. }
            | FileError::InvalidArchive { .. }
            | FileError::NotADirectory { .. }
            | FileError::IsADirectory { .. } => 400,
            FileError::OutsideRoot { .. } => 403,
            FileError::NotFound { .. } => 404,
            FileError::AlreadyExists { .. } | FileError::DirectoryNotEmpty { .. } => 409,
            FileError::Io { .. } => 500,
        }
    }

    fn errno(errno: Errno, path: &str) -> FileError {
        let path = path.to_owned();
        match errno {
            Errno::ENOENT => FileError::NotFound { path },
            Errno::EEXIST => FileError::AlreadyExists { path },
            Errno::ENOTDIR => FileError::NotADirectory { path },
            Errno::EISDIR => FileError::IsADirectory { path },
            Errno::ENOTEMPTY => FileError::DirectoryNotEmpty { path },
            // Only `O_NOFOLLOW` opens fail with ELOOP here: a symlink where none is followed.
            Errno::ELOOP => FileError::OutsideRoot { path },
            Errno::ENAMETOOLONG => FileError::InvalidPath {
                path,
                why: "name too long",
            },
            e => FileError::Io {
                path,
                source: e.into(),
            },
        }
    }

    fn io(source: io::Error, path: &str) -> FileError {
        match source.raw_os_error() {
            Some(n) => FileError::errno(Errno::from_raw(n), path),
            None => FileError::Io {
                path: path.to_owned(),
                source,
            },
        }
    }
}

impl From<&FileError> for claude_vm_protocol::api::ApiError {
    fn from(e: &FileError) -> Self {
        claude_vm_protocol::api::ApiError::new(e.to_string())
    }
}

/// Attach the client's path to a system call's error.
trait At<T> {
    fn at(self, path: &str) -> Result<T, FileError>;
}

impl<T> At<T> for nix::Result<T> {
    fn at(self, path: &str) -> Result<T, FileError> {
        self.map_err(|e| FileError::errno(e, path))
    }
}

impl<T> At<T> for io::Result<T> {
    fn at(self, path: &str) -> Result<T, FileError> {
        self.map_err(|e| FileError::io(e, path))
    }
}

/// The directory every operation is confined to.
#[derive(Debug, Clone)]
pub struct Root {
    /// Canonical: no symlinks, absolute.
    root: PathBuf,
    /// As given (made absolute): absolute client paths may use either spelling.
    given: PathBuf,
}

/// How [`Root::walk`] treats the path.
#[derive(Debug, Clone, Copy)]
struct Walk {
    /// Follow a symlink in the last component (`stat` vs `lstat`).
    follow_last: bool,
    /// Create missing intermediate directories (owned by `owner`).
    create_parents: bool,
    owner: Option<(u32, u32)>,
}

impl Walk {
    const LSTAT: Walk = Walk {
        follow_last: false,
        create_parents: false,
        owner: None,
    };
    const FOLLOW: Walk = Walk {
        follow_last: true,
        create_parents: false,
        owner: None,
    };
}

/// A resolved path: the open directory holding the entry, and the entry's name in it.
struct Found {
    /// The directory holding the entry; the root itself when `name` is `None`.
    dir: OwnedFd,
    /// Components of `dir` relative to the root (no symlinks).
    dir_rel: Vec<OsString>,
    /// Last component; `None` when the path is the root itself.
    name: Option<OsString>,
    /// `lstat` of the entry (`fstat` of the root); `None` when it does not exist.
    stat: Option<FileStat>,
    /// The path as the client sent it, for messages.
    shown: String,
}

impl Found {
    fn rel(&self) -> Vec<OsString> {
        let mut rel = self.dir_rel.clone();
        rel.extend(self.name.clone());
        rel
    }

    fn kind(&self) -> Option<FileKind> {
        self.stat.as_ref().map(kind)
    }

    fn not_found(&self) -> FileError {
        FileError::NotFound {
            path: self.shown.clone(),
        }
    }

    /// A new descriptor for the entry, which must be a directory.
    fn open_dir(&self) -> Result<OwnedFd, FileError> {
        let name = self.name.as_deref().unwrap_or(OsStr::new("."));
        open_dir_at(&self.dir, name).at(&self.shown)
    }
}

impl Root {
    /// `path` must be an existing directory.
    pub fn new(path: impl AsRef<Path>) -> io::Result<Root> {
        let given = std::path::absolute(path.as_ref())?;
        let root = std::fs::canonicalize(&given)?;
        if !std::fs::metadata(&root)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(Root { root, given })
    }

    /// The canonical root directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Where `requested` is, as an absolute path inside the root, checked now: intermediate
    /// symlinks are followed (and must stay inside the root), a symlink in the last component
    /// is kept (`lstat` semantics). The entry itself need not exist, but its parent must.
    ///
    /// The answer is only true at the time of the call: the operations of [`Root`] do not
    /// go through it and are safe against concurrent changes; code that opens the returned
    /// path by name is not.
    pub fn resolve(&self, requested: &str, base: Option<&str>) -> Result<PathBuf, FileError> {
        let found = self.walk(requested, base, Walk::LSTAT)?;
        Ok(self.root.join(rel_pathbuf(&found.rel())))
    }

    /// Like [`Root::resolve`], but a symlink in the last component is followed too.
    pub fn resolve_follow(
        &self,
        requested: &str,
        base: Option<&str>,
    ) -> Result<PathBuf, FileError> {
        let found = self.walk(requested, base, Walk::FOLLOW)?;
        Ok(self.root.join(rel_pathbuf(&found.rel())))
    }

    /// Metadata of an entry; `follow` follows a symlink in the last component (the answer
    /// then describes, and names, the target).
    pub fn stat(
        &self,
        path: &str,
        base: Option<&str>,
        follow: bool,
    ) -> Result<FileInfo, FileError> {
        let walk = if follow { Walk::FOLLOW } else { Walk::LSTAT };
        let found = self.walk(path, base, walk)?;
        if found.stat.is_none() {
            return Err(found.not_found());
        }
        info_of(&found)
    }

    /// Entries of a directory (a symlink to one inside the root is followed), sorted by name.
    /// Entries are described with `lstat`.
    pub fn list(&self, path: &str, base: Option<&str>) -> Result<Vec<FileInfo>, FileError> {
        let found = self.walk(path, base, Walk::FOLLOW)?;
        match found.kind() {
            None => return Err(found.not_found()),
            Some(FileKind::Dir) => {}
            Some(_) => {
                return Err(FileError::NotADirectory {
                    path: found.shown.clone(),
                });
            }
        }
        let dir = found.open_dir()?;
        let rel = found.rel();
        let mut out = Vec::new();
        for name in read_names(&dir).at(&found.shown)? {
            let st = match fstatat_nofollow(&dir, &name) {
                Ok(st) => st,
                // Removed since the directory was read.
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(FileError::errno(e, &found.shown)),
            };
            let target = if kind(&st) == FileKind::Symlink {
                nix::fcntl::readlinkat(&dir, name.as_os_str()).ok()
            } else {
                None
            };
            let mut entry_rel = rel.clone();
            entry_rel.push(name);
            out.push(file_info(&entry_rel, &st, target.as_deref()));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Open a regular file for reading (a symlink to one inside the root is followed).
    pub fn open_read(&self, path: &str, base: Option<&str>) -> Result<(File, FileInfo), FileError> {
        self.open_read_walk(path, base, Walk::FOLLOW)
    }

    /// Open a regular file for reading; a symlink in the last component is refused, not
    /// followed (what a backup reads is the entry its scan listed).
    pub fn open_read_nofollow(&self, path: &str) -> Result<(File, FileInfo), FileError> {
        self.open_read_walk(path, None, Walk::LSTAT)
    }

    fn open_read_walk(
        &self,
        path: &str,
        base: Option<&str>,
        walk: Walk,
    ) -> Result<(File, FileInfo), FileError> {
        let found = self.walk(path, base, walk)?;
        let shown = &found.shown;
        match found.kind() {
            None => return Err(found.not_found()),
            Some(FileKind::File) => {}
            Some(FileKind::Dir) => {
                return Err(FileError::IsADirectory {
                    path: shown.clone(),
                });
            }
            Some(_) => return Err(not_regular(shown)),
        }
        let name = found.name.as_deref().expect("the root is a directory");
        // Non-blocking so that a FIFO swapped in meanwhile cannot hang the open.
        let fd = nix::fcntl::openat(
            &found.dir,
            name,
            OFlag::O_RDONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_NOCTTY
                | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .at(shown)?;
        let st = nix::sys::stat::fstat(&fd).at(shown)?;
        if kind(&st) != FileKind::File {
            return Err(not_regular(shown));
        }
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::empty())).at(shown)?;
        Ok((File::from(fd), file_info(&found.rel(), &st, None)))
    }

    /// Replace (or create) a file with what `reader` yields, atomically: the data goes to a
    /// temporary file in the same directory, which is renamed over the target once complete.
    /// If `reader` fails, the previous file is left untouched.
    ///
    /// A symlink in the last component is followed when it leads inside the root (so the
    /// link's target is replaced); one leading outside is refused, dangling or not.
    /// `parents` creates missing directories (owned by `owner`). `mode` defaults to the
    /// replaced file's mode, else 0o644; `owner` (uid, gid) defaults to the replaced file's
    /// owner, else the daemon's user.
    pub fn write_atomic(
        &self,
        path: &str,
        base: Option<&str>,
        mode: Option<u32>,
        parents: bool,
        owner: Option<(u32, u32)>,
        mut reader: impl Read,
    ) -> Result<FileInfo, FileError> {
        let walk = Walk {
            follow_last: true,
            create_parents: parents,
            owner,
        };
        let found = self.walk(path, base, walk)?;
        let shown = found.shown.as_str();
        let Some(name) = found.name.as_deref() else {
            return Err(FileError::IsADirectory { path: shown.into() });
        };
        let existing = match &found.stat {
            Some(st) if kind(st) == FileKind::Dir => {
                return Err(FileError::IsADirectory { path: shown.into() });
            }
            Some(st) if kind(st) == FileKind::File => Some(st),
            _ => None,
        };
        let mode = mode
            .or(existing.map(|st| st.st_mode))
            .unwrap_or(DEFAULT_FILE_MODE)
            & 0o7777;
        let owner = owner.or(existing.map(|st| (st.st_uid, st.st_gid)));

        let (tmp, mut file) = create_temp(&found.dir).at(shown)?;
        let written = (|| -> Result<FileStat, FileError> {
            copy_with_writeback(&mut reader, &mut file).at(shown)?;
            if let Some((uid, gid)) = owner {
                nix::unistd::fchown(&file, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                    .at(shown)?;
            }
            // After chown, which may clear set-id bits.
            nix::sys::stat::fchmod(&file, Mode::from_bits_truncate(mode)).at(shown)?;
            file.sync_all().at(shown)?;
            let st = nix::sys::stat::fstat(&file).at(shown)?;
            nix::fcntl::renameat(&found.dir, tmp.as_os_str(), &found.dir, name).at(shown)?;
            Ok(st)
        })();
        match written {
            Ok(st) => {
                // Make the rename itself durable; the data already is.
                let _ = nix::unistd::fsync(&found.dir);
                Ok(file_info(&found.rel(), &st, None))
            }
            Err(e) => {
                let _ =
                    nix::unistd::unlinkat(&found.dir, tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
                Err(e)
            }
        }
    }

    /// Create a directory (mode 0o755, owned by `owner` when given). With `parents`, missing
    /// parents are created too and an existing directory is not an error (`mkdir -p`).
    pub fn mkdir(
        &self,
        path: &str,
        base: Option<&str>,
        parents: bool,
        owner: Option<(u32, u32)>,
    ) -> Result<FileInfo, FileError> {
        let walk = Walk {
            follow_last: false,
            create_parents: parents,
            owner,
        };
        let found = self.walk(path, base, walk)?;
        let shown = found.shown.as_str();
        let exists = || FileError::AlreadyExists { path: shown.into() };
        let Some(name) = found.name.as_deref() else {
            return if parents {
                info_of(&found)
            } else {
                Err(exists())
            };
        };
        match found.kind() {
            Some(FileKind::Dir) if parents => return info_of(&found),
            Some(_) => return Err(exists()),
            None => {}
        }
        match nix::sys::stat::mkdirat(&found.dir, name, Mode::from_bits_truncate(DIR_MODE)) {
            Ok(()) => chown_at(&found.dir, name, owner).at(shown)?,
            // Created meanwhile; fine for `mkdir -p` if it is a directory (checked below).
            Err(Errno::EEXIST) if parents => {}
            Err(e) => return Err(FileError::errno(e, shown)),
        }
        let st = fstatat_nofollow(&found.dir, name).at(shown)?;
        if kind(&st) != FileKind::Dir {
            return Err(exists());
        }
        Ok(file_info(&found.rel(), &st, None))
    }

    /// Remove a file, symlink (never its target) or directory; a non-empty directory only
    /// with `recursive`. The root itself cannot be removed.
    pub fn remove(&self, path: &str, base: Option<&str>, recursive: bool) -> Result<(), FileError> {
        let found = self.walk(path, base, Walk::LSTAT)?;
        let shown = found.shown.as_str();
        let Some(name) = found.name.as_deref() else {
            return Err(FileError::InvalidPath {
                path: shown.into(),
                why: "refusing to remove the workspace root",
            });
        };
        match found.kind() {
            None => Err(found.not_found()),
            Some(FileKind::Dir) => {
                if recursive {
                    remove_contents(found.open_dir()?, shown)?;
                }
                nix::unistd::unlinkat(&found.dir, name, UnlinkatFlags::RemoveDir).at(shown)
            }
            Some(_) => {
                nix::unistd::unlinkat(&found.dir, name, UnlinkatFlags::NoRemoveDir).at(shown)
            }
        }
    }

    /// Rename `from` to `to` (both relative to `base` unless absolute), like rename(2):
    /// symlinks in either last component are renamed/replaced, not followed; an existing
    /// file is replaced, an empty directory may be replaced by a directory, a non-empty one
    /// never. Answers the new entry.
    pub fn rename(&self, from: &str, to: &str, base: Option<&str>) -> Result<FileInfo, FileError> {
        let src = self.walk(from, base, Walk::LSTAT)?;
        let dst = self.walk(to, base, Walk::LSTAT)?;
        let (Some(src_name), Some(dst_name)) = (src.name.as_deref(), dst.name.as_deref()) else {
            return Err(FileError::InvalidPath {
                path: if src.name.is_none() {
                    src.shown
                } else {
                    dst.shown
                },
                why: "refusing to move the workspace root",
            });
        };
        if src.stat.is_none() {
            return Err(src.not_found());
        }
        if let Err(e) = nix::fcntl::renameat(&src.dir, src_name, &dst.dir, dst_name) {
            return Err(match e {
                Errno::EINVAL => FileError::InvalidPath {
                    path: src.shown,
                    why: "cannot move a directory into itself",
                },
                Errno::EEXIST | Errno::ENOTEMPTY => {
                    FileError::DirectoryNotEmpty { path: dst.shown }
                }
                Errno::ENOTDIR | Errno::EISDIR => FileError::errno(e, &dst.shown),
                e => FileError::errno(e, &src.shown),
            });
        }
        let st = fstatat_nofollow(&dst.dir, dst_name).at(&dst.shown)?;
        let target = if kind(&st) == FileKind::Symlink {
            nix::fcntl::readlinkat(&dst.dir, dst_name).ok()
        } else {
            None
        };
        Ok(file_info(&dst.rel(), &st, target.as_deref()))
    }

    /// Write a tar of a file or directory tree to `out`. Entry names are relative to the
    /// parent of `path` (a directory `proj/src` gives `src`, `src/main.rs`, ...); archiving
    /// the root gives its children's names. Modes, mtimes and numeric owners are kept;
    /// symlinks are stored as symlinks, never followed (`path` itself included); sockets,
    /// FIFOs and devices are left out.
    pub fn write_archive(
        &self,
        path: &str,
        base: Option<&str>,
        out: impl Write,
    ) -> Result<(), FileError> {
        let found = self.walk(path, base, Walk::LSTAT)?;
        let shown = found.shown.as_str();
        let Some(st) = &found.stat else {
            return Err(found.not_found());
        };
        let mut builder = tar::Builder::new(out);
        // Directories being archived, innermost last: no recursion, so depth cannot
        // overflow the stack.
        let mut stack: Vec<Level> = Vec::new();
        match found.name.as_deref() {
            None => {
                let fd = found.open_dir()?;
                let names = sorted_names(&fd).at(shown)?;
                stack.push(Level {
                    fd,
                    prefix: PathBuf::new(),
                    names,
                });
            }
            Some(name) => {
                stack.extend(append_entry(
                    &mut builder,
                    &found.dir,
                    name,
                    Path::new(name),
                    st,
                    shown,
                )?);
            }
        }
        while let Some(level) = stack.last_mut() {
            let Some(name) = level.names.pop() else {
                stack.pop();
                continue;
            };
            let st = match fstatat_nofollow(&level.fd, &name) {
                Ok(st) => st,
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(FileError::errno(e, shown)),
            };
            let entry_path = level.prefix.join(&name);
            let next = append_entry(&mut builder, &level.fd, &name, &entry_path, &st, shown)?;
            stack.extend(next);
        }
        builder.finish().at(shown)?;
        Ok(())
    }

    /// Extract a tar into the existing directory `dest_dir` (a symlink to one inside the root
    /// is followed), answering how many entries were extracted.
    ///
    /// Entry names must be relative without `..`; no symlink is ever followed below
    /// `dest_dir`, whether an earlier entry or someone else placed it, so the archive cannot
    /// write outside it. Hard links must point at a regular file extracted below `dest_dir`.
    /// Existing files and symlinks are replaced, existing directories kept. Permission bits
    /// are kept (set-id and sticky bits dropped), as are mtimes; everything created is owned by
    /// `owner` when given (else the daemon's user). Devices, FIFOs and other special entries
    /// are skipped. Not transactional: on error, entries extracted so far stay.
    pub fn extract_archive(
        &self,
        dest_dir: &str,
        base: Option<&str>,
        input: impl Read,
        owner: Option<(u32, u32)>,
    ) -> Result<u64, FileError> {
        let found = self.walk(dest_dir, base, Walk::FOLLOW)?;
        match found.kind() {
            None => return Err(found.not_found()),
            Some(FileKind::Dir) => {}
            Some(_) => {
                return Err(FileError::NotADirectory {
                    path: found.shown.clone(),
                });
            }
        }
        let dest = found.open_dir()?;
        let bad = |e: io::Error| FileError::InvalidArchive { why: e.to_string() };
        let mut archive = tar::Archive::new(input);
        let mut count = 0u64;
        // Directory modes and mtimes are applied at the end: a read-only directory must still
        // receive its entries, and adding them would change its mtime.
        let mut dirs: Vec<(Vec<OsString>, u32, u64)> = Vec::new();
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let path = entry.path().map_err(bad)?.into_owned();
            let shown = path.to_string_lossy().into_owned();
            let comps = archive_components(&path).map_err(|why| FileError::InvalidPath {
                path: shown.clone(),
                why,
            })?;
            let Some((name, parents)) = comps.split_last() else {
                // `./`: the destination itself, left as it is.
                continue;
            };
            let name = name.as_os_str();
            let header = entry.header();
            let entry_type = header.entry_type();
            let mode = header.mode().map_err(bad)? & 0o777;
            let mtime = header.mtime().map_err(bad)?;
            let times = timespec(mtime);
            match entry_type {
                tar::EntryType::Directory => {
                    let dir = open_below(&dest, parents, Some(owner), &shown)?;
                    match fstatat_nofollow(&dir, name) {
                        Ok(st) if kind(&st) == FileKind::Dir => {}
                        Ok(_) => {
                            nix::unistd::unlinkat(&dir, name, UnlinkatFlags::NoRemoveDir)
                                .at(&shown)?;
                            mkdir_owned(&dir, name, owner, &shown)?;
                        }
                        Err(Errno::ENOENT) => mkdir_owned(&dir, name, owner, &shown)?,
                        Err(e) => return Err(FileError::errno(e, &shown)),
                    }
                    dirs.push((comps.clone(), mode, mtime));
                }
                tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse => {
                    let dir = open_below(&dest, parents, Some(owner), &shown)?;
                    make_room(&dir, name, &shown)?;
                    let fd = nix::fcntl::openat(
                        &dir,
                        name,
                        OFlag::O_WRONLY
                            | OFlag::O_CREAT
                            | OFlag::O_EXCL
                            | OFlag::O_NOFOLLOW
                            | OFlag::O_CLOEXEC,
                        Mode::from_bits_truncate(0o600),
                    )
                    .at(&shown)?;
                    let mut file = File::from(fd);
                    copy_entry(&mut entry, &mut file, &shown)?;
                    if let Some((uid, gid)) = owner {
                        nix::unistd::fchown(
                            &file,
                            Some(Uid::from_raw(uid)),
                            Some(Gid::from_raw(gid)),
                        )
                        .at(&shown)?;
                    }
                    nix::sys::stat::fchmod(&file, Mode::from_bits_truncate(mode)).at(&shown)?;
                    nix::sys::stat::futimens(&file, &times, &times).at(&shown)?;
                }
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name()
                        .map_err(bad)?
                        .filter(|t| !t.as_os_str().is_empty())
                        .ok_or_else(|| FileError::InvalidArchive {
                            why: format!("symlink {shown} has no target"),
                        })?
                        .into_owned();
                    let dir = open_below(&dest, parents, Some(owner), &shown)?;
                    make_room(&dir, name, &shown)?;
                    nix::unistd::symlinkat(target.as_os_str(), &dir, name).at(&shown)?;
                    chown_at(&dir, name, owner).at(&shown)?;
                    nix::sys::stat::utimensat(
                        &dir,
                        name,
                        &times,
                        &times,
                        UtimensatFlags::NoFollowSymlink,
                    )
                    .at(&shown)?;
                }
                tar::EntryType::Link => {
                    let target = entry
                        .link_name()
                        .map_err(bad)?
                        .ok_or_else(|| FileError::InvalidArchive {
                            why: format!("hard link {shown} has no target"),
                        })?
                        .into_owned();
                    let invalid = |why| FileError::InvalidPath {
                        path: shown.clone(),
                        why,
                    };
                    let tcomps = archive_components(&target)
                        .map_err(|_| invalid("hard link target must be inside the archive"))?;
                    let Some((tname, tparents)) = tcomps.split_last() else {
                        return Err(invalid("hard link to a directory"));
                    };
                    if tcomps == comps {
                        // A link to itself: nothing to do.
                        count += 1;
                        continue;
                    }
                    let tdir = open_below(&dest, tparents, None, &shown)?;
                    let st = fstatat_nofollow(&tdir, tname).at(&shown)?;
                    if kind(&st) != FileKind::File {
                        return Err(invalid("hard link to something other than a file"));
                    }
                    let dir = open_below(&dest, parents, Some(owner), &shown)?;
                    make_room(&dir, name, &shown)?;
                    // Without AT_SYMLINK_FOLLOW: should the target have been swapped for a
                    // symlink, the link is to the symlink, never to what it points at. The
                    // inode is not chowned: it is the target's.
                    nix::unistd::linkat(&tdir, tname.as_os_str(), &dir, name, AtFlags::empty())
                        .at(&shown)?;
                }
                other => {
                    tracing::debug!("skipping archive entry {shown} of type {other:?}");
                    continue;
                }
            }
            count += 1;
        }
        for (comps, mode, mtime) in dirs.iter().rev() {
            let shown = rel_string(comps);
            let Some((name, parents)) = comps.split_last() else {
                continue;
            };
            let dir = open_below(&dest, parents, None, &shown)?;
            let fd = open_dir_at(&dir, name).at(&shown)?;
            nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(*mode)).at(&shown)?;
            let times = timespec(*mtime);
            nix::sys::stat::futimens(&fd, &times, &times).at(&shown)?;
        }
        Ok(count)
    }

    /// Resolve a client path to the directory holding its last component, following
    /// symlinks only while they stay inside the root. See the module documentation.
    fn walk(&self, requested: &str, base: Option<&str>, walk: Walk) -> Result<Found, FileError> {
        let shown = match base {
            Some(base) if !requested.starts_with('/') => {
                format!("{}/{requested}", base.trim_end_matches('/'))
            }
            _ => requested.to_owned(),
        };
        let comps = self.request_components(requested, base, &shown)?;
        let outside = || FileError::OutsideRoot {
            path: shown.clone(),
        };

        let root = nix::fcntl::open(
            &self.root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .at(&shown)?;
        let mut pending: VecDeque<OsString> = comps.into();
        let mut cur_rel: Vec<OsString> = Vec::new();
        let mut cur = open_dir_at(&root, OsStr::new(".")).at(&shown)?;
        let mut links = 0;
        while let Some(comp) = pending.pop_front() {
            // Only symlink targets bring `..`; `cur_rel` has no symlinks, so going up
            // lexically is what the kernel would do.
            if comp == ".." {
                if cur_rel.pop().is_none() {
                    return Err(outside());
                }
                cur = open_rel(&root, &cur_rel).at(&shown)?;
                continue;
            }
            let last = pending.is_empty();
            match fstatat_nofollow(&cur, &comp) {
                Ok(st) if kind(&st) == FileKind::Symlink && (!last || walk.follow_last) => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(FileError::InvalidPath {
                            path: shown,
                            why: "too many levels of symbolic links",
                        });
                    }
                    let target = nix::fcntl::readlinkat(&cur, comp.as_os_str()).at(&shown)?;
                    if target.is_empty() {
                        // What the kernel makes of an empty target.
                        return Err(FileError::NotFound { path: shown });
                    }
                    let (absolute, target) = self.link_components(&target).ok_or_else(outside)?;
                    if absolute {
                        cur_rel.clear();
                        cur = open_dir_at(&root, OsStr::new(".")).at(&shown)?;
                    }
                    for t in target.into_iter().rev() {
                        pending.push_front(t);
                    }
                }
                Ok(st) if last => {
                    return Ok(Found {
                        dir: cur,
                        dir_rel: cur_rel,
                        name: Some(comp),
                        stat: Some(st),
                        shown,
                    });
                }
                Ok(st) if kind(&st) == FileKind::Dir => {
                    cur = open_dir_at(&cur, &comp).at(&shown)?;
                    cur_rel.push(comp);
                }
                Ok(_) => return Err(FileError::NotADirectory { path: shown }),
                Err(Errno::ENOENT) if last => {
                    return Ok(Found {
                        dir: cur,
                        dir_rel: cur_rel,
                        name: Some(comp),
                        stat: None,
                        shown,
                    });
                }
                Err(Errno::ENOENT) if walk.create_parents => {
                    match nix::sys::stat::mkdirat(
                        &cur,
                        comp.as_os_str(),
                        Mode::from_bits_truncate(DIR_MODE),
                    ) {
                        Ok(()) => chown_at(&cur, &comp, walk.owner).at(&shown)?,
                        Err(Errno::EEXIST) => {}
                        Err(e) => return Err(FileError::errno(e, &shown)),
                    }
                    cur = open_dir_at(&cur, &comp).at(&shown)?;
                    cur_rel.push(comp);
                }
                Err(e) => return Err(FileError::errno(e, &shown)),
            }
        }
        // Every component was a directory, or a symlink leading to one: the answer is
        // `cur_rel` itself.
        match cur_rel.pop() {
            None => {
                let st = nix::sys::stat::fstat(&cur).at(&shown)?;
                Ok(Found {
                    dir: cur,
                    dir_rel: cur_rel,
                    name: None,
                    stat: Some(st),
                    shown,
                })
            }
            Some(name) => {
                let dir = open_rel(&root, &cur_rel).at(&shown)?;
                let st = fstatat_nofollow(&dir, &name).at(&shown)?;
                Ok(Found {
                    dir,
                    dir_rel: cur_rel,
                    name: Some(name),
                    stat: Some(st),
                    shown,
                })
            }
        }
    }

    /// The plain names of a client path relative to the root, `base` included.
    fn request_components(
        &self,
        requested: &str,
        base: Option<&str>,
        shown: &str,
    ) -> Result<Vec<OsString>, FileError> {
        let (absolute, mut comps) = self.lexical(requested, shown)?;
        if let (false, Some(base)) = (absolute, base) {
            let (_, mut all) = self.lexical(base, shown)?;
            all.append(&mut comps);
            comps = all;
        }
        Ok(comps)
    }

    /// Check one client path: not empty, no NUL, no `..`, inside the root if absolute.
    fn lexical(&self, p: &str, shown: &str) -> Result<(bool, Vec<OsString>), FileError> {
        let invalid = |why| FileError::InvalidPath {
            path: shown.to_owned(),
            why,
        };
        if p.is_empty() {
            return Err(invalid("empty path"));
        }
        if p.contains('\0') {
            return Err(invalid("NUL byte in path"));
        }
        let path = Path::new(p);
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(invalid("`..` is not allowed"));
        }
        let absolute = path.is_absolute();
        let rest = if absolute {
            self.strip_root(path)
                .ok_or_else(|| FileError::OutsideRoot {
                    path: shown.to_owned(),
                })?
        } else {
            path
        };
        let comps = rest
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_owned()),
                _ => None,
            })
            .collect();
        Ok((absolute, comps))
    }

    /// An absolute path's part below the root, either spelling; component-wise, so that
    /// `/workspace-evil` is not below `/workspace`.
    fn strip_root<'p>(&self, path: &'p Path) -> Option<&'p Path> {
        path.strip_prefix(&self.root)
            .or_else(|_| path.strip_prefix(&self.given))
            .ok()
    }

    /// A symlink target as components (`..` kept); `None` if absolute outside the root.
    fn link_components(&self, target: &OsStr) -> Option<(bool, Vec<OsString>)> {
        let path = Path::new(target);
        let absolute = path.is_absolute();
        let rest = if absolute {
            self.strip_root(path)?
        } else {
            path
        };
        let comps = rest
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_owned()),
                Component::ParentDir => Some(OsString::from("..")),
                _ => None,
            })
            .collect();
        Some((absolute, comps))
    }
}

/// One directory being archived.
struct Level {
    fd: OwnedFd,
    /// Its name in the archive.
    prefix: PathBuf,
    /// Entries still to archive, in reverse order (popped from the end).
    names: Vec<OsString>,
}

/// Append one entry; answers the directory to descend into, if it is one.
fn append_entry<W: Write>(
    builder: &mut tar::Builder<W>,
    dir: &OwnedFd,
    name: &OsStr,
    entry_path: &Path,
    st: &FileStat,
    shown: &str,
) -> Result<Option<Level>, FileError> {
    let mut header = tar::Header::new_gnu();
    header.set_mode(st.st_mode & 0o7777);
    header.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
    header.set_uid(st.st_uid.into());
    header.set_gid(st.st_gid.into());
    header.set_size(0);
    match kind(st) {
        FileKind::File => {
            let fd = match nix::fcntl::openat(
                dir,
                name,
                OFlag::O_RDONLY
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_NONBLOCK
                    | OFlag::O_NOCTTY
                    | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                // Removed or swapped for a symlink since it was listed: leave it out.
                Err(Errno::ENOENT | Errno::ELOOP) => return Ok(None),
                Err(e) => return Err(FileError::errno(e, shown)),
            };
            let st = nix::sys::stat::fstat(&fd).at(shown)?;
            if kind(&st) != FileKind::File {
                return Ok(None);
            }
            let size = u64::try_from(st.st_size).unwrap_or(0);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(st.st_mode & 0o7777);
            header.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
            header.set_size(size);
            let data = Exact {
                inner: File::from(fd),
                left: size,
            };
            builder
                .append_data(&mut header, entry_path, data)
                .at(shown)?;
            Ok(None)
        }
        FileKind::Dir => {
            let fd = match open_dir_at(dir, name) {
                Ok(fd) => fd,
                Err(Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR) => return Ok(None),
                Err(e) => return Err(FileError::errno(e, shown)),
            };
            header.set_entry_type(tar::EntryType::Directory);
            builder
                .append_data(&mut header, entry_path, io::empty())
                .at(shown)?;
            let names = sorted_names(&fd).at(shown)?;
            Ok(Some(Level {
                fd,
                prefix: entry_path.to_owned(),
                names,
            }))
        }
        FileKind::Symlink => {
            let target = match nix::fcntl::readlinkat(dir, name) {
                Ok(t) => t,
                Err(Errno::ENOENT | Errno::EINVAL) => return Ok(None),
                Err(e) => return Err(FileError::errno(e, shown)),
            };
            header.set_entry_type(tar::EntryType::Symlink);
            builder
                .append_link(&mut header, entry_path, Path::new(&target))
                .at(shown)?;
            Ok(None)
        }
        FileKind::Other => Ok(None),
    }
}

/// Exactly `left` bytes of `inner`: zeros if it shrank while being read, so the archive
/// stays consistent with the size already written in the header.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if max == 0 {
            return Ok(0);
        }
        let mut n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            buf[..max].fill(0);
            n = max;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Copy an archive entry's data to a file, telling a bad archive from a failed write.
fn copy_entry(entry: &mut impl Read, file: &mut File, shown: &str) -> Result<(), FileError> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(FileError::InvalidArchive {
                    why: format!("{shown}: {e}"),
                });
            }
        };
        file.write_all(&buf[..n]).at(shown)?;
    }
}

/// Plain names of an archive path; `..` and absolute paths are refused.
fn archive_components(path: &Path) -> Result<Vec<OsString>, &'static str> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n.to_owned()),
            Component::CurDir => {}
            Component::ParentDir => return Err("`..` in archive entry"),
            Component::RootDir | Component::Prefix(_) => return Err("absolute archive entry"),
        }
    }
    Ok(out)
}

/// Open the directory `comps` below `dest` without following any symlink. With
/// `create: Some(owner)`, missing directories are created (owned by `owner`).
fn open_below(
    dest: &OwnedFd,
    comps: &[OsString],
    create: Option<Option<(u32, u32)>>,
    shown: &str,
) -> Result<OwnedFd, FileError> {
    let mut fd = open_dir_at(dest, OsStr::new(".")).at(shown)?;
    for c in comps {
        fd = match open_dir_at(&fd, c) {
            Ok(next) => next,
            Err(Errno::ENOENT) if create.is_some() => {
                match nix::sys::stat::mkdirat(
                    &fd,
                    c.as_os_str(),
                    Mode::from_bits_truncate(DIR_MODE),
                ) {
                    Ok(()) => chown_at(&fd, c, create.flatten()).at(shown)?,
                    Err(Errno::EEXIST) => {}
                    Err(e) => return Err(FileError::errno(e, shown)),
                }
                open_dir_at(&fd, c).at(shown)?
            }
            Err(e @ (Errno::ELOOP | Errno::ENOTDIR)) => {
                let symlink =
                    fstatat_nofollow(&fd, c).is_ok_and(|st| kind(&st) == FileKind::Symlink);
                return Err(if symlink {
                    FileError::OutsideRoot {
                        path: shown.to_owned(),
                    }
                } else {
                    FileError::errno(e, shown)
                });
            }
            Err(e) => return Err(FileError::errno(e, shown)),
        };
    }
    Ok(fd)
}

fn mkdir_owned(
    dir: &OwnedFd,
    name: &OsStr,
    owner: Option<(u32, u32)>,
    shown: &str,
) -> Result<(), FileError> {
    nix::sys::stat::mkdirat(dir, name, Mode::from_bits_truncate(DIR_MODE)).at(shown)?;
    chown_at(dir, name, owner).at(shown)
}

/// Clear the way for a new non-directory entry: an existing file or symlink goes, a
/// directory stays (and is an error).
fn make_room(dir: &OwnedFd, name: &OsStr, shown: &str) -> Result<(), FileError> {
    match fstatat_nofollow(dir, name) {
        Ok(st) if kind(&st) == FileKind::Dir => Err(FileError::IsADirectory {
            path: shown.to_owned(),
        }),
        Ok(_) => match nix::unistd::unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(FileError::errno(e, shown)),
        },
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(FileError::errno(e, shown)),
    }
}

/// Empty a directory, depth first, without recursion and without following symlinks.
fn remove_contents(top: OwnedFd, shown: &str) -> Result<(), FileError> {
    struct Dir {
        fd: OwnedFd,
        names: Vec<OsString>,
        /// Its name in the parent directory; `None` for `top`, which stays.
        name: Option<OsString>,
    }
    let names = read_names(&top).at(shown)?;
    let mut stack = vec![Dir {
        fd: top,
        names,
        name: None,
    }];
    while let Some(level) = stack.last_mut() {
        if let Some(name) = level.names.pop() {
            match fstatat_nofollow(&level.fd, &name) {
                Ok(st) if kind(&st) == FileKind::Dir => {
                    let fd = open_dir_at(&level.fd, &name).at(shown)?;
                    let names = read_names(&fd).at(shown)?;
                    stack.push(Dir {
                        fd,
                        names,
                        name: Some(name),
                    });
                }
                Ok(_) => match nix::unistd::unlinkat(
                    &level.fd,
                    name.as_os_str(),
                    UnlinkatFlags::NoRemoveDir,
                ) {
                    Ok(()) | Err(Errno::ENOENT) => {}
                    Err(e) => return Err(FileError::errno(e, shown)),
                },
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(FileError::errno(e, shown)),
            }
        } else {
            let done = stack.pop().expect("not empty");
            drop(done.fd);
            if let (Some(name), Some(parent)) = (done.name, stack.last()) {
                match nix::unistd::unlinkat(&parent.fd, name.as_os_str(), UnlinkatFlags::RemoveDir)
                {
                    Ok(()) | Err(Errno::ENOENT) => {}
                    Err(e) => return Err(FileError::errno(e, shown)),
                }
            }
        }
    }
    Ok(())
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A new, empty, private file in `dir` for [`Root::write_atomic`].
fn create_temp(dir: &OwnedFd) -> nix::Result<(OsString, File)> {
    for _ in 0..64 {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = OsString::from(format!(".claude-vm-tmp.{}.{n}", std::process::id()));
        match nix::fcntl::openat(
            dir,
            name.as_os_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        ) {
            Ok(fd) => return Ok((name, File::from(fd))),
            Err(Errno::EEXIST) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Errno::EEXIST)
}

/// Open a directory entry of `dir` as a directory, refusing a symlink.
fn open_dir_at(dir: impl AsFd, name: &OsStr) -> nix::Result<OwnedFd> {
    nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Open `comps` (known to be directories, no symlinks) below `root`.
fn open_rel(root: &OwnedFd, comps: &[OsString]) -> nix::Result<OwnedFd> {
    let mut fd = open_dir_at(root, OsStr::new("."))?;
    for c in comps {
        fd = open_dir_at(&fd, c)?;
    }
    Ok(fd)
}

fn fstatat_nofollow(dir: impl AsFd, name: &OsStr) -> nix::Result<FileStat> {
    nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
}

fn chown_at(dir: impl AsFd, name: &OsStr, owner: Option<(u32, u32)>) -> nix::Result<()> {
    let Some((uid, gid)) = owner else {
        return Ok(());
    };
    nix::unistd::fchownat(
        dir,
        name,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
}

/// Names in an open directory (without `.` and `..`). Read through `/proc/self/fd`, which
/// reopens the very directory the descriptor refers to, whatever happened to its path.
fn read_names(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect()
}

/// Names in reverse order, to be popped in order.
fn sorted_names(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    let mut names = read_names(dir)?;
    names.sort_by(|a, b| b.as_bytes().cmp(a.as_bytes()));
    Ok(names)
}

fn kind(st: &FileStat) -> FileKind {
    match st.st_mode & nix::libc::S_IFMT {
        nix::libc::S_IFREG => FileKind::File,
        nix::libc::S_IFDIR => FileKind::Dir,
        nix::libc::S_IFLNK => FileKind::Symlink,
        _ => FileKind::Other,
    }
}

fn not_regular(shown: &str) -> FileError {
    FileError::InvalidPath {
        path: shown.to_owned(),
        why: "not a regular file",
    }
}

fn timespec(secs: u64) -> TimeSpec {
    TimeSpec::from(std::time::Duration::from_secs(secs))
}

fn info_of(found: &Found) -> Result<FileInfo, FileError> {
    let st = found.stat.as_ref().ok_or_else(|| found.not_found())?;
    let target = match (&found.name, kind(st)) {
        (Some(name), FileKind::Symlink) => {
            Some(nix::fcntl::readlinkat(&found.dir, name.as_os_str()).at(&found.shown)?)
        }
        _ => None,
    };
    Ok(file_info(&found.rel(), st, target.as_deref()))
}

fn file_info(rel: &[OsString], st: &FileStat, link_target: Option<&OsStr>) -> FileInfo {
    FileInfo {
        path: rel_string(rel),
        name: rel
            .last()
            .map_or_else(|| ".".to_owned(), |n| n.to_string_lossy().into_owned()),
        kind: kind(st),
        size: u64::try_from(st.st_size).unwrap_or(0),
        mode: st.st_mode & 0o7777,
        mtime: st.st_mtime,
        link_target: link_target.map(|t| t.to_string_lossy().into_owned()),
    }
}

/// `/`-separated path relative to the root; `.` for the root.
fn rel_string(rel: &[OsString]) -> String {
    if rel.is_empty() {
        return ".".to_owned();
    }
    rel.iter()
        .map(|c| c.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn rel_pathbuf(rel: &[OsString]) -> PathBuf {
    rel.iter().collect()
}

/// `io::copy` into a file about to be fsynced, in 1 MiB writes (`io::copy` uses 8 KiB), with
/// writeback of what is written started every 8 MiB so the final fsync only waits for the
/// last of it (a 100 MB upload: 80 ms of fsync down to a few).
fn copy_with_writeback(reader: &mut impl Read, file: &mut File) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    const FLUSH_EVERY: u64 = 8 << 20;
    let mut buf = vec![0u8; 1 << 20];
    let (mut written, mut flushed) = (0u64, 0u64);
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(written),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        file.write_all(&buf[..n])?;
        written += n as u64;
        if written - flushed >= FLUSH_EVERY {
            // SAFETY: a plain syscall on an open descriptor; failing only loses the head
            // start (sync_all still makes the data durable).
            unsafe {
                libc::sync_file_range(
                    file.as_raw_fd(),
                    flushed as libc::off64_t,
                    (written - flushed) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            flushed = written;
        }
    }
}
