#!/usr/bin/env bash
# A multi-node Ray cluster on one machine: a head node with no GPUs (the sweep's controller runs
# there) and worker nodes that *declare* GPUs, so GPU placement can be tried on a laptop.
# Declared GPUs are only a count for Ray's scheduler: trials placed on them get CUDA_VISIBLE_DEVICES
# set, find no CUDA device, and train on the CPU.
#
#   cluster/local.sh start     # head + $WORKERS worker nodes on free ports; prints the address to use
#   export RAY_AUTH_MODE=token RAY_ADDRESS=$(cluster/local.sh address)
#   mixsweep run examples/synthetic.yaml --dir runs/local
#   mixsweep submit examples/synthetic.yaml --address $(cluster/local.sh dashboard) --dir /tmp/sweeps/s1
#   cluster/local.sh status    # `ray status` of this cluster
#   cluster/local.sh stop      # stops this cluster's processes only (`ray stop` would stop every Ray here)
#
# Every node is a separate `ray start` (own raylet, own object store) sharing one temp dir. Every
# port is a free one picked at start (another Ray on the machine, e.g. an embedded `mixsweep run`,
# holds Ray's default ports), and all nodes start in one new session: the ports and the session id
# go to $MIXSWEEP_LOCAL_DIR/cluster.env, where `address`, `status` and `stop` find them.
set -euo pipefail

: "${MIXSWEEP_LOCAL_DIR:=/tmp/mixsweep-local}"  # Ray's --temp-dir for this cluster only
: "${RAY_PORT:=}"                               # head's GCS port; empty = a free port
: "${DASHBOARD_PORT:=}"                         # dashboard and Jobs API on 127.0.0.1; empty = a free port
: "${WORKERS:=2}"                               # worker nodes
: "${GPUS_PER_WORKER:=2}"                       # declared GPUs per worker node
: "${CPUS_PER_WORKER:=2}"                       # CPUs per worker node (trial actors ask for resources.cpus)
: "${OBJECT_STORE_BYTES:=300000000}"            # per node; small, so three nodes fit in a laptop's memory

RAY=${RAY:-ray}
PYTHON=${PYTHON:-python3}
HOST=127.0.0.1
STATE="$MIXSWEEP_LOCAL_DIR/cluster.env"
# Token authentication on every node (and for every driver that joins: export it in your shell too).
# All nodes here read the same token file, ~/.ray/auth_token unless RAY_AUTH_TOKEN(_PATH) says otherwise.
export RAY_AUTH_MODE=token

die() { echo "local.sh: $*" >&2; exit 1; }

