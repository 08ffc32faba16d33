//! End to end: a project's devcontainer.json on the real Docker engine: its Dockerfile
//! built through the provider (`FROM` the local test base image), local features with
//! options and `installsAfter`, `containerEnv`/`remoteEnv`, every lifecycle command form,
//! the image reused until `--rebuild`, and the bad inputs, each refused before anything is
//! left behind.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Ctx, dexec, test_image};

/// A named volume a test's devcontainer.json mounts, removed when it ends.
struct Volume(String);

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", &self.0])
            .output();
    }
}

/// Images tagged during a test, removed when it ends.
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for tag in &self.0 {
            let _ = Command::new("docker").args(["rmi", "-f", tag]).output();
            let _ = Command::new("docker")
                .args(["rmi", "-f", &format!("{tag}-base")])
                .output();
        }
    }
}

/// The web UI's workspaces page, as `claude-vm server` serves it for this home.
fn web_page(ctx: &Ctx) -> String {
    let server = common::http::Server::start(ctx);
    let token = ctx.run(&["token", "create", "web", "--json"]).ok().json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    server.client().bearer(&token).get("/").text()
}

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
}

fn feature(root: &Path, name: &str, json: &str, install: &str) {
    write(
        root,
        &format!(".devcontainer/{name}/devcontainer-feature.json"),
        json,
    );
    write(
        root,
        &format!(".devcontainer/{name}/install.sh"),
        &format!("#!/bin/sh\nset -e\n{install}\n"),
    );
}

/// A project whose devcontainer builds a Dockerfile and installs two local features.
fn project(root: &Path, nonce: &str) {
    write(root, "README.md", "# app\n");
    write(
        root,
        ".devcontainer/Dockerfile",
        &format!(
            "FROM {}\nARG NONCE\nRUN echo \"built $NONCE\" > /built-from-dockerfile\n",
            test_image()
        ),
    );
    // Installs after `greeter` although its name sorts first.
    feature(
        root,
        "after",
        r#"{"id": "after", "version": "1.0.0", "installsAfter": ["./greeter"]}"#,
        "echo after >> /feature-order",
    );
    feature(
        root,
        "greeter",
        r#"{
            // JSONC here too
            "id": "greeter",
            "version": "1.0.0",
            "options": {
                "greeting": {"type": "string", "default": "hello"},
                "loud": {"type": "boolean", "default": false},
            },
            "containerEnv": {"GREETER_HOME": "/opt/greeter"},
        }"#,
        "echo greeter >> /feature-order\necho \"$GREETING loud=$LOUD\" > /greeting",
    );
    write(
        root,
        ".devcontainer/devcontainer.json",
        &format!(
            r#"// The project's own environment.
{{
    "name": "app",
    "build": {{
        "dockerfile": "Dockerfile",
        "args": {{"NONCE": "{nonce}"}},
    }},
    "features": {{
        "./after": {{}},
        "./greeter": {{"greeting": "hola", "loud": true}},
    }},
    "containerEnv": {{"DC_MODE": "test", "FROM_HOST": "${{localEnv:DC_TEST_VALUE}}"}},
    "remoteEnv": {{"DC_REMOTE": "remote-${{containerWorkspaceFolderBasename}}"}},
    "onCreateCommand": ["touch", "on-create.txt"],
    "postCreateCommand": "echo \"$DC_REMOTE $(id -u) $(pwd)\" > post-create.txt && echo post-create-ran",
    "postStartCommand": {{"a": "echo a > start-a.txt", "b": ["sh", "-c", "echo b > start-b.txt"]}},
    "postAttachCommand": "echo attached >> attach.txt && echo attach-ran",
    "mounts": ["source=cvm-test-cache-{nonce},target=/shared-cache,type=volume"],
    "forwardPorts": [3000, "db:5432"],
    "runArgs": ["--cpus=1.5", "--memory", "1g", "--shm-size=128m", "--env", "FROM_RUNARGS=yes", "--add-host=db.internal:10.9.8.7", "--cap-add=SYS_PTRACE"],
    "portsAttributes": {{"3000": {{"label": "web"}}}},
    "customizations": {{"claude-vm": {{"idleStop": "2h", "agent": "codex"}}, "vscode": {{"extensions": []}}}},
    "frobnicate": true, /* not a devcontainer property */
}}
"#
        ),
    );
}

