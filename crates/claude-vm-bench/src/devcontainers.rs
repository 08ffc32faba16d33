//! `devcontainer`: `workspace up` of a project whose devcontainer.json builds a Dockerfile
//! (`FROM` the benchmark's image) and installs one local feature.
//!
//! - With the image built before (by an untimed first `up`): against `docker run -d` of
//!   that same image plus `docker cp` of the project into it.
//! - With `--rebuild` (every layer in the engine's cache, as after any earlier build):
//!   against a classic `docker build` of one equivalent Dockerfile (the same `RUN`, the
//!   feature's folder copied in and its `install.sh` run), also cached, plus the same
//!   `docker run -d` and `docker cp`.
//!
//! Every sample makes a new workspace and a new container; both are deleted after it,
//! untimed. The images both sides built are removed at the end, also after a failure.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::exec::{Tools, delete_workspaces_named, run, run_cleanup, timed};
use crate::fixture;
use crate::{BASELINE_LABEL, Samples, ms, pair};

/// The local feature's id and folder (under `.devcontainer/`).
const FEATURE: &str = "bench-tool";
/// The label claude-vm puts on the images it builds for a devcontainer.json.
const DC_LABEL: &str = "dev.claude-vm.devcontainer";
/// Workspace names of this group start with this.
const WS_PREFIX: &str = "bench-dc-";

pub struct DevcontainerSamples {
    /// `workspace up` with the image built before.
    pub up: Samples,
    /// `workspace up --rebuild`.
    pub rebuild: Samples,
    /// The image claude-vm built (`claude-vm-dc-<hash>`).
    pub image: String,
}

/// The `RUN` of the project's Dockerfile, repeated in the baseline's.
const DOCKERFILE_RUN: &str = "RUN echo built-from-the-dockerfile > /etc/bench-dockerfile";

/// The feature's `install.sh`: small and quick, so the build's machinery is what is timed.
const INSTALL: &str = "#!/bin/sh\nset -e\n\
printf '#!/bin/sh\\necho \"%s\"\\n' \"$GREETING\" > /usr/local/bin/bench-tool\n\
chmod +x /usr/local/bin/bench-tool\n\
echo installed > /etc/bench-tool-installed\n";

/// Write the project: [`fixture::TEXT_FILES`] text files, and a `.devcontainer/` with a
/// Dockerfile `FROM image`, the feature, and the devcontainer.json.
fn project(dir: &Path, image: &str) -> Result<()> {
    fixture::text_files(dir)?;
    let dc = dir.join(".devcontainer");
    let feature = dc.join(FEATURE);
    fs::create_dir_all(&feature)?;
    fs::write(
        dc.join("Dockerfile"),
        format!("FROM {image}\n{DOCKERFILE_RUN}\n"),
    )?;
    fs::write(
        feature.join("devcontainer-feature.json"),
        format!(
            r#"{{"id": "{FEATURE}", "version": "1.0.0", "options": {{"greeting": {{"type": "string", "default": "hello"}}}}}}"#
        ),
    )?;
    fs::write(feature.join("install.sh"), INSTALL)?;
    fs::write(
        dc.join("devcontainer.json"),
        format!(
            r#"{{
    "name": "bench",
    "build": {{"dockerfile": "Dockerfile"}},
    "features": {{"./{FEATURE}": {{}}}}
}}
"#
        ),
    )?;
    Ok(())
}

/// The baseline's build context: one Dockerfile doing what the two builds of claude-vm do
/// (the project's `RUN`, then the feature's folder copied in and its `install.sh` run with
/// its option's default), and a copy of the feature's folder.
fn baseline_context(dir: &Path, project: &Path, image: &str) -> Result<()> {
    let from = project.join(".devcontainer").join(FEATURE);
    let to = dir.join(FEATURE);
    fs::create_dir_all(&to)?;
    for name in ["devcontainer-feature.json", "install.sh"] {
        fs::copy(from.join(name), to.join(name))?;
    }
    fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM {image}\n{DOCKERFILE_RUN}\n\
             COPY {FEATURE}/ /tmp/{FEATURE}/\n\
             RUN cd /tmp/{FEATURE} && chmod +x install.sh && GREETING=hello ./install.sh \
             && cd / && rm -rf /tmp/{FEATURE}\n"
        ),
    )?;
    Ok(())
}

