//! File throughput: a 100 MB file into the workspace and back, through the link in-process
//! (`write` / `read`), with `claude-vm cp` (whole processes), and with `docker cp` into and
//! out of the same container.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;

use crate::exec::{Tools, timed};
use crate::inside::{Inside, Ws};
use crate::ms;
use crate::stats::Summary;

/// Folder in the workspace volume the files go to (outside the project).
const REMOTE_DIR: &str = "/workspace/bench-files";

/// `len` bytes that do not compress (xorshift64), so no layer can shortcut them.
fn payload(len: usize) -> Bytes {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        v.extend_from_slice(&state.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Way {
    /// `Link::write` / `Link::read` in this process.
    Link,
    /// `claude-vm cp`, whole process.
    Cli,
    /// `docker cp`, whole process.
    Docker,
}

/// Samples of each way, into the workspace and out of it.
#[derive(Default)]
pub struct FileSamples {
    pub link_in: Vec<Duration>,
    pub link_out: Vec<Duration>,
    pub cli_in: Vec<Duration>,
    pub cli_out: Vec<Duration>,
    pub docker_in: Vec<Duration>,
    pub docker_out: Vec<Duration>,
}

fn remote(way: Way) -> String {
    let name = match way {
        Way::Link => "link.bin",
        Way::Cli => "cli.bin",
        Way::Docker => "docker.bin",
    };
    format!("{REMOTE_DIR}/{name}")
}

fn upload(
    inside: &Inside,
    tools: &Tools,
    ws: &Ws,
    way: Way,
    data: &Bytes,
    src: &Path,
) -> Result<Duration> {
    let dest = remote(way);
    match way {
        Way::Link => inside.block("writing the file over the link", async {
            let start = Instant::now();
            let info = ws
                .link
                .write(
                    &dest,
                    Some(0o644),
                    false,
                    claude_vm_link::full(data.clone()),
                )
                .await?;
            let t = start.elapsed();
            if info.size != data.len() as u64 {
                bail!("wrote {} bytes, expected {}", info.size, data.len());
            }
            Ok(t)
        }),
        Way::Cli => {
            let mut cmd = tools.cvm(["cp"]);
            cmd.arg(src).arg(format!("{}:{dest}", ws.name));
            Ok(timed(cmd)?.0)
        }
        Way::Docker => {
            let mut cmd = tools.docker(["cp"]);
            cmd.arg(src).arg(format!("{}:{dest}", ws.container));
            Ok(timed(cmd)?.0)
        }
    }
}

/// Download what `upload` put there; checks the size, and the bytes when `verify`.
fn download(
    inside: &Inside,
    tools: &Tools,
    ws: &Ws,
    way: Way,
    data: &Bytes,
    local_dir: &Path,
    verify: bool,
) -> Result<Duration> {
    let src = remote(way);
    let (t, got) = match way {
        Way::Link => inside.block("reading the file over the link", async {
            let start = Instant::now();
            let mut body = ws.link.read(&src).await?;
            let mut buf = Vec::with_capacity(data.len());
            while let Some(chunk) = body.chunk().await? {
                buf.extend_from_slice(&chunk);
            }
            Ok((start.elapsed(), buf))
        })?,
        Way::Cli | Way::Docker => {
            let local = local_dir.join(if way == Way::Cli {
                "cli.out"
            } else {
                "docker.out"
            });
            // Both refuse nothing, but start from the same state: no file there.
            let _ = std::fs::remove_file(&local);
            let mut cmd = if way == Way::Cli {
                let mut c = tools.cvm(["cp"]);
                c.arg(format!("{}:{src}", ws.name));
                c
            } else {
                let mut c = tools.docker(["cp"]);
                c.arg(format!("{}:{src}", ws.container));
                c
            };
            cmd.arg(&local);
            let (t, _) = timed(cmd)?;
            let got = if verify {
                std::fs::read(&local).with_context(|| format!("reading {}", local.display()))?
            } else {
                let len = std::fs::metadata(&local)?.len();
                if len != data.len() as u64 {
                    bail!("{way:?} copied {len} bytes out, expected {}", data.len());
                }
                Vec::new()
            };
            (t, got)
        }
    };
    if verify || way == Way::Link {
        if got.len() != data.len() {
            bail!(
                "{way:?} read {} bytes back, expected {}",
                got.len(),
                data.len()
            );
        }
        if verify && got[..] != data[..] {
            bail!("{way:?} read back different bytes than were written");
        }
    }
    Ok(t)
}

/// Write and read back `bytes` each way, `repetitions` times after `warmup` rounds. The
/// order of the three ways rotates every round.
pub fn throughput(
    inside: &Inside,
    tools: &Tools,
    ws: &Ws,
    bytes: usize,
    repetitions: usize,
    warmup: usize,
) -> Result<FileSamples> {
    let data = payload(bytes);
    let local = tempfile::Builder::new()
        .prefix("claude-vm-bench-files.")
        .tempdir()?;
    let src = local.path().join("payload.bin");
    std::fs::write(&src, &data)?;
    inside.block("creating the folder for the files", async {
        Ok(ws.link.mkdir(REMOTE_DIR, true).await?)
    })?;
    let mut out = FileSamples::default();
    let ways = [Way::Link, Way::Cli, Way::Docker];
    for i in 0..warmup + repetitions {
        let measured = i >= warmup;
        let mut order = ways;
        order.rotate_left(i % ways.len());
        let mut line = Vec::new();
        for way in order {
            let t = upload(inside, tools, ws, way, &data, &src)?;
            line.push(format!("{way:?} in {}", ms(t)));
            if measured {
                match way {
                    Way::Link => out.link_in.push(t),
                    Way::Cli => out.cli_in.push(t),
                    Way::Docker => out.docker_in.push(t),
                }
            }
        }
        for way in order {
            let t = download(inside, tools, ws, way, &data, local.path(), i == 0)?;
            line.push(format!("{way:?} out {}", ms(t)));
            if measured {
                match way {
                    Way::Link => out.link_out.push(t),
                    Way::Cli => out.cli_out.push(t),
                    Way::Docker => out.docker_out.push(t),
                }
            }
        }
        let tag = if measured {
            format!("{}/{repetitions}", i - warmup + 1)
        } else {
            format!("warm-up {}/{warmup}", i + 1)
        };
        eprintln!("files {tag} (ms): {}", line.join(", "));
    }
    let mb = bytes as f64 / 1e6;
    let rate = |v: &[Duration]| mb / (Summary::of(v).p50_ms / 1e3);
    eprintln!(
        "files: in {:.0} / {:.0} / {:.0} MB/s, out {:.0} / {:.0} / {:.0} MB/s (link / claude-vm cp / docker cp)",
        rate(&out.link_in),
        rate(&out.cli_in),
        rate(&out.docker_in),
        rate(&out.link_out),
        rate(&out.cli_out),
        rate(&out.docker_out)
    );
    Ok(out)
}
