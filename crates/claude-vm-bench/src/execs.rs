//! Running a command in a workspace: `exec` over an established link (in-process), and
//! `claude-vm exec` as a whole process, each against `docker exec` on the same container.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use claude_vm_engine::ExecEvent;
use claude_vm_protocol::api::ExecRequest;

use crate::exec::{Tools, timed};
use crate::inside::{Inside, Ws};
use crate::{Samples, ms, pair};

/// One `exec(["true"])` over the link, from the request to its exit event.
fn link_true(inside: &Inside, ws: &Ws) -> Result<Duration> {
    let req = ExecRequest {
        cmd: vec!["true".into()],
        ..Default::default()
    };
    inside.block("exec true over the link", async {
        let start = Instant::now();
        let mut session = ws.link.exec(&req).await?;
        loop {
            match session.next().await? {
                Some(ExecEvent::Exit(0)) => return Ok(start.elapsed()),
                Some(ExecEvent::Exit(code)) => bail!("`true` exited with {code}"),
                Some(ExecEvent::Error(e)) => bail!("cannot run `true`: {e}"),
                Some(_) => {}
                None => bail!("the exec session ended without an exit status"),
            }
        }
    })
}

fn docker_true(tools: &Tools, ws: &Ws) -> Result<Duration> {
    Ok(timed(tools.docker(["exec", &ws.container, "true"]))?.0)
}

/// One request that does nothing (`GET /v1/activity`) over the link: the link's own
/// round trip, without starting a process.
fn link_noop(inside: &Inside, ws: &Ws) -> Result<Duration> {
    inside.block("GET /v1/activity over the link", async {
        let start = Instant::now();
        ws.link.activity().await?;
        Ok(start.elapsed())
    })
}

/// `exec true` over the established link (in-process) vs `docker exec CTR true`; and,
/// between them, a request that does nothing (returned separately).
pub fn link_exec(
    inside: &Inside,
    tools: &Tools,
    ws: &Ws,
    samples: usize,
    warmup: usize,
) -> Result<(Samples, Vec<Duration>)> {
    let mut out = Samples::default();
    let mut noop = Vec::new();
    for i in 0..warmup + samples {
        let s = pair(
            i % 2 == 0,
            || link_true(inside, ws),
            || docker_true(tools, ws),
        )?;
        let n = link_noop(inside, ws)?;
        if i >= warmup {
            out.push(s);
            noop.push(n);
        }
        let done = i + 1;
        if done % 50 == 0 || done == warmup + samples {
            eprintln!(
                "exec over the link: {done}/{} (incl. {warmup} warm-up), last {:.2} vs {} ms",
                warmup + samples,
                s.0.as_secs_f64() * 1e3,
                ms(s.1)
            );
        }
    }
    Ok((out, noop))
}

/// `claude-vm exec WS -- true` vs `docker exec CTR true`, whole processes.
pub fn cli_exec(tools: &Tools, ws: &Ws, samples: usize, warmup: usize) -> Result<Samples> {
    let mut out = Samples::default();
    for i in 0..warmup + samples {
        let s = pair(
            i % 2 == 0,
            || Ok(timed(tools.cvm(["exec", &ws.name, "--", "true"]))?.0),
            || docker_true(tools, ws),
        )?;
        if i >= warmup {
            out.push(s);
        }
    }
    let o = crate::stats::Summary::of(&out.ours);
    let b = crate::stats::Summary::of(&out.baseline);
    eprintln!(
        "claude-vm exec: {samples} samples, p50 {:.1} vs {:.1} ms",
        o.p50_ms, b.p50_ms
    );
    Ok(out)
}
