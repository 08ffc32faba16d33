//! `claude-vm agent connect`: joins the caller's stdin/stdout to the daemon's socket.
//!
//! The control side starts this through the provider's exec primitive (for Docker, an exec
//! session; over SSH, `ssh host ...`) and speaks HTTP/2 over the resulting byte stream. It
//! is deliberately dumb: bytes in, bytes out, exit when either side closes.
//!
//! It is also on the path of every byte the link carries, so it moves them without a
//! helper thread: stdin and stdout are read and written as non-blocking pipes (tokio's
//! own stdio hands each read and write to a blocking thread and waits for it), with 1 MiB
//! pipe buffers and 1 MiB reads.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

/// Bytes moved per read, each way.
const CHUNK: usize = 1 << 20;

/// Copy stdin → socket and socket → stdout until the socket closes.
///
/// While the socket is missing or refuses (the daemon is being restarted by PID 1 after a
/// crash), it is tried again for up to `wait`, so a command issued in that moment works
/// instead of failing.
pub async fn connect(socket: &Path, wait: std::time::Duration) -> std::io::Result<()> {
    let deadline = tokio::time::Instant::now() + wait;
    let stream = loop {
        match UnixStream::connect(socket).await {
            Ok(s) => break s,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("cannot reach the daemon at {}: {e}", socket.display()),
                ));
            }
        }
    };
    let (mut sock_read, mut sock_write) = stream.into_split();
    let (mut stdin, mut stdout) = stdio();
    let upstream = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = stdin.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            sock_write.write_all(&buf[..n]).await?;
        }
        sock_write.shutdown().await
    };
    let downstream = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = sock_read.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            stdout.write_all(&buf[..n]).await?;
            stdout.flush().await?;
        }
        Ok::<(), std::io::Error>(())
    };
    // The daemon closing the socket ends the session; stdin closing alone does not (the
    // answers to what was sent still have to come back).
    tokio::pin!(upstream);
    tokio::pin!(downstream);
    tokio::select! {
        r = &mut downstream => r,
        r = &mut upstream => {
            r?;
            downstream.await
        }
    }
}

/// stdin and stdout: as non-blocking pipes when they are pipes (a `docker exec` session's
/// are, and OpenSSH's ProxyCommand's), else tokio's stdio.
pub fn stdio() -> (
    Box<dyn AsyncRead + Send + Unpin>,
    Box<dyn AsyncWrite + Send + Unpin>,
) {
    use tokio::net::unix::pipe;
    let dup = |fd: BorrowedFd<'_>| fd.try_clone_to_owned().ok();
    let input: Option<Box<dyn AsyncRead + Send + Unpin>> = dup(std::io::stdin().as_fd())
        .and_then(|fd: OwnedFd| {
            grow_pipe(&fd);
            pipe::Receiver::from_owned_fd(fd).ok()
        })
        .map(|r| Box::new(r) as _);
    let output: Option<Box<dyn AsyncWrite + Send + Unpin>> = dup(std::io::stdout().as_fd())
        .and_then(|fd: OwnedFd| {
            grow_pipe(&fd);
            pipe::Sender::from_owned_fd(fd).ok()
        })
        .map(|w| Box::new(w) as _);
    (
        input.unwrap_or_else(|| Box::new(tokio::io::stdin())),
        output.unwrap_or_else(|| Box::new(tokio::io::stdout())),
    )
}

/// Ask for a 1 MiB pipe buffer (the default is 64 KiB). Not a pipe, or over the system's
/// limit: nothing changes.
fn grow_pipe(fd: &impl AsFd) {
    let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(CHUNK as i32));
}
