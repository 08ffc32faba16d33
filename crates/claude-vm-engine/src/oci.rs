//! Devcontainer features published to OCI registries, fetched into the cache.
//!
//! A feature named `REGISTRY/NAMESPACE/NAME[:TAG|@sha256:...]` in devcontainer.json is an
//! OCI artifact (the devcontainer features distribution spec): a manifest one of whose
//! layers, of media type `application/vnd.devcontainers.layer.v1+tar`, is a plain tar of
//! the feature's folder. [`fetch_features`] fetches each such feature of a configuration
//! into `$CLAUDE_VM_HOME/cache/features/<registry>/<repository>/<manifest digest>/`, once
//! per digest, and hands the folders to `claude_vm_devcontainer::resolve_features`.
//!
//! For each feature, following the OCI distribution spec:
//! 1. a reference pinned by digest that is in the cache already is used without asking the
//!    registry anything (so it works offline);
//! 2. `GET /v2/<repository>/manifests/<tag|digest>` (`Accept:` the OCI image manifest). A
//!    `401` with `WWW-Authenticate: Bearer realm=..,service=..,scope=..` is answered with an
//!    anonymous token from the realm (`{"token": ...}`) and the request made again with it;
//!    claude-vm never logs in to a registry, so only public features can be fetched;
//! 3. the manifest's digest (SHA-256 of its bytes) names the cache folder; a folder already
//!    there is used as it is (a tag that did not move costs one small request);
//! 4. `GET /v2/<repository>/blobs/<layer digest>`, streamed to a scratch file beside the
//!    cache folder, no larger than the manifest says nor than [`MAX_LAYER`], its SHA-256
//!    checked against the layer's digest;
//! 5. the tar unpacked on the blocking pool into a scratch folder, synced, and renamed into
//!    place, so a cache folder is always whole; a fetch that fails leaves nothing behind.
//!
//! What a registry sends is not trusted: an entry with an absolute path or a `..`, one
//! below a symbolic link, a symbolic link leading out of the folder (absolute, climbing
//! above it, or climbing after descending), a hard link to anything but a file before it,
//! an entry twice, and devices, FIFOs and sparse files refuse the feature, as does a folder
//! without `devcontainer-feature.json` at its top (`./devcontainer-feature.json` counts).
//! Permissions are kept without set-id bits or group and world write; owners are not.
//! Every request has bounded timeouts ([`CONNECT_TIMEOUT`], [`READ_TIMEOUT`] without a
//! byte, [`TOTAL_TIMEOUT`] in all), and a redirect may not leave HTTPS.
//!
//! `CLAUDE_VM_OCI_PLAIN_HTTP` names registries (comma-separated, each as devcontainer.json
//! writes it: `host` or `host:port`) spoken to in plain HTTP instead of HTTPS. It is a knob
//! for tests and for an air-gapped mirror on a trusted network, nothing else: what comes
//! over plain HTTP can be changed on the way unless the feature is pinned by digest.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::io::{self, Read, Seek};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use claude_vm_devcontainer::features::metadata::METADATA_FILE;
use claude_vm_devcontainer::{DevContainer, FeatureRef, OciRef};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::{EngineError, Reporter, Result};

/// The environment variable naming the registries spoken to in plain HTTP.
pub(crate) const PLAIN_HTTP_ENV: &str = "CLAUDE_VM_OCI_PLAIN_HTTP";

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const LAYER_TYPE: &str = "application/vnd.devcontainers.layer.v1+tar";

/// To open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Without a byte, from the request's start (the first byte) or during a body.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A whole request, body included.
const TOTAL_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// The largest feature layer accepted (features are kilobytes: scripts and a JSON file).
const MAX_LAYER: u64 = 256 << 20;
const MAX_MANIFEST: u64 = 4 << 20;
const MAX_TOKEN: u64 = 64 << 10;
const MAX_REDIRECTS: usize = 10;

/// Fetch each OCI feature of `config` into `cache`
/// (`$CLAUDE_VM_HOME/cache/features/<registry>/<repository>/<digest>/`), once per digest;
/// returns key -> folder for `resolve_features`. Local features need nothing and are not in
/// the map; neither are tarball URLs, which this does not fetch.
pub(crate) async fn fetch_features(
    config: &DevContainer,
    cache: &Path,
    reporter: &dyn Reporter,
) -> Result<BTreeMap<String, PathBuf>> {
    fetch_with(config, cache, reporter, &Settings::from_env()).await
}

/// How registries are spoken to.
#[derive(Debug, Clone)]
struct Settings {
    /// Registries spoken to in plain HTTP, as devcontainer.json writes them (lowercase).
    plain_http: Vec<String>,
    /// Whether the proxies of the environment (`HTTPS_PROXY`, ...) are used; the tests'
    /// loopback registry is reached directly.
    proxies: bool,
}

impl Settings {
    fn from_env() -> Settings {
        Settings {
            plain_http: plain_http_list(&std::env::var(PLAIN_HTTP_ENV).unwrap_or_default()),
            proxies: true,
        }
    }

    fn plain(&self, registry: &str) -> bool {
        self.plain_http.iter().any(|r| r == registry)
    }

    fn client(&self) -> Result<reqwest::Client> {
        let plain = self.plain_http.clone();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            let url = attempt.url();
            let allowed = url.scheme() == "https"
                || (url.scheme() == "http" && plain.contains(&authority(url)));
            let refusal = (!allowed).then(|| format!("a redirect to {url} leaves https://"));
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else if let Some(refusal) = refusal {
                attempt.error(refusal)
            } else {
                attempt.follow()
            }
        });
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("claude-vm/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .timeout(TOTAL_TIMEOUT)
            .redirect(policy);
        if !self.proxies {
            builder = builder.no_proxy();
        }
        builder.build().map_err(|e| {
            EngineError::InvalidInput(format!(
                "cannot set up the HTTPS client that fetches features: {}",
                innermost(&e)
            ))
        })
    }
}

/// `CLAUDE_VM_OCI_PLAIN_HTTP`'s value as a list.
fn plain_http_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|r| r.trim().to_ascii_lowercase())
        .filter(|r| !r.is_empty())
        .collect()
}

/// `host` or `host:port` of a URL, as a registry is written.
fn authority(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    }
}

