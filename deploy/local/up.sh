#!/usr/bin/env bash
# Brings up longshore locally and shows it doing its job:
#   nats-server (JetStream) + kube-sim with two clusters (prod, staging)
#   + 2 dispatchers + 3 workers (their credentials: a directory of kubeconfigs), registers
#   prod and staging with the longshore CLI, then deploys deploy/local/sample-app.yaml to
#   prod through the HTTP API and shows the result. Ctrl-C stops everything.
#
#   bash deploy/local/up.sh          # stay up, with instructions for trying more
#   bash deploy/local/up.sh --once   # show the deployment, then stop (for scripts)
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
once=false
[ "${1:-}" = "--once" ] && once=true

NATS_PORT=${NATS_PORT:-4222}
NATS_MONITOR_PORT=$((NATS_PORT + 4000))
SIM_PORT=${SIM_PORT:-6443}
# The first dispatcher listens on 8080, where the longshore CLI looks by default.
DISPATCHER_PORTS=(${DISPATCHER_PORTS:-8080 8081})
WORKERS=${WORKERS:-3}
# Worker i serves /metrics, /healthz and /readyz on WORKER_PORT_BASE + i.
WORKER_PORT_BASE=${WORKER_PORT_BASE:-19090}
WORKER_PORTS=()
for i in $(seq 1 "$WORKERS"); do WORKER_PORTS+=($((WORKER_PORT_BASE + i))); done
state="$root/.longshore"
mkdir -p "$state/logs"
rm -rf "$state/nats"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# --- prerequisites ----------------------------------------------------------
source "$root/deploy/local/prereqs.sh"
ensure_nats_server
ensure_kubectl
command -v cargo >/dev/null || die "cargo is required (https://rustup.rs)"
command -v curl >/dev/null || die "curl is required"

for port in "$NATS_PORT" "$NATS_MONITOR_PORT" "$SIM_PORT" "${DISPATCHER_PORTS[@]}" "${WORKER_PORTS[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port is in use: stop what uses it, or set NATS_PORT (monitoring: NATS_PORT + 4000) / SIM_PORT / DISPATCHER_PORTS / WORKER_PORT_BASE"
  fi
done

say "building (first build takes a few minutes)"
cargo build --quiet -p longshore-dispatcher -p longshore-worker -p longshore-kube-sim
# Where cargo put the binaries: CARGO_TARGET_DIR if set (relative to the repository, as
# cargo reads it), else target/.
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
bin="$target_dir/debug"

# --- start everything -------------------------------------------------------
pids=()
cleanup() {
  trap - INT TERM EXIT
  say "stopping"
  # Workers and dispatchers first (they drain on SIGTERM), then the stand-ins.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  say "stopped; logs are in $state/logs"
}
trap cleanup INT TERM EXIT

start() { # name command...
  local name=$1; shift
  "$@" >"$state/logs/$name.log" 2>&1 &
  pids=("$!" "${pids[@]}")
}

wait_for() { # what url
  for _ in $(seq 1 150); do
    curl -fsS -o /dev/null "$2" 2>/dev/null && return 0
    sleep 0.2
  done
  die "$1 did not come up: see $state/logs/"
}

say "starting nats-server with JetStream on 127.0.0.1:$NATS_PORT"
start nats "$NATS_SERVER_BIN" -js -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MONITOR_PORT" -sd "$state/nats"
wait_for nats-server "http://127.0.0.1:$NATS_MONITOR_PORT/healthz"

say "starting kube-sim with clusters prod and staging on 127.0.0.1:$SIM_PORT"
# One file for kubectl, and a directory with a file per cluster for the workers, which
# watch it: a cluster's kubeconfig added there is used without a restart.
kubeconfig="$state/kubeconfig"
kubeconfigs="$state/kubeconfigs"
rm -rf "$kubeconfigs"
start kube-sim "$bin/kube-sim" --listen "127.0.0.1:$SIM_PORT" --clusters prod,staging \
  --rollout-step-ms 500 --write-kubeconfig "$kubeconfig" --write-kubeconfig-dir "$kubeconfigs"
wait_for kube-sim "http://127.0.0.1:$SIM_PORT/clusters/prod/version"

export LONGSHORE_NATS__URL="nats://127.0.0.1:$NATS_PORT"
for i in "${!DISPATCHER_PORTS[@]}"; do
  port=${DISPATCHER_PORTS[$i]}
  say "starting dispatcher $((i + 1)) on 127.0.0.1:$port"
  LONGSHORE_LISTEN="127.0.0.1:$port" start "dispatcher-$((i + 1))" "$bin/longshore-dispatcher"
done
for i in $(seq 1 "$WORKERS"); do
  say "starting worker $i"
  LONGSHORE_WORKER_ID="worker-$i" LONGSHORE_CLUSTERS__KUBECONFIG_DIR="$kubeconfigs" \
    LONGSHORE_LISTEN="127.0.0.1:${WORKER_PORTS[$((i - 1))]}" \
    start "worker-$i" "$bin/longshore-worker"
