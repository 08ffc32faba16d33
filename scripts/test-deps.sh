#!/usr/bin/env bash
# Install every system dependency the test suite needs. Idempotent, and fast
# (a couple of seconds) when everything is already present.
#
#   - apt packages (apt-get is only invoked if something is missing)
#   - rust toolchain components rustfmt and clippy (checked, not installed)
#   - PyPI: claude-agent-sdk (the real Claude Code CLI the conversation tests drive)
#   - the local Docker base image (scripts/base-image.sh)
set -euo pipefail

APT_PACKAGES=(debootstrap git tmux jq)

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { printf 'test-deps: %s\n' "$*" >&2; }
die() { printf 'test-deps: error: %s\n' "$*" >&2; exit 1; }

installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

# --- apt packages -----------------------------------------------------------
command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: this script expects a Debian-based host"
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "missing packages (${missing[*]}) and not root; install them or run as root"
        SUDO=(sudo)
    fi
    log "installing apt packages: ${missing[*]}"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "${missing[@]}" >&2
    for pkg in "${missing[@]}"; do
        installed "$pkg" || die "apt package $pkg is still not installed"
    done
else
    log "apt packages present: ${APT_PACKAGES[*]}"
fi

# --- rust toolchain components ----------------------------------------------
command -v cargo >/dev/null 2>&1 || die "cargo not found; install a Rust toolchain (https://rustup.rs)"
cargo fmt --version >/dev/null 2>&1 \
    || die "rustfmt is missing ('cargo fmt --version' failed); install it with: rustup component add rustfmt"
cargo clippy --version >/dev/null 2>&1 \
    || die "clippy is missing ('cargo clippy --version' failed); install it with: rustup component add clippy"
log "rust components present: $(cargo fmt --version), $(cargo clippy --version)"

# --- docker base image --------------------------------------------------------
# --- PyPI packages: the real agents the tests drive ---------------------------
# Claude Code, bundled with the Python SDK (claude_agent_sdk/_bundled/claude).
CLAUDE_AGENT_SDK_VERSION="0.2.187"
if python3 -c "import claude_agent_sdk, importlib.metadata as m, sys; sys.exit(m.version('claude-agent-sdk') != '$CLAUDE_AGENT_SDK_VERSION')" 2>/dev/null; then
    log "claude-agent-sdk $CLAUDE_AGENT_SDK_VERSION present"
else
    command -v python3 >/dev/null 2>&1 || die "python3 not found; it is needed to install Claude Code from PyPI"
    log "installing claude-agent-sdk $CLAUDE_AGENT_SDK_VERSION (ships Claude Code)"
    python3 -m pip install -q --disable-pip-version-check "claude-agent-sdk==$CLAUDE_AGENT_SDK_VERSION" >&2 \
        || die "pip install claude-agent-sdk failed"
fi

"$SCRIPT_DIR/base-image.sh"

log "all test dependencies present"
