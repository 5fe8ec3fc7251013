#!/usr/bin/env bash
# The one test command: installs what is missing, then runs every check and
# test of the project (Rust workspace and the JavaScript reference).
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/setup.sh

# A CI build is cold and built once: incremental caches would only take disk.
if [ -n "${CI:-}" ]; then
  export CARGO_INCREMENTAL=0
fi

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo clippy (conformance with Redis in containers)"
cargo clippy -p conformance --all-targets --features containers --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
if [ -f js-reference/package.json ]; then
  echo "== js-reference tests"
  (cd js-reference && npm test)
fi
