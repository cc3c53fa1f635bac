#!/usr/bin/env bash
# Data-parallel training on N local ranks with MindSpore's msrun or with OpenMPI's mpirun.
#
#   bash scripts/run_train_distributed.sh msrun  2 --train_config configs/train/train_config_tiny_vpred.yaml
#   bash scripts/run_train_distributed.sh mpirun 2 --train_config configs/train/train_config_tiny_vpred.yaml
#
# Everything after N goes to train_text_to_image.py (--use_parallel True is added).
# Env: MASTER_PORT (default 8118), LOG_DIR (msrun worker logs; default ./parallel_logs),
#      PYTHON (interpreter; default: python on PATH; msrun itself starts `python` from PATH).
# mpirun: OpenMPI ranks do not speak MindSpore's cluster protocol by themselves, so each rank exports
# MindSpore's dynamic-cluster variables from OpenMPI's (MS_WORKER_NUM, MS_NODE_ID, MS_SCHED_HOST,
# MS_SCHED_PORT, MS_ROLE) and rank 0 also runs the scheduler process (same script, MS_ROLE=MS_SCHED).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
TRAIN="$REPO/train_text_to_image.py"
PORT="${MASTER_PORT:-8118}"
PY="${PYTHON:-python}"

usage() { echo "usage: $0 msrun|mpirun NUM_RANKS [train_text_to_image.py args...]" >&2; exit 2; }

# internal: one mpirun rank (called by mpirun below)
if [[ "${1:-}" == "_mpi_rank" ]]; then
    shift
    export MS_WORKER_NUM="${OMPI_COMM_WORLD_SIZE:?not started by mpirun}"
    export MS_NODE_ID="${OMPI_COMM_WORLD_RANK}"
    export MS_SCHED_HOST="${MS_SCHED_HOST:-127.0.0.1}"
    export MS_SCHED_PORT="$PORT"
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
case "$LAUNCHER" in
    msrun)
        command -v msrun >/dev/null || { echo "$0: msrun not found on PATH (activate the MindSpore venv)" >&2; exit 2; }
        exec msrun --worker_num="$N" --local_worker_num="$N" --master_port="$PORT" \
            --log_dir="${LOG_DIR:-parallel_logs}" --join=True "$TRAIN" --use_parallel True "$@"
        ;;
    mpirun)
        command -v mpirun >/dev/null || { echo "$0: mpirun not found (apt-get install openmpi-bin)" >&2; exit 2; }
        mkdir -p "${LOG_DIR:-.}"
        export LOG_DIR="${LOG_DIR:-.}" MASTER_PORT="$PORT" PYTHON="$PY"
        forward=(-x PATH -x LOG_DIR -x MASTER_PORT -x PYTHON)
        for var in PYTHONPATH GLOG_v MSD_DUMP_RANK_WEIGHTS; do
            if [[ -n "${!var:-}" ]]; then forward+=(-x "$var"); fi
        done
        exec mpirun --allow-run-as-root --oversubscribe -n "$N" "${forward[@]}" bash "$0" _mpi_rank "$@"
        ;;
    *) usage ;;
esac
