#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need (idempotent, quick when
# present), checks formatting and lints, then runs every test against real Docker.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/test-deps.sh
echo "== cargo fmt --check" >&2
cargo fmt --all --check
echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test" >&2
cargo test --workspace --locked --no-fail-fast
