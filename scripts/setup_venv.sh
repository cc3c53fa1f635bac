#!/usr/bin/env bash
# The demos' virtual environment, in one place (sourced by scripts/demo.sh and scripts/demo_concepts.sh from
# the repository root): creates $VENV (default .venv) with `python3 -m venv` when it has no python yet,
# installs requirements.txt into it when the environment is new or requirements.txt changed since the last
# install made here (a copy is kept as $VENV/requirements.installed.txt, so a second run needs no network),
# and sets PY to the environment's python and GLOG_v (MindSpore's C++ log level) to 3 unless it is set.
#
#   . scripts/setup_venv.sh        (from a script whose working folder is the repository root)
#   bash scripts/setup_venv.sh     (only the set-up; env: VENV=.venv)
if [ "${BASH_SOURCE[0]}" = "$0" ]; then     # run, not sourced: stop at the first error, work from the root
    set -euo pipefail
    cd "$(dirname "$0")/.."
fi
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV"
    python3 -m venv "$VENV"
fi
if ! cmp -s requirements.txt "$VENV/requirements.installed.txt"; then
    echo "== installing requirements.txt into $VENV"
    "$VENV/bin/python" -m pip install -q -r requirements.txt
    cp requirements.txt "$VENV/requirements.installed.txt"
fi
PY="$VENV/bin/python"
export GLOG_v=${GLOG_v:-3}
