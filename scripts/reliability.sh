#!/usr/bin/env bash
# The long runs of the reliability suite, beside the benchmarks: the same chaos, load, fuzz
# and property tests the test command runs bounded, with many more rounds, seconds and
# inputs. Each test prints its figures (rounds, requests, seeds); BENCHMARKS.md records them.
#
#   scripts/reliability.sh            # about 30-40 minutes on 2 cores
#   ROUNDS=40 EXAMPLES=500 CASES=50000 LOAD_SECS=300 scripts/reliability.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/test-deps.sh
export CLAUDE_VM_CHAOS_ROUNDS="${ROUNDS:-16}"
export CLAUDE_VM_FUZZ_EXAMPLES="${EXAMPLES:-200}"
export PROPTEST_CASES="${CASES:-10000}"
export CLAUDE_VM_LOAD_SECS="${LOAD_SECS:-120}"
echo "== chaos ($CLAUDE_VM_CHAOS_ROUNDS rounds), fuzz ($CLAUDE_VM_FUZZ_EXAMPLES examples per operation)," \
     "properties ($PROPTEST_CASES cases), load (${CLAUDE_VM_LOAD_SECS}s)" >&2
cargo test --locked -p claude-vm-agents --test properties -p claude-vm-daemon --test properties -- --nocapture
cargo test --locked -p claude-vm --test chaos --test api_fuzz --test server_load --test hostile_agent \
    -- --nocapture --test-threads 1
