#!/usr/bin/env bash
# A multi-node Ray cluster on one machine: a head node with no GPUs (the sweep's controller runs
# there) and worker nodes that *declare* GPUs, so GPU placement can be tried on a laptop.
# Declared GPUs are only a count for Ray's scheduler: trials placed on them get CUDA_VISIBLE_DEVICES
# set, find no CUDA device, and train on the CPU.
#
#   cluster/local.sh start     # head + $WORKERS worker nodes; prints the address to use
#   export RAY_AUTH_MODE=token RAY_ADDRESS=$(cluster/local.sh address)
#   mixsweep run examples/synthetic.yaml --dir runs/local
#   cluster/local.sh status    # `ray status` of this cluster
#   cluster/local.sh stop      # stops this cluster's processes only (`ray stop` would stop every Ray here)
#
# Every node is a separate `ray start` (own raylet, own object store) sharing one temp dir, so the
# cluster is found and stopped by that directory and does not disturb another Ray on the machine.
set -euo pipefail

: "${MIXSWEEP_LOCAL_DIR:=/tmp/mixsweep-local}"  # Ray's --temp-dir for this cluster only
: "${RAY_PORT:=6389}"                           # head's GCS port (not 6379: leave the default to other clusters)
: "${DASHBOARD_PORT:=8275}"                     # dashboard and Jobs API on 127.0.0.1
: "${WORKERS:=2}"                               # worker nodes
: "${GPUS_PER_WORKER:=2}"                       # declared GPUs per worker node
: "${CPUS_PER_WORKER:=2}"                       # CPUs per worker node (trial actors ask for resources.cpus)
: "${OBJECT_STORE_BYTES:=300000000}"            # per node; small, so three nodes fit in a laptop's memory

RAY=${RAY:-ray}
HOST=127.0.0.1
ADDRESS="$HOST:$RAY_PORT"
# Token authentication on every node (and for every driver that joins: export it in your shell too).
# All nodes here read the same token file, ~/.ray/auth_token unless RAY_AUTH_TOKEN(_PATH) says otherwise.
export RAY_AUTH_MODE=token

start() {
    mkdir -p "$MIXSWEEP_LOCAL_DIR"
    "$RAY" get-auth-token --generate >/dev/null  # creates ~/.ray/auth_token once; never printed here
    # The head declares 0 GPUs and 1 CPU: it runs the controller and tokenisation, never a GPU trial.
    "$RAY" start --head --node-ip-address="$HOST" --port="$RAY_PORT" --temp-dir="$MIXSWEEP_LOCAL_DIR" \
        --num-gpus=0 --num-cpus=1 --resources='{"head": 1}' \
        --include-dashboard=true --dashboard-host="$HOST" --dashboard-port="$DASHBOARD_PORT" \
        --object-store-memory="$OBJECT_STORE_BYTES" --disable-usage-stats
    for i in $(seq 1 "$WORKERS"); do
        # Ports 0 = any free port: several raylets on one host must not collide.
        "$RAY" start --address="$ADDRESS" --node-ip-address="$HOST" \
            --num-gpus="$GPUS_PER_WORKER" --num-cpus="$CPUS_PER_WORKER" --resources="{\"gpu_worker\": 1}" \
            --object-store-memory="$OBJECT_STORE_BYTES" --node-manager-port=0 --object-manager-port=0 \
            --dashboard-agent-listen-port=0 --dashboard-agent-grpc-port=0 --metrics-export-port=0 \
            --runtime-env-agent-port=0 --min-worker-port=0 --max-worker-port=0 --disable-usage-stats
    done
    echo "local cluster up: $((WORKERS * GPUS_PER_WORKER)) declared GPUs on $WORKERS worker nodes"
    echo "  RAY_AUTH_MODE=token RAY_ADDRESS=$ADDRESS mixsweep run SPEC --dir runs/NAME"
    echo "  dashboard and Jobs API: http://$HOST:$DASHBOARD_PORT"
}

status() {
    "$RAY" status --address="$ADDRESS"
}

# The pids of this cluster's processes: every Ray process started here names its session directory
# (under the temp dir) on its command line.
cluster_pids() {
    local pid
    for pid in $(pgrep -u "$(id -u)" -f -- "$MIXSWEEP_LOCAL_DIR/session_" || true); do
        [ "$pid" != "$$" ] && echo "$pid"
    done
}

stop() {
    local pids
    pids=$(cluster_pids)
    if [ -z "$pids" ]; then
        echo "no local cluster running under $MIXSWEEP_LOCAL_DIR"
        return 0
    fi
    kill $pids 2>/dev/null || true
    for _ in $(seq 1 50); do  # up to 5 s for a clean exit, then force
        [ -z "$(cluster_pids)" ] && break
        sleep 0.1
    done
    pids=$(cluster_pids)
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
    echo "local cluster under $MIXSWEEP_LOCAL_DIR stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    address) echo "$ADDRESS" ;;
    *) echo "usage: $0 start|status|address|stop" >&2; exit 2 ;;
esac
