//! Where a provider.yaml comes from, as a user names it: a file, an https URL, a GitHub
//! repository's release, or the short name of a published provider (`aws`).
//!
//! Only the naming is decided here; the caller reads the file or downloads the URL.
//! Plain http is refused except to this machine, since the manifest decides which
//! commands run.

use std::fmt;
use std::path::PathBuf;

/// A provider.yaml's origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file on this machine. A leading `~/` is kept: the caller expands it.
    Local(PathBuf),
    /// A URL of the file itself.
    Url(String),
    /// The `provider.yaml` asset of a GitHub release: the latest one, or the release
    /// tagged `version`.
    Github {
        repo: String,
        version: Option<String>,
    },
}

/// A provider source that names nothing claude-vm can load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("provider source '{text}': {problem}")]
pub struct SourceError {
    pub text: String,
    pub problem: String,
}

/// The providers a short name stands for: those DevPod's documentation lists as
/// published machine providers (its own, and Hetzner from the community). Kubernetes and
/// SSH are left out: the first needs DevPod's Kubernetes driver, and claude-vm has its own
/// SSH provider.
pub const PUBLISHED: &[(&str, &str)] = &[
    ("aws", "loft-sh/devpod-provider-aws"),
    ("azure", "loft-sh/devpod-provider-azure"),
    ("digitalocean", "loft-sh/devpod-provider-digitalocean"),
    ("gcloud", "loft-sh/devpod-provider-gcloud"),
    ("hetzner", "mrsimonemms/devpod-provider-hetzner"),
];

/// The GitHub repository of the published provider called `name`.
pub fn published(name: &str) -> Option<&'static str> {
    PUBLISHED
        .iter()
        .find(|(short, _)| *short == name)
        .map(|(_, repo)| *repo)
}

impl Source {
    /// Reads a source as a user writes it:
    /// - `/abs/provider.yaml`, `./p.yaml`, `../p.yaml`, `~/p.yaml`, `anything.yaml|.yml`:
    ///   a file;
    /// - `https://...`: a URL (`http://` only to `localhost`, `127.0.0.1` or `[::1]`);
    /// - `owner/name`, `github.com/owner/name`, either with `@TAG`: a GitHub release;
    /// - `aws`, `aws@TAG`: a [`published`] provider.
    pub fn parse(text: &str) -> Result<Source, SourceError> {
        let fail = |problem: &str| SourceError {
            text: text.to_string(),
            problem: problem.to_string(),
        };
        let s = text.trim();
        if s.is_empty() {
            return Err(fail(
                "it is empty; give a path, an https URL, owner/repo or a published name",
            ));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(fail("it contains spaces or control characters"));
        }
        if let Some(rest) = s.strip_prefix("https://") {
            if host(rest).is_empty() {
                return Err(fail("the URL has no host"));
            }
            return Ok(Source::Url(s.to_string()));
        }
        if let Some(rest) = s.strip_prefix("http://") {
            return match host(rest) {
                "localhost" | "127.0.0.1" | "[::1]" => Ok(Source::Url(s.to_string())),
                _ => Err(fail(
                    "plain http is only allowed to this machine (localhost, 127.0.0.1, [::1]); \
                     use an https:// URL",
                )),
            };
        }
        if s.contains("://") {
            return Err(fail("only https:// URLs are supported"));
        }
        let looks_like_path = ["/", "./", "../", "~/"].iter().any(|p| s.starts_with(p))
            || s.ends_with(".yaml")
            || s.ends_with(".yml");
        if looks_like_path {
            return Ok(Source::Local(PathBuf::from(s)));
        }
        github(s.strip_prefix("github.com/").unwrap_or(s)).map_err(|problem| fail(&problem))
    }