done
for port in "${DISPATCHER_PORTS[@]}"; do wait_for "dispatcher on $port" "http://127.0.0.1:$port/readyz"; done
for port in "${WORKER_PORTS[@]}"; do wait_for "worker on $port" "http://127.0.0.1:$port/readyz"; done

# --- register the clusters ------------------------------------------------------
api="http://127.0.0.1:${DISPATCHER_PORTS[0]}"
# The CLI was built with the rest; it talks to http://127.0.0.1:8080 unless told otherwise.
cli=target/debug/longshore
[ -z "${CARGO_TARGET_DIR:-}" ] || cli="$bin/longshore"
[ "$api" = http://127.0.0.1:8080 ] || cli="$cli --server $api"

register() { # name label: retried until the workers' pool has announced its credentials
  local out
  say "$cli clusters register $1 -l $2"
  for _ in $(seq 1 150); do
    out=$($cli clusters register "$1" -l "$2" 2>&1) && { echo "$out"; return 0; }
    sleep 0.2
  done
  die "registering $1 failed: $out"
}
register prod env=prod
register staging env=staging
say "$cli clusters list"
$cli clusters list

# --- deploy the sample application through the API ---------------------------
say "submitting deploy/local/sample-app.yaml to cluster prod via $api"
body=$(python3 -c 'import json,sys; print(json.dumps({"cluster": "prod", "action": "apply", "manifests": open(sys.argv[1]).read(), "pipeline": {"pipeline": "try-out", "stage": "deploy"}}))' deploy/local/sample-app.yaml)
key="try-out-$(date +%s)"
accepted=$(curl -fsS -X POST "$api/v1/operations" -H 'Content-Type: application/json' -H "Idempotency-Key: $key" -d "$body")
echo "$accepted"
id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$accepted")

say "waiting for operation $id"
state_of() { curl -fsS "$api/v1/operations/$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])'; }
for _ in $(seq 1 150); do
  s=$(state_of)
  case "$s" in queued|running) sleep 0.2 ;; *) break ;; esac
done
# Read it through the other dispatcher: replicas share all state through JetStream.
other="http://127.0.0.1:${DISPATCHER_PORTS[-1]}"
curl -fsS "$other/v1/operations/$id" | python3 -m json.tool
[ "$(state_of)" = succeeded ] || die "operation $id did not succeed (see $state/logs/)"

say "kubectl --kubeconfig $kubeconfig --context prod get ns,cm,deploy,svc -n shop"
kubectl --kubeconfig "$kubeconfig" --context prod get namespace shop
kubectl --kubeconfig "$kubeconfig" --context prod -n shop get configmap,deployment,service

if $once; then exit 0; fi

cat <<TXT

longshore is running: 2 dispatchers, $WORKERS workers, clusters prod and staging.

  Submit (to any dispatcher; the same Idempotency-Key always means the same operation):
    curl -s -X POST $api/v1/operations -H 'Content-Type: application/json' -H 'Idempotency-Key: hello-1' \\
      -d '{"cluster":"staging","action":"apply","manifests":[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"hello","namespace":"default"},"data":{"from":"longshore"}}]}'
  Status:   curl -s $other/v1/operations/$id

  The same with the longshore CLI, from $root
  (its commands and flags: $cli --help, and docs/pipelines.md):
    $cli submit -f deploy/local/sample-app.yaml --cluster staging --wait
    $cli status $id

  The clusters, registered at runtime (docs/clusters.md):
    $cli clusters list -l env=prod
    $cli clusters get staging
    $cli clusters label staging tier=gold
  Register another: kube-sim adds it, its kubeconfig goes where the workers look (they
  read it within 2 s, no restart; until then a registration is refused, naming
  credentials), then it is registered and used:
    curl -s -X PUT http://127.0.0.1:$SIM_PORT/_sim/clusters/dev
    curl -s http://127.0.0.1:$SIM_PORT/_sim/clusters/dev/kubeconfig >$kubeconfigs/.dev.yaml \\
      && mv $kubeconfigs/.dev.yaml $kubeconfigs/dev.yaml
    $cli clusters register dev -l env=dev
    $cli submit -f deploy/local/sample-app.yaml --cluster dev --wait

  What longshore manages, as the watchers see it (health, drift), and its events
  (docs/watching.md, docs/inventory.md); change it behind longshore's back and watch:
    $cli objects --cluster prod
    $cli events --cluster prod --after 0
    kubectl --kubeconfig $kubeconfig --context prod -n shop patch deployment storefront \\
      --type=merge -p '{"spec":{"replicas":5}}'    # then: $cli objects --cluster prod --drifted

  Clusters: kubectl --kubeconfig $kubeconfig --context staging get all -A
  Writes:   curl -s http://127.0.0.1:$SIM_PORT/_sim/clusters/prod/writes
  Metrics:  curl -s http://127.0.0.1:${DISPATCHER_PORTS[0]}/metrics   curl -s http://127.0.0.1:${WORKER_PORTS[0]}/metrics

  Logs:     $state/logs/

Press Ctrl-C to stop everything.
TXT
wait