async fn fetch_with(
    config: &DevContainer,
    cache: &Path,
    reporter: &dyn Reporter,
    settings: &Settings,
) -> Result<BTreeMap<String, PathBuf>> {
    let wanted: Vec<(&str, &OciRef)> = config
        .features
        .iter()
        .filter_map(|e| match &e.reference {
            FeatureRef::Oci(oci) => Some((e.key.as_str(), oci)),
            _ => None,
        })
        .collect();
    let mut fetched = BTreeMap::new();
    if wanted.is_empty() {
        return Ok(fetched);
    }
    let client = settings.client()?;
    for (key, oci) in wanted {
        check_reference(oci).map_err(|why| {
            EngineError::InvalidInput(format!("the feature {key} cannot be fetched: {why}"))
        })?;
        let subject = Subject::new(key, oci, config);
        let folder = fetch_one(&client, settings, &subject, cache, reporter).await?;
        fetched.insert(key.to_owned(), folder);
    }
    Ok(fetched)
}

/// Refuse what would not make a safe URL or cache path. `FeatureRef::parse` checked the
/// characters; this checks their arrangement the way OCI's grammar does.
fn check_reference(oci: &OciRef) -> std::result::Result<(), String> {
    let alnum_ends = |s: &str| {
        s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    let (host, port) = match oci.registry.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (oci.registry.as_str(), None),
    };
    let host_ok = host.split('.').all(|label| {
        alnum_ends(label) && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    });
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit()));
    if !host_ok || !port_ok {
        return Err(format!(
            "{:?} is not a registry host name (host or host:port)",
            oci.registry
        ));
    }
    if !oci.repository.split('/').all(alnum_ends) {
        return Err(format!(
            "{:?} is not a repository name: each part starts and ends with a letter or digit",
            oci.repository
        ));
    }
    if let Some(tag) = &oci.tag
        && !tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(format!(
            "{tag:?} is not a version tag: it starts with a letter, digit or _"
        ));
    }
    if let Some(digest) = &oci.digest
        && !valid_digest(digest)
    {
        return Err(format!(
            "{digest:?} is not sha256:<64 lowercase hex digits>"
        ));
    }
    Ok(())
}

fn valid_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// The feature being fetched, for messages that name it, its registry and what to do.
struct Subject<'a> {
    key: &'a str,
    oci: &'a OciRef,
    /// "copy the feature into .devcontainer/node and name it ./node".
    instead: String,
}

/// What was asked of a registry, for messages about its answer.
#[derive(Clone, Copy)]
enum Asked {
    Manifest,
    Layer,
    Token,
}

impl<'a> Subject<'a> {
    fn new(key: &'a str, oci: &'a OciRef, config: &DevContainer) -> Subject<'a> {
        let name = oci.name();
        let dir = config
            .file
            .parent()
            .and_then(|d| d.strip_prefix(&config.project).ok())
            .filter(|d| !d.as_os_str().is_empty());
        let instead = match dir {
            Some(dir) => format!(
                "copy the feature into {}/{name} and name it ./{name}",
                dir.display()
            ),
            None => format!(
                "copy the feature into a folder {name} beside devcontainer.json and name it ./{name}"
            ),
        };
        Subject { key, oci, instead }
    }

    fn registry(&self) -> &str {
        &self.oci.registry
    }

    fn unreachable(&self, e: reqwest::Error) -> EngineError {
        EngineError::InvalidInput(format!(
            "cannot reach {} to fetch the feature {} ({}): check the network, or {}",
            self.registry(),
            self.key,
            transport(e),
            self.instead
        ))
    }

    fn broke_off(&self, e: reqwest::Error) -> EngineError {
        EngineError::InvalidInput(format!(
            "the download of the feature {} from {} broke off ({}): check the network and try again, or {}",
            self.key,
            self.registry(),
            transport(e),
            self.instead
        ))
    }

    fn status(&self, asked: Asked, status: StatusCode) -> EngineError {
        let (registry, key, instead) = (self.registry(), self.key, &self.instead);
        let anonymous =
            "only public features can be fetched (claude-vm does not log in to registries)";
        EngineError::InvalidInput(match (asked, status.as_u16()) {
            (Asked::Manifest, 404) => format!(
                "{registry} has no feature {key} ({status}): check the feature's name and version, or {instead}"
            ),
            (Asked::Layer, 404) => format!(
                "{registry} lacks the layer its manifest names for the feature {key} ({status}): try again later, or {instead}"
            ),
            (Asked::Token, _) => format!(
                "{registry} gives no anonymous token for the feature {key} ({status}): {anonymous}; or {instead}"
            ),
            (_, 401 | 403) => format!(
                "{registry} refuses the feature {key} ({status}): {anonymous}; or {instead}"
            ),
            _ => format!(
                "{registry} answered {status} for the feature {key}: try again later, or {instead}"
            ),
        })
    }

    /// What the registry sent is not a feature claude-vm accepts.
    fn refused(&self, why: impl Display) -> EngineError {
        EngineError::InvalidInput(format!(
            "the feature {} from {} is refused: {why}; tell its publisher, or {}",
            self.key,
            self.registry(),
            self.instead
        ))
    }

    /// What was downloaded is not what the manifest promised.
    fn damaged(&self, why: impl Display) -> EngineError {
        EngineError::InvalidInput(format!(
            "the feature {} from {} is refused: {why}; try again, or {}",
            self.key,
            self.registry(),
            self.instead
        ))
    }

    fn body(&self, e: BodyError, what: &str, cap: u64) -> EngineError {
        match e {
            BodyError::Transport(e) => self.broke_off(e),
            BodyError::TooBig => self.refused(format!("its {what} is larger than {cap} bytes")),
        }
    }

    fn cache(&self, path: &Path, e: impl Display) -> EngineError {
        EngineError::InvalidInput(format!(
            "cannot write the feature {} into the cache at {} ({e}): check that the folder is writable and the disk has room",
            self.key,
            path.display()
        ))
    }
}

/// A transport error said without its URL (the message names the registry already).
fn transport(e: reqwest::Error) -> String {
    if e.is_timeout() {
        return "no answer in time".to_owned();
    }
    innermost(&e.without_url())
}

/// The deepest cause of an error: the one that says what happened ("Connection refused").
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(source) = inner.source() {
        inner = source;
    }
    inner.to_string()
}

