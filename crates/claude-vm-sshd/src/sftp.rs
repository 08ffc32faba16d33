//! `claude-vm agent sftp-server`: an SFTP (v3) server on stdin/stdout, the `sftp`
//! subsystem of the embedded SSH server. The daemon starts it through its exec machinery as
//! the login user, so every file operation has exactly that user's rights (nothing here
//! checks permissions: the kernel does). Relative paths start in the project folder.

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use russh_sftp::protocol::{
    Attrs, Data, File as Entry, FileAttributes, Handle, Name, OpenFlags, Packet, Status,
    StatusCode, Version,
};
use russh_sftp::server::{Handler as _, StatusReply};
use tokio::io::{AsyncRead, AsyncWrite};

/// Serve SFTP on `input`/`output` until the client closes `input`: `claude-vm agent
/// sftp-server` passes its stdin and stdout (`claude_vm_daemon::bridge::stdio`, read and
/// written without a helper thread).
pub async fn serve_io<R, W>(input: R, output: W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    serve(input, output, Sftp::default()).await;
}

/// Largest request accepted (a 256 KiB write plus its header); OpenSSH sends 32 KiB.
const MAX_REQUEST: u32 = 256 * 1024 + 1024;

/// Answers written at once when they queue up.
const WRITE_BATCH: usize = 1 << 20;

/// Serve SFTP on `input`/`output` until the client closes `input`. Requests are pipelined:
/// they are read and handled one after another without waiting for the previous answer
/// to be written (a writer task batches the answers), so a client that keeps many reads
/// or writes outstanding (OpenSSH keeps 64) is never waited on.
pub async fn serve<R, W>(input: R, output: W, mut handler: Sftp)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(128);
    let writer = tokio::spawn(async move {
        let mut output = output;
        let mut batch = Vec::with_capacity(WRITE_BATCH);
        while let Some(first) = rx.recv().await {
            batch.extend_from_slice(&first);
            while batch.len() < WRITE_BATCH {
                match rx.try_recv() {
                    Ok(more) => batch.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            if output.write_all(&batch).await.is_err() || output.flush().await.is_err() {
                break;
            }
            batch.clear();
        }
    });
    let mut input = tokio::io::BufReader::with_capacity(512 * 1024, input);
    while let Ok(len) = input.read_u32().await {
        if len > MAX_REQUEST {
            tracing::debug!("sftp request of {len} bytes refused");
            break;
        }
        let mut buf = vec![0u8; len as usize];
        if input.read_exact(&mut buf).await.is_err() {
            break;
        }
        let mut bytes = Bytes::from(buf);
        let answer = match Packet::try_from(&mut bytes) {
            Ok(request) => handler.process(request).await,
            Err(_) => Packet::error(0, StatusCode::BadMessage),
        };
        let Ok(answer) = Bytes::try_from(answer) else {
            break;
        };
        if tx.send(answer).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// An error answer.
pub struct Fail(StatusCode, String);

impl From<Fail> for StatusReply {
    fn from(f: Fail) -> StatusReply {
        StatusReply {
            status_code: f.0,
            error_message: Some(f.1),
            language_tag: None,
        }
    }
}

impl From<std::io::Error> for Fail {
    fn from(e: std::io::Error) -> Fail {
        let code = match e.kind() {
            std::io::ErrorKind::NotFound => StatusCode::NoSuchFile,
            std::io::ErrorKind::PermissionDenied => StatusCode::PermissionDenied,
            _ => StatusCode::Failure,
        };
        Fail(code, e.to_string())
    }
}

enum Open {
    File(File),
    Dir(std::vec::IntoIter<Entry>),
}

#[derive(Default)]
pub struct Sftp {
    handles: HashMap<String, Open>,
    next: u64,
}

const MAX_HANDLES: usize = 1024;

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".into(),
        language_tag: "en-US".into(),
    }
}

fn attrs(meta: &fs::Metadata) -> FileAttributes {
    FileAttributes {
        size: Some(meta.size()),
        uid: Some(meta.uid()),
        user: None,
        gid: Some(meta.gid()),
        group: None,
        // The whole st_mode: file type bits included (symlinks stay symlinks).
        permissions: Some(meta.mode()),
        atime: Some(meta.atime().clamp(0, u32::MAX as i64) as u32),
        mtime: Some(meta.mtime().clamp(0, u32::MAX as i64) as u32),
    }
}

fn longname(name: &str, meta: &fs::Metadata) -> String {
    let mode = meta.mode();
    let kind = match mode & 0o170000 {
        0o040000 => 'd',
        0o120000 => 'l',
        0o010000 => 'p',
        0o140000 => 's',
        0o020000 => 'c',
        0o060000 => 'b',
        _ => '-',
    };
    let mut perms = String::with_capacity(10);
    perms.push(kind);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        perms.push(if bits & 4 != 0 { 'r' } else { '-' });
        perms.push(if bits & 2 != 0 { 'w' } else { '-' });
        perms.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(meta.uid()))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| meta.uid().to_string());
    let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(meta.gid()))
        .ok()
        .flatten()
        .map(|g| g.name)
        .unwrap_or_else(|| meta.gid().to_string());
    let when = jiff::Timestamp::from_second(meta.mtime())
        .map(|t| t.strftime("%b %d %H:%M").to_string())
        .unwrap_or_default();
    format!(
        "{perms} {:>3} {user:<8} {group:<8} {:>8} {when} {name}",
        meta.nlink(),
        meta.size()
    )
}

