#!/usr/bin/env bash
# Runs every check CI runs, in CI's order, and stops at the first failure.
#   scripts/check.sh            formatting, lints, tests, docs, benches compile
#   scripts/check.sh --quick    skips the docs and bench builds
# Property-test case counts come from PROPTEST_CASES (each property has a modest default).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=false
[[ "${1:-}" == "--quick" ]] && quick=true

step() { printf '\n==> %s\n' "$*"; }

# Third-party HL7 peers for the relay's and the load generator's interop tests, when scripts/interop-setup.sh installed them
# (CI does; without them those tests say so and pass).
if [[ -z "${MLLP_INTEROP_PYTHON:-}" && -x target/interop-venv/bin/python ]]; then
    export MLLP_INTEROP_PYTHON="$PWD/target/interop-venv/bin/python"
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "relay module layers (relay/src/lib.rs states the rule)"
scripts/check-layers.sh

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

if ! $quick; then
    step "cargo doc (warnings are errors)"
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

    step "benches compile"
    cargo bench --workspace --no-run --locked
fi

printf '\nall checks passed\n'