async fn fetch_one(
    client: &reqwest::Client,
    settings: &Settings,
    subject: &Subject<'_>,
    cache: &Path,
    reporter: &dyn Reporter,
) -> Result<PathBuf> {
    let oci = subject.oci;
    let repo_dir = cache.join(&oci.registry).join(&oci.repository);
    if let Some(digest) = &oci.digest {
        let folder = repo_dir.join(digest);
        if is_cached(&folder).await {
            return Ok(folder);
        }
    }
    reporter.step(&format!("fetching the feature {}", subject.key));
    if settings.plain(&oci.registry) {
        reporter.warn(&format!(
            "speaking plain HTTP to {} ({PLAIN_HTTP_ENV})",
            oci.registry
        ));
    }
    let mut registry = Registry {
        client,
        settings,
        subject,
        base: format!(
            "{}://{}",
            if settings.plain(&oci.registry) {
                "http"
            } else {
                "https"
            },
            oci.registry
        ),
        token: None,
    };

    let path = format!("{}/manifests/{}", oci.repository, oci.reference());
    let mut res = registry.get(&path, Some(MANIFEST_TYPE)).await?;
    if !res.status().is_success() {
        return Err(subject.status(Asked::Manifest, res.status()));
    }
    let manifest = read_capped(&mut res, MAX_MANIFEST)
        .await
        .map_err(|e| subject.body(e, "manifest", MAX_MANIFEST))?;
    let digest = sha256_digest(&manifest);
    if let Some(pinned) = &oci.digest
        && *pinned != digest
    {
        return Err(subject.damaged(format!(
            "the manifest it sent has the digest {digest}, not {pinned}"
        )));
    }
    let folder = repo_dir.join(&digest);
    if is_cached(&folder).await {
        return Ok(folder);
    }
    let layer = feature_layer(&manifest).map_err(|why| subject.refused(why))?;

    tokio::fs::create_dir_all(&repo_dir)
        .await
        .map_err(|e| subject.cache(&repo_dir, e))?;
    let scratch = Scratch::new(&repo_dir)
        .await
        .map_err(|e| subject.cache(&repo_dir, e))?;
    let blob = scratch.path.join("layer.tar");
    if let Err(e) = download(&mut registry, &layer, &blob, reporter).await {
        scratch.remove().await;
        return Err(e);
    }
    let staged = scratch.path.join("feature");
    let target = folder.clone();
    let unpacked = tokio::task::spawn_blocking(move || {
        let outcome = unpack(&blob, &staged).and_then(|()| place(&staged, &target));
        scratch.remove_here();
        outcome
    })
    .await;
    match unpacked {
        Ok(Ok(())) => Ok(folder),
        Ok(Err(Unpack::Refused(why))) => Err(subject.refused(why)),
        Ok(Err(Unpack::Io(path, e))) => Err(subject.cache(&path, e)),
        Err(e) => Err(subject.cache(&folder, e)),
    }
}

/// Whether a cache folder holds a feature (folders appear whole, by rename).
async fn is_cached(folder: &Path) -> bool {
    tokio::fs::symlink_metadata(folder.join(METADATA_FILE))
        .await
        .is_ok_and(|m| m.is_file())
}

/// The requests of one feature to its registry, with the token it was given.
struct Registry<'a> {
    client: &'a reqwest::Client,
    settings: &'a Settings,
    subject: &'a Subject<'a>,
    /// `https://ghcr.io`.
    base: String,
    token: Option<String>,
}

impl Registry<'_> {
    /// `GET <base>/v2/<path>`, answering one bearer challenge with an anonymous token.
    async fn get(&mut self, path: &str, accept: Option<&str>) -> Result<reqwest::Response> {
        let url = format!("{}/v2/{path}", self.base);
        let mut challenged = false;
        loop {
            let mut req = self.client.get(&url);
            if let Some(accept) = accept {
                req = req.header(ACCEPT, accept);
            }
            if let Some(token) = &self.token {
                req = req.bearer_auth(token);
            }
            let res = req.send().await.map_err(|e| self.subject.unreachable(e))?;
            if res.status() != StatusCode::UNAUTHORIZED || challenged {
                return Ok(res);
            }
            challenged = true;
            let Some(challenge) = bearer_challenge(res.headers()) else {
                return Ok(res);
            };
            self.token = Some(self.token(&challenge).await?);
        }
    }

    /// An anonymous token from the challenge's realm.
    async fn token(&self, challenge: &BTreeMap<String, String>) -> Result<String> {
        let subject = self.subject;
        let Some(realm) = challenge.get("realm") else {
            return Err(subject.refused("it asks for a token without saying where to get one"));
        };
        let mut url = reqwest::Url::parse(realm).map_err(|e| {
            subject.refused(format!("its token service {realm:?} is not a URL ({e})"))
        })?;
        let secure = url.scheme() == "https"
            || (url.scheme() == "http" && self.settings.plain(subject.registry()));
        if !secure {
            return Err(subject.refused(format!("its token service {realm:?} is not https://")));
        }
        let default_scope = format!("repository:{}:pull", subject.oci.repository);
        url.query_pairs_mut()
            .extend_pairs(challenge.get("service").map(|s| ("service", s.as_str())))
            .append_pair(
                "scope",
                challenge.get("scope").map_or(&default_scope, |s| s),
            );
        let mut res = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| subject.unreachable(e))?;
        if !res.status().is_success() {
            return Err(subject.status(Asked::Token, res.status()));
        }
        let body = read_capped(&mut res, MAX_TOKEN)
            .await
            .map_err(|e| subject.body(e, "token answer", MAX_TOKEN))?;
        #[derive(serde::Deserialize)]
        struct Answer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let answer: Answer = serde_json::from_slice(&body).map_err(|e| {
            subject.refused(format!(
                "its token service answers something else than a token ({e})"
            ))
        })?;
        let token = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty() && HeaderValue::from_str(&format!("Bearer {t}")).is_ok());
        token.ok_or_else(|| subject.refused("its token service answers no usable token"))
    }
}

/// The parameters of the first `Bearer` challenge among the `WWW-Authenticate` headers.
fn bearer_challenge(headers: &HeaderMap) -> Option<BTreeMap<String, String>> {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(parse_bearer)
}

/// `Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:a/b:pull"`:
/// the parameters by lowercase name, quoted values unescaped (they may hold commas).
fn parse_bearer(header: &str) -> Option<BTreeMap<String, String>> {
    let (scheme, mut rest) = header.trim().split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = BTreeMap::new();
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        if rest.is_empty() {
            return Some(params);
        }
        let (name, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut end = None;
            let mut chars = quoted.char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next().map(|(_, c)| c)),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        params.insert(name.trim().to_ascii_lowercase(), value);
        rest = next;
    }
}

