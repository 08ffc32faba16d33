//! Provider errors: typed, with the context a user needs and a remedy where one exists.

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("cannot reach the Docker engine at {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("image {image:?} is not available: {reason}")]
    ImageUnavailable { image: String, reason: String },
    #[error("workspace {id} has no {what} on this provider")]
    NotFound { id: String, what: &'static str },
    #[error("{op} failed: {message}")]
    Api { op: &'static str, message: String },
    #[error("invalid provider configuration: {0}")]
    Config(String),
}

/// The remedy when the Docker engine cannot be reached.
pub const UNREACHABLE_HINT: &str = "is Docker running? start it (e.g. `sudo systemctl start docker`), or point \
     claude-vm at the right engine with DOCKER_HOST or \
     `claude-vm provider set-options <provider> --option host=unix:///path/to/docker.sock`";

impl ProviderError {
    /// What the user can do about it, when we know.
    pub fn hint(&self) -> Option<String> {
        match self {
            ProviderError::Unreachable { .. } => Some(UNREACHABLE_HINT.to_owned()),
            ProviderError::ImageUnavailable { image, .. } => Some(format!(
                "pull or build it first (`docker pull {image}`, `docker load`, `docker build -t {image} .`), \
                 or choose another image with --image"
            )),
            _ => None,
        }
    }
}
