#!/usr/bin/env bash
# Brings up longshore locally and shows it doing its job:
#   nats-server (JetStream) + kube-sim with two clusters (prod, staging)
#   + 2 dispatchers + 3 workers (their credentials: a directory of kubeconfigs), registers
#   prod and staging with the longshore CLI, then deploys deploy/local/sample-app.yaml to
#   prod through the HTTP API and shows the result, then rolls it out to both clusters in
#   two waves with an approval between them. Ctrl-C stops everything.
#
#   bash deploy/local/up.sh          # stay up, with instructions for trying more
#   bash deploy/local/up.sh --once   # show the deployment, then stop (for scripts)
#   bash deploy/local/up.sh --agent  # also a private cluster, edge, served by an agent
#
# --agent (combines with --once) runs the hub's nats-server from a configuration file, with
# a JetStream domain (hub), users (the hub's own processes authenticate) and a leaf-node
# listener; a second nats-server as a leaf node that dials out to it; a second kube-sim
# with cluster edge, whose kubeconfig only the agents have; and AGENTS (2) agents, pool
# agent-edge, on the leaf node, which register edge themselves. Then it deploys to edge
# through the hub's API as well (docs/agents.md).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
once=false
agent=false
for arg in "$@"; do
  case "$arg" in
    --once) once=true ;;
    --agent) agent=true ;;
    *) printf 'error: unknown option %s (usage: %s [--once] [--agent])\n' "$arg" "$0" >&2; exit 2 ;;
  esac
done

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
# --agent: the hub's leaf-node listener, the leaf node's client port (its monitoring port
# is LEAF_CLIENT_PORT + 4000), edge's kube-sim, and agent i on AGENT_PORT_BASE + i.
LEAF_PORT=${LEAF_PORT:-7422}
LEAF_CLIENT_PORT=${LEAF_CLIENT_PORT:-4223}
LEAF_MONITOR_PORT=$((LEAF_CLIENT_PORT + 4000))
EDGE_SIM_PORT=${EDGE_SIM_PORT:-6444}
AGENTS=${AGENTS:-2}
AGENT_PORT_BASE=${AGENT_PORT_BASE:-19190}
AGENT_PORTS=()
agent_ports=()
if $agent; then
  for i in $(seq 1 "$AGENTS"); do AGENT_PORTS+=($((AGENT_PORT_BASE + i))); done
  agent_ports=("$LEAF_PORT" "$LEAF_CLIENT_PORT" "$LEAF_MONITOR_PORT" "$EDGE_SIM_PORT" "${AGENT_PORTS[@]}")
fi
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