#[test]
fn a_devcontainer_is_built_with_its_features_once_its_commands_run_and_rebuild_builds_again() {
    let ctx = Ctx::new();
    let nonce = format!("{:016x}", rand::random::<u64>());
    let proj = ctx.path("app");
    project(&proj, &nonce);
    let _volume = Volume(format!("cvm-test-cache-{nonce}"));
    let up = ctx
        .command(&["workspace", "up", "--json", proj.to_str().unwrap()])
        .env("DC_TEST_VALUE", "from-the-laptop")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&up.stderr).into_owned();
    assert!(up.status.success(), "{stderr}");
    let w: serde_json::Value = serde_json::from_slice(&up.stdout).unwrap();
    let w = &w["workspace"];
    let id = w["id"].as_str().unwrap().to_owned();
    let image = w["image"].as_str().unwrap().to_owned();
    let _images = Images(vec![image.clone()]);
    assert!(image.starts_with("claude-vm-dc-"), "{w:#}");
    // Progress: the file used, the build's own output, the features, each command.
    for said in [
        "devcontainer.json",
        "built ",
        "installing 2 features: ./greeter, ./after",
        "running onCreateCommand",
        "running postCreateCommand",
        "running postStartCommand",
        "  post-create-ran",
        "idle stop: 2h (customizations.claude-vm.idleStop",
        "not applied: forwardPorts",
        "runArgs not applied (only --cpus, --memory, --shm-size, --env, --add-host and --label are): --cap-add=SYS_PTRACE",
    ] {
        assert!(stderr.contains(said), "{said:?} not in:\n{stderr}");
    }
    // One warning for what it ignores.
    assert_eq!(
        stderr.matches("frobnicate").count(),
        1,
        "one warning naming it:\n{stderr}"
    );

    assert_eq!(
        dexec(&id, "cat /built-from-dockerfile"),
        format!("built {nonce}\n")
    );
    assert_eq!(dexec(&id, "cat /feature-order"), "greeter\nafter\n");
    // The safe part of runArgs is applied; the rest is not.
    assert_eq!(
        dexec(&id, "echo $FROM_RUNARGS; grep -c 'db.internal' /etc/hosts"),
        "yes\n1\n"
    );
    let host_config = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}} {{.HostConfig.ShmSize}} {{.HostConfig.CapAdd}}",
            &format!("claude-vm-{id}"),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&host_config.stdout).trim(),
        "1500000000 1073741824 134217728 <no value>"
    );
    // Its named volume is mounted, and outlives the container (checked after --rebuild).
    assert!(
        dexec(&id, "grep ' /shared-cache ' /proc/mounts || true").contains("/shared-cache"),
        "the volume of `mounts` is not mounted"
    );
    dexec(&id, "echo shared > /shared-cache/f");
    assert_eq!(dexec(&id, "cat /greeting"), "hola loud=true\n");
    assert_eq!(
        dexec(&id, "echo $DC_MODE $FROM_HOST $GREETER_HOME"),
        "test from-the-laptop /opt/greeter\n"
    );
    // Lifecycle commands ran as the agent user, in the project folder, with remoteEnv.
    assert_eq!(
        dexec(&id, "cat /workspace/app/post-create.txt"),
        "remote-app 1000 /workspace/app\n"
    );
    assert_eq!(
        dexec(
            &id,
            "cd /workspace/app && stat -c %u on-create.txt && cat start-a.txt start-b.txt"
        ),
        "1000\na\nb\n"
    );

    // The forwarded ports are listed, with their labels.
    let listed = ctx.list();
    let me = listed.iter().find(|w| w["id"] == id.as_str()).unwrap();
    assert_eq!(me["ports"], serde_json::json!(["3000 (web)", "db:5432"]));
    let long = ctx.run(&["workspace", "list", "-l"]).ok();
    assert!(
        long.stdout.contains("3000 (web), db:5432"),
        "{}",
        long.stdout
    );
    // And listed for the web UI.
    let page = web_page(&ctx);
    assert!(page.contains("ports 3000 (web), db:5432"), "{page}");

    // The commands' output is kept: `workspace logs`.
    let logs = ctx.run(&["workspace", "logs", &id]).ok();
    assert!(
        logs.stdout.contains("running postCreateCommand")
            && logs.stdout.contains("post-create-ran"),
        "{}",
        logs.stdout
    );
    // Attaching with a terminal runs postAttachCommand (under `script`, which gives
    // `exec -t` the terminal it needs).
    let attach = Command::new("script")
        .args([
            "-qec",
            &format!("{} exec -t {id} -- true", ctx.bin.display()),
            "/dev/null",
        ])
        .env("CLAUDE_VM_HOME", ctx.home.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let attach_out = String::from_utf8_lossy(&attach.stdout);
    assert!(
        attach.status.success() && attach_out.contains("attach-ran"),
        "{attach_out}"
    );
    assert_eq!(dexec(&id, "cat /workspace/app/attach.txt"), "attached\n");
    // The devcontainer's default agent: new-chat without --agent asks for codex.
    let chat = ctx.run(&["new-chat", &id, "-m", "hi"]).fails();
    assert!(chat.stderr.contains("codex"), "{}", chat.stderr);

    // postStartCommand runs at every start; the creation steps only once.
    dexec(
        &id,
        "cd /workspace/app && rm start-a.txt start-b.txt post-create.txt",
    );
    ctx.run(&["workspace", "down", &id]).ok();
    let resumed = ctx.run(&["workspace", "up", &id]).ok();
    assert!(
        resumed.stderr.contains("running postStartCommand")
            && !resumed.stderr.contains("postCreateCommand"),
        "{}",
        resumed.stderr
    );
    assert_eq!(
        dexec(
            &id,
            "cd /workspace/app && cat start-a.txt start-b.txt && ls post-create.txt 2>&1 | grep -c 'No such'"
        ),
        "a\nb\n1\n"
    );

    // The same configuration again: the image built before is used as it is.
    let second = ctx
        .run(&[
            "workspace",
            "up",
            "--json",
            "--name",
            "app-two",
            proj.to_str().unwrap(),
        ])
        .ok();
    assert!(
        second.stderr.contains("using the image built before")
            && !second.stderr.contains("(docker build)"),
        "{}",
        second.stderr
    );
    assert_eq!(second.json()["workspace"]["image"], image.as_str());
    // --rebuild builds it again; a change to a feature names another image.
    let rebuilt = ctx
        .run(&[
            "workspace",
            "up",
            "--json",
            "--rebuild",
            "--name",
            "app-three",
            proj.to_str().unwrap(),
        ])
        .ok();
    assert!(
        rebuilt.stderr.contains("(docker build)")
            && rebuilt.stderr.contains("installing 2 features"),
        "{}",
        rebuilt.stderr
    );
    write(
        &proj,
        ".devcontainer/after/install.sh",
        "#!/bin/sh\necho changed >> /feature-order\n",
    );
    let changed = ctx
        .run(&[
            "workspace",
            "up",
            "--json",
            "--name",
            "app-four",
            proj.to_str().unwrap(),
        ])
        .ok();
    let other = changed.json()["workspace"]["image"]
        .as_str()
        .unwrap()
        .to_owned();
    let _more = Images(vec![other.clone()]);
    assert_ne!(other, image);

    // `up WS --rebuild`: the container made again from the changed configuration; the
    // agent's caches, the project's files and the conversations' state stay on the volume.
    ctx.run(&[
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "mkdir -p $HOME/.cache/tool && echo kept > $HOME/.cache/tool/blob && echo mine > uncommitted.txt",
    ])
    .ok();
    write(
        &proj,
        ".devcontainer/Dockerfile",
        &format!(
            "FROM {}\nARG NONCE\nRUN echo \"built $NONCE\" > /built-from-dockerfile && echo v2 > /v2\n",
            test_image()
        ),
    );
    let rebuilt_ws = ctx
        .run(&["workspace", "up", "--json", "--rebuild", &id])
        .ok();
    assert!(
        rebuilt_ws.stderr.contains("replacing the container")
            && rebuilt_ws.stderr.contains("running postCreateCommand"),
        "{}",
        rebuilt_ws.stderr
    );
    let new_image = rebuilt_ws.json()["workspace"]["image"]
        .as_str()
        .unwrap()
        .to_owned();
    let _rebuilt_image = Images(vec![new_image.clone()]);
    assert_ne!(new_image, image);
    assert_eq!(
        dexec(
            &id,
            "cat /v2 /workspace/.home/.cache/tool/blob /workspace/app/uncommitted.txt /shared-cache/f"
        ),
        "v2\nkept\nmine\nshared\n"
    );
    assert_eq!(
        ctx.list().iter().find(|w| w["id"] == id.as_str()).unwrap()["image"],
        new_image.as_str()
    );
    // A workspace not made from a devcontainer.json has nothing to rebuild.
    let other = ctx.up(&[
        "--no-devcontainer",
        "--name",
        "no-dc",
        proj.to_str().unwrap(),
    ]);
    let refused = ctx
        .run(&[
            "workspace",
            "up",
            "--rebuild",
            other["id"].as_str().unwrap(),
        ])
        .fails();
    assert!(refused.stderr.contains("not"), "{}", refused.stderr);

    // --no-devcontainer ignores it: the plain default image.
    let plain = ctx.up(&[
        "--no-devcontainer",
        "--name",
        "plain",
        proj.to_str().unwrap(),
    ]);
    assert_eq!(plain["image"], test_image().as_str());
}

