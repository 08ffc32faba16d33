//! Image references (`debian:bookworm`, `ghcr.io/org/img:1.2@sha256:...`), checked before
//! any provider sees one, so a malformed name is the user's clear error rather than the
//! engine's.

/// Why an image reference is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image name {name:?}: {reason}")]
pub struct InvalidImage {
    pub name: String,
    pub reason: &'static str,
}

/// Check `s` against the grammar of Docker's image references: an optional registry host
/// (with a port), lowercase path components separated by `/` (each of `[a-z0-9]` runs
/// joined by `.`, `_`, `__` or `-`s), an optional `:tag` and an optional `@algo:hex` digest.
pub fn check(s: &str) -> Result<(), InvalidImage> {
    let bad = |reason| {
        Err(InvalidImage {
            name: s.to_owned(),
            reason,
        })
    };
    if s.is_empty() || s.len() > 4096 {
        return bad("it must have 1 to 4096 characters");
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        let Some((algo, hex)) = d.split_once(':') else {
            return bad("a digest is `algorithm:hex`");
        };
        if algo.is_empty()
            || !algo
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
            || hex.len() < 32
            || !hex.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return bad("a digest is `algorithm:hex`");
        }
    }
    // A tag follows the last `:` after the last `/` (an earlier `:` is a registry port).
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (path, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let ok_first = t
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok_first
            || t.len() > 128
            || !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            return bad("a tag is up to 128 letters, digits, `_`, `.` and `-`");
        }
    }
    let mut parts: Vec<&str> = path.split('/').collect();
    if parts.len() > 1 {
        let host = parts[0];
        // The first part is a registry when it looks like a host: a dot, a port, localhost.
        if host.contains('.') || host.contains(':') || host == "localhost" {
            let (name, port) = match host.split_once(':') {
                Some((n, p)) => (n, Some(p)),
                None => (host, None),
            };
            let host_ok = !name.is_empty()
                && name.split('.').all(|l| {
                    !l.is_empty()
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            let port_ok =
                port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
            if !host_ok || !port_ok {
                return bad("the registry must be a host name, with an optional :port");
            }
            parts.remove(0);
        }
    }
    for part in parts {
        if !component_ok(part) {
            return bad(
                "each part of the name is lowercase letters and digits, joined by `.`, `_` or `-`",
            );
        }
    }
    Ok(())
}

fn component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator: `.`, `_`, `__`, or any run of `-`.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

fn alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn references_docker_accepts_pass_and_others_do_not() {
        for ok in [
            "debian",
            "debian:bookworm",
            "claude-vm-test-base:bookworm-3",
            "library/ubuntu:24.04",
            "ghcr.io/org/img:1.2",
            "localhost:5000/a/b",
            "my.registry:443/team/app_x__y--z:v1.0-rc_1",
            "alpine@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "a/b:c@sha256:0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "ö",
            "Debian",
            "debian:",
            ":tag",
            "a b",
            "a//b",
            "-a",
            "a-",
            "a..b",
            "a___b",
            "debian:bad tag",
            "debian:.x",
            "a@sha256:xyz",
            "a@sha256",
            "host:port/x",
            "\u{17}",
            "debian\n",
        ] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
    }
}
