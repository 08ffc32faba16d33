//! `updateRemoteUserUID`: the Dockerfile of the layer that gives the devcontainer's user
//! the ids of the person running claude-vm, so files of host folders mounted into the
//! workspace belong to the same person on both sides (the spec's default on Linux).
//!
//! Written from the spec: the user's uid becomes the new one unless another user of the
//! image has it (then nothing changes, and the build says so); its primary group's gid
//! becomes the new one unless another group has it; its home is given to the new ids.
//! `/etc/passwd` and `/etc/group` are rewritten in place (no `usermod` needed, so it works
//! on any image with `awk`).

use crate::Error;

/// Whether `user` can be a user of an image's account files as a devcontainer.json names
/// it (`remoteUser`, `containerUser`): a name or uid of letters, digits and `_.-`, starting
/// with a letter, digit or `_`, at most 32 long; nothing a shell reads specially.
pub fn is_user_name(user: &str) -> bool {
    user.len() <= 32
        && user
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

fn checked_user(user: &str) -> Result<&str, Error> {
    if is_user_name(user) {
        Ok(user)
    } else {
        Err(Error::Dockerfile {
            what: "the remote user".to_owned(),
            value: user.to_owned(),
            why: "is not a user name",
        })
    }
}

/// The Dockerfile layering the id change of `user` to `uid`:`gid` on `base_image`.
pub fn update_uid_dockerfile(
    base_image: &str,
    user: &str,
    uid: u32,
    gid: u32,
) -> Result<String, Error> {
    let user = checked_user(user)?;
    if base_image
        .chars()
        .any(|c| c.is_control() || c.is_whitespace())
        || base_image.is_empty()
    {
        return Err(Error::Dockerfile {
            what: "the base image".to_owned(),
            value: base_image.to_owned(),
            why: "must be one word",
        });
    }
    // The name is checked to letters, digits and `_.-`: nothing a shell reads specially.
    Ok(format!(
        r#"FROM {base_image}
USER root
RUN set -e; u='{user}'; uid={uid}; gid={gid}; \
    entry=$(awk -F: -v u="$u" '$1 == u || $3 == u {{ print; exit }}' /etc/passwd); \
    if [ -z "$entry" ]; then echo "claude-vm: the image has no user $u; no ids changed"; exit 0; fi; \
    name=$(echo "$entry" | cut -d: -f1); old_uid=$(echo "$entry" | cut -d: -f3); \
    old_gid=$(echo "$entry" | cut -d: -f4); home=$(echo "$entry" | cut -d: -f6); \
    if [ "$old_uid" = 0 ]; then echo "claude-vm: $name is root; no ids changed"; exit 0; fi; \
    if awk -F: -v id="$uid" -v n="$name" '$3 == id && $1 != n {{ f = 1 }} END {{ exit !f }}' /etc/passwd; then \
        echo "claude-vm: uid $uid belongs to another user of the image; $name keeps uid $old_uid"; exit 0; fi; \
    new_gid=$old_gid; \
    if ! awk -F: -v id="$gid" -v old="$old_gid" '$3 == id && $3 != old {{ f = 1 }} END {{ exit !f }}' /etc/group; then \
        new_gid=$gid; \
        awk -F: -v OFS=: -v old="$old_gid" -v id="$gid" '$3 == old {{ $3 = id }} {{ print }}' /etc/group > /tmp/claude-vm-group; \
        cat /tmp/claude-vm-group > /etc/group; rm -f /tmp/claude-vm-group; \
    else echo "claude-vm: gid $gid belongs to another group of the image; $name keeps gid $old_gid"; fi; \
    awk -F: -v OFS=: -v n="$name" -v uid="$uid" -v gid="$new_gid" '$1 == n {{ $3 = uid; $4 = gid }} {{ print }}' /etc/passwd > /tmp/claude-vm-passwd; \
    cat /tmp/claude-vm-passwd > /etc/passwd; rm -f /tmp/claude-vm-passwd; \
    if [ -n "$home" ] && [ "$home" != / ] && [ -d "$home" ]; then chown -R "$uid:$new_gid" "$home"; fi; \
    echo "claude-vm: $name now has uid $uid, gid $new_gid"
"#
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layer_names_the_user_and_the_ids_and_refuses_what_is_not_a_name() {
        let d = update_uid_dockerfile("claude-vm-dc-0123", "dev", 4321, 4322).unwrap();
        assert!(d.starts_with("FROM claude-vm-dc-0123\nUSER root\n"), "{d}");
        assert!(d.contains("u='dev'; uid=4321; gid=4322;"), "{d}");
        for bad in ["", "a b", "x'y", "$(id)", "-rf", "a;b", &"x".repeat(33)] {
            assert!(update_uid_dockerfile("img", bad, 1, 1).is_err(), "{bad:?}");
        }
        assert!(update_uid_dockerfile("a b", "dev", 1, 1).is_err());
        assert!(update_uid_dockerfile("img\nRUN x", "dev", 1, 1).is_err());
    }
}
