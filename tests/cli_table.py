"""Run a table of bad command lines against the project's CLIs, many cases per interpreter.

Starting MindSpore costs seconds, so a table is run in ONE child interpreter (tests/cli_worker.py): each
case is the CLI script executed as ``__main__`` (``runpy``) in a fresh working folder, with stdout and
stderr captured; a Python exception that escapes ``run_cli`` is recorded as a traceback. What every bad
input must give (docs/training.md and docs/txt2img.md, "Bad input": one line on stderr, exit code 2):

* exit code 2;
* exactly one non-empty stderr line, without "Traceback", that contains the case's ``expect`` text;
* no file the case lists in ``absent`` (output that would claim to be complete) exists afterwards;
* every file below the case's ``unchanged`` paths is as it was before the run.

A case is a dict: ``script`` (path relative to the repo), ``argv`` (list; the token ``{tmp}`` becomes the
case's own folder, ``{repo}`` the repository), ``expect`` (substring, case-insensitive), optional
``absent`` (paths with the same tokens), ``unchanged`` (files or folders whose every file must be
byte-identical afterwards, none added or removed: nothing already written is lost), ``setup`` (a name of a function in tests/cli_setups.py called
with the case folder before the run), ``name``.
"""
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "cli_worker.py")


def run_table(cases, timeout=1200):
    """Run ``cases`` in one child interpreter; returns one result dict per case (same order) with
    ``code``, ``stderr``, ``stdout``, ``folder``."""
    with tempfile.TemporaryDirectory(prefix="cli-table-") as root:
        spec = os.path.join(root, "cases.json")
        out = os.path.join(root, "results.json")
        with open(spec, "w", encoding="utf-8") as f:
            json.dump({"root": root, "cases": cases}, f)
        proc = subprocess.run([sys.executable, WORKER, spec, out], capture_output=True, text=True,
                              timeout=timeout, cwd=REPO)
        if proc.returncode != 0 or not os.path.exists(out):
            raise RuntimeError(f"cli worker died (rc {proc.returncode}): {proc.stderr[-3000:]}")
        with open(out, encoding="utf-8") as f:
            results = json.load(f)
        for result in results:          # the folders vanish with root: check 'absent' here
            result["absent_found"] = [p for p in result.get("absent", []) if os.path.exists(p)]
        return results


def failures(cases, results):
    """Human-readable list of the cases that did not give exit 2 + one matching stderr line."""
    bad = []
    for case, res in zip(cases, results):
        lines = [line for line in res["stderr"].replace("\r", "\n").splitlines() if line.strip()]
        name = case.get("name") or " ".join(case["argv"])[:80]
        problems = []
        if res["code"] != 2:
            problems.append(f"exit {res['code']}")
        if len(lines) != 1:
            problems.append(f"{len(lines)} stderr lines")
        if "Traceback" in res["stderr"]:
            problems.append("traceback")
        if case["expect"].lower() not in res["stderr"].lower():
            problems.append(f"no {case['expect']!r}")
        if res["absent_found"]:
            problems.append(f"left {res['absent_found']}")
        if res.get("changed"):
            problems.append(f"changed {res['changed']}")
        if problems:
            bad.append(f"{name}: {', '.join(problems)}: {res['stderr'].strip()[-400:]!r}")
    return bad
