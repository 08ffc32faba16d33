//! Feature references: the keys of `features`.
//!
//! The spec's forms: a local folder (`./path`, relative to the folder of devcontainer.json),
//! an OCI artifact (`ghcr.io/owner/repo/name[:tag|@sha256:...]`, `:latest` when no version)
//! and a tarball URL (`https://.../devcontainer-feature-x.tgz`). The forms the spec
//! deprecated are refused with the form to use instead: bare ids of the first-party
//! features (`"node"`, `"docker-in-docker"`), GitHub releases (`owner/repo/name@version`,
//! no registry), and absolute paths.

/// A feature's OCI reference.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OciRef {
    /// `ghcr.io`.
    pub registry: String,
    /// `devcontainers/features/node`.
    pub repository: String,
    /// `1`, `1.2`, `latest`; `None` when a digest is given or nothing is (then `latest`).
    pub tag: Option<String>,
    /// `sha256:...`.
    pub digest: Option<String>,
}

impl OciRef {
    /// The id without a version, as `installsAfter` and `overrideFeatureInstallOrder` name
    /// it: `ghcr.io/devcontainers/features/node`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The feature's own name: the last part of the repository (`node`).
    pub fn name(&self) -> &str {
        self.repository
            .rsplit('/')
            .next()
            .unwrap_or(&self.repository)
    }

    /// The tag or digest to fetch (`latest` when neither was written).
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

/// Where a feature comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FeatureRef {
    /// `./path` or `../path`, as written (relative to the folder of devcontainer.json).
    Local(String),
    Oci(OciRef),
    /// An `https://` URL of a tarball.
    Tarball(String),
}

