#!/usr/bin/env bash
# Data-parallel training with MindSpore's msrun or OpenMPI's mpirun, on one machine or several.
#
#   bash scripts/run_train_distributed.sh msrun|mpirun RANKS_PER_NODE [launcher options] [train args]
#
# One machine (RANKS_PER_NODE ranks):
#   bash scripts/run_train_distributed.sh msrun  2 --train_config configs/train/train_config_tiny_vpred.yaml
#   bash scripts/run_train_distributed.sh mpirun 2 --train_config configs/train/train_config_tiny_vpred.yaml
# Several machines, msrun: run the same command on every machine, each with its own --node_rank
# (0 .. nodes-1); --master_addr is node 0's address, reachable from all of them (it runs the scheduler):
#   bash scripts/run_train_distributed.sh msrun 8 --nodes 2 --node_rank 0 --master_addr 10.0.0.1 --train_config ...
#   bash scripts/run_train_distributed.sh msrun 8 --nodes 2 --node_rank 1 --master_addr 10.0.0.1 --train_config ...
# Several machines, mpirun: run once, on the first host of an OpenMPI hostfile ("host slots=N" lines;
# passwordless ssh, and this repository and its venv at the same path on every host):
#   bash scripts/run_train_distributed.sh mpirun 8 --hostfile hosts.txt --train_config ...
#
# Launcher options (before the train args): --nodes M (default 1; with --hostfile: its host count),
# --node_rank R (msrun), --master_addr A (default 127.0.0.1; with --hostfile: its first host),
# --master_port P (default $MASTER_PORT or 8118), --hostfile F (mpirun).
# Everything else goes to train_text_to_image.py (--use_parallel True is added).
# Env: LOG_DIR (worker logs; default ./parallel_logs for msrun, . for mpirun),
#      PYTHON (interpreter; default: python on PATH; msrun itself starts `python` from PATH).
# mpirun: OpenMPI ranks do not speak MindSpore's cluster protocol by themselves, so each rank exports
# MindSpore's dynamic-cluster variables from OpenMPI's (MS_WORKER_NUM, MS_NODE_ID, MS_SCHED_HOST,
# MS_SCHED_PORT, MS_ROLE) and rank 0 also runs the scheduler process (same script, MS_ROLE=MS_SCHED).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
TRAIN="$REPO/train_text_to_image.py"
PY="${PYTHON:-python}"

die() { echo "$0: $*" >&2; exit 2; }
usage() { die "usage: $0 msrun|mpirun RANKS_PER_NODE [--nodes M --node_rank R --master_addr A --master_port P | --hostfile F] [train_text_to_image.py args...]"; }

# internal: one mpirun rank (called by mpirun below)
if [[ "${1:-}" == "_mpi_rank" ]]; then
    shift
    export MS_WORKER_NUM="${OMPI_COMM_WORLD_SIZE:?not started by mpirun}"
    export MS_NODE_ID="${OMPI_COMM_WORLD_RANK}"
    export MS_SCHED_HOST="${MASTER_ADDR:-127.0.0.1}"
    export MS_SCHED_PORT="${MASTER_PORT:?}"
    sched_pid=""
    if [[ "$MS_NODE_ID" == "0" ]]; then
        MS_ROLE=MS_SCHED "$PY" "$TRAIN" --use_parallel True "$@" >"${LOG_DIR:-.}/scheduler.log" 2>&1 &
        sched_pid=$!
    fi
    status=0
    MS_ROLE=MS_WORKER "$PY" "$TRAIN" --use_parallel True "$@" || status=$?
    if [[ -n "$sched_pid" ]]; then
        wait "$sched_pid" || true   # the scheduler's own exit code is not the job's result
    fi
    exit "$status"
fi

[[ $# -ge 2 ]] || usage
LAUNCHER="$1"; N="$2"; shift 2
[[ "$N" =~ ^[0-9]+$ && "$N" -ge 1 ]] || usage
NODES="" NODE_RANK="" ADDR="" PORT="${MASTER_PORT:-8118}" HOSTFILE=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --nodes|--node_rank|--master_addr|--master_port|--hostfile)
            [[ $# -ge 2 ]] || die "$1 needs a value"
            case "$1" in
                --nodes) NODES="$2" ;; --node_rank) NODE_RANK="$2" ;; --master_addr) ADDR="$2" ;;
                --master_port) PORT="$2" ;; --hostfile) HOSTFILE="$2" ;;
            esac
            shift 2 ;;
        *) break ;;
    esac
