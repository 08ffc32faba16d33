//! `claude-vm cp`: files and directories between this machine and a workspace, modes kept,
//! with progress for large transfers. Directories travel as tar streams; files as raw bytes.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use claude_vm_engine::{Engine, Link, LinkError, pack};
use claude_vm_protocol::api::FileKind;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;

/// One side of a copy.
#[derive(Debug, PartialEq, Eq)]
enum Endpoint {
    Local(PathBuf),
    Remote { workspace: String, path: String },
}

/// `WS:PATH` is remote; anything starting with `/` or `.`, or without a colon, is local.
fn parse(arg: &str) -> Endpoint {
    if !(arg.starts_with('/') || arg.starts_with('.'))
        && let Some((ws, path)) = arg.split_once(':')
        && !ws.is_empty()
        && !ws.contains('/')
    {
        let path = if path.is_empty() {
            ".".to_owned()
        } else {
            path.to_owned()
        };
        return Endpoint::Remote {
            workspace: ws.to_owned(),
            path,
        };
    }
    Endpoint::Local(PathBuf::from(arg))
}

fn last_component(p: &str) -> String {
    p.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(p)
        .to_owned()
}

fn progress_bar(quiet: bool, total: Option<u64>, label: &str) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    let template = if total.is_some() {
        "{msg} {bar:30.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec} {eta}"
    } else {
        "{msg} {spinner} {bytes} {bytes_per_sec}"
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(label.to_owned());
    bar
}

pub fn run(engine: &Engine, src: &str, dest: &str, quiet: bool) -> Result<ExitCode> {
    let rt = super::runtime()?;
    match (parse(src), parse(dest)) {
        (Endpoint::Remote { workspace, path }, Endpoint::Local(local)) => {
            rt.block_on(async {
                let (_, link) = engine.link_waking(&workspace).await?;
                download(&link, &path, &local, quiet).await
            })?;
        }
        (Endpoint::Local(local), Endpoint::Remote { workspace, path }) => {
            rt.block_on(async {
                let (_, link) = engine.link_waking(&workspace).await?;
                upload(&link, &local, &path, quiet).await
            })?;
        }
        (Endpoint::Remote { .. }, Endpoint::Remote { .. }) => {
            bail!("copying between two workspaces is not supported; copy through a local folder")
        }
        (Endpoint::Local(_), Endpoint::Local(_)) => {
            bail!(
                "one side must be a workspace path, written WORKSPACE:PATH (e.g. bold-fire-1234:src/main.rs)"
            )
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn download(link: &Link, remote: &str, local: &Path, quiet: bool) -> Result<()> {
    let info = link.stat(remote).await?;
    let name = last_component(&info.path);
    // Into an existing local folder: keep the remote name; otherwise `local` is the new name.
    let target = if local.is_dir() {
        local.join(&name)
    } else {
        local.to_owned()
    };
    if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        bail!("local folder {} does not exist", parent.display());
    }
    match info.kind {
        FileKind::File => {
            let bar = progress_bar(quiet, Some(info.size), &format!("copying {name}"));
            let mut body = link.read(remote).await?;
            let tmp = target.with_file_name(format!(".{}.claude-vm-partial", name));
            let f = std::fs::File::create(&tmp)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            let (tx, writer) = file_writer(f);
            let res: Result<()> = async {
                while let Some(chunk) = body.chunk().await? {
                    bar.inc(chunk.len() as u64);
                    if tx.send(chunk).await.is_err() {
                        break;
                    }
                }
                drop(tx);
                writer.await??;
                Ok(())
            }
            .await;
            if let Err(e) = res {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(info.mode & 0o7777))?;
            std::fs::rename(&tmp, &target)?;
            bar.finish_and_clear();
        }
        FileKind::Dir => {
            let bar = progress_bar(quiet, None, &format!("copying {name}/"));
            let mut body = link.archive(remote).await?;
            // Unpack next to the target, then move into place: a failure leaves nothing half-made.
            let parent = target
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let staging = tempfile::Builder::new()
                .prefix(".claude-vm-cp-")
                .tempdir_in(parent)?;
            let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
            let dir = staging.path().to_owned();
            // The chunks as a blocking reader for `tar`, on the blocking pool.
            let chunks = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|c| (c, rx))
            }));
            let reader =
                tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(chunks));
            let unpack = tokio::task::spawn_blocking(move || {
                let mut archive = tar::Archive::new(reader);
                archive.set_preserve_permissions(true);
                archive.set_preserve_mtime(true);
                archive.set_overwrite(true);
                archive.unpack(&dir)
            });
            let res: Result<(), LinkError> = async {
                while let Some(chunk) = body.chunk().await? {
                    bar.inc(chunk.len() as u64);
                    if tx.send(Ok(chunk)).await.is_err() {
                        break;
                    }
                }
                Ok(())
            }
            .await;
            if let Err(e) = &res {
                let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
            }
            drop(tx);
            unpack.await?.context("unpacking the copied folder")?;
            res?;
            let unpacked = staging.path().join(&name);
            if target.exists() {
                bail!("{} already exists", target.display());
            }
            std::fs::rename(&unpacked, &target)?;
            bar.finish_and_clear();
        }
        FileKind::Symlink | FileKind::Other => bail!("{remote} is not a file or folder"),
    }
    Ok(())
}

