#!/usr/bin/env bash
# Runs the whole test suite as CI does: fetches the pinned real models, then
# builds once in the release profile (tract is slow unoptimised) and runs
# every test, and checks that the documentation builds without warnings.
set -euo pipefail

cd "$(dirname "$0")/.."
./scripts/fetch-models.sh
cargo test --release --locked
RUSTDOCFLAGS="-D warnings" cargo doc --release --locked --no-deps
