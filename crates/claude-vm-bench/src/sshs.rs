//! SSH into a workspace with the real OpenSSH client through `claude-vm ssh-config`'s
//! ProxyCommand (`claude-vm ssh --stdio`), against `docker exec` and `docker cp`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::exec::{Tools, run, timed};
use crate::inside::Ws;
use crate::{Samples, pair};

/// What the SSH measurements need: the generated config and a user home for OpenSSH.
pub struct Ssh {
    config: PathBuf,
    user_home: tempfile::TempDir,
    host: String,
}

impl Ssh {
    /// Run `claude-vm ssh-config` (pins the workspace's host key, makes the client key).
    pub fn setup(tools: &Tools, ws: &Ws) -> Result<Ssh> {
        let user_home = tempfile::Builder::new()
            .prefix("claude-vm-bench-user.")
            .tempdir()?;
        let mut cmd = tools.cvm(["ssh-config"]);
        cmd.env("HOME", user_home.path());
        run(cmd).context("claude-vm ssh-config")?;
        Ok(Ssh {
            config: tools.home.join("ssh_config"),
            user_home,
            host: format!("{}.claude-vm", ws.name),
        })
    }

    fn tool(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.arg("-F")
            .arg(&self.config)
            .args(["-o", "BatchMode=yes"])
            .env("HOME", self.user_home.path())
            .env_remove("SSH_AUTH_SOCK");
        c
    }

    /// `ssh WS.claude-vm true`.
    pub fn ssh_true(&self) -> Command {
        let mut c = self.tool("ssh");
        c.arg(&self.host).arg("true");
        c
    }

    fn scp(&self, from: &str, to: &str) -> Command {
        let mut c = self.tool("scp");
        c.arg("-q").arg(from).arg(to);
        c
    }
}

/// `ssh WS.claude-vm true` vs `docker exec CTR true`.
pub fn round_trip(
    tools: &Tools,
    ssh: &Ssh,
    ws: &Ws,
    samples: usize,
    warmup: usize,
) -> Result<Samples> {
    let mut out = Samples::default();
    for i in 0..warmup + samples {
        let s = pair(
            i % 2 == 0,
            || Ok(timed(ssh.ssh_true())?.0),
            || Ok(timed(tools.docker(["exec", &ws.container, "true"]))?.0),
        )?;
        if i >= warmup {
            out.push(s);
        }
    }
    let o = crate::stats::Summary::of(&out.ours);
    let b = crate::stats::Summary::of(&out.baseline);
    eprintln!(
        "ssh true: {samples} samples, p50 {:.1} vs {:.1} ms (docker exec)",
        o.p50_ms, b.p50_ms
    );
    Ok(out)
}

/// scp of a `bytes`-long file into the workspace and back vs `docker cp` both ways.
pub struct Copies {
    pub scp_in: Samples,
    pub scp_out: Samples,
}

fn write_payload(path: &Path, bytes: usize) -> Result<()> {
    let mut data = vec![0u8; bytes];
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    std::fs::write(path, data)?;
    Ok(())
}

pub fn copies(
    tools: &Tools,
    ssh: &Ssh,
    ws: &Ws,
    bytes: usize,
    repetitions: usize,
    warmup: usize,
) -> Result<Copies> {
    let dir = tempfile::Builder::new()
        .prefix("claude-vm-bench-scp.")
        .tempdir()?;
    let src = dir.path().join("payload.bin");
    write_payload(&src, bytes)?;
    let src_s = src.display().to_string();
    let back = dir.path().join("back.bin").display().to_string();
    let docker_back = dir.path().join("docker-back.bin").display().to_string();
    let remote = format!("{}/scp-payload.bin", ws.project_dir);
    let remote_docker = format!("{}/docker-payload.bin", ws.project_dir);
    let mut c = Copies {
        scp_in: Samples::default(),
        scp_out: Samples::default(),
    };
    for i in 0..warmup + repetitions {
        let first = i % 2 == 0;
        let s_in = pair(
            first,
            || Ok(timed(ssh.scp(&src_s, &format!("{}:{remote}", ssh.host)))?.0),
            || {
                let to = format!("{}:{remote_docker}", ws.container);
                Ok(timed(tools.docker(["cp", &src_s, &to]))?.0)
            },
        )?;
        let s_out = pair(
            first,
            || Ok(timed(ssh.scp(&format!("{}:{remote}", ssh.host), &back))?.0),
            || {
                let from = format!("{}:{remote_docker}", ws.container);
                Ok(timed(tools.docker(["cp", &from, &docker_back]))?.0)
            },
        )?;
        if std::fs::metadata(&back)?.len() != bytes as u64 {
            anyhow::bail!("scp brought back a file of the wrong size");
        }
        if i >= warmup {
            c.scp_in.push(s_in);
            c.scp_out.push(s_out);
        }
        let mb_s = |d: Duration| bytes as f64 / 1e6 / d.as_secs_f64();
        eprintln!(
            "scp {}/{}: in {:.0} vs {:.0} MB/s, out {:.0} vs {:.0} MB/s (docker cp)",
            i + 1,
            warmup + repetitions,
            mb_s(s_in.0),
            mb_s(s_in.1),
            mb_s(s_out.0),
            mb_s(s_out.1)
        );
    }
    Ok(c)
}
