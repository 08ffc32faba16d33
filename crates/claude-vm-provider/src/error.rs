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
    /// The SSH connection to a remote host failed.
    #[error("{}", ssh_message(*.failure, destination, reason))]
    Ssh {
        failure: SshFailure,
        /// `user@host:port` as the user configured it.
        destination: String,
        reason: String,
        /// The `ssh` command line the user can run to see for themselves.
        command: String,
    },
    /// The remote host answers, but has no Docker engine claude-vm can use.
    #[error("no usable Docker engine on {destination}: {reason}")]
    NoDocker {
        destination: String,
        user: String,
        reason: String,
    },
    /// An image build failed: its error and the last lines it printed.
    #[error("building the image {tag} failed: {reason}{}", tail_text(tail))]
    BuildFailed {
        tag: String,
        reason: String,
        /// The build's last output lines (at most 20).
        tail: Vec<String>,
    },
    /// A DevPod provider's command for a machine failed or said something unexpected.
    #[error("{provider}: {what}: {reason}")]
    Machine {
        /// The claude-vm provider's name.
        provider: String,
        /// What was being done (`creating machine cvm-1a2b`).
        what: String,
        reason: String,
        hint: Option<String>,
    },
    /// The remote host cannot run this claude-vm binary.
    #[error(
        "{destination} is a {remote} machine, but this claude-vm is built for {local}: it cannot run there"
    )]
    ArchMismatch {
        destination: String,
        remote: String,
        local: String,
    },
}

/// How an SSH connection failed, as far as the client's messages tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SshFailure {
    /// Name resolution, refused connection, no route, timeout.
    Unreachable,
    /// No accepted key (claude-vm never prompts for a password).
    Auth,
    /// The host's key is not in known_hosts.
    UnknownHostKey,
    /// The host's key differs from the one in known_hosts.
    ChangedHostKey,
    /// The connection dropped or something else went wrong.
    Other,
}

fn tail_text(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; its last lines:\n  {}", tail.join("\n  "))
    }
}

fn ssh_message(failure: SshFailure, destination: &str, reason: &str) -> String {
    match failure {
        SshFailure::Unreachable => format!("cannot reach {destination} over ssh: {reason}"),
        SshFailure::Auth => format!("ssh could not log in to {destination}: {reason}"),
        SshFailure::UnknownHostKey => {
            format!("the ssh host key of {destination} is not known: {reason}")
        }
        SshFailure::ChangedHostKey => format!(
            "the ssh host key of {destination} has CHANGED since it was last seen (someone may be intercepting the connection): {reason}"
        ),
        SshFailure::Other => format!("ssh to {destination} failed: {reason}"),
    }
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
            ProviderError::Ssh {
                failure, command, ..
            } => Some(ssh_hint(*failure, command)),
            ProviderError::NoDocker { user, .. } => Some(format!(
                "install and start Docker on the host, let {user} use it \
                 (`sudo usermod -aG docker {user}`, then log in again), or point claude-vm at its \
                 socket with `claude-vm provider set-options <provider> --option docker_socket=/path/to/docker.sock`"
            )),
            ProviderError::BuildFailed { .. } => Some(
                "fix the Dockerfile, or the `build` settings or features in devcontainer.json \
                 (the build's error and last lines say what failed), then build it again with \
                 `claude-vm workspace up --rebuild`"
                    .to_owned(),
            ),
            ProviderError::ArchMismatch { local, .. } => Some(format!(
                "claude-vm copies itself to the host and into its workspaces: use a {local} host, \
                 or run a claude-vm built for the host's architecture"
            )),
            ProviderError::Machine { hint, .. } => hint.clone(),
            _ => None,
        }
    }
}

/// The remedy for an SSH failure; `command` is the equivalent `ssh` invocation.
pub fn ssh_hint(failure: SshFailure, command: &str) -> String {
    match failure {
        SshFailure::Unreachable => format!(
            "check the host name and port (`claude-vm provider set-options <provider> --option host=... --option port=...`), \
             that sshd runs there and that this machine can reach it: try `{command} true`"
        ),
        SshFailure::Auth => format!(
            "claude-vm never asks for a password: make `{command} true` work without one (load your key \
             with `ssh-add`, or set `--option identity=~/.ssh/KEY`), and make sure its public key is \
             in ~/.ssh/authorized_keys of that user on the host"
        ),
        SshFailure::UnknownHostKey => format!(
            "connect once with `{command} true`, check the fingerprint it shows against the host's \
             and accept it; claude-vm never accepts host keys by itself"
        ),
        SshFailure::ChangedHostKey => format!(
            "if the host was reinstalled, confirm its new key with its administrator, remove the old \
             one with `ssh-keygen -R <host>` and connect once with `{command} true`"
        ),
        SshFailure::Other => format!("see what `{command} true` says"),
    }
}
