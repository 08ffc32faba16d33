//! Where a workspace's project comes from: a local folder (copied in) or a git URL (cloned
//! inside the workspace).

use serde::{Deserialize, Serialize};

/// The origin of a workspace's project, as recorded in the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "location", rename_all = "snake_case")]
pub enum Source {
    /// An absolute local path whose contents are copied into the workspace volume.
    Path(String),
    /// A git URL cloned inside the workspace.
    Git(String),
}

impl Source {
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Path(_) => "path",
            Source::Git(_) => "git",
        }
    }

    pub fn location(&self) -> &str {
        match self {
            Source::Path(p) | Source::Git(p) => p,
        }
    }

    pub fn from_parts(kind: &str, location: String) -> Option<Source> {
        match kind {
            "path" => Some(Source::Path(location)),
            "git" => Some(Source::Git(location)),
            _ => None,
        }
    }
}

/// Whether the argument of `workspace up` is a git URL (as opposed to a path, a name or an id).
///
/// URLs with a scheme git understands, and scp-like `user@host:path` addresses.
pub fn is_git_url(arg: &str) -> bool {
    const SCHEMES: &[&str] = &[
        "https://",
        "http://",
        "ssh://",
        "git://",
        "file://",
        "git+ssh://",
    ];
    if SCHEMES.iter().any(|s| arg.starts_with(s)) {
        return true;
    }
    // scp-like syntax: [user@]host:path, with no slash before the colon (git's own rule).
    if let Some((before, after)) = arg.split_once(':') {
        return before.contains('@') && !before.contains('/') && !after.is_empty();
    }
    false
}

/// The project's folder name inside the workspace (`/workspace/<project>`), derived from the
/// last path segment of a path or URL and made safe for a path component.
pub fn project_name(location: &str) -> String {
    let trimmed = location.trim_end_matches('/');
    let last = trimmed
        .rsplit(['/', ':'])
        .find(|s| !s.is_empty())
        .unwrap_or("");
    let last = last.strip_suffix(".git").unwrap_or(last);
    let cleaned: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_matches(|c| c == '.' || c == '-').to_owned();
    if cleaned.is_empty() {
        "project".to_owned()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_url_detection() {
        for url in [
            "https://github.com/a/b.git",
            "http://host/x",
            "ssh://git@host/x.git",
            "git://host/x",
            "file:///tmp/repo.git",
            "git@github.com:a/b.git",
        ] {
            assert!(is_git_url(url), "{url}");
        }
        for not in [
            ".",
            "/tmp/repo",
            "../x",
            "bold-fire-1234",
            "3f2504e0bb11",
            "C:x",
            "./a:b",
        ] {
            assert!(!is_git_url(not), "{not}");
        }
    }

    #[test]
    fn project_names() {
        let cases = [
            ("/home/me/ecommerce-app", "ecommerce-app"),
            ("/home/me/ecommerce-app/", "ecommerce-app"),
            ("https://github.com/a/b.git", "b"),
            ("git@github.com:org/my repo.git", "my-repo"),
            ("file:///tmp/x/repo.git", "repo"),
            ("/", "project"),
            ("/tmp/..", "project"),
            ("/tmp/.hidden", "hidden"),
        ];
        for (input, want) in cases {
            assert_eq!(project_name(input), want, "{input}");
        }
    }
}