/// Remove `.` and resolve `..` lexically (for paths that do not exist yet).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

fn absolute(path: &str) -> PathBuf {
    let p = Path::new(if path.is_empty() { "." } else { path });
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(p)
    }
}

fn set_attrs(path: Option<&Path>, file: Option<&File>, a: &FileAttributes) -> Result<(), Fail> {
    if let Some(size) = a.size {
        match (file, path) {
            (Some(f), _) => f.set_len(size)?,
            (None, Some(p)) => fs::OpenOptions::new().write(true).open(p)?.set_len(size)?,
            _ => {}
        }
    }
    if let Some(mode) = a.permissions {
        let perms = fs::Permissions::from_mode(mode & 0o7777);
        match (file, path) {
            (Some(f), _) => f.set_permissions(perms)?,
            (None, Some(p)) => fs::set_permissions(p, perms)?,
            _ => {}
        }
    }
    if a.uid.is_some() || a.gid.is_some() {
        let uid = a.uid.map(nix::unistd::Uid::from_raw);
        let gid = a.gid.map(nix::unistd::Gid::from_raw);
        let r = match (file, path) {
            (Some(f), _) => nix::unistd::fchown(f, uid, gid),
            (None, Some(p)) => nix::unistd::chown(p, uid, gid),
            _ => Ok(()),
        };
        r.map_err(std::io::Error::from)?;
    }
    if let (Some(atime), Some(mtime)) = (a.atime, a.mtime) {
        let times = fs::FileTimes::new()
            .set_accessed(std::time::UNIX_EPOCH + std::time::Duration::from_secs(atime.into()))
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime.into()));
        match (file, path) {
            (Some(f), _) => f.set_times(times)?,
            (None, Some(p)) => fs::OpenOptions::new()
                .write(true)
                .open(p)
                .or_else(|_| File::open(p))?
                .set_times(times)?,
            _ => {}
        }
    }
    Ok(())
}

/// One answer: the handler's, or its error as a status.
fn answer<T: Into<Packet>>(id: u32, r: Result<T, Fail>) -> Packet {
    match r {
        Ok(p) => p.into(),
        Err(Fail(code, message)) => Packet::Status(Status {
            id,
            status_code: code,
            error_message: message,
            language_tag: "en-US".into(),
        }),
    }
}

impl Sftp {
    /// Handle one request.
    async fn process(&mut self, request: Packet) -> Packet {
        let id = request.get_request_id();
        match request {
            Packet::Init(r) => answer(id, self.init(r.version, r.extensions).await),
            Packet::Open(r) => answer(id, self.open(r.id, r.filename, r.pflags, r.attrs).await),
            Packet::Close(r) => answer(id, self.close(r.id, r.handle).await),
            Packet::Read(r) => answer(id, self.read(r.id, r.handle, r.offset, r.len).await),
            Packet::Write(r) => answer(id, self.write(r.id, r.handle, r.offset, r.data).await),
            Packet::Lstat(r) => answer(id, self.lstat(r.id, r.path).await),
            Packet::Fstat(r) => answer(id, self.fstat(r.id, r.handle).await),
            Packet::SetStat(r) => answer(id, self.setstat(r.id, r.path, r.attrs).await),
            Packet::FSetStat(r) => answer(id, self.fsetstat(r.id, r.handle, r.attrs).await),
            Packet::OpenDir(r) => answer(id, self.opendir(r.id, r.path).await),
            Packet::ReadDir(r) => answer(id, self.readdir(r.id, r.handle).await),
            Packet::Remove(r) => answer(id, self.remove(r.id, r.filename).await),
            Packet::MkDir(r) => answer(id, self.mkdir(r.id, r.path, r.attrs).await),
            Packet::RmDir(r) => answer(id, self.rmdir(r.id, r.path).await),
            Packet::RealPath(r) => answer(id, self.realpath(r.id, r.path).await),
            Packet::Stat(r) => answer(id, self.stat(r.id, r.path).await),
            Packet::Rename(r) => answer(id, self.rename(r.id, r.oldpath, r.newpath).await),
            Packet::ReadLink(r) => answer(id, self.readlink(r.id, r.path).await),
            Packet::Symlink(r) => answer(id, self.symlink(r.id, r.linkpath, r.targetpath).await),
            Packet::Extended(_) => answer::<Status>(
                id,
                Err(Fail(StatusCode::OpUnsupported, "not supported".into())),
            ),
            _ => Packet::error(id, StatusCode::BadMessage),
        }
    }

    fn add(&mut self, open: Open) -> Result<String, Fail> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(Fail(StatusCode::Failure, "too many open handles".into()));
        }
        self.next += 1;
        let h = self.next.to_string();
        self.handles.insert(h.clone(), open);
        Ok(h)
    }

    fn file(&self, handle: &str) -> Result<&File, Fail> {
        match self.handles.get(handle) {
            Some(Open::File(f)) => Ok(f),
            _ => Err(Fail(StatusCode::Failure, "invalid handle".into())),
        }
    }
}

