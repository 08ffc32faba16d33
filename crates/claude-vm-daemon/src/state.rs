//! The daemon's state folder and the rules that keep it root's.
//!
//! The workspace volume is shared with the agents (uid 1000), and anything an agent can
//! write is hostile input to the root daemon. So:
//!
//! - the volume's root (`/workspace`) belongs to root, group agent, mode `1775`: agents can
//!   create files and folders next to the project, but the sticky bit stops them from
//!   renaming or removing anything they do not own — the state folder above all;
//! - the state folder (`/workspace/.claude-vm`) is used only after it is proven to be a real
//!   folder (not a symlink) owned by the daemon's user and writable by nobody else; one that
//!   is not (left over from a time the agent could rename it) is moved aside, never used;
//! - files in it are opened with `O_NOFOLLOW`, and the folders the control side copied in are
//!   handed to the agent without following a single symlink;
//! - log lines never carry a raw control character, so a name an agent chose (newlines
//!   included) cannot forge a line of the log.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};

/// Mode of the volume's root: root-owned, group agent may create, sticky.
pub const ROOT_MODE: u32 = 0o1775;

/// How deep [`hand_over`] descends before giving up on a tree (a deeper tree is left as it
/// is rather than risking the daemon's stack).
const MAX_DEPTH: usize = 1024;

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Whether `meta` (from `lstat`) is a folder only the daemon's user controls.
fn trusted_dir(meta: &std::fs::Metadata) -> bool {
    meta.file_type().is_dir() && meta.uid() == euid() && meta.mode() & 0o022 == 0
}

/// Give the volume's root to root (group: the agent's), mode [`ROOT_MODE`]. Only as root.
pub fn secure_root(root: &Path, agent_gid: Gid) -> io::Result<()> {
    let dir = open_dir_nofollow(root)?;
    nix::unistd::fchown(&dir, Some(Uid::from_raw(0)), Some(agent_gid)).map_err(io::Error::from)?;
    nix::sys::stat::fchmod(&dir, Mode::from_bits_truncate(ROOT_MODE)).map_err(io::Error::from)?;
    Ok(())
}

/// Make sure `state_dir` exists and is trusted (see the module's rules). An untrusted one
/// is renamed to `<name>.untrusted-<time>` and a fresh one made; the names moved aside
/// are returned so the caller can log them.
pub fn ensure_state_dir(state_dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut moved = Vec::new();
    for attempt in 0..8 {
        match std::fs::DirBuilder::new().mode(0o700).create(state_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let meta = std::fs::symlink_metadata(state_dir)?;
        if trusted_dir(&meta) {
            // Tighten a folder that is ours but was left group/other-readable.
            if meta.mode() & 0o077 != 0 {
                std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o700))?;
            }
            return Ok(moved);
        }
        let aside = quarantine_name(state_dir, attempt);
        std::fs::rename(state_dir, &aside)?;
        moved.push(aside);
    }
    Err(io::Error::other(format!(
        "{} keeps being replaced by something the daemon cannot trust",
        state_dir.display()
    )))
}

fn quarantine_name(path: &Path, attempt: usize) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut name = path.file_name().unwrap_or(OsStr::new("state")).to_owned();
    let nonce: u32 = rand::random();
    name.push(format!(".untrusted-{secs}-{attempt}-{nonce:08x}"));
    path.with_file_name(name)
}

/// Create `dir` (and its parents inside a trusted state folder), owner-only.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    if !trusted_dir(&meta) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is not a private folder of the daemon", dir.display()),
        ));
    }
    Ok(())
}

/// Open a file of the state folder for appending, never through a symlink: what is at `path`
/// must be a regular file owned by the daemon's user (anything else is moved aside).
pub fn open_append_private(path: &Path) -> io::Result<File> {
    let open = || {
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc_flags(OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC))
            .open(path)
    };
    let f = match open() {
        Ok(f) => f,
        // ELOOP: a symlink. Move it aside and start a new file.
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) => {
            std::fs::rename(path, quarantine_name(path, 0))?;
            open()?
        }
        Err(e) => return Err(e),
    };
    let meta = f.metadata()?;
    if !meta.file_type().is_file() || meta.uid() != euid() || meta.nlink() != 1 {
        drop(f);
        std::fs::rename(path, quarantine_name(path, 1))?;
        return open();
    }
    Ok(f)
}