enum BodyError {
    Transport(reqwest::Error),
    TooBig,
}

/// A whole (small) body, refused past `cap` bytes.
async fn read_capped(
    res: &mut reqwest::Response,
    cap: u64,
) -> std::result::Result<Vec<u8>, BodyError> {
    if res.content_length().is_some_and(|n| n > cap) {
        return Err(BodyError::TooBig);
    }
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(BodyError::Transport)? {
        if (body.len() + chunk.len()) as u64 > cap {
            return Err(BodyError::TooBig);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The layer of a feature's manifest that holds its folder.
#[derive(Debug)]
struct Layer {
    digest: String,
    size: u64,
}

fn feature_layer(manifest: &[u8]) -> std::result::Result<Layer, String> {
    #[derive(serde::Deserialize)]
    struct Manifest {
        #[serde(default)]
        layers: Vec<Descriptor>,
        manifests: Option<serde::de::IgnoredAny>,
    }
    #[derive(serde::Deserialize)]
    struct Descriptor {
        #[serde(rename = "mediaType")]
        media_type: String,
        digest: String,
        size: u64,
    }
    let m: Manifest = serde_json::from_slice(manifest)
        .map_err(|e| format!("its manifest is not an OCI image manifest ({e})"))?;
    if m.manifests.is_some() {
        return Err("its manifest is an index of images, not a feature's manifest".to_owned());
    }
    let mut layers = m.layers.into_iter().filter(|l| l.media_type == LAYER_TYPE);
    let (Some(layer), None) = (layers.next(), layers.next()) else {
        return Err(format!(
            "its manifest does not have exactly one layer of type {LAYER_TYPE}, so it is not a devcontainer feature"
        ));
    };
    if !valid_digest(&layer.digest) {
        return Err(format!(
            "its layer's digest {:?} is not sha256:<64 lowercase hex digits>",
            layer.digest
        ));
    }
    if layer.size > MAX_LAYER {
        return Err(format!(
            "its layer is {} MiB, more than the {} MiB a feature may be",
            layer.size >> 20,
            MAX_LAYER >> 20
        ));
    }
    Ok(Layer {
        digest: layer.digest,
        size: layer.size,
    })
}

/// Stream the layer to `to`, checking its size and digest.
async fn download(
    registry: &mut Registry<'_>,
    layer: &Layer,
    to: &Path,
    reporter: &dyn Reporter,
) -> Result<()> {
    let subject = registry.subject;
    let path = format!("{}/blobs/{}", subject.oci.repository, layer.digest);
    let mut res = registry.get(&path, None).await?;
    if !res.status().is_success() {
        return Err(subject.status(Asked::Layer, res.status()));
    }
    if let Some(n) = res.content_length()
        && n != layer.size
    {
        return Err(subject.damaged(format!(
            "the registry sends {n} bytes for a layer its manifest says is {} bytes",
            layer.size
        )));
    }
    let mut file = tokio::fs::File::create(to)
        .await
        .map_err(|e| subject.cache(to, e))?;
    reporter.progress_start(
        &format!("downloading the feature {}", subject.key),
        layer.size,
    );
    let copied = copy_checked(&mut res, &mut file, layer, to, subject, reporter).await;
    reporter.progress_end();
    copied?;
    file.flush().await.map_err(|e| subject.cache(to, e))
}

async fn copy_checked(
    res: &mut reqwest::Response,
    file: &mut tokio::fs::File,
    layer: &Layer,
    to: &Path,
    subject: &Subject<'_>,
    reporter: &dyn Reporter,
) -> Result<()> {
    let mut hasher = Sha256::new();
    let mut done = 0u64;
    while let Some(chunk) = res.chunk().await.map_err(|e| subject.broke_off(e))? {
        done += chunk.len() as u64;
        if done > layer.size {
            return Err(subject.damaged(format!(
                "the registry sends more than the {} bytes its manifest gives the layer",
                layer.size
            )));
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| subject.cache(to, e))?;
        reporter.progress(done, layer.size);
    }
    if done < layer.size {
        return Err(subject.damaged(format!(
            "the layer ended after {done} of its {} bytes",
            layer.size
        )));
    }
    let got = format!("sha256:{:x}", hasher.finalize());
    if got != layer.digest {
        return Err(subject.damaged(format!(
            "the layer's sha256 is {got}, not {} as its manifest says",
            layer.digest
        )));
    }
    Ok(())
}

/// A scratch folder beside the cache folder it becomes part of, removed off the async
/// workers, even when a fetch is dropped midway.
struct Scratch {
    path: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl Scratch {
    async fn new(beside: &Path) -> io::Result<Scratch> {
        let beside = beside.to_path_buf();
        let dir = tokio::task::spawn_blocking(move || {
            tempfile::Builder::new()
                .prefix(".fetch-")
                .tempdir_in(beside)
        })
        .await
        .map_err(io::Error::other)??;
        Ok(Scratch {
            path: dir.path().to_path_buf(),
            dir: Some(dir),
        })
    }

    /// Remove it, waiting for the blocking pool to have done so.
    async fn remove(mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = tokio::task::spawn_blocking(move || drop(dir)).await;
        }
    }

    /// Remove it on this (blocking) thread.
    fn remove_here(mut self) {
        drop(self.dir.take());
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(move || drop(dir))),
                Err(_) => drop(dir),
            }
        }
    }
}