for port in "$NATS_PORT" "$NATS_MONITOR_PORT" "$SIM_PORT" "${DISPATCHER_PORTS[@]}" "${WORKER_PORTS[@]}" "${agent_ports[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port is in use: stop what uses it, or set NATS_PORT (monitoring: NATS_PORT + 4000) / SIM_PORT / DISPATCHER_PORTS / WORKER_PORT_BASE$($agent && echo ' / LEAF_PORT / LEAF_CLIENT_PORT (monitoring: + 4000) / EDGE_SIM_PORT / AGENT_PORT_BASE')"
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
agent_pids=()
cleanup() {
  trap - INT TERM EXIT
  say "stopping"
  # --agent: the agents first, while the leaf node they drain through is still up.
  for pid in "${agent_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${agent_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
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

# Waits, boundedly, until a command succeeds.
wait_until() { # what command...
  local what=$1; shift
  for _ in $(seq 1 150); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  die "$what: see $state/logs/"
}

# The environment the hub's own dispatchers and workers get: with --agent, the user they
# authenticate as (the hub then has users); without, nothing.
hub_auth=()
if ! $agent; then
  say "starting nats-server with JetStream on 127.0.0.1:$NATS_PORT"
  start nats "$NATS_SERVER_BIN" -js -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MONITOR_PORT" -sd "$state/nats"
  wait_for nats-server "http://127.0.0.1:$NATS_MONITOR_PORT/healthz"
else
  # Fresh random passwords each run, readable only by this user.
  password() { od -An -tx1 -N16 /dev/urandom | tr -d ' \n'; }
  nats_password_file="$state/nats-password"
  hub_conf="$state/nats-hub.conf"
  leaf_conf="$state/nats-leaf.conf"
  (
    umask 077
    rm -f "$nats_password_file" "$hub_conf" "$leaf_conf"
    password >"$nats_password_file"
  )
  agent_password=$(password)
  hub_auth=(LONGSHORE_NATS__AUTH__USER=longshore "LONGSHORE_NATS__AUTH__PASSWORD_FILE=$nats_password_file")
  # The leaf's user may publish and subscribe only to what agent pool agent-edge needs.
  # Users' permissions go in the server's authorization block: a leaf node authenticates
  # as one of its users (leafnodes {} has no authorization block here).
  agent_permissions=$("$bin/longshore" agent-permissions --cluster edge) ||
    die "longshore agent-permissions --cluster edge failed"
  (
    umask 077
    cat >"$hub_conf" <<CONF
# Generated by deploy/local/up.sh --agent: the hub.
listen: 127.0.0.1:$NATS_PORT
http: 127.0.0.1:$NATS_MONITOR_PORT
jetstream {
  store_dir: "$state/nats"
  domain: hub
}
leafnodes {
  listen: 127.0.0.1:$LEAF_PORT
}
authorization {
  users: [
    { user: "longshore", password: "$(cat "$nats_password_file")" }
    { user: "agent-edge", password: "$agent_password",
$(sed 's/^/      /' <<<"$agent_permissions")
    }
  ]
}
CONF
    cat >"$leaf_conf" <<CONF
# Generated by deploy/local/up.sh --agent: the leaf node, in edge's network. No JetStream
# of its own: its clients reach the hub's (domain hub) over the link it dials.
listen: 127.0.0.1:$LEAF_CLIENT_PORT
http: 127.0.0.1:$LEAF_MONITOR_PORT
leafnodes {
  remotes = [ { url: "nats-leaf://agent-edge:$agent_password@127.0.0.1:$LEAF_PORT" } ]
}
CONF
  )
  say "starting nats-server (the hub: JetStream domain hub, users, leaf nodes on 127.0.0.1:$LEAF_PORT) on 127.0.0.1:$NATS_PORT"
  start nats "$NATS_SERVER_BIN" -c "$hub_conf"
  wait_for nats-server "http://127.0.0.1:$NATS_MONITOR_PORT/healthz"
fi

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
  LONGSHORE_LISTEN="127.0.0.1:$port" start "dispatcher-$((i + 1))" env "${hub_auth[@]}" "$bin/longshore-dispatcher"
done
for i in $(seq 1 "$WORKERS"); do
  say "starting worker $i"
  LONGSHORE_WORKER_ID="worker-$i" LONGSHORE_CLUSTERS__KUBECONFIG_DIR="$kubeconfigs" \
    LONGSHORE_LISTEN="127.0.0.1:${WORKER_PORTS[$((i - 1))]}" \
    start "worker-$i" env "${hub_auth[@]}" "$bin/longshore-worker"
done
for port in "${DISPATCHER_PORTS[@]}"; do wait_for "dispatcher on $port" "http://127.0.0.1:$port/readyz"; done
for port in "${WORKER_PORTS[@]}"; do wait_for "worker on $port" "http://127.0.0.1:$port/readyz"; done

if $agent; then
  # --- the private cluster edge, its leaf node and its agents -------------------
  say "starting the leaf node (nats-server, no JetStream) on 127.0.0.1:$LEAF_CLIENT_PORT, dialing the hub at 127.0.0.1:$LEAF_PORT"
  start nats-leaf "$NATS_SERVER_BIN" -c "$leaf_conf"
  leaf_pid=${pids[0]}
  wait_for "the leaf node" "http://127.0.0.1:$LEAF_MONITOR_PORT/healthz"
  leaf_connected() {
    curl -fsS "http://127.0.0.1:$NATS_MONITOR_PORT/leafz" |
      python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin).get("leafnodes", 0) > 0 else 1)'
  }
  wait_until "the leaf node did not connect to the hub" leaf_connected

  say "starting kube-sim with cluster edge on 127.0.0.1:$EDGE_SIM_PORT (its kubeconfig: for the agents only)"
  # Not in $kubeconfigs: the hub's workers have no credentials for edge.
  edge_kubeconfig="$state/kubeconfig-edge"
  agent_kubeconfigs="$state/agent-kubeconfigs"
  rm -rf "$agent_kubeconfigs"
  start kube-sim-edge "$bin/kube-sim" --listen "127.0.0.1:$EDGE_SIM_PORT" --clusters edge \
    --rollout-step-ms 500 --write-kubeconfig "$edge_kubeconfig" --write-kubeconfig-dir "$agent_kubeconfigs"
  wait_for kube-sim-edge "http://127.0.0.1:$EDGE_SIM_PORT/clusters/edge/version"

  for i in $(seq 1 "$AGENTS"); do
    say "starting agent $i (pool agent-edge, cluster edge) on the leaf node"
    LONGSHORE_NATS__URL="nats://127.0.0.1:$LEAF_CLIENT_PORT" LONGSHORE_NATS__JETSTREAM__DOMAIN=hub \
      LONGSHORE_NATS__INBOX_PREFIX=_INBOX_agent-edge LONGSHORE_POOL__NAME=agent-edge \
      LONGSHORE_AGENT__CLUSTER=edge LONGSHORE_AGENT__LABELS__ENV=edge LONGSHORE_WORKER_ID="agent-$i" \
      LONGSHORE_CLUSTERS__KUBECONFIG_DIR="$agent_kubeconfigs" LONGSHORE_LISTEN="127.0.0.1:${AGENT_PORTS[$((i - 1))]}" \
      start "agent-$i" "$bin/longshore-worker"
    agent_pids+=("${pids[0]}")
  done
  for port in "${AGENT_PORTS[@]}"; do wait_for "agent on $port" "http://127.0.0.1:$port/readyz"; done