done
[[ -z "$NODES" || ( "$NODES" =~ ^[0-9]+$ && "$NODES" -ge 1 ) ]] || die "--nodes must be a positive integer, got '$NODES'"
[[ "$PORT" =~ ^[0-9]+$ && "$PORT" -ge 1024 && "$PORT" -le 65535 ]] || die "--master_port must be 1024..65535, got '$PORT'"

case "$LAUNCHER" in
    msrun)
        command -v msrun >/dev/null || die "msrun not found on PATH (activate the MindSpore venv)"
        [[ -z "$HOSTFILE" ]] || die "--hostfile is for mpirun; with msrun run the command on every node with --node_rank"
        NODES="${NODES:-1}"
        if [[ "$NODES" -gt 1 ]]; then
            [[ "$NODE_RANK" =~ ^[0-9]+$ && "$NODE_RANK" -lt "$NODES" ]] \
                || die "--nodes $NODES needs --node_rank 0..$((NODES - 1)) (this machine's index), got '${NODE_RANK}'"
        fi
        node_args=()
        if [[ -n "$NODE_RANK" ]]; then node_args+=(--node_rank="$NODE_RANK"); fi
        exec msrun --worker_num="$((N * NODES))" --local_worker_num="$N" --master_addr="${ADDR:-127.0.0.1}" \
            --master_port="$PORT" "${node_args[@]}" --log_dir="${LOG_DIR:-parallel_logs}" --join=True \
            "$TRAIN" --use_parallel True "$@"
        ;;
    mpirun)
        command -v mpirun >/dev/null || die "mpirun not found (apt-get install openmpi-bin)"
        [[ -z "$NODE_RANK" ]] || die "--node_rank is for msrun; mpirun places ranks from --hostfile"
        placement=(-n "$N")
        if [[ -n "$HOSTFILE" ]]; then
            [[ -f "$HOSTFILE" ]] || die "hostfile not found: $HOSTFILE"
            hosts=$(grep -v '^[[:space:]]*\(#\|$\)' "$HOSTFILE" | awk '{print $1}')
            [[ -n "$hosts" ]] || die "no hosts in $HOSTFILE"
            NODES="${NODES:-$(echo "$hosts" | wc -l)}"
            ADDR="${ADDR:-$(echo "$hosts" | head -n 1)}"
            # rank r runs on host r / N, so rank 0 (the scheduler's host) is the first host
            placement=(--hostfile "$HOSTFILE" -n "$((N * NODES))" --map-by "ppr:$N:node")
        elif [[ "${NODES:-1}" -gt 1 ]]; then
            die "mpirun across machines needs --hostfile"
        fi
        ADDR="${ADDR:-127.0.0.1}"
        if [[ ! "$ADDR" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]]; then  # MindSpore's scheduler address must be an IP
            ip=$(getent ahostsv4 "$ADDR" | awk 'NR == 1 {print $1}') || true
            [[ -n "$ip" ]] || die "cannot resolve master address '$ADDR' to an IPv4 address"
            ADDR="$ip"
        fi
        mkdir -p "${LOG_DIR:-.}"
        export LOG_DIR="${LOG_DIR:-.}" MASTER_PORT="$PORT" MASTER_ADDR="$ADDR" PYTHON="$PY"
        forward=(-x PATH -x LOG_DIR -x MASTER_PORT -x MASTER_ADDR -x PYTHON)
        for var in PYTHONPATH GLOG_v MSD_DUMP_RANK_WEIGHTS; do
            if [[ -n "${!var:-}" ]]; then forward+=(-x "$var"); fi
        done
        exec mpirun --allow-run-as-root --oversubscribe "${placement[@]}" "${forward[@]}" bash "$0" _mpi_rank "$@"
        ;;
    *) usage ;;
esac
