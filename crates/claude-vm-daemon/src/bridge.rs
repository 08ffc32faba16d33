//! `claude-vm agent connect`: joins the caller's stdin/stdout to the daemon's socket.
//!
//! The control side starts this through the provider's exec primitive (for Docker, an exec
//! session; over SSH, `ssh host ...`) and speaks HTTP/2 over the resulting byte stream. It
//! is deliberately dumb: bytes in, bytes out, exit when either side closes.

use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Copy stdin → socket and socket → stdout until the socket closes.
pub async fn connect(socket: &Path) -> std::io::Result<()> {
    let stream = UnixStream::connect(socket).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot reach the daemon at {}: {e}", socket.display()),
        )
    })?;
    let (mut sock_read, mut sock_write) = stream.into_split();
    let upstream = async {
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 256 * 1024];
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
        let mut stdout = tokio::io::stdout();
        let mut buf = vec![0u8; 256 * 1024];
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
