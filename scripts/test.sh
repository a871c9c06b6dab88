#!/usr/bin/env bash
# Runs the whole test suite as CI does. It fetches the pinned real models,
# builds once in the release profile (tract is slow unoptimised) and runs
# every test. Then it checks every folded fixture with onnx.checker and
# onnxruntime, and checks that the documentation builds without warnings.
set -euo pipefail

cd "$(dirname "$0")/.."
./scripts/fetch-models.sh
cargo test --release --locked

# The acceptance check with onnxruntime, an engine independent of tract.
python3 -m pip install --quiet --disable-pip-version-check -r fixtures/requirements.txt
python3 scripts/check_onnxruntime.py target/release/onnx-fold
RUSTDOCFLAGS="-D warnings" cargo doc --release --locked --no-deps