impl russh_sftp::server::Handler for Sftp {
    type Error = Fail;

    fn unimplemented(&self) -> Self::Error {
        Fail(StatusCode::OpUnsupported, "not supported".into())
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        Ok(Version::new())
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        let mut opts: fs::OpenOptions = pflags.into();
        opts.mode(attrs.permissions.map(|p| p & 0o7777).unwrap_or(0o666));
        let f = opts.open(absolute(&filename))?;
        Ok(Handle {
            id,
            handle: self.add(Open::File(f))?,
        })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            Some(_) => Ok(ok(id)),
            None => Err(Fail(StatusCode::Failure, "invalid handle".into())),
        }
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        let f = self.file(&handle)?;
        let mut buf = vec![0u8; len.min(256 * 1024) as usize];
        let mut filled = 0;
        while filled < buf.len() {
            match f.read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        if filled == 0 && !buf.is_empty() {
            return Err(Fail(StatusCode::Eof, "end of file".into()));
        }
        buf.truncate(filled);
        Ok(Data { id, data: buf })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        self.file(&handle)?.write_all_at(&data, offset)?;
        Ok(ok(id))
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let meta = fs::symlink_metadata(absolute(&path))?;
        Ok(Attrs {
            id,
            attrs: attrs(&meta),
        })
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let meta = fs::metadata(absolute(&path))?;
        Ok(Attrs {
            id,
            attrs: attrs(&meta),
        })
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        let meta = self.file(&handle)?.metadata()?;
        Ok(Attrs {
            id,
            attrs: attrs(&meta),
        })
    }

    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        a: FileAttributes,
    ) -> Result<Status, Self::Error> {
        set_attrs(Some(&absolute(&path)), None, &a)?;
        Ok(ok(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        a: FileAttributes,
    ) -> Result<Status, Self::Error> {
        set_attrs(None, Some(self.file(&handle)?), &a)?;
        Ok(ok(id))
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        let dir = absolute(&path);
        let mut entries = Vec::new();
        for name in [".", ".."] {
            if let Ok(meta) = fs::metadata(dir.join(name)) {
                entries.push(Entry {
                    filename: name.into(),
                    longname: longname(name, &meta),
                    attrs: attrs(&meta),
                });
            }
        }
        for e in fs::read_dir(&dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Ok(meta) = fs::symlink_metadata(e.path()) {
                entries.push(Entry {
                    longname: longname(&name, &meta),
                    attrs: attrs(&meta),
                    filename: name,
                });
            }
        }
        Ok(Handle {
            id,
            handle: self.add(Open::Dir(entries.into_iter()))?,
        })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        match self.handles.get_mut(&handle) {
            Some(Open::Dir(it)) => {
                let files: Vec<Entry> = it.by_ref().take(100).collect();
                if files.is_empty() {
                    return Err(Fail(StatusCode::Eof, "end of directory".into()));
                }
                Ok(Name { id, files })
            }
            _ => Err(Fail(StatusCode::Failure, "invalid handle".into())),
        }
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        fs::remove_file(absolute(&filename))?;
        Ok(ok(id))
    }

    async fn mkdir(
        &mut self,
        id: u32,
        path: String,
        a: FileAttributes,
    ) -> Result<Status, Self::Error> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .mode(a.permissions.map(|p| p & 0o7777).unwrap_or(0o777))
            .create(absolute(&path))?;
        Ok(ok(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, Self::Error> {
        fs::remove_dir(absolute(&path))?;
        Ok(ok(id))
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let abs = absolute(&path);
        let real = fs::canonicalize(&abs).unwrap_or_else(|_| normalize(&abs));
        Ok(Name {
            id,
            files: vec![Entry::dummy(real.to_string_lossy())],
        })
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        fs::rename(absolute(&oldpath), absolute(&newpath))?;
        Ok(ok(id))
    }

    async fn readlink(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let target = fs::read_link(absolute(&path))?;
        Ok(Name {
            id,
            files: vec![Entry::dummy(target.to_string_lossy())],
        })
    }

    async fn symlink(
        &mut self,
        id: u32,
        linkpath: String,
        targetpath: String,
    ) -> Result<Status, Self::Error> {
        // OpenSSH sends the target first and the new link second (the reverse of the
        // draft), and every client follows it.
        std::os::unix::fs::symlink(&linkpath, absolute(&targetpath))?;
        Ok(ok(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalize() {
        assert_eq!(
            normalize(Path::new("/a/b/../c/./d")),
            PathBuf::from("/a/c/d")
        );
        assert_eq!(normalize(Path::new("/../..")), PathBuf::from("/"));
    }

    #[test]
    fn longnames_look_like_ls() {
        let dir = tempfile::tempdir().unwrap();
        let meta = fs::metadata(dir.path()).unwrap();
        assert!(longname("x", &meta).starts_with('d'));
        assert!(longname("x", &meta).ends_with(" x"));
    }
}