fi

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

# --- a fleet rollout: both clusters in two waves, the second behind an approval -----
say "$cli rollout submit -f deploy/local/sample-app.yaml --selector 'env in (prod,staging)' --order-by env --waves 1,100% --approval-before 2"
rollout=$($cli rollout submit -f deploy/local/sample-app.yaml --selector 'env in (prod,staging)' \
  --order-by env --waves 1,100% --approval-before 2 --idempotency-key "try-out-fleet-$(date +%s)" -o json) ||
  die "the fleet rollout was not accepted: $rollout"
echo "$rollout"
rid=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$rollout")
rollout_state() { $cli rollout status "$rid" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])'; }
waiting() { [ "$(rollout_state)" = waiting_approval ]; }
wait_until "rollout $rid did not reach its approval gate" waiting
say "$cli rollout status $rid (wave 1, prod, is done; wave 2, staging, waits for an approval)"
$cli rollout status "$rid"
say "$cli rollout approve $rid"
$cli rollout approve "$rid"
say "$cli rollout wait $rid"
$cli rollout wait "$rid" --timeout 60s || die "rollout $rid did not succeed (see $state/logs/)"

# The web console: the same API, drawn in a browser (docs/console.md).
say "the web console is at $api/ui; its operations page lists what GET /v1/operations returns:"
curl -fsS -o /dev/null "$api/ui/rollouts/$rid" || die "the console did not answer at $api/ui"
curl -fsS "$api/v1/operations?limit=3" | python3 -c 'import json,sys
for o in json.load(sys.stdin)["items"]:
    print("  %s  %-10s %-8s %s" % (o["id"], o["state"], o["cluster"], o["action"]))'