/// Replace a file of the state folder atomically, owner-only: the daemon's one atomic
/// writer (a random temporary name, so concurrent writers never share one; file and
/// folder synced; `atomic-write-file`).
pub fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    use atomic_write_file::AtomicWriteFile;
    use atomic_write_file::unix::OpenOptionsExt as _;
    let mut options = AtomicWriteFile::options();
    options
        .mode(0o600)
        .preserve_mode(false)
        .preserve_owner(false);
    let mut f = options.open(path)?;
    f.write_all(data)?;
    f.commit()
}

/// Read a small file of the state folder, never through a symlink.
pub fn read_private(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags(OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC))
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.file_type().is_file() || meta.uid() != euid() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is not a private file of the daemon", path.display()),
        ));
    }
    let mut out = Vec::new();
    Read::take(&mut f, 1 << 20).read_to_end(&mut out)?;
    Ok(out)
}

fn libc_flags(f: OFlag) -> i32 {
    f.bits()
}

fn open_dir_nofollow(path: &Path) -> io::Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// Whether `name` (one line of the control side's list) may be handed to the agent: one
/// plain path component, printable, and not the state folder or something beside it.
pub fn valid_handover_name(name: &str, state_name: &OsStr) -> bool {
    let mut comps = Path::new(name).components();
    let one = matches!(comps.next(), Some(Component::Normal(_))) && comps.next().is_none();
    one && !name.chars().any(char::is_control)
        && !name.as_bytes().starts_with(state_name.as_bytes())
}

/// Give the tree `root/name` to `uid:gid` without following any symlink: every entry is
/// changed with `fchownat(AT_SYMLINK_NOFOLLOW)` relative to a folder opened with
/// `O_NOFOLLOW`, so a symlink planted anywhere in the tree is changed itself, never its
/// target.
pub fn hand_over(root: &Path, name: &str, uid: Uid, gid: Gid) -> io::Result<()> {
    let root = open_dir_nofollow(root)?;
    chown_entry(root.as_fd(), OsStr::new(name), uid, gid, 0)
}

fn chown_entry(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    uid: Uid,
    gid: Gid,
    depth: usize,
) -> io::Result<()> {
    nix::unistd::fchownat(
        dir,
        name,
        Some(uid),
        Some(gid),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(io::Error::from)?;
    if depth >= MAX_DEPTH {
        return Ok(());
    }
    let child = match nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        // Not a folder (a file, or a symlink: ELOOP/ENOTDIR): nothing below it.
        Err(nix::errno::Errno::ENOTDIR | nix::errno::Errno::ELOOP) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let names: Vec<std::ffi::OsString> = {
        let dup = child.try_clone()?;
        let mut d = nix::dir::Dir::from_fd(dup).map_err(io::Error::from)?;
        d.iter()
            .filter_map(Result::ok)
            .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_owned())
            .filter(|n| n != "." && n != "..")
            .collect()
    };
    for n in names {
        // One bad entry (removed meanwhile) must not stop the rest.
        let _ = chown_entry(child.as_fd(), &n, uid, gid, depth + 1);
    }
    Ok(())
}

/// A log writer that escapes control characters inside a record (`\n` becomes `\\n`, ESC
/// `\\x1b`, ...), keeping only the newline that ends it: one record is always one line.
pub struct OneLine<W>(pub W);

