#!/usr/bin/env bash
# Build and install claude-vm, bring up a workspace for a folder (default: the current one)
# and start a first conversation in it, printing the agent's answer (or the one line that
# says what is missing, e.g. an account: `claude-vm agents login claude`).
# Usage: scripts/quickstart.sh [FOLDER|GIT-URL] [-- extra `workspace up` flags]
#
# Uses the configured default image when Docker has it or can pull it; on a machine that
# cannot pull images, builds the local base image (scripts/base-image.sh) and uses that.
# CLAUDE_VM_BIN names an already built claude-vm to use instead of building one;
# CLAUDE_VM_FIRST_MESSAGE the first message.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${1:-$PWD}"
shift || true
[ "${1:-}" = "--" ] && shift

if [ -n "${CLAUDE_VM_BIN:-}" ]; then
    bin="$CLAUDE_VM_BIN"
else
    echo "== building and installing claude-vm" >&2
    cargo install --locked --quiet --path "$repo/crates/claude-vm" --root "${CARGO_INSTALL_ROOT:-$HOME/.cargo}"
    bin="${CARGO_INSTALL_ROOT:-$HOME/.cargo}/bin/claude-vm"
fi

image_args=()
default_image="buildpack-deps:bookworm-scm"
if ! docker image inspect "$default_image" >/dev/null 2>&1 \
    && ! docker pull -q "$default_image" >/dev/null 2>&1; then
    echo "== $default_image cannot be pulled here; using the locally built base image" >&2
    "$repo/scripts/base-image.sh"
    image_args=(--image "${CLAUDE_VM_TEST_IMAGE:-claude-vm-test-base:bookworm-4}")
fi

echo "== claude-vm workspace up $target" >&2
name="$("$bin" workspace up "$target" "${image_args[@]}" "$@")"
"$bin" workspace list >&2

message="${CLAUDE_VM_FIRST_MESSAGE:-Say hello, and tell me in one line what this project is.}"
echo "== claude-vm new-chat $name -m \"$message\" --wait" >&2
exec "$bin" new-chat "$name" -m "$message" --wait