# N distinct free TCP ports on $HOST: all bound at once so that none is picked twice.
free_ports() {
    "$PYTHON" - "$1" "$HOST" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind((sys.argv[2], 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

load_state() {
    [ -f "$STATE" ] || die "no local cluster under $MIXSWEEP_LOCAL_DIR (no $STATE); run: cluster/local.sh start"
    # shellcheck disable=SC1090
    . "$STATE"
}

# The pids of this cluster: every process of the session the nodes were started in, every process
# whose command line names this cluster's session directory, and all their descendants (a submitted
# job's driver runs in a session of its own under the head's job supervisor).
cluster_pids() {
    ps -eo pid=,ppid=,sid=,args= | SID="${SID:-}" DIR="$MIXSWEEP_LOCAL_DIR/session_" SELF=$$ awk '
        { pid[NR] = $1; ppid[NR] = $2
          if (($3 == ENVIRON["SID"] && ENVIRON["SID"] != "") || index($0, ENVIRON["DIR"])) mine[$1] = 1 }
        END {
            do { grew = 0
                 for (i = 1; i <= NR; i++) if (!(pid[i] in mine) && (ppid[i] in mine)) { mine[pid[i]] = 1; grew = 1 }
            } while (grew)
            for (p in mine) if (p != ENVIRON["SELF"]) print p
        }'
}

start() {
    mkdir -p "$MIXSWEEP_LOCAL_DIR"
    if [ -f "$STATE" ]; then
        SID=""; . "$STATE"
        [ -z "$(cluster_pids)" ] || die "a local cluster already runs under $MIXSWEEP_LOCAL_DIR; cluster/local.sh stop first"
    fi
    "$RAY" get-auth-token --generate >/dev/null  # creates ~/.ray/auth_token once; never printed here
    # A new session holds every process the nodes start, so that `stop` can end them all.
    setsid bash "$0" __start_nodes
}

# Runs as the leader of a new session (see start): its pid is the session id.
start_nodes() {
    local gcs dash client agent_http agent_grpc metrics runtime_env node_manager object_manager
    read -r gcs dash client agent_http agent_grpc metrics runtime_env node_manager object_manager <<<"$(free_ports 9)"
    RAY_PORT=${RAY_PORT:-$gcs}
    DASHBOARD_PORT=${DASHBOARD_PORT:-$dash}
    printf 'SID=%s\nRAY_PORT=%s\nDASHBOARD_PORT=%s\nCLIENT_PORT=%s\nAGENT_PORT=%s\nMETRICS_PORT=%s\n' \
        "$$" "$RAY_PORT" "$DASHBOARD_PORT" "$client" "$agent_http" "$metrics" >"$STATE"
    # The head declares 0 GPUs and 1 CPU: it runs the controller and tokenisation, never a GPU trial.
    "$RAY" start --head --node-ip-address="$HOST" --port="$RAY_PORT" --temp-dir="$MIXSWEEP_LOCAL_DIR" \
        --num-gpus=0 --num-cpus=1 --resources='{"head": 1}' \
        --include-dashboard=true --dashboard-host="$HOST" --dashboard-port="$DASHBOARD_PORT" \
        --ray-client-server-port="$client" --dashboard-agent-listen-port="$agent_http" \
        --dashboard-agent-grpc-port="$agent_grpc" --metrics-export-port="$metrics" \
        --runtime-env-agent-port="$runtime_env" --node-manager-port="$node_manager" \
        --object-manager-port="$object_manager" --min-worker-port=0 --max-worker-port=0 \
        --object-store-memory="$OBJECT_STORE_BYTES" --disable-usage-stats
    for i in $(seq 1 "$WORKERS"); do
        # Ports 0 = any free port: several raylets on one host must not collide.
        "$RAY" start --address="$HOST:$RAY_PORT" --node-ip-address="$HOST" \
            --num-gpus="$GPUS_PER_WORKER" --num-cpus="$CPUS_PER_WORKER" --resources="{\"gpu_worker\": 1}" \
            --object-store-memory="$OBJECT_STORE_BYTES" --node-manager-port=0 --object-manager-port=0 \
            --dashboard-agent-listen-port=0 --dashboard-agent-grpc-port=0 --metrics-export-port=0 \
            --runtime-env-agent-port=0 --min-worker-port=0 --max-worker-port=0 --disable-usage-stats
    done
    echo "local cluster up: $((WORKERS * GPUS_PER_WORKER)) declared GPUs on $WORKERS worker nodes"
    echo "  RAY_AUTH_MODE=token RAY_ADDRESS=$HOST:$RAY_PORT mixsweep run SPEC --dir runs/NAME"
    echo "  dashboard and Jobs API: http://$HOST:$DASHBOARD_PORT   (mixsweep submit SPEC --address http://$HOST:$DASHBOARD_PORT --dir /ABS/DIR)"
}

status() {
    load_state
    "$RAY" status --address="$HOST:$RAY_PORT"
}

stop() {
    local pids
    SID=""
    [ -f "$STATE" ] && . "$STATE"
    pids=$(cluster_pids)
    if [ -z "$pids" ]; then
        rm -f "$STATE"
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
    for _ in $(seq 1 50); do
        [ -z "$(cluster_pids)" ] && break
        sleep 0.1
    done
    pids=$(cluster_pids)
    [ -z "$pids" ] || die "processes of the local cluster survived SIGKILL: $(echo $pids); see ps -o pid,args -p <pid>"
    rm -f "$STATE"
    echo "local cluster under $MIXSWEEP_LOCAL_DIR stopped"
}

case "${1:-}" in
    start) start ;;
    __start_nodes) start_nodes ;;
    stop) stop ;;
    status) status ;;
    address) load_state; echo "$HOST:$RAY_PORT" ;;
    dashboard) load_state; echo "http://$HOST:$DASHBOARD_PORT" ;;
    *) echo "usage: $0 start|status|address|dashboard|stop" >&2; exit 2 ;;
esac