if $agent; then
  # --- deploy to edge: hub dispatcher -> JetStream (domain hub) -> leaf node -> agent ---
  # The agent registered edge itself, for its pool; wait until the dispatchers see it.
  say "$cli clusters get edge (registered by its agent, not by the CLI)"
  wait_until "cluster edge was not registered by its agent" $cli clusters get edge
  say "submitting deploy/local/sample-app.yaml to cluster edge via $api"
  body=$(python3 -c 'import json,sys; print(json.dumps({"cluster": "edge", "action": "apply", "manifests": open(sys.argv[1]).read(), "pipeline": {"pipeline": "try-out", "stage": "deploy-edge"}}))' deploy/local/sample-app.yaml)
  accepted=$(curl -fsS -X POST "$api/v1/operations" -H 'Content-Type: application/json' -H "Idempotency-Key: try-out-edge-$(date +%s)" -d "$body")
  echo "$accepted"
  edge_id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$accepted")
  say "waiting for operation $edge_id"
  field_of() { curl -fsS "$api/v1/operations/$1" | python3 -c 'import json,sys; print(json.load(sys.stdin).get(sys.argv[1]) or "")' "$2"; }
  finished() { case "$(field_of "$edge_id" state)" in queued|running|"") return 1 ;; esac; }
  wait_until "operation $edge_id did not finish" finished
  curl -fsS "$api/v1/operations/$edge_id" | python3 -m json.tool
  [ "$(field_of "$edge_id" state)" = succeeded ] || die "operation $edge_id did not succeed (see $state/logs/)"
  edge_worker=$(field_of "$edge_id" worker)
  [[ "$edge_worker" =~ ^agent-[0-9]+$ ]] ||
    die "operation $edge_id was applied by $edge_worker, not by an agent of edge"
  say "operation $edge_id succeeded on edge; its worker is $edge_worker: the agent, through the leaf node"
  say "kubectl --kubeconfig $edge_kubeconfig --context edge -n shop get configmap,deployment,service"
  kubectl --kubeconfig "$edge_kubeconfig" --context edge -n shop get configmap,deployment,service
  say "$cli clusters get edge"
  $cli clusters get edge
  say "$cli clusters list"
  $cli clusters list
fi

if $once; then exit 0; fi

cat <<TXT

longshore is running: 2 dispatchers, $WORKERS workers, clusters prod and staging.

  Submit (to any dispatcher; the same Idempotency-Key always means the same operation):
    curl -s -X POST $api/v1/operations -H 'Content-Type: application/json' -H 'Idempotency-Key: hello-1' \\
      -d '{"cluster":"staging","action":"apply","manifests":[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"hello","namespace":"default"},"data":{"from":"longshore"}}]}'
  Status:   curl -s $other/v1/operations/$id
  The fleet rollout: $cli rollout status $rid   (docs/rollouts.md)

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
  Console:  http://127.0.0.1:${DISPATCHER_PORTS[0]}/ui   (docs/console.md)
  Metrics:  curl -s http://127.0.0.1:${DISPATCHER_PORTS[0]}/metrics   curl -s http://127.0.0.1:${WORKER_PORTS[0]}/metrics

  Logs:     $state/logs/
TXT
if $agent; then
  cat <<TXT

  The private cluster edge, reached only through its agents (pool agent-edge, $AGENTS of them)
  on the leaf node 127.0.0.1:$LEAF_CLIENT_PORT, which dials out to the hub's leaf-node port
  $LEAF_PORT (docs/agents.md). The hub's workers have no credentials for it:
    $cli clusters get edge
    $cli submit -f deploy/local/sample-app.yaml --cluster edge --wait
  Cut the leaf's link to the hub: stop the leaf node (pid $leaf_pid), and edge becomes
  unreachable, "no agent of pool agent-edge is connected":
    kill $leaf_pid
    $cli clusters get edge
  Submit to it anyway: it is accepted (202, with a "cluster" note saying why it waits),
  and stays queued:
    curl -s -X POST $api/v1/operations -H 'Content-Type: application/json' -H 'Idempotency-Key: edge-1' \\
      -d '{"cluster":"edge","action":"apply","manifests":[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"hello","namespace":"default"},"data":{"from":"the hub"}}]}'
  Start the leaf node again (in another terminal; Ctrl-C there stops it): the agents
  reconnect through it and apply the operation:
    $NATS_SERVER_BIN -c $leaf_conf
    $cli status <id>
  Edge:     kubectl --kubeconfig $edge_kubeconfig --context edge get all -A
            (its kube-sim is on 127.0.0.1:$EDGE_SIM_PORT; the agents' kubeconfig: $agent_kubeconfigs)
TXT
fi
printf '\nPress Ctrl-C to stop everything.\n'
wait