/// Removes, when dropped, this group's workspaces and baseline containers, then every image
/// either side built.
struct Leftovers<'a> {
    tools: &'a Tools,
    run_id: &'a str,
    /// Label filters (`KEY=VALUE`) of the images to remove.
    image_labels: Vec<String>,
}

impl Drop for Leftovers<'_> {
    fn drop(&mut self) {
        let t = self.tools;
        delete_workspaces_named(t, WS_PREFIX);
        let label = format!("label={BASELINE_LABEL}={}", self.run_id);
        let name = format!("name=claude-vm-bench-dc-{}", self.run_id);
        if let Some(out) =
            run_cleanup(t.docker(["ps", "-aq", "--filter", &label, "--filter", &name]))
        {
            for id in out.split_whitespace() {
                run_cleanup(t.docker(["rm", "-f", id]));
            }
        }
        self.image_labels.sort();
        self.image_labels.dedup();
        for filter in &self.image_labels {
            let filter = format!("label={filter}");
            // Newest first: a features image goes before the image it was layered on.
            let Some(out) = run_cleanup(t.docker([
                "image",
                "ls",
                "--filter",
                &filter,
                "--format",
                "{{.Repository}}:{{.Tag}} {{.ID}}",
            ])) else {
                continue;
            };
            for line in out.lines() {
                let Some((tag, id)) = line.split_once(' ') else {
                    continue;
                };
                let what = if tag.contains("<none>") { id } else { tag };
                run_cleanup(t.docker(["rmi", what]));
            }
        }
    }
}

/// `docker run -d --init IMAGE sleep infinity` + `docker cp PROJECT/. CTR:/workspace/`.
fn run_and_copy(
    tools: &Tools,
    image: &str,
    label: &str,
    ctr: &str,
    project: &Path,
) -> Result<std::time::Duration> {
    let (t1, _) = timed(tools.docker([
        "run", "-d", "--init", "--label", label, "--name", ctr, image, "sleep", "infinity",
    ]))?;
    let mut src = project.as_os_str().to_owned();
    src.push("/.");
    let mut cp = tools.docker(["cp"]);
    cp.arg(src).arg(format!("{ctr}:/workspace/"));
    let (t2, _) = timed(cp)?;
    Ok(t1 + t2)
}

/// `claude-vm workspace up --json [--rebuild] --name NAME PROJECT`, checked: a new workspace,
/// running, on `image` (when given). Returns the time and the image it runs.
fn up(
    tools: &Tools,
    project: &Path,
    name: &str,
    rebuild: bool,
    image: Option<&str>,
) -> Result<(std::time::Duration, String)> {
    let mut cmd = tools.cvm(["workspace", "up", "--json"]);
    if rebuild {
        cmd.arg("--rebuild");
    }
    cmd.args(["--name", name]).arg(project);
    let (t, out) = timed(cmd)?;
    let v: serde_json::Value = serde_json::from_str(&out)
        .with_context(|| format!("`workspace up --json` printed {out:?}"))?;
    let w = &v["workspace"];
    if v["action"] != "created" || w["status"] != "running" {
        bail!(
            "`workspace up` of {name}: {} {} ({})",
            v["action"],
            w["status"],
            w["status_reason"]
        );
    }
    let built = w["image"].as_str().unwrap_or_default().to_owned();
    if !built.starts_with("claude-vm-dc-") || image.is_some_and(|i| i != built) {
        bail!("`workspace up` of {name} runs image {built:?}, not the devcontainer's");
    }
    Ok((t, built))
}

