#!/usr/bin/env bash
# Build and install claude-vm, then bring up a workspace for a folder (default: the current
# one). Usage: scripts/quickstart.sh [FOLDER|GIT-URL] [-- extra `workspace up` flags]
#
# Uses the configured default image when Docker has it or can pull it; on a machine that
# cannot pull images, builds the local base image (scripts/base-image.sh) and uses that.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${1:-$PWD}"
shift || true
[ "${1:-}" = "--" ] && shift

echo "== building and installing claude-vm" >&2
cargo install --locked --quiet --path "$repo/crates/claude-vm" --root "${CARGO_INSTALL_ROOT:-$HOME/.cargo}"
bin="${CARGO_INSTALL_ROOT:-$HOME/.cargo}/bin/claude-vm"

image_args=()
default_image="buildpack-deps:bookworm-scm"
if ! docker image inspect "$default_image" >/dev/null 2>&1 \
    && ! docker pull -q "$default_image" >/dev/null 2>&1; then
    echo "== $default_image cannot be pulled here; using the locally built base image" >&2
    "$repo/scripts/base-image.sh"
    image_args=(--image "${CLAUDE_VM_TEST_IMAGE:-claude-vm-test-base:bookworm-3}")
fi

echo "== claude-vm workspace up $target" >&2
"$bin" workspace up "$target" "${image_args[@]}" "$@"
"$bin" workspace list