/// Why a layer was not unpacked.
#[derive(Debug)]
enum Unpack {
    /// The archive is not a feature claude-vm accepts; says why.
    Refused(String),
    /// This machine failed to write it.
    Io(PathBuf, io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
}

/// Unpack the tar `blob` into the new folder `into`, refusing anything that could reach
/// outside it or that a feature has no use for; every file and folder synced to disk.
fn unpack(blob: &Path, into: &Path) -> std::result::Result<(), Unpack> {
    let io_at = |path: &Path| {
        let path = path.to_path_buf();
        move |e| Unpack::Io(path, e)
    };
    let refuse = |why: String| Err(Unpack::Refused(why));
    let unreadable =
        |e: io::Error| Unpack::Refused(format!("its layer is not a readable tar ({e})"));

    let mut file = std::fs::File::open(blob).map_err(io_at(blob))?;
    let mut magic = Vec::with_capacity(2);
    (&mut file)
        .take(2)
        .read_to_end(&mut magic)
        .map_err(io_at(blob))?;
    if magic == [0x1f, 0x8b] {
        return refuse(
            "its layer is gzip-compressed, but the features distribution spec makes it a plain tar"
                .to_owned(),
        );
    }
    file.rewind().map_err(io_at(blob))?;
    std::fs::create_dir(into).map_err(io_at(into))?;

    let mut archive = tar::Archive::new(io::BufReader::new(file));
    archive.set_preserve_permissions(false);
    archive.set_preserve_ownerships(false);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(false);
    archive.set_mask(0o022);
    let mut kinds: HashMap<PathBuf, Kind> = HashMap::new();
    for entry in archive.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        let written = entry.path().map_err(unreadable)?.into_owned();
        let entry_type = entry.header().entry_type();
        if entry_type == tar::EntryType::XGlobalHeader {
            continue;
        }
        let path = inside(&written)?;
        if path.as_os_str().is_empty() {
            if entry_type.is_dir() {
                continue;
            }
            return refuse(format!(
                "its archive has an entry {written:?} without a name"
            ));
        }
        if let Some(link) = path
            .ancestors()
            .skip(1)
            .find(|a| kinds.get(*a) == Some(&Kind::Symlink))
        {
            return refuse(format!(
                "its archive's entry {written:?} lies below the symbolic link {link:?}"
            ));
        }
        let kind = match entry_type {
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
            tar::EntryType::Symlink => {
                let target = entry.link_name().map_err(unreadable)?.unwrap_or_default();
                check_symlink(&path, &target)?;
                Kind::Symlink
            }
            tar::EntryType::Link => {
                let target = entry.link_name().map_err(unreadable)?.unwrap_or_default();
                let target = inside(&target)?;
                if kinds.get(&target) != Some(&Kind::File) {
                    return refuse(format!(
                        "its archive's hard link {written:?} names {target:?}, which is not a file before it"
                    ));
                }
                Kind::File
            }
            other => {
                return refuse(format!(
                    "its archive's entry {written:?} is {} (a feature holds only files, folders and links)",
                    describe(other)
                ));
            }
        };
        match kinds.insert(path.clone(), kind) {
            None | Some(Kind::Dir) if kind == Kind::Dir => {}
            None => {}
            Some(_) => {
                return refuse(format!("its archive holds {written:?} twice"));
            }
        }
        match entry.unpack_in(into) {
            Ok(true) => {}
            Ok(false) => {
                return refuse(format!(
                    "its archive's entry {written:?} lies outside the feature's folder"
                ));
            }
            Err(e) => return Err(Unpack::Io(into.join(&path), e)),
        }
    }
    let metadata = into.join(METADATA_FILE);
    if !std::fs::symlink_metadata(&metadata).is_ok_and(|m| m.is_file()) {
        return refuse(format!(
            "its archive has no {METADATA_FILE} at the top of the feature's folder"
        ));
    }
    // Whole on disk before the rename makes it a cache entry.
    let mut synced: Vec<&PathBuf> = kinds
        .iter()
        .filter(|(_, k)| **k != Kind::Symlink)
        .map(|(p, _)| p)
        .collect();
    synced.sort();
    for path in synced {
        let path = into.join(path);
        std::fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(io_at(&path))?;
    }
    std::fs::File::open(into)
        .and_then(|f| f.sync_all())
        .map_err(io_at(into))
}

/// An entry's path relative to the feature's folder (`./` dropped); absolute paths and
/// `..` are refused.
fn inside(written: &Path) -> std::result::Result<PathBuf, Unpack> {
    let mut path = PathBuf::new();
    for c in written.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(part) => path.push(part),
            Component::ParentDir => {
                return Err(Unpack::Refused(format!(
                    "its archive's entry {written:?} climbs out of the feature's folder"
                )));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(Unpack::Refused(format!(
                    "its archive's entry {written:?} has an absolute path"
                )));
            }
        }
    }
    Ok(path)
}

/// A symbolic link at `path` (no link above it) may point only inside the feature's
/// folder: relative, climbing only at its start and never above the folder.
fn check_symlink(path: &Path, target: &Path) -> std::result::Result<(), Unpack> {
    let refuse = || {
        Err(Unpack::Refused(format!(
            "its archive's symbolic link {path:?} points to {target:?}, which may lead outside the feature's folder"
        )))
    };
    if target.as_os_str().is_empty() {
        return refuse();
    }
    let mut depth = path.components().count().saturating_sub(1);
    let mut descended = false;
    for c in target.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(_) => {
                descended = true;
                depth += 1;
            }
            Component::ParentDir if !descended && depth > 0 => depth -= 1,
            _ => return refuse(),
        }
    }
    Ok(())
}

fn describe(t: tar::EntryType) -> &'static str {
    match t {
        tar::EntryType::Char => "a character device",
        tar::EntryType::Block => "a block device",
        tar::EntryType::Fifo => "a FIFO",
        tar::EntryType::GNUSparse => "a sparse file",
        _ => "of a kind claude-vm does not unpack",
    }
}

