#!/usr/bin/env bash
# Runs the whole test suite: Rust formatting, lints and unit tests, then installs ferrocorn
# from this checkout and runs the black-box pytest suite against real server processes.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install -q -r requirements-test.txt
python3 -m pip install -q .

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace

python3 -m pytest -q