    /// Where to download the manifest: the URL itself, or the GitHub release asset; `None`
    /// for a file.
    pub fn download_url(&self) -> Option<String> {
        match self {
            Source::Local(_) => None,
            Source::Url(url) => Some(url.clone()),
            Source::Github {
                repo,
                version: None,
            } => Some(format!(
                "https://github.com/{repo}/releases/latest/download/provider.yaml"
            )),
            Source::Github {
                repo,
                version: Some(version),
            } => Some(format!(
                "https://github.com/{repo}/releases/download/{version}/provider.yaml"
            )),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Local(path) => write!(f, "{}", path.display()),
            Source::Url(url) => f.write_str(url),
            Source::Github {
                repo,
                version: None,
            } => f.write_str(repo),
            Source::Github {
                repo,
                version: Some(version),
            } => write!(f, "{repo}@{version}"),
        }
    }
}

/// The host of a URL without its scheme: before the path, without user or port.
fn host(rest: &str) -> &str {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    if host_port.starts_with('[') {
        return host_port
            .find(']')
            .map_or(host_port, |end| &host_port[..=end]);
    }
    host_port.split(':').next().unwrap_or("")
}

/// `owner/name[@tag]` or a published `name[@tag]`.
fn github(s: &str) -> Result<Source, String> {
    let (path, version) = match s.rsplit_once('@') {
        Some((path, version)) => (path, Some(version)),
        None => (s, None),
    };
    if let Some(version) = version {
        let tag_char = |c: char| c.is_ascii_alphanumeric() || "._+-".contains(c);
        if version.is_empty() || matches!(version, "." | "..") || !version.chars().all(tag_char) {
            return Err(format!(
                "'{version}' is not a release tag (like v0.1.0) after the '@'"
            ));
        }
    }
    let path = path.trim_end_matches('/');
    let repo = match path.split('/').collect::<Vec<_>>().as_slice() {
        [name] => published(name).map(str::to_string).ok_or_else(|| {
            let names: Vec<&str> = PUBLISHED.iter().map(|(short, _)| *short).collect();
            format!(
                "'{name}' is not a published provider ({}); give owner/repo for a GitHub \
                 repository, an https URL or a path to a provider.yaml",
                names.join(", ")
            )
        })?,
        [owner, name] => {
            let owner_ok = !owner.is_empty()
                && !owner.starts_with('-')
                && owner.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            let name_ok = !name.is_empty()
                && !matches!(*name, "." | "..")
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !owner_ok || !name_ok {
                return Err(format!(
                    "'{path}' is not a GitHub repository name (owner/repo)"
                ));
            }
            path.to_string()
        }
        _ => {
            return Err(
                "not a path (start it with ./ or /), an https URL, owner/repo or a published \
                 name"
                    .to_string(),
            );
        }
    };
    Ok(Source::Github {
        repo,
        version: version.map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gh(repo: &str, version: Option<&str>) -> Source {
        Source::Github {
            repo: repo.into(),
            version: version.map(Into::into),
        }
    }

    #[test]
    fn reads_sources() {
        let local = |p: &str| Source::Local(PathBuf::from(p));
        let url = |u: &str| Source::Url(u.into());
        let cases = [
            (
                "/etc/claude-vm/provider.yaml",
                local("/etc/claude-vm/provider.yaml"),
            ),
            ("./provider.yaml", local("./provider.yaml")),
            ("../mine/provider.yml", local("../mine/provider.yml")),
            ("~/providers/mine", local("~/providers/mine")),
            ("provider.yaml", local("provider.yaml")),
            ("providers/cloud.yml", local("providers/cloud.yml")),
            (" ./p.yaml\n", local("./p.yaml")),
            (
                "https://example.com/releases/provider.yaml",
                url("https://example.com/releases/provider.yaml"),
            ),
            (
                "http://localhost:8000/p.yaml",
                url("http://localhost:8000/p.yaml"),
            ),
            ("http://127.0.0.1/p.yaml", url("http://127.0.0.1/p.yaml")),
            ("http://[::1]:9000/p.yaml", url("http://[::1]:9000/p.yaml")),
            ("acme/devpod-provider-x", gh("acme/devpod-provider-x", None)),
            (
                "acme/devpod-provider-x/",
                gh("acme/devpod-provider-x", None),
            ),
            ("acme/x@v0.1.0", gh("acme/x", Some("v0.1.0"))),
            ("github.com/acme/x.go", gh("acme/x.go", None)),
            (
                "github.com/acme/x@v1.0.0-beta.2",
                gh("acme/x", Some("v1.0.0-beta.2")),
            ),
            ("aws", gh("loft-sh/devpod-provider-aws", None)),
            (
                "gcloud@v0.0.1",
                gh("loft-sh/devpod-provider-gcloud", Some("v0.0.1")),
            ),
            ("hetzner", gh("mrsimonemms/devpod-provider-hetzner", None)),
        ];
        for (text, want) in cases {
            assert_eq!(Source::parse(text), Ok(want), "Source::parse({text:?})");
        }
    }

    #[test]
    fn refuses_what_it_cannot_load() {
        let cases = [
            (
                "",
                "it is empty; give a path, an https URL, owner/repo or a published name",
            ),
            (
                "http://example.com/p.yaml",
                "plain http is only allowed to this machine (localhost, 127.0.0.1, [::1]); use an https:// URL",
            ),
            (
                "http://localhost.evil.com/p",
                "plain http is only allowed to this machine (localhost, 127.0.0.1, [::1]); use an https:// URL",
            ),
            (
                "http://127.0.0.1@evil.com/p",
                "plain http is only allowed to this machine (localhost, 127.0.0.1, [::1]); use an https:// URL",
            ),
            ("https:///p.yaml", "the URL has no host"),
            (
                "ftp://example.com/p.yaml",
                "only https:// URLs are supported",
            ),
            ("file:///p.yaml", "only https:// URLs are supported"),
            ("a b/c", "it contains spaces or control characters"),
            (
                "civo",
                "'civo' is not a published provider (aws, azure, digitalocean, gcloud, hetzner); give owner/repo for a GitHub repository, an https URL or a path to a provider.yaml",
            ),
            (
                "a/b/c",
                "not a path (start it with ./ or /), an https URL, owner/repo or a published name",
            ),
            (
                "acme/x@",
                "'' is not a release tag (like v0.1.0) after the '@'",
            ),
            (
                "acme/x@..",
                "'..' is not a release tag (like v0.1.0) after the '@'",
            ),
            (
                "acme/x@v1/../..",
                "'v1/../..' is not a release tag (like v0.1.0) after the '@'",
            ),
            (
                "acme/..",
                "'acme/..' is not a GitHub repository name (owner/repo)",
            ),
            (
                "-acme/x",
                "'-acme/x' is not a GitHub repository name (owner/repo)",
            ),
            (
                "ac_me/x",
                "'ac_me/x' is not a GitHub repository name (owner/repo)",
            ),
        ];
        for (text, problem) in cases {
            let err = Source::parse(text).unwrap_err();
            assert_eq!(err.problem, problem, "Source::parse({text:?})");
        }
        assert_eq!(
            Source::parse("ftp://x").unwrap_err().to_string(),
            "provider source 'ftp://x': only https:// URLs are supported"
        );
    }

    #[test]
    fn download_urls() {
        assert_eq!(
            gh("acme/x", None).download_url().as_deref(),
            Some("https://github.com/acme/x/releases/latest/download/provider.yaml")
        );
        assert_eq!(
            gh("acme/x", Some("v0.2.0")).download_url().as_deref(),
            Some("https://github.com/acme/x/releases/download/v0.2.0/provider.yaml")
        );
        assert_eq!(
            Source::Url("https://e.com/p.yaml".into())
                .download_url()
                .as_deref(),
            Some("https://e.com/p.yaml")
        );
        assert_eq!(
            Source::Local(PathBuf::from("./p.yaml")).download_url(),
            None
        );
        assert_eq!(gh("acme/x", Some("v1")).to_string(), "acme/x@v1");
        assert_eq!(published("aws"), Some("loft-sh/devpod-provider-aws"));
        assert_eq!(published("docker"), None);
    }
}
