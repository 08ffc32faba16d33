//! The agent user's home lives on the volume ([`claude_vm_protocol::AGENT_HOME`]), so that
//! what an agent needs to resume a conversation (Claude Code's `~/.claude` session files,
//! Codex's `~/.codex`, caches, config) outlives the container and is in every backup.
//!
//! At each start, as root and before anything runs as the agent: when the volume has no
//! home yet, it is made (the agent's, 0700) and what the image keeps in the agent's home is
//! copied into it *by a process running as the agent* (so no root copy ever walks a tree
//! an agent controls); then the image's home path becomes a symlink to it. Root never
//! follows anything below the home on the volume.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use claude_vm_protocol::AGENT_HOME;

/// Put the agent user's home on the volume (see the module's documentation). Problems are
/// logged, never fatal: an agent with its home in the container still runs.
pub fn keep_on_volume() {
    // Only inside a workspace container: never touch a host's accounts.
    if std::env::var_os("CLAUDE_VM_WORKSPACE_ID").is_none() {
        return;
    }
    let Some(user) =
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(crate::agent_user::get().uid))
            .ok()
            .flatten()
    else {
        return;
    };
    if let Err(e) = link_home(
        &user.dir,
        Path::new(AGENT_HOME),
        user.uid.as_raw(),
        user.gid.as_raw(),
    ) {
        tracing::warn!(
            home = %user.dir.display(),
            "cannot keep the agent's home on the volume: {e}"
        );
    }
}

fn link_home(image_home: &Path, on_volume: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    if image_home == on_volume {
        return Ok(());
    }
    let image = std::fs::symlink_metadata(image_home).ok();
    if let Some(m) = &image
        && m.file_type().is_symlink()
        && std::fs::read_link(image_home)? == on_volume
    {
        return Ok(());
    }
    if std::fs::symlink_metadata(on_volume).is_err() {
        // Made by root where agents cannot interfere (the volume's root is sticky), then
        // given away, before anything is copied in.
        std::fs::DirBuilder::new().mode(0o700).create(on_volume)?;
        std::os::unix::fs::lchown(on_volume, Some(uid), Some(gid))?;
        if let Some(m) = &image
            && m.is_dir()
            && m.uid() == uid
        {
            copy_as_agent(image_home, on_volume, uid, gid)?;
        }
    }
    // The image's home (in the container's own layer) is set aside and replaced.
    if let Some(m) = &image {
        let aside = aside_name(image_home);
        if m.is_dir() {
            std::fs::rename(image_home, &aside)?;
        } else {
            std::fs::remove_file(image_home)?;
        }
    } else if let Some(parent) = image_home.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::os::unix::fs::symlink(on_volume, image_home)?;
    Ok(())
}

fn aside_name(home: &Path) -> PathBuf {
    let mut name = home.as_os_str().to_owned();
    name.push(".image");
    let mut p = PathBuf::from(name);
    let mut n = 1;
    while std::fs::symlink_metadata(&p).is_ok() {
        let mut name = home.as_os_str().to_owned();
        name.push(format!(".image.{n}"));
        p = PathBuf::from(name);
        n += 1;
    }
    p
}

/// `cp -a image_home/. on_volume/` as the agent user.
fn copy_as_agent(from: &Path, to: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    let mut src = from.as_os_str().to_owned();
    src.push("/.");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg("--")
        .arg(src)
        .arg(to)
        .uid(uid)
        .gid(gid)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .stdin(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "copying {} into {} failed ({status})",
            from.display(),
            to.display()
        )));
    }
    Ok(())
}