impl FeatureRef {
    /// Parse a key of `features`; the error says why the form is refused.
    pub fn parse(key: &str) -> Result<FeatureRef, String> {
        let key = key.trim();
        if key.starts_with("./") || key.starts_with("../") || key == "." || key == ".." {
            return Ok(FeatureRef::Local(key.to_owned()));
        }
        if key.starts_with('/') || key.starts_with('\\') || key.get(1..3) == Some(":\\") {
            return Err(format!(
                "absolute paths are not feature references; write the folder relative to devcontainer.json, e.g. ./{}",
                key.trim_start_matches(['/', '\\'])
                    .rsplit(['/', '\\'])
                    .next()
                    .unwrap_or("feature")
            ));
        }
        let lower = key.to_ascii_lowercase();
        if lower.starts_with("https://") || lower.starts_with("http://") {
            if lower.starts_with("http://") {
                return Err("tarballs must be fetched over https://".to_owned());
            }
            return Ok(FeatureRef::Tarball(key.to_owned()));
        }
        if !key.contains('/') {
            let name = key.split([':', '@']).next().unwrap_or(key);
            return Err(format!(
                "bare feature ids are deprecated; use the OCI form, e.g. ghcr.io/devcontainers/features/{name}:1"
            ));
        }
        let (registry, rest) = key.split_once('/').unwrap_or((key, ""));
        let is_registry =
            registry.contains('.') || registry.contains(':') || registry == "localhost";
        if !is_registry {
            return Err(
                "GitHub release references (owner/repo/feature@version) are deprecated; use the feature's OCI form (ghcr.io/owner/repo/feature:version)"
                    .to_owned(),
            );
        }
        let (path, digest) = match rest.split_once('@') {
            Some((path, digest)) => (path, Some(digest)),
            None => (rest, None),
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
            _ => (path, None),
        };
        let segment_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        };
        if repository.split('/').count() < 2 || !repository.split('/').all(segment_ok) {
            return Err(format!(
                "not an OCI reference of the form REGISTRY/NAMESPACE/NAME[:VERSION]: {key}"
            ));
        }
        if let Some(tag) = tag
            && (!segment_ok(tag) || tag.len() > 128)
        {
            return Err(format!("invalid version {tag:?}"));
        }
        if let Some(digest) = digest
            && (!digest.starts_with("sha256:") || digest.len() != 71)
        {
            return Err(format!(
                "invalid digest {digest:?} (sha256:<64 hex digits>)"
            ));
        }
        Ok(FeatureRef::Oci(OciRef {
            registry: registry.to_ascii_lowercase(),
            repository: repository.to_ascii_lowercase(),
            tag: tag.map(str::to_owned),
            digest: digest.map(str::to_owned),
        }))
    }

    /// The id without a version, for `installsAfter`, `dependsOn` and
    /// `overrideFeatureInstallOrder`: the OCI id, the URL, or the local path as written
    /// (without a trailing `/`).
    pub fn id(&self) -> String {
        match self {
            FeatureRef::Local(path) => path.trim_end_matches('/').to_owned(),
            FeatureRef::Oci(oci) => oci.id(),
            FeatureRef::Tarball(url) => url.clone(),
        }
    }

    /// The id of a reference as another file names it (`installsAfter`, an entry of
    /// `overrideFeatureInstallOrder`): parsed when it parses, as written otherwise.
    pub(crate) fn id_of(written: &str) -> String {
        match FeatureRef::parse(written) {
            Ok(r) => r.id(),
            Err(_) => written.trim().to_ascii_lowercase(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        let oci = |registry: &str, repository: &str, tag: Option<&str>, digest: Option<&str>| {
            FeatureRef::Oci(OciRef {
                registry: registry.into(),
                repository: repository.into(),
                tag: tag.map(Into::into),
                digest: digest.map(Into::into),
            })
        };
        let digest = format!("sha256:{}", "a".repeat(64));
        let cases = [
            ("./hello", FeatureRef::Local("./hello".into()), "./hello"),
            (
                "./features/x/",
                FeatureRef::Local("./features/x/".into()),
                "./features/x",
            ),
            (
                "../shared/x",
                FeatureRef::Local("../shared/x".into()),
                "../shared/x",
            ),
            (
                "ghcr.io/devcontainers/features/node:1",
                oci("ghcr.io", "devcontainers/features/node", Some("1"), None),
                "ghcr.io/devcontainers/features/node",
            ),
            (
                "ghcr.io/devcontainers/features/node",
                oci("ghcr.io", "devcontainers/features/node", None, None),
                "ghcr.io/devcontainers/features/node",
            ),
            (
                "GHCR.io/Owner/Repo/Name:1.2.3",
                oci("ghcr.io", "owner/repo/name", Some("1.2.3"), None),
                "ghcr.io/owner/repo/name",
            ),
            (
                "localhost:5000/team/tool:latest",
                oci("localhost:5000", "team/tool", Some("latest"), None),
                "localhost:5000/team/tool",
            ),
            (
                &format!("ghcr.io/a/b/c@{digest}"),
                oci("ghcr.io", "a/b/c", None, Some(&digest)),
                "ghcr.io/a/b/c",
            ),
            (
                "https://example.com/devcontainer-feature-go.tgz",
                FeatureRef::Tarball("https://example.com/devcontainer-feature-go.tgz".into()),
                "https://example.com/devcontainer-feature-go.tgz",
            ),
        ];
        for (key, want, id) in cases {
            let got = FeatureRef::parse(key).unwrap();
            assert_eq!(got, want, "{key}");
            assert_eq!(got.id(), id, "{key}");
        }
        let FeatureRef::Oci(node) =
            FeatureRef::parse("ghcr.io/devcontainers/features/node").unwrap()
        else {
            unreachable!()
        };
        assert_eq!((node.name(), node.reference()), ("node", "latest"));
    }

    #[test]
    fn refused_forms_say_what_to_write() {
        let cases = [
            ("node", "ghcr.io/devcontainers/features/node:1"),
            (
                "docker-in-docker:1",
                "ghcr.io/devcontainers/features/docker-in-docker:1",
            ),
            ("owner/repo/feature@1.0.0", "deprecated"),
            ("/abs/path/hello", "./hello"),
            ("http://example.com/f.tgz", "https://"),
            ("ghcr.io/only-one", "REGISTRY/NAMESPACE/NAME"),
            ("ghcr.io/a//b", "REGISTRY/NAMESPACE/NAME"),
            ("ghcr.io/a/b@md5:x", "invalid digest"),
            ("ghcr.io/a/b:bad tag", "invalid version"),
        ];
        for (key, says) in cases {
            let e = FeatureRef::parse(key).unwrap_err();
            assert!(e.contains(says), "{key}: {e}");
        }
    }
}
