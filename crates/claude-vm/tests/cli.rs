//! The command line itself: help, version, completions, output streams.

mod common;

use common::Ctx;

#[test]
fn help_lists_the_design_commands_and_hides_the_daemon() {
    let ctx = Ctx::new();
    let help = ctx.run(&["--help"]).ok();
    for cmd in ["provider", "workspace", "completions"] {
        assert!(help.stdout.contains(cmd), "{}", help.stdout);
    }
    assert!(
        !help
            .stdout
            .lines()
            .any(|l| l.trim_start().starts_with("agent ")),
        "{}",
        help.stdout
    );
    let ws = ctx.run(&["workspace", "--help"]).ok();
    for cmd in ["up", "list", "down", "delete"] {
        assert!(ws.stdout.contains(cmd), "{}", ws.stdout);
    }
    let up = ctx.run(&["workspace", "up", "--help"]).ok();
    for flag in ["--provider", "--image", "--branch", "--name", "--json"] {
        assert!(up.stdout.contains(flag), "{}", up.stdout);
    }
    let version = ctx.run(&["--version"]).ok();
    assert!(version.stdout.contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn completions_are_generated_for_common_shells() {
    let ctx = Ctx::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = ctx.run(&["completions", shell]).ok();
        assert!(out.stdout.contains("workspace"), "{shell}: {}", out.stdout);
    }
    ctx.run(&["completions", "tcsh"]).fails();
}

#[test]
fn data_goes_to_stdout_and_chatter_to_stderr() {
    let ctx = Ctx::new();
    let p = ctx.path("p");
    std::fs::create_dir_all(&p).unwrap();
    let out = ctx
        .run(&["workspace", "up", p.to_str().unwrap(), "--name", "streams"])
        .ok();
    assert_eq!(out.stdout, "streams\n");
    assert!(out.stderr.contains("creating workspace streams"));
    let quiet = ctx.run(&["workspace", "down", "streams", "-q"]).ok();
    assert_eq!(quiet.stdout, "");
    assert_eq!(quiet.stderr, "");
    let empty = Ctx::new();
    let none = empty.run(&["workspace", "list"]).ok();
    assert_eq!(none.stdout, "");
    assert!(none.stderr.contains("no workspaces"));
    assert_eq!(
        empty
            .run(&["workspace", "list", "--json"])
            .ok()
            .stdout
            .trim(),
        "[]"
    );
}