async fn upload(link: &Link, local: &Path, remote: &str, quiet: bool) -> Result<()> {
    let meta = std::fs::symlink_metadata(local)
        .with_context(|| format!("cannot read {}", local.display()))?;
    let local_name = local
        .canonicalize()?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".into());
    // Into an existing remote folder: keep the local name.
    let remote_is_dir = matches!(link.stat(remote).await, Ok(i) if i.kind == FileKind::Dir);
    let target = if remote_is_dir || remote.ends_with('/') {
        format!("{}/{local_name}", remote.trim_end_matches('/'))
    } else {
        remote.to_owned()
    };
    if meta.is_file() {
        use std::os::unix::fs::PermissionsExt;
        let bar = progress_bar(quiet, Some(meta.len()), &format!("copying {local_name}"));
        let counter = Arc::new(AtomicU64::new(0));
        let body = file_body(local.to_owned(), counter.clone());
        let tick = tick_bar(bar.clone(), counter);
        let res = link
            .write(
                &target,
                Some(meta.permissions().mode() & 0o7777),
                false,
                body,
            )
            .await;
        tick.abort();
        res?;
        bar.finish_and_clear();
    } else if meta.is_dir() {
        let (parent, name) = match target.rsplit_once('/') {
            Some((p, n)) => (
                if p.is_empty() {
                    "/".to_owned()
                } else {
                    p.to_owned()
                },
                n.to_owned(),
            ),
            None => (".".to_owned(), target.clone()),
        };
        let root = local.to_owned();
        let plan = tokio::task::spawn_blocking(move || pack::plan_all(&root)).await??;
        let bar = progress_bar(quiet, Some(plan.bytes), &format!("copying {local_name}/"));
        let counter = Arc::new(AtomicU64::new(0));
        let tar = pack::stream(Some((plan, PathBuf::from(&name))), vec![], counter.clone());
        let tick = tick_bar(bar.clone(), counter);
        let res = link.extract(&parent, claude_vm_link::streamed(tar)).await;
        tick.abort();
        res?;
        bar.finish_and_clear();
    } else {
        bail!("{} is not a file or folder", local.display());
    }
    Ok(())
}

fn tick_bar(bar: ProgressBar, counter: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            bar.set_position(counter.load(Ordering::Relaxed));
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
}

/// Writes the chunks sent to it into `file` on a blocking thread, so the disk and the link
/// work at the same time, and fsyncs it at the end. Writeback of what is written is started
/// every few MiB, so the final fsync only waits for the last of it.
fn file_writer(
    mut file: std::fs::File,
) -> (
    mpsc::Sender<Bytes>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    const FLUSH_EVERY: u64 = 8 << 20;
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    let task = tokio::task::spawn_blocking(move || {
        let (mut written, mut flushed) = (0u64, 0u64);
        while let Some(chunk) = rx.blocking_recv() {
            file.write_all(&chunk)?;
            written += chunk.len() as u64;
            if written - flushed >= FLUSH_EVERY {
                start_writeback(&file, flushed, written - flushed);
                flushed = written;
            }
        }
        file.sync_all()
    });
    (tx, task)
}

/// Ask the kernel to start writing a range of `file` to disk, without waiting for it.
fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on an open descriptor; a failure only means no head start.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// A local file as a streamed request body.
fn file_body(path: PathBuf, counter: Arc<AtomicU64>) -> claude_vm_link::Body {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    tokio::task::spawn_blocking(move || {
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                    if tx
                        .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                    {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    claude_vm_link::streamed(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (b, rx))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            parse("ws:src/a.rs"),
            Endpoint::Remote {
                workspace: "ws".into(),
                path: "src/a.rs".into()
            }
        );
        assert_eq!(
            parse("ws:"),
            Endpoint::Remote {
                workspace: "ws".into(),
                path: ".".into()
            }
        );
        assert_eq!(parse("./a:b"), Endpoint::Local("./a:b".into()));
        assert_eq!(parse("/tmp/a:b"), Endpoint::Local("/tmp/a:b".into()));
        assert_eq!(parse("dir/a:b"), Endpoint::Local("dir/a:b".into()));
        assert_eq!(parse("plain"), Endpoint::Local("plain".into()));
    }
}
