//! Providers: CRUD, validation, secret masking, options reaching Docker, file permissions.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::Ctx;

#[test]
fn provider_crud_masks_secrets_and_validates_options() {
    let ctx = Ctx::new();
    // The built-in provider exists and is the default.
    let list = ctx.run(&["provider", "list", "--json"]).ok().json();
    assert_eq!(list[0]["name"], "docker");
    assert_eq!(list[0]["default"], true);

    ctx.run(&[
        "provider",
        "add",
        "box",
        "--type",
        "docker",
        "--option",
        "cpus=1.5",
        "--option",
        "memory=256m",
        "--option",
        "registry_user=me",
        "--option",
        "registry_password=hunter2",
    ])
    .ok();
    let verbose = ctx.run(&["provider", "list", "-v"]).ok();
    assert!(
        verbose.stdout.contains("registry_password=********"),
        "{}",
        verbose.stdout
    );
    assert!(verbose.stdout.contains("cpus=1.5") && verbose.stdout.contains("registry_user=me"));
    let json = ctx.run(&["provider", "list", "--json"]).ok();
    assert!(!json.stdout.contains("hunter2") && !verbose.stdout.contains("hunter2"));
    let plain = ctx.run(&["provider", "list"]).ok();
    assert!(
        !plain.stdout.contains("cpus"),
        "options only with -v:\n{}",
        plain.stdout
    );

    // errors
    let dup = ctx
        .run(&["provider", "add", "box", "--type", "docker"])
        .fails();
    assert!(
        dup.stderr
            .contains("a provider named \"box\" already exists"),
        "{}",
        dup.stderr
    );
    let unknown_opt = ctx
        .run(&[
            "provider",
            "add",
            "b2",
            "--type",
            "docker",
            "--option",
            "colour=blue",
        ])
        .fails();
    assert!(
        unknown_opt.stderr.contains("unknown option \"colour\""),
        "{}",
        unknown_opt.stderr
    );
    let bad_value = ctx
        .run(&[
            "provider",
            "add",
            "b2",
            "--type",
            "docker",
            "--option",
            "cpus=lots",
        ])
        .fails();
    assert!(
        bad_value
            .stderr
            .contains("invalid value \"lots\" for option \"cpus\""),
        "{}",
        bad_value.stderr
    );
    let no_eq = ctx
        .run(&[
            "provider", "add", "b2", "--type", "docker", "--option", "cpus",
        ])
        .fails();
    assert!(
        no_eq.stderr.contains("not of the form key=value"),
        "{}",
        no_eq.stderr
    );
    let bad_type = ctx.run(&["provider", "add", "b2", "--type", "fly"]).fails();
    assert!(
        bad_type.stderr.contains("unknown provider type \"fly\""),
        "{}",
        bad_type.stderr
    );
    let no_type = ctx.run(&["provider", "add", "b2"]).fails();
    assert!(
        no_type.stderr.contains("--type is required"),
        "{}",
        no_type.stderr
    );
    let bad_name = ctx
        .run(&["provider", "add", "Bad Name", "--type", "docker"])
        .fails();
    assert!(
        bad_name.stderr.contains("invalid provider name"),
        "{}",
        bad_name.stderr
    );

    // set-options changes and removes
    let set = ctx
        .run(&[
            "provider",
            "set-options",
            "box",
            "--option",
            "memory=",
            "--option",
            "network=bridge",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(set["options"]["network"], "bridge");
    assert!(set["options"].get("memory").is_none());
    assert_eq!(set["options"]["registry_password"], "********");
    let missing = ctx
        .run(&["provider", "set-options", "nope", "--option", "cpus=1"])
        .fails();
    assert!(
        missing.stderr.contains("no provider named \"nope\""),
        "{}",
        missing.stderr
    );

    // Options reach Docker.
    let proj = ctx.path("p");
    std::fs::create_dir_all(&proj).unwrap();
    let w = ctx.up(&[proj.to_str().unwrap(), "--provider", "box"]);
    assert_eq!(w["provider"], "box");
    let id = w["id"].as_str().unwrap();
    let inspect = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.HostConfig.NanoCpus}} {{.HostConfig.NetworkMode}}",
            &format!("claude-vm-{id}"),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&inspect.stdout).trim(),
        "1500000000 bridge"
    );

    // A provider with workspaces cannot be deleted; deletion needs confirmation.
    let in_use = ctx.run(&["provider", "delete", "box", "-y"]).fails();
    assert!(
        in_use.stderr.contains("still has workspaces"),
        "{}",
        in_use.stderr
    );
    ctx.run(&["workspace", "delete", id, "-y"]).ok();
    let unconfirmed = ctx.run(&["provider", "delete", "box"]).fails();
    assert!(
        unconfirmed.stderr.contains("pass -y/--yes"),
        "{}",
        unconfirmed.stderr
    );
    ctx.run(&["provider", "delete", "box", "-y"]).ok();
    let list = ctx.run(&["provider", "list", "--json"]).ok().json();
    assert_eq!(list.as_array().unwrap().len(), 1);

    // Memory limit reaches Docker too.
    ctx.run(&[
        "provider",
        "set-options",
        "docker",
        "--option",
        "memory=512m",
    ])
    .ok();
    let w = ctx.up(&[proj.to_str().unwrap()]);
    let inspect = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.HostConfig.Memory}}",
            &format!("claude-vm-{}", w["id"].as_str().unwrap()),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&inspect.stdout).trim(),
        (512u64 << 20).to_string()
    );
}

#[test]
fn state_files_are_private_to_the_owner() {
    let ctx = Ctx::new();
    ctx.run(&[
        "provider",
        "add",
        "s",
        "--type",
        "docker",
        "--option",
        "registry_password=pw",
    ])
    .ok();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(ctx.home.path()), 0o700);
    assert_eq!(mode(&ctx.home.path().join("state.db")), 0o600);
    for extra in ["state.db-wal", "state.db-shm"] {
        let p = ctx.home.path().join(extra);
        if p.exists() {
            assert_eq!(mode(&p) & 0o077, 0, "{extra} readable by others");
        }
    }
    // A fresh home gets a default config, owner-only.
    let fresh = tempfile::tempdir().unwrap();
    let home = fresh.path().join("h");
    let out = Command::new(&ctx.bin)
        .args(["provider", "list"])
        .env("CLAUDE_VM_HOME", &home)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(mode(&home.join("config.yaml")), 0o600);
    let cfg = std::fs::read_to_string(home.join("config.yaml")).unwrap();
    assert!(
        cfg.contains("default_provider: docker") && cfg.contains("enabled:"),
        "{cfg}"
    );
}

#[test]
fn an_invalid_config_is_reported_with_its_path() {
    let ctx = Ctx::new();
    std::fs::write(
        ctx.home.path().join("config.yaml"),
        "agents:\n  defaults:\n    agent: cursor\n",
    )
    .unwrap();
    let out = ctx.run(&["workspace", "list"]).fails();
    assert!(out.stderr.contains("invalid config"), "{}", out.stderr);
    assert!(out.stderr.contains("config.yaml"), "{}", out.stderr);
    // --config points elsewhere
    let alt = ctx.path("alt.yaml");
    std::fs::write(&alt, format!("default_image: {}\n", common::test_image())).unwrap();
    ctx.run(&["--config", alt.to_str().unwrap(), "workspace", "list"])
        .ok();
}