/// Move the unpacked folder into the cache; a folder another fetch put there first is as
/// good.
fn place(staged: &Path, target: &Path) -> std::result::Result<(), Unpack> {
    match std::fs::rename(staged, target) {
        Ok(()) => {}
        Err(_)
            if std::fs::symlink_metadata(target.join(METADATA_FILE)).is_ok_and(|m| m.is_file()) =>
        {
            return Ok(());
        }
        Err(e) => return Err(Unpack::Io(target.to_path_buf(), e)),
    }
    if let Some(parent) = target.parent() {
        std::fs::File::open(parent)
            .and_then(|f| f.sync_all())
            .map_err(|e| Unpack::Io(parent.to_path_buf(), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use claude_vm_devcontainer as dc;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::{TcpListener, TcpStream};

    use crate::NullReporter;

    const REPO: &str = "team/features/hello";
    const TOKEN: &str = "stand-in-token";
    const METADATA: &str = r#"{"id": "hello", "version": "1.0.0", "name": "Hello"}"#;
    const INSTALL: &str = "#!/bin/sh\necho hello\n";

    /// What the stand-in registry serves for `REPO`.
    #[derive(Clone, Default)]
    struct Served {
        tag: String,
        manifest: Vec<u8>,
        blobs: HashMap<String, Vec<u8>>,
    }

    /// A stand-in OCI registry on loopback, in plain HTTP: no registry can be reached from
    /// the machine the tests run on, so this plays one's part (a bearer token service, then
    /// manifests and blobs to whoever shows the token) and records every request's target.
    struct StandIn {
        addr: SocketAddr,
        requests: Arc<Mutex<Vec<String>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl StandIn {
        async fn start(served: Served) -> StandIn {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let requests = Arc::new(Mutex::new(Vec::new()));
            let log = requests.clone();
            let served = Arc::new(served);
            let task = tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (served, log) = (served.clone(), log.clone());
                    tokio::spawn(async move {
                        let _ = answer(stream, addr, &served, &log).await;
                    });
                }
            });
            StandIn {
                addr,
                requests,
                task,
            }
        }

        fn registry(&self) -> String {
            self.addr.to_string()
        }

        fn key(&self, version: &str) -> String {
            format!("{}/{REPO}{version}", self.registry())
        }

        fn settings(&self) -> Settings {
            Settings {
                plain_http: vec![self.registry()],
                proxies: false,
            }
        }

        fn requests(&self, containing: &str) -> usize {
            let requests = self.requests.lock().unwrap();
            requests.iter().filter(|r| r.contains(containing)).count()
        }
    }

    impl Drop for StandIn {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn answer(
        stream: TcpStream,
        addr: SocketAddr,
        served: &Served,
        log: &Mutex<Vec<String>>,
    ) -> io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        let mut line = String::new();
        read.read_line(&mut line).await?;
        let target = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let (mut authorized, mut accepts_oci) = (false, false);
        loop {
            let mut header = String::new();
            if read.read_line(&mut header).await? == 0 || header.trim().is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("authorization") {
                authorized |= value == format!("Bearer {TOKEN}");
            } else if name.eq_ignore_ascii_case("accept") {
                accepts_oci |= value.contains(MANIFEST_TYPE);
            }
        }
        log.lock().unwrap().push(target.clone());
        let (status, headers, body) = route(&target, authorized, accepts_oci, addr, served);
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
            body.len()
        );
        write.write_all(head.as_bytes()).await?;
        write.write_all(&body).await?;
        write.shutdown().await
    }

    fn route(
        target: &str,
        authorized: bool,
        accepts_oci: bool,
        addr: SocketAddr,
        served: &Served,
    ) -> (&'static str, String, Vec<u8>) {
        let json = "Content-Type: application/json\r\n".to_owned();
        if let Some(query) = target.strip_prefix("/token?") {
            let scope = format!("scope=repository%3A{}%3Apull", REPO.replace('/', "%2F"));
            return if query.contains("service=stand-in") && query.contains(&scope) {
                ("200 OK", json, format!(r#"{{"token":"{TOKEN}"}}"#).into())
            } else {
                ("400 Bad Request", json, br#"{"errors":[]}"#.to_vec())
            };
        }
        if !authorized {
            let challenge = format!(
                "WWW-Authenticate: Bearer realm=\"http://{addr}/token\",service=\"stand-in\",scope=\"repository:{REPO}:pull\"\r\n"
            );
            return (
                "401 Unauthorized",
                json + &challenge,
                br#"{"errors":[{"code":"UNAUTHORIZED"}]}"#.to_vec(),
            );
        }
        if let Some(reference) = target.strip_prefix(&format!("/v2/{REPO}/manifests/"))
            && accepts_oci
            && !served.manifest.is_empty()
            && (reference == served.tag || reference == sha256_digest(&served.manifest))
        {
            return (
                "200 OK",
                format!("Content-Type: {MANIFEST_TYPE}\r\n"),
                served.manifest.clone(),
            );
        }
        if let Some(digest) = target.strip_prefix(&format!("/v2/{REPO}/blobs/"))
            && let Some(blob) = served.blobs.get(digest)
        {
            return (
                "200 OK",
                "Content-Type: application/octet-stream\r\n".to_owned(),
                blob.clone(),
            );
        }
        (
            "404 Not Found",
            json,
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#.to_vec(),
        )
    }

    /// One entry of a test archive, its name written as is (`./x`, `../x`).
    #[derive(Clone, Copy)]
    enum Item<'a> {
        Dir(&'a str),
        File(&'a str, &'a str, u32),
        Symlink(&'a str, &'a str),
    }

    fn tar_of(items: &[Item]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for item in items {
            let mut header = tar::Header::new_gnu();
            let (name, kind, data, mode, link) = match item {
                Item::Dir(name) => (*name, tar::EntryType::Directory, "", 0o755, ""),
                Item::File(name, data, mode) => (*name, tar::EntryType::Regular, *data, *mode, ""),
                Item::Symlink(name, link) => (*name, tar::EntryType::Symlink, "", 0o777, *link),
            };
            header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            header.set_entry_type(kind);
            header.set_size(data.len() as u64);
            header.set_mode(mode);
            header.set_mtime(1_700_000_000);
            header.set_cksum();
            builder.append(&header, data.as_bytes()).unwrap();
        }
        builder.into_inner().unwrap()
    }

    /// A feature as the devcontainers CLI publishes it: entries under `./`.
    fn hello_tar(extra: &[Item]) -> Vec<u8> {
        let mut items = vec![
            Item::Dir("./"),
            Item::File("./devcontainer-feature.json", METADATA, 0o644),
            Item::File("./install.sh", INSTALL, 0o755),
        ];
        items.extend_from_slice(extra);
        tar_of(&items)
    }

    /// A manifest of the published form: an empty image layer, then the feature's.
    fn manifest_for(layer: &[u8]) -> Vec<u8> {
        let empty = sha256_digest(b"");
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": "application/vnd.devcontainers", "digest": empty, "size": 0},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": empty, "size": 0},
                {
                    "mediaType": LAYER_TYPE,
                    "digest": sha256_digest(layer),
                    "size": layer.len(),
                    "annotations": {"org.opencontainers.image.title": "devcontainer-feature-hello.tgz"}
                }
            ],
            "annotations": {"com.github.package.type": "devcontainer_feature"}
        }))
        .unwrap()
    }

    /// Serves `layer` under tag `1`, as the blob of its own digest.
    fn serving(layer: Vec<u8>) -> Served {
        Served {
            tag: "1".to_owned(),
            manifest: manifest_for(&layer),
            blobs: HashMap::from([(sha256_digest(&layer), layer)]),
        }
    }

    /// A project whose `.devcontainer/devcontainer.json` names the features `keys` (and
    /// which has a local feature folder `.devcontainer/hello/`).
    fn project(keys: &[&str]) -> (tempfile::TempDir, DevContainer) {
        let dir = tempfile::tempdir().unwrap();
        let features: serde_json::Map<String, serde_json::Value> = keys
            .iter()
            .map(|k| ((*k).to_owned(), serde_json::json!({})))
            .collect();
        std::fs::create_dir_all(dir.path().join(".devcontainer/hello")).unwrap();
        std::fs::write(
            dir.path().join(".devcontainer/devcontainer.json"),
            serde_json::json!({"image": "debian:stable", "features": features}).to_string(),
        )
        .unwrap();
        let located = dc::find(dir.path(), None).unwrap().unwrap();
        let ctx = dc::Context {
            id_labels: BTreeMap::from([("dev.claude-vm.workspace".into(), "ws".into())]),
            ..dc::Context::default()
        };
        let config = dc::load(&located, &ctx).unwrap();
        (dir, config)
    }

    /// Everything below `dir` that is not a folder, and every scratch or digest folder.
    fn leftovers(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries {
                let path = e.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if name.starts_with(".fetch-") || name.starts_with("sha256:") || !path.is_dir() {
                    found.push(path.clone());
                }
                if path.is_dir() {
                    todo.push(path);
                }
            }
        }
        found
    }

    async fn fetch(
        stand_in: &StandIn,
        config: &DevContainer,
        cache: &Path,
    ) -> Result<BTreeMap<String, PathBuf>> {
        fetch_with(config, cache, &NullReporter, &stand_in.settings()).await
    }

    fn message(e: EngineError) -> String {
        e.to_string()
    }

    #[tokio::test]
    async fn fetches_a_feature_through_the_token_flow() {
        let layer = hello_tar(&[
            Item::Dir("./lib/"),
            Item::File("./lib/common.sh", "true\n", 0o664),
            Item::Symlink("./lib/install-link.sh", "../install.sh"),
        ]);
        let manifest_digest = sha256_digest(&manifest_for(&layer));
        let stand_in = StandIn::start(serving(layer)).await;
        let key = stand_in.key(":1");
        let (_project, config) = project(&[&key]);
        let cache = tempfile::tempdir().unwrap();

        let fetched = fetch(&stand_in, &config, cache.path()).await.unwrap();

        let folder = &fetched[&key];
        let want = cache
            .path()
            .join(stand_in.registry())
            .join(REPO)
            .join(&manifest_digest);
        assert_eq!(folder, &want);
        assert_eq!(
            std::fs::read_to_string(folder.join("devcontainer-feature.json")).unwrap(),
            METADATA
        );
        assert_eq!(
            std::fs::read_to_string(folder.join("lib/install-link.sh")).unwrap(),
            INSTALL
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| {
            std::fs::metadata(folder.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("install.sh"), 0o755);
        assert_eq!(mode("lib/common.sh"), 0o644, "group write is dropped");
        assert_eq!(
            stand_in.requests("/token?"),
            1,
            "one token for manifest and blob"
        );
        assert_eq!(stand_in.requests("/blobs/"), 1);
        assert!(
            leftovers(cache.path())
                .iter()
                .all(|p| p.starts_with(folder))
        );
        // What resolve_features needs of a fetched feature is there.
        let resolved = dc::resolve_features(&config, &fetched).unwrap();
        assert_eq!(resolved.features[0].metadata.id, "hello");
    }

    #[tokio::test]
    async fn a_second_fetch_uses_the_cache() {
        let stand_in = StandIn::start(serving(hello_tar(&[]))).await;
        let key = stand_in.key(":1");
        let (_project, config) = project(&[&key]);
        let cache = tempfile::tempdir().unwrap();

        let first = fetch(&stand_in, &config, cache.path()).await.unwrap();
        let second = fetch(&stand_in, &config, cache.path()).await.unwrap();

        assert_eq!(first, second);
        assert_eq!(
            stand_in.requests("/manifests/"),
            4,
            "a tag is asked again (with a token each time)"
        );
        assert_eq!(stand_in.requests("/blobs/"), 1, "the layer is fetched once");
    }

    #[tokio::test]
    async fn a_pinned_digest_in_the_cache_needs_no_registry() {
        let layer = hello_tar(&[]);
        let digest = sha256_digest(&manifest_for(&layer));
        let stand_in = StandIn::start(serving(layer)).await;
        let cache = tempfile::tempdir().unwrap();
        let pinned = stand_in.key(&format!("@{digest}"));
        let (_project, config) = project(&[&pinned]);
        let first = fetch(&stand_in, &config, cache.path()).await.unwrap();
        let asked = stand_in.requests("/");

        let again = fetch(&stand_in, &config, cache.path()).await.unwrap();

        assert_eq!(first, again);
        assert_eq!(stand_in.requests("/"), asked, "no request at all");
        assert!(again[&pinned].ends_with(&digest));
    }

    #[tokio::test]
    async fn a_layer_whose_digest_does_not_match_is_refused_and_leaves_nothing() {
        let layer = hello_tar(&[]);
        let mut served = serving(layer.clone());
        let mut tampered = layer.clone();
        let at = tampered.windows(5).position(|w| w == b"hello").unwrap();
        tampered[at] = b'j';
        served.blobs = HashMap::from([(sha256_digest(&layer), tampered)]);
        let stand_in = StandIn::start(served).await;
        let key = stand_in.key(":1");
        let (_project, config) = project(&[&key]);
        let cache = tempfile::tempdir().unwrap();

        let e = message(fetch(&stand_in, &config, cache.path()).await.unwrap_err());

        assert!(e.contains(&key) && e.contains(&stand_in.registry()), "{e}");
        assert!(e.contains(&format!("not {}", sha256_digest(&layer))), "{e}");
        assert!(
            e.contains("copy the feature into .devcontainer/hello and name it ./hello"),
            "{e}"
        );
        assert_eq!(leftovers(cache.path()), Vec::<PathBuf>::new());
    }

    #[tokio::test]
    async fn an_archive_climbing_out_of_its_folder_is_refused() {
        let stand_in =
            StandIn::start(serving(hello_tar(&[Item::File("../evil", "boo\n", 0o644)]))).await;
        let key = stand_in.key(":1");
        let (_project, config) = project(&[&key]);
        let root = tempfile::tempdir().unwrap();
        let cache = root.path().join("features");

        let e = message(fetch(&stand_in, &config, &cache).await.unwrap_err());

        assert!(e.contains("\"../evil\"") && e.contains("climbs out"), "{e}");
        assert!(e.contains(&key) && e.contains(&stand_in.registry()), "{e}");
        assert_eq!(leftovers(root.path()), Vec::<PathBuf>::new());
    }

    #[tokio::test]
    async fn links_leading_out_and_devices_are_refused() {
        let cases: [(&[Item], &str); 4] = [
            (&[Item::Symlink("./etc", "/etc")], "points to \"/etc\""),
            (&[Item::Symlink("./up", "../../x")], "points to \"../../x\""),
            (
                &[Item::Dir("./a/"), Item::Symlink("./a/b", "c/../../../x")],
                "points to",
            ),
            (
                &[Item::Symlink("./d", "lib"), Item::File("./d/x", "", 0o644)],
                "below the symbolic link",
            ),
        ];
        for (extra, says) in cases {
            let stand_in = StandIn::start(serving(hello_tar(extra))).await;
            let (_project, config) = project(&[&stand_in.key(":1")]);
            let cache = tempfile::tempdir().unwrap();
            let e = message(fetch(&stand_in, &config, cache.path()).await.unwrap_err());
            assert!(e.contains(says), "{says}: {e}");
            assert_eq!(leftovers(cache.path()), Vec::<PathBuf>::new());
        }
        let mut device = hello_tar(&[]);
        let mut header = tar::Header::new_gnu();
        header.set_path("null").unwrap();
        header.set_entry_type(tar::EntryType::Char);
        header.set_size(0);
        header.set_cksum();
        let mut builder = tar::Builder::new(Vec::new());
        builder.append(&header, &b""[..]).unwrap();
        let block = builder.into_inner().unwrap();
        device.truncate(device.len() - 1024);
        device.extend_from_slice(&block);
        let stand_in = StandIn::start(serving(device)).await;
        let (_project, config) = project(&[&stand_in.key(":1")]);
        let cache = tempfile::tempdir().unwrap();
        let e = message(fetch(&stand_in, &config, cache.path()).await.unwrap_err());
        assert!(e.contains("a character device"), "{e}");
    }

    #[tokio::test]
    async fn an_archive_without_metadata_at_its_top_is_refused() {
        let layer = tar_of(&[
            Item::Dir("hello/"),
            Item::File("hello/devcontainer-feature.json", METADATA, 0o644),
        ]);
        let stand_in = StandIn::start(serving(layer)).await;
        let (_project, config) = project(&[&stand_in.key(":1")]);
        let cache = tempfile::tempdir().unwrap();
        let e = message(fetch(&stand_in, &config, cache.path()).await.unwrap_err());
        assert!(e.contains("no devcontainer-feature.json at the top"), "{e}");
        assert_eq!(leftovers(cache.path()), Vec::<PathBuf>::new());
    }

    #[tokio::test]
    async fn a_missing_manifest_names_the_feature_and_the_registry() {
        let stand_in = StandIn::start(serving(hello_tar(&[]))).await;
        let key = stand_in.key(":2");
        let (_project, config) = project(&[&key]);
        let cache = tempfile::tempdir().unwrap();

        let e = message(fetch(&stand_in, &config, cache.path()).await.unwrap_err());

        assert_eq!(
            e,
            format!(
                "{} has no feature {key} (404 Not Found): check the feature's name and version, or copy the feature into .devcontainer/hello and name it ./hello",
                stand_in.registry()
            )
        );
    }

    #[tokio::test]
    async fn an_unreachable_registry_fails_quickly_naming_it() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let registry = closed.local_addr().unwrap().to_string();
        drop(closed);
        let key = format!("{registry}/{REPO}:1");
        let (_project, config) = project(&[&key]);
        let cache = tempfile::tempdir().unwrap();
        let settings = Settings {
            plain_http: vec![registry.clone()],
            proxies: false,
        };

        let start = Instant::now();
        let e = fetch_with(&config, cache.path(), &NullReporter, &settings)
            .await
            .unwrap_err();

        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        let e = message(e);
        assert!(
            e.starts_with(&format!(
                "cannot reach {registry} to fetch the feature {key} ("
            )),
            "{e}"
        );
        assert!(e.ends_with("): check the network, or copy the feature into .devcontainer/hello and name it ./hello"), "{e}");
    }

    #[tokio::test]
    async fn local_features_need_no_fetch() {
        let (_project, config) = project(&["./hello"]);
        let cache = tempfile::tempdir().unwrap();
        let fetched = fetch_features(&config, cache.path(), &NullReporter)
            .await
            .unwrap();
        assert!(fetched.is_empty());
        assert_eq!(leftovers(cache.path()), Vec::<PathBuf>::new());
    }

    #[test]
    fn challenges_and_settings_parse() {
        let c = parse_bearer(
            r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:a/b:pull,push", error="in\"valid""#,
        )
        .unwrap();
        assert_eq!(c["realm"], "https://ghcr.io/token");
        assert_eq!(c["service"], "ghcr.io");
        assert_eq!(c["scope"], "repository:a/b:pull,push");
        assert_eq!(c["error"], "in\"valid");
        assert_eq!(
            parse_bearer("bearer realm=https://r/t, service=s").unwrap()["service"],
            "s"
        );
        assert!(parse_bearer(r#"Basic realm="x""#).is_none());
        assert_eq!(
            plain_http_list(" Mirror.local:5000, ,127.0.0.1:1 "),
            ["mirror.local:5000", "127.0.0.1:1"]
        );
    }

    #[test]
    fn references_that_would_escape_the_cache_are_refused() {
        let oci = |registry: &str, repository: &str, digest: Option<&str>| OciRef {
            registry: registry.into(),
            repository: repository.into(),
            tag: None,
            digest: digest.map(Into::into),
        };
        let bad_digest = format!("sha256:{}", "../".repeat(21) + "a");
        for r in [
            oci("reg.io", "a/../../b", None),
            oci("reg.io", "a/.b", None),
            oci("..", "a/b", None),
            oci("user@reg.io", "a/b", None),
            oci("reg.io", "a/b", Some(&bad_digest)),
        ] {
            assert!(check_reference(&r).is_err(), "{r:?}");
        }
        assert!(check_reference(&oci("ghcr.io", "devcontainers/features/node", None)).is_ok());
        assert!(check_reference(&oci("localhost:5000", "team/tool", None)).is_ok());
    }
}
