#!/usr/bin/env bash
# Runs every test: formatting and lints, the Rust tests (unit, transcripts, integration,
# property/fuzz smoke), then the compat-suite against the release binary.
# Everything builds once, in the release profile.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-test-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --release --all-targets -- -D warnings
echo "== cargo test (release)"
cargo test --release --all-targets
echo "== MongoDB storage contract (runs when COMET_TEST_MONGO_URL names a replica set)"
cargo test --release --test it storage_contract::mongodb -- --nocapture 2>&1 | grep -E "skipped|test result"
cargo build --release --bin comet
echo "== MongoDB wire harness (a scripted replica-set primary; protocol-spec/storage.md)"
COMET_BIN="$PWD/target/release/comet" timeout 900 tests/mongo_wire/.venv/bin/python -m pytest -q -p no:cacheprovider tests/mongo_wire
echo "== compat-suite"
(cd compat-suite && COMET_BIN="$PWD/../target/release/comet" timeout 1200 npm test)
echo "== all tests passed"
