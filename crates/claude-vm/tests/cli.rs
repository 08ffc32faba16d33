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

#[test]
fn a_large_copy_shows_progress_on_a_terminal() {
    let ctx = Ctx::new();
    let p = ctx.path("big");
    std::fs::create_dir_all(&p).unwrap();
    let chunk = vec![3u8; 1 << 20];
    let mut f = std::fs::File::create(p.join("big.bin")).unwrap();
    for _ in 0..300 {
        std::io::Write::write_all(&mut f, &chunk).unwrap();
    }
    // `script` gives the command a real terminal, as a user has.
    let cmdline = format!(
        "{} workspace up {} --name progress",
        ctx.bin.display(),
        p.display()
    );
    let log = ctx.path("typescript");
    let out = ctx
        .command(&[])
        .env("TERM", "xterm")
        .output_of("script", &["-qefc", &cmdline, log.to_str().unwrap()]);
    let screen = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(out.status.success(), "{screen}");
    assert!(screen.contains("copying 1 file (314.6 MB)"), "{screen}");
    // The bar shows bytes done out of the total.
    assert!(
        screen.contains("/300.00 MiB") || screen.contains("/ 300.00 MiB"),
        "{screen}"
    );
}

trait OutputOf {
    fn output_of(&mut self, program: &str, args: &[&str]) -> std::process::Output;
}

impl OutputOf for std::process::Command {
    /// Run another program with this command's environment.
    fn output_of(&mut self, program: &str, args: &[&str]) -> std::process::Output {
        let mut c = std::process::Command::new(program);
        c.args(args);
        for (k, v) in self.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c.output().unwrap()
    }
}