#[track_caller]
fn refused(ctx: &Ctx, proj: &Path, extra: &[&str], says: &[&str]) -> String {
    let mut args = vec!["workspace", "up"];
    args.extend_from_slice(extra);
    args.push(proj.to_str().unwrap());
    let out = ctx.run(&args).fails();
    for s in says {
        assert!(out.stderr.contains(s), "{s:?} not in:\n{}", out.stderr);
    }
    assert!(ctx.list().is_empty(), "nothing is left in the index");
    assert!(ctx.docker_debris().is_empty(), "{:?}", ctx.docker_debris());
    out.stderr
}

#[test]
fn bad_devcontainer_configurations_are_refused_with_the_reason_and_leave_nothing() {
    let ctx = Ctx::new();
    let proj = ctx.path("bad");
    write(&proj, "README.md", "# bad\n");
    let config = |text: &str| write(&proj, ".devcontainer/devcontainer.json", text);

    // Invalid JSONC: file, line and column.
    config("{\n  \"image\": \"x\",\n  oops\n}\n");
    refused(&ctx, &proj, &[], &["devcontainer.json", "3:"]);
    // A Dockerfile that is not there.
    config(r#"{"build": {"dockerfile": "Nope.Dockerfile"}}"#);
    refused(&ctx, &proj, &[], &["Nope.Dockerfile"]);
    // A variable that cannot be resolved.
    config(r#"{"image": "${localEnv}"}"#);
    refused(&ctx, &proj, &[], &["localEnv"]);
    // Docker Compose: planned, refused clearly.
    config(r#"{"dockerComposeFile": "compose.yml", "service": "app"}"#);
    refused(&ctx, &proj, &[], &["Compose"]);
    // An unknown feature option names the feature, the option and the valid ones.
    feature(
        &proj,
        "f",
        r#"{"id": "f", "version": "1.0.0", "options": {"size": {"type": "string", "default": "s"}}}"#,
        "true",
    );
    config(&format!(
        r#"{{"image": "{}", "features": {{"./f": {{"colour": "red"}}}}}}"#,
        test_image()
    ));
    refused(&ctx, &proj, &[], &["colour", "size"]);
    // A host folder mounted into the workspace.
    config(&format!(
        r#"{{"image": "{}", "mounts": ["source=/etc,target=/host-etc,type=bind"]}}"#,
        test_image()
    ));
    refused(&ctx, &proj, &[], &["/etc", "--allow-host-mounts"]);
    // A volume over the workspace's own, and a tmpfs.
    config(&format!(
        r#"{{"image": "{}", "mounts": ["source=x,target=/workspace,type=volume"]}}"#,
        test_image()
    ));
    refused(&ctx, &proj, &[], &["/workspace"]);
    config(&format!(
        r#"{{"image": "{}", "mounts": [{{"type": "tmpfs", "target": "/tmp/x"}}]}}"#,
        test_image()
    ));
    refused(&ctx, &proj, &[], &["named volume"]);
    // A runArgs value that is not what its flag takes.
    config(&format!(
        r#"{{"image": "{}", "runArgs": ["--cpus", "lots"]}}"#,
        test_image()
    ));
    refused(&ctx, &proj, &[], &["--cpus takes a number"]);
    // A build context that is not there.
    config(r#"{"build": {"dockerfile": "Dockerfile", "context": "../nowhere"}}"#);
    write(&proj, ".devcontainer/Dockerfile", "FROM scratch\n");
    refused(&ctx, &proj, &[], &["context"]);
    // --image and a devcontainer.json both.
    config(&format!(r#"{{"image": "{}"}}"#, test_image()));
    refused(&ctx, &proj, &["--image", "other:1"], &["--no-devcontainer"]);

    // A build that fails: its last lines shown, no image, nothing left behind.
    let nonce = format!("{:016x}", rand::random::<u64>());
    write(
        &proj,
        ".devcontainer/Dockerfile",
        &format!(
            "FROM {}\nRUN echo {nonce}\nRUN echo about-to-fail && exit 3\n",
            test_image()
        ),
    );
    config(r#"{"build": {"dockerfile": "Dockerfile"}}"#);
    refused(&ctx, &proj, &[], &["about-to-fail"]);
    // A feature whose install fails.
    feature(
        &proj,
        "f",
        r#"{"id": "f", "version": "1.0.0"}"#,
        "echo feature-broke >&2\nexit 4",
    );
    config(&format!(
        r#"{{"image": "{}", "features": {{"./f": {{}}}}}}"#,
        test_image()
    ));
    refused(&ctx, &proj, &[], &["feature-broke"]);
    let labels = Command::new("docker")
        .args([
            "images",
            "--filter",
            "label=dev.claude-vm.devcontainer",
            "--format",
            "{{.Label \"dev.claude-vm.devcontainer\"}}",
        ])
        .output()
        .unwrap();
    let labels = String::from_utf8_lossy(&labels.stdout).into_owned();
    assert!(
        !labels.contains(proj.to_str().unwrap()),
        "a failed build left an image: {labels}"
    );

    // A failing postCreateCommand leaves the workspace running, marked with the failure.
    config(&format!(
        r#"{{"image": "{}", "postCreateCommand": "echo setting-up; exit 5", "postStartCommand": "touch never"}}"#,
        test_image()
    ));
    let up = ctx
        .run(&["workspace", "up", "--json", proj.to_str().unwrap()])
        .ok();
    assert!(up.stderr.contains("setting-up"), "{}", up.stderr);
    assert!(
        up.stderr.contains("postCreateCommand failed with status 5"),
        "{}",
        up.stderr
    );
    let w = &up.json()["workspace"];
    assert_eq!(w["status"], "running");
    let listed = ctx.list();
    assert!(
        listed[0]["status_reason"]
            .as_str()
            .unwrap_or("")
            .contains("postCreateCommand failed"),
        "{listed:#?}"
    );
    let page = web_page(&ctx);
    assert!(
        page.contains("postCreateCommand failed with status 5"),
        "{page}"
    );
    let id = w["id"].as_str().unwrap();
    assert_eq!(
        dexec(
            id,
            "test -e /workspace/bad/never && echo ran || echo skipped"
        ),
        "skipped\n"
    );

    // --allow-host-mounts: the host folder is mounted, read-only when it says so.
    let shared = ctx.path("host-folder");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("on-the-host.txt"), "from the host\n").unwrap();
    config(&format!(
        r#"{{"image": "{}", "mounts": ["source={},target=/host-folder,type=bind,readonly"]}}"#,
        test_image(),
        shared.display()
    ));
    let mounted = ctx
        .run(&[
            "workspace",
            "up",
            "--json",
            "--allow-host-mounts",
            "--name",
            "mounted",
            proj.to_str().unwrap(),
        ])
        .ok();
    let mid = mounted.json()["workspace"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        dexec(
            &mid,
            "cat /host-folder/on-the-host.txt; touch /host-folder/x 2>/dev/null && echo writable || echo read-only"
        ),
        "from the host\nread-only\n"
    );
}

#[test]
fn devcontainer_init_writes_a_starter_that_up_then_uses() {
    let ctx = Ctx::new();
    for (name, marker, image) in [
        ("crate", "Cargo.toml", "rust"),
        ("web", "package.json", "javascript-node"),
        ("tool", "pyproject.toml", "python"),
    ] {
        let proj = ctx.path(name);
        write(&proj, marker, "\n");
        let out = ctx
            .run(&["devcontainer", "init", proj.to_str().unwrap(), "--json"])
            .ok()
            .json();
        let path = proj.join(".devcontainer/devcontainer.json");
        assert_eq!(out["path"], path.to_str().unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(image), "{name}: {text}");
        // A second init refuses to overwrite it; --force does.
        let again = ctx
            .run(&["devcontainer", "init", proj.to_str().unwrap()])
            .fails();
        assert!(again.stderr.contains("--force"), "{}", again.stderr);
        ctx.run(&["devcontainer", "init", proj.to_str().unwrap(), "--force"])
            .ok();
    }
    // `up` of a project without one says init exists (and uses the default image).
    let proj = ctx.path("plain");
    write(&proj, "Cargo.toml", "[package]\nname = \"plain\"\n");
    let up = ctx
        .run(&["workspace", "up", "--json", proj.to_str().unwrap()])
        .ok();
    assert!(
        up.stderr.contains("claude-vm devcontainer init"),
        "{}",
        up.stderr
    );
    assert_eq!(up.json()["workspace"]["image"], test_image().as_str());
}

#[test]
fn a_claude_code_conversation_works_in_a_devcontainer_workspace_with_what_its_features_installed() {
    use claude_vm_testkit::{Script, ScriptedModel};
    let model = ScriptedModel::start(
        Script::from_json(
            r#"[
              {"match": {"last_user_contains": "read the greeting"},
               "response": [{"tool_use": {"name": "Bash", "input": {"command": "cat /greeting && echo $DC_MODE as $(id -un) $(id -u)", "description": "read it"}}}]},
              {"match": {"after_tool_result_contains": "test as dev 1001"}, "response": [{"text": "The feature says hola, in test mode."}]}
            ]"#,
        )
        .unwrap(),
    )
    .unwrap();
    let ctx = common::chat::ctx_with_claude(&model.url(), "sk-ant-api03-devcontainer-test");
    let nonce = format!("{:016x}", rand::random::<u64>());
    let proj = ctx.path("app");
    project(&proj, &nonce);
    // This test's agent is claude (the project's file would pick codex), and it runs as
    // the image's own non-root user `dev` (uid 1001, kept as it is).
    let text = std::fs::read_to_string(proj.join(".devcontainer/devcontainer.json"))
        .unwrap()
        .replace(r#""agent": "codex""#, r#""agent": "claude""#)
        .replace(
            r#""name": "app","#,
            r#""name": "app", "remoteUser": "dev", "updateRemoteUserUID": false,"#,
        );
    write(&proj, ".devcontainer/devcontainer.json", &text);
    let dockerfile = std::fs::read_to_string(proj.join(".devcontainer/Dockerfile")).unwrap();
    write(
        &proj,
        ".devcontainer/Dockerfile",
        &format!("{dockerfile}RUN useradd -m -u 1001 -s /bin/sh dev\n"),
    );
    let _volume = Volume(format!("cvm-test-cache-{nonce}"));
    let w = ctx.up(&[proj.to_str().unwrap()]);
    let _images = Images(vec![w["image"].as_str().unwrap().to_owned()]);
    let id = w["id"].as_str().unwrap();
    let reply = ctx
        .run(&["new-chat", id, "-m", "please read the greeting", "--wait"])
        .ok();
    assert!(
        reply
            .stdout
            .contains("The feature says hola, in test mode."),
        "stdout: {}\nstderr: {}",
        reply.stdout,
        reply.stderr
    );
}

#[test]
fn initialize_command_runs_on_this_machine_only_once_trusted_and_registry_features_say_where_they_failed()
 {
    let ctx = Ctx::new();
    let proj = ctx.path("init");
    write(&proj, "README.md", "# init\n");
    let config = |text: &str| write(&proj, ".devcontainer/devcontainer.json", text);
    config(&format!(
        r#"{{"image": "{}", "initializeCommand": "echo ran-here >> host-side.txt && echo init-ran"}}"#,
        test_image()
    ));
    // Not trusted, no terminal to ask on: refused, naming the command and --trust.
    let stderr = refused(
        &ctx,
        &proj,
        &[],
        &["initializeCommand", "host-side.txt", "--trust"],
    );
    assert!(!proj.join("host-side.txt").exists(), "{stderr}");
    // --trust runs it here, in the project folder, before the workspace is made.
    let first = ctx
        .run(&["workspace", "up", "--trust", proj.to_str().unwrap()])
        .ok();
    assert!(first.stderr.contains("init-ran"), "{}", first.stderr);
    assert_eq!(
        std::fs::read_to_string(proj.join("host-side.txt")).unwrap(),
        "ran-here\n"
    );
    // Trusted from now on: the same command runs without asking; a changed one asks again.
    ctx.run(&["workspace", "up", "--name", "again", proj.to_str().unwrap()])
        .ok();
    assert_eq!(
        std::fs::read_to_string(proj.join("host-side.txt")).unwrap(),
        "ran-here\nran-here\n"
    );
    config(&format!(
        r#"{{"image": "{}", "initializeCommand": "echo something-else; exit 7"}}"#,
        test_image()
    ));
    let changed = ctx
        .run(&["workspace", "up", "--name", "third", proj.to_str().unwrap()])
        .fails();
    assert!(changed.stderr.contains("--trust"), "{}", changed.stderr);
    // A failing one fails `up` before anything is made.
    let before = ctx.list().len();
    let failed = ctx
        .run(&[
            "workspace",
            "up",
            "--trust",
            "--name",
            "third",
            proj.to_str().unwrap(),
        ])
        .fails();
    assert!(
        failed.stderr.contains("initializeCommand failed")
            && failed.stderr.contains("something-else"),
        "{}",
        failed.stderr
    );
    assert_eq!(ctx.list().len(), before);

    // A feature from a registry this machine cannot reach: the feature and the registry named.
    config(&format!(
        r#"{{"image": "{}", "features": {{"ghcr.io/devcontainers/features/node:1": {{}}}}}}"#,
        test_image()
    ));
    let started = std::time::Instant::now();
    let out = ctx
        .run(&["workspace", "up", "--name", "oci", proj.to_str().unwrap()])
        .fails();
    assert!(
        out.stderr.contains("ghcr.io") && out.stderr.contains("devcontainers/features/node"),
        "{}",
        out.stderr
    );
    assert!(started.elapsed().as_secs() < 90, "{:?}", started.elapsed());
    assert_eq!(ctx.list().len(), before);
}

#[test]
fn the_remote_user_runs_agents_commands_and_ssh_and_update_remote_user_uid_gives_it_your_ids() {
    let ctx = Ctx::new();
    let proj = ctx.path("users");
    write(&proj, "README.md", "# users\n");
    write(
        &proj,
        ".devcontainer/Dockerfile",
        &format!(
            "FROM {}\nRUN useradd -m -u 1001 -s /bin/sh dev && echo dev-home > /home/dev/from-image && chown dev /home/dev/from-image\n",
            test_image()
        ),
    );
    let config = |update: &str| {
        format!(
            r#"{{
    "build": {{"dockerfile": "Dockerfile"}},
    "remoteUser": "dev",{update}
    "postCreateCommand": "id -un > made-by.txt && id -u >> made-by.txt",
}}"#
        )
    };
    write(&proj, ".devcontainer/devcontainer.json", &config(""));
    // claude-vm run as root through sudo by uid 4321: the user gets that person's ids
    // (updateRemoteUserUID is true unless the file says otherwise).
    let up = common::Run::from(
        ctx.command(&["workspace", "up", "--json", proj.to_str().unwrap()])
            .env("SUDO_UID", "4321")
            .env("SUDO_GID", "4322")
            .output()
            .unwrap(),
    )
    .ok();
    assert!(
        up.stderr
            .contains("updateRemoteUserUID: dev gets uid 4321 and gid 4322"),
        "{}",
        up.stderr
    );
    assert!(
        up.stderr
            .contains("agents, lifecycle commands and ssh run as dev (uid 4321, gid 4322)"),
        "{}",
        up.stderr
    );
    let w = up.json()["workspace"].clone();
    let image = w["image"].as_str().unwrap().to_owned();
    assert!(image.ends_with("-uid4321-4322"), "{image}");
    let base = image.trim_end_matches("-uid4321-4322").to_owned();
    let _images = Images(vec![image.clone(), base]);
    let id = w["id"].as_str().unwrap().to_owned();
    // The lifecycle command, `exec` and the project's files: all the remote user's.
    assert_eq!(
        dexec(&id, "cat /workspace/users/made-by.txt"),
        "dev\n4321\n"
    );
    let who = "id -un; id -u; id -g; echo $HOME; cat ~/from-image";
    assert_eq!(
        ctx.run(&["exec", &id, "--", "sh", "-c", who]).ok().stdout,
        "dev\n4321\n4322\n/home/dev\ndev-home\n"
    );
    assert_eq!(
        dexec(&id, "stat -c %u:%g /workspace/users/README.md"),
        "4321:4322\n"
    );
    // `ssh` as the agent (no user given) and by the user's own name.
    let user_home = tempfile::tempdir().unwrap();
    let ssh = |args: &[&str]| {
        common::Run::from(
            ctx.command(args)
                .env("HOME", user_home.path())
                .output()
                .unwrap(),
        )
        .ok()
        .stdout
    };
    assert_eq!(ssh(&["ssh", &id, "--", "id", "-un"]).trim(), "dev");
    assert_eq!(
        ssh(&["ssh", "--user", "dev", &id, "--", "id", "-u"]).trim(),
        "4321"
    );

    // updateRemoteUserUID false, rebuilt: the user keeps the image's ids, and the files the
    // earlier ids owned are given to it.
    write(
        &proj,
        ".devcontainer/devcontainer.json",
        &config("\n    \"updateRemoteUserUID\": false,"),
    );
    let again = ctx
        .run(&["workspace", "up", "--json", "--rebuild", &id])
        .ok();
    assert!(
        !again.stderr.contains("updateRemoteUserUID:"),
        "{}",
        again.stderr
    );
    let _more = Images(vec![
        again.json()["workspace"]["image"]
            .as_str()
            .unwrap()
            .to_owned(),
    ]);
    assert_eq!(
        ctx.run(&["exec", &id, "--", "sh", "-c", who]).ok().stdout,
        "dev\n1001\n1001\n/home/dev\ndev-home\n"
    );
    assert_eq!(
        dexec(
            &id,
            "stat -c %u:%g /workspace/users/README.md /workspace/.home"
        ),
        "1001:1001\n1001:1001\n"
    );
    assert_eq!(
        ctx.run(&[
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            "echo more >> made-by.txt && tail -1 made-by.txt"
        ])
        .ok()
        .stdout,
        "more\n"
    );
}