pub fn devcontainer(
    tools: &Tools,
    work: &Path,
    image: &str,
    run_id: &str,
    repetitions: usize,
    warmup: usize,
) -> Result<DevcontainerSamples> {
    let project_dir: PathBuf = work.join("dc-project");
    let context = work.join("dc-baseline-build");
    fs::create_dir_all(&project_dir)?;
    fs::create_dir_all(&context)?;
    project(&project_dir, image)?;
    baseline_context(&context, &project_dir, image)?;
    let label = format!("{BASELINE_LABEL}={run_id}");
    let config = project_dir.join(".devcontainer/devcontainer.json");
    let mut leftovers = Leftovers {
        tools,
        run_id,
        image_labels: vec![label.clone(), format!("{DC_LABEL}={}", config.display())],
    };
    let base_tag = format!("claude-vm-bench-dc-{run_id}");
    let docker_build = || {
        let mut cmd = tools.docker(["build", "-q", "--label", &label, "-t", &base_tag]);
        cmd.arg(&context).env("DOCKER_BUILDKIT", "0");
        timed(cmd).map(|(t, _)| t)
    };

    // Untimed: claude-vm builds its image (both layers) and the baseline builds its own, so
    // that every layer of either is in the engine's cache from here on.
    let first = format!("{WS_PREFIX}first");
    let (t, built) = up(tools, &project_dir, &first, false, None)?;
    // The label's value as the engine wrote it, for the cleanup.
    let written = run(tools.docker([
        "image",
        "inspect",
        "--format",
        &format!("{{{{index .Config.Labels \"{DC_LABEL}\"}}}}"),
        &built,
    ]))?;
    leftovers
        .image_labels
        .push(format!("{DC_LABEL}={}", written.trim()));
    run(tools.cvm(["workspace", "delete", &first, "-y", "-q"]))?;
    // Deleting a workspace leaves the image for the next `up`.
    run(tools.docker(["image", "inspect", "--format", "{{.Id}}", &built]))
        .with_context(|| format!("{built} is gone after deleting the first workspace"))?;
    let tb = docker_build()?;
    eprintln!(
        "devcontainer: first up (built {built}) {} ms, baseline docker build {} ms",
        ms(t),
        ms(tb)
    );

    let mut s = DevcontainerSamples {
        up: Samples::default(),
        rebuild: Samples::default(),
        image: built.clone(),
    };
    for i in 0..warmup + repetitions {
        let measured = i >= warmup;
        let ours_first = i % 2 == 0;
        let ctr = format!("claude-vm-bench-dc-{run_id}-{i}");

        let ws = format!("{WS_PREFIX}{i}");
        let u = pair(
            ours_first,
            || Ok(up(tools, &project_dir, &ws, false, Some(&built))?.0),
            || run_and_copy(tools, &built, &label, &ctr, &project_dir),
        )?;
        run(tools.cvm(["workspace", "delete", &ws, "-y", "-q"]))?;
        run(tools.docker(["rm", "-f", &ctr]))?;

        let ws = format!("{WS_PREFIX}rebuild-{i}");
        let r = pair(
            ours_first,
            || Ok(up(tools, &project_dir, &ws, true, Some(&built))?.0),
            || Ok(docker_build()? + run_and_copy(tools, &base_tag, &label, &ctr, &project_dir)?),
        )?;
        run(tools.cvm(["workspace", "delete", &ws, "-y", "-q"]))?;
        run(tools.docker(["rm", "-f", &ctr]))?;

        let tag = if measured {
            format!("{}/{repetitions}", i - warmup + 1)
        } else {
            format!("warm-up {}/{warmup}", i + 1)
        };
        eprintln!(
            "devcontainer {tag}: up {} vs {} ms, up --rebuild {} vs {} ms",
            ms(u.0),
            ms(u.1),
            ms(r.0),
            ms(r.1)
        );
        if measured {
            s.up.push(u);
            s.rebuild.push(r);
        }
    }
    drop(leftovers);
    Ok(s)
}