impl<W: Write> Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (body, end) = match buf.split_last() {
            Some((b'\n', body)) => (body, true),
            _ => (buf, false),
        };
        let mut out = Vec::with_capacity(buf.len() + 8);
        for &b in body {
            match b {
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.push(b'\t'),
                0..=0x1f | 0x7f => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
                _ => out.push(b),
            }
        }
        if end {
            out.push(b'\n');
        }
        self.0.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_atomic_writes_never_share_a_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("activity.json");
        std::thread::scope(|s| {
            for t in 0..8u8 {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..50 {
                        write_private(path, &[b'a' + t; 4096]).unwrap();
                    }
                });
            }
        });
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data.len(), 4096);
        assert!(data.iter().all(|&b| b == data[0]), "a torn file");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_log_record_is_always_one_line() {
        let mut w = OneLine(Vec::new());
        w.write_all(b"ignoring folder \"a\nuid=0 $(id)\x1b[2J\"\n")
            .unwrap();
        assert_eq!(
            String::from_utf8(w.0).unwrap(),
            "ignoring folder \"a\\nuid=0 $(id)\\x1b[2J\"\n"
        );
    }

    #[test]
    fn handover_names_are_one_plain_component() {
        let state = OsStr::new(".claude-vm");
        for ok in ["proj", "my project", "p.git"] {
            assert!(valid_handover_name(ok, state), "{ok}");
        }
        for bad in [
            "",
            "..",
            ".",
            "/etc",
            "a/b",
            "../x",
            ".claude-vm",
            ".claude-vm.real",
            "a\nb",
            "a\rb",
        ] {
            assert!(!valid_handover_name(bad, state), "{bad:?}");
        }
    }

    #[test]
    fn an_untrusted_state_dir_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(".claude-vm");
        // A symlink where the folder should be.
        std::fs::create_dir(dir.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &state).unwrap();
        let moved = ensure_state_dir(&state).unwrap();
        assert_eq!(moved.len(), 1);
        let meta = std::fs::symlink_metadata(&state).unwrap();
        assert!(meta.is_dir() && meta.mode() & 0o777 == 0o700);
        // A world-writable folder.
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(ensure_state_dir(&state).unwrap().len(), 1);
        // A trusted one stays.
        std::fs::write(state.join("keep"), "x").unwrap();
        assert!(ensure_state_dir(&state).unwrap().is_empty());
        assert!(state.join("keep").exists());
    }

    #[test]
    fn a_planted_log_symlink_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("bashrc");
        std::fs::write(&target, "original\n").unwrap();
        let log = dir.path().join("daemon.log");
        std::os::unix::fs::symlink(&target, &log).unwrap();
        let mut f = open_append_private(&log).unwrap();
        f.write_all(b"line\n").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "original\n");
        assert!(
            !std::fs::symlink_metadata(&log)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        // A hard link to someone else's file is refused too.
        let other = dir.path().join("other");
        std::fs::write(&other, "o\n").unwrap();
        let log2 = dir.path().join("d2.log");
        std::fs::hard_link(&other, &log2).unwrap();
        open_append_private(&log2)
            .unwrap()
            .write_all(b"x\n")
            .unwrap();
        assert_eq!(std::fs::read_to_string(&other).unwrap(), "o\n");
    }

    #[test]
    fn handover_changes_symlinks_not_their_targets() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "secret").unwrap();
        let proj = dir.path().join("root/proj/sub");
        std::fs::create_dir_all(&proj).unwrap();
        std::fs::write(proj.join("f"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, proj.join("link")).unwrap();
        std::os::unix::fs::symlink(dir.path(), proj.join("dirlink")).unwrap();
        let (u, g) = (Uid::from_raw(4321), Gid::from_raw(4321));
        hand_over(&dir.path().join("root"), "proj", u, g).unwrap();
        assert_eq!(std::fs::metadata(proj.join("f")).unwrap().uid(), 4321);
        assert_eq!(
            std::fs::symlink_metadata(proj.join("link")).unwrap().uid(),
            4321
        );
        assert_eq!(std::fs::metadata(&outside).unwrap().uid(), 0);
        assert_eq!(std::fs::metadata(dir.path()).unwrap().uid(), 0);
    }
}
